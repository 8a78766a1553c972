//! The integration tests of `gateway`, in one binary so that the crate links once.

mod edge;
mod tokens;
