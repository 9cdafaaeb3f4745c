//! Crash points for tests: with `PACKETARY_FAILPOINT=<name>` in its environment, the
//! process aborts (no destructors, no flushing: as a SIGKILL would leave it) when it
//! reaches the point of that name, so that a test can kill a real `packetary serve`
//! between two writes and check what the next start makes of it. Unset, as in
//! production, a point is one read of a value computed once.

use std::sync::OnceLock;

static POINT: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process when `name` is the configured crash point.
pub fn hit(name: &str) {
    let point = POINT.get_or_init(|| std::env::var("PACKETARY_FAILPOINT").ok());
    if point.as_deref() == Some(name) {
        eprintln!("packetary: failpoint {name}: aborting");
        std::process::abort();
    }
}
