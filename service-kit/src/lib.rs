//! Shared runtime for every streamshop binary: settings, telemetry, shutdown, HTTP errors,
//! health endpoints and failpoints. Domain logic never lives here.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod db;
pub mod env;
pub mod failpoint;
pub mod health;
pub mod https;
pub mod json_log;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod retention;
pub mod retry;
pub mod sealing;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod trace;
