//! Queries of the web pages that are no table's own business.

use super::rows::build_rows;
use super::{BuildRow, Store, StoreError};
use crate::model::CommitSha;

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
}
