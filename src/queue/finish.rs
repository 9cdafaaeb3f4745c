//! Finishing a build: its outcome becomes a final state (succeeded, failed, error,
//! cancelled), a retry under the builds' policy (infrastructure faults), or a return to the
//! queue (stopped by a shutdown). Every way a build ends passes here, so that none is left
//! pending, and each of those is ONE ledger transaction that also writes its reports.
//!
//! A succeeded build is first *recorded* (its results, phases and outcome, in one
//! transaction), then published, then ended: a process killed after the record finishes
//! the build from it at the next start ([`Finish::finish_recorded`]), publishing the same
//! bytes again (a no-op for a release) instead of building anew.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::failpoint;
use super::publish::{PublishOutcome, Publisher};
use super::quota::Quota;
use super::report::Reports;
use super::retry::{Fault, RetryPolicy};
use super::running::Running;
use super::{Metrics, QueueError, Wakes};
use crate::executor::BuildReport;
use crate::model::{BuildState, Outcome};
use crate::store::ledger::{self, BuildEnd, EventKind, LearnedProvides};
use crate::store::{BuildRow, Millis, PhaseRow, Store};

/// Provides learned from one build, at most, and the longest one kept.
const MAX_LEARNED: usize = 4096;
const MAX_PROVIDE_LEN: usize = 512;

/// The longest the Provides of one build's packages are read for.
const PROVIDES_DEADLINE: Duration = Duration::from_secs(20);

/// What a succeeded build produced, as the ledger keeps it between its record and its end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Recorded {
    pub source: PathBuf,
    pub binaries: Vec<PathBuf>,
    /// The results directory.
    pub dir: PathBuf,
    /// What the build's message says it built: `name-version-release`, or `None`.
    pub nvr: Option<String>,
    pub reused_from: Option<String>,
    pub elapsed_secs: u64,
}

/// The finish stage: the ledger's end transitions, the publisher, the builds' retry
/// policy, and the reports each end writes.
pub(super) struct Finish {
    pub store: Store,
    /// Charges each build's results to its change; fails one that does not fit.
    pub quota: Arc<Quota>,
    pub publisher: Arc<Publisher>,
    pub policy: RetryPolicy,
    pub reports: Arc<Reports>,
    /// Whether a stop is a shutdown's (the build goes back to the queue).
    pub running: Arc<Running>,
    pub metrics: Arc<Metrics>,
    /// A requeued build's due time goes on the scheduler's alarm.
    pub wakes: Arc<Wakes>,
}

impl Finish {
    /// Records how `b` ended; `report` is the runner's report, or the outcome of a build
    /// that never reached it.
    pub async fn finish(
        &self,
        b: &BuildRow,
        report: Result<BuildReport, Outcome>,
        elapsed: Duration,
    ) -> Result<(), QueueError> {
        let secs = elapsed.as_secs_f64();
        let report = match report {
            Ok(r) => Ok(self.quota.charge(b, r).await?),
            Err(o) => Err(o),
        };
        let (outcome, phases, dir) = match report {
            Ok(r) => {
                let phases = phase_rows(&r);
                if let Outcome::Succeeded { source, binaries } = &r.outcome {
                    let rec = Recorded {
                        source: source.clone(),
                        binaries: binaries.clone(),
                        dir: r.dir.clone(),
                        nvr: r.nevr.as_ref().map(|n| n.nvr()),
                        reused_from: r.reused_from.as_ref().map(|f| f.to_string()),
                        elapsed_secs: elapsed.as_secs(),
                    };
                    if !self.publisher.publishes(b) {
                        // Nothing to publish: nothing between a record and the end for a
                        // restart to finish, so the end is the only write.
                        return self.finish_recorded(b, rec, phases).await;
                    }
                    let json = serde_json::to_string(&rec)?;
                    let mut tx = self.store.tx().await?;
                    let kept = ledger::record(&mut tx, &b.id, &json, &r.dir, &phases).await?;
                    tx.commit().await?;
                    failpoint::hit("finish:recorded");
                    if !kept {
                        // Superseded or cancelled meanwhile: that transition reported it.
                        return Ok(());
                    }
                    // The phases went with the record.
                    return self.finish_recorded(b, rec, vec![]).await;
                }
                let dir = r.dir.is_dir().then(|| r.dir.clone());
                (r.outcome, phases, dir)
            }
            Err(o) => (o, vec![], None),
        };
        let end = |state, message: &str, phase| Ending {
            state,
            message: message.to_string(),
            phase,
            phases: phases.clone(),
            dir: dir.clone(),
        };
        match outcome {
            // Handled above: recorded, then published.
            Outcome::Succeeded { .. } => {}
            Outcome::Failed { phase, message, .. } => {
                self.end(
                    b,
                    end(BuildState::Failed, &message, Some(phase.as_str())),
                    None,
                    secs,
                )
                .await?;
            }
            Outcome::Error { message } => {
                if self.running.shutting_down() {
                    self.requeue_for_shutdown(b).await?;
                } else {
                    self.retry_or_give_up(b, end(BuildState::Error, &message, None), secs)
                        .await?;
                }
            }
            Outcome::Cancelled => {
                if self.running.shutting_down() {
                    self.requeue_for_shutdown(b).await?;
                } else {
                    // When the store says it already ended, it was superseded or its
                    // change closed; that path reported it.
                    self.end(b, end(BuildState::Cancelled, "cancelled", None), None, secs)
                        .await?;
                }
            }
        }
        tracing::info!(build = %b.id, "build ended");
        Ok(())
    }

    /// Publishes a recorded build's packages and ends it: after its run, or at start-up
    /// for a build the previous process recorded but did not end. `phases`: the run's,
    /// when no record kept them (a build with nothing to publish is not recorded).
    pub async fn finish_recorded(
        &self,
        b: &BuildRow,
        rec: Recorded,
        phases: Vec<PhaseRow>,
    ) -> Result<(), QueueError> {
        let built = match &rec.reused_from {
            Some(from) => format!("reused from {from}"),
            None => format!(
                "built {} in {}",
                rec.nvr.as_deref().unwrap_or(&b.package),
                humantime::format_duration(Duration::from_secs(rec.elapsed_secs))
            ),
        };
        let published = self
            .publisher
            .publish_build(b, &rec.source, &rec.binaries)
            .await?;
        failpoint::hit("finish:published");
        let ending = |state, message: String, phase| Ending {
            state,
            message,
            phase,
            phases: phases.clone(),
            dir: Some(rec.dir.clone()),
        };
        let secs = rec.elapsed_secs as f64;
        match published {
            PublishOutcome::Nothing => {
                let provides = self.learnable_provides(b, &rec.binaries).await;
                self.end(
                    b,
                    ending(BuildState::Succeeded, built, None),
                    provides.as_deref(),
                    secs,
                )
                .await?;
            }
            PublishOutcome::Done {
                note,
                label,
                snapshot,
            } => {
                let provides = self.learnable_provides(b, &rec.binaries).await;
                let e = ending(BuildState::Succeeded, format!("{built}; {note}"), None);
                self.end_with(
                    b,
                    e,
                    provides.as_deref(),
                    Some((&label, snapshot.as_deref())),
                    secs,
                )
                .await?;
            }
            // A refusal is the build's result, not a silent skip; its packages teach
            // later plans nothing.
            PublishOutcome::Refused(why) => {
                self.end(
                    b,
                    ending(BuildState::Failed, why, Some("publish")),
                    None,
                    secs,
                )
                .await?;
            }
            PublishOutcome::Fault(why) => {
                self.retry_or_give_up(b, ending(BuildState::Error, why, None), secs)
                    .await?;
            }
        }
        tracing::info!(build = %b.id, "build ended");
        Ok(())
    }

    /// What a succeeded build teaches later plans of its repository: only a push's
    /// packages (a pull request's or a Gerrit upload's would reorder the plans of the
    /// branch it targets), at most [`MAX_LEARNED`] Provides of at most
    /// [`MAX_PROVIDE_LEN`] bytes each.
    async fn learnable_provides(&self, b: &BuildRow, binaries: &[PathBuf]) -> Option<Vec<String>> {
        if b.pr_number.is_some() {
            return None;
        }
        let mut all = self.read_provides(binaries).await;
        all.retain(|p| p.len() <= MAX_PROVIDE_LEN);
        all.truncate(MAX_LEARNED);
        Some(all)
    }

    /// The Provides of the binary RPMs a successful build made, for the ordering of later
    /// plans ([`crate::plan::provides`]). A package that cannot be read is logged and
    /// skipped: it says nothing about the build's success. The files come from the build,
    /// so the reading (linear in their size, see [`crate::format::rpm`]) has a deadline
    /// too: past it, the build ends having taught nothing, and its slot is free.
    async fn read_provides(&self, binaries: &[PathBuf]) -> Vec<String> {
        let files = binaries.to_vec();
        let reading = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for f in &files {
                match crate::format::rpm::rpm_provides(f) {
                    Ok(p) => all.extend(p),
                    Err(e) => tracing::warn!("cannot learn provides: {e}"),
                }
            }
            all.sort();
            all.dedup();
            all
        });
        match tokio::time::timeout(PROVIDES_DEADLINE, reading).await {
            Ok(all) => all.unwrap_or_default(),
            Err(_) => {
                tracing::warn!(
                    "reading the Provides of {} package(s) took longer than {:?}: none learned",
                    binaries.len(),
                    PROVIDES_DEADLINE
                );
                vec![]
            }
        }
    }

    async fn end(
        &self,
        b: &BuildRow,
        e: Ending,
        provides: Option<&[String]>,
        secs: f64,
    ) -> Result<bool, QueueError> {
        self.end_with(b, e, provides, None, secs).await
    }

    /// Ends the build in a final state, with what it taught and where it was published,
    /// and writes its reports: one transaction. Counts it unless the ledger says it had
    /// already ended (then returns `false`).
    async fn end_with(
        &self,
        b: &BuildRow,
        e: Ending,
        provides: Option<&[String]>,
        publication: Option<(&str, Option<&str>)>,
        secs: f64,
    ) -> Result<bool, QueueError> {
        let mut tx = self.store.tx().await?;
        let ended = ledger::end(
            &mut tx,
            &BuildEnd {
                id: &b.id,
                state: e.state,
                message: &e.message,
                phase: e.phase,
                result_dir: e.dir.as_deref(),
                phases: &e.phases,
                provides: provides.map(|p| LearnedProvides {
                    repo: &b.repo,
                    package: &b.package,
                    target: &b.target,
                    provides: p,
                }),
                publication,
            },
        )
        .await?;
        if let Some(shifted) = ended {
            if shifted.counts.is_none_or(|c| c.queued > 0) {
                self.wakes.unblocked.store(true, Ordering::SeqCst);
            }
            self.reports
                .transition(
                    &mut tx,
                    EventKind::Ended,
                    b,
                    (e.state, &e.message),
                    shifted.counts,
                )
                .await?;
        }
        let written = tx.commit().await?;
        let ended = ended.is_some();
        if ended {
            self.reports.written(written);
            self.metrics.build_finished(e.state.as_str(), secs);
        }
        failpoint::hit("finish:ended");
        Ok(ended)
    }

    /// An infrastructure fault: the build runs again later under the builds' retry policy,
    /// or ends as `error` once it has had its attempts.
    async fn retry_or_give_up(&self, b: &BuildRow, e: Ending, secs: f64) -> Result<(), QueueError> {
        let attempts = b.attempts.max(1) as u32;
        let policy = &self.policy;
        let Some(wait) = policy.next(attempts, Fault::Transient) else {
            let message = e.message.clone();
            if self.end(b, e, None, secs).await? {
                tracing::warn!(build = %b.id, "giving up after {attempts} attempt(s): {message}");
            }
            return Ok(());
        };
        let msg = format!(
            "infrastructure error, retrying in {} (attempt {attempts} of {}): {}",
            humantime::format_duration(wait),
            policy.max_attempts,
            e.message
        );
        tracing::warn!(build = %b.id, "{msg}");
        self.requeue(b, Millis::now().after(wait), &msg, true)
            .await?;
        Ok(())
    }

    /// Ends a build as `error` at once, without a retry: an infrastructure fault that
    /// retrying cannot mend (its commit is gone).
    pub async fn give_up(
        &self,
        b: &BuildRow,
        message: &str,
        elapsed: Duration,
    ) -> Result<(), QueueError> {
        let e = Ending {
            state: BuildState::Error,
            message: message.to_string(),
            phase: None,
            phases: vec![],
            dir: None,
        };
        if self.end(b, e, None, elapsed.as_secs_f64()).await? {
            tracing::warn!(build = %b.id, "not retried: {message}");
        }
        Ok(())
    }

    /// Puts a running build back in the queue and reports it queued: one transaction.
    /// Returns `false` when it was no longer running.
    pub async fn requeue(
        &self,
        b: &BuildRow,
        at: Millis,
        message: &str,
        count_attempt: bool,
    ) -> Result<bool, QueueError> {
        let mut tx = self.store.tx().await?;
        let done = ledger::requeue(&mut tx, &b.id, at, Some(message), count_attempt).await?;
        if done {
            self.reports
                .transition(
                    &mut tx,
                    EventKind::Requeued,
                    b,
                    (BuildState::Queued, message),
                    None,
                )
                .await?;
        }
        failpoint::hit("requeue:before-commit");
        let written = tx.commit().await?;
        if done {
            self.reports.written(written);
            self.wakes.build.at(at);
        }
        Ok(done)
    }

    /// Stopped because the shutdown's grace period ran out: it runs again at the next start.
    /// Its status stays as it was (the next start reports it again).
    async fn requeue_for_shutdown(&self, b: &BuildRow) -> Result<(), QueueError> {
        self.store
            .requeue(&b.id, Millis::now(), Some("stopped by a shutdown"), false)
            .await?;
        Ok(())
    }
}

/// How a build ends, before it is written.
struct Ending {
    state: BuildState,
    message: String,
    phase: Option<&'static str>,
    phases: Vec<PhaseRow>,
    dir: Option<PathBuf>,
}

/// The runner's phase timings as the ledger keeps them.
fn phase_rows(r: &BuildReport) -> Vec<PhaseRow> {
    r.phases
        .iter()
        .map(|p| PhaseRow {
            phase: p.phase.as_str().to_string(),
            started: p.started.clone(),
            seconds: p.seconds,
            ok: p.ok,
        })
        .collect()
}
