//! Figure 8: what a three-node JetStream cluster costs, on this machine. The same work runs in
//! turns on one fresh NATS server (streams R1) and on three fresh nodes as `cargo xtask up
//! --cluster` runs them (the benchmark server's identities and TLS, mutual-TLS routes, every
//! stream R3: a publish is acknowledged once two nodes hold it; each service's URL list
//! starts at a node of its own). On one machine the three
//! nodes share its cores with everything else, so this is the price of replication, not the
//! capacity of a cluster of machines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use messaging::server_config::{cluster_block, ClusterNode};

use crate::sides::{compare, Comparison, Setup};
use crate::{Bench, Transport};

/// Nodes of the cluster: the fewest that keep a quorum with one gone.
const NODES: usize = 3;

/// nats-server nodes (one, or a cluster), killed when dropped.
struct Nodes {
    children: Vec<tokio::process::Child>,
    pids: Vec<i32>,
    /// Every node's client URL, the first node first.
    url: String,
}

impl Nodes {
    /// Starts `count` nodes named `<name>-n<i>` on `base`, the benchmark server's
    /// configuration (identities and TLS), each with a store of its own and, when there are
    /// several, a `cluster` block; then waits until every node is healthy (on a cluster: the
    /// meta group has a leader and the node is current with it).
    async fn start(
        binary: &Path,
        base: &Path,
        tls_dir: &Path,
        logs: &Path,
        name: &str,
        count: usize,
    ) -> anyhow::Result<Self> {
        let base = std::fs::read_to_string(base)
            .with_context(|| format!("reading the NATS configuration {}", base.display()))?;
        let members: Vec<ClusterNode> = (0..count)
            .map(|i| ClusterNode {
                name: format!("n{}", i + 1),
                route_port: crate::procs::free_port(),
            })
            .collect();
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut nodes = Self {
            children: Vec::new(),
            pids: Vec::new(),
            url: String::new(),
        };
        let mut urls = Vec::new();
        let mut monitors = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let config = logs.join(format!("{name}-{}.conf", member.name));
            let text = if count == 1 {
                base.clone()
            } else {
                let tls_dir = tls_dir.display().to_string();
                let block = cluster_block(name, &members, i, &password, &tls_dir);
                format!("{base}\n{block}")
            };
            write_private(&config, &text)?;
            let (port, monitor) = (crate::procs::free_port(), crate::procs::free_port());
            let args = [
                "-c".to_owned(),
                config.display().to_string(),
                "-m".to_owned(),
                monitor.to_string(),
            ];
            let child = crate::procs::spawn_nats(
                binary,
                &format!("{name}-{}", member.name),
                port,
                &args,
                logs,
            )?;
            nodes.pids.push(child.id().context("a node's pid")? as i32);
            nodes.children.push(child);
            urls.push(format!("nats://127.0.0.1:{port}"));
            monitors.push((member.name.clone(), monitor));
        }
        nodes.url = urls.join(",");
        // Every node before any is waited for: the meta group needs a quorum.
        for (name, monitor) in monitors {
            healthy(&name, monitor).await?;
        }
        Ok(nodes)
    }
}

/// Waits up to 60 s for a node's `/healthz` to answer 200.
async fn healthy(name: &str, monitor: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{monitor}/healthz");
    for _ in 0..1200 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("cluster node {name} was not healthy after 60 s (see its log beside the others)")
}

/// Writes a file only its owner may read: a node's configuration holds the routes' password.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// One server (first) against the three-node cluster (second).
pub async fn run(b: &Bench, nats_server: &Path, nats_config: &Path) -> anyhow::Result<Comparison> {
    println!("figure 8: a three-node JetStream cluster against one server");
    let tls_dir: PathBuf = b
        .transport
        .tls_dir
        .clone()
        .context("the cluster figure runs with TLS, as the stack does")?;
    // Both sides fresh: the benchmark's own server holds the earlier figures' streams.
    let start = |name: &'static str, count| {
        Nodes::start(nats_server, nats_config, &tls_dir, &b.logs, name, count)
    };
    let mut single = start("bench-single", 1).await?;
    let mut cluster = start("bench-cluster", NODES).await?;
    let on = |nodes: &Nodes, stream_replicas| Transport {
        nats_url: nodes.url.clone(),
        stream_replicas,
        ..b.transport.clone()
    };
    let (one, three) = (on(&single, 1), on(&cluster, NODES));
    let sides = [
        Setup {
            label: "single",
            transport: &one,
            nats_pids: single.pids.clone(),
        },
        Setup {
            label: "cluster",
            transport: &three,
            nats_pids: cluster.pids.clone(),
        },
    ];
    let result = compare(b, "cl", &sides).await;
    for child in single
        .children
        .iter_mut()
        .chain(cluster.children.iter_mut())
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    result
}
