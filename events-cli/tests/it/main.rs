//! The integration tests of `events`, in one binary so that the crate links once.

mod cli;
mod contract;
