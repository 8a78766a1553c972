//! Builds and runs the service binaries of the local stack on the ports the topology declares.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::layout::{self, Layout};
use crate::proc;

pub(crate) use topology::{Need, Service, SERVICES};

/// What xtask adds to a service of the topology: where each replica listens locally.
pub(crate) trait Local {
    fn port_of(&self, r: u16) -> u16;
    fn url_of(&self, r: u16) -> String;
    fn urls(&self, layout: &Layout) -> String;
    fn replica_name(&self, layout: &Layout, r: u16) -> String;
}

impl Local for Service {
    /// The port of replica `r`: the service's own, then 100 up for each further replica.
    fn port_of(&self, r: u16) -> u16 {
        self.port + 100 * r
    }

    /// The base URL of replica `r`.
    fn url_of(&self, r: u16) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port_of(r))
    }

    /// Every replica's base URL, separated by commas, as the gateway takes an upstream's.
    fn urls(&self, layout: &Layout) -> String {
        (0..layout.replicas)
            .map(|r| self.url_of(r))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How replica `r` is named in pid files, logs and listings: `orders`, or `orders-2`.
    fn replica_name(&self, layout: &Layout, r: u16) -> String {
        if layout.replicas == 1 {
            self.name.to_owned()
        } else {
            format!("{}-{}", self.name, r + 1)
        }
    }
}

/// Builds every service binary and the `extra` ones (package, binary); returns the folder
/// holding them.
pub fn build(layout: &Layout, release: bool, extra: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let mut cmd = layout::cargo();
    cmd.arg("build").current_dir(&layout.workspace);
    let services = SERVICES.iter().map(|s| (s.name, s.name));
    for (package, binary) in services.chain(extra.iter().copied()) {
        cmd.args(["--package", package, "--bin", binary]);
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

/// Every replica of every service, in start order: each service's first replica, then the
/// second of each.
fn replicas(layout: &Layout) -> Vec<(usize, &'static Service, u16)> {
    (0..layout.replicas)
        .flat_map(|r| SERVICES.iter().enumerate().map(move |(i, s)| (i, s, r)))
        .collect()
}

/// Whether any replica of any service runs.
pub fn any_running(layout: &Layout) -> bool {
    replicas(layout).iter().any(|(_, s, r)| {
        proc::running_pid(&pid_file(layout, &s.replica_name(layout, *r))).is_some()
    })
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
    for (index, s, r) in replicas(layout) {
        let name = s.replica_name(layout, r);
        let binary = bins.join(s.name);
        let pid_path = pid_file(layout, &name);
        let build_stamp = modified(&binary).to_string();
        if let Some(pid) = proc::running_pid(&pid_path) {
            let recorded = std::fs::read_to_string(&pid_path).unwrap_or_default();
            if recorded.split_whitespace().nth(1) == Some(build_stamp.as_str()) {
                println!("{name}: already running (pid {pid})");
                started.push((name, s.port_of(r), s.serves_tls(), pid));
                continue;
            }
            println!("{name}: binary changed; restarting");
            proc::stop(pid, Duration::from_secs(10));
        }
        let mut cmd = Command::new(&binary);
        if let Some(access) = s.database {
            cmd.env("DATABASE_URL", layout.pg_url(access.role, access.database)?);
            // A service that runs as a lesser role migrates (and grants) as the owner.
            if let Some(owner) = access.migrates_as {
                cmd.env("DATABASE_OWNER_URL", layout.pg_url(owner, access.database)?);
            }
        }
        // Each service holds its own NATS key only.
        if let Some(identity) = s.identity() {
            cmd.env("NATS_NKEY_SEED", crate::nats::seed_of(layout, identity)?);
        }
        if layout.nats_nodes > 1 {
            // R3 streams, and each replica starts at its own node: a service's replicas never
            // share one, and the services' first replicas are spread over the cluster.
            cmd.env("NATS_STREAM_REPLICAS", layout.nats_nodes.to_string());
        }
        if s.needs(Need::DataKeys) {
            // The master key of the customers' data keys, made once per environment.
            cmd.env(
                "DATA_KEYS_MASTER_KEY_FILE",
                crate::secrets::data_keys_master(layout)?,
            );
        }
        if s.needs(Need::Stripe) {
            // Payments go through the Stripe adapter to the local Stripe-compatible server.
            cmd.env("PAYMENT_PROVIDER", "stripe")
                .env("STRIPE_API_BASE", crate::stripe::HELPER.url())
                .env(
                    "STRIPE_SECRET_KEY_FILE",
                    crate::stripe::secret_key_file(layout)?,
                );
        }
        if s.needs(Need::Smtp) {
            // Order emails go to the local SMTP sink, whose page shows them.
            cmd.env("SMTP_URL", crate::mail::smtp_url());
        }
        if let Some(metrics) = s.metrics_port {
            // Its metrics, apart from the public side: 9000, and 9100 for a second replica.
            cmd.env("METRICS_ADDR", format!("127.0.0.1:{}", metrics + 100 * r));
        }
        for upstream in s.calls {
            let service = topology::service(upstream).context("a service the topology calls")?;
            let variable = service.url_setting.context("an upstream's URL setting")?;
            cmd.env(variable, service.urls(layout));
        }
        let first_node = (index as u16 + r) % layout.nats_nodes;
        cmd.env("HTTP_ADDR", format!("127.0.0.1:{}", s.port_of(r)))
            .env("TLS_DIR", &tls)
            .env("NATS_URL", layout.nats_url_from(first_node))
            .env("OIDC_ISSUER_URL", crate::oidc::HELPER.url())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .current_dir(&layout.workspace);
        let log = layout.logs().join(format!("{name}.log"));
        let pid = proc::spawn_detached(cmd, &log, &pid_path)?;
        std::fs::write(&pid_path, format!("{pid} {build_stamp}\n"))?;
        println!("{name}: started (pid {pid})");
        started.push((name, s.port_of(r), s.serves_tls(), pid));
    }
    for (name, port, serves_tls, pid) in started {
        let log = layout.logs().join(format!("{name}.log"));
        proc::wait_http_ok(
            &name,
            port,
            "/readyz",
            serves_tls.then_some(&probe),
            Duration::from_secs(60),
            &log,
            Some(pid),
        )?;
    }
    Ok(())
}

pub fn stop_all(layout: &Layout) {
    for (_, s, r) in replicas(layout).into_iter().rev() {
        let name = s.replica_name(layout, r);
        if let Some(pid) = proc::running_pid(&pid_file(layout, &name)) {
            proc::stop(pid, Duration::from_secs(15));
            println!("{name}: stopped");
        }
        let _ = std::fs::remove_file(pid_file(layout, &name));
    }
}

pub fn status(layout: &Layout) {
    let probe = proc::operator_tls(&crate::tls::dir(layout)).ok();
    for (_, s, r) in replicas(layout) {
        let name = s.replica_name(layout, r);
        let state = match proc::running_pid(&pid_file(layout, &name)) {
            Some(pid) => {
                let tls = if s.serves_tls() { probe.as_ref() } else { None };
                let ready = proc::http_status(s.port_of(r), "/readyz", tls) == Some(200);
                format!(
                    "running  pid {pid} {}",
                    if ready { "ready" } else { "NOT READY" }
                )
            }
            None => match proc::dead_pid(&pid_file(layout, &name)) {
                Some(pid) => format!(
                    "DEAD     pid {pid} is gone (killed or crashed; see {}); `cargo xtask up{}` restarts it",
                    layout.logs().join(format!("{name}.log")).display(),
                    if layout.replicas > 1 { " --cluster" } else { "" }
                ),
                None => "stopped ".into(),
            },
        };
        println!("{name:<14} {state} {}", s.url_of(r));
    }
}

pub fn print_urls(layout: &Layout) {
    println!();
    println!("streamshop is up:");
    for (_, s, r) in replicas(layout) {
        println!("  {:<14} {}", s.replica_name(layout, r), s.url_of(r));
    }
    if layout.nats_nodes > 1 {
        for node in 0..layout.nats_nodes {
            println!(
                "  {:<12} nats://127.0.0.1:{} (monitoring http://127.0.0.1:{}/jsz)",
                format!("nats n{}", node + 1),
                layout.nats_port + node,
                layout.nats_monitor_port + node
            );
        }
        println!(
            "  every stream has {} replicas; each service's replicas start at different nodes",
            layout.nats_nodes
        );
        println!(
            "  the gateways: http://127.0.0.1:8000 and http://127.0.0.1:8100 (put a balancer in front of both)"
        );
    } else {
        println!("  {:<12} {}", "nats", layout.nats_url());
    }
    println!(
        "  {:<12} {} (passwords: {})",
        "postgres",
        layout.pg_url_shown("postgres", "postgres"),
        layout.root.join("secrets.json").display()
    );
    println!("logs: {}", layout.logs().display());
    println!(
        "status: cargo xtask status{}",
        if layout.replicas > 1 {
            " (each node's health, and every stream's leader and replicas)"
        } else {
            ""
        }
    );
    let tls = crate::tls::dir(layout);
    println!(
        "tls: the internal services answer HTTPS to the gateway and to operators only; as an operator:"
    );
    println!(
        "  curl --cacert {0}/ca.pem --cert {0}/operator.crt --key {0}/operator.key {1}/openapi.json",
        tls.display(),
        topology::ORDERS.local_url()
    );
    println!();
    println!(
        "  {:<12} {} (cargo xtask token --customer <uuid> | --admin)",
        "oidc",
        crate::oidc::HELPER.url()
    );
    println!(
        "  {:<12} {} (the order emails sent, on its web page; SMTP {})",
        "mail",
        crate::mail::HELPER.url(),
        crate::mail::smtp_url()
    );
    println!(
        "  {:<12} {} (localstripe, which payments pay through; its key: {})",
        "stripe",
        crate::stripe::HELPER.url(),
        layout.root.join("stripe/secret-key").display()
    );
    println!();
    println!(
        "clients use the gateway (README \"Try it\" and docs/frontends.md have the whole walk):"
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
    -d '{{"lines":[{{"sku":"SKU-1","quantity":2}}],"payment_token":"pm_card_visa"}}'"#
    );
    println!(
        r#"  curl -sN localhost:8000/api/orders/<order_id>/events -H "authorization: Bearer $customer""#
    );
    println!();
    println!("observe:");
    println!(
        "  metrics    https://127.0.0.1:<port>/metrics on every internal service, and https://127.0.0.1:{}/metrics for the gateway (never on its public port; Prometheus text; operator certificate)",
        topology::GATEWAY.metrics_port.unwrap_or_default()
    );
    println!("  health     /healthz (alive) and /readyz (its database, NATS and streams answer)");
    println!("  traces     set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4318) before `up` to export them;");
    println!("             every response carries its trace in the traceparent header");
    println!(
        "  dashboards `docker compose up` adds Prometheus :9090, Grafana :3000, Jaeger :16686 (on 127.0.0.1 only)"
    );
}
