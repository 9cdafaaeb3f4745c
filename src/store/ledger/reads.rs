//! What the ledger's tables say, read inside a transaction: a commit's counts, the culprit
//! an aggregate names, the builds it lists, what start-up reconciliation must report again,
//! and a build's history.

use super::EventKind;
use super::{Conn, Counts};
use crate::model::{BuildId, BuildState, CommitSha, RepoId};
use crate::store::rows::build_rows;
use crate::store::{BuildRow, Millis, Store, StoreError};

/// The commit's counts; `None` when nothing was planned at it.
pub async fn counts(
    conn: &mut Conn,
    repo: &RepoId,
    sha: &CommitSha,
) -> Result<Option<Counts>, StoreError> {
    let (repo, sha) = (repo.as_str(), sha.as_str());
    let row = sqlx::query!(
        r#"SELECT queued, running, succeeded, failed, error, cancelled, superseded
           FROM commit_counts WHERE repo = ? AND commit_sha = ?"#,
        repo,
        sha,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Counts {
        queued: r.queued,
        running: r.running,
        succeeded: r.succeeded,
        failed: r.failed,
        error: r.error,
        cancelled: r.cancelled,
        superseded: r.superseded,
    }))
}

/// The first (by package, then target) of a commit's latest builds that failed, else
/// the first that did not complete: the culprit an aggregate names. One indexed query.
pub async fn culprit(
    conn: &mut Conn,
    repo: &RepoId,
    sha: &CommitSha,
) -> Result<Option<BuildRow>, StoreError> {
    let (repo, sha) = (repo.as_str(), sha.as_str());
    let row = build_rows!(
        "SELECT",
        "FROM builds
         WHERE repo = ? AND commit_sha = ? AND latest = 1
           AND state IN ('failed', 'error', 'cancelled', 'superseded')
         ORDER BY state != 'failed', package, target LIMIT 1",
        repo,
        sha,
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(BuildRow::try_from).transpose()
}

/// The latest build of each package and target at a commit, by package and target: what
/// its aggregate sums up (a rebuild replaces the earlier build). One indexed query.
pub async fn latest_of_commit(
    conn: &mut Conn,
    repo: &RepoId,
    sha: &CommitSha,
) -> Result<Vec<BuildRow>, StoreError> {
    let (repo, sha) = (repo.as_str(), sha.as_str());
    let rows = build_rows!(
        "SELECT",
        "FROM builds WHERE repo = ? AND commit_sha = ? AND latest = 1 ORDER BY package, target",
        repo,
        sha,
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(BuildRow::try_from).collect()
}

/// Commits whose builds have all ended but whose aggregate report is missing or still
/// pending: what a crash between a build's end and its reports would leave (the start-up
/// reconciliation re-derives their reports). Also every ended latest build of a forge with
/// per-build statuses whose own status is missing or pending.
pub async fn unreported(conn: &mut Conn) -> Result<Vec<(RepoId, CommitSha)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT c.repo AS "repo!", c.commit_sha AS "commit_sha!" FROM commit_counts c
           LEFT JOIN reports r ON r.repo = c.repo AND r.sha = c.commit_sha AND r.context = 'packetary'
           WHERE c.queued + c.running = 0
             AND c.succeeded + c.failed + c.error + c.cancelled + c.superseded > 0
             AND (r.state IS NULL OR r.state = 'pending')
           UNION
           SELECT b.repo, b.commit_sha FROM builds b
           LEFT JOIN reports r ON r.repo = b.repo AND r.sha = b.commit_sha
                AND r.context = 'packetary/' || b.target || '/' || b.package
           WHERE b.latest = 1 AND b.state NOT IN ('queued', 'running') AND b.repo LIKE 'github:%'
             AND (r.state IS NULL OR r.state = 'pending')"#
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| Ok((RepoId::parse(&r.repo)?, CommitSha::parse(&r.commit_sha)?)))
        .collect()
}

/// One entry of a build's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildEvent {
    pub kind: EventKind,
    pub state: BuildState,
    pub message: Option<String>,
    pub at: Millis,
}

impl Store {
    /// The outcome [`super::record`] kept for a running build, if any.
    pub async fn recorded_outcome(&self, id: &BuildId) -> Result<Option<String>, StoreError> {
        let id = id.as_str();
        Ok(sqlx::query_scalar!(
            "SELECT outcome FROM builds WHERE id = ? AND state = ?",
            id,
            BuildState::Running,
        )
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// A build's history, oldest first.
    pub async fn build_events(&self, id: &BuildId) -> Result<Vec<BuildEvent>, StoreError> {
        let id = id.as_str();
        let rows = sqlx::query!(
            r#"SELECT kind AS "kind: EventKind", state AS "state: BuildState", message, at
               FROM build_events WHERE build_id = ? ORDER BY seq"#,
            id
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| BuildEvent {
                kind: r.kind,
                state: r.state,
                message: r.message,
                at: Millis(r.at),
            })
            .collect())
    }
}
