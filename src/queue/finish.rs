//! Finishing a build: its outcome becomes a final state (succeeded, failed, error,
//! cancelled), a retry under the builds' policy (infrastructure faults), or a return to the
//! queue (stopped by a shutdown); its phases and results are recorded, its metrics counted,
//! and its status and its commit's aggregate reported. Every way a build ends passes here,
//! so that none is left pending.

use std::time::Duration;

use super::publish::PublishOutcome;
use super::retry::Fault;
use super::{Queue, QueueError};
use crate::executor::BuildReport;
use crate::model::{BuildState, Outcome};
use crate::store::{BuildRow, Millis, PhaseRow};

impl Queue {
    /// Records how `b` ended; `report` is the runner's report, or the outcome of a build
    /// that never reached it.
    pub(super) async fn finish(
        &self,
        b: &BuildRow,
        report: Result<BuildReport, Outcome>,
        elapsed: Duration,
    ) -> Result<(), QueueError> {
        let mut reused_from = None;
        let mut published = PublishOutcome::Nothing;
        let (outcome, nvr) = match report {
            Ok(r) => {
                reused_from = r.reused_from.clone();
                self.record_results(b, &r).await?;
                if let Outcome::Succeeded { source, binaries } = &r.outcome {
                    self.learn_provides(b, binaries).await?;
                    published = self.publish_build(b, source, binaries).await?;
                }
                let nvr = r.nevr.as_ref().map(|n| n.nvr());
                (r.outcome, nvr)
            }
            Err(o) => (o, None),
        };
        let secs = elapsed.as_secs_f64();
        match outcome {
            Outcome::Succeeded { .. } => {
                let built = match &reused_from {
                    Some(from) => format!("reused from {from}"),
                    None => format!(
                        "built {} in {}",
                        nvr.as_deref().unwrap_or(&b.package),
                        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                    ),
                };
                match published {
                    PublishOutcome::Nothing => {
                        self.end(b, BuildState::Succeeded, &built, None, secs)
                            .await?;
                    }
                    PublishOutcome::Done(note) => {
                        let msg = format!("{built}; {note}");
                        self.end(b, BuildState::Succeeded, &msg, None, secs).await?;
                    }
                    // A refusal is the build's result, not a silent skip.
                    PublishOutcome::Refused(why) => {
                        self.end(b, BuildState::Failed, &why, Some("publish"), secs)
                            .await?;
                    }
                    PublishOutcome::Fault(why) => {
                        self.retry_or_give_up(b, &why, secs).await?;
                    }
                }
            }
            Outcome::Failed { phase, message, .. } => {
                self.end(b, BuildState::Failed, &message, Some(phase.as_str()), secs)
                    .await?;
            }
            Outcome::Error { message } => {
                if self.shutting_down() {
                    self.requeue_for_shutdown(b).await?;
                } else {
                    self.retry_or_give_up(b, &message, secs).await?;
                }
            }
            Outcome::Cancelled => {
                if self.shutting_down() {
                    self.requeue_for_shutdown(b).await?;
                } else {
                    // When the store says it already ended, it was superseded or its
                    // change closed; that path reported it.
                    self.end(b, BuildState::Cancelled, "cancelled", None, secs)
                        .await?;
                }
            }
        }
        tracing::info!(build = %b.id, "build ended");
        self.report_aggregate(&b.repo, &b.commit).await?;
        Ok(())
    }

    /// The build's phases and, when there is one, its results directory.
    async fn record_results(&self, b: &BuildRow, r: &BuildReport) -> Result<(), QueueError> {
        let store = &self.inner.store;
        let phases: Vec<PhaseRow> = r
            .phases
            .iter()
            .map(|p| PhaseRow {
                phase: p.phase.as_str().to_string(),
                started: p.started.clone(),
                seconds: p.seconds,
                ok: p.ok,
            })
            .collect();
        store.record_phases(&b.id, &phases).await?;
        if r.dir.is_dir() {
            store.set_result_dir(&b.id, &r.dir).await?;
        }
        Ok(())
    }

    /// Stores the Provides of the binary RPMs a successful build made, for the ordering of
    /// later plans ([`crate::plan::provides`]). A package that cannot be read is logged
    /// and skipped: it says nothing about the build's success.
    async fn learn_provides(
        &self,
        b: &BuildRow,
        binaries: &[std::path::PathBuf],
    ) -> Result<(), QueueError> {
        let files = binaries.to_vec();
        let read = tokio::task::spawn_blocking(move || {
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
        })
        .await;
        let Ok(provides) = read else {
            return Ok(());
        };
        if !provides.is_empty() {
            self.inner
                .store
                .learn_provides(&b.repo, &b.package, &b.target, &b.id, &provides)
                .await?;
        }
        Ok(())
    }

    /// Ends the build in a final `state`; counts and reports it unless the store says it
    /// had already ended (then returns `false`).
    async fn end(
        &self,
        b: &BuildRow,
        state: BuildState,
        message: &str,
        phase: Option<&str>,
        secs: f64,
    ) -> Result<bool, QueueError> {
        let ended = self
            .inner
            .store
            .finish_build(&b.id, state, Some(message), None, phase)
            .await?;
        if ended {
            self.inner.metrics.build_finished(state.as_str(), secs);
            self.report_build(b, state, message).await?;
        }
        Ok(ended)
    }

    /// An infrastructure fault: the build runs again later under the builds' retry policy,
    /// or ends as `error` once it has had its attempts.
    async fn retry_or_give_up(
        &self,
        b: &BuildRow,
        message: &str,
        secs: f64,
    ) -> Result<(), QueueError> {
        let attempts = b.attempts.max(1) as u32;
        let policy = &self.inner.retry.builds;
        let Some(wait) = policy.next(attempts, Fault::Transient) else {
            if self.end(b, BuildState::Error, message, None, secs).await? {
                tracing::warn!(build = %b.id, "giving up after {attempts} attempt(s): {message}");
            }
            return Ok(());
        };
        let msg = format!(
            "infrastructure error, retrying in {} (attempt {attempts} of {}): {message}",
            humantime::format_duration(wait),
            policy.max_attempts
        );
        tracing::warn!(build = %b.id, "{msg}");
        if self
            .inner
            .store
            .requeue(&b.id, Millis::now().after(wait), Some(&msg), true)
            .await?
        {
            self.report_build(b, BuildState::Queued, &msg).await?;
        }
        Ok(())
    }

    /// Stopped because the shutdown's grace period ran out: it runs again at the next start.
    async fn requeue_for_shutdown(&self, b: &BuildRow) -> Result<(), QueueError> {
        self.inner
            .store
            .requeue(&b.id, Millis::now(), Some("stopped by a shutdown"), false)
            .await?;
        Ok(())
    }
}
