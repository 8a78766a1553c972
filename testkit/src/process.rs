//! Real service processes for crash tests: start a binary with an environment, wait for its
//! `/readyz`, and kill it with SIGKILL (nothing flushed, nothing cleaned up) or SIGTERM.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A running service binary.
pub struct ServiceProcess {
    child: Child,
    pub base_url: String,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (on top of a clean environment but `PATH`) listening on
    /// `port`, and waits until `/readyz` answers 200.
    pub async fn start(binary: &Path, port: u16, env: &[(&str, String)]) -> Self {
        Self::start_logging_to(binary, port, env, None).await
    }

    /// Like [`start`](Self::start), with the process's standard output written to `log`.
    pub async fn start_logging_to(
        binary: &Path,
        port: u16,
        env: &[(&str, String)],
        log: Option<&Path>,
    ) -> Self {
        let process = Self::spawn(binary, port, env, log);
        process.wait_ready(Duration::from_secs(30)).await;
        process
    }

    /// Starts `binary` as [`start_logging_to`](Self::start_logging_to) does, without waiting
    /// for it to be ready.
    pub fn spawn(binary: &Path, port: u16, env: &[(&str, String)], log: Option<&Path>) -> Self {
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // The port is the caller's choice, whatever the environment says.
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(match log {
                // Appended to: a replica started again keeps one log across its lives.
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("open the log file"),
                ),
                None => Stdio::inherit(),
            })
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        // Every internal service serves HTTPS when it is given its TLS files; the gateway's
        // public side is plain HTTP whatever they are (TLS ends at the balancer in front).
        let tls = env.iter().any(|(k, v)| *k == "TLS_DIR" && !v.is_empty())
            && binary.file_name().is_none_or(|n| n != "gateway");
        let scheme = if tls { "https" } else { "http" };
        Self {
            child,
            base_url: format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    /// Whether it still runs (has not exited, by itself or otherwise).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `/readyz` answers 200; panics after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let client = crate::http();
        let url = format!("{}/readyz", self.base_url);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} not ready after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("process still running") as i32)
    }

    /// SIGKILL, then reap: the process gets no chance to finish anything.
    pub async fn kill9(mut self) {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then wait for a graceful exit; returns whether it exited with success.
    pub async fn terminate(mut self) -> bool {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }

    /// Waits for the process to exit on its own (a failpoint abort, say).
    pub async fn wait_exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("process did not exit in time")
            .expect("wait for process")
    }
}
