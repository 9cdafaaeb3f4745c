//! Queries of the web pages that are no table's own business.

use super::rows::{build_rows, report_rows, ReportRecord};
use super::{BuildRow, ReportRow, Store, StoreError};
use crate::model::{CommitSha, RepoId, ReportState};

impl Store {
    /// The builds of `sha` in any repository, newest first, at most `limit`: the commit
    /// page, where an aggregate status links, whatever the age of the commit (index
    /// `builds_by_commit_sha`, migration 0010).
    pub async fn builds_of_commit(
        &self,
        sha: &CommitSha,
        limit: i64,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let sha = sha.as_str();
        let rows = build_rows!(
            "SELECT",
            "FROM builds WHERE commit_sha = ? ORDER BY seq DESC LIMIT ?",
            sha,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(BuildRow::try_from).collect()
    }

    /// The statuses of `sha` in `repo` as the outbox holds them (what the forge was, or is
    /// about to be, told), by context (index of `UNIQUE (repo, sha, context)`).
    pub async fn reports_of_commit(
        &self,
        repo: &RepoId,
        sha: &CommitSha,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let (repo, sha) = (repo.as_str(), sha.as_str());
        let rows: Vec<ReportRecord> = report_rows!(
            "SELECT",
            "FROM reports WHERE repo = ? AND sha = ? ORDER BY context",
            repo,
            sha,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ReportRow::try_from).collect()
    }
}
