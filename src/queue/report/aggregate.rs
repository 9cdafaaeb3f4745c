//! The statuses the queue wants the forge to show, written in the transaction of the
//! transition that changed them: the reporter of the repository's forge
//! ([`super::reporter`]) says which. The aggregate (`packetary`) of a commit is summed up
//! from the ledger's counts of its latest builds, with links to the build pages. They are
//! desired states, stored in the outbox; the latest one for a context wins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{
    BuildId, BuildLine, BuildState, CommitSha, RepoId, Report, ReportState, AGGREGATE_CONTEXT,
};
use crate::store::ledger::{self, Conn, Counts, EventKind, Tx};
use crate::store::{reports, BuildRow, ReportRow, Store};

use super::super::{QueueError, Wakes};
use super::reporter::{reporter, summary, AggregateNeed, BuildStatus, Reporter};

/// Writes the reports of transitions: what each stage that changes a build's state uses to
/// tell the forge, in that change's own transaction. Knows the URLs reports link to.
pub(in crate::queue) struct Reports {
    public_url: String,
    /// For the links to a change's published repositories.
    data_dir: PathBuf,
    wakes: Arc<Wakes>,
}

impl Reports {
    pub fn new(public_url: &str, data_dir: &Path, wakes: Arc<Wakes>) -> Reports {
        Reports {
            public_url: public_url.to_string(),
            data_dir: data_dir.to_path_buf(),
            wakes,
        }
    }

    pub fn build_url(&self, id: &BuildId) -> String {
        format!("{}/builds/{id}", self.public_url)
    }

    fn index_url(&self, sha: &CommitSha) -> String {
        format!("{}/?commit={sha}", self.public_url)
    }

    /// Reports were committed (what [`ledger::Tx::commit`] returned): hand them to the
    /// outbox and wake it.
    pub fn written(&self, rows: Vec<ReportRow>) {
        if !rows.is_empty() {
            self.wakes.handoff.put(rows);
            self.wakes.outbox.wake();
        }
    }

    /// Writes the reports of a transition of `b` (to `state`, saying `message`) into the
    /// transition's transaction, in one statement: its own status and its commit's
    /// aggregate, as far as the reporter of its forge wants them. `counts` are the
    /// commit's counts after the transition when the ledger returned them.
    pub async fn transition(
        &self,
        tx: &mut Tx,
        kind: EventKind,
        b: &BuildRow,
        (state, message): (BuildState, &str),
        counts: Option<Counts>,
    ) -> Result<(), QueueError> {
        let reporter = reporter(b.repo.forge());
        let mut out: Vec<Report> = reporter
            .build_status(self.status_of(b, state, message))
            .into_iter()
            .collect();
        out.extend(
            self.aggregate_report(tx, reporter, kind, (&b.repo, &b.commit), counts)
                .await?,
        );
        reports::upsert_all(tx, &out).await?;
        Ok(())
    }

    /// Writes the aggregate of a commit after a transition of `kind` (see
    /// [`Reports::aggregate_report`]).
    pub async fn aggregate_of(
        &self,
        tx: &mut Tx,
        reporter: &dyn Reporter,
        kind: EventKind,
        repo: &RepoId,
        sha: &CommitSha,
    ) -> Result<(), QueueError> {
        if let Some(r) = self
            .aggregate_report(tx, reporter, kind, (repo, sha), None)
            .await?
        {
            reports::upsert(tx, &r).await?;
        }
        Ok(())
    }

    /// The aggregate of a commit after a transition of `kind`, from the ledger's counts
    /// (given, or read when not; the culprit and the list of builds read only when the
    /// forge shows them); `None` when the forge wants none.
    pub async fn aggregate_report(
        &self,
        conn: &mut Conn,
        reporter: &dyn Reporter,
        kind: EventKind,
        (repo, sha): (&RepoId, &CommitSha),
        counts: Option<Counts>,
    ) -> Result<Option<Report>, QueueError> {
        if !reporter.reads_counts(kind) {
            return Ok(None);
        }
        let counts = match counts {
            Some(c) => c,
            None => match ledger::counts(conn, repo, sha).await? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let need = reporter.aggregate_need(kind, &counts);
        if counts.total() == 0 || need == AggregateNeed::Skip {
            return Ok(None);
        }
        let culprit = if counts.open() == 0 && counts.failed + counts.errored() > 0 {
            ledger::culprit(conn, repo, sha).await?
        } else {
            None
        };
        let (state, description) = summary(&counts, culprit.as_ref());
        let builds = if need == AggregateNeed::WithBuilds {
            ledger::latest_of_commit(conn, repo, sha)
                .await?
                .iter()
                .map(|b| self.build_line(b))
                .collect()
        } else {
            vec![]
        };
        Ok(Some(self.aggregate(repo, sha, state, description, builds)))
    }

    /// The aggregate status of a commit, set directly: before there are builds to sum up
    /// (waiting for approval, planning failed, nothing to build).
    pub async fn commit(
        &self,
        store: &Store,
        repo: &RepoId,
        sha: &CommitSha,
        state: ReportState,
        description: String,
    ) -> Result<(), QueueError> {
        let r = self.aggregate(repo, sha, state, description, vec![]);
        let written = store.set_report(&r).await?;
        self.written(written);
        Ok(())
    }

    /// The aggregate report of a commit, linking its page, with the builds it lists.
    fn aggregate(
        &self,
        repo: &RepoId,
        sha: &CommitSha,
        state: ReportState,
        description: String,
        builds: Vec<BuildLine>,
    ) -> Report {
        Report {
            repo: repo.clone(),
            sha: sha.clone(),
            context: AGGREGATE_CONTEXT.into(),
            state,
            description,
            target_url: Some(self.index_url(sha)),
            builds,
        }
    }

    /// A build's status as its reporter gets it.
    pub fn status_of<'a>(
        &self,
        b: &'a BuildRow,
        state: BuildState,
        message: &'a str,
    ) -> BuildStatus<'a> {
        BuildStatus {
            repo: &b.repo,
            sha: &b.commit,
            target: &b.target,
            package: &b.package,
            state,
            message,
            url: self.build_url(&b.id),
        }
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
            repo_url: super::super::publish::change_repo_url(&self.data_dir, &self.public_url, b),
        }
    }

    /// Start-up reconciliation: every commit whose builds all ended but whose statuses do
    /// not say so (a database from before the ledger, or any fault between an end and its
    /// reports) gets its reports derived again from the ledger, as bors refreshes its
    /// pending builds at start.
    pub async fn reconcile(&self, store: &Store) -> Result<usize, QueueError> {
        let mut tx = store.tx().await?;
        let commits = ledger::unreported(&mut tx).await?;
        for (repo, sha) in &commits {
            let reporter = reporter(repo.forge());
            for b in ledger::latest_of_commit(&mut tx, repo, sha).await? {
                let message = b.message.clone().unwrap_or_else(|| b.state.as_str().into());
                if let Some(r) = reporter.build_status(self.status_of(&b, b.state, &message)) {
                    reports::upsert(&mut tx, &r).await?;
                }
            }
            self.aggregate_of(&mut tx, reporter, EventKind::Ended, repo, sha)
                .await?;
        }
        let written = tx.commit().await?;
        if !commits.is_empty() {
            tracing::warn!(
                commits = commits.len(),
                "statuses derived again from the ledger at start-up"
            );
        }
        self.written(written);
        Ok(commits.len())
    }

    /// The reports of builds a change's end just ended (superseded, cancelled), in its
    /// transaction: each build's status, then each commit's aggregate once.
    pub async fn ended(
        &self,
        tx: &mut Tx,
        ended: &[BuildRow],
        state: BuildState,
        message: &str,
    ) -> Result<(), QueueError> {
        let kind = if state == BuildState::Superseded {
            EventKind::Superseded
        } else {
            EventKind::Cancelled
        };
        let mut commits: Vec<(&RepoId, &CommitSha)> = vec![];
        for b in ended {
            let reporter = reporter(b.repo.forge());
            if let Some(r) = reporter.build_status(self.status_of(b, state, message)) {
                reports::upsert(tx, &r).await?;
            }
            if !commits.contains(&(&b.repo, &b.commit)) {
                commits.push((&b.repo, &b.commit));
            }
        }
        for (repo, sha) in commits {
            self.aggregate_of(tx, reporter(repo.forge()), kind, repo, sha)
                .await?;
        }
        Ok(())
    }
}
