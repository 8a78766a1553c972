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
use tokio::sync::mpsc;

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

    // A bounded channel: the reader waits while the writer is busy.
    let (tx, mut rx) = mpsc::channel(1024);
    let reader = {
        let (source, selection) = (source.clone(), selection.clone());
        let (positions, progress) = (state.positions.clone(), progress.clone());
        tokio::spawn(
            async move { read::read(&source, &selection, &positions, tx, &progress).await },
        )
    };

    let mut writer = None;
    let mut in_part = 0;
    let mut positions = state.positions.clone();
    let mut stopped = false;
    while let Some(record) = rx.recv().await {
        if writer.is_none() {
            let tmp = part_path(&dir, state.parts + 1, "tmp");
            writer = Some(formats::part_writer(options.format, &tmp)?);
        }
        if let Some(w) = writer.as_mut() {
            w.write(&record)?;
        }
        positions.insert(record.stream.clone(), record.stream_sequence);
        in_part += 1;
        if in_part >= options.part_events {
            close_part(
                &dir,
                extension,
                &mut state,
                writer.take(),
                in_part,
                &positions,
            )?;
            in_part = 0;
            if options.stop_after_parts.is_some_and(|n| state.parts >= n) {
                stopped = true;
                break;
            }
        }
    }
    if stopped {
        drop(rx);
        let _ = reader.await;
        return Ok(ExportReport {
            events: state.events,
            resumed,
            complete: false,
        });
    }
    reader.await.context("the reader task")??;
    if in_part > 0 {
        close_part(
            &dir,
            extension,
            &mut state,
            writer.take(),
            in_part,
            &positions,
        )?;
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

/// Completes a part: sync it, give it its final name, then record it in the state.
fn close_part(
    dir: &Path,
    extension: &str,
    state: &mut State,
    writer: Option<Box<dyn formats::PartWriter>>,
    events: u64,
    positions: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let Some(writer) = writer else {
        return Ok(());
    };
    writer.finish()?;
    let n = state.parts + 1;
    std::fs::rename(part_path(dir, n, "tmp"), part_path(dir, n, extension))?;
    state.parts = n;
    state.events += events;
    state.positions = positions.clone();
    write_atomically(&dir.join("state.json"), &serde_json::to_vec_pretty(state)?)?;
    Ok(())
}
