//! Named crash points for fault-injection tests: a process started with
//! `FAILPOINTS=name[,name]` aborts (as a SIGKILL would end it) when it reaches one of them.
//!
//! They exist so tests can stop a real process at an exact step, such as "event published to
//! JetStream but not yet marked done in the outbox", which a timed kill cannot hit reliably.

use std::collections::HashSet;
use std::sync::OnceLock;

static ARMED: OnceLock<HashSet<String>> = OnceLock::new();

/// Arms the failpoints named in a comma-separated list. Only the first call has effect.
pub fn arm(list: &str) {
    let names: HashSet<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !names.is_empty() {
        tracing::warn!(failpoints = ?names, "failpoints armed: this process will abort at them");
    }
    let _ = ARMED.set(names);
}

/// Aborts the process when the failpoint `name` is armed.
pub fn hit(name: &str) {
    if ARMED.get().is_some_and(|armed| armed.contains(name)) {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
