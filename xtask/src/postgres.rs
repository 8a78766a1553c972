//! A private Postgres cluster: initdb into the state folder, its own port, TCP on loopback only,
//! and one database and role per service.
//!
//! Postgres refuses to run as root. When xtask runs as root (CI containers), the cluster runs as
//! the `postgres` user (or `nobody`), and its data folder moves to /var/tmp when that user cannot
//! reach the state folder.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};

use crate::layout::Layout;

/// Service databases and their owning roles; `read` also gets a read-only `query_api` role.
pub const DATABASES: &[(&str, &str)] = &[
    ("orders", "orders"),
    ("inventory", "inventory"),
    ("payments", "payments"),
    ("orchestrator", "orchestrator"),
    ("read", "projections"),
];

/// The Postgres binary folder: from PATH, else the newest under /usr/lib/postgresql.
fn bin(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    for dir in versions.iter().rev() {
        let candidate = dir.join("bin").join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found: install the Postgres server binaries (e.g. apt-get install postgresql)"
    )
}

/// The unprivileged user to run Postgres as, when we are root.
fn run_as() -> anyhow::Result<Option<User>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = User::from_name(name)? {
            return Ok(Some(user));
        }
    }
    bail!("running as root, and neither a postgres nor a nobody user exists to run Postgres")
}

fn command(program: PathBuf, user: &Option<User>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(user) = user {
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .current_dir("/");
    }
    cmd
}

fn external_dir(layout: &Layout) -> PathBuf {
    // FNV-1a of the state folder: a stable, per-checkout place under /var/tmp.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in layout.root.to_string_lossy().bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    PathBuf::from(format!("/var/tmp/streamshop-{hash:016x}"))
}

/// Removes a data folder that had to live outside the state folder.
pub fn remove_external_data(layout: &Layout) -> anyhow::Result<()> {
    let dir = external_dir(layout);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// The cluster's folder (data, log), reachable by the user that runs Postgres.
fn cluster_dir(layout: &Layout, user: &Option<User>) -> anyhow::Result<PathBuf> {
    let inside = layout.root.join("postgres");
    let external = external_dir(layout);
    if external.exists() {
        return Ok(external);
    }
    let Some(user) = user else {
        std::fs::create_dir_all(&inside)?;
        return Ok(inside);
    };
    std::fs::create_dir_all(&inside)?;
    chown(&inside, user.uid, user.gid)?;
    let reachable = command("/bin/sh".into(), &Some(user.clone()))
        .args(["-c", "cd \"$1\" && touch .probe && rm .probe", "sh"])
        .arg(&inside)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if reachable {
        return Ok(inside);
    }
    std::fs::create_dir_all(&external)?;
    chown(&external, user.uid, user.gid)?;
    Ok(external)
}

fn chown(path: &Path, uid: Uid, gid: Gid) -> anyhow::Result<()> {
    nix::unistd::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))
}

/// Initialises (first time) and starts the cluster; a running cluster is left alone.
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    let user = run_as()?;
    let dir = cluster_dir(layout, &user)?;
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    if !data.join("PG_VERSION").exists() {
        println!("postgres: initdb {}", data.display());
        let out = command(bin("initdb")?, &user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut conf = format!(
            "\n# streamshop {}\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 400\nshared_buffers = 256MB\n",
            layout.name, layout.pg_port
        );
        if layout.statement_stats {
            conf.push_str("shared_preload_libraries = 'pg_stat_statements'\n");
        }
        if !layout.durable {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text)?;
    }
    if is_running(&data, &user) {
        println!("postgres: already running on port {}", layout.pg_port);
        return Ok(());
    }
    let status = command(bin("pg_ctl")?, &user)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        // The port on the command line wins over the one initdb wrote, so a cluster made
        // with other ports still comes up where this layout says.
        .args(["-o", &format!("-p {}", layout.pg_port)])
        .args(["-w", "-t", "60", "start"])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running pg_ctl start")?;
    if !status.success() {
        bail!(
            "Postgres did not start; see {}:\n{}",
            log.display(),
            crate::proc::tail(&log, 15)
        );
    }
    println!("postgres: running on port {}", layout.pg_port);
    Ok(())
}

fn is_running(data: &Path, user: &Option<User>) -> bool {
    let Ok(pg_ctl) = bin("pg_ctl") else {
        return false;
    };
    command(pg_ctl, user)
        .arg("-D")
        .arg(data)
        .arg("status")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The postmaster's pid, from `postmaster.pid` (first line), while the cluster runs.
pub fn postmaster_pid(layout: &Layout) -> Option<i32> {
    let user = run_as().ok()?;
    let data = cluster_dir(layout, &user).ok()?.join("data");
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

pub fn stop(layout: &Layout) {
    let Ok(user) = run_as() else { return };
    let dir = if external_dir(layout).exists() {
        external_dir(layout)
    } else {
        layout.root.join("postgres")
    };
    let data = dir.join("data");
    if !data.exists() || !is_running(&data, &user) {
        return;
    }
    if let Ok(pg_ctl) = bin("pg_ctl") {
        let _ = command(pg_ctl, &user)
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

pub fn status(layout: &Layout) {
    let up = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], layout.pg_port).into(),
        Duration::from_millis(500),
    )
    .is_ok();
    println!(
        "postgres     {:<8} {}",
        if up { "running" } else { "stopped" },
        layout.pg_admin_url()
    );
}

/// Creates each service's role and database (once), and the read-only role of the query API.
pub fn provision(layout: &Layout) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&layout.pg_admin_url())
            .await
            .context("connecting to the local cluster as postgres")?;
        let mut roles: Vec<&str> = DATABASES.iter().map(|(_, role)| *role).collect();
        roles.push("query_api");
        for role in roles {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                    .bind(role)
                    .fetch_one(&mut admin)
                    .await?;
            if !exists {
                sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
                    .execute(&mut admin)
                    .await?;
            }
        }
        for (db, owner) in DATABASES {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(db)
                    .fetch_one(&mut admin)
                    .await?;
            if !exists {
                sqlx::query(&format!("CREATE DATABASE {db} OWNER {owner}"))
                    .execute(&mut admin)
                    .await?;
                println!("postgres: created database {db} owned by {owner}");
            }
        }
        // The query API may read every table the projections create, and write none.
        let read_url = layout.pg_url("postgres", "read");
        let mut read = sqlx::PgConnection::connect(&read_url).await?;
        for sql in [
            "GRANT CONNECT ON DATABASE read TO query_api",
            "GRANT USAGE ON SCHEMA public TO query_api",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO query_api",
            "ALTER DEFAULT PRIVILEGES FOR ROLE projections GRANT SELECT ON TABLES TO query_api",
        ] {
            sqlx::query(sql).execute(&mut read).await?;
        }
        anyhow::Ok(())
    })
}
