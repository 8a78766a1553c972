//! A test's private world: a fresh database (migrated like a command service's, or like the
//! read database), a NATS namespace, and helpers to run a service in it, send commands over
//! HTTP and NATS, publish events and read the stream.

use std::time::Duration;

use contracts::{Command, NatsCommand, Reply};
use messaging::{BoundedContext, Envelope, Namespace};
use serde_json::Value;
use sqlx::PgPool;

use crate::StoredMessage;

/// One test's databases and namespace.
pub struct World {
    /// The database and each of its roles' URLs.
    pub db: crate::TestDb,
    /// The URL its service runs with: the service's own role on a command database (which
    /// may append events, never change them), the owner on the read database.
    pub db_url: String,
    /// The owner's pool, for the test's own checks and set-up.
    pub pool: PgPool,
    pub ns: Namespace,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    /// What migrated it (and grants its roles their privileges).
    schema: &'static service_kit::db::Schema,
}

/// An HTTP answer: status and JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Value,
    pub replayed: bool,
}

impl World {
    /// A fresh command-service database named after `label`, migrated by its owner, which
    /// grants the service's role what the event store's schema says.
    pub async fn new(label: &str) -> Self {
        let db = crate::fresh_db(label).await;
        let url = db.app.clone();
        Self::migrated(db, url, &event_store::SCHEMA).await
    }

    /// A fresh database named after `label`, migrated by its owner with `schema`, which grants
    /// the service's role its privileges (the notification service's, say).
    pub async fn with_schema(label: &str, schema: &'static service_kit::db::Schema) -> Self {
        let db = crate::fresh_db(label).await;
        let url = db.app.clone();
        Self::migrated(db, url, schema).await
    }

    /// A fresh read database, migrated as the projections migrate it (they own it).
    pub async fn read() -> Self {
        let db = crate::fresh_read_db("read").await;
        let url = db.owner.clone();
        Self::migrated(db, url, &projections::SCHEMA).await
    }

    /// `db` with `schema` applied as its owner, and a namespace; its service runs as `url`.
    async fn migrated(
        db: crate::TestDb,
        url: String,
        schema: &'static service_kit::db::Schema,
    ) -> Self {
        use sqlx::Connection;
        let role = service_kit::db::user_of(&url).expect("a Postgres URL");
        let mut owner = sqlx::PgConnection::connect(&db.owner)
            .await
            .expect("connect the test database as its owner");
        schema
            .apply(&mut owner, &role)
            .await
            .expect("migrate the test database");
        let _ = owner.close().await;
        // Few connections: many tests run side by side on one cluster.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&db.owner)
            .await
            .expect("connect the test database");
        let nats = crate::nats().await;
        Self {
            db,
            db_url: url,
            pool,
            ns: crate::unique_namespace(),
            js: async_nats::jetstream::new(nats.clone()),
            nats,
            schema,
        }
    }

    /// Applies its schema again, as the owner, as its service does at every start.
    pub async fn start_again(&self) {
        use sqlx::Connection;
        let role = service_kit::db::user_of(&self.db_url).expect("a Postgres URL");
        let mut owner = sqlx::PgConnection::connect(&self.db.owner)
            .await
            .expect("connect the test database as its owner");
        self.schema
            .apply(&mut owner, &role)
            .await
            .expect("apply the schema again");
        let _ = owner.close().await;
    }

    /// An aggregate as the events in this world's database make it.
    pub async fn aggregate<A: cqrs_es::Aggregate>(&self, id: &str) -> A {
        let rows: Vec<(Value,)> = sqlx::query_as(
            "SELECT payload::jsonb FROM events WHERE aggregate_id = $1 ORDER BY sequence",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .expect("read the events");
        let mut aggregate = A::default();
        for (payload,) in rows {
            aggregate.apply(serde_json::from_value(payload).expect("a stored event"));
        }
        aggregate
    }

    /// Context `S`'s command service in this process, on an ephemeral port: its base URL and
    /// the token that stops it.
    pub async fn spawn<S>(&self) -> (String, tokio_util::sync::CancellationToken)
    where
        S: command_kit::CommandSpec + Default,
        <S::Aggregate as cqrs_es::Aggregate>::Services: Default,
    {
        self.spawn_spec(S::default()).await
    }

    /// The orders service in this world, as its binary runs: its payment tokens sealed with
    /// customers' data keys under the tests' master key, opened for payments, erasure served.
    pub async fn spawn_orders(
        &self,
        spec: orders::OrdersSpec,
    ) -> (String, tokio_util::sync::CancellationToken) {
        let env = service_kit::env::Env::from_pairs(self.env());
        let settings =
            command_kit::settings::<orders::OrdersSpec>(&env).expect("the world's settings");
        let master = crate::data_keys_master();
        serve(
            command_kit::CommandApp::build(&settings, spec, move |resources| {
                Ok(orders::parts(resources, master))
            })
            .await
            .expect("the service starts"),
        )
    }

    /// [`World::spawn`] with the spec as given.
    pub async fn spawn_spec<S>(&self, spec: S) -> (String, tokio_util::sync::CancellationToken)
    where
        S: command_kit::CommandSpec,
        <S::Aggregate as cqrs_es::Aggregate>::Services: Default,
    {
        let env = service_kit::env::Env::from_pairs(self.env());
        let settings = command_kit::settings::<S>(&env).expect("the world's settings");
        serve(
            command_kit::CommandApp::build(&settings, spec, |_| {
                Ok(command_kit::Parts::services(Default::default()))
            })
            .await
            .expect("the service starts"),
        )
    }

    /// The service `binary` as a child process in this world, with `extra` environment.
    pub async fn start_process(
        &self,
        binary: &std::path::Path,
        extra: &[(&'static str, &str)],
    ) -> crate::process::ServiceProcess {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        crate::process::ServiceProcess::start(binary, crate::free_port(), &env).await
    }

    /// Publishes raw bytes to `context`'s subject of `aggregate`, as if they were its event.
    pub async fn publish_raw(
        &self,
        context: BoundedContext,
        aggregate: &str,
        event_type: &str,
        body: Vec<u8>,
    ) {
        let subject = self.ns.event_subject(context, aggregate, event_type);
        self.js
            .publish(subject, body.into())
            .await
            .expect("publish")
            .await
            .expect("JetStream stores it");
    }

    /// Publishes an envelope where its context's relay would.
    pub async fn publish(&self, envelope: &Envelope) {
        let (context, _, _) = envelope.type_parts().expect("a streamshop event type");
        let context = context.parse().expect("a known context");
        self.publish_raw(
            context,
            &envelope.subject,
            envelope.name(),
            envelope.to_vec(),
        )
        .await;
    }

    /// The environment a service needs to run in this world.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HTTP_ADDR", "127.0.0.1:0".into()),
            ("DATABASE_URL", self.db_url.clone()),
            // Its start-up migrates (a no-op) and grants as the owner, as in production.
            ("DATABASE_OWNER_URL", self.db.owner.clone()),
            ("NATS_URL", crate::infra().nats_url.clone()),
            ("NATS_CREDENTIALS_DIR", crate::nats_credentials_dir()),
            crate::tls_env(),
            ("NATS_NAMESPACE", self.ns.as_str().to_owned()),
            ("OUTBOX_POLL_INTERVAL_MS", "200".into()),
            // The orders service seals payment tokens under it (the others ignore it).
            (
                "DATA_KEYS_MASTER_KEY",
                crate::data_keys_master().to_base64(),
            ),
        ]
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }

    /// The context's stream, read back in order.
    pub async fn stream(&self, context: BoundedContext) -> Vec<StoredMessage> {
        crate::read_stream(&self.js, &self.ns.stream(context)).await
    }

    /// Waits until the outbox is empty and the stream holds at least `n` messages; returns
    /// them.
    pub async fn published_messages(
        &self,
        context: BoundedContext,
        n: usize,
    ) -> Vec<StoredMessage> {
        crate::eventually(Duration::from_secs(60), "events published", || async {
            let messages = self.stream(context).await;
            (messages.len() >= n && self.count("SELECT count(*) FROM outbox").await == 0)
                .then_some(messages)
        })
        .await
    }

    /// Waits until the outbox is empty and the stream holds at least `n` messages; returns
    /// their envelopes.
    pub async fn published(&self, context: BoundedContext, n: usize) -> Vec<Envelope> {
        self.published_messages(context, n)
            .await
            .iter()
            .map(|m| Envelope::from_slice(&m.payload).expect("every message is an envelope"))
            .collect()
    }

    /// Waits for `n` published events of `context`, checks each against its schemas, and
    /// returns their distinct type names, sorted.
    pub async fn published_types(&self, context: BoundedContext, n: usize) -> Vec<String> {
        let envelopes = self.published(context, n).await;
        for envelope in &envelopes {
            crate::schemas::assert_valid(envelope);
        }
        let types: std::collections::BTreeSet<String> =
            envelopes.iter().map(|e| e.name().to_owned()).collect();
        types.into_iter().collect()
    }

    /// Sends `command` over NATS request/reply with `command_id`, and reads the typed reply.
    pub async fn nats_send<C: Command>(&self, command_id: &str, command: &C) -> Reply<C::Answer> {
        let body = serde_json::to_value(NatsCommand {
            command_id,
            command,
        })
        .expect("contract requests serialise");
        let reply = self.nats_command(C::CONTEXT, C::NAME, body).await;
        serde_json::from_value(reply.clone()).unwrap_or_else(|e| {
            panic!(
                "the reply to {} is not its contract's: {e}: {reply}",
                C::NAME
            )
        })
    }

    /// Waits until `context`'s service answers its commands over NATS (a service served in
    /// this process subscribes a moment after it is built).
    pub async fn serving(&self, context: BoundedContext) {
        let subject = self.ns.command_subject(context, "Serving");
        crate::eventually(
            Duration::from_secs(20),
            "the service to answer over NATS",
            || async {
                // Any answer will do (an unknown command is refused): someone is there.
                self.nats
                    .request(subject.clone(), b"{}".to_vec().into())
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Sends a raw body as the command `command` over NATS request/reply and returns the raw
    /// reply: for tests of malformed requests.
    pub async fn nats_command(&self, context: BoundedContext, command: &str, body: Value) -> Value {
        let subject = self.ns.command_subject(context, command);
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            self.nats
                .request(subject, serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .expect("a reply in time")
        .expect("NATS request");
        serde_json::from_slice(&reply.payload).expect("a JSON reply")
    }
}

/// The id and version of an accepted answer to an order command.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OrderAccepted {
    pub order_id: uuid::Uuid,
    pub version: u64,
}

impl HttpAnswer {
    /// The body as `T`: the command's answer of an accepted HTTP answer (its id and version
    /// fields are left aside).
    pub fn answer<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("not a {} ({e}): {self:?}", std::any::type_name::<T>()))
    }
}

/// The HTTP path of `command`: its contract's route with the path parameters filled in from
/// the request's own fields.
pub fn path_of<C: Command>(command: &C) -> String {
    let fields = serde_json::to_value(command).expect("contract requests serialise");
    contracts::path_params(C::PATH)
        .into_iter()
        .fold(C::PATH.to_owned(), |path, param| {
            let value = match &fields[param] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            path.replace(&format!("{{{param}}}"), &value)
        })
}

/// `POST`s `command` to its contract's route at `base`, with an optional `Idempotency-Key`.
pub async fn post_command<C: Command>(base: &str, command: &C, key: Option<&str>) -> HttpAnswer {
    let body = serde_json::to_value(command).expect("contract requests serialise");
    post(base, &path_of(command), body, key).await
}

/// `POST base+path` with a JSON body and an optional `Idempotency-Key`.
pub async fn post(base: &str, path: &str, body: Value, key: Option<&str>) -> HttpAnswer {
    let mut request = crate::http().post(format!("{base}{path}")).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = response.json().await.unwrap_or(Value::Null);
    HttpAnswer {
        status,
        body,
        replayed,
    }
}

/// Serves a built command service in this process; returns its base URL and the token that
/// stops it.
pub fn serve(app: command_kit::CommandApp) -> (String, tokio_util::sync::CancellationToken) {
    let base = app.url();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    (base, shutdown)
}

/// Which transport a command goes over.
#[derive(Debug, Clone)]
pub enum Via {
    /// HTTP, at this base URL.
    Http(String),
    Nats,
}

/// A command's answer, the same shape whichever transport carried it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub accepted: bool,
    /// Accepted: the version and the answer data. Rejected: the problem or the reply.
    pub fields: Value,
}

impl World {
    /// Sends `command` over `via` and requires it accepted; returns the answer's fields.
    pub async fn expect_accepted<C: Command>(&self, via: &Via, command: &C) -> Value {
        let answer = self.send(via, command).await;
        assert!(
            answer.accepted,
            "{} over {via:?}: {:?}",
            C::NAME,
            answer.fields
        );
        answer.fields
    }

    /// Sends `command` over `via`, requires it accepted, and reads its typed answer.
    pub async fn expect_answer<C: Command>(&self, via: &Via, command: &C) -> C::Answer {
        let fields = self.expect_accepted(via, command).await;
        serde_json::from_value(fields.clone())
            .unwrap_or_else(|e| panic!("{} over {via:?} ({e}): {fields:?}", C::NAME))
    }

    /// Sends `command` over `via`: on HTTP to its contract's route, on NATS with a fresh
    /// `command_id`.
    pub async fn send<C: Command>(&self, via: &Via, command: &C) -> Answer {
        match via {
            Via::Http(base) => {
                let answer = post_command(base, command, None).await;
                Answer {
                    accepted: answer.status == 202,
                    fields: answer.body,
                }
            }
            Via::Nats => {
                let command_id = uuid::Uuid::now_v7().to_string();
                match self.nats_send(&command_id, command).await {
                    Reply::Accepted {
                        aggregate_id,
                        version,
                        data,
                        ..
                    } => {
                        let mut fields = serde_json::to_value(data).expect("answers serialise");
                        fields["version"] = version.into();
                        fields["aggregate_id"] = aggregate_id.into();
                        Answer {
                            accepted: true,
                            fields,
                        }
                    }
                    rejected => Answer {
                        accepted: false,
                        fields: serde_json::to_value(rejected).expect("replies serialise"),
                    },
                }
            }
        }
    }
}
