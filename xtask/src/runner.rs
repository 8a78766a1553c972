//! Runs the suite's test binaries side by side: `cargo test --no-run` builds them, then two
//! run at a time, each with a share of the test ports of its own, and each one's output is
//! printed whole when it ends, so the log reads as `cargo test`'s does. The tests wait on
//! servers and clocks far more than they compute, so one binary at a time leaves half of a
//! 2-core machine idle.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::Context;

/// How many test binaries run at once.
pub const WORKERS: u16 = 2;

/// One test binary `cargo test` would run.
#[derive(Debug)]
pub struct Binary {
    /// The package's folder, relative to the workspace (`command-services/orders`).
    package: String,
    /// The target's source, relative to the package (`tests/it/main.rs`, `src/lib.rs`).
    source: String,
    path: PathBuf,
    dir: PathBuf,
}

impl Binary {
    /// A system test that loads the whole machine: a three-node cluster, the burst of 500
    /// orders through two replicas (`tests/sagas.rs`), or `cargo xtask up` and `up --cluster`
    /// (`tests/getting_started.rs`); or one whose recovery is timed and which such a test
    /// starves (`tests/nats_restart.rs` timed out beside a cluster test and passed alone).
    /// Two of them never run side by side, or each would starve the other of CPU and
    /// database connections.
    fn loads_the_machine(&self) -> bool {
        self.package == "system-tests"
            && (self.source.starts_with("tests/cluster_")
                || matches!(
                    self.source.as_str(),
                    "tests/sagas.rs" | "tests/getting_started.rs" | "tests/nats_restart.rs"
                ))
    }

    fn label(&self) -> String {
        format!("{} {}", self.package, self.source)
    }
}

/// Builds every test binary (`cargo test --no-run` with `cargo_args`) and lists them,
/// the tests that load the whole machine first so that they are spread over the run.
pub fn build(workspace: &Path, cargo_args: &[String]) -> anyhow::Result<Vec<Binary>> {
    let mut cmd = crate::layout::cargo();
    cmd.args([
        "test",
        "--workspace",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .args(cargo_args)
    .current_dir(workspace)
    .stdout(std::process::Stdio::piped());
    println!("xtask: {cmd:?}");
    let mut child = cmd.spawn().context("running cargo test --no-run")?;
    let stdout = child.stdout.take().context("cargo test --no-run stdout")?;
    let mut binaries = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        if let Some(binary) = artifact(workspace, &line?) {
            binaries.push(binary);
        }
    }
    anyhow::ensure!(
        child.wait()?.success(),
        "the tests do not build (see above)"
    );
    binaries.sort_by_key(|b| !b.loads_the_machine());
    Ok(binaries)
}

/// The test binary a line of cargo's JSON messages announces, if it announces one.
fn artifact(workspace: &Path, line: &str) -> Option<Binary> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
        return None;
    }
    let path = PathBuf::from(message["executable"].as_str()?);
    let dir = Path::new(message["manifest_path"].as_str()?).parent()?;
    let source = Path::new(message["target"]["src_path"].as_str()?);
    let relative = |p: &Path, base: &Path| {
        p.strip_prefix(base)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    Some(Binary {
        package: relative(dir, workspace),
        source: relative(source, dir),
        path,
        dir: dir.to_owned(),
    })
}

/// What the binaries' `test result:` lines add up to.
#[derive(Default, Debug, PartialEq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Totals {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds a line such as `test result: ok. 4 passed; 0 failed; 1 ignored; ...`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, passing its output through, and totals its test results.
pub fn run_counting(
    cmd: &mut std::process::Command,
) -> anyhow::Result<(std::process::ExitStatus, Totals)> {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    Ok((child.wait()?, totals))
}

/// The queue the workers take from, and whether a test that loads the whole machine runs.
struct Queue {
    waiting: VecDeque<Binary>,
    heavy_running: bool,
}

/// What the run has found so far.
#[derive(Default)]
struct Outcome {
    /// The results of the binaries that passed.
    totals: Totals,
    /// The binaries that failed, with their results.
    failed: Vec<(Binary, Totals)>,
}

/// Runs `binaries`, [`WORKERS`] at a time, each in its package's folder with `env`; true
/// when every one passed. Output files go to `logs`.
pub fn run(
    binaries: Vec<Binary>,
    env: &[(&'static str, OsString)],
    logs: &Path,
) -> anyhow::Result<(bool, Totals)> {
    std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
    let count = binaries.len();
    let queue = Mutex::new(Queue {
        waiting: binaries.into(),
        heavy_running: false,
    });
    let turn = Condvar::new();
    let outcome = Mutex::new(Outcome::default());
    let started = Instant::now();
    println!("xtask: running {count} test binaries, {WORKERS} at a time");
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|slot| {
                let (queue, turn, outcome) = (&queue, &turn, &outcome);
                scope.spawn(move || -> anyhow::Result<()> {
                    while let Some(binary) = next(queue, turn) {
                        let result = run_one(&binary, slot, env, logs);
                        if binary.loads_the_machine() {
                            lock(queue).heavy_running = false;
                            turn.notify_all();
                        }
                        report(binary, result?, outcome);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a test worker panicked"))
    })?;
    let Outcome { mut totals, failed } = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
    println!(
        "xtask: {count} test binaries ran in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // A binary that failed beside another runs once more, alone: a failure that does not
    // come back then was the machine's load, and is reported as flaky rather than hidden.
    let (mut flaky, mut still_failing) = (Vec::new(), Vec::new());
    for (binary, _first) in failed {
        println!(
            "xtask: {} failed beside another binary; running it again, alone",
            binary.label()
        );
        let ran = run_one(&binary, 0, env, logs)?;
        let again = print(&binary, &ran);
        totals.add(&again);
        if ran.success {
            flaky.push(binary.label());
        } else {
            still_failing.push(binary.label());
        }
    }
    for label in &flaky {
        println!("xtask: FLAKY {label}: failed beside another binary, passed alone");
    }
    for label in &still_failing {
        println!("xtask: FAILED {label}");
    }
    Ok((still_failing.is_empty(), totals))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next binary this worker may run, waiting while only tests that load the whole machine
/// are left and one of them is running; `None` when the queue is empty.
fn next(queue: &Mutex<Queue>, turn: &Condvar) -> Option<Binary> {
    let mut q = lock(queue);
    loop {
        if q.waiting.is_empty() {
            return None;
        }
        let busy = q.heavy_running;
        if let Some(i) = q
            .waiting
            .iter()
            .position(|b| !(busy && b.loads_the_machine()))
        {
            let binary = q.waiting.remove(i)?;
            q.heavy_running |= binary.loads_the_machine();
            return Some(binary);
        }
        q = turn.wait(q).unwrap_or_else(|e| e.into_inner());
    }
}

/// How one binary ended: its exit status, its output and how long it took.
struct Ran {
    success: bool,
    output: String,
    seconds: f64,
}

/// Runs one binary with its stdout and stderr in one file, as a terminal would show them.
fn run_one(
    binary: &Binary,
    slot: u16,
    env: &[(&'static str, OsString)],
    logs: &Path,
) -> anyhow::Result<Ran> {
    let log = logs.join(format!(
        "{}.log",
        binary
            .path
            .file_name()
            .map_or_else(|| "test".into(), |n| n.to_string_lossy())
    ));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    println!("     Started {}", binary.label());
    let began = Instant::now();
    let status = std::process::Command::new(&binary.path)
        .current_dir(&binary.dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("STREAMSHOP_TEST_PORT_SLOT", format!("{slot}/{WORKERS}"))
        .env("CARGO_MANIFEST_DIR", &binary.dir)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("running {}", binary.path.display()))?;
    let output = String::from_utf8_lossy(&std::fs::read(&log)?).into_owned();
    Ok(Ran {
        success: status.success(),
        output,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// Prints a binary's whole output under cargo's heading for it, and counts its results.
fn report(binary: Binary, ran: Ran, outcome: &Mutex<Outcome>) {
    let mut outcome = lock(outcome);
    let totals = print(&binary, &ran);
    if ran.success {
        outcome.totals.add(&totals);
    } else {
        outcome.failed.push((binary, totals));
    }
}

/// Prints a binary's output under cargo's heading for it; its results.
fn print(binary: &Binary, ran: &Ran) -> Totals {
    println!(
        "     Running {} ({}) in {:.0}s",
        binary.label(),
        binary.path.display(),
        ran.seconds
    );
    let mut totals = Totals::default();
    for line in ran.output.lines() {
        println!("{line}");
        totals.add_line(line);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines_are_totalled() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.04s");
        t.add_line(
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 4 tests");
        assert_eq!(
            t,
            Totals {
                passed: 6,
                failed: 3,
                ignored: 1
            }
        );
    }

    fn binary(package: &str, source: &str) -> Binary {
        Binary {
            package: package.into(),
            source: source.into(),
            path: PathBuf::from("/bin/true"),
            dir: PathBuf::from("/"),
        }
    }

    #[test]
    fn a_binary_that_fails_beside_another_runs_again_alone_and_is_called_flaky() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-runner-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        // Fails on its first run, passes on its second; the other binary always fails.
        let write = |name: &str, body: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            Binary {
                package: "p".into(),
                source: name.into(),
                path,
                dir: dir.clone(),
            }
        };
        let flaky = write(
            "flaky",
            "if [ -e ran ]; then echo 'test result: ok. 1 passed; 0 failed; 0 ignored'; exit 0; fi\n\
             touch ran; echo 'test result: FAILED. 0 passed; 1 failed; 0 ignored'; exit 1",
        );
        let (passed, totals) = run(vec![flaky], &[], &dir.join("logs")).unwrap();
        assert!(passed);
        assert_eq!((totals.passed, totals.failed), (1, 0));
        let broken = write(
            "broken",
            "echo 'test result: FAILED. 0 passed; 1 failed; 0 ignored'; exit 1",
        );
        let (passed, totals) = run(vec![broken], &[], &dir.join("logs")).unwrap();
        assert!(!passed);
        assert_eq!((totals.passed, totals.failed), (0, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cluster_test_waits_while_another_runs_and_others_pass_it_by() {
        let queue = Mutex::new(Queue {
            waiting: [
                binary("system-tests", "tests/cluster_a.rs"),
                binary("system-tests", "tests/cluster_b.rs"),
                binary("orders", "tests/it/main.rs"),
            ]
            .into(),
            heavy_running: false,
        });
        let turn = Condvar::new();
        let first = next(&queue, &turn).unwrap();
        assert_eq!(first.source, "tests/cluster_a.rs");
        let second = next(&queue, &turn).unwrap();
        assert_eq!(second.package, "orders", "cluster_b waits for cluster_a");
        lock(&queue).heavy_running = false;
        let third = next(&queue, &turn).unwrap();
        assert_eq!(third.source, "tests/cluster_b.rs");
        assert!(next(&queue, &turn).is_none());
    }

    #[test]
    fn cargo_s_artifact_messages_name_the_test_binaries_only() {
        let ws = Path::new("/w");
        let test = r#"{"reason":"compiler-artifact","manifest_path":"/w/command-services/orders/Cargo.toml","target":{"src_path":"/w/command-services/orders/tests/it/main.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/it-1"}"#;
        let b = artifact(ws, test).unwrap();
        assert_eq!(b.label(), "command-services/orders tests/it/main.rs");
        assert_eq!(b.dir, Path::new("/w/command-services/orders"));
        let bin = r#"{"reason":"compiler-artifact","manifest_path":"/w/orders/Cargo.toml","target":{"src_path":"/w/orders/src/main.rs"},"profile":{"test":false},"executable":"/w/target/debug/orders"}"#;
        assert!(artifact(ws, bin).is_none());
        assert!(artifact(ws, r#"{"reason":"build-finished","success":true}"#).is_none());
        assert!(artifact(ws, "Compiling orders").is_none());
    }
}
