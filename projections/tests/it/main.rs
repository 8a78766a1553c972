//! The integration tests of `projections`, in one binary so that the crate links once.

mod contract;
mod impossible;
mod scale;
mod worker;

use std::time::Duration;

use messaging::streams::{ensure_stream, StreamSettings};
use messaging::BoundedContext;
use projections::projection::Projection;
use projections::worker::{Worker, WorkerSettings};
use testkit::world::World;

/// `context`'s stream in `w`'s namespace, made if it is not there.
async fn stream(w: &World, context: BoundedContext) {
    ensure_stream(&w.js, &w.ns, context, &StreamSettings::default())
        .await
        .unwrap();
}

/// A worker of `projection` on `w`, with small batches and short waits; `trace_events` as the
/// test needs.
async fn worker_on<P: Projection>(w: &World, projection: P, trace_events: bool) -> Worker<P> {
    Worker::new(
        projection,
        w.pool.clone(),
        &w.js,
        &w.ns,
        &StreamSettings::default(),
        WorkerSettings {
            batch_size: 100,
            fetch_wait: Duration::from_millis(200),
            retry_delay: Duration::from_millis(50),
            ack_wait: Duration::from_secs(30),
            consumer_prefix: String::new(),
            schema: None,
            trace_events,
        },
    )
    .await
    .unwrap()
}
