//! The integration tests of `contracts`, in one binary so that the crate links once.

mod bounds;
