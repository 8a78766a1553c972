//! Any set of real services in this process, in one namespace, on real Postgres and
//! JetStream: the command services and the orchestrator (`Stack::start`), plus the
//! projections worker and the query API (`Stack::start_all`). The system tests and the
//! orchestrator's crash test share it.

use std::time::Duration;

use contracts::inventory::CreateProduct;
use contracts::orders::{CancelOrder, PlaceOrder};
use domain::order::OrderLine;
use domain::{Currency, Sku};

use crate::world::{post_command, serve, World};
use serde_json::Value;
use service_kit::env::Env;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Orders, inventory, payments and the orchestrator, in this process, in one namespace.
pub struct Stack {
    pub orders: World,
    pub inventory: World,
    pub payments: World,
    pub orchestrator: PgPool,
    pub orchestrator_db: String,
    /// The read database, when the projections run (`start_all`).
    pub read_db: Option<String>,
    pub urls: [String; 4],
    /// The projections service and the query API, when started (`Options::reads`).
    pub reads: Vec<String>,
    /// The notification service's URL and database, when started (`Options::notifications`).
    pub notifications: Option<String>,
    pub notifications_db: Option<crate::TestDb>,
    /// The environment the notification service was started with, to start another replica
    /// of it as a process (for crash tests).
    pub notifications_env: Vec<(&'static str, String)>,
    pub shutdown: Vec<CancellationToken>,
    /// The payment provider's settings of the payments service (the test provider unless
    /// `Options::payments_env` says otherwise).
    pub payments_env: Vec<(&'static str, String)>,
}

/// Which services a [`Stack`] runs beside orders, inventory and payments.
#[derive(Debug, Clone)]
pub struct Options {
    /// The saga orchestrator.
    pub orchestrator: bool,
    /// The projections worker and the query API, on a fresh read database.
    pub reads: bool,
    /// The notification service, on a fresh database, sending to private addresses too (the
    /// tests' receivers).
    pub notifications: bool,
    /// `SAGA_BUSINESS_DEADLINE_MS` of the orchestrator, in seconds: how long a step that
    /// gets no answer is retried before the order is rejected (each attempt waits 1 s).
    pub business_deadline_secs: u64,
    /// More environment for the query API (`READ_YOUR_WRITES_TIMEOUT_MS`, say).
    pub query_env: Vec<(&'static str, String)>,
    /// More environment for the orchestrator (its backoff, say), over the stack's own.
    pub orchestrator_env: Vec<(&'static str, String)>,
    /// The payment provider's settings (`LocalStripe::env`, say); empty: the test provider.
    pub payments_env: Vec<(&'static str, String)>,
    /// More environment for the notification service (`SMTP_URL`, say).
    pub notifications_env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            orchestrator: true,
            reads: false,
            notifications: false,
            business_deadline_secs: 3,
            query_env: Vec::new(),
            orchestrator_env: Vec::new(),
            notifications_env: Vec::new(),
            payments_env: Vec::new(),
        }
    }
}

impl Stack {
    /// The saga stack: the command services and the orchestrator.
    pub async fn start(business_deadline_secs: u64) -> Self {
        Self::start_with(Options {
            business_deadline_secs,
            ..Options::default()
        })
        .await
    }

    /// Every service: the saga stack plus the projections service and the query API on a
    /// fresh read database.
    pub async fn start_all(business_deadline_secs: u64) -> Self {
        Self::start_with(Options {
            business_deadline_secs,
            reads: true,
            ..Options::default()
        })
        .await
    }

    /// The command services and whatever else `options` asks for.
    pub async fn start_with(options: Options) -> Self {
        let (mut stack, mut env) =
            Self::services_paying_with(options.business_deadline_secs, options.payments_env).await;
        for (name, value) in options.orchestrator_env {
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        }
        if options.orchestrator {
            let settings = orchestrator::Settings::from_env(&Env::from_pairs(env)).unwrap();
            let app = orchestrator::App::build(&settings).await.unwrap();
            stack.urls[3] = app.url();
            let stop = CancellationToken::new();
            tokio::spawn(app.run(stop.clone()));
            stack.shutdown.push(stop);
        }
        if options.reads {
            stack.start_reads(options.query_env).await;
        }
        if options.notifications {
            stack.start_notifications(options.notifications_env).await;
        }
        stack
    }

    async fn start_notifications(&mut self, extra: Vec<(&'static str, String)>) {
        let db = crate::fresh_db("notifications").await;
        let mut env = vec![
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.app.clone()),
            ("DATABASE_OWNER_URL", db.owner.clone()),
            ("NATS_URL", crate::infra().nats_url.clone()),
            ("NATS_CREDENTIALS_DIR", crate::nats_credentials_dir()),
            crate::tls_env(),
            ("NATS_NAMESPACE", self.orders.ns.as_str().to_owned()),
            ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true".to_owned()),
            ("WEBHOOK_BACKOFF_BASE_MS", "200".to_owned()),
        ];
        env.extend(extra);
        self.notifications_env = env.clone();
        let settings = notifications::Settings::from_env(&Env::from_pairs(env)).unwrap();
        let app = notifications::App::build(&settings).await.unwrap();
        self.notifications = Some(app.url());
        self.notifications_db = Some(db);
        let stop = CancellationToken::new();
        tokio::spawn(app.run(stop.clone()));
        self.shutdown.push(stop);
    }

    async fn start_reads(&mut self, query_env: Vec<(&'static str, String)>) {
        let read_db = crate::fresh_read_db("read").await;
        self.read_db = Some(read_db.owner.clone());
        let env = self.projections_env();
        let stop = CancellationToken::new();
        let projections = projections::App::build(
            &projections::Settings::from_env(&Env::from_pairs(env.clone())).unwrap(),
        )
        .await
        .unwrap();
        self.reads.push(projections.url());
        tokio::spawn(projections.run(stop.clone()));
        // The query API reads as the role that may only SELECT.
        let mut env = env;
        env.retain(|(k, _)| !k.starts_with("DATABASE_"));
        env.push(("DATABASE_URL", read_db.reader.clone()));
        env.extend(query_env);
        let query =
            query_api::App::build(&query_api::Settings::from_env(&Env::from_pairs(env)).unwrap())
                .await
                .unwrap();
        self.reads.push(query.url());
        tokio::spawn(query.run(stop.clone()));
        self.shutdown.push(stop);
    }

    /// The projections service's environment (its database is the read database's owner).
    fn projections_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            (
                "DATABASE_URL",
                self.read_db.clone().expect("the reads run (start_all)"),
            ),
            ("NATS_URL", crate::infra().nats_url.clone()),
            ("NATS_CREDENTIALS_DIR", crate::nats_credentials_dir()),
            crate::tls_env(),
            ("NATS_NAMESPACE", self.orders.ns.as_str().to_owned()),
        ]
    }

    /// `projections rebuild all`, as an operator runs it beside the live worker: every
    /// projection built again from the start of its streams and swapped in.
    pub async fn rebuild_projections(&self) -> Vec<projections::rebuild::Report> {
        let settings =
            projections::Settings::from_env(&Env::from_pairs(self.projections_env())).unwrap();
        projections::app::rebuild(&settings, "all", |_, _| {})
            .await
            .expect("every projection rebuilds")
    }

    /// Every service's base URL: orders, inventory, payments, orchestrator, then the reads.
    pub fn all_urls(&self) -> Vec<String> {
        self.urls.iter().chain(&self.reads).cloned().collect()
    }

    /// A stack where the customer cancels an order of `quantity` of `sku` (stock `stock`)
    /// while its saga retries a payment provider that never answers. The saga may still be
    /// compensating when this returns.
    pub async fn cancelled_mid_saga(sku: &str, stock: u32, quantity: u32) -> (Self, Uuid) {
        // Many attempts: the saga is still retrying the silent provider when the customer
        // cancels.
        let s = Self::start(50).await;
        s.product(sku, stock).await;
        let order = s.place(&[(sku, quantity)], "tok_timeout").await;
        crate::eventually(
            Duration::from_secs(20),
            "the saga to be authorising",
            || async {
                let saga = s.saga(order).await;
                (saga["steps"]["authorise"]["attempts"].as_u64() >= Some(1)).then_some(())
            },
        )
        .await;
        let cancelled = post_command(&s.urls[0], &CancelOrder { order_id: order }, None).await;
        assert_eq!(cancelled.status, 202, "{:?}", cancelled.body);
        (s, order)
    }

    /// How many messages the context's stream holds, as the administrator reads it.
    pub async fn stored(&self, context: messaging::BoundedContext) -> u64 {
        self.orders
            .js
            .get_stream(self.orders.ns.stream(context))
            .await
            .expect("the context's stream")
            .info()
            .await
            .expect("the stream's state")
            .state
            .messages
    }

    /// Where the analysts' tool reads this stack's streams.
    pub fn source(&self) -> events_cli::read::Source {
        events_cli::read::Source {
            js: self.orders.js.clone(),
            namespace: self.orders.ns.clone(),
            redact: false,
        }
    }

    /// `events verify` against this stack: its four event stores, and its read models when
    /// they run.
    pub async fn verify(&self) -> events_cli::verify::Report {
        use messaging::BoundedContext;
        let mut targets = events_cli::verify::Targets {
            read_models: self.read_db.clone(),
            ..Default::default()
        };
        for (context, url) in [
            (BoundedContext::Orders, &self.orders.db_url),
            (BoundedContext::Inventory, &self.inventory.db_url),
            (BoundedContext::Payments, &self.payments.db_url),
            (BoundedContext::Sagas, &self.orchestrator_db),
        ] {
            targets.stores.insert(context, url.clone());
        }
        let progress = std::sync::Arc::new(events_cli::progress::Progress::new("verify", true));
        events_cli::verify::verify(&self.source(), &targets, progress)
            .await
            .unwrap()
    }

    /// Waits for the relays and projections to settle, then requires `events verify` to
    /// find no difference between the streams, the event stores and the read models.
    pub async fn assert_consistent(&self) {
        let mut report = self.verify().await;
        for _ in 0..50 {
            if report.differences.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            report = self.verify().await;
        }
        panic!("events verify found differences: {:#?}", report.differences);
    }

    /// The worlds of orders, inventory and payments, in one namespace for the whole stack.
    pub async fn command_worlds() -> (World, World, World) {
        let orders = World::new("orders").await;
        let mut inventory = World::new("inventory").await;
        let mut payments = World::new("payments").await;
        inventory.ns = orders.ns.clone();
        payments.ns = orders.ns.clone();
        (orders, inventory, payments)
    }

    /// Orders, inventory and payments in this process; the orchestrator's environment.
    pub async fn services(business_deadline_secs: u64) -> (Self, Vec<(&'static str, String)>) {
        Self::services_paying_with(business_deadline_secs, Vec::new()).await
    }

    /// As [`Stack::services`], with the payment provider's settings (empty: the test one).
    pub async fn services_paying_with(
        business_deadline_secs: u64,
        payments_env: Vec<(&'static str, String)>,
    ) -> (Self, Vec<(&'static str, String)>) {
        let payments_env = if payments_env.is_empty() {
            crate::TEST_PAYMENT_PROVIDER
                .map(|(k, v)| (k, v.to_owned()))
                .to_vec()
        } else {
            payments_env
        };
        let (orders, inventory, payments) = Self::command_worlds().await;
        let orchestrator_db = crate::fresh_db("orchestrator").await;
        let orchestrator = PgPool::connect(&orchestrator_db.owner).await.unwrap();
        let orchestrator_url = orchestrator_db.app.clone();

        // Orders with the fair shares a deployment has (ORDERS_MAX_OPEN_PER_CUSTOMER ...).
        let spec = orders::OrdersSpec::from_env(&Env::from_pairs(orders.env())).unwrap();
        let (o, o_stop) = orders.spawn_orders(spec).await;
        let (i, i_stop) = inventory.spawn::<inventory::InventorySpec>().await;
        let (p, p_stop) = Self::spawn_payments(&payments, &payments_env).await;

        let mut env = orders.env();
        env.retain(|(k, _)| !k.starts_with("DATABASE_"));
        env.extend([
            ("DATABASE_URL", orchestrator_db.app),
            ("DATABASE_OWNER_URL", orchestrator_db.owner),
            ("SAGA_STEP_DEADLINE_MS", "1000".into()),
            (
                "SAGA_BUSINESS_DEADLINE_MS",
                (business_deadline_secs * 1000).to_string(),
            ),
            ("SAGA_BACKOFF_BASE_MS", "50".into()),
            ("SAGA_BACKOFF_MAX_MS", "200".into()),
            ("SAGA_RECOVERY_INTERVAL_MS", "1000".into()),
        ]);
        let stack = Self {
            orders,
            inventory,
            payments,
            orchestrator,
            orchestrator_db: orchestrator_url,
            read_db: None,
            urls: [o, i, p, String::new()],
            reads: Vec::new(),
            notifications: None,
            notifications_db: None,
            notifications_env: Vec::new(),
            shutdown: vec![o_stop, i_stop, p_stop],
            payments_env,
        };
        (stack, env)
    }

    /// The payments service in this process, with a short provider timeout and `provider`'s
    /// settings.
    async fn spawn_payments(
        world: &World,
        provider: &[(&'static str, String)],
    ) -> (String, CancellationToken) {
        let mut env = world.env();
        env.push(("PAYMENT_PROVIDER_TIMEOUT_MS", "300".into()));
        env.extend(provider.iter().cloned());
        serve(
            payments::app(&payments::settings(&Env::from_pairs(env)).unwrap())
                .await
                .unwrap(),
        )
    }

    /// Stops the payments service (commands to it then wait in its stream).
    pub fn stop_payments(&self) {
        self.shutdown[2].cancel();
    }

    /// Starts the payments service again after [`Stack::stop_payments`].
    pub async fn start_payments(&mut self) {
        let (url, stop) = Self::spawn_payments(&self.payments, &self.payments_env).await;
        self.urls[2] = url;
        self.shutdown[2] = stop;
    }

    /// Creates the product `sku` at 2.50 EUR with `stock` units.
    pub async fn product(&self, sku: &str, stock: u32) {
        let create = CreateProduct {
            sku: Sku::parse(sku).expect("a valid SKU"),
            name: sku.to_owned(),
            unit_price: 250,
            currency: Currency::parse("EUR").expect("a currency"),
            initial_stock: stock,
        };
        let r = post_command(&self.urls[1], &create, None).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }

    /// Sends `PlaceOrder` of `lines` (SKU, quantity) for `customer`, paid with `token`, and
    /// returns the orders service's answer as it is.
    pub async fn post_order(
        &self,
        customer: Uuid,
        lines: &[(&str, u32)],
        token: &str,
    ) -> crate::world::HttpAnswer {
        let place = PlaceOrder {
            customer_id: customer,
            lines: lines
                .iter()
                .map(|(sku, quantity)| OrderLine {
                    sku: Sku::parse(sku).expect("a valid SKU"),
                    quantity: *quantity,
                })
                .collect(),
            payment_token: token.to_owned(),
            email: None,
        };
        post_command(&self.urls[0], &place, None).await
    }

    /// Places an order of `lines` (SKU, quantity) for a new customer, paid with `token`.
    pub async fn place(&self, lines: &[(&str, u32)], token: &str) -> Uuid {
        let r = self.post_order(Uuid::now_v7(), lines, token).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        Uuid::parse_str(r.body["order_id"].as_str().unwrap()).unwrap()
    }

    pub async fn saga(&self, order: Uuid) -> Value {
        crate::http()
            .get(format!("{}/sagas/{order}", self.urls[3]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// Waits for the saga to end and returns it.
    pub async fn finished(&self, order: Uuid) -> Value {
        crate::eventually(Duration::from_secs(30), "the saga to end", || async {
            let saga = self.saga(order).await;
            (saga["status"] == "completed" || saga["status"] == "needs_attention").then_some(saga)
        })
        .await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for s in &self.shutdown {
            s.cancel();
        }
    }
}

/// How many events of `event_type` a context's event store holds.
pub async fn events_of_type(pool: &sqlx::PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .expect("counting events")
}

/// Asserts that the failpoint `nats.before_reply.<command>` swallowed a reply of each command
/// (its marker file is in `markers`).
pub fn assert_replies_swallowed(markers: &std::path::Path, commands: &[&str]) {
    for command in commands {
        let marker = markers.join(format!("nats.before_reply.{command}"));
        assert!(marker.exists(), "{command}'s reply was swallowed");
    }
}

pub fn steps_failed(saga: &Value, step: &str) -> usize {
    saga["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["StepFailed"]["step"] == step)
        .count()
}
