//! The integration tests of `schemas`, in one binary so that the crate links once.

mod configuration;
mod drift;
