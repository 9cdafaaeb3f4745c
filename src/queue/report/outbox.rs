//! The outbox: delivers the stored reports that are due to the forge, oldest first, and
//! retries a failed delivery under the outbox's policy (or when the forge's Retry-After
//! says), giving up sooner when the forge says retrying will not help.
//!
//! What a transition just committed comes in memory ([`Handoff`]): the outbox delivers
//! it without reading it back. Each delivery is marked as soon as the forge answered, so
//! that a crash re-sends at most the one status in flight. It reads
//! the store only when nothing was handed over (at start, on the idle wake-up) or when a
//! failed delivery's retry time has come, so a report is never lost to the hand-off: the
//! store holds it until it is marked delivered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::forge::Forge;
use crate::model::Report;
use crate::store::{Millis, ReportId, ReportRow, Store};

use super::super::failpoint;
use super::super::poll::DueAt;
use super::super::retry::{Fault, RetryPolicy};
use super::super::{Metrics, QueueError, Wakes};

/// The outbox stage: the store's due reports, the forge, and the outbox's retry policy.
pub(in crate::queue) struct Outbox {
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    pub policy: RetryPolicy,
    pub metrics: Arc<Metrics>,
    /// A failed delivery's retry time goes on the outbox's alarm; committed reports come
    /// in its hand-off.
    pub wakes: Arc<Wakes>,
    /// When a failed delivery's retry is due (the store is read for it then).
    pub retry_at: DueAt,
    /// The version of each report last delivered by this process (bounded): a row read
    /// from the store just after its transaction committed, and then handed over too, is
    /// not delivered twice.
    pub delivered: Mutex<HashMap<ReportId, i64>>,
    /// The service's directories, which a forge never sees: a message naming a path under
    /// them is delivered with the path shown as the pages show it.
    pub paths: super::paths::DiskPaths,
}

/// Deliveries remembered against a second hand-over; the race it guards lasts
/// milliseconds, so forgetting all of them past this loses nothing in practice.
const REMEMBERED: usize = 4096;

/// Reports committed and not yet taken by the outbox, in commit order.
#[derive(Default)]
pub(crate) struct Handoff(Mutex<Vec<ReportRow>>);

impl Handoff {
    pub fn put(&self, rows: Vec<ReportRow>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(rows);
    }

    fn take(&self) -> Vec<ReportRow> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Outbox {
    /// `report` as the forge gets it: its texts without a path of the service's disk.
    fn shown(&self, report: &Report) -> Report {
        let mut r = report.clone();
        r.description = self.paths.hide(&r.description);
        for b in &mut r.builds {
            if let Some(m) = &b.message {
                b.message = Some(self.paths.hide(m));
            }
        }
        r
    }

    /// The outbox loop's step: delivers what was handed over, and what the store says is
    /// due when nothing was or a retry's time has come; a full batch means more are, now.
    /// Later retries are on the alarm (set as each failure is stored).
    pub async fn step(&self) -> Result<Option<Millis>, QueueError> {
        let (n, read) = self.deliver_handed(false).await?;
        Ok((read && n as i64 >= BATCH).then(Millis::now))
    }

    /// Delivers the reports that are due by the store, oldest first (with what was handed
    /// over, so that nothing handed over is delivered twice); returns how many were
    /// attempted.
    pub async fn deliver_due(&self) -> Result<usize, QueueError> {
        Ok(self.deliver_handed(true).await?.0)
    }

    /// Delivers what was handed over, with what the store says is due when `read`, when
    /// nothing was handed over, or when a retry's time has come. Returns how many were
    /// attempted and whether the store was read.
    async fn deliver_handed(&self, read: bool) -> Result<(usize, bool), QueueError> {
        let now = Millis::now();
        let mut rows = self.wakes.handoff.take();
        let read = self.retry_at.take_if_due(now) || read || rows.is_empty();
        if read {
            rows.extend(self.store.due_reports(now, BATCH).await?);
        }
        Ok((self.deliver(latest_per_report(rows)).await?, read))
    }

    /// Delivers `rows` in order, marking each delivery or failure as it happens. Returns
    /// how many were attempted.
    async fn deliver(&self, rows: Vec<ReportRow>) -> Result<usize, QueueError> {
        let store = &self.store;
        let policy = &self.policy;
        let n = rows.len();
        for row in rows {
            let seen = self
                .delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&row.id)
                .is_some_and(|v| *v >= row.version);
            if seen {
                continue;
            }
            let _delivery = failpoint::Delivery::begin().await;
            match self.forge.deliver(&self.shown(&row.report)).await {
                Ok(d) => {
                    tracing::debug!(context = %row.report.context, sha = %row.report.sha, state = row.report.state.as_str(), forge_ref = ?d.forge_ref, "status delivered");
                    store
                        .mark_delivered(row.id, row.version, d.forge_ref.as_deref())
                        .await?;
                    let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
                    if delivered.len() >= REMEMBERED {
                        delivered.clear();
                    }
                    delivered.insert(row.id, row.version);
                    self.metrics.report("delivered");
                }
                Err(e) => {
                    let attempts = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
                    let fault = if e.permanent {
                        Fault::Permanent
                    } else {
                        Fault::Transient
                    };
                    let abandon = e.obsolete || policy.gives_up(attempts, fault);
                    let wait = wait_before_retry(e.retry_after, policy.delay(attempts));
                    tracing::warn!(context = %row.report.context, sha = %row.report.sha, attempts, abandon, "status delivery failed: {e}");
                    let at = Millis::now().after(wait);
                    store
                        .delivery_failed(row.id, row.version, at, &e.message, abandon)
                        .await?;
                    if !abandon {
                        self.retry_at.set(at);
                        self.wakes.outbox.at(at);
                    }
                    self.metrics
                        .report(if abandon { "abandoned" } else { "retry" });
                }
            }
        }
        Ok(n)
    }
}

/// One row per report, its latest version, in the order each report first came: a
/// desire handed over and also read from the store, or replaced by a newer one before the
/// outbox looked, is delivered once, as it is now.
fn latest_per_report(rows: Vec<ReportRow>) -> Vec<ReportRow> {
    let mut order = Vec::new();
    let mut latest: BTreeMap<_, ReportRow> = BTreeMap::new();
    for r in rows {
        match latest.get(&r.id) {
            Some(seen) if seen.version >= r.version => {}
            Some(_) => {
                latest.insert(r.id, r);
            }
            None => {
                order.push(r.id);
                latest.insert(r.id, r);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| latest.remove(&id))
        .collect()
}

/// Reports delivered per step.
const BATCH: i64 = 50;

/// The longest a forge may make the outbox wait: a `Retry-After` far in the future (seen:
/// a next attempt in 2030) must not park a status forever. GitHub's rate-limit windows are
/// an hour.
const MAX_FORGE_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The forge's wish when it gave one (capped), else the policy's backoff.
fn wait_before_retry(
    asked: Option<std::time::Duration>,
    backoff: std::time::Duration,
) -> std::time::Duration {
    asked.map_or(backoff, |w| w.min(MAX_FORGE_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_forges_wait_is_honoured_up_to_an_hour() {
        let backoff = Duration::from_secs(8);
        assert_eq!(wait_before_retry(None, backoff), backoff);
        assert_eq!(
            wait_before_retry(Some(Duration::from_secs(61)), backoff),
            Duration::from_secs(61)
        );
        let far = Duration::from_secs(5 * 365 * 24 * 3600);
        assert_eq!(wait_before_retry(Some(far), backoff), MAX_FORGE_WAIT);
    }
}
