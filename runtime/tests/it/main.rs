//! The integration tests of `runtime`, in one binary so that the crate links once.

mod limits;
mod supervision;
