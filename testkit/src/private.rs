//! Infrastructure private to one test, for the tests that kill it: a NATS server (the shared
//! one's configuration, identities and TLS, on ports and a store of its own) and a Postgres
//! cluster (initdb into a folder of its own). A test that uses them replaces the process's
//! [`Infra`](crate::Infra) with [`crate::use_infra`] before anything else reads it, so every
//! world, stack and service of that test runs on them. Use one such test per file: the
//! replacement is process-wide.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The environment's word for what `cargo xtask test` provides, or a clear panic.
pub(crate) fn provided(name: &str) -> PathBuf {
    service_kit::env::Env::from_process()
        .get(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run the tests with `cargo xtask test`"))
}

/// This process's share of the test ports, `(slot, slots)`: from `STREAMSHOP_TEST_PORT_SLOT`
/// (`i/n`, set by `cargo xtask test` for binaries it runs side by side), else the whole range.
pub(crate) fn port_slot() -> (u16, u16) {
    let env = service_kit::env::Env::from_process();
    let given = env.get("STREAMSHOP_TEST_PORT_SLOT");
    let parsed = given.and_then(|text| {
        let (slot, slots) = text.split_once('/')?;
        let (slot, slots) = (slot.parse::<u16>().ok()?, slots.parse::<u16>().ok()?);
        (slots > 0 && slots <= 16 && slot < slots).then_some((slot, slots))
    });
    match (given, parsed) {
        (_, Some(share)) => share,
        (None, None) => (0, 1),
        (Some(text), None) => {
            panic!("STREAMSHOP_TEST_PORT_SLOT={text} is not `i/n` with i < n <= 16")
        }
    }
}

/// A folder under the system's temporary folder, removed when the test's infrastructure is
/// dropped. Only its owner may enter it: a node's configuration there holds its routes'
/// password.
pub(crate) fn scratch(label: &str) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "streamshop-{label}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .expect("create a scratch folder");
    dir
}

/// Where one nats-server of a test listens and keeps its store and log.
pub(crate) struct NatsPlace<'a> {
    pub config: &'a Path,
    pub port: u16,
    pub monitor_port: u16,
    pub store: &'a Path,
    pub log: &'a Path,
}

/// Starts `nats-server -js` on loopback as `place` says, its log appended beside its store
/// rather than written into the test's output.
pub(crate) fn spawn_nats(place: &NatsPlace<'_>) -> Child {
    Command::new(provided("STREAMSHOP_TEST_NATS_SERVER"))
        .arg("-c")
        .arg(place.config)
        .args(["-js", "-a", "127.0.0.1"])
        .args(["-p", &place.port.to_string()])
        .args(["-m", &place.monitor_port.to_string()])
        .arg("-sd")
        .arg(place.store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(place.log))
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server")
}

/// SIGKILLs a nats-server and reaps it: nothing flushed, no client or peer told.
pub(crate) async fn kill9_nats(mut child: Child) {
    let pid = Pid::from_raw(child.id().expect("a pid") as i32);
    kill(pid, Signal::SIGKILL).expect("SIGKILL nats-server");
    let _ = child.wait().await;
}

/// A nats-server of this test's own, with JetStream stored on disk.
pub struct PrivateNats {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    store: PathBuf,
    /// Its configuration: the shared server's, or one written for it.
    config: PathBuf,
}

impl PrivateNats {
    /// Starts it with the shared server's configuration (permissions that hold in any
    /// namespace) and waits until JetStream is healthy.
    pub async fn start() -> Self {
        Self::start_on(provided("STREAMSHOP_TEST_NATS_CONFIG")).await
    }

    /// Starts it with the configuration of one deployment (no namespace: the streams are
    /// `ORDERS`, `INVENTORY`, …), so every permission names its stream exactly as in
    /// production, and `analyst_password` as the analysts' password.
    pub async fn start_deployment(analyst_password: &str) -> Self {
        use messaging::identity::{authorization, Scope};
        let keys = crate::infra()
            .nats_credentials
            .clone()
            .expect("the tests' NATS keys");
        let public = |name: &str| {
            let seed = messaging::settings::seed_in(&keys, name).expect("a test NATS key");
            nkeys::KeyPair::from_seed(&seed)
                .expect("a valid seed")
                .public_key()
        };
        let users = messaging::identity::users(
            topology::SERVICES,
            &Scope::Namespace(messaging::Namespace::default()),
            |name| Ok::<_, std::convert::Infallible>(public(name)),
            analyst_password,
        )
        .unwrap_or_else(|never| match never {});
        let mut text = authorization(&users);
        if let Some(tls) = &crate::infra().tls_dir {
            text.push_str(&messaging::server_config::tls_block(
                &tls.display().to_string(),
                "",
            ));
        }
        let dir = scratch("nats-config");
        let config = dir.join("nats.conf");
        write_private(&config, text.as_bytes());
        Self::start_on(config).await
    }

    async fn start_on(config: PathBuf) -> Self {
        let mut nats = Self {
            child: None,
            port: crate::free_port(),
            monitor_port: crate::free_port(),
            store: scratch("nats"),
            config,
        };
        nats.run().await;
        nats
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        self.child = Some(spawn_nats(&NatsPlace {
            config: &self.config,
            port: self.port,
            monitor_port: self.monitor_port,
            store: &self.store,
            log: &self.store.with_extension("log"),
        }));
        let url = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.monitor_port
        );
        crate::eventually(Duration::from_secs(30), "nats-server healthy", || async {
            let ok = reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
    }

    /// SIGKILL: nothing flushed, no client told.
    pub async fn kill9(&mut self) {
        kill9_nats(self.child.take().expect("nats-server is running")).await;
    }

    /// Starts it again on the same ports, with the store it had.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.run().await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
        let _ = std::fs::remove_file(self.store.with_extension("log"));
    }
}

/// Writes a file only its owner may read, created so (it may hold a password).
pub(crate) fn write_private(path: &Path, contents: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A log file to append to.
pub(crate) fn log_file(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .expect("open a log file")
}

/// A Postgres cluster of this test's own: passwords (SCRAM) on loopback only, as the shared
/// one. When the tests run as root, it runs as `postgres` (or `nobody`), since Postgres
/// refuses to run as root.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    owner: Option<nix::unistd::User>,
}

/// The superuser's password of a private cluster (it lives as long as the test).
const PASSWORD: &str = "private-test-password";

impl PrivatePostgres {
    /// initdb, then start; returns once it accepts connections.
    pub async fn start() -> Self {
        let owner = if nix::unistd::Uid::effective().is_root() {
            ["postgres", "nobody"]
                .into_iter()
                .find_map(|name| nix::unistd::User::from_name(name).ok().flatten())
        } else {
            None
        };
        let pg = Self {
            bin: provided("STREAMSHOP_TEST_PG_BIN"),
            dir: scratch("postgres"),
            port: crate::free_port(),
            owner,
        };
        if let Some(user) = &pg.owner {
            nix::unistd::chown(&pg.dir, Some(user.uid), Some(user.gid)).expect("chown");
        }
        let pwfile = pg.dir.join("pwfile");
        write_private(&pwfile, PASSWORD.as_bytes());
        if let Some(user) = &pg.owner {
            nix::unistd::chown(&pwfile, Some(user.uid), Some(user.gid)).expect("chown");
        }
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(pg.data())
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync"]);
        crate::stdout_of(&mut initdb, "initdb").await;
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
             max_connections = 200\nfsync = off\n",
            pg.port
        );
        let path = pg.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&path, text).expect("write postgresql.conf");
        pg.pg_ctl(&["-w", "-t", "60", "start"]).await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some(user) = &self.owner {
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .current_dir("/");
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    async fn pg_ctl(&self, args: &[&str]) {
        let log = self.dir.join("postgres.log");
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .await
            .expect("run pg_ctl");
        assert!(
            status.success(),
            "pg_ctl {args:?} failed; its log:\n{}",
            tail(&log)
        );
    }

    /// The superuser's URL of the maintenance database.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// `pg_ctl stop -m immediate`: every backend is killed at once, nothing is checkpointed,
    /// and the next start recovers from the WAL.
    pub async fn stop_immediate(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]).await;
    }

    /// Starts it again (crash recovery runs first).
    pub async fn start_again(&self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]).await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut stop = std::process::Command::new(self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &self.owner {
            stop.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last lines of a log, for a failure message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
