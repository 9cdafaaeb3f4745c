//! The builds running in this process, each with the token that stops it, and the
//! shutdown's two flags. Shared by the scheduler (which starts builds), intake (which stops
//! those a change's end obsoletes), finish (which asks whether a stop is a shutdown) and
//! the drain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::model::BuildId;

#[derive(Default)]
pub(super) struct Running {
    tokens: Mutex<HashMap<BuildId, CancellationToken>>,
    /// Set by SIGTERM: take no more builds.
    draining: AtomicBool,
    /// Set when the grace period ran out: stopped builds go back to the queue.
    shutting_down: AtomicBool,
    /// Told when a build leaves the set (one wake-up kept for a caller not waiting yet).
    ended: tokio::sync::Notify,
}

impl Running {
    pub fn count(&self) -> usize {
        self.tokens.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Counts `id` as running; its token stops it.
    pub fn insert(&self, id: &BuildId) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(id.clone(), token.clone());
        }
        token
    }

    pub fn remove(&self, id: &BuildId) {
        if let Ok(mut m) = self.tokens.lock() {
            m.remove(id);
        }
        self.ended.notify_one();
    }

    /// Resolves once a build has left the set since the last call.
    pub async fn ended(&self) {
        self.ended.notified().await
    }

    /// Stops `id` if it runs here.
    pub fn cancel(&self, id: &BuildId) {
        if let Some(t) = self.tokens.lock().ok().and_then(|m| m.get(id).cloned()) {
            t.cancel();
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The grace period ran out: every running build stops and goes back to the queue.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let tokens: Vec<CancellationToken> = self
            .tokens
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for t in tokens {
            t.cancel();
        }
    }

    /// Whether builds that stop now go back to the queue (the grace period of a shutdown
    /// ran out) rather than end.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
