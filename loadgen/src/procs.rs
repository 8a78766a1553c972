//! The processes a benchmark runs (services, the bare baseline) and what they cost: CPU time
//! and resident memory, read from `/proc`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::{Child, Command};

/// A child process with an HTTP port; killed when dropped.
pub struct Proc {
    pub name: String,
    pub base_url: String,
    pub pid: i32,
    child: Child,
    log: PathBuf,
}

/// The base URL of the process named `name` among `procs` (empty when there is none).
pub fn url_of(procs: &[Proc], name: &str) -> String {
    procs
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.base_url.clone())
        .unwrap_or_default()
}

/// A free port on loopback, never the same one twice in this process: a cluster's route ports
/// are named in every node's configuration before any node binds them. Taken from below the
/// ephemeral range, as the tests' are, so no outgoing connection holds one meanwhile.
pub fn free_port() -> u16 {
    testkit::free_port()
}

/// Starts `nats-server -js` on loopback at `port`, with `args` besides (a configuration, a
/// monitoring port), its store emptied first and its log written to `<logs>/<name>.log`.
pub fn spawn_nats(
    binary: &Path,
    name: &str,
    port: u16,
    args: &[String],
    logs: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let store = logs.join(format!("{name}-store"));
    let _ = std::fs::remove_dir_all(&store);
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    tokio::process::Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .arg("-sd")
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

impl Proc {
    /// Starts `program args` with `env` on a fresh port and waits for `/readyz` (or `/healthz`
    /// for the bare server); its output goes to `<logs>/<name>.log`. It answers HTTPS when
    /// `https`.
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        https: bool,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            // OpenTelemetry's own settings pass through, so a run can export traces or switch
            // them off (OTEL_SDK_DISABLED=true) to measure what they cost.
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("the child's pid")? as i32;
        let mut proc = Self {
            name: name.to_owned(),
            base_url: format!(
                "{}://127.0.0.1:{port}",
                if https { "https" } else { "http" }
            ),
            pid,
            child,
            log,
        };
        proc.wait_ready().await?;
        Ok(proc)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = crate::drive::http_client(1);
        let url = format!("{}/readyz", self.base_url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before it was ready; see {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} was not ready after 60 s; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and SIGKILL if it has not exited after 15 s.
    pub async fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU ticks (user + system) and resident set of one process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ticks: u64,
    rss_bytes: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

fn sample(pid: i32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) ... rss(24), 1-based in proc(5).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some(Sample {
        ticks: utime + stime,
        rss_bytes: rss_pages * 4096,
    })
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A process and, for Postgres, its backends: whose CPU and memory to count under one name.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: i32,
    /// Count the process's children too (Postgres forks one backend per connection).
    pub with_children: bool,
}

impl Watched {
    /// One of the benchmark's own processes.
    pub fn of(process: &Proc) -> Self {
        Self {
            name: process.name.clone(),
            pid: process.pid,
            with_children: false,
        }
    }
}

/// What a watched process cost over a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    pub name: String,
    pub cpu_seconds: f64,
    /// The largest resident set of one process of the group seen while sampling.
    pub peak_rss_mb: f64,
    pub processes: usize,
}

/// Samples watched processes a few times a second until stopped.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Cost>>,
}

impl Monitor {
    pub fn start(watched: Vec<Watched>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            // Per pid: ticks at the start of the window (0 for a process born during it), the
            // last ticks seen, and the peak resident set.
            let mut seen: Vec<HashMap<i32, (u64, u64, u64)>> = vec![HashMap::new(); watched.len()];
            let mut first = true;
            loop {
                let done = flag.load(Ordering::SeqCst);
                let all: Vec<i32> = if watched.iter().any(|w| w.with_children) {
                    all_pids()
                } else {
                    Vec::new()
                };
                for (w, seen) in watched.iter().zip(seen.iter_mut()) {
                    let mut pids = vec![w.pid];
                    if w.with_children {
                        pids.extend(all.iter().copied().filter(|p| parent(*p) == Some(w.pid)));
                    }
                    for pid in pids {
                        let Some(s) = sample(pid) else { continue };
                        let entry = seen.entry(pid).or_insert((
                            if first { s.ticks } else { 0 },
                            s.ticks,
                            0,
                        ));
                        entry.1 = s.ticks;
                        entry.2 = entry.2.max(s.rss_bytes);
                    }
                }
                first = false;
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            watched
                .iter()
                .zip(seen)
                .map(|(w, seen)| Cost {
                    name: w.name.clone(),
                    cpu_seconds: seen
                        .values()
                        .map(|(start, last, _)| last.saturating_sub(*start))
                        .sum::<u64>() as f64
                        / TICKS_PER_SECOND,
                    peak_rss_mb: seen.values().map(|v| v.2).max().unwrap_or(0) as f64
                        / (1024.0 * 1024.0),
                    processes: seen.len(),
                })
                .collect()
        });
        Self { stop, task }
    }

    /// Takes a last sample and returns the costs.
    pub async fn finish(self) -> Vec<Cost> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("monitor task")
    }
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
