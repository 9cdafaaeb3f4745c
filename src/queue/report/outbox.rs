//! The outbox: delivers the stored reports that are due to the forge, oldest first, and
//! retries a failed delivery under the outbox's policy (or when the forge's Retry-After
//! says), giving up sooner when the forge says retrying will not help.

use std::sync::Arc;

use crate::forge::Forge;
use crate::store::{Millis, Store};

use super::super::retry::{Fault, RetryPolicy};
use super::super::{Metrics, QueueError, Wakes};

/// The outbox stage: the store's due reports, the forge, and the outbox's retry policy.
pub(in crate::queue) struct Outbox {
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    pub policy: RetryPolicy,
    pub metrics: Arc<Metrics>,
    /// A failed delivery's retry time goes on the outbox's alarm.
    pub wakes: Arc<Wakes>,
}

impl Outbox {
    /// The outbox loop's step: delivers what is due; a full batch means more are, now.
    /// Later retries are on the alarm (set as each failure is stored).
    pub async fn step(&self) -> Result<Option<Millis>, QueueError> {
        let n = self.deliver_due().await?;
        Ok((n as i64 >= BATCH).then(Millis::now))
    }

    /// Delivers the reports that are due, oldest first; returns how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, QueueError> {
        let store = &self.store;
        let policy = &self.policy;
        let due = store.due_reports(Millis::now(), BATCH).await?;
        let n = due.len();
        for row in due {
            match self.forge.deliver(&row.report).await {
                Ok(d) => {
                    tracing::debug!(context = %row.report.context, sha = %row.report.sha, state = row.report.state.as_str(), forge_ref = ?d.forge_ref, "status delivered");
                    store
                        .mark_delivered(row.id, row.version, d.forge_ref.as_deref())
                        .await?;
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
