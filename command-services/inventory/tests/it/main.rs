//! The integration tests of `inventory`, in one binary so that the crate links once.

mod compensation_refused;
mod expiry;
mod outage;
mod service;
