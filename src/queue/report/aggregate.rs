//! The statuses the queue wants the forge to show: one per build (its context named after
//! target and package) and one per commit (the aggregate, `packetary`) summing up the latest
//! build of each package and target, with links to the build pages. They are desired
//! states, stored in the outbox; the latest one for a context wins.

use crate::model::{
    build_context, BuildId, BuildLine, BuildState, CommitSha, RepoId, Report, ReportState,
    AGGREGATE_CONTEXT,
};
use crate::store::BuildRow;

use super::super::{Queue, QueueError};

impl Queue {
    pub(in crate::queue) fn build_url(&self, id: &BuildId) -> String {
        format!("{}/builds/{id}", self.inner.cfg.public_url)
    }

    fn index_url(&self, sha: &CommitSha) -> String {
        format!("{}/?commit={sha}", self.inner.cfg.public_url)
    }

    /// Puts `r` in the outbox and wakes the outbox loop.
    pub(in crate::queue) async fn set_report(&self, r: Report) -> Result<(), QueueError> {
        self.inner.store.set_report(&r).await?;
        self.inner.outbox_wake.notify_one();
        Ok(())
    }

    /// The status of one build.
    pub(in crate::queue) async fn report_build(
        &self,
        b: &BuildRow,
        state: BuildState,
        message: &str,
    ) -> Result<(), QueueError> {
        self.set_report(Report {
            repo: b.repo.clone(),
            sha: b.commit.clone(),
            context: build_context(b.target.as_str(), &b.package),
            state: state.report_state(),
            description: message.to_string(),
            target_url: Some(self.build_url(&b.id)),
            builds: vec![],
        })
        .await
    }

    /// The aggregate status of a commit, set directly: before there are builds to sum up
    /// (waiting for approval, planning failed, nothing to build).
    pub(in crate::queue) async fn report_commit(
        &self,
        repo: &RepoId,
        sha: &CommitSha,
        state: ReportState,
        description: String,
    ) -> Result<(), QueueError> {
        self.set_aggregate(repo, sha, state, description, vec![])
            .await
    }

    /// The aggregate report of a commit, linking its page, with the builds it lists.
    async fn set_aggregate(
        &self,
        repo: &RepoId,
        sha: &CommitSha,
        state: ReportState,
        description: String,
        builds: Vec<BuildLine>,
    ) -> Result<(), QueueError> {
        self.set_report(Report {
            repo: repo.clone(),
            sha: sha.clone(),
            context: AGGREGATE_CONTEXT.into(),
            state,
            description,
            target_url: Some(self.index_url(sha)),
            builds,
        })
        .await
    }

    /// Sums up the latest build of each package and target at a commit.
    pub(in crate::queue) async fn report_aggregate(
        &self,
        repo: &RepoId,
        sha: &CommitSha,
    ) -> Result<(), QueueError> {
        let builds = self.inner.store.latest_builds_of_commit(repo, sha).await?;
        if builds.is_empty() {
            return Ok(());
        }
        let (state, description) = summary(&builds);
        let lines = builds.iter().map(|b| self.build_line(b)).collect();
        self.set_aggregate(repo, sha, state, description, lines)
            .await
    }

    /// A build as the aggregate lists it, with the links a per-change report shows.
    fn build_line(&self, b: &BuildRow) -> BuildLine {
        let url = self.build_url(&b.id);
        BuildLine {
            package: b.package.clone(),
            target: b.target.to_string(),
            state: b.state.as_str().to_string(),
            message: b.message.clone(),
            duration_ms: match (b.started_at, b.finished_at) {
                (Some(s), Some(f)) => u64::try_from(f.0 - s.0).ok(),
                _ => None,
            },
            log_url: format!("{url}/logs/build.log"),
            url,
            repo_url: self.change_repo_url(b),
        }
    }
}

/// The aggregate of builds: pending while any is open, then failure if any failed, error
/// if any did not complete, success otherwise; the description names the first culprit.
fn summary(builds: &[BuildRow]) -> (ReportState, String) {
    let n = builds.len();
    let open = builds.iter().filter(|b| !b.state.is_final()).count();
    let failed: Vec<&BuildRow> = builds
        .iter()
        .filter(|b| b.state == BuildState::Failed)
        .collect();
    let errored: Vec<&BuildRow> = builds
        .iter()
        .filter(|b| b.state.report_state() == ReportState::Error)
        .collect();
    let first = |b: &BuildRow| {
        format!(
            "{}/{}: {}",
            b.target,
            b.package,
            b.message.as_deref().unwrap_or(b.state.as_str())
        )
    };
    if open > 0 {
        (
            ReportState::Pending,
            format!("{} of {n} build(s) done", n - open),
        )
    } else if let Some(b) = failed.first() {
        (
            ReportState::Failure,
            format!("{} of {n} failed; {}", failed.len(), first(b)),
        )
    } else if let Some(b) = errored.first() {
        (
            ReportState::Error,
            format!("{} of {n} did not complete; {}", errored.len(), first(b)),
        )
    } else {
        (ReportState::Success, format!("{n} build(s) succeeded"))
    }
}
