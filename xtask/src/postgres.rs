//! A private Postgres cluster: initdb into the state folder, its own port, TCP on loopback only,
//! password (SCRAM) authentication, and per service a database with an owner role that
//! migrates and a lesser role the service runs as.
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

pub use topology::{Database, DATABASES};

/// `pg_hba.conf`: TCP on loopback with SCRAM passwords only, no socket (the cluster listens on
/// none).
const HBA: &str = "# streamshop: passwords (SCRAM) on loopback only\n\
host all all 127.0.0.1/32 scram-sha-256\n\
host all all ::1/128 scram-sha-256\n";

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

/// The folder of the Postgres server binaries (`initdb`, `pg_ctl`, `postgres`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let pg_ctl = bin("pg_ctl")?;
    Ok(pg_ctl
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf))
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
        // The superuser's password reaches initdb in a file only the cluster's user reads,
        // removed once it has been read.
        let pwfile = dir.join(".pwfile");
        crate::secrets::write_private(
            &pwfile,
            crate::secrets::password(layout, "postgres")?.as_bytes(),
        )?;
        if let Some(user) = &user {
            chown(&pwfile, user.uid, user.gid)?;
        }
        let out = command(bin("initdb")?, &user)
            .arg("-D")
            .arg(&data)
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .output()
            .context("running initdb");
        let _ = std::fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            bail!("initdb failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(data.join("pg_hba.conf"), HBA)?;
        let mut conf = format!(
            "\n# streamshop {}\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 800\nshared_buffers = 256MB\n",
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
        return require_passwords(layout, &data, &user);
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
    require_passwords(layout, &data, &user)
}

/// A cluster made before passwords were required (it trusted every local connection) gets
/// its superuser's password set and SCRAM required from now on.
fn require_passwords(layout: &Layout, data: &Path, user: &Option<User>) -> anyhow::Result<()> {
    let hba = data.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap_or_default();
    if text == HBA {
        return Ok(());
    }
    println!("postgres: requiring passwords (SCRAM) from now on");
    let password = crate::secrets::password(layout, "postgres")?;
    let trusted = format!("postgres://postgres@127.0.0.1:{}/postgres", layout.pg_port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&trusted)
            .await
            .context("connecting to the old cluster, which trusts local connections")?;
        sqlx::query(&format!("ALTER ROLE postgres PASSWORD '{password}'"))
            .execute(&mut admin)
            .await?;
        anyhow::Ok(())
    })?;
    std::fs::write(&hba, HBA).with_context(|| format!("writing {}", hba.display()))?;
    let status = command(bin("pg_ctl")?, user)
        .arg("-D")
        .arg(data)
        .arg("reload")
        .stdout(std::process::Stdio::null())
        .status()
        .context("running pg_ctl reload")?;
    if !status.success() {
        bail!("pg_ctl reload failed");
    }
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
        layout.pg_url_shown("postgres", "postgres")
    );
}

/// Creates each service's roles and database (once), sets the roles' passwords from the
/// environment's secrets, and limits who may connect where: a role reaches only its own
/// database, and `postgres` and `template1` only the superuser.
pub fn provision(layout: &Layout) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&layout.pg_admin_url()?)
            .await
            .context("connecting to the local cluster as postgres")?;
        for role in DATABASES.iter().flat_map(|d| d.roles()) {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                    .bind(role)
                    .fetch_one(&mut admin)
                    .await?;
            let password = crate::secrets::password(layout, role)?;
            let verb = if exists { "ALTER" } else { "CREATE" };
            sqlx::query(&format!("{verb} ROLE {role} LOGIN PASSWORD '{password}'"))
                .execute(&mut admin)
                .await?;
        }
        sqlx::query("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")
            .execute(&mut admin)
            .await?;
        for db in DATABASES {
            let owner: Option<String> = sqlx::query_scalar(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            )
            .bind(db.name)
            .fetch_optional(&mut admin)
            .await?;
            let (name, owner_role) = (db.name, db.owner);
            match owner {
                None => {
                    sqlx::query(&format!("CREATE DATABASE {name} OWNER {owner_role}"))
                        .execute(&mut admin)
                        .await?;
                    println!("postgres: created database {name} owned by {owner_role}");
                }
                // Made when the service's own role owned it: its tables pass to the owner.
                Some(previous) if previous != owner_role => {
                    sqlx::query(&format!("ALTER DATABASE {name} OWNER TO {owner_role}"))
                        .execute(&mut admin)
                        .await?;
                    let mut inside =
                        sqlx::PgConnection::connect(&layout.pg_url("postgres", name)?).await?;
                    sqlx::query(&format!("REASSIGN OWNED BY {previous} TO {owner_role}"))
                        .execute(&mut inside)
                        .await?;
                    println!("postgres: database {name} now owned by {owner_role}");
                }
                Some(_) => {}
            }
            let connecting: Vec<&str> = [db.runtime, db.reader].into_iter().flatten().collect();
            let mut statements = vec![format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC")];
            if !connecting.is_empty() {
                statements.push(format!(
                    "GRANT CONNECT ON DATABASE {name} TO {}",
                    connecting.join(", ")
                ));
            }
            for sql in statements {
                sqlx::query(&sql).execute(&mut admin).await?;
            }
            let mut inside = sqlx::PgConnection::connect(&layout.pg_url("postgres", name)?).await?;
            let mut statements = vec!["REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned()];
            if !connecting.is_empty() {
                statements.push(format!(
                    "GRANT USAGE ON SCHEMA public TO {}",
                    connecting.join(", ")
                ));
            }
            // The reader may read every table the owner creates, in any schema (a rebuild
            // builds its tables elsewhere and moves them in), and write none.
            if let Some(reader) = db.reader {
                statements.push(format!(
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}"
                ));
                statements.push(format!(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner_role} GRANT SELECT ON TABLES TO {reader}"
                ));
            }
            for sql in statements {
                sqlx::query(&sql).execute(&mut inside).await?;
            }
        }
        anyhow::Ok(())
    })
}
