//! `--traces`: the services export their spans to a receiver in the load generator, and the
//! slowest sagas' traces are laid out as timelines, with the gaps where no span ran (time
//! spent queued, in flight, or waiting for a poll), to explain where a slow saga waited.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use testkit::otlp::{ReceivedSpan, Receiver};

/// How many of the slowest traces are written out.
const SLOWEST: usize = 12;
/// Gaps shorter than this are not worth a line.
const GAP_MS: f64 = 3.0;

/// One trace's spans, by start.
struct Trace {
    spans: Vec<ReceivedSpan>,
    start: u64,
    end: u64,
}

impl Trace {
    fn millis(&self) -> f64 {
        (self.end - self.start) as f64 / 1e6
    }

    /// Stretches of the trace in which no span was open: (start offset, length), in ms.
    fn gaps(&self) -> Vec<(f64, f64, usize)> {
        let mut gaps = Vec::new();
        let mut covered_to = self.start;
        for (i, s) in self.spans.iter().enumerate() {
            if s.start_unix_nano > covered_to {
                let len = (s.start_unix_nano - covered_to) as f64 / 1e6;
                gaps.push(((covered_to - self.start) as f64 / 1e6, len, i));
            }
            covered_to = covered_to.max(s.end_unix_nano);
        }
        gaps
    }
}

/// Writes the slowest saga traces that started before `before` (Unix nanoseconds: the
/// hot-product bursts, which queue by design, come after) to `out/traces.md` and prints a
/// summary. Waits for the services' batch exporters first (they send every few seconds).
pub async fn write(receiver: &Receiver, out: &Path, before: u64) -> anyhow::Result<()> {
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let mut by_trace: HashMap<String, Vec<ReceivedSpan>> = HashMap::new();
    for span in receiver.spans() {
        by_trace
            .entry(span.trace_id.clone())
            .or_default()
            .push(span);
    }
    let mut traces: Vec<Trace> = by_trace
        .into_values()
        // A saga's trace crosses the orchestrator and ends in a projection.
        .filter(|spans| spans.iter().any(|s| s.service == "orchestrator"))
        .map(|mut spans| {
            spans.sort_by_key(|s| s.start_unix_nano);
            let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
            let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
            Trace { spans, start, end }
        })
        .filter(|t| t.start < before)
        .collect();
    traces.sort_by(|a, b| b.millis().total_cmp(&a.millis()));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# The slowest saga traces\n\n{} saga traces received; their extents (first span's \
         start to last span's end) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.\n",
        traces.len(),
        quantile(&traces, 0.5),
        quantile(&traces, 0.99),
        traces.first().map_or(0.0, Trace::millis)
    );
    // Where the slow ones waited: the gaps summed by what came after them.
    let slow = &traces[..traces.len().min((traces.len() / 100).max(SLOWEST))];
    let mut waits: HashMap<String, (f64, usize)> = HashMap::new();
    for t in slow {
        for (_, len, next) in t.gaps() {
            let s = &t.spans[next];
            let e = waits
                .entry(format!("{} {}", s.service, s.name))
                .or_default();
            e.0 += len;
            e.1 += 1;
        }
    }
    let mut waits: Vec<_> = waits.into_iter().collect();
    waits.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let _ = writeln!(
        md,
        "## Gaps in the {} slowest traces, by the span that ended them\n\n| next span | gaps | \
         total ms | mean ms |\n|---|---|---|---|",
        slow.len()
    );
    for (what, (total, n)) in waits.iter().take(15) {
        let _ = writeln!(
            md,
            "| {what} | {n} | {total:.1} | {:.1} |",
            total / *n as f64
        );
    }
    for t in traces.iter().take(SLOWEST) {
        let _ = writeln!(
            md,
            "\n## Trace {} ({:.1} ms, {} spans)\n\n```",
            t.spans[0].trace_id,
            t.millis(),
            t.spans.len()
        );
        let gaps: HashMap<usize, f64> = t.gaps().into_iter().map(|(_, l, i)| (i, l)).collect();
        for (i, s) in t.spans.iter().enumerate() {
            if let Some(gap) = gaps.get(&i).filter(|g| **g >= GAP_MS) {
                let _ = writeln!(md, "          ... {gap:.1} ms with no span open ...");
            }
            let _ = writeln!(
                md,
                "{:>8.1} ms {:>7.1} ms  {:<13} {}",
                (s.start_unix_nano - t.start) as f64 / 1e6,
                (s.end_unix_nano.saturating_sub(s.start_unix_nano)) as f64 / 1e6,
                s.service,
                s.name
            );
        }
        let _ = writeln!(md, "```");
    }
    let path = out.join("traces.md");
    std::fs::write(&path, &md)?;
    println!(
        "  traces: {} sagas traced, extent p50 {:.1} ms p99 {:.1} ms; the slowest laid out in {}",
        traces.len(),
        quantile(&traces, 0.5),
        quantile(&traces, 0.99),
        path.display()
    );
    for (what, (total, n)) in waits.iter().take(5) {
        println!("    waited before {what}: {n} gaps, {total:.0} ms in all");
    }
    Ok(())
}

/// The `q` quantile of the traces' extents (sorted slowest first).
fn quantile(traces: &[Trace], q: f64) -> f64 {
    if traces.is_empty() {
        return 0.0;
    }
    let i = ((1.0 - q) * (traces.len() - 1) as f64).round() as usize;
    traces[i].millis()
}
