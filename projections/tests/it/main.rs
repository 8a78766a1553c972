//! The integration tests of `projections`, in one binary so that the crate links once.

mod contract;
mod impossible;
mod scale;
mod worker;
