//! The integration tests of `orchestrator`, in one binary so that the crate links once.

mod contract;
mod crash;
