//! The integration tests of `query-api`, in one binary so that the crate links once.

mod behind_gateway;
mod reads;
