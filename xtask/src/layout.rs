//! Where local state lives and which ports each environment uses.
//!
//! `dev` is what `up` runs (services on the ports the topology declares); `test` is the
//! infrastructure of `cargo xtask test`, on other ports so both can run at once. Every port is
//! below 32768, out of Linux's ephemeral range, so no outgoing connection can be holding it
//! when a server starts.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// One local environment: its state folder and ports.
#[derive(Debug, Clone)]
pub struct Layout {
    pub name: &'static str,
    pub workspace: PathBuf,
    pub root: PathBuf,
    pub pg_port: u16,
    pub nats_port: u16,
    pub nats_monitor_port: u16,
    /// Test clusters trade durability for speed (`fsync = off`).
    pub durable: bool,
    /// Load `pg_stat_statements`, so the benchmark can list the costliest statements.
    pub statement_stats: bool,
    /// nats-server nodes: one, or three as one JetStream cluster (node `i` listens on
    /// `nats_port + i` and `nats_monitor_port + i`).
    pub nats_nodes: u16,
    /// Replicas of every service (replica `r` listens on its service's port + 100·r).
    pub replicas: u16,
}

/// A `cargo` command with the toolchain that runs us, cleared of the package variables that
/// `cargo run` exported to xtask: build scripts (ring's) fingerprint them, so leaving them in
/// would rebuild half the dependency tree on every `cargo xtask` call.
pub fn cargo() -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                key.as_ref(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives inside the workspace")
}

impl Layout {
    pub fn dev() -> anyhow::Result<Self> {
        let workspace = workspace_root()?;
        Ok(Self {
            name: "dev",
            root: workspace.join(".state/dev"),
            workspace,
            pg_port: 25432,
            nats_port: 24222,
            nats_monitor_port: 28222,
            durable: true,
            statement_stats: false,
            nats_nodes: 1,
            replicas: 1,
        })
    }

    pub fn test() -> anyhow::Result<Self> {
        let workspace = workspace_root()?;
        Ok(Self {
            name: "test",
            root: workspace.join(".state/test"),
            workspace,
            pg_port: 25433,
            nats_port: 24223,
            nats_monitor_port: 28223,
            durable: false,
            statement_stats: false,
            nats_nodes: 1,
            replicas: 1,
        })
    }

    /// The benchmark's own cluster and NATS: durable like `dev`, fresh on every run.
    pub fn bench() -> anyhow::Result<Self> {
        let workspace = workspace_root()?;
        Ok(Self {
            name: "bench",
            root: workspace.join(".state/bench"),
            workspace,
            pg_port: 25434,
            nats_port: 24224,
            nats_monitor_port: 28224,
            durable: true,
            statement_stats: true,
            nats_nodes: 1,
            replicas: 1,
        })
    }

    /// `up --cluster`: three nats-server nodes as one JetStream cluster (R3 streams) and two
    /// replicas of every service, on a Postgres and NATS of its own. Its first replicas use
    /// the topology's ports, so it runs instead of `dev`, not beside it.
    pub fn cluster() -> anyhow::Result<Self> {
        let workspace = workspace_root()?;
        Ok(Self {
            name: "cluster",
            root: workspace.join(".state/cluster"),
            workspace,
            pg_port: 25435,
            nats_port: 24231,
            nats_monitor_port: 28231,
            durable: true,
            statement_stats: false,
            nats_nodes: 3,
            replicas: 2,
        })
    }

    /// The layouts `up` may run: one at a time, since they share the service ports.
    pub fn runnable() -> anyhow::Result<[Self; 2]> {
        Ok([Self::dev()?, Self::cluster()?])
    }

    /// Moves the ports to free ones when another checkout's servers hold them; the tests
    /// learn the addresses from the environment. Call after stopping this layout's own
    /// servers.
    pub fn with_free_ports(mut self) -> anyhow::Result<Self> {
        for step in 0..200u16 {
            let ports = [
                self.pg_port + step * 3,
                self.nats_port + step * 3,
                self.nats_monitor_port + step * 3,
            ];
            if ports.iter().all(|p| port_is_free(*p)) {
                if step > 0 {
                    println!(
                        "xtask: the usual test ports are taken; using Postgres {}, NATS {}",
                        ports[0], ports[1]
                    );
                }
                [self.pg_port, self.nats_port, self.nats_monitor_port] = ports;
                return Ok(self);
            }
        }
        anyhow::bail!(
            "no free ports for the test infrastructure near {}",
            self.pg_port
        )
    }

    /// Tools installed for every environment (nats-server from PyPI).
    pub fn tools(&self) -> PathBuf {
        self.workspace.join(".state/tools")
    }

    /// The superuser's URL, with its password.
    pub fn pg_admin_url(&self) -> anyhow::Result<String> {
        self.pg_url("postgres", "postgres")
    }

    /// `user`'s URL of `database`, with its password (SCRAM: no role logs in without one).
    pub fn pg_url(&self, user: &str, database: &str) -> anyhow::Result<String> {
        let password = crate::secrets::password(self, user)?;
        Ok(format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.pg_port
        ))
    }

    /// [`Layout::pg_url`] as it may be shown: without the password.
    pub fn pg_url_shown(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}:***@127.0.0.1:{}/{database}",
            self.pg_port
        )
    }

    /// Every node's client URL, separated by commas (one URL for a single server).
    pub fn nats_url(&self) -> String {
        self.nats_url_from(0)
    }

    /// [`Layout::nats_url`] from node `first` on: a client tries the nodes in this order, so
    /// replicas given different firsts are spread over the cluster.
    pub fn nats_url_from(&self, first: u16) -> String {
        (0..self.nats_nodes)
            .map(|k| {
                let node = (first + k) % self.nats_nodes;
                format!("nats://127.0.0.1:{}", self.nats_port + node)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn remove_state(&self) -> anyhow::Result<()> {
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root)
                .with_context(|| format!("removing {}", self.root.display()))?;
        }
        crate::postgres::remove_external_data(self)
    }
}

/// Whether a server could listen on `port` on loopback now.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
