//! Rebuilds a projection from the start of its stream while the live tables keep serving,
//! then swaps the new tables in atomically (blue/green).
//!
//! 1. Build: the projection's tables are created empty (`LIKE` the live ones) in a schema of
//!    their own, with their own positions and checkpoint, and filled by a worker on a consumer
//!    of its own that starts at the beginning of the stream.
//! 2. Cut-over, in one transaction holding the projection's exclusive lock (live batches hold
//!    it shared, so none is half-way): the live tables move to a retired schema, the rebuilt
//!    ones into `public`, and the projection's positions, checkpoint and dead letters are
//!    replaced by the rebuilt ones. Readers wait for the commit and then see the new tables:
//!    never an empty or partial one.
//! 3. The live durable consumer is deleted; the live worker re-creates it from the new
//!    checkpoint, so events that arrived during the cut-over are applied to the new tables
//!    (per-aggregate positions keep that exactly-once and in order).

use std::time::{Duration, Instant};

use messaging::streams::StreamSettings;
use messaging::Namespace;
use sqlx::{Acquire, PgPool};

use crate::projection::Projection;
use crate::worker::{Worker, WorkerSettings, CUTOVER_LOCK};

/// The bookkeeping tables every projection has rows in.
const BOOKKEEPING: [&str; 3] = [
    "projection_positions",
    "projection_checkpoints",
    "dead_letters",
];

/// Smallest batch a rebuild fetches and applies at once.
const REBUILD_BATCH: usize = 2_000;

/// How far a rebuild has come.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// Events per second so far.
    pub rate: f64,
    pub eta: Option<Duration>,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        write!(
            f,
            "{}/{} events ({pct:.1}%), {:.0} ev/s",
            self.done, self.total, self.rate
        )?;
        if let Some(eta) = self.eta {
            write!(f, ", ETA {}s", eta.as_secs())?;
        }
        Ok(())
    }
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct Report {
    pub projection: &'static str,
    pub events: u64,
    pub elapsed: Duration,
}

/// Rebuilds `projection` and swaps it in; `progress` is called a few times a second.
pub async fn rebuild<P: Projection + Clone>(
    projection: P,
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    namespace: &Namespace,
    stream_settings: &StreamSettings,
    live: &WorkerSettings,
    mut progress: impl FnMut(&Progress),
) -> anyhow::Result<Report> {
    let name = projection.name();
    let schema = format!("rebuild_{name}");
    let started = Instant::now();

    // 1. Empty tables shaped like the live ones.
    // One round trip: the statements as one simple-protocol script.
    let mut script = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};");
    for table in projection.tables().iter().chain(&BOOKKEEPING) {
        script.push_str(&format!(
            " CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL);"
        ));
    }
    sqlx::raw_sql(&script).execute(pool).await?;

    let settings = WorkerSettings {
        consumer_prefix: format!("{}rebuild_", live.consumer_prefix),
        schema: Some(schema.clone()),
        trace_events: false,
        // Catching up on a whole stream: bigger batches spread each transaction's fixed cost
        // (positions, checkpoint, commit) over more events.
        batch_size: live.batch_size.max(REBUILD_BATCH),
        ..live.clone()
    };
    let stream_name = namespace.stream(projection.context());
    let stream = js.get_stream(&stream_name).await?;
    // A rebuild that died half-way left its consumer: start again from the beginning.
    let _ = stream
        .delete_consumer(&format!("{}{name}", settings.consumer_prefix))
        .await;
    let worker = Worker::new(
        projection.clone(),
        pool.clone(),
        js,
        namespace,
        stream_settings,
        settings,
    )
    .await?;

    // Fill them, reporting progress, until the stream's end as it is now.
    let mut last_report = Instant::now() - Duration::from_secs(1);
    loop {
        let outcome = worker.process_batch().await?;
        let done = worker.checkpoint().await?;
        let total = js
            .get_stream(&stream_name)
            .await?
            .info()
            .await?
            .state
            .last_sequence;
        if last_report.elapsed() >= Duration::from_millis(250) || done >= total {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let eta = (rate > 0.0 && total > done)
                .then(|| Duration::from_secs_f64((total - done) as f64 / rate));
            progress(&Progress {
                done,
                total,
                rate,
                eta,
            });
            last_report = Instant::now();
        }
        if outcome.fetched == 0 && done >= total {
            break;
        }
    }
    let events = worker.checkpoint().await?;
    let rebuild_consumer = worker.durable_name().to_owned();
    drop(worker);

    // 2. Cut-over.
    let retired = format!("retired_{name}");
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {retired} CASCADE"))
        .execute(&mut *conn)
        .await?;
    let mut tx = conn.begin().await?;
    sqlx::query(CUTOVER_LOCK)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let mut script = format!("CREATE SCHEMA {retired};");
    for table in projection.tables() {
        script.push_str(&format!(
            " ALTER TABLE public.{table} SET SCHEMA {retired};\
             ALTER TABLE {schema}.{table} SET SCHEMA public;"
        ));
    }
    sqlx::raw_sql(&script).execute(&mut *tx).await?;
    for table in BOOKKEEPING {
        sqlx::query(&format!("DELETE FROM public.{table} WHERE projection = $1"))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO public.{table} SELECT * FROM {schema}.{table} WHERE projection = $1"
        ))
        .bind(name)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    // 3. The live worker resumes from the rebuilt checkpoint.
    let _ = stream
        .delete_consumer(&format!("{}{name}", live.consumer_prefix))
        .await;
    let _ = stream.delete_consumer(&rebuild_consumer).await;
    for s in [&retired, &schema] {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(Report {
        projection: name,
        events,
        elapsed: started.elapsed(),
    })
}
