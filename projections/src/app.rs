//! Wires the projections worker: read database, NATS, one worker per projection, health HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use service_kit::health::Readiness;
use service_kit::service::{task, Service, Task};
use tokio_util::sync::CancellationToken;

use crate::orders_view::OrdersView;
use crate::payments_view::PaymentsView;
use crate::products_view::ProductsView;
use crate::projection::Projection;
use crate::saga_timeline::SagaTimeline;
use crate::worker::Worker;
use crate::Settings;

/// A built worker process, bound to its port, not yet running.
pub struct App {
    service: Service,
}

/// A projection's worker as a task, with the condition `/readyz` reports for it: its durable
/// consumer held as declared.
async fn worker<P: Projection>(
    projection: P,
    pool: &sqlx::PgPool,
    js: &async_nats::jetstream::Context,
    settings: &Settings,
) -> anyhow::Result<(Task, String, Arc<AtomicBool>)> {
    let name = projection.name();
    let worker = Worker::new(
        projection,
        pool.clone(),
        js,
        &settings.nats.namespace,
        &settings.nats.stream,
        settings.worker.clone(),
    )
    .await
    .with_context(|| format!("creating the {name} consumer"))?;
    let intact = worker.consumer_intact();
    let condition = format!("consumer:{}", worker.durable_name());
    let task = task(|shutdown| async move {
        worker.run(shutdown).await;
        Ok(())
    });
    Ok((task, condition, intact))
}

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The projections own the read database; the streams belong to their contexts.
        let migrations = Some(&crate::SCHEMA);
        let pool = settings.basics.connect_database("read", migrations).await?;
        let (nats, js) = settings.nats.connect_with_streams(&[]).await?;
        let workers = vec![
            worker(OrdersView, &pool, &js, settings).await?,
            worker(ProductsView, &pool, &js, settings).await?,
            worker(PaymentsView, &pool, &js, settings).await?,
            worker(SagaTimeline, &pool, &js, settings).await?,
        ];
        // The streams are their contexts' to create: a worker waits for a missing one (and
        // `GET /projections` shows its lag), so readiness asks only for what this service holds.
        // Each worker's durable consumer must be there as declared: one that was deleted or
        // changed makes the service unready until its worker has restored it.
        let readiness = workers.iter().fold(
            Readiness::new().postgres("read", pool.clone()).nats(nats),
            |readiness, (_, condition, intact)| readiness.condition(condition, intact.clone()),
        );
        let service = Service::bind("projections", settings.basics.http_addr)
            .await?
            .tls(settings.basics.tls.as_ref())?
            .gateway_routes(crate::dead_letters_http::gateway_routes())
            .routes(
                crate::lag::routes(pool.clone())
                    .merge(crate::dead_letters_http::router(pool.clone())),
                readiness,
                crate::lag::openapi(),
            )
            .time_limit(settings.basics.request_timeout)
            .with_task(service_kit::retention::task_for(
                pool.clone(),
                vec![service_kit::retention::Rule {
                    table: "dead_letters",
                    column: "recorded_at",
                    keep: settings.dead_letter_retention,
                }],
                std::time::Duration::from_secs(3600),
            ))
            .with_pool(pool);
        let service = workers
            .into_iter()
            .fold(service, |service, (worker, _, _)| service.with_task(worker));
        Ok(Self { service })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// The base URL it answers on (`https://` when TLS is on).
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// Runs the workers and the HTTP endpoints until `shutdown`; batches in hand finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(shutdown).await
    }
}

type RebuildJob<'a> = Pin<Box<dyn Future<Output = anyhow::Result<crate::rebuild::Report>> + 'a>>;

/// One projection's rebuild, boxed so the four can run side by side.
fn rebuild_job<'a, P: Projection + Clone>(
    projection: P,
    pool: &'a sqlx::PgPool,
    js: &'a async_nats::jetstream::Context,
    settings: &'a Settings,
    progress: impl FnMut(&crate::rebuild::Progress) + 'a,
) -> RebuildJob<'a> {
    let name = projection.name();
    Box::pin(async move {
        crate::rebuild::rebuild(
            projection,
            pool,
            js,
            &settings.nats.namespace,
            &settings.nats.stream,
            &settings.worker,
            progress,
        )
        .await
        .with_context(|| format!("rebuilding {name}"))
    })
}

/// Rebuilds one projection (by name) or `all`, side by side; `progress` gets each one's name and
/// progress a few times a second.
pub async fn rebuild(
    settings: &Settings,
    which: &str,
    progress: impl FnMut(&str, &crate::rebuild::Progress),
) -> anyhow::Result<Vec<crate::rebuild::Report>> {
    let pool = settings
        .basics
        .connect_database("read", Some(&crate::SCHEMA))
        .await?;
    let (_, js) = settings.nats.connect_with_streams(&[]).await?;
    let known = crate::NAMES;
    anyhow::ensure!(
        which == "all" || known.contains(&which),
        "unknown projection {which:?}; use one of {} or all",
        known.join(", ")
    );
    // The projections read different streams and write different tables: rebuild them side
    // by side, so both cores (and the database) are busy.
    let progress = std::sync::Mutex::new(progress);
    let report = |name: &'static str| {
        let progress = &progress;
        move |p: &crate::rebuild::Progress| {
            (progress.lock().expect("progress callback"))(name, p);
        }
    };
    let mut jobs: Vec<RebuildJob<'_>> = Vec::new();
    for name in known {
        if which != "all" && which != name {
            continue;
        }
        let (pool, js, progress) = (&pool, &js, report(name));
        // Every name its own arm: a projection added to NAMES but not here is refused, never
        // rebuilt as another one.
        jobs.push(match name {
            read_contract::ORDERS_VIEW => rebuild_job(OrdersView, pool, js, settings, progress),
            read_contract::PRODUCTS_VIEW => rebuild_job(ProductsView, pool, js, settings, progress),
            read_contract::PAYMENTS_VIEW => rebuild_job(PaymentsView, pool, js, settings, progress),
            read_contract::SAGA_TIMELINE => rebuild_job(SagaTimeline, pool, js, settings, progress),
            other => anyhow::bail!("projection {other} has no rebuild: add it to rebuild()"),
        });
    }
    let reports = futures::future::try_join_all(jobs).await?;
    Ok(reports)
}
