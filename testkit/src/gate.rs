//! A TCP gate in front of a dependency: closing it cuts every connection through it and turns
//! new ones away, as if the dependency had stopped; opening it lets connections through again.

use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A gate on loopback; dropped, it stops accepting.
pub struct Gate {
    pub port: u16,
    closed: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// Starts a gate that forwards to `target` (`host:port`), open.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gate");
        let port = listener.local_addr().expect("gate address").port();
        let closed = Arc::new(watch::channel(false).0);
        let (target, state) = (target.to_owned(), closed.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *state.borrow() {
                    // Turned away: the client sees its connection reset.
                    drop(inbound);
                    continue;
                }
                let mut cut = state.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|closed| *closed) => {}
                    }
                });
            }
        });
        Self {
            port,
            closed,
            accept,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn open(&self) {
        self.closed.send_replace(false);
    }

    /// `url` with its `host:port` replaced by the gate's.
    pub fn route(&self, url: &str) -> String {
        let (scheme_user, rest) = url.split_once('@').expect("a URL with user@host");
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{scheme_user}@127.0.0.1:{}{path}", self.port)
    }

    /// The `host:port` of a `scheme://user@host:port/path` URL.
    pub fn target_of(url: &str) -> String {
        let rest = url.split_once('@').map_or(url, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_owned()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
        self.closed.send_replace(true);
    }
}
