//! The whole system scaled out, as one test's own: a three-node JetStream cluster with R3
//! streams, two replicas of every service as real processes (each replica's NATS list
//! starting at a different node), a real OpenID provider, and a load of orders placed
//! through the two gateways as a frontend behind a load balancer would place them. The
//! cluster's failure tests kill nodes and replicas under that load and end with the outage
//! checks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cluster::{NatsCluster, NODES};
use crate::oidc::Oidc;
use crate::process::ServiceProcess;
use crate::stack::Stack;
use crate::world::World;

/// The services in the order they start (the topology's): those that create streams first,
/// the public entry last.
pub fn services() -> impl DoubleEndedIterator<Item = &'static str> {
    topology::SERVICES.iter().map(|s| s.name)
}

/// Replicas of every service.
pub const REPLICAS: usize = 2;

/// Orders in each failure test's load.
pub const LOAD: usize = 300;

/// One replica of one service: its port stays its own across restarts, so the gateways'
/// lists of replicas stay true.
pub struct Replica {
    pub service: &'static str,
    pub index: usize,
    pub port: u16,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    process: Option<ServiceProcess>,
}

impl Replica {
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn url(&self) -> String {
        let scheme = if topology::service(self.service).is_some_and(|s| s.public)
            || crate::infra().tls_dir.is_none()
        {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

/// The scaled-out system.
pub struct Fleet {
    pub nats: NatsCluster,
    /// The worlds, databases and URLs the end checks read (its URLs are running replicas').
    pub stack: Stack,
    pub oidc: Oidc,
    pub replicas: Vec<Replica>,
    logs: PathBuf,
}

impl Fleet {
    /// Starts the cluster, makes it this test process's NATS (one test per file), and starts
    /// two replicas of every service on fresh databases, each replica's NATS list starting at
    /// a different node.
    pub async fn start() -> Self {
        let nats = NatsCluster::start().await;
        crate::use_infra(crate::Infra {
            nats_url: nats.url(),
            ..crate::Infra::from_env()
        });
        let (orders, inventory, payments) = Stack::command_worlds().await;
        let orchestrator_db = crate::fresh_db("orchestrator").await;
        let read_db = crate::fresh_read_db("read").await;
        let notifications_db = crate::fresh_db("notifications").await;
        let oidc = Oidc::start().await;
        let logs = crate::private::scratch("fleet-logs");
        eprintln!("fleet: every replica's log is in {}", logs.display());

        let ports: Vec<[u16; REPLICAS]> = services()
            .map(|_| std::array::from_fn(|_| crate::free_port()))
            .collect();
        let list = |service: &str| {
            let i = services().position(|s| s == service).expect("a service");
            ports[i]
                .iter()
                .map(|p| {
                    let scheme = if crate::infra().tls_dir.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    format!("{scheme}://127.0.0.1:{p}")
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let common = vec![
            ("NATS_CREDENTIALS_DIR", crate::nats_credentials_dir()),
            crate::tls_env(),
            ("NATS_NAMESPACE", orders.ns.as_str().to_owned()),
            ("NATS_STREAM_REPLICAS", NODES.to_string()),
            ("OUTBOX_POLL_INTERVAL_MS", "200".into()),
            // Each replica's log is a file of its own, kept after the test for a failure.
            ("RUST_LOG", "info".into()),
        ];
        let command = |w: &World| {
            vec![
                ("DATABASE_URL", w.db_url.clone()),
                ("DATABASE_OWNER_URL", w.db.owner.clone()),
            ]
        };
        // Each service's own settings: its database, and what these tests tune.
        let own = |service: &topology::Service| -> Vec<(&'static str, String)> {
            let mut env = match service.name {
                "orders" => {
                    // The load is one customer's, hundreds of orders at once: the fair-share
                    // bounds are not what these tests measure.
                    let mut env = command(&orders);
                    env.push(("ORDERS_MAX_OPEN_PER_CUSTOMER", "0".into()));
                    env.push(("ORDERS_MAX_UNITS_PER_PRODUCT_PER_CUSTOMER", "0".into()));
                    // One master key for both replicas: either opens what the other sealed.
                    env.push((
                        "DATA_KEYS_MASTER_KEY",
                        crate::data_keys_master().to_base64(),
                    ));
                    env
                }
                "inventory" => command(&inventory),
                "payments" => {
                    let mut env = command(&payments);
                    env.push(("PAYMENT_PROVIDER_TIMEOUT_MS", "300".into()));
                    env.extend(crate::TEST_PAYMENT_PROVIDER.map(|(k, v)| (k, v.into())));
                    env
                }
                "orchestrator" => vec![
                    ("DATABASE_URL", orchestrator_db.app.clone()),
                    ("DATABASE_OWNER_URL", orchestrator_db.owner.clone()),
                    ("SAGA_STEP_DEADLINE_MS", "1000".into()),
                    // An outage is weather: the business deadline is far away.
                    ("SAGA_BUSINESS_DEADLINE_MS", "900000".into()),
                    ("SAGA_BACKOFF_BASE_MS", "50".into()),
                    ("SAGA_BACKOFF_MAX_MS", "2000".into()),
                    ("SAGA_RECOVERY_INTERVAL_MS", "1000".into()),
                    // The load is one customer's: their share of the places in flight is not
                    // what these tests measure.
                    ("SAGA_MAX_IN_FLIGHT_PER_CUSTOMER", "10000".into()),
                ],
                "projections" => vec![("DATABASE_URL", read_db.owner.clone())],
                "query-api" => vec![("DATABASE_URL", read_db.reader.clone())],
                "notifications" => vec![
                    ("DATABASE_URL", notifications_db.app.clone()),
                    ("DATABASE_OWNER_URL", notifications_db.owner.clone()),
                    // The tests' receivers listen on 127.0.0.1.
                    ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true".into()),
                    ("WEBHOOK_BACKOFF_BASE_MS", "200".into()),
                ],
                "gateway" => vec![
                    ("OIDC_ISSUER_URL", oidc.issuer.clone()),
                    ("OIDC_AUDIENCE", oidc.audience.clone()),
                    ("METRICS_ADDR", "127.0.0.1:0".into()),
                    // The load is one customer's: the limits are not what these tests measure.
                    ("RATE_LIMIT_PER_MINUTE", "1000000".into()),
                    ("RATE_LIMIT_BURST", "100000".into()),
                    ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1000000".into()),
                    ("RATE_LIMIT_ANONYMOUS_BURST", "100000".into()),
                ],
                other => panic!("the fleet does not know how to run {other}: add it here"),
            };
            // Every replica of each service it calls.
            for called in service.calls.iter().filter_map(|c| topology::service(c)) {
                env.push((
                    called.url_setting.expect("a URL setting"),
                    list(called.name),
                ));
            }
            env
        };
        let env_of: Vec<Vec<(&'static str, String)>> = topology::SERVICES.iter().map(own).collect();
        let mut replicas = Vec::new();
        for index in 0..REPLICAS {
            for (s, ((service, own), port)) in services().zip(&env_of).zip(&ports).enumerate() {
                let mut env = common.clone();
                env.extend(own.iter().cloned());
                // Each replica of a service starts at a node of its own, and the services'
                // first replicas are spread over all three nodes.
                env.push(("NATS_URL", nats.url_from((s + index) % NODES)));
                replicas.push(Replica {
                    service,
                    index,
                    port: port[index],
                    env,
                    log: logs.join(format!("{service}-{index}.log")),
                    process: None,
                });
            }
        }
        let mut fleet = Self {
            stack: Stack {
                orchestrator: PgPool::connect(&orchestrator_db.owner)
                    .await
                    .expect("connect the orchestrator's database"),
                orchestrator_db: orchestrator_db.app.clone(),
                read_db: Some(read_db.owner.clone()),
                urls: Default::default(),
                reads: Vec::new(),
                // Its replicas are the fleet's, as the other services' are.
                notifications: None,
                notifications_db: Some(notifications_db),
                notifications_env: Vec::new(),
                shutdown: Vec::new(),
                payments_env: crate::TEST_PAYMENT_PROVIDER
                    .map(|(k, v)| (k, v.to_owned()))
                    .to_vec(),
                orders,
                inventory,
                payments,
            },
            nats,
            oidc,
            replicas,
            logs,
        };
        // One replica of everything first: two replicas migrating one database at once
        // would only take turns, but one at a time keeps start-up failures readable.
        for index in 0..REPLICAS {
            let mine: Vec<usize> = (0..fleet.replicas.len())
                .filter(|r| fleet.replicas[*r].index == index)
                .collect();
            for r in &mine {
                fleet.spawn(*r);
            }
            for r in &mine {
                fleet.wait_ready(*r).await;
            }
        }
        fleet.aim_checks();
        fleet.assert_spread().await;
        fleet
    }

    /// Waits until every service that talks to NATS has both replicas connected again to the
    /// nodes that run (after a node was killed, its clients move to the others).
    pub async fn assert_reconnected(&self) {
        crate::eventually(
            Duration::from_secs(30),
            "every replica connected to a running node",
            || async {
                let mut names = Vec::new();
                for i in 0..NODES {
                    names.extend(self.nats.clients_on(i).await);
                }
                messaging::Identity::all()
                    .into_iter()
                    .filter(|i| *i != messaging::Identity::ANALYST)
                    .all(|i| names.iter().filter(|n| *n == i.name()).count() >= REPLICAS)
                    .then_some(())
            },
        )
        .await;
    }

    /// Every service that talks to NATS has its two replicas on two different nodes.
    pub async fn assert_spread(&self) {
        let mut on = Vec::new();
        for i in 0..NODES {
            on.push(self.nats.clients_on(i).await);
        }
        let mut seen = 0;
        for identity in messaging::Identity::all() {
            let nodes: Vec<usize> = (0..NODES)
                .filter(|i| on[*i].iter().any(|c| c == identity.name()))
                .collect();
            let replicas: usize = on
                .iter()
                .map(|c| c.iter().filter(|c| *c == identity.name()).count())
                .sum();
            if replicas > 0 {
                seen += 1;
                assert!(
                    replicas >= REPLICAS && nodes.len() >= REPLICAS,
                    "{}'s replicas are on nodes {nodes:?}: {on:?}",
                    identity.name()
                );
            }
        }
        // All but the analysts' identity: every service but the query API talks to NATS.
        assert_eq!(seen, messaging::Identity::all().len() - 1, "{on:?}");
    }

    fn position(&self, service: &str, index: usize) -> usize {
        self.replicas
            .iter()
            .position(|r| r.service == service && r.index == index)
            .unwrap_or_else(|| panic!("no replica {index} of {service}"))
    }

    fn spawn(&mut self, r: usize) {
        let replica = &mut self.replicas[r];
        assert!(
            replica.process.is_none(),
            "{} {} runs",
            replica.service,
            replica.index
        );
        replica.process = Some(ServiceProcess::spawn(
            &crate::binary(replica.service),
            replica.port,
            &replica.env,
            Some(&replica.log),
        ));
    }

    async fn wait_ready(&self, r: usize) {
        let replica = &self.replicas[r];
        let client = crate::http();
        let url = format!("{}/readyz", replica.url());
        let what = format!(
            "{} replica {} ready (log {})",
            replica.service,
            replica.index,
            replica.log.display()
        );
        crate::eventually(Duration::from_secs(60), &what, || async {
            let ok = client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
    }

    /// Points the end checks at running replicas.
    pub fn aim_checks(&mut self) {
        let running = |service: &str| {
            self.replicas
                .iter()
                .find(|r| r.service == service && r.is_running())
                .unwrap_or_else(|| panic!("no replica of {service} runs"))
                .url()
        };
        let urls = [
            running("orders"),
            running("inventory"),
            running("payments"),
            running("orchestrator"),
        ];
        let reads = vec![running("projections"), running("query-api")];
        self.stack.urls = urls;
        self.stack.reads = reads;
    }

    /// Every gateway replica's URL, running or not: a client (or the load balancer in front
    /// of them) sends to the next when one refuses.
    pub fn gateways(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|r| r.service == topology::GATEWAY.name)
            .map(Replica::url)
            .collect()
    }

    /// SIGKILL replica `index` of `service`.
    pub async fn kill9(&mut self, service: &str, index: usize) {
        let r = self.position(service, index);
        let process = self.replicas[r].process.take().expect("it runs");
        process.kill9().await;
    }

    /// SIGTERM replica `index` of `service` and wait for it to finish what it holds; true
    /// when it exited cleanly.
    pub async fn terminate(&mut self, service: &str, index: usize) -> bool {
        let r = self.position(service, index);
        let process = self.replicas[r].process.take().expect("it runs");
        process.terminate().await
    }

    /// Starts replica `index` of `service` again on its port and waits until it is ready.
    pub async fn start_again(&mut self, service: &str, index: usize) {
        let r = self.position(service, index);
        self.spawn(r);
        self.wait_ready(r).await;
    }

    /// What a rollout does: each replica of each service in turn stopped with SIGTERM (it
    /// must exit cleanly) and started again, the next only once it is ready.
    pub async fn rolling_restart(&mut self) {
        for service in services() {
            for index in 0..REPLICAS {
                assert!(
                    self.terminate(service, index).await,
                    "{service} replica {index} did not exit cleanly on SIGTERM (log {})",
                    self.logs.join(format!("{service}-{index}.log")).display()
                );
                self.start_again(service, index).await;
                eprintln!("rollout: {service} replica {index} replaced");
            }
        }
    }

    /// The fleet with [`LOAD`] orders starting to flow through its gateways, 20 a second
    /// at most.
    pub async fn start_under_load() -> (Self, Load) {
        let fleet = Self::start().await;
        let token = fleet.prepare_load(LOAD).await;
        let load = Load::start(fleet.gateways(), token, LOAD, Duration::from_millis(50));
        (fleet, load)
    }

    /// A customer's token and the load's products, seen through the gateway.
    pub async fn prepare_load(&self, orders: usize) -> String {
        crate::outage::stock_for(&self.stack, orders).await;
        let gateway = &self.gateways()[0];
        for sku in ["OUT-1", "OUT-2"] {
            let url = format!("{gateway}/api/products/{sku}");
            crate::eventually(
                Duration::from_secs(30),
                "the product in the catalog",
                || async {
                    let r = reqwest::get(&url).await.ok()?;
                    r.status().is_success().then_some(())
                },
            )
            .await;
        }
        self.oidc.customer_token(Uuid::now_v7()).await
    }
}

/// What a load through the gateways saw.
#[derive(Debug, Default)]
pub struct Placed {
    /// Each order placed, with its payment token, in the order of the [`mix`](crate::outage::mix).
    pub orders: Vec<(Uuid, &'static str)>,
    /// Every answer a gateway gave that was not a success: none is expected.
    pub failed: Vec<String>,
    /// Requests a gateway replica refused to connect (it was stopping or gone), sent to the
    /// other, as a load balancer does.
    pub handed_over: usize,
    /// Requests a gateway replica took and dropped without an answer: each is sent again
    /// (with the same `Idempotency-Key`), and each is recorded here.
    pub dropped: Vec<String>,
}

/// Orders placed through the gateways in the background, one at a time at `pace`, each
/// followed by a catalog read, while a test does its damage.
pub struct Load {
    progress: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Placed>,
}

impl Load {
    /// Starts placing `count` orders of the mix with `token`.
    pub fn start(gateways: Vec<String>, token: String, count: usize, pace: Duration) -> Self {
        let progress = Arc::new(AtomicUsize::new(0));
        let seen = progress.clone();
        let task = tokio::spawn(async move {
            // A new connection per request, as many clients behind a balancer make them: a
            // replica that stops refuses new connections rather than dropping reused ones.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client");
            let mut placed = Placed::default();
            let mut gateways = Balancer::new(gateways);
            for i in 0..count {
                let (sku, payment) = crate::outage::mix(i);
                let order = place(&http, &mut gateways, i, &token, sku, payment, &mut placed).await;
                placed.orders.push((order, payment));
                read_catalog(&http, &mut gateways, i, sku, &mut placed).await;
                seen.store(i + 1, Ordering::SeqCst);
                tokio::time::sleep(pace).await;
            }
            placed
        });
        Self { progress, task }
    }

    /// Waits until `n` orders are placed.
    pub async fn reached(&self, n: usize) {
        crate::eventually(Duration::from_secs(300), "the load to go on", || async {
            (self.progress.load(Ordering::SeqCst) >= n).then_some(())
        })
        .await;
    }

    /// Waits for the rest of the load, and says how it went.
    pub async fn finish(self) -> Placed {
        let placed = self.task.await.expect("the load's task");
        eprintln!(
            "load: {} placed, {} failed answers, {} refused and handed to the other gateway, {} dropped without an answer",
            placed.orders.len(),
            placed.failed.len(),
            placed.handed_over,
            placed.dropped.len()
        );
        for failed in placed.failed.iter().chain(&placed.dropped) {
            eprintln!("load: {failed}");
        }
        placed
    }
}

/// What stands in front of the gateways: it sends each request to the next replica in
/// turn, passes over for a second a replica that did not answer (refused, or closed before
/// answering), and hands its request to the next, as a load balancer does.
struct Balancer {
    gateways: Vec<String>,
    next: usize,
    down_until: Vec<Option<std::time::Instant>>,
}

impl Balancer {
    fn new(gateways: Vec<String>) -> Self {
        let down_until = vec![None; gateways.len()];
        Self {
            gateways,
            next: 0,
            down_until,
        }
    }

    async fn send(
        &mut self,
        placed: &mut Placed,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> reqwest::Response {
        let n = self.gateways.len();
        for attempt in 0..200 {
            let now = std::time::Instant::now();
            let start = self.next;
            self.next = (self.next + 1) % n;
            let g = (0..n)
                .map(|k| (start + k) % n)
                .find(|g| self.down_until[*g].is_none_or(|until| now >= until))
                .unwrap_or(start);
            let sent = request(&self.gateways[g])
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            match sent {
                Ok(response) => {
                    self.down_until[g] = None;
                    return response;
                }
                Err(e) => {
                    if e.is_connect() {
                        placed.handed_over += 1;
                    } else {
                        placed.dropped.push(format!("{}: {e}", self.gateways[g]));
                    }
                    if self.down_until[g].is_none() {
                        eprintln!(
                            "load: {} did not answer ({e}); the other replica takes its requests",
                            self.gateways[g]
                        );
                    }
                    self.down_until[g] = Some(now + Duration::from_secs(1));
                    if attempt % n == n - 1 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        panic!("no gateway answered in 200 attempts");
    }
}

async fn place(
    http: &reqwest::Client,
    gateways: &mut Balancer,
    i: usize,
    token: &str,
    sku: &str,
    payment: &str,
    placed: &mut Placed,
) -> Uuid {
    let key = Uuid::new_v4().to_string();
    let body = json!({"lines": [{"sku": sku, "quantity": 1}], "payment_token": payment});
    loop {
        let response = gateways
            .send(placed, |g| {
                http.post(format!("{g}/api/orders"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", &key)
                    .json(&body)
            })
            .await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == 202 {
            let body: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
            return body["order_id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok())
                .expect("an order id");
        }
        // A frontend retries a 503 with the same key; the test still counts it.
        placed
            .failed
            .push(format!("POST /api/orders #{i}: {status} {text}"));
        assert!(
            status == 503 && placed.failed.len() < 100,
            "placing order {i}: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn read_catalog(
    http: &reqwest::Client,
    gateways: &mut Balancer,
    i: usize,
    sku: &str,
    placed: &mut Placed,
) {
    let response = gateways
        .send(placed, |g| http.get(format!("{g}/api/products/{sku}")))
        .await;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        placed
            .failed
            .push(format!("GET /api/products/{sku} #{i}: {status} {text}"));
    }
}
