//! The integration tests of `service-kit`, in one binary so that the crate links once.

mod limits;
mod supervision;
