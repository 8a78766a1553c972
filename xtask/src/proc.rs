//! Background processes: pid files, liveness, signals, and waiting for ports and URLs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The pid recorded in `file`, if the process is alive.
pub fn running_pid(file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(file).ok()?;
    let pid: i32 = text.split_whitespace().next()?.parse().ok()?;
    alive(pid).then_some(pid)
}

/// Whether `pid` is a running process. A process that was killed can linger as a zombie
/// until its parent reaps it, and answers signals meanwhile: it is not running.
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x"))
}

/// The pid recorded in `file` when its process is gone (killed, crashed): it is dead, not
/// stopped.
pub fn dead_pid(file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(file).ok()?;
    let pid: i32 = text.split_whitespace().next()?.parse().ok()?;
    (!alive(pid)).then_some(pid)
}

/// SIGTERM, then SIGKILL after `grace`.
pub fn stop(pid: i32, grace: Duration) {
    let pid_t = Pid::from_raw(pid);
    if kill(pid_t, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(pid_t, Signal::SIGKILL);
}

/// A helper process of a local stack (the OpenID provider, localstripe): started once, its pid
/// kept in `<run dir>/<name>.pid`, its output in `<logs>/<name>.log`, ready once `ready_path`
/// on `port` answers 200.
pub struct Helper {
    pub name: &'static str,
    pub port: u16,
    pub ready_path: &'static str,
}

impl Helper {
    /// Where it listens.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its state directory in the environment (`<root>/<name>`).
    pub fn state(&self, layout: &crate::layout::Layout) -> std::path::PathBuf {
        layout.root.join(self.name)
    }

    fn pid_file(&self, layout: &crate::layout::Layout) -> std::path::PathBuf {
        layout.run_dir().join(format!("{}.pid", self.name))
    }

    /// Whether it runs in this environment.
    pub fn running(&self, layout: &crate::layout::Layout) -> bool {
        running_pid(&self.pid_file(layout)).is_some()
    }

    /// Says so and answers true when it runs already.
    pub fn already_running(&self, layout: &crate::layout::Layout) -> bool {
        let pid = running_pid(&self.pid_file(layout));
        if let Some(pid) = pid {
            println!(
                "{}: already running on port {} (pid {pid})",
                self.name, self.port
            );
        }
        pid.is_some()
    }

    /// Starts `cmd` as the helper and waits (30 s at most) until it is ready.
    pub fn launch(&self, layout: &crate::layout::Layout, cmd: Command) -> anyhow::Result<()> {
        let log = layout.logs().join(format!("{}.log", self.name));
        let pid = spawn_detached(cmd, &log, &self.pid_file(layout))?;
        let timeout = Duration::from_secs(30);
        wait_http_ok(
            self.name,
            self.port,
            self.ready_path,
            None,
            timeout,
            &log,
            Some(pid),
        )?;
        println!("{}: running on port {} (pid {pid})", self.name, self.port);
        Ok(())
    }

    pub fn stop(&self, layout: &crate::layout::Layout) {
        let pid_file = self.pid_file(layout);
        if let Some(pid) = running_pid(&pid_file) {
            stop(pid, Duration::from_secs(10));
            println!("{}: stopped", self.name);
        }
        let _ = std::fs::remove_file(pid_file);
    }

    /// Its status line, serving `at`.
    pub fn status(&self, layout: &crate::layout::Layout, at: &str) {
        let state = match running_pid(&self.pid_file(layout)) {
            Some(pid) => format!("running  pid {pid}"),
            None => "stopped ".into(),
        };
        println!("{:<12} {state} {at}", self.name);
    }
}

/// Starts `cmd` in its own process group (so a Ctrl-C of xtask does not stop it) with output
/// appended to `log`, and records its pid in `pid_file`.
pub fn spawn_detached(mut cmd: Command, log: &Path, pid_file: &Path) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(dir) = pid_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as i32;
    std::fs::write(pid_file, format!("{pid}\n"))?;
    Ok(pid)
}

/// An HTTP/1.0 GET on 127.0.0.1, over TLS with `tls`; returns the status code.
pub fn http_status(port: u16, path: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Option<u16> {
    let stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    match tls {
        None => status_of(stream, path),
        Some(config) => {
            let server =
                rustls::pki_types::ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
            let connection = rustls::ClientConnection::new(config.clone(), server).ok()?;
            status_of(rustls::StreamOwned::new(connection, stream), path)
        }
    }
}

/// An HTTP/1.0 GET of a JSON document on 127.0.0.1 over plain HTTP (a NATS server's
/// monitoring endpoint); `None` unless it answers 200 with JSON.
pub fn http_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..at]).ok()?;
    if head.get(9..12) != Some("200") {
        return None;
    }
    serde_json::from_slice(&answer[at + 4..]).ok()
}

fn status_of(mut stream: impl Read + Write, path: &str) -> Option<u16> {
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    stream.flush().ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// How xtask calls the services of an environment whose certificates are in `dir`: as an
/// operator, trusting the local CA only.
pub fn operator_tls(dir: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    Ok(Arc::new(
        service_kit::tls::TlsSettings::new(dir, "operator").client_config()?,
    ))
}

/// Waits until `GET path` answers 200, or fails naming `what` and its log.
pub fn wait_http_ok(
    what: &str,
    port: u16,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
    log: &Path,
    pid: Option<i32>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if http_status(port, path, tls) == Some(200) {
            return Ok(());
        }
        if let Some(pid) = pid {
            if !alive(pid) {
                bail!(
                    "{what} exited during start-up; see {}:\n{}",
                    log.display(),
                    tail(log, 15)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{what} not ready on port {port} after {timeout:?}; see {}:\n{}",
                log.display(),
                tail(log, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
