//! A three-node JetStream cluster of one test's own: the shared server's identities and TLS
//! on every node, mutual-TLS routes between the nodes on loopback, each node's store in a
//! folder of its own, so a test can SIGKILL a node (or the one leading a stream) and start it
//! again. The nodes' monitoring endpoints say who leads what and whether a node has caught up.

use std::path::PathBuf;
use std::time::Duration;

use messaging::server_config::{cluster_block, ClusterNode};
use serde_json::Value;
use tokio::process::Child;

use crate::private::{kill9_nats, provided, scratch, spawn_nats, NatsPlace};

/// How many nodes the cluster has: the smallest that keeps a quorum with one node gone.
pub const NODES: usize = 3;

/// One nats-server of the cluster.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub monitor_port: u16,
    /// Where the other nodes' routes connect.
    pub route_port: u16,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The cluster: three nodes, R3 streams.
pub struct NatsCluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Writes every node's configuration, starts the three, and waits until each is healthy
    /// (JetStream's meta group has a leader and the node is current with it).
    pub async fn start() -> Self {
        let dir = scratch("nats-cluster");
        let base = std::fs::read_to_string(provided("STREAMSHOP_TEST_NATS_CONFIG"))
            .expect("read the test NATS configuration");
        let password = uuid::Uuid::new_v4().simple().to_string();
        let tls_dir = provided("STREAMSHOP_TEST_TLS_DIR").display().to_string();
        let members: Vec<ClusterNode> = (0..NODES)
            .map(|i| ClusterNode {
                name: format!("n{}", i + 1),
                route_port: crate::free_port(),
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let config = dir.join(format!("{}.conf", member.name));
            let text = format!(
                "{base}\n{}",
                cluster_block("streamshop-test", &members, i, &password, &tls_dir)
            );
            crate::private::write_private(&config, text.as_bytes());
            nodes.push(Node {
                name: member.name.clone(),
                port: crate::free_port(),
                monitor_port: crate::free_port(),
                route_port: member.route_port,
                store: dir.join(&member.name),
                log: dir.join(format!("{}.log", member.name)),
                config,
                child: None,
            });
        }
        let mut cluster = Self { nodes, dir };
        for i in 0..NODES {
            cluster.spawn(i);
        }
        for i in 0..NODES {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.child = Some(spawn_nats(&NatsPlace {
            config: &node.config,
            port: node.port,
            monitor_port: node.monitor_port,
            store: &node.store,
            log: &node.log,
        }));
    }

    /// Waits until node `i` says it is healthy: JetStream's meta group has a leader, and
    /// every stream and consumer it holds a replica of is current.
    pub async fn wait_healthy(&self, i: usize) {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].monitor_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats node {} not healthy after 60 s; its log ends:\n{}",
                self.nodes[i].name,
                self.log_tail(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client URL of every node, node `first` first: a client given it connects there,
    /// and moves to the next when that node goes.
    pub fn url_from(&self, first: usize) -> String {
        (0..NODES)
            .map(|k| format!("nats://127.0.0.1:{}", self.nodes[(first + k) % NODES].port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`url_from`](Self::url_from) the first node.
    pub fn url(&self) -> String {
        self.url_from(0)
    }

    /// SIGKILL node `i`: nothing flushed, no client or peer told.
    pub async fn kill9(&mut self, i: usize) {
        kill9_nats(self.nodes[i].child.take().expect("the node is running")).await;
    }

    /// Starts node `i` again on its ports and store, and waits until it is healthy: caught up
    /// with every stream it holds a replica of.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "kill it first");
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// `path` of node `i`'s monitoring endpoint, as JSON.
    async fn monitor(&self, i: usize, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.nodes[i].monitor_port);
        reqwest::get(&url).await.ok()?.json().await.ok()
    }

    /// Asserts that every running node's route port speaks mutual TLS only: in plain text it
    /// says nothing (it waits for a TLS handshake), a TLS client without a certificate of the
    /// local CA gets no `INFO`, and one with the nodes' certificate gets the route's `INFO`.
    pub async fn assert_routes_need_tls(&self) {
        let tls = service_kit::tls::TlsSettings::new(provided("STREAMSHOP_TEST_TLS_DIR"), "nats");
        let with_cert = tls.client_config().expect("the nodes' certificate");
        let without_cert = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_root_certificates(tls.roots().expect("the local CA"))
        .with_no_client_auth();
        // A node that would answer does so at once: two seconds of silence is a refusal. The
        // handshake that must succeed gets the server's own TLS timeout.
        let (silence, answer) = (Duration::from_secs(2), Duration::from_secs(5));
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let port = node.route_port;
            let said = route_says(port, None, silence).await;
            assert!(
                !said.starts_with("INFO"),
                "{} answered a plain-text route: {said:?}",
                node.name
            );
            let said = route_says(port, Some(&without_cert), silence).await;
            assert!(
                !said.starts_with("INFO"),
                "{} let a route without a certificate in: {said:?}",
                node.name
            );
            let said = route_says(port, Some(&with_cert), answer).await;
            assert!(
                said.starts_with("INFO "),
                "{} sent no INFO to a route with the nodes' certificate: {said:?}",
                node.name
            );
        }
    }

    /// What node `i` reports of its streams (`/jsz` with every account's stream details,
    /// and the consumers' with `consumers`).
    async fn streams_on(&self, i: usize, consumers: bool) -> Option<Vec<Value>> {
        // A consumer's configuration (whether it is durable) comes only with `config`.
        let path = format!("/jsz?accounts=true&streams=true&consumers={consumers}&config=true");
        let jsz = self.monitor(i, &path).await?;
        Some(
            jsz["account_details"]
                .as_array()?
                .iter()
                .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
                .collect(),
        )
    }

    /// The index of the node that leads `stream` now, as the running nodes report it.
    pub async fn leader_of(&self, stream: &str) -> Option<usize> {
        for i in (0..NODES).filter(|i| self.nodes[*i].child.is_some()) {
            let Some(streams) = self.streams_on(i, false).await else {
                continue;
            };
            let leader = streams
                .iter()
                .find(|s| s["name"] == stream)
                .and_then(|s| s["cluster"]["leader"].as_str());
            if let Some(name) = leader {
                return self.nodes.iter().position(|n| n.name == name);
            }
        }
        None
    }

    /// The replica count and last sequence of `stream` on node `i`.
    pub async fn stream_on(&self, i: usize, stream: &str) -> Option<(usize, u64)> {
        let streams = self.streams_on(i, false).await?;
        let s = streams.iter().find(|s| s["name"] == stream)?;
        let replicas = 1 + s["cluster"]["replicas"].as_array().map_or(0, Vec::len);
        Some((replicas, s["state"]["last_seq"].as_u64()?))
    }

    /// Waits until every node holds `stream` with three replicas and the same last sequence:
    /// a node that was away has caught up.
    pub async fn assert_replicated(&self, stream: &str) -> u64 {
        let what = format!("{stream} on every node, R3, at one last sequence");
        crate::eventually(Duration::from_secs(60), &what, || async {
            let mut seen = Vec::new();
            for i in 0..NODES {
                seen.push(self.stream_on(i, stream).await?);
            }
            let (replicas, last) = seen[0];
            (replicas == NODES && seen.iter().all(|s| *s == (replicas, last))).then_some(last)
        })
        .await
    }

    /// The replica count of every durable consumer of `stream`, by name, as the node that
    /// leads the stream reports them.
    pub async fn durable_consumers(&self, stream: &str) -> Vec<(String, usize)> {
        let Some(leader) = self.leader_of(stream).await else {
            return Vec::new();
        };
        let streams = self.streams_on(leader, true).await.unwrap_or_default();
        streams
            .iter()
            .filter(|s| s["name"] == stream)
            .flat_map(|s| s["consumer_detail"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["config"]["durable_name"].is_string())
            .map(|c| {
                let replicas = 1 + c["cluster"]["replicas"].as_array().map_or(0, Vec::len);
                (c["name"].as_str().unwrap_or("?").to_owned(), replicas)
            })
            .collect()
    }

    /// The names of the clients connected to node `i` (a service's is its identity's name).
    pub async fn clients_on(&self, i: usize) -> Vec<String> {
        let connz = self
            .monitor(i, "/connz?limit=4096")
            .await
            .unwrap_or_default();
        connz["connections"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last lines of node `i`'s log, for a failure message.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first line a route connection to `port` receives within `wait`, the connection and
/// the TLS handshake (with `tls`; none in plain text) included; empty when it receives none,
/// the handshake fails or the connection is closed.
async fn route_says(port: u16, tls: Option<&rustls::ClientConfig>, wait: Duration) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
    async fn first_line(stream: impl AsyncRead + Unpin) -> String {
        let mut line = String::new();
        match BufReader::new(stream).read_line(&mut line).await {
            Ok(_) => line,
            Err(_) => String::new(),
        }
    }
    let said = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("route port {port}: {e}"));
        let Some(config) = tls else {
            return first_line(tcp).await;
        };
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("an IP address");
        match tokio_rustls::TlsConnector::from(std::sync::Arc::new(config.clone()))
            .connect(name, tcp)
            .await
        {
            Ok(stream) => first_line(stream).await,
            Err(_) => String::new(),
        }
    };
    tokio::time::timeout(wait, said).await.unwrap_or_default()
}
