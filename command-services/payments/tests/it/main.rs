//! The integration tests of `payments`, in one binary so that the crate links once.

mod common;
mod outage;
mod service;
mod stripe;
