//! The analysts' tool over the event streams: read a selection of JetStream's streams (replay,
//! tail), export it to JSON lines, CSV or Parquet, fold an aggregate as of a point in time, and
//! verify that the streams, the event stores and the read models agree; and, for operators,
//! list, replay and discard the projections' dead letters.
//!
//! Invariant: `replay`, `tail`, `export` and `state` read JetStream only, never a service's
//! database; `verify` reads the databases because comparing with them is its job;
//! `dead-letters` only calls the projections service's API.
//! Invariant: memory is bounded by a chunk of events (export, replay), or by the number of
//! aggregates (verify), never by the length of a stream.
#![forbid(unsafe_code)]

pub mod cli;
pub mod dead_letters;
pub mod export;
pub mod fold;
pub mod formats;
pub mod progress;
pub mod read;
pub mod record;
pub mod verify;
