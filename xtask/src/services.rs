//! Builds and runs the service binaries of the local stack on the DESIGN.md ports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::layout::{self, Layout};
use crate::proc;

/// A service of the local stack.
pub(crate) struct Service {
    pub name: &'static str,
    pub package: &'static str,
    pub port: u16,
    /// (database, role) it connects to; the gateway has none.
    pub database: Option<(&'static str, &'static str)>,
}

pub(crate) const SERVICES: &[Service] = &[
    Service {
        name: "orders",
        package: "orders",
        port: 8081,
        database: Some(("orders", "orders")),
    },
    Service {
        name: "inventory",
        package: "inventory",
        port: 8082,
        database: Some(("inventory", "inventory")),
    },
    Service {
        name: "payments",
        package: "payments",
        port: 8083,
        database: Some(("payments", "payments")),
    },
    Service {
        name: "orchestrator",
        package: "orchestrator",
        port: 8084,
        database: Some(("orchestrator", "orchestrator")),
    },
    Service {
        name: "projections",
        package: "projections",
        port: 8085,
        database: Some(("read", "projections")),
    },
    Service {
        name: "query-api",
        package: "query-api",
        port: 8080,
        database: Some(("read", "query_api")),
    },
    // The public entry, last: it is started once everything behind it is ready.
    Service {
        name: "gateway",
        package: "gateway",
        port: 8000,
        database: None,
    },
];

impl Service {
    /// Every service but the public gateway serves HTTPS, with the local CA's certificates.
    pub fn serves_tls(&self) -> bool {
        self.name != "gateway"
    }

    pub fn url(&self) -> String {
        let scheme = if self.serves_tls() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

/// Builds every service binary and those of `extra` packages; returns the folder holding
/// them.
pub fn build(layout: &Layout, release: bool, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let mut cmd = layout::cargo();
    cmd.arg("build").current_dir(&layout.workspace);
    for package in SERVICES
        .iter()
        .map(|s| s.package)
        .chain(extra.iter().copied())
    {
        cmd.args(["--package", package, "--bin", package]);
    }
    if release {
        cmd.arg("--release");
    }
    println!(
        "services: building ({})",
        if release { "release" } else { "debug" }
    );
    if !cmd.status().context("running cargo build")?.success() {
        bail!("cargo build failed");
    }
    let target = target_dir(layout)?;
    Ok(target.join(if release { "release" } else { "debug" }))
}

fn target_dir(layout: &Layout) -> anyhow::Result<PathBuf> {
    let out = layout::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&layout.workspace)
        .output()
        .context("running cargo metadata")?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata gave no target_directory")
}

fn pid_file(layout: &Layout, name: &str) -> PathBuf {
    layout.run_dir().join(format!("{name}.pid"))
}

fn modified(path: &Path) -> u128 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Starts each service that is not running its current binary, then waits for every `/readyz`.
pub fn start_all(layout: &Layout, bins: &Path) -> anyhow::Result<()> {
    let tls = crate::tls::dir(layout);
    crate::tls::ensure(&tls)?;
    let probe = proc::operator_tls(&tls)?;
    let mut started = Vec::new();
    for s in SERVICES {
        let binary = bins.join(s.package);
        let pid_path = pid_file(layout, s.name);
        let build_stamp = modified(&binary).to_string();
        if let Some(pid) = proc::running_pid(&pid_path) {
            let recorded = std::fs::read_to_string(&pid_path).unwrap_or_default();
            if recorded.split_whitespace().nth(1) == Some(build_stamp.as_str()) {
                println!("{}: already running (pid {pid})", s.name);
                started.push((s, pid));
                continue;
            }
            println!("{}: binary changed; restarting", s.name);
            proc::stop(pid, Duration::from_secs(10));
        }
        let mut cmd = Command::new(&binary);
        if let Some((db, role)) = s.database {
            cmd.env("DATABASE_URL", layout.pg_url(role, db)?);
            // A service that runs as a lesser role migrates (and grants) as the owner.
            if let Some(owned) = crate::postgres::DATABASES
                .iter()
                .find(|d| d.name == db && d.runtime == Some(role))
            {
                cmd.env("DATABASE_OWNER_URL", layout.pg_url(owned.owner, db)?);
            }
        }
        // Each service holds its own NATS key only.
        if let Some(identity) = messaging::Identity::ALL
            .into_iter()
            .find(|i| i.name() == s.name)
        {
            cmd.env(
                "NATS_NKEY_SEED",
                crate::nats::seed_of(layout, Some(identity))?,
            );
        }
        cmd.env("HTTP_ADDR", format!("127.0.0.1:{}", s.port))
            .env("TLS_DIR", &tls)
            .env("NATS_URL", layout.nats_url())
            .env("OIDC_ISSUER_URL", crate::oidc::issuer())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .current_dir(&layout.workspace);
        let log = layout.logs().join(format!("{}.log", s.name));
        let pid = proc::spawn_detached(cmd, &log, &pid_path)?;
        std::fs::write(&pid_path, format!("{pid} {build_stamp}\n"))?;
        println!("{}: started (pid {pid})", s.name);
        started.push((s, pid));
    }
    for (s, pid) in started {
        let log = layout.logs().join(format!("{}.log", s.name));
        proc::wait_http_ok(
            s.name,
            s.port,
            "/readyz",
            s.serves_tls().then_some(&probe),
            Duration::from_secs(60),
            &log,
            Some(pid),
        )?;
    }
    Ok(())
}

pub fn stop_all(layout: &Layout) {
    for s in SERVICES.iter().rev() {
        if let Some(pid) = proc::running_pid(&pid_file(layout, s.name)) {
            proc::stop(pid, Duration::from_secs(15));
            println!("{}: stopped", s.name);
        }
        let _ = std::fs::remove_file(pid_file(layout, s.name));
    }
}

pub fn status(layout: &Layout) {
    let probe = proc::operator_tls(&crate::tls::dir(layout)).ok();
    for s in SERVICES {
        let state = match proc::running_pid(&pid_file(layout, s.name)) {
            Some(pid) => {
                let tls = if s.serves_tls() { probe.as_ref() } else { None };
                let ready = proc::http_status(s.port, "/readyz", tls) == Some(200);
                format!(
                    "running  pid {pid} {}",
                    if ready { "ready" } else { "NOT READY" }
                )
            }
            None => match proc::dead_pid(&pid_file(layout, s.name)) {
                Some(pid) => format!(
                    "DEAD     pid {pid} is gone (killed or crashed; see {}); `cargo xtask up` restarts it",
                    layout.logs().join(format!("{}.log", s.name)).display()
                ),
                None => "stopped ".into(),
            },
        };
        println!("{:<12} {state} {}", s.name, s.url());
    }
}

pub fn print_urls(layout: &Layout) {
    println!();
    println!("streamshop is up:");
    for s in SERVICES {
        println!("  {:<12} {}", s.name, s.url());
    }
    println!("  {:<12} {}", "nats", layout.nats_url());
    println!(
        "  {:<12} {} (passwords: {})",
        "postgres",
        layout.pg_url_shown("postgres", "postgres"),
        layout.root.join("secrets.json").display()
    );
    println!("logs: {}", layout.logs().display());
    let tls = crate::tls::dir(layout);
    println!(
        "tls: the internal services answer HTTPS to the gateway and to operators only; as an operator:"
    );
    println!(
        "  curl --cacert {0}/ca.pem --cert {0}/operator.crt --key {0}/operator.key https://127.0.0.1:8081/openapi.json",
        tls.display()
    );
    println!();
    println!(
        "  {:<12} {} (cargo xtask token --customer <uuid> | --admin)",
        "oidc",
        crate::oidc::issuer()
    );
    println!();
    println!(
        "clients use the gateway (README \"Try it\" and \"For frontends\" have the whole walk):"
    );
    println!("  admin=$(cargo xtask token --admin)");
    println!(
        r#"  curl -s -X POST localhost:8000/api/products -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' \
    -d '{{"sku":"SKU-1","name":"Mug","unit_price":1250,"currency":"EUR","initial_stock":10}}'"#
    );
    println!("  customer=$(cargo xtask token --customer 0192f0c1-0000-7000-8000-000000000001)");
    println!(
        r#"  curl -s -X POST localhost:8000/api/orders -H "authorization: Bearer $customer" \
    -H 'content-type: application/json' \
    -d '{{"lines":[{{"sku":"SKU-1","quantity":2}}],"payment_token":"tok_ok"}}'"#
    );
    println!(
        r#"  curl -sN localhost:8000/api/orders/<order_id>/events -H "authorization: Bearer $customer""#
    );
    println!();
    println!("observe:");
    println!(
        "  metrics    https://127.0.0.1:<port>/metrics on every internal service (Prometheus text; operator certificate)"
    );
    println!("  health     /healthz (alive) and /readyz (its database, NATS and streams answer)");
    println!("  traces     set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4318) before `up` to export them;");
    println!("             every response carries its trace in the traceparent header");
    println!(
        "  dashboards `docker compose up` adds Prometheus :9090, Grafana :3000, Jaeger :16686"
    );
}
