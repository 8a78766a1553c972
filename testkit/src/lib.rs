//! Test harness on real infrastructure: every test gets fresh Postgres databases and its own
//! NATS namespace (stream names and subjects), so tests run in parallel without sharing state.
//!
//! The infrastructure is the test Postgres cluster and NATS server that `cargo xtask test`
//! starts; their addresses come from `STREAMSHOP_TEST_PG_URL` and `STREAMSHOP_TEST_NATS_URL`.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod fixtures;
pub mod fleet;
pub mod front;
pub mod gate;
pub mod mail;
pub mod oidc;
pub mod otlp;
pub mod outage;
pub mod private;
pub mod process;
pub mod schemas;
pub mod stack;
pub mod stripe;
pub mod webhooks;
pub mod world;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use messaging::Namespace;
use sqlx::{Connection, PgConnection};

/// Where the test infrastructure listens unless the environment says otherwise; these are the
/// ports `cargo xtask test` uses.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:25433/postgres";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:24223";

/// Addresses of the shared test infrastructure.
#[derive(Debug, Clone)]
pub struct Infra {
    pub pg_admin_url: String,
    pub nats_url: String,
    /// The NATS identities' keys (`<identity>.nk`, `admin.nk`), as `cargo xtask test` made
    /// them for its server.
    pub nats_credentials: Option<std::path::PathBuf>,
    /// The analysts' URL (their user and password in it).
    pub nats_analyst_url: Option<String>,
    /// Where the test command installed the analysts' Python packages (nats-py, pyarrow).
    pub python_path: Option<String>,
    /// Where it installed what `deploy/check.py` needs (kubernetes-validate and friends).
    pub deploy_python_path: Option<String>,
    /// Where it installed localstripe, the Stripe-compatible server ([`stripe::LocalStripe`]).
    pub stripe_python_path: Option<String>,
    /// The local CA and every holder's certificate, as `cargo xtask test` made them for its
    /// NATS server and for the services under test.
    pub tls_dir: Option<std::path::PathBuf>,
}

static INFRA: OnceLock<Infra> = OnceLock::new();

/// The master key of the customers' data keys in this test process (one, random): the
/// orders services of a test seal with it, and `World::env` gives it to their processes.
pub fn data_keys_master() -> service_kit::sealing::Key {
    static KEY: OnceLock<service_kit::sealing::Key> = OnceLock::new();
    KEY.get_or_init(|| service_kit::sealing::Key::generate().expect("randomness"))
        .clone()
}

/// The payments settings of a test that needs a provider to misbehave on cue (`tok_timeout`,
/// `tok_flaky`): the token-named test provider, which runs only when told it may.
pub const TEST_PAYMENT_PROVIDER: [(&str, &str); 2] = [
    ("PAYMENT_PROVIDER", "test"),
    ("ALLOW_TEST_PAYMENT_PROVIDER", "true"),
];

/// The test infrastructure: what [`use_infra`] set, else read once from the environment.
pub fn infra() -> &'static Infra {
    INFRA.get_or_init(Infra::from_env)
}

/// Makes `infra` this test process's infrastructure (a private NATS server or Postgres
/// cluster, see [`private`]). Call it before anything reads [`infra`]; panics otherwise.
pub fn use_infra(infra: Infra) {
    assert!(
        INFRA.set(infra).is_ok(),
        "use_infra must come before anything reads the test infrastructure"
    );
}

impl Infra {
    /// The shared infrastructure `cargo xtask test` started, from the environment.
    pub fn from_env() -> Self {
        let env = service_kit::env::Env::from_process();
        Self {
            pg_admin_url: env.string_or("STREAMSHOP_TEST_PG_URL", DEFAULT_PG_URL),
            nats_url: env.string_or("STREAMSHOP_TEST_NATS_URL", DEFAULT_NATS_URL),
            nats_credentials: env.get("STREAMSHOP_TEST_NATS_CREDENTIALS").map(Into::into),
            nats_analyst_url: env
                .get("STREAMSHOP_TEST_NATS_ANALYST_URL")
                .map(str::to_owned),
            python_path: env.get("STREAMSHOP_TEST_PYTHONPATH").map(str::to_owned),
            deploy_python_path: env
                .get("STREAMSHOP_TEST_DEPLOY_PYTHONPATH")
                .map(str::to_owned),
            stripe_python_path: env
                .get("STREAMSHOP_TEST_STRIPE_PYTHONPATH")
                .map(str::to_owned),
            tls_dir: env.get("STREAMSHOP_TEST_TLS_DIR").map(Into::into),
        }
    }
}

fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The roles every test database is provisioned with, as `cargo xtask up` provisions each
/// service's: an owner that migrates, the role a service runs as (granted only what its
/// schema says), and a read-only role for the query API. Their passwords are for the private
/// test cluster only.
pub const OWNER_ROLE: (&str, &str) = ("streamshop_owner", "owner-test-password");
pub const APP_ROLE: (&str, &str) = ("streamshop_app", "app-test-password");
pub const READER_ROLE: (&str, &str) = ("streamshop_reader", "reader-test-password");

/// A fresh test database and how each of its roles connects to it.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// The cluster's superuser: for what no service may do.
    pub admin: String,
    /// The owner of its tables, which migrates.
    pub owner: String,
    /// The role a service runs as.
    pub app: String,
    /// The role that may only read (granted SELECT on a read database).
    pub reader: String,
}

fn url_as(admin_url: &str, (role, password): (&str, &str), database: &str) -> String {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(admin_url)
        .expect("the test Postgres URL is a Postgres URL");
    format!(
        "postgres://{role}:{password}@{}:{}/{database}",
        options.get_host(),
        options.get_port()
    )
}

/// The superuser's URL of `database` (of the maintenance database for `None`).
fn admin_url(database: Option<&str>) -> String {
    let admin = &infra().pg_admin_url;
    match database {
        Some(db) => {
            let (base, _) = admin
                .rsplit_once('/')
                .expect("the admin URL names a database");
            format!("{base}/{db}")
        }
        None => admin.clone(),
    }
}

async fn admin_connection(database: Option<&str>) -> PgConnection {
    let url = admin_url(database);
    PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "the test Postgres at {} is not reachable ({e}); run the tests with `cargo xtask test`",
            service_kit::secret::redact_url(&url)
        )
    })
}

/// Creates the test roles once per cluster (another test process may race to do the same).
async fn ensure_roles() {
    static ROLES: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ROLES
        .get_or_init(|| async {
            let mut admin = admin_connection(None).await;
            for (role, password) in [OWNER_ROLE, APP_ROLE, READER_ROLE] {
                let create = format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'");
                if let Err(e) = sqlx::query(&create).execute(&mut admin).await {
                    let raced = e
                        .as_database_error()
                        .and_then(|d| d.code())
                        .is_some_and(|c| c == "42710" || c == "23505");
                    assert!(raced, "creating the test role {role}: {e}");
                }
            }
            // No role but the superuser reaches the maintenance databases.
            sqlx::query("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")
                .execute(&mut admin)
                .await
                .expect("revoking CONNECT from PUBLIC");
        })
        .await;
}

/// Creates an empty database named after `label`, owned by [`OWNER_ROLE`], which only the
/// owner and [`APP_ROLE`] may connect to.
pub async fn fresh_db(label: &str) -> TestDb {
    create_db(label, false).await
}

/// [`fresh_db`] for a read database: [`READER_ROLE`] may also connect, and may SELECT every
/// table the owner creates, in any schema (a rebuild builds its tables elsewhere and moves
/// them in).
pub async fn fresh_read_db(label: &str) -> TestDb {
    create_db(label, true).await
}

async fn create_db(label: &str, readable: bool) -> TestDb {
    ensure_roles().await;
    let name = format!("t_{label}_{}", unique_suffix());
    let (owner, app, reader) = (OWNER_ROLE.0, APP_ROLE.0, READER_ROLE.0);
    let mut admin = admin_connection(None).await;
    let connecting = if readable {
        format!("{app}, {reader}")
    } else {
        app.to_owned()
    };
    for sql in [
        format!("CREATE DATABASE {name} OWNER {owner}"),
        format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {name} TO {connecting}"),
    ] {
        sqlx::query(&sql)
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let mut inside = admin_connection(Some(&name)).await;
    let mut setup = vec![
        "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT USAGE ON SCHEMA public TO {connecting}"),
    ];
    if readable {
        setup.push(format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON TABLES TO {reader}"
        ));
    }
    for sql in setup {
        sqlx::query(&sql)
            .execute(&mut inside)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let admin = admin_url(None);
    TestDb {
        admin: admin_url(Some(&name)),
        owner: url_as(&admin, OWNER_ROLE, &name),
        app: url_as(&admin, APP_ROLE, &name),
        reader: url_as(&admin, READER_ROLE, &name),
        name,
    }
}

/// A namespace no other test uses.
pub fn unique_namespace() -> Namespace {
    Namespace::new(&format!("t{}", unique_suffix())).expect("valid namespace")
}

/// A connection to the test NATS server as its administrator (the harness sets up streams,
/// publishes what a test needs and reads everything back).
pub async fn nats() -> async_nats::Client {
    nats_as(None).await
}

/// A connection as `identity` (the administrator for `None`), with that identity's key and
/// reply prefix: what a service, or an attacker holding its key, can do.
pub async fn nats_as(identity: Option<messaging::Identity>) -> async_nats::Client {
    let url = &infra().nats_url;
    let name = identity.map_or("admin", messaging::Identity::name);
    let mut options = async_nats::ConnectOptions::new();
    if let Some(identity) = identity {
        options = options.custom_inbox_prefix(identity.inbox_prefix());
    }
    if let Some(dir) = &infra().nats_credentials {
        let seed = messaging::settings::seed_in(dir, name)
            .unwrap_or_else(|e| panic!("the test NATS key of {name}: {e:#}"));
        options = options.nkey(seed);
    }
    // The administrator shows the operators' certificate: it has none of its own.
    if let Some(tls) = tls_as(identity.map_or("operator", messaging::Identity::name)) {
        options = messaging::settings::with_tls(options, &tls)
            .unwrap_or_else(|e| panic!("the test TLS files of {name}: {e:#}"));
    }
    messaging::settings::connect_to(options, url).await.unwrap_or_else(|e| {
        panic!(
            "the test NATS at {url} is not reachable as {name} ({e}); run the tests with `cargo xtask test`"
        )
    })
}

/// The TLS files of `name` (`<name>.crt` in the tests' TLS folder), when the tests run with
/// TLS.
pub fn tls_as(name: &str) -> Option<service_kit::tls::TlsSettings> {
    infra()
        .tls_dir
        .as_ref()
        .map(|dir| service_kit::tls::TlsSettings::new(dir, name))
}

/// The TLS setting of a service in a test: `TLS_DIR`, or `TLS=off` when the test servers run
/// without TLS (only outside `cargo xtask test`).
pub fn tls_env() -> (&'static str, String) {
    match &infra().tls_dir {
        Some(dir) => ("TLS_DIR", dir.display().to_string()),
        None => ("TLS", "off".to_owned()),
    }
}

/// An HTTP client as an operator: it trusts the tests' CA and shows the operators'
/// certificate, so it may call the internal services directly (and the gateway, over plain
/// HTTP). Built once; clones share its connection pool.
pub fn http() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| http_as(tls_as("operator"))).clone()
}

/// `GET url` with [`http`]'s client; a request that gets no answer fails the test.
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Response {
    http().get(url).send().await.expect("GET")
}

/// An HTTP client that shows `tls`'s certificate (none for `None`), trusting the tests' CA.
pub fn http_as(tls: Option<service_kit::tls::TlsSettings>) -> reqwest::Client {
    let mut builder =
        reqwest::Client::builder().pool_idle_timeout(service_kit::https::CLIENT_IDLE_TIMEOUT);
    if let Some(tls) = tls {
        let config = tls
            .client_config()
            .unwrap_or_else(|e| panic!("the tests' TLS files of {}: {e:#}", tls.name));
        builder = builder.use_preconfigured_tls(config);
    } else if let Some(dir) = &infra().tls_dir {
        let ca = std::fs::read(dir.join(service_kit::tls::CA_FILE)).expect("the tests' CA");
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM CA"));
    }
    builder.build().expect("an HTTP client")
}

/// `NATS_CREDENTIALS_DIR` for a service in a test (empty when the server asks for none).
pub fn nats_credentials_dir() -> String {
    infra()
        .nats_credentials
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

/// The analysts' NATS URL (user and password in it).
pub fn nats_analyst_url() -> String {
    infra()
        .nats_analyst_url
        .clone()
        .unwrap_or_else(|| infra().nats_url.clone())
}

/// Asks orders to open `sealed` of `order` on `subject` (`keys.orders.open` or `.email` of
/// a namespace), as `identity` does: orders' answer, or why none came (a permission denied
/// shows as no answer).
pub async fn open_as(
    identity: messaging::Identity,
    subject: &str,
    order: uuid::Uuid,
    sealed: &str,
) -> Result<contracts::keys::OpenAnswer, String> {
    let nats = nats_as(Some(identity)).await;
    let request = serde_json::to_vec(&contracts::keys::OpenRequest {
        order_id: order,
        token: sealed.to_owned(),
    })
    .expect("a request serialises");
    match tokio::time::timeout(
        Duration::from_secs(3),
        nats.request(subject.to_owned(), request.into()),
    )
    .await
    {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).map_err(|e| e.to_string()),
    }
}

/// What `events --quiet --include-sensitive <args>` prints for namespace `ns`, run as the
/// analysts run it (their NATS user and certificate).
pub async fn analyst_events(ns: &messaging::Namespace, args: &[&str]) -> String {
    stdout_of(
        tokio::process::Command::new(binary("events"))
            .args(["--quiet", "--include-sensitive"])
            .args(args)
            .env("NATS_URL", nats_analyst_url())
            .env("NATS_NAMESPACE", ns.as_str())
            .envs(tls_as("analyst").map(|tls| ("TLS_DIR", tls.dir))),
        &format!("events {args:?}"),
    )
    .await
}

/// Where the workspace's binaries are (a service's, `events`): `cargo xtask test` builds them
/// and says so.
pub fn binary(name: &str) -> std::path::PathBuf {
    private::provided("STREAMSHOP_TEST_BIN_DIR").join(name)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts (in a child
/// process or killed and started again on the same port).
///
/// It is drawn below Linux's ephemeral range (32768 on), from 29000–32767 (xtask's own ports
/// are below): a port the kernel handed out for `bind(0)` can be taken by any outgoing
/// connection before the child binds it, and the cluster tests open thousands. A port taken
/// is passed over, and none is handed out twice in one process (a port probed free stays free
/// until its server binds it). When `cargo xtask test` runs test binaries side by side it gives
/// each a slot (`STREAMSHOP_TEST_PORT_SLOT` = `i/n`), and a binary draws only from its own
/// `1/n` of the range, so two processes never hand out the same port.
pub fn free_port() -> u16 {
    const FIRST: u16 = 29000;
    const COUNT: u16 = 32768 - FIRST;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let (slot, slots) = private::port_slot();
    let width = COUNT / slots;
    let base = FIRST + slot * width;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = base + (uuid::Uuid::new_v4().as_u128() % u128::from(width)) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {base}-{}", base + width - 1)
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl StoredMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every message of a stream, in stream order (empty when the stream does not exist).
pub async fn read_stream(js: &async_nats::jetstream::Context, stream: &str) -> Vec<StoredMessage> {
    let Ok(mut s) = js.get_stream(stream).await else {
        return vec![];
    };
    let info = s.info().await.expect("stream info");
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first..=last {
        if last == 0 {
            break;
        }
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        let headers = m
            .headers
            .iter()
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_owned()))
            })
            .collect();
        out.push(StoredMessage {
            sequence: m.sequence,
            subject: m.subject.to_string(),
            headers,
            payload: m.payload.to_vec(),
        });
    }
    out
}

/// Runs `command` to its end and returns what it wrote to stdout; if it fails, panics with
/// `what` and its stderr.
pub async fn stdout_of(command: &mut tokio::process::Command, what: &str) -> String {
    let out = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{what} wrote no text: {e}"))
}

/// Sends `request` and returns its body as text (a transport error panics).
pub async fn text(request: reqwest::RequestBuilder) -> String {
    request
        .send()
        .await
        .expect("an answer")
        .text()
        .await
        .expect("a readable body")
}

/// `GET url` and its JSON body (`Null` when there is none).
pub async fn get_json(url: &str) -> serde_json::Value {
    http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or(serde_json::Value::Null)
}
