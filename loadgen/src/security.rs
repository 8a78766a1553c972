//! Figure 7: what TLS and the NATS permissions cost. The same release binaries do the same
//! work twice per round, alternating: once "open", on a second NATS server with no users and
//! no TLS and with every service at `TLS=off` (how the stack ran before both), and once
//! "secured", as the stack runs (mutual TLS on every NATS and internal HTTP connection, an
//! nkey per service, per-identity permissions).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::sides::{compare, Comparison, Setup};
use crate::{Bench, Transport};

/// A nats-server with JetStream and nothing else: no users, no TLS.
struct OpenNats {
    child: tokio::process::Child,
    url: String,
    pid: i32,
}

impl OpenNats {
    async fn start(binary: &Path, logs: &Path) -> anyhow::Result<Self> {
        let port = crate::procs::free_port();
        let child = crate::procs::spawn_nats(binary, "open-nats", port, &[], logs)?;
        let pid = child.id().context("the server's pid")? as i32;
        let url = format!("nats://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(client) = async_nats::connect(&url).await {
                if async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .is_ok()
                {
                    return Ok(Self { child, url, pid });
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the open nats-server did not start in 10 s")
    }
}

/// Open (first) against secured (second).
pub async fn run(b: &Bench, nats_server: &Path) -> anyhow::Result<Comparison> {
    println!("figure 7: what TLS and the NATS permissions cost");
    let mut open_nats = OpenNats::start(nats_server, &b.logs).await?;
    let open = Transport {
        nats_url: open_nats.url.clone(),
        nats_credentials: None,
        tls_dir: None,
        stream_replicas: 1,
    };
    let sides = [
        Setup {
            label: "open",
            transport: &open,
            nats_pids: vec![open_nats.pid],
        },
        Setup {
            label: "secured",
            transport: &b.transport,
            nats_pids: b.nats_pid.into_iter().collect(),
        },
    ];
    let result = compare(b, "sec", &sides).await;
    let _ = open_nats.child.start_kill();
    let _ = open_nats.child.wait().await;
    result
}
