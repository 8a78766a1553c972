//! Figure 2 (and 5): whole sagas, placed -> confirmed and visible in the query API, at offered
//! loads on a fixed schedule; the process costs while they run.
//!
//! An order is complete when `GET /orders/{id}?min_version=N` answers `confirmed`, N being the
//! sequence of its `OrderConfirmed` event (seen on the ORDERS subjects). Its latency runs from
//! the moment the schedule said it should be placed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::commands::{bench_sku, order_body};
use crate::drive::http_client;
use crate::procs::{Cost, Monitor, Proc, Watched};
use crate::stats::{LatencySpread, Percentiles, Spread};
use crate::Bench;
use contracts::inventory::CreateProduct;
use domain::Currency;

/// The offered loads tried, in orders per second, until one misses.
const LADDER: [f64; 15] = [
    10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 750.0,
    1000.0,
];
const P99_LIMIT_MS: f64 = 250.0;
const LIGHT_RATE: f64 = 10.0;
pub const NAMESPACE: &str = "benche2e";

/// The whole stack on one namespace and five databases.
pub struct Stack {
    pub procs: Vec<Proc>,
    pub query_url: String,
    pub orders_url: String,
    pub read_url: String,
    /// Its NATS namespace.
    pub namespace: &'static str,
}

impl Stack {
    pub async fn start(b: &Bench) -> anyhow::Result<Self> {
        Self::start_in(b, NAMESPACE, "bench_e2e").await
    }

    /// The stack on `namespace`, its databases named `<prefix>_<database>` (made fresh).
    pub async fn start_in(
        b: &Bench,
        namespace: &'static str,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let mut procs = Vec::new();
        let mut databases = Vec::new();
        let mut read_url = String::new();
        for (name, db) in [
            ("orders", "orders"),
            ("inventory", "inventory"),
            ("payments", "payments"),
            ("orchestrator", "orchestrator"),
            ("projections", "read"),
            ("query-api", "read"),
        ] {
            let db_name = format!("{prefix}_{db}");
            let url = if databases.contains(&db_name) {
                b.cluster.url(&db_name)
            } else {
                databases.push(db_name.clone());
                b.cluster.fresh(&db_name).await?
            };
            if db == "read" {
                read_url = url.clone();
            }
            procs.push(b.service(name, &url, namespace, &[]).await?);
        }
        Ok(Self {
            query_url: crate::procs::url_of(&procs, "query-api"),
            orders_url: crate::procs::url_of(&procs, "orders"),
            read_url,
            procs,
            namespace,
        })
    }

    pub fn url(&self, name: &str) -> String {
        crate::procs::url_of(&self.procs, name)
    }

    /// Stops every process but those named in `keep`.
    pub async fn stop_except(&mut self, keep: &[&str]) {
        let procs = std::mem::take(&mut self.procs);
        for p in procs {
            if keep.contains(&p.name.as_str()) {
                self.procs.push(p);
            } else {
                p.stop().await;
            }
        }
    }
}

/// One offered load.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub offered_rate: f64,
    pub seconds: f64,
    pub placed: u64,
    pub confirmed: u64,
    pub rejected: u64,
    pub failed: u64,
    pub completed_per_second: f64,
    pub latency: Percentiles,
    /// Every order confirmed and visible, with p99 under 250 ms.
    pub passed: bool,
    /// Write transactions (xids, every database) from the step's start until its last order
    /// was visible, divided by the orders it placed: what batching amortises at this load.
    pub transactions_per_saga: f64,
}

/// One hot product beside the spread case: the same bursts of orders, all on one SKU or
/// spread over 100, alternating.
#[derive(Debug, Clone, Serialize)]
pub struct HotFigure {
    /// Orders in each burst, offered at `burst_rate` per second.
    pub orders: u64,
    pub burst_rate: f64,
    pub spread_completed_per_second: Spread,
    pub hot_completed_per_second: Spread,
    /// Hot over spread, run by run.
    pub share: Spread,
    /// Orders of the hot runs that a client saw fail or that ended rejected: a conflict on the
    /// hot product that reached a client would show here.
    pub hot_not_confirmed: u64,
    pub hot_latency: LatencySpread,
}

#[derive(Debug, Clone, Serialize)]
pub struct SagasFigure {
    pub ladder: Vec<Step>,
    /// The highest offered load that passed (0 when none did).
    pub sustained_rate: f64,
    pub sustained_completed_per_second: Spread,
    pub sustained_latency: LatencySpread,
    pub light_rate: f64,
    pub light_latency: LatencySpread,
    /// Write transactions (xids) one order costs across every database.
    pub commits_per_order: f64,
    pub resources: Vec<Cost>,
    pub sagas_while_monitored: u64,
    pub cpu_seconds_per_saga: f64,
    pub hot: Option<HotFigure>,
    /// When the hot-product bursts began (Unix nanoseconds), for `--traces`.
    #[serde(skip)]
    pub hot_started_unix_nano: u64,
    /// Where Postgres spent its time during the figure: the costliest statements.
    pub statements: Vec<crate::pg::StatementCost>,
    /// Confirmed order ids, for the query figure.
    #[serde(skip)]
    pub confirmed_ids: Vec<Uuid>,
}

impl SagasFigure {
    /// The highest offered load that passed, as first measured on the ladder.
    pub fn sustained_step(&self) -> Option<&Step> {
        self.ladder.iter().rfind(|s| s.passed)
    }
}

/// What became of one order.
#[derive(Debug)]
enum Outcome {
    Confirmed {
        step: u32,
        latency_us: u64,
        id: Uuid,
    },
    Rejected {
        step: u32,
    },
    Failed {
        step: u32,
        error: String,
    },
}

impl Outcome {
    fn step(&self) -> u32 {
        match self {
            Outcome::Confirmed { step, .. }
            | Outcome::Rejected { step }
            | Outcome::Failed { step, .. } => *step,
        }
    }
}

#[derive(Default)]
struct Entry {
    placed: Option<(u32, Instant)>,
    /// Sequence of the order's last event, and whether it confirmed.
    ended: Option<(u64, bool)>,
}

/// Matches placed orders with their end events and checks the query API.
struct Tracker {
    entries: Mutex<HashMap<Uuid, Entry>>,
    client: reqwest::Client,
    query_url: String,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Tracker {
    fn placed(self: &Arc<Self>, id: Uuid, step: u32, due: Instant) {
        let ready = {
            let mut entries = self.entries.lock().expect("tracker lock");
            let entry = entries.entry(id).or_default();
            entry.placed = Some((step, due));
            entry.ended.is_some()
        };
        if ready {
            self.finish(id);
        }
    }

    fn ended(self: &Arc<Self>, id: Uuid, sequence: u64, confirmed: bool) {
        let ready = {
            let mut entries = self.entries.lock().expect("tracker lock");
            let entry = entries.entry(id).or_default();
            entry.ended = Some((sequence, confirmed));
            entry.placed.is_some()
        };
        if ready {
            self.finish(id);
        }
    }

    fn finish(self: &Arc<Self>, id: Uuid) {
        let Some(Entry {
            placed: Some((step, due)),
            ended: Some((sequence, confirmed)),
        }) = self.entries.lock().expect("tracker lock").remove(&id)
        else {
            return;
        };
        if !confirmed {
            let _ = self.outcomes.send(Outcome::Rejected { step });
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let url = format!("{}/orders/{id}?min_version={sequence}", this.query_url);
            let outcome = loop {
                match this.client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let view: OrderState = match r.json().await {
                            Ok(v) => v,
                            Err(e) => {
                                break Outcome::Failed {
                                    step,
                                    error: e.to_string(),
                                }
                            }
                        };
                        if view.status == "confirmed" && !view.stale {
                            break Outcome::Confirmed {
                                step,
                                latency_us: due.elapsed().as_micros() as u64,
                                id,
                            };
                        }
                        if due.elapsed() > Duration::from_secs(30) {
                            break Outcome::Failed {
                                step,
                                error: format!("order {id} still {} after 30 s", view.status),
                            };
                        }
                    }
                    Ok(r)
                        if r.status().as_u16() == 404
                            && due.elapsed() < Duration::from_secs(30) => {}
                    Ok(r) => {
                        break Outcome::Failed {
                            step,
                            error: format!("GET order: {}", r.status()),
                        }
                    }
                    Err(e) => {
                        break Outcome::Failed {
                            step,
                            error: e.to_string(),
                        }
                    }
                }
            };
            let _ = this.outcomes.send(outcome);
        });
    }
}

#[derive(Deserialize)]
struct OrderState {
    status: String,
    #[serde(default)]
    stale: bool,
}

#[derive(Deserialize)]
struct Sequenced {
    sequence: u64,
}

/// Listens for every order's end on the ORDERS subjects of `namespace`.
async fn listen(
    b: &Bench,
    namespace: &str,
    tracker: Arc<Tracker>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let nats = b.nats_admin().await?;
    let mut confirmed = nats
        .subscribe(format!("{namespace}.events.orders.*.OrderConfirmed"))
        .await?;
    let mut rejected = nats
        .subscribe(format!("{namespace}.events.orders.*.OrderRejected"))
        .await?;
    Ok(tokio::spawn(async move {
        let _keep = nats;
        loop {
            let (message, is_confirmed) = tokio::select! {
                Some(m) = confirmed.next() => (m, true),
                Some(m) = rejected.next() => (m, false),
                else => return,
            };
            let id = message
                .subject
                .split('.')
                .nth(3)
                .and_then(|s| Uuid::parse_str(s).ok());
            let seq = serde_json::from_slice::<Sequenced>(&message.payload).ok();
            if let (Some(id), Some(seq)) = (id, seq) {
                tracker.ended(id, seq.sequence, is_confirmed);
            }
        }
    }))
}

/// Orders placed on a schedule and followed to confirmed and visible: the steps of a figure.
pub struct Session {
    driver: Driver,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    listener: tokio::task::JoinHandle<()>,
}

impl Session {
    /// A session on `stack`, its products made and its caches warmed up by a first step;
    /// with `emails`, every order carries a customer's address.
    pub async fn open(b: &Bench, stack: &Stack, emails: bool) -> anyhow::Result<Self> {
        create_products(stack).await?;
        let (tx, outcomes) = mpsc::unbounded_channel();
        let tracker = Arc::new(Tracker {
            entries: Mutex::new(HashMap::new()),
            client: http_client(256),
            query_url: stack.query_url.clone(),
            outcomes: tx,
        });
        let listener = listen(b, stack.namespace, tracker.clone()).await?;
        let mut session = Self {
            driver: Driver {
                client: http_client(256),
                orders_url: format!("{}/orders", stack.orders_url),
                tracker,
                step: 0,
                confirmed_ids: Vec::new(),
                seed: b.next_seed(),
                admin_url: b.cluster.admin_url.clone(),
                hot: false,
                emails,
            },
            outcomes,
            listener,
        };
        // Warm up the caches, pools and JIT-free paths before anything is measured.
        session.step(20.0, 2.0).await;
        Ok(session)
    }

    /// Places orders at `rate` per second for `seconds` and follows each to its end.
    pub async fn step(&mut self, rate: f64, seconds: f64) -> Step {
        self.driver.step(&mut self.outcomes, rate, seconds).await
    }

    /// The orders confirmed so far, in the order they were.
    pub fn confirmed_ids(&self) -> &[Uuid] {
        &self.driver.confirmed_ids
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

pub async fn run(b: &Bench, stack: &Stack) -> anyhow::Result<SagasFigure> {
    println!("figure 2: sagas end to end");
    let mut session = Session::open(b, stack, false).await?;
    let Session {
        driver, outcomes, ..
    } = &mut session;
    let rx = outcomes;

    let mut watched: Vec<Watched> = stack.procs.iter().map(Watched::of).collect();
    watched.extend(b.infrastructure());
    watched.push(Watched {
        name: "loadgen (the load itself)".into(),
        pid: std::process::id() as i32,
        with_children: false,
    });
    let profiled = b.cluster.reset_statements().await;
    let monitor = Monitor::start(watched);
    let confirmed_before = driver.confirmed_ids.len();

    let mut ladder = Vec::new();
    for rate in LADDER {
        let step = driver.step(rx, rate, b.step_seconds).await;
        let passed = step.passed;
        ladder.push(step);
        if !passed {
            break;
        }
    }
    let best = ladder.iter().rfind(|s| s.passed).cloned();
    let sustained_rate = best.as_ref().map_or(0.0, |s| s.offered_rate);
    let mut sustained = Vec::from_iter(best.clone());
    let repeat_rate = best.map_or(LADDER[0], |s| s.offered_rate);
    while sustained.len() < b.repeats {
        sustained.push(driver.step(rx, repeat_rate, b.step_seconds).await);
    }

    let xid_before = xid(b).await?;
    let light_confirmed_before = driver.confirmed_ids.len();
    let mut light = Vec::new();
    for _ in 0..b.repeats {
        light.push(driver.step(rx, LIGHT_RATE, b.light_seconds).await);
    }
    let light_orders = (driver.confirmed_ids.len() - light_confirmed_before) as f64;
    let commits_per_order = (xid(b).await? - xid_before) as f64 / light_orders.max(1.0);

    let resources = monitor.finish().await;
    let statements = if profiled {
        b.cluster.top_statements(15).await?
    } else {
        Vec::new()
    };
    let sagas = (driver.confirmed_ids.len() - confirmed_before) as u64;
    let hot_started_unix_nano = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX) as u64;
    let hot = hot_figure(b, driver, rx, sustained_rate).await;
    let cpu: f64 = resources
        .iter()
        .filter(|c| !c.name.starts_with("loadgen"))
        .map(|c| c.cpu_seconds)
        .sum();
    println!("  {commits_per_order:.1} write transactions per order");
    Ok(SagasFigure {
        sustained_rate,
        sustained_completed_per_second: Spread::of(
            &sustained
                .iter()
                .map(|s| s.completed_per_second)
                .collect::<Vec<_>>(),
        ),
        sustained_latency: LatencySpread::of(
            &sustained.iter().map(|s| s.latency).collect::<Vec<_>>(),
        ),
        ladder,
        light_rate: LIGHT_RATE,
        light_latency: LatencySpread::of(&light.iter().map(|s| s.latency).collect::<Vec<_>>()),
        commits_per_order,
        resources,
        sagas_while_monitored: sagas,
        cpu_seconds_per_saga: cpu / (sagas.max(1) as f64),
        hot: Some(hot),
        hot_started_unix_nano,
        statements,
        confirmed_ids: std::mem::take(&mut driver.confirmed_ids),
    })
}

/// The next transaction id to be assigned, cluster-wide: counts write transactions without
/// waiting for the statistics collector.
async fn xid(b: &Bench) -> anyhow::Result<i64> {
    xid_at(&b.cluster.admin_url).await
}

async fn xid_at(admin_url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    Ok(
        sqlx::query_scalar("SELECT txid_snapshot_xmax(txid_current_snapshot())")
            .fetch_one(&mut conn)
            .await?,
    )
}

/// 100 products with stock for every order the benchmark can place.
async fn create_products(stack: &Stack) -> anyhow::Result<()> {
    create_products_at(&stack.url("inventory")).await
}

/// [`create_products`] on the inventory service at `inventory`.
pub async fn create_products_at(inventory: &str) -> anyhow::Result<()> {
    let client = http_client(1);
    let url = format!("{inventory}/products");
    for i in 0..crate::commands::BENCH_PRODUCTS {
        let sku = bench_sku(i);
        let create = CreateProduct {
            sku: sku.clone(),
            name: format!("Bench product {i}"),
            unit_price: 1250,
            currency: Currency::parse("EUR").expect("a currency"),
            initial_stock: 1_000_000,
        };
        let r = client
            .post(&url)
            .header("idempotency-key", format!("bench-product-{sku}"))
            .json(&create)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "creating {sku}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

struct Driver {
    client: reqwest::Client,
    orders_url: String,
    tracker: Arc<Tracker>,
    step: u32,
    confirmed_ids: Vec<Uuid>,
    seed: u64,
    admin_url: String,
    /// Every order on one SKU (the hot-product figure) rather than spread over 100.
    hot: bool,
    /// Every order with its customer's address (the notifications figure).
    emails: bool,
}

impl Driver {
    /// Places orders at `rate` per second for `seconds`, then waits for all of them.
    async fn step(
        &mut self,
        outcomes: &mut mpsc::UnboundedReceiver<Outcome>,
        rate: f64,
        seconds: f64,
    ) -> Step {
        self.step += 1;
        let step = self.step;
        let n = (rate * seconds).round() as u64;
        let xid_before = xid_at(&self.admin_url).await.ok();
        let start = Instant::now() + Duration::from_millis(20);
        let schedule = {
            let (client, url, tracker, seed, hot, emails) = (
                self.client.clone(),
                self.orders_url.clone(),
                self.tracker.clone(),
                self.seed,
                self.hot,
                self.emails,
            );
            self.seed += n;
            tokio::spawn(async move {
                for i in 0..n {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let mut body = order_body(seed + i);
                    if hot {
                        body.lines[0].sku = bench_sku(0);
                    }
                    if emails {
                        body.email = Some(format!("{}@customers.example", body.customer_id));
                    }
                    let request = client.post(&url).json(&body);
                    let tracker = tracker.clone();
                    tokio::spawn(async move {
                        match crate::drive::expect_status(request, 202).await {
                            Ok(body) => match serde_json::from_slice::<Placed>(&body) {
                                Ok(p) => tracker.placed(p.order_id, step, due),
                                Err(e) => {
                                    let _ = tracker.outcomes.send(Outcome::Failed {
                                        step,
                                        error: e.to_string(),
                                    });
                                }
                            },
                            Err(error) => {
                                let _ = tracker.outcomes.send(Outcome::Failed { step, error });
                            }
                        }
                    });
                }
            })
        };
        let mut latencies = Vec::new();
        let (mut confirmed, mut rejected, mut failed) = (0u64, 0u64, 0u64);
        let mut first_error = None;
        let mut last = start;
        let deadline = start + Duration::from_secs_f64(seconds) + Duration::from_secs(20);
        while confirmed + rejected + failed < n {
            let outcome = tokio::select! {
                o = outcomes.recv() => o,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(outcome) = outcome else { break };
            if outcome.step() != step {
                continue;
            }
            last = Instant::now();
            match outcome {
                Outcome::Confirmed { latency_us, id, .. } => {
                    confirmed += 1;
                    latencies.push(latency_us);
                    self.confirmed_ids.push(id);
                }
                Outcome::Rejected { .. } => rejected += 1,
                Outcome::Failed { error, .. } => {
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        let _ = schedule.await;
        let transactions_per_saga = match (xid_before, xid_at(&self.admin_url).await.ok()) {
            (Some(before), Some(after)) => (after - before) as f64 / n.max(1) as f64,
            _ => f64::NAN,
        };
        let latency = Percentiles::of(&mut latencies);
        let elapsed = (last - start).as_secs_f64().max(seconds);
        let passed = confirmed == n && latency.p99 < P99_LIMIT_MS;
        println!(
            "  offered {rate:.0}/s for {seconds:.0} s: {confirmed}/{n} confirmed ({:.0}/s), \
             p50 {:.1} p95 {:.1} p99 {:.1} ms, {transactions_per_saga:.1} write transactions per saga{}{}",
            confirmed as f64 / elapsed,
            latency.p50,
            latency.p95,
            latency.p99,
            if rejected + failed > 0 {
                format!(", {rejected} rejected, {failed} failed")
            } else {
                String::new()
            },
            first_error
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
        );
        Step {
            offered_rate: rate,
            seconds,
            placed: n,
            confirmed,
            rejected,
            failed,
            completed_per_second: confirmed as f64 / elapsed,
            latency,
            passed,
            transactions_per_saga,
        }
    }
}

/// Bursts of orders all on one SKU beside the same bursts spread over 100 SKUs, alternating,
/// offered faster than the stack completes them so that each measures capacity.
async fn hot_figure(
    b: &Bench,
    driver: &mut Driver,
    outcomes: &mut mpsc::UnboundedReceiver<Outcome>,
    sustained_rate: f64,
) -> HotFigure {
    const ORDERS: u64 = 300;
    let burst_rate = (sustained_rate * 4.0).max(200.0);
    let seconds = ORDERS as f64 / burst_rate;
    println!("  hot product: bursts of {ORDERS} orders at {burst_rate:.0}/s, one SKU vs 100");
    let (mut spread, mut hot, mut share, mut hot_latency) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut hot_not_confirmed = 0;
    for _ in 0..b.repeats {
        driver.hot = false;
        let s = driver.step(outcomes, burst_rate, seconds).await;
        driver.hot = true;
        let h = driver.step(outcomes, burst_rate, seconds).await;
        driver.hot = false;
        hot_not_confirmed += h.placed - h.confirmed;
        share.push(ratio(h.completed_per_second, s.completed_per_second));
        spread.push(s.completed_per_second);
        hot.push(h.completed_per_second);
        hot_latency.push(h.latency);
    }
    HotFigure {
        orders: ORDERS,
        burst_rate,
        spread_completed_per_second: Spread::of(&spread),
        hot_completed_per_second: Spread::of(&hot),
        share: Spread::of(&share),
        hot_not_confirmed,
        hot_latency: LatencySpread::of(&hot_latency),
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[derive(Deserialize)]
struct Placed {
    order_id: Uuid,
}
