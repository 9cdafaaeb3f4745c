//! Ending a change (a branch or a pull request) at once: its queued and running builds and
//! its triggers not yet planned, in one transaction across `builds` and `triggers`.

use super::builds::BuildRecord;
use super::{BuildRow, Millis, Store, StoreError, TriggerId, TriggerState};
use crate::model::{BuildState, ChangeKind, CommitSha, RepoId, Trigger};

impl Store {
    /// Ends the queued and running builds of the same change (branch or pull request) at
    /// other commits than `head`, and its older triggers not yet planned (never a newer one:
    /// a newer patchset or push that arrived while this one waited must not be ended by
    /// it); returns the builds ended.
    /// A running build's container is stopped by the caller (see `queue`).
    pub async fn supersede(
        &self,
        t: &Trigger,
        keep_trigger: TriggerId,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let message = format!("superseded by {}", t.head);
        self.end_change(
            &t.repo,
            t.kind,
            &t.ref_name,
            t.pr_number,
            Some(&t.head),
            Some(keep_trigger),
            BuildState::Superseded,
            TriggerState::Superseded,
            &message,
        )
        .await
    }

    /// Ends every queued and running build of a change (closed pull request, deleted branch).
    pub async fn close_change(
        &self,
        repo: &RepoId,
        kind: ChangeKind,
        ref_name: &str,
        pr_number: Option<u64>,
        message: &str,
    ) -> Result<Vec<BuildRow>, StoreError> {
        self.end_change(
            repo,
            kind,
            ref_name,
            pr_number,
            None,
            None,
            BuildState::Cancelled,
            TriggerState::Closed,
            message,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn end_change(
        &self,
        repo: &RepoId,
        kind: ChangeKind,
        ref_name: &str,
        pr_number: Option<u64>,
        keep_sha: Option<&CommitSha>,
        keep_trigger: Option<TriggerId>,
        build_state: BuildState,
        trigger_state: TriggerState,
        message: &str,
    ) -> Result<Vec<BuildRow>, StoreError> {
        // A pull request is identified by its number, a branch by its ref.
        let (by_pr, key_ref) = match kind {
            ChangeKind::PullRequest => (pr_number.map(|n| n as i64), None),
            ChangeKind::Push => (None, Some(ref_name)),
        };
        let keep_sha = keep_sha.map(|s| s.as_str());
        let keep_trigger = keep_trigger.map(|t| t.0);
        let (repo, build_state, trigger_state) =
            (repo.as_str(), build_state.as_str(), trigger_state.as_str());
        let now = Millis::now();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_as!(
            BuildRecord,
            r#"UPDATE builds SET state = ?, message = ?, finished_at = ?
               WHERE repo = ? AND state IN ('queued', 'running')
                 AND ((? IS NOT NULL AND pr_number = ?) OR (? IS NOT NULL AND pr_number IS NULL AND ref_name = ?))
                 AND (? IS NULL OR commit_sha != ?)
               RETURNING seq AS "seq!", id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number,
                         package, spec_path, target, state, attempts, next_attempt_at,
                         container_id, created_at, started_at, finished_at, result_dir, phase,
                         message, stage"#,
            build_state,
            message,
            now.0,
            repo,
            by_pr,
            by_pr,
            key_ref,
            key_ref,
            keep_sha,
            keep_sha,
        )
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE triggers SET state = ?, message = ?
             WHERE repo = ? AND state IN ('new', 'awaiting_approval')
               AND ((? IS NOT NULL AND pr_number = ?) OR (? IS NOT NULL AND pr_number IS NULL AND ref_name = ?))
               AND (? IS NULL OR id < ?)",
            trigger_state,
            message,
            repo,
            by_pr,
            by_pr,
            key_ref,
            key_ref,
            keep_trigger,
            keep_trigger,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(BuildRow::try_from).collect()
    }
}
