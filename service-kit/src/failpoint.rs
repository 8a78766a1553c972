//! Named crash points for fault-injection tests. `FAILPOINTS` is a comma-separated list of
//! `name`, `name@N` (only the Nth time it is reached), `name@N:hang` and `name@N:refuse`:
//! - the default action aborts the process, which runs no cleanup, as SIGKILL would;
//! - `hang` stops the task that reached the point forever and, when `FAILPOINT_MARKER_DIR` is
//!   set, creates the file `<dir>/<name>` so a test knows the process is parked exactly there
//!   and can SIGKILL it;
//! - `refuse` makes the code that asks [`refuses`] refuse what it was about to do, for good
//!   (a command service's forced, non-retryable refusal of one command).
//!
//! They exist so tests can stop a real process at an exact step, such as "saga step attempt
//! recorded but its command not yet sent", which a timed kill cannot hit reliably.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

#[derive(Debug)]
struct Armed {
    name: String,
    /// Fire only on this hit (1-based); every hit when `None`.
    at: Option<u32>,
    action: Action,
    hits: AtomicU32,
}

/// What a failpoint does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Abort,
    Hang,
    Refuse,
}

#[derive(Debug, Default)]
struct Config {
    points: Vec<Armed>,
    marker_dir: Option<PathBuf>,
}

static ARMED: OnceLock<Config> = OnceLock::new();

fn parse(item: &str) -> Option<Armed> {
    let (spec, action) = match item.split_once(':') {
        Some((spec, "hang")) => (spec, Action::Hang),
        Some((spec, "refuse")) => (spec, Action::Refuse),
        Some(_) => return None,
        None => (item, Action::Abort),
    };
    let (name, at) = match spec.split_once('@') {
        Some((name, n)) => (name, Some(n.parse().ok()?)),
        None => (spec, None),
    };
    Some(Armed {
        name: name.to_owned(),
        at,
        action,
        hits: AtomicU32::new(0),
    })
}

/// Arms the failpoints of `list`. Only the first call has effect.
pub fn arm_with_markers(list: &str, marker_dir: Option<PathBuf>) {
    let points: Vec<Armed> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|item| {
            let parsed = parse(item);
            if parsed.is_none() {
                tracing::error!(item, "ignoring a malformed failpoint");
            }
            parsed
        })
        .collect();
    if !points.is_empty() {
        tracing::warn!(
            failpoints = list,
            "failpoints armed: this process will stop at them"
        );
    }
    let _ = ARMED.set(Config { points, marker_dir });
}

/// Arms the failpoints of `list` (no marker files).
pub fn arm(list: &str) {
    arm_with_markers(list, None);
}

/// Whether any failpoint is armed: code that would build a failpoint's name at run time asks
/// first, so an unarmed process pays nothing.
pub fn armed() -> bool {
    ARMED.get().is_some_and(|config| !config.points.is_empty())
}

/// What reaching `name` should do now.
fn fires(name: &str) -> Option<Action> {
    let config = ARMED.get()?;
    let point = config.points.iter().find(|p| p.name == name)?;
    let hit = point.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if point.at.is_some_and(|n| n != hit) {
        return None;
    }
    eprintln!("failpoint {name} reached (hit {hit})");
    if point.action == Action::Hang {
        if let Some(dir) = &config.marker_dir {
            let _ = std::fs::write(dir.join(name), hit.to_string());
        }
    }
    Some(point.action)
}

/// Whether a `refuse` failpoint named `name` fires now: the caller then refuses what it was
/// about to do.
pub fn refuses(name: &str) -> bool {
    fires(name) == Some(Action::Refuse)
}

/// Reached from synchronous code: aborts when armed (a `hang` blocks this thread).
pub fn hit(name: &str) {
    match fires(name) {
        None | Some(Action::Refuse) => {}
        Some(Action::Abort) => std::process::abort(),
        Some(Action::Hang) => loop {
            std::thread::park();
        },
    }
}

/// Reached from async code: aborts when armed, or parks this task forever for `hang`.
pub async fn reached(name: &str) {
    match fires(name) {
        None | Some(Action::Refuse) => {}
        Some(Action::Abort) => std::process::abort(),
        Some(Action::Hang) => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let a = parse("saga.after_attempt@3:hang").unwrap();
        assert_eq!(
            (a.name.as_str(), a.at, a.action),
            ("saga.after_attempt", Some(3), Action::Hang)
        );
        let b = parse("outbox.after_publish").unwrap();
        assert_eq!((b.at, b.action), (None, Action::Abort));
        let c = parse("nats.refuse.ReleaseStock@1:refuse").unwrap();
        assert_eq!((c.at, c.action), (Some(1), Action::Refuse));
        assert!(parse("x@y").is_none());
        assert!(parse("x:explode").is_none());
    }
}
