//! A reporter per forge: which of a transition's reports each forge wants. GitHub shows a
//! status per build and an aggregate that counts them; Gerrit shows one review per
//! patchset (a start message, then the vote), so its reporter asks only for the aggregate,
//! and only when that review can change. Check runs would be a third reporter.
//!
//! Reporters are pure: the queue gives them the transition and the commit's counts, and
//! writes what they return in the transition's own transaction.

use crate::model::{
    build_context, BuildState, CommitSha, ForgeKind, RepoId, Report, ReportState, TargetName,
};
use crate::store::ledger::{Counts, EventKind};
use crate::store::BuildRow;

/// What a forge wants of a commit's aggregate after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateNeed {
    /// Nothing this forge shows can have changed.
    Skip,
    /// The summary (state and description from the counts).
    Summary,
    /// The summary and the list of builds it sums up.
    WithBuilds,
}

/// One build's status as a transition leaves it.
#[derive(Debug, Clone)]
pub struct BuildStatus<'a> {
    pub repo: &'a RepoId,
    pub sha: &'a CommitSha,
    pub target: &'a TargetName,
    pub package: &'a str,
    pub state: BuildState,
    pub message: &'a str,
    /// Its build page.
    pub url: String,
}

pub trait Reporter: Send + Sync {
    /// The status of one build (its `context`, see [`crate::model::build_context`]) after
    /// a transition, or `None` when this forge shows none.
    fn build_status(&self, b: BuildStatus<'_>) -> Option<Report>;

    /// Whether the aggregate must be written after a transition of `kind`, given the
    /// commit's counts after it.
    fn aggregate_need(&self, kind: EventKind, counts: &Counts) -> AggregateNeed;

    /// Whether [`Reporter::aggregate_need`] must see the counts after a transition of
    /// `kind`; `false` spares reading them when the answer is `Skip` whatever they are.
    fn reads_counts(&self, _kind: EventKind) -> bool {
        true
    }
}

/// Commit statuses: one per build, plus the aggregate whenever a build ends or is planned.
pub struct GithubReporter;

impl Reporter for GithubReporter {
    fn build_status(&self, b: BuildStatus<'_>) -> Option<Report> {
        Some(Report {
            repo: b.repo.clone(),
            sha: b.sha.clone(),
            context: build_context(b.target.as_str(), b.package),
            state: b.state.report_state(),
            description: b.message.to_string(),
            target_url: Some(b.url),
            builds: vec![],
        })
    }

    fn aggregate_need(&self, kind: EventKind, _counts: &Counts) -> AggregateNeed {
        if self.reads_counts(kind) {
            AggregateNeed::Summary
        } else {
            AggregateNeed::Skip
        }
    }

    /// A start or a retry leaves "k of n done" as it was.
    fn reads_counts(&self, kind: EventKind) -> bool {
        !matches!(
            kind,
            EventKind::Started | EventKind::Requeued | EventKind::Recorded
        )
    }
}

/// One review per patchset: the start message once the builds are planned and none has
/// ended, then the vote once all have ended. Nothing in between, and no per-build status.
pub struct GerritReporter;

impl Reporter for GerritReporter {
    fn build_status(&self, _: BuildStatus<'_>) -> Option<Report> {
        None
    }

    fn aggregate_need(&self, kind: EventKind, counts: &Counts) -> AggregateNeed {
        let none_ended = counts.open() == counts.total();
        match kind {
            EventKind::Planned if none_ended => AggregateNeed::WithBuilds,
            _ if counts.total() > 0 && counts.open() == 0 => AggregateNeed::WithBuilds,
            _ => AggregateNeed::Skip,
        }
    }
}

/// The reporter of a forge.
pub fn reporter(forge: ForgeKind) -> &'static dyn Reporter {
    match forge {
        // A local run (`build --git`) keeps GitHub-shaped statuses for its summary.
        ForgeKind::GitHub | ForgeKind::Local => &GithubReporter,
        ForgeKind::Gerrit => &GerritReporter,
    }
}

/// The aggregate of a commit from its counts: pending while any build is open, then
/// failure if any failed, error if any did not complete, success otherwise. `culprit` (the
/// first failed, else the first that did not complete) is read only once all ended.
pub fn summary(c: &Counts, culprit: Option<&BuildRow>) -> (ReportState, String) {
    let n = c.total();
    let first = |b: &BuildRow| {
        format!(
            "{}/{}: {}",
            b.target,
            b.package,
            b.message.as_deref().unwrap_or(b.state.as_str())
        )
    };
    let named = |prefix: String| match culprit {
        Some(b) => format!("{prefix}; {}", first(b)),
        None => prefix,
    };
    if c.open() > 0 {
        (
            ReportState::Pending,
            format!("{} of {n} build(s) done", n - c.open()),
        )
    } else if c.failed > 0 {
        (
            ReportState::Failure,
            named(format!("{} of {n} failed", c.failed)),
        )
    } else if c.errored() > 0 {
        (
            ReportState::Error,
            named(format!("{} of {n} did not complete", c.errored())),
        )
    } else {
        (ReportState::Success, format!("{n} build(s) succeeded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(queued: i64, running: i64, succeeded: i64, failed: i64) -> Counts {
        Counts {
            queued,
            running,
            succeeded,
            failed,
            ..Counts::default()
        }
    }

    #[test]
    fn gerrit_wants_the_start_and_the_end_only() {
        let g = GerritReporter;
        assert_eq!(
            g.aggregate_need(EventKind::Planned, &counts(3, 0, 0, 0)),
            AggregateNeed::WithBuilds
        );
        for kind in [EventKind::Started, EventKind::Requeued, EventKind::Ended] {
            assert_eq!(
                g.aggregate_need(kind, &counts(1, 1, 1, 0)),
                AggregateNeed::Skip,
                "{kind:?}"
            );
        }
        assert_eq!(
            g.aggregate_need(EventKind::Ended, &counts(0, 0, 2, 1)),
            AggregateNeed::WithBuilds
        );
    }

    #[test]
    fn github_skips_the_aggregate_when_nothing_ended() {
        let g = GithubReporter;
        assert_eq!(
            g.aggregate_need(EventKind::Started, &counts(1, 1, 0, 0)),
            AggregateNeed::Skip
        );
        assert_eq!(
            g.aggregate_need(EventKind::Ended, &counts(1, 0, 1, 0)),
            AggregateNeed::Summary
        );
    }

    #[test]
    fn summary_counts_and_names_the_culprit_once_all_ended() {
        assert_eq!(
            summary(&counts(1, 1, 2, 0), None),
            (ReportState::Pending, "2 of 4 build(s) done".into())
        );
        assert_eq!(
            summary(&counts(0, 0, 2, 0), None),
            (ReportState::Success, "2 build(s) succeeded".into())
        );
        let e = Counts {
            succeeded: 1,
            superseded: 1,
            ..Counts::default()
        };
        assert_eq!(summary(&e, None).0, ReportState::Error);
        assert_eq!(
            summary(&counts(0, 0, 1, 1), None),
            (ReportState::Failure, "1 of 2 failed".into())
        );
    }
}
