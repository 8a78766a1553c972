//! `events export`: writes a selection to a file, atomically and resumably.
//!
//! Events go into numbered part files inside `<output>.partial/`. After each part is complete
//! and synced, `state.json` there records the parts, the event count and the last stream
//! sequence per stream. A broken run is resumed from that state (same format and selection);
//! a finished one joins the parts into `<output>.tmp` and renames it over `<output>`, so the
//! output is never seen half-written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::formats::{self, Format};
use crate::progress::Progress;
use crate::read::{self, Selection, Source};

/// How an export runs.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub output: PathBuf,
    /// Events per part file: what a crash can cost at most.
    pub part_events: u64,
    /// Discard a broken run's parts instead of resuming.
    pub restart: bool,
    /// Stops after this many parts, as a crash would (for tests of resuming).
    pub stop_after_parts: Option<u32>,
}

impl ExportOptions {
    /// Events per part file unless told otherwise (`--part-events`).
    pub const PART_EVENTS: u64 = 100_000;

    /// An export to `output` in `format`, resuming a broken run, in parts of
    /// [`Self::PART_EVENTS`].
    pub fn new(format: Format, output: PathBuf) -> Self {
        Self {
            format,
            output,
            part_events: Self::PART_EVENTS,
            restart: false,
            stop_after_parts: None,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Events in the output (or in the parts so far, when not complete).
    pub events: u64,
    /// Events that an earlier, broken run had already written.
    pub resumed: u64,
    /// Whether the output file was written.
    pub complete: bool,
}

/// What `<output>.partial/state.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    format: Option<Format>,
    selection: String,
    parts: u32,
    events: u64,
    /// The last stream sequence written per stream.
    positions: BTreeMap<String, u64>,
}

fn partial_dir(output: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial", output.display()))
}

fn part_path(dir: &Path, n: u32, extension: &str) -> PathBuf {
    dir.join(format!("part-{n:06}.{extension}"))
}

/// Writes `bytes` to `path` by way of a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn load_state(dir: &Path, options: &ExportOptions, selection: &Selection) -> anyhow::Result<State> {
    let path = dir.join("state.json");
    if options.restart && dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    if !path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        return Ok(State {
            format: Some(options.format),
            selection: selection.key(),
            ..State::default()
        });
    }
    let state: State = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    if state.format != Some(options.format) || state.selection != selection.key() {
        bail!(
            "{} holds a broken export of another format or selection; run again with --restart to discard it",
            dir.display()
        );
    }
    Ok(state)
}

/// Runs the export; see the module documentation.
pub async fn export(
    source: &Source,
    selection: &Selection,
    options: &ExportOptions,
    progress: Arc<Progress>,
) -> anyhow::Result<ExportReport> {
    let dir = partial_dir(&options.output);
    let mut state = load_state(&dir, options, selection)?;
    let resumed = state.events;
    if resumed > 0 {
        progress.warn(&format!(
            "resuming a broken export: {resumed} events in {} parts already written",
            state.parts
        ));
    }
    let extension = options.format.extension();

    let mut reading = read::spawn(source, selection, state.positions.clone(), progress);
    let mut part: Option<OpenPart> = None;
    while let Some(record) = reading.events.recv().await {
        let open = match part.as_mut() {
            Some(open) => open,
            None => part.insert(OpenPart::new(options.format, &dir, &state)?),
        };
        open.write(&record)?;
        if open.events >= options.part_events {
            if let Some(full) = part.take() {
                full.close(&dir, extension, &mut state)?;
            }
            if options.stop_after_parts.is_some_and(|n| state.parts >= n) {
                // Stopped as a crash would stop it: how the reader ends no longer matters.
                let _ = reading.finish().await;
                return Ok(ExportReport {
                    events: state.events,
                    resumed,
                    complete: false,
                });
            }
        }
    }
    reading.finish().await?;
    if let Some(last) = part {
        last.close(&dir, extension, &mut state)?;
    }

    let parts: Vec<PathBuf> = (1..=state.parts)
        .map(|n| part_path(&dir, n, extension))
        .collect();
    let tmp = PathBuf::from(format!("{}.tmp", options.output.display()));
    formats::assemble(options.format, &parts, &tmp)?;
    std::fs::rename(&tmp, &options.output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), options.output.display()))?;
    std::fs::remove_dir_all(&dir)?;
    Ok(ExportReport {
        events: state.events,
        resumed,
        complete: true,
    })
}

/// The part being written: its writer, how many events it holds, and the stream positions
/// the state will record once it is complete.
struct OpenPart {
    writer: Box<dyn formats::PartWriter>,
    events: u64,
    positions: BTreeMap<String, u64>,
}

impl OpenPart {
    /// Starts the next part as `part-N.tmp`; a leftover of a killed run is overwritten.
    fn new(format: Format, dir: &Path, state: &State) -> anyhow::Result<Self> {
        Ok(Self {
            writer: formats::part_writer(format, &part_path(dir, state.parts + 1, "tmp"))?,
            events: 0,
            positions: state.positions.clone(),
        })
    }

    fn write(&mut self, record: &crate::record::Record) -> anyhow::Result<()> {
        self.writer.write(record)?;
        self.positions
            .insert(record.stream.clone(), record.stream_sequence);
        self.events += 1;
        Ok(())
    }

    /// Completes the part: sync it, give it its final name, then record it in the state.
    fn close(self, dir: &Path, extension: &str, state: &mut State) -> anyhow::Result<()> {
        self.writer.finish()?;
        let n = state.parts + 1;
        std::fs::rename(part_path(dir, n, "tmp"), part_path(dir, n, extension))?;
        state.parts = n;
        state.events += self.events;
        state.positions = self.positions;
        write_atomically(&dir.join("state.json"), &serde_json::to_vec_pretty(state)?)
    }
}
