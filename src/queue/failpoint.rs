//! Crash points for tests: with `PACKETARY_FAILPOINT=<name>` in its environment, the
//! process aborts (no destructors, no flushing: as a SIGKILL would leave it) when it
//! reaches the point of that name, so that a test can kill a real `packetary serve`
//! between two writes and check what the next start makes of it. Unset, as in
//! production, a point is one read of a value computed once.
//!
//! A crash point models a crash between two writes of the ledger, not one in the middle
//! of a status delivery (a status the forge took but the store had not marked yet is sent
//! again after any crash: delivery is at least once, and the outbox marks each one as
//! soon as the forge answers). So a point waits for the delivery in flight, if any, to be
//! marked, and keeps the next from starting, before it aborts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static POINT: OnceLock<Option<String>> = OnceLock::new();
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static HALTING: AtomicBool = AtomicBool::new(false);

fn point() -> Option<&'static str> {
    POINT
        .get_or_init(|| std::env::var("PACKETARY_FAILPOINT").ok())
        .as_deref()
}

/// Aborts the process when `name` is the configured crash point.
pub fn hit(name: &str) {
    if point() == Some(name) {
        HALTING.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("packetary: failpoint {name}: aborting");
        std::process::abort();
    }
}

/// A status delivery from its request to its mark in the store; see the module's doc.
/// Without a crash point configured it does nothing.
pub struct Delivery(bool);

impl Delivery {
    /// Starts a delivery; waits for ever when a crash point is aborting the process.
    pub async fn begin() -> Delivery {
        if point().is_none() {
            return Delivery(false);
        }
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if HALTING.load(Ordering::SeqCst) {
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Delivery(true)
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.0 {
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
