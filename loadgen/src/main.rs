//! `loadgen`: the benchmark behind `cargo xtask bench`. `loadgen run` drives release builds of
//! the services against a Postgres cluster and a NATS server that xtask started, measures each
//! figure beside a baseline from the same run, and writes the report; `loadgen bare-server` is
//! the bare axum + sqlx baseline it starts.
#![forbid(unsafe_code)]

mod bare;
mod cluster;
mod commands;
mod drive;
mod field_encryption;
mod gateway;
mod notify;
mod pg;
mod procs;
mod queries;
mod replay;
mod report;
mod sagas;
mod security;
mod sides;
mod stats;
mod traces;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser};

use crate::pg::Cluster;
use crate::procs::Proc;
use crate::report::{Machine, Report};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "streamshop's benchmark driver (run it through `cargo xtask bench`)"
)]
enum Cli {
    /// Run the figures and write the report.
    Run(Box<RunArgs>),
    /// The bare axum + sqlx baseline server.
    BareServer {
        /// Its database (a password in it): read from the environment only, never given
        /// on the command line where any user of the machine could read it.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8090")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10)]
        max_connections: u32,
        /// Apply the event store's migrations first (for the orders baseline).
        #[arg(long)]
        migrate: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Superuser URL of the Postgres cluster to create the benchmark's databases on (a
    /// password in it: `cargo xtask bench` passes it in the environment).
    #[arg(long, env = "LOADGEN_PG_ADMIN_URL", hide_env_values = true)]
    pg_admin_url: String,
    #[arg(long)]
    nats_url: String,
    /// Folder of the NATS identities' keys (`<identity>.nk`, `admin.nk`).
    #[arg(long)]
    nats_credentials: PathBuf,
    /// Folder of the local CA and every process's certificate: every connection of the stack
    /// is TLS, as in `cargo xtask up`.
    #[arg(long)]
    tls_dir: PathBuf,
    /// A nats-server binary, for the security figure's second server (no users, no TLS) and
    /// the cluster figure's nodes.
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// The benchmark server's configuration (identities and TLS), which the cluster figure's
    /// nodes share.
    #[arg(long)]
    nats_config: Option<PathBuf>,
    /// The analysts' NATS URL (user and password in it), for `events export`; passed in the
    /// environment by `cargo xtask bench`.
    #[arg(long, env = "LOADGEN_NATS_ANALYST_URL", hide_env_values = true)]
    nats_analyst_url: String,
    /// Folder of the release service binaries.
    #[arg(long)]
    bins: PathBuf,
    /// Where report.md and report.json go.
    #[arg(long)]
    out: PathBuf,
    /// Where the processes' logs go.
    #[arg(long)]
    logs: PathBuf,
    /// The postmaster's pid, to count Postgres's CPU and memory.
    #[arg(long)]
    pg_pid: Option<i32>,
    #[arg(long)]
    nats_pid: Option<i32>,
    /// Length of each rate and latency run, in seconds.
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Runs of each figure; the report gives the median and the range.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Length of each offered load of the saga figure.
    #[arg(long, default_value_t = 4.0)]
    step_seconds: f64,
    /// Length of each light-load (10 orders/s) run.
    #[arg(long, default_value_t = 5.0)]
    light_seconds: f64,
    /// At least this many events are replayed.
    #[arg(long, default_value_t = 1_000_000)]
    replay_events: u64,
    /// The notifications figure's first load, in orders per second (its second is 10): by
    /// default the load the saga figure sustained in this run, else 10 alone.
    #[arg(long)]
    notify_rate: Option<f64>,
    /// Which figures to run (commands, sagas, queries, replay, gateway, security, cluster,
    /// notifications); sagas feeds queries, replay and the notifications' load.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "commands,sagas,queries,replay,gateway,security,cluster,notifications"
    )]
    figures: Vec<String>,
    /// Have the services export their spans to a receiver here, and lay out the slowest
    /// sagas' traces in `traces.md` beside the report (tracing costs CPU: figures run this way
    /// are not comparable with a plain run).
    #[arg(long)]
    traces: bool,
    /// The commit measured, for the report.
    #[arg(long, default_value = "unknown")]
    commit: String,
}

/// How the benchmark's processes reach NATS and each other.
#[derive(Debug, Clone)]
pub struct Transport {
    pub nats_url: String,
    /// The NATS identities' keys; `None` for a server that lets anyone in.
    pub nats_credentials: Option<PathBuf>,
    /// The local CA and certificates; `None` runs every connection in plain text (`TLS=off`).
    pub tls_dir: Option<PathBuf>,
    /// How many copies of each stream the servers keep (`NATS_STREAM_REPLICAS`): 1 on one
    /// server, 3 on a cluster.
    pub stream_replicas: usize,
}

impl Transport {
    /// What a service is told about NATS and TLS.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("NATS_URL".to_owned(), self.nats_url.clone()),
            (
                "NATS_STREAM_REPLICAS".to_owned(),
                self.stream_replicas.to_string(),
            ),
        ];
        if let Some(dir) = &self.nats_credentials {
            env.push(("NATS_CREDENTIALS_DIR".into(), dir.display().to_string()));
        }
        match &self.tls_dir {
            Some(dir) => env.push(("TLS_DIR".into(), dir.display().to_string())),
            None => env.push(("TLS".into(), "off".into())),
        }
        env
    }

    /// This transport for one service: a cluster's URLs start at a node of the service's
    /// own, as `cargo xtask up --cluster` gives them, so the services spread over the nodes.
    pub fn for_service(&self, service: &str) -> Transport {
        let urls: Vec<&str> = self.nats_url.split(',').collect();
        let first = topology::SERVICES
            .iter()
            .position(|s| s.name == service)
            .unwrap_or(0)
            % urls.len();
        Transport {
            nats_url: urls[first..]
                .iter()
                .chain(&urls[..first])
                .copied()
                .collect::<Vec<_>>()
                .join(","),
            ..self.clone()
        }
    }

    /// A NATS connection as the administrator (the driver sets up and reads streams), with
    /// the operators' certificate.
    pub async fn nats_admin(&self) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(dir) = &self.nats_credentials {
            options = options.nkey(messaging::settings::seed_in(dir, "admin")?);
        }
        if let Some(dir) = &self.tls_dir {
            options = messaging::settings::with_tls(
                options,
                &service_kit::tls::TlsSettings::new(dir, "operator"),
            )?;
        }
        Ok(messaging::settings::connect_to(options, &self.nats_url).await?)
    }
}

/// What every figure needs.
pub struct Bench {
    pub cluster: Cluster,
    /// As the stack runs: TLS, keys and permissions.
    pub transport: Transport,
    pub nats_analyst_url: String,
    pub bins: PathBuf,
    pub logs: PathBuf,
    pub self_exe: PathBuf,
    pub pg_pid: Option<i32>,
    pub nats_pid: Option<i32>,
    pub duration: Duration,
    pub repeats: usize,
    pub step_seconds: f64,
    pub light_seconds: f64,
    pub replay_events: u64,
    /// Where the services send their spans (`--traces`).
    pub otlp_endpoint: Option<String>,
    seeds: AtomicU64,
}

impl Bench {
    /// A NATS connection as the administrator (the driver sets up and reads streams).
    pub async fn nats_admin(&self) -> anyhow::Result<async_nats::Client> {
        self.transport.nats_admin().await
    }

    /// Starts a release service binary on `database_url` and `namespace`.
    pub async fn service(
        &self,
        package: &str,
        database_url: &str,
        namespace: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        self.service_on(&self.transport, package, database_url, namespace, extra)
            .await
    }

    /// [`Bench::service`] reaching NATS and its callers by `transport`.
    pub async fn service_on(
        &self,
        transport: &Transport,
        package: &str,
        database_url: &str,
        namespace: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let mut env = vec![
            ("DATABASE_URL".to_owned(), database_url.to_owned()),
            ("NATS_NAMESPACE".to_owned(), namespace.to_owned()),
        ];
        env.extend(transport.env());
        if package == "orders" {
            // The figures place many orders per customer, some never ended by a saga: the
            // fair-share bounds are not what they measure.
            env.push(("ORDERS_MAX_OPEN_PER_CUSTOMER".into(), "0".into()));
            env.push((
                "ORDERS_MAX_UNITS_PER_PRODUCT_PER_CUSTOMER".into(),
                "0".into(),
            ));
            // Each orders service seals payment tokens under a master key of its own.
            let master = service_kit::sealing::Key::generate()
                .map_err(|e| anyhow::anyhow!("making a master key: {e}"))?;
            env.push(("DATA_KEYS_MASTER_KEY".into(), master.to_base64()));
        }
        if package == "payments" {
            // The figures measure streamshop's machinery, not a payment provider's latency:
            // the test provider answers at once.
            env.extend(testkit::TEST_PAYMENT_PROVIDER.map(|(k, v)| (k.to_owned(), v.to_owned())));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
        }
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let https = transport.tls_dir.is_some();
        Proc::start(
            package,
            &self.bins.join(package),
            &[],
            &env,
            https,
            &self.logs,
        )
        .await
    }

    /// Postgres (with its backends) and NATS, to watch beside the processes of a figure.
    pub fn infrastructure(&self) -> Vec<procs::Watched> {
        let mut watched = Vec::new();
        if let Some(pid) = self.pg_pid {
            watched.push(procs::Watched {
                name: "postgres".into(),
                pid,
                with_children: true,
            });
        }
        if let Some(pid) = self.nats_pid {
            watched.push(procs::Watched {
                name: "nats-server".into(),
                pid,
                with_children: false,
            });
        }
        watched
    }

    /// A fresh range of order numbers, so no two runs send the same bodies.
    pub fn next_seed(&self) -> u64 {
        self.seeds.fetch_add(100_000_000, Ordering::Relaxed)
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match Cli::parse() {
            Cli::Run(args) => run(*args).await,
            Cli::BareServer {
                database_url,
                addr,
                max_connections,
                migrate,
            } => bare::serve(&database_url, addr, max_connections, migrate).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    drive::trust(&args.tls_dir)?;
    std::fs::create_dir_all(&args.out)?;
    std::fs::create_dir_all(&args.logs)?;
    let receiver = if args.traces {
        Some(testkit::otlp::Receiver::start().await)
    } else {
        None
    };
    let b = Bench {
        cluster: Cluster {
            admin_url: args.pg_admin_url,
        },
        transport: Transport {
            nats_url: args.nats_url,
            nats_credentials: Some(args.nats_credentials),
            tls_dir: Some(args.tls_dir.clone()),
            stream_replicas: 1,
        },
        nats_analyst_url: args.nats_analyst_url,
        bins: args.bins,
        logs: args.logs,
        self_exe: std::env::current_exe().context("finding loadgen's own binary")?,
        pg_pid: args.pg_pid,
        nats_pid: args.nats_pid,
        duration: Duration::from_secs_f64(args.seconds),
        repeats: args.repeats.max(1),
        step_seconds: args.step_seconds,
        light_seconds: args.light_seconds,
        replay_events: args.replay_events,
        otlp_endpoint: receiver.as_ref().map(|r| r.endpoint.clone()),
        seeds: AtomicU64::new(0),
    };
    let wants = |f: &str| args.figures.iter().any(|x| x == f);
    // A figure's missing argument is found before anything runs, not after the others.
    if wants("security") && args.nats_server.is_none() {
        anyhow::bail!("the security figure needs --nats-server");
    }
    if wants("cluster") && (args.nats_server.is_none() || args.nats_config.is_none()) {
        anyhow::bail!("the cluster figure needs --nats-server and --nats-config");
    }
    let mut machine = Machine::read(args.commit);
    machine.seconds_per_run = args.seconds;
    machine.repeats = b.repeats;
    machine.saga_step_seconds = args.step_seconds;
    let mut report = Report {
        machine,
        commands: None,
        sagas: None,
        queries: None,
        replay: None,
        gateway: None,
        security: None,
        field_encryption: None,
        cluster: None,
        notifications: None,
        targets: Vec::new(),
    };

    if wants("commands") {
        report.commands = Some(commands::run(&b).await?);
    }
    if wants("sagas") || wants("queries") || wants("replay") {
        let mut stack = sagas::Stack::start(&b).await?;
        let figure = sagas::run(&b, &stack).await?;
        if let Some(receiver) = &receiver {
            traces::write(receiver, &args.out, figure.hot_started_unix_nano).await?;
        }
        if wants("queries") {
            // Only the query API keeps running: the bare server gets the machine alone too.
            stack.stop_except(&["query-api"]).await;
            report.queries = Some(
                queries::run(&b, &stack.query_url, &stack.read_url, &figure.confirmed_ids).await?,
            );
        }
        stack.stop_except(&[]).await;
        report.sagas = Some(figure);
        if wants("replay") {
            report.replay = Some(replay::run(&b, sagas::NAMESPACE).await?);
        }
    }

    if wants("gateway") {
        report.gateway = Some(gateway::run(&b).await?);
    }

    if wants("security") {
        let server = args
            .nats_server
            .as_deref()
            .context("the security figure needs --nats-server")?;
        report.security = Some(security::run(&b, server).await?);
        report.field_encryption = Some(field_encryption::run(&b).await?);
    }

    if wants("cluster") {
        let (Some(server), Some(config)) =
            (args.nats_server.as_deref(), args.nats_config.as_deref())
        else {
            anyhow::bail!("the cluster figure needs --nats-server and --nats-config");
        };
        report.cluster = Some(cluster::run(&b, server, config).await?);
    }

    if wants("notifications") {
        let sustained = report.sagas.as_ref().map(|s| s.sustained_rate);
        let first = args.notify_rate.or(sustained.filter(|r| *r > 0.0));
        let mut rates: Vec<f64> = first.into_iter().collect();
        if first != Some(10.0) {
            rates.push(10.0);
        }
        report.notifications = Some(notify::run(&b, &rates).await?);
    }

    report.machine.total_seconds = started.elapsed().as_secs_f64();
    report.check_targets();
    let markdown = report.markdown();
    std::fs::write(args.out.join("report.md"), &markdown)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!();
    println!("{markdown}");
    println!(
        "report: {} and report.json",
        args.out.join("report.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Transport;

    fn transport(url: &str) -> Transport {
        Transport {
            nats_url: url.to_owned(),
            nats_credentials: None,
            tls_dir: None,
            stream_replicas: 3,
        }
    }

    #[test]
    fn each_service_starts_at_a_node_of_its_own() {
        let cluster = transport("nats://a:1,nats://b:2,nats://c:3");
        let (a, b, c) = ("nats://a:1", "nats://b:2", "nats://c:3");
        for (service, first) in [
            ("orders", [a, b, c]),
            ("inventory", [b, c, a]),
            ("payments", [c, a, b]),
            ("orchestrator", [a, b, c]),
        ] {
            assert_eq!(cluster.for_service(service).nats_url, first.join(","));
        }
        assert_eq!(cluster.for_service("orders").stream_replicas, 3);
    }

    #[test]
    fn one_server_is_left_as_it_is() {
        let single = transport("nats://a:1");
        assert_eq!(single.for_service("payments").nats_url, "nats://a:1");
    }
}
