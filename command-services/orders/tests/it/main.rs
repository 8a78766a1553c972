//! The integration tests of `orders`, in one binary so that the crate links once.
//! `start_without_dependencies` keeps a binary of its own beside this one: it replaces the
//! process's test infrastructure (`testkit::use_infra`).

mod service;
