//! Ending a change (a branch or a pull request) at once: its queued and running builds and
//! its triggers not yet planned, composed into the caller's transaction
//! ([`supersede`], [`close`]); the `Store` methods run them in a transaction of their own.

use super::ledger::{self, Conn};
use super::{BuildRow, Store, StoreError, TriggerId, TriggerState};
use crate::model::{BuildState, ChangeKind, CommitSha, RepoId, Trigger};

/// Ends the queued and running builds of the same change as `t` at other commits than its
/// head, and its older triggers not yet planned (never a newer one: a newer patchset or
/// push that arrived while this one waited must not be ended by it); returns the builds
/// ended, as they were. A running build's container is stopped by the caller.
pub async fn supersede(
    conn: &mut Conn,
    t: &Trigger,
    keep_trigger: TriggerId,
) -> Result<Vec<BuildRow>, StoreError> {
    let message = format!("superseded by {}", t.head);
    end_change(
        conn,
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
pub async fn close(
    conn: &mut Conn,
    repo: &RepoId,
    kind: ChangeKind,
    ref_name: &str,
    pr_number: Option<u64>,
    message: &str,
) -> Result<Vec<BuildRow>, StoreError> {
    end_change(
        conn,
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
    conn: &mut Conn,
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
    let rows = ledger::end_change(
        conn,
        &ledger::ChangeEnd {
            repo,
            pr_number: by_pr.map(|n| n as u64),
            ref_name: key_ref,
            keep_sha,
            state: build_state,
            message,
        },
    )
    .await?;
    let keep_trigger = keep_trigger.map(|t| t.0);
    let repo = repo.as_str();
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
    .execute(&mut *conn)
    .await?;
    Ok(rows)
}

impl Store {
    /// [`supersede`] in a transaction of its own.
    pub async fn supersede(
        &self,
        t: &Trigger,
        keep_trigger: TriggerId,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let mut tx = self.tx().await?;
        let rows = supersede(&mut tx, t, keep_trigger).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// [`close`] in a transaction of its own.
    pub async fn close_change(
        &self,
        repo: &RepoId,
        kind: ChangeKind,
        ref_name: &str,
        pr_number: Option<u64>,
        message: &str,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let mut tx = self.tx().await?;
        let rows = close(&mut tx, repo, kind, ref_name, pr_number, message).await?;
        tx.commit().await?;
        Ok(rows)
    }
}
