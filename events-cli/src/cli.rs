//! The command line: what each subcommand takes, and running it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use messaging::BoundedContext;

use crate::export::{self, ExportOptions};
use crate::fold::{self, AsOf};
use crate::formats::Format;
use crate::progress::Progress;
use crate::read::{self, End, Selection, Source, Start};
use crate::verify::{self, Targets};

/// Replay, export, time travel and verification over streamshop's event streams. Reads
/// JetStream only (verify also reads the databases it compares with).
#[derive(Debug, Parser)]
#[command(name = "events", version)]
pub struct Cli {
    /// The NATS server.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:24222",
        global = true
    )]
    pub nats_url: String,
    /// A folder holding the local CA (`ca.pem`) and the analysts' certificate
    /// (`analyst.crt`, `analyst.key`), for a NATS server that requires TLS (every stack of
    /// streamshop does; `cargo xtask up` keeps them in `.state/dev/tls`).
    #[arg(long, env = "TLS_DIR", global = true)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// The namespace the streams live in (empty in production).
    #[arg(long, env = "NATS_NAMESPACE", default_value = "", global = true)]
    pub namespace: String,
    /// No progress output on stderr (warnings still appear).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Show the fields the schemas mark sensitive (the payment token) as they are stored:
    /// sealed under the customer's data key (events written before sealing hold them in
    /// clear); by default they read "[redacted]". `verify` always compares them whole.
    #[arg(long, global = true)]
    pub include_sensitive: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print events as JSON lines, from the beginning (or --from-*) to now (or --to-*, or
    /// --follow).
    Replay(SelectionArgs),
    /// Print events as JSON lines as they arrive, from now (or --from-*).
    Tail(SelectionArgs),
    /// Write events to a file: JSON lines, CSV or Parquet. Atomic; resumes a broken run.
    Export(ExportArgs),
    /// An aggregate's state as of a version or a time, folded from its stream.
    State(StateArgs),
    /// Fold every aggregate from the streams and compare with the event stores and the read
    /// models; exit 1 when they differ.
    Verify(VerifyArgs),
    /// The projections' dead letters: list, replay after a fix, or discard (operators; shows
    /// `operator.crt` of --tls-dir to the projections service, not NATS).
    DeadLetters(crate::dead_letters::DeadLetterArgs),
}

/// Which events.
#[derive(Debug, Clone, Args)]
pub struct SelectionArgs {
    /// Streams to read: orders, inventory, payments, sagas (or ORDERS, ...). Default: all.
    #[arg(long = "stream", value_delimiter = ',')]
    pub streams: Vec<BoundedContext>,
    /// Start at this stream sequence.
    #[arg(long, conflicts_with = "from_time")]
    pub from_seq: Option<u64>,
    /// Start at the first event stored at or after this time (RFC 3339).
    #[arg(long)]
    pub from_time: Option<DateTime<Utc>>,
    /// Stop after this stream sequence.
    #[arg(long, conflicts_with_all = ["to_time", "follow"])]
    pub to_seq: Option<u64>,
    /// Stop after the last event stored at or before this time (RFC 3339).
    #[arg(long, conflicts_with = "follow")]
    pub to_time: Option<DateTime<Utc>>,
    /// Keep reading live events; stop with Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// Only these event types: a name (OrderPlaced) or a full type. Repeatable.
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only this aggregate's events (an order id, a SKU, ...).
    #[arg(long)]
    pub aggregate: Option<String>,
    /// Only events with this correlation id (the order id of the order flow).
    #[arg(long)]
    pub correlation: Option<String>,
}

impl SelectionArgs {
    fn selection(&self, default_start: Start, default_end: End) -> Selection {
        let start = match (self.from_seq, self.from_time) {
            (Some(seq), _) => Start::Sequence(seq),
            (_, Some(at)) => Start::Time(at),
            _ => default_start,
        };
        let end = match (self.to_seq, self.to_time, self.follow) {
            (Some(seq), _, _) => End::Sequence(seq),
            (_, Some(at), _) => End::Time(at),
            (_, _, true) => End::Follow,
            _ => default_end,
        };
        Selection {
            streams: if self.streams.is_empty() {
                BoundedContext::ALL.to_vec()
            } else {
                self.streams.clone()
            },
            start,
            end,
            types: self.types.clone(),
            aggregate: self.aggregate.clone(),
            correlation: self.correlation.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: Format,
    /// The file to write (replaced atomically when the export completes).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Events per part file: at most this much is redone after a crash.
    #[arg(long, default_value_t = ExportOptions::PART_EVENTS)]
    pub part_events: u64,
    /// Discard a broken run's parts instead of resuming them.
    #[arg(long)]
    pub restart: bool,
    #[command(flatten)]
    pub selection: SelectionArgs,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// The aggregate's stream: orders, inventory, payments or sagas.
    #[arg(long)]
    pub stream: BoundedContext,
    /// The aggregate id (an order id, a SKU, ...).
    #[arg(long)]
    pub aggregate: String,
    /// As of this version (aggregate sequence).
    #[arg(long, conflicts_with = "at_time")]
    pub at_version: Option<u64>,
    /// As of this time (RFC 3339): every event recorded at or before it.
    #[arg(long)]
    pub at_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An event store to compare with, as context=URL (orders, inventory, payments, sagas;
    /// sagas is the orchestrator's database). Repeatable.
    #[arg(long = "store", value_parser = parse_store)]
    pub stores: Vec<(BoundedContext, String)>,
    /// The projections' read database.
    #[arg(long)]
    pub read_database: Option<String>,
}

fn parse_store(value: &str) -> Result<(BoundedContext, String), String> {
    let (context, url) = value
        .split_once('=')
        .ok_or("expected context=URL, such as orders=postgres://...")?;
    Ok((context.parse()?, url.to_owned()))
}

/// Runs the command. `Ok` carries 0, or 1 when `verify` found differences; `main` exits 2
/// on an error.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Refused before anything is opened, so the answer does not depend on NATS being up.
    match &cli.command {
        Command::Tail(args) => anyhow::ensure!(
            args.to_seq.is_none() && args.to_time.is_none(),
            "tail follows live events; use replay for an end point"
        ),
        Command::Export(args) => anyhow::ensure!(
            !args.selection.follow,
            "an export needs an end: --follow never ends, so it would never be written"
        ),
        Command::DeadLetters(args) => {
            return crate::dead_letters::run(args, cli.tls_dir.as_deref()).await;
        }
        _ => {}
    }
    let tls = cli
        .tls_dir
        .as_ref()
        .map(|dir| service_kit::tls::TlsSettings::new(dir, messaging::Identity::ANALYST.name()));
    let mut source = Source::connect(&cli.nats_url, &cli.namespace, tls.as_ref()).await?;
    source.redact = !cli.include_sensitive && !matches!(cli.command, Command::Verify(_));
    match cli.command {
        Command::Replay(args) => {
            let selection = args.selection(Start::Beginning, End::Now);
            print_lines(&source, &selection, cli.quiet).await
        }
        Command::Tail(args) => {
            let selection = args.selection(Start::Now, End::Follow);
            print_lines(&source, &selection, true).await
        }
        Command::Export(args) => {
            let selection = args.selection.selection(Start::Beginning, End::Now);
            let progress = Arc::new(Progress::new("export", cli.quiet));
            let options = ExportOptions {
                part_events: args.part_events.max(1),
                restart: args.restart,
                ..ExportOptions::new(args.format, args.output.clone())
            };
            let report = export::export(&source, &selection, &options, progress.clone()).await?;
            progress.finish();
            eprintln!(
                "wrote {} events to {}{}",
                report.events,
                args.output.display(),
                if report.resumed > 0 {
                    format!(" ({} from the broken run)", report.resumed)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::State(args) => {
            let as_of = match (args.at_version, args.at_time) {
                (Some(v), _) => AsOf::Version(v),
                (_, Some(t)) => AsOf::Time(t),
                _ => AsOf::Latest,
            };
            let progress = Arc::new(Progress::new("state", true));
            // Folded from events read through `source`, which redacted them already.
            let state = fold::state(&source, args.stream, &args.aggregate, as_of, progress).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let targets = Targets {
                stores: args.stores.into_iter().collect(),
                read_models: args.read_database,
            };
            let progress = Arc::new(Progress::new("verify: reading the streams", cli.quiet));
            let report = verify::verify(&source, &targets, progress).await?;
            for difference in &report.differences {
                println!("{difference}");
            }
            for skipped in &report.skipped {
                eprintln!("not compared: {skipped}");
            }
            eprintln!(
                "{} aggregates, {} events ({} re-published duplicates skipped): {} differences",
                report.aggregates,
                report.events,
                report.duplicates,
                report.differences.len()
            );
            Ok(if report.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::DeadLetters(_) => unreachable!("answered before NATS is opened"),
    }
}

/// Prints the selection as JSON lines on stdout; a closed pipe (`| head`) ends it quietly.
async fn print_lines(
    source: &Source,
    selection: &Selection,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let progress = Arc::new(Progress::new("replay", quiet));
    let mut reading = read::spawn(source, selection, BTreeMap::new(), progress.clone());
    let live = selection.end == End::Follow;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(record) = reading.events.recv().await {
        let written = serde_json::to_writer(&mut out, &record.to_json())
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| if live { out.flush() } else { Ok(()) });
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
    }
    out.flush()?;
    reading.finish().await?;
    progress.finish();
    Ok(ExitCode::SUCCESS)
}
