//! `cargo xtask`: runs the whole stack locally and the test suite, with nothing installed by
//! hand beyond Rust, Python 3 with pip and the Postgres server binaries.
#![forbid(unsafe_code)]

mod bench;
mod compose_keys;
mod docs;
mod generate;
mod k8s_secrets;
mod layout;
mod mail;
mod nats;
mod npm;
mod oidc;
mod postgres;
mod proc;
mod python;
mod runner;
mod secrets;
mod services;
mod stripe;
mod tls;

#[cfg(test)]
mod compose_check;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::layout::Layout;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Run streamshop locally and test it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start Postgres, NATS and every service (idempotent); print the URLs.
    Up {
        /// Build and run the services in release mode.
        #[arg(long)]
        release: bool,
        /// Three nats-server nodes as one JetStream cluster (R3 streams) and two replicas of
        /// every service, with state in .state/cluster (instead of the one-node stack).
        #[arg(long)]
        cluster: bool,
    },
    /// Stop every service, NATS and Postgres of either stack (state is kept).
    Down,
    /// Show what is running.
    Status,
    /// Stop everything and delete all local state (databases, streams, logs).
    Reset,
    /// Start fresh test infrastructure and run the whole test suite (with fmt and clippy).
    Test {
        /// Leave the test Postgres and NATS running afterwards.
        #[arg(long)]
        keep: bool,
        /// Only the tests that need no infrastructure (unit and domain tests, the docs' links):
        /// no Postgres, NATS or tool is started or installed.
        #[arg(long, conflicts_with = "keep")]
        quick: bool,
        /// Arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Build the book under docs/ with mdBook (installed on first use) into target/book,
    /// after checking every link of the repository's Markdown.
    Docs,
    /// Print an access token from the local OpenID provider, for curl against the gateway.
    Token {
        /// A customer's token: this UUID is its `sub`.
        #[arg(
            long,
            value_name = "UUID",
            conflicts_with = "admin",
            required_unless_present = "admin"
        )]
        customer: Option<String>,
        /// An operator's token (the `admin` scope).
        #[arg(long)]
        admin: bool,
    },
    /// Write the files made from the topology (topology/src/lib.rs): docker-compose.yml, the
    /// compose stack's Postgres init script and Prometheus targets.
    Generate,
    /// Write the compose stack's NATS configuration (docker/nats/nats.conf) from the
    /// identities' permissions, making development keys that are missing.
    ComposeKeys,
    /// Print the analysts' NATS URL of `cargo xtask up` (read-only; for `events` and notebooks).
    AnalystUrl,
    /// Make every Secret of the Kubernetes manifests and apply it with kubectl (or print it):
    /// from fresh material kept in .state/k8s/<namespace>, unless --dev.
    K8sSecrets {
        /// Print the Secrets as YAML instead of applying them (no cluster needed).
        #[arg(long)]
        print: bool,
        #[arg(long, default_value = "streamshop")]
        namespace: String,
        /// Use the committed development keys and passwords of the compose stack (a laptop's
        /// cluster only; refused for the production overlay).
        #[arg(long)]
        dev: bool,
        /// The overlay the Secrets are for: `production` refuses any material the repository
        /// holds.
        #[arg(long, default_value = "local")]
        overlay: String,
        /// Where the fresh material is kept (default .state/k8s/<namespace>).
        #[arg(long)]
        state: Option<std::path::PathBuf>,
        /// A file holding the payments service's Stripe secret key (sk_test_… for test
        /// mode); required by the production overlay, a placeholder otherwise.
        #[arg(long)]
        stripe_secret_key_file: Option<std::path::PathBuf>,
    },
    /// Benchmark release builds on a fresh durable cluster; writes .state/bench-report/.
    Bench {
        /// Arguments passed to `loadgen run` (after `--`), e.g. `--figures commands --repeats 1`.
        #[arg(last = true)]
        loadgen_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up { release, cluster } => up(release, cluster),
        Command::Down => down(),
        Command::Status => status(),
        Command::Reset => reset(),
        Command::Test {
            quick: true,
            cargo_args,
            ..
        } => quick_test(&cargo_args),
        Command::Test {
            keep, cargo_args, ..
        } => test(keep, &cargo_args),
        Command::Docs => docs::build().map(|()| ExitCode::SUCCESS),
        Command::Generate => generate_files(),
        Command::Token { customer, admin } => token(customer.as_deref(), admin),
        Command::Bench { loadgen_args } => bench::run(&loadgen_args),
        Command::ComposeKeys => compose_keys(),
        Command::AnalystUrl => analyst_url(),
        Command::K8sSecrets {
            print,
            namespace,
            dev,
            overlay,
            state,
            stripe_secret_key_file,
        } => Layout::dev().and_then(|layout| {
            k8s_secrets::run(
                &layout.workspace,
                &k8s_secrets::Options {
                    namespace,
                    dev,
                    overlay,
                    print,
                    state,
                    stripe_secret_key_file,
                },
            )
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(release: bool, cluster: bool) -> anyhow::Result<ExitCode> {
    let layout = if cluster {
        Layout::cluster()?
    } else {
        Layout::dev()?
    };
    // The two stacks share the services' and the OpenID provider's ports.
    for other in Layout::runnable()?.iter().filter(|l| l.name != layout.name) {
        if services::any_running(other)
            || nats::running(other)
            || oidc::HELPER.running(other)
            || stripe::HELPER.running(other)
            || mail::HELPER.running(other)
        {
            anyhow::bail!(
                "the {} stack is running and uses the same ports: `cargo xtask down` first",
                other.name
            );
        }
    }
    postgres::start(&layout)?;
    postgres::provision(&layout)?;
    nats::start(&layout)?;
    oidc::install(&layout)?;
    oidc::start(&layout)?;
    stripe::start(&layout)?;
    mail::start(&layout)?;
    let bins = services::build(&layout, release, &[])?;
    services::start_all(&layout, &bins)?;
    services::print_urls(&layout);
    Ok(ExitCode::SUCCESS)
}

fn compose_keys() -> anyhow::Result<ExitCode> {
    compose_keys::write(&Layout::dev()?.workspace)?;
    Ok(ExitCode::SUCCESS)
}

/// The stack `up` runs now: the cluster while its NATS runs, else the one-node stack.
fn running_stack() -> anyhow::Result<Layout> {
    let cluster = Layout::cluster()?;
    if nats::running(&cluster) || oidc::HELPER.running(&cluster) {
        Ok(cluster)
    } else {
        Layout::dev()
    }
}

fn analyst_url() -> anyhow::Result<ExitCode> {
    println!("{}", nats::analyst_url(&running_stack()?)?);
    Ok(ExitCode::SUCCESS)
}

fn token(customer: Option<&str>, admin: bool) -> anyhow::Result<ExitCode> {
    oidc::token(&running_stack()?, customer, admin)?;
    Ok(ExitCode::SUCCESS)
}

fn down() -> anyhow::Result<ExitCode> {
    for layout in Layout::runnable()? {
        services::stop_all(&layout);
        mail::HELPER.stop(&layout);
        stripe::HELPER.stop(&layout);
        oidc::HELPER.stop(&layout);
        nats::stop(&layout);
        postgres::stop(&layout);
    }
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn status() -> anyhow::Result<ExitCode> {
    let layout = running_stack()?;
    if layout.name == "cluster" {
        println!("the cluster stack (cargo xtask up --cluster):");
    }
    postgres::status(&layout);
    nats::status(&layout);
    oidc::status(&layout);
    stripe::status(&layout);
    mail::status(&layout);
    services::status(&layout);
    Ok(ExitCode::SUCCESS)
}

fn reset() -> anyhow::Result<ExitCode> {
    let [dev, cluster] = Layout::runnable()?;
    let test = Layout::test()?;
    let bench = Layout::bench()?;
    for layout in [&dev, &cluster, &test, &bench] {
        services::stop_all(layout);
        mail::HELPER.stop(layout);
        stripe::HELPER.stop(layout);
        oidc::HELPER.stop(layout);
        nats::stop(layout);
        postgres::stop(layout);
        layout.remove_state()?;
    }
    println!("all local state removed");
    Ok(ExitCode::SUCCESS)
}

fn test(keep: bool, cargo_args: &[String]) -> anyhow::Result<ExitCode> {
    let layout = Layout::test()?;
    // A fresh cluster and NATS store every run: no state leaks between runs.
    nats::stop(&layout);
    postgres::stop(&layout);
    layout.remove_state()?;
    let layout = layout.with_free_ports()?;
    postgres::start(&layout)?;
    nats::start(&layout)?;
    // The tools the tests use install while fmt and clippy run: pip and npm wait on the
    // network, clippy on the CPU.
    let (tools, linted) = std::thread::scope(|scope| {
        let tools = scope.spawn(|| -> anyhow::Result<[std::path::PathBuf; 3]> {
            let paths = [
                python::test_packages(&layout)?,
                python::deploy_packages(&layout)?,
                python::stripe_packages(&layout)?,
            ];
            // The tests start their own OpenID providers and SMTP sinks from these packages.
            oidc::install(&layout)?;
            mail::install(&layout)?;
            Ok(paths)
        });
        let linted = fmt_check(&layout.workspace)
            .and_then(|formatted| Ok(clippy(&layout.workspace)? && formatted));
        (
            tools.join().expect("installing the test tools panicked"),
            linted,
        )
    });
    let stop = |layout: &Layout| {
        if !keep {
            nats::stop(layout);
            postgres::stop(layout);
        }
    };
    let (tools, linted) = match (tools, linted) {
        (Ok(tools), Ok(linted)) => (tools, linted),
        (Err(e), _) | (_, Err(e)) => {
            stop(&layout);
            return Err(e);
        }
    };
    let mut code = if linted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };

    // The cluster's tests run every service as a process of its own: they need the
    // binaries, which `cargo test` builds only for their own packages' tests.
    let bins = match services::build(&layout, false, &[]) {
        Ok(bins) => bins,
        Err(e) => {
            // The code does not build: nothing to test, and nothing left running.
            stop(&layout);
            return Err(e);
        }
    };
    let [python_path, deploy_python_path, stripe_python_path] = &tools;
    let env = test_env(
        &layout,
        [python_path, deploy_python_path, stripe_python_path],
        &bins,
    )?;
    if keep {
        // What a plain `cargo test` needs afterwards, in one file to source.
        let file = layout.root.join("env");
        let text: String = env
            .iter()
            .map(|(k, v)| shell_export(k, &v.to_string_lossy()))
            .collect();
        secrets::write_private(&file, text.as_bytes())?;
        println!(
            "xtask: the test environment is in {0}: `source {0}` and run `cargo test` yourself",
            file.display()
        );
    }

    let (passed, totals) = if cargo_args.is_empty() {
        // The whole suite: every test binary, two at a time.
        let binaries = match runner::build(&layout.workspace, &[]) {
            Ok(binaries) => binaries,
            Err(e) => {
                stop(&layout);
                return Err(e);
            }
        };
        runner::run(binaries, &env, &layout.root.join("runs"))?
    } else {
        // A narrowed run (`-- -p orders`, a test name): `cargo test` as asked, one binary
        // at a time.
        let narrowed = cargo_args
            .iter()
            .any(|a| a == "-p" || a.starts_with("--package"));
        let mut cargo_test = layout::cargo();
        cargo_test.arg("test");
        if !narrowed {
            cargo_test.arg("--workspace");
        }
        println!("xtask: {cargo_test:?}");
        let (status, totals) = runner::run_counting(
            cargo_test
                .args(cargo_args)
                .envs(env)
                .current_dir(&layout.workspace),
        )?;
        (status.success(), totals)
    };
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !passed {
        code = ExitCode::FAILURE;
    }
    stop(&layout);
    Ok(code)
}

fn generate_files() -> anyhow::Result<ExitCode> {
    let workspace = Layout::dev()?.workspace;
    let written = generate::write(&workspace)?;
    for path in &written {
        println!("generate: wrote {}", path.display());
    }
    if written.is_empty() {
        println!("generate: every generated file is up to date");
    }
    Ok(ExitCode::SUCCESS)
}

/// `export NAME='value'` for sh: single-quoted, a quote in the value closed and reopened
/// around it, so a password with any character survives `source`.
fn shell_export(name: &str, value: &str) -> String {
    format!("export {name}='{}'\n", value.replace('\'', "'\\''"))
}

/// The environment the tests read (`testkit::Infra`): where the test Postgres, NATS, tools and
/// service binaries are.
fn test_env(
    layout: &Layout,
    [python, deploy_python, stripe_python]: [&std::path::Path; 3],
    bins: &std::path::Path,
) -> anyhow::Result<Vec<(&'static str, std::ffi::OsString)>> {
    Ok(vec![
        ("STREAMSHOP_TEST_PG_URL", layout.pg_admin_url()?.into()),
        ("STREAMSHOP_TEST_NATS_URL", layout.nats_url().into()),
        (
            "STREAMSHOP_TEST_NATS_CREDENTIALS",
            nats::credentials_dir(layout).into(),
        ),
        (
            "STREAMSHOP_TEST_NATS_ANALYST_URL",
            nats::analyst_url(layout)?.into(),
        ),
        ("STREAMSHOP_TEST_PYTHONPATH", python.into()),
        ("STREAMSHOP_TEST_DEPLOY_PYTHONPATH", deploy_python.into()),
        ("STREAMSHOP_TEST_STRIPE_PYTHONPATH", stripe_python.into()),
        ("STREAMSHOP_TEST_TLS_DIR", tls::dir(layout).into()),
        // What a test needs to run a NATS server or a Postgres cluster of its own, to kill
        // and restart it without disturbing the others.
        ("STREAMSHOP_TEST_NATS_SERVER", nats::binary(layout)?.into()),
        (
            "STREAMSHOP_TEST_NATS_CONFIG",
            nats::config_path(layout).into(),
        ),
        ("STREAMSHOP_TEST_PG_BIN", postgres::bin_dir()?.into()),
        ("STREAMSHOP_TEST_BIN_DIR", bins.into()),
        // This very binary, for the tests that run an xtask command (make-secrets.sh).
        (
            "STREAMSHOP_XTASK",
            std::env::current_exe()
                .context("finding the xtask binary")?
                .into(),
        ),
    ])
}

/// `cargo xtask test --quick`: formatting and every test that needs no Postgres, NATS or
/// tool (the libraries' and binaries' own tests, which include the domain's and the docs'
/// link check), on a fresh clone in well under a minute once built.
fn quick_test(cargo_args: &[String]) -> anyhow::Result<ExitCode> {
    let workspace = Layout::test()?.workspace;
    let formatted = fmt_check(&workspace)?;
    let mut cargo_test = layout::cargo();
    cargo_test.args(["test", "--workspace", "--lib", "--bins"]);
    println!("xtask: {cargo_test:?}");
    let (tests, totals) =
        runner::run_counting(cargo_test.args(cargo_args).current_dir(&workspace))?;
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(if formatted && tests.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo fmt --check`; false (and how to fix it) when a file is not formatted.
fn fmt_check(workspace: &std::path::Path) -> anyhow::Result<bool> {
    cargo_passes(
        workspace,
        &["fmt", "--all", "--", "--check"],
        "cargo fmt --check failed: run `cargo fmt --all`",
    )
}

/// Clippy over every target with warnings as errors, as CI runs it.
fn clippy(workspace: &std::path::Path) -> anyhow::Result<bool> {
    cargo_passes(
        workspace,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        "cargo clippy found problems (see above)",
    )
}

/// Runs `cargo <args>` in `workspace`; false, and `failed` said, when it does not pass.
fn cargo_passes(workspace: &std::path::Path, args: &[&str], failed: &str) -> anyhow::Result<bool> {
    let mut cmd = layout::cargo();
    cmd.args(args).current_dir(workspace);
    println!("xtask: {cmd:?}");
    let passed = cmd
        .status()
        .with_context(|| format!("running cargo {}", args[0]))?
        .success();
    if !passed {
        eprintln!("xtask: {failed}");
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_exported_value_survives_the_shell_whatever_it_holds() {
        let value = "p'w $HOME \"x\" `id`";
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("{}printf %s \"$V\"", super::shell_export("V", value)),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }
}
