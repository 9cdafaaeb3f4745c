//! Queries of the web pages that are no table's own business.

use super::builds::BuildRecord;
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
        let rows = sqlx::query_as!(
            BuildRecord,
            r#"SELECT seq AS "seq!", id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number, package,
                    spec_path, target, state, attempts, next_attempt_at, container_id, created_at,
                    started_at, finished_at, result_dir, phase, message, stage
             FROM builds WHERE commit_sha = ? ORDER BY seq DESC LIMIT ?"#,
            sha,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(BuildRow::try_from).collect()
    }
}
