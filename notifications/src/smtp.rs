//! SMTP without Nagle's delay. lettre writes a message's body and its closing `.` as two
//! writes; on a socket with Nagle's algorithm the second waits for the server's delayed
//! acknowledgement of the first, about 40 ms an email. For a plain `smtp://host:port` (no
//! TLS, no login: the local sink, a relay inside the cluster) the service opens its own
//! connections with `TCP_NODELAY` and keeps the idle ones for the next emails; any other URL
//! (`smtps://`, `?tls=`, a user and password) goes through lettre's transport as it is.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// A connection idle this long is closed rather than used: a server may have dropped it.
const IDLE_FOR_AT_MOST: Duration = Duration::from_secs(5);

/// Why an email was not taken: the server's reply code, if it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: Option<u16>,
    pub message: String,
}

impl From<lettre::transport::smtp::Error> for Refusal {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        Self {
            status: e.status().map(u16::from),
            message: e.to_string(),
        }
    }
}

/// Where emails go.
pub enum Smtp {
    /// A plain server, over this service's own connections.
    Plain(Plain),
    /// Any other, through lettre's transport.
    Transport(AsyncSmtpTransport<Tokio1Executor>),
}

/// A plain SMTP server and the connections to it now idle.
pub struct Plain {
    host: String,
    port: u16,
    timeout: Duration,
    hello: ClientId,
    keep: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Smtp {
    /// The server at `url`; every step of an exchange (connecting, each send) gives up after
    /// `timeout`, and at most `keep` idle connections are kept.
    pub fn from_url(url: &str, timeout: Duration, keep: usize) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("SMTP_URL is not an SMTP URL: {e}"))?;
        let plain = parsed.scheme() == "smtp"
            && parsed.query().is_none()
            && parsed.username().is_empty()
            && parsed.password().is_none();
        if let (true, Some(host)) = (plain, parsed.host_str()) {
            return Ok(Self::Plain(Plain {
                host: host.trim_matches(['[', ']']).to_owned(),
                port: parsed.port().unwrap_or(25),
                timeout,
                hello: ClientId::default(),
                keep,
                idle: Mutex::default(),
            }));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("SMTP_URL is not an SMTP URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Self::Transport(transport))
    }

    /// Sends `message`; the server's reply.
    pub async fn send(&self, message: Message) -> Result<Response, Refusal> {
        match self {
            Self::Plain(plain) => plain.send(message).await,
            Self::Transport(transport) => Ok(transport.send(message).await?),
        }
    }
}

impl Plain {
    async fn send(&self, message: Message) -> Result<Response, Refusal> {
        let envelope = message.envelope().clone();
        let body = message.formatted();
        let mut connection = match self.take() {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        match tokio::time::timeout(self.timeout, connection.send(&envelope, &body)).await {
            Ok(Ok(response)) => {
                self.give_back(connection);
                Ok(response)
            }
            // lettre has quit a connection whose exchange went wrong: it is dropped.
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(timed_out("sending")),
        }
    }

    /// A new connection, greeted, with Nagle's algorithm off.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Refusal> {
        let open = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| Refusal {
                    status: None,
                    message: format!("could not connect: {e}"),
                })?;
            tcp.set_nodelay(true).map_err(|e| Refusal {
                status: None,
                message: format!("could not set TCP_NODELAY: {e}"),
            })?;
            Ok(AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?)
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .unwrap_or_else(|_| Err(timed_out("connecting")))
    }

    /// The most recently used idle connection, unless it has been idle too long.
    fn take(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().expect("idle connections");
        // The oldest are at the front: those idle too long are closed by dropping them.
        idle.retain(|(_, since)| since.elapsed() < IDLE_FOR_AT_MOST);
        idle.pop().map(|(connection, _)| connection)
    }

    fn give_back(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().expect("idle connections");
        if idle.len() < self.keep {
            idle.push((connection, Instant::now()));
        }
    }
}

fn timed_out(what: &str) -> Refusal {
    Refusal {
        status: None,
        message: format!("timed out {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal SMTP server on a free port: how many connections it accepted and how many
    /// messages it took.
    async fn server() -> (
        u16,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, messages) = (
            std::sync::Arc::new(AtomicUsize::new(0)),
            std::sync::Arc::new(AtomicUsize::new(0)),
        );
        let (accepted, taken) = (connections.clone(), messages.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let taken = taken.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 test ready\r\n").await.unwrap();
                    let mut in_data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply: &[u8] = if in_data {
                            if line != "." {
                                continue;
                            }
                            in_data = false;
                            taken.fetch_add(1, Ordering::SeqCst);
                            b"250 taken\r\n"
                        } else if line.starts_with("EHLO") {
                            b"250 test\r\n"
                        } else if line.starts_with("DATA") {
                            in_data = true;
                            b"354 go on\r\n"
                        } else if line.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        write.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        (port, connections, messages)
    }

    fn message(n: usize) -> Message {
        Message::builder()
            .from("shop@streamshop.example".parse().unwrap())
            .to("customer@customers.example".parse().unwrap())
            .subject(format!("order {n}"))
            .body(String::from("hello"))
            .unwrap()
    }

    /// Emails one after another share one connection; one kept idle too long is not used.
    #[tokio::test]
    async fn emails_share_a_kept_connection() {
        use std::sync::atomic::Ordering;
        let (port, connections, messages) = server().await;
        let smtp = Smtp::from_url(
            &format!("smtp://127.0.0.1:{port}"),
            Duration::from_secs(5),
            4,
        )
        .unwrap();
        for n in 0..3 {
            let reply = smtp.send(message(n)).await.unwrap();
            assert_eq!(u16::from(reply.code()), 250);
        }
        assert_eq!(messages.load(Ordering::SeqCst), 3);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        // Idle past the limit: the next email opens a new connection.
        let Smtp::Plain(plain) = &smtp else {
            unreachable!()
        };
        for (_, since) in plain.idle.lock().unwrap().iter_mut() {
            *since -= IDLE_FOR_AT_MOST;
        }
        smtp.send(message(3)).await.unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        assert_eq!(messages.load(Ordering::SeqCst), 4);
    }

    /// lettre's transport starts its pool's task, so this runs in a runtime.
    #[tokio::test]
    async fn only_a_plain_url_without_login_gets_own_connections() {
        let timeout = Duration::from_secs(1);
        for url in [
            "smtp://127.0.0.1:1025",
            "smtp://mail.internal",
            "smtp://[::1]:25",
        ] {
            assert!(
                matches!(Smtp::from_url(url, timeout, 4).unwrap(), Smtp::Plain(_)),
                "{url}"
            );
        }
        for url in [
            "smtp://mail.example:587?tls=required",
            "smtp://user:secret@mail.example:25",
            "smtps://user:secret@mail.example:465",
        ] {
            assert!(
                matches!(Smtp::from_url(url, timeout, 4).unwrap(), Smtp::Transport(_)),
                "{url}"
            );
        }
        let Smtp::Plain(plain) = Smtp::from_url("smtp://[::1]", timeout, 4).unwrap() else {
            unreachable!()
        };
        assert_eq!((plain.host.as_str(), plain.port), ("::1", 25));
        assert!(Smtp::from_url("not a url", timeout, 4).is_err());
    }
}
