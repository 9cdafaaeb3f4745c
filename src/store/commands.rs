//! `commands`: commands from comments, kept until the queue has checked and run them.

use super::{Millis, Store, StoreError, TriggerId, TriggerState};
use crate::model::{Command, CommandRequest, CommitSha, RepoId};

#[derive(Debug, Clone)]
pub struct StoredCommand {
    pub id: i64,
    pub request: CommandRequest,
    /// When the comment's delivery was stored: an approval without a commit is for the
    /// head the pull request had then.
    pub created_at: Millis,
    /// Permission checks that hit a forge fault.
    pub attempts: i64,
}

/// A command as the commit page shows it: who asked what, and what became of it.
#[derive(Debug, Clone)]
pub struct CommandRow {
    pub repo: RepoId,
    pub pr_number: Option<u64>,
    pub user: String,
    /// `rebuild` or `approve`, with what it named (package and target, or the commit).
    pub command: String,
    pub package: Option<String>,
    pub target: Option<String>,
    pub commit_prefix: Option<String>,
    /// `new`, `trusted`, `done`, `refused`, `failed`.
    pub state: String,
    pub message: Option<String>,
    pub created_at: Millis,
}

impl Store {
    /// The commands bound to `sha` (a rebuild of it, an approval carried out for it), newest
    /// first, at most `limit` (index `commands_by_head`, migration 0016).
    pub async fn commands_of_commit(
        &self,
        sha: &CommitSha,
        limit: i64,
    ) -> Result<Vec<CommandRow>, StoreError> {
        let head = sha.as_str();
        let rows = sqlx::query!(
            "SELECT repo, pr_number, user, command, package, target, commit_prefix, state, message, created_at
             FROM commands WHERE head_sha = ? ORDER BY id DESC LIMIT ?",
            head,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(CommandRow {
                    repo: RepoId::parse(&r.repo)?,
                    pr_number: r.pr_number.map(|n| n as u64),
                    user: r.user,
                    command: r.command,
                    package: r.package,
                    target: r.target,
                    commit_prefix: r.commit_prefix,
                    state: r.state,
                    message: r.message,
                    created_at: Millis(r.created_at),
                })
            })
            .collect()
    }

    /// The oldest command to handle now (not one waiting for a retry).
    pub async fn next_command(&self) -> Result<Option<StoredCommand>, StoreError> {
        let now = Millis::now().0;
        let row = sqlx::query!(
            "SELECT id, repo, pr_number, head_sha, user, command, package, target, commit_prefix, state, created_at, attempts FROM commands
             WHERE state IN ('new', 'trusted') AND next_attempt_at <= ? ORDER BY id LIMIT 1",
            now,
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let command = match r.command.as_str() {
            "rebuild" => Command::Rebuild {
                package: r.package,
                target: r.target,
            },
            "approve" => Command::Approve {
                commit: r.commit_prefix,
            },
            other => return Err(StoreError::Corrupt(format!("unknown command `{other}`"))),
        };
        Ok(Some(StoredCommand {
            id: r.id,
            request: CommandRequest {
                repo: RepoId::parse(&r.repo)?,
                pr_number: r.pr_number.map(|n| n as u64),
                head: r.head_sha.map(|s| CommitSha::parse(&s)).transpose()?,
                user: r.user,
                command,
                trusted: r.state == "trusted",
            },
            created_at: Millis(r.created_at),
            attempts: r.attempts,
        }))
    }

    /// Handles a command again at `at`, after a forge fault.
    pub async fn retry_command(
        &self,
        id: i64,
        at: Millis,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE commands SET attempts = attempts + 1, next_attempt_at = ?, message = ? WHERE id = ?",
            at.0,
            message,
            id,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When the next command waiting for a retry is due.
    pub async fn next_command_due(&self) -> Result<Option<Millis>, StoreError> {
        let v = sqlx::query_scalar!(
            r#"SELECT MIN(next_attempt_at) AS "due?: i64" FROM commands WHERE state IN ('new', 'trusted')"#
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(Millis))
    }

    pub async fn finish_command(
        &self,
        id: i64,
        state: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE commands SET state = ?, message = ? WHERE id = ?",
            state,
            message,
            id,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a maintainer approved builds of this pull request at this commit: an
    /// approve command that was carried out for it.
    pub async fn is_approved(
        &self,
        repo: &RepoId,
        pr_number: u64,
        head: &CommitSha,
    ) -> Result<bool, StoreError> {
        let pr_number = pr_number as i64;
        let repo = repo.as_str();
        let head = head.as_str();
        let n = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM commands
               WHERE repo = ? AND pr_number = ? AND command = 'approve' AND state = 'done'
                 AND head_sha = ?"#,
            repo,
            pr_number,
            head,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Makes the new trigger `id` of fork pull request `t` wait for a maintainer's
    /// approval, unless one for its head is already done: one statement, so that an
    /// approval is either seen here or finds the trigger waiting and releases it. Returns
    /// whether the trigger now waits.
    pub async fn await_approval(
        &self,
        id: TriggerId,
        t: &crate::model::Trigger,
        message: &str,
    ) -> Result<bool, StoreError> {
        let (repo, head) = (t.repo.as_str(), t.head.as_str());
        let pr_number = t.pr_number.map(|n| n as i64);
        let n = sqlx::query!(
            "UPDATE triggers SET state = ?, message = ?
             WHERE id = ? AND state = ? AND NOT EXISTS (
                 SELECT 1 FROM commands WHERE repo = ? AND pr_number = ? AND command = 'approve'
                   AND state = 'done' AND head_sha = ?)",
            TriggerState::AwaitingApproval,
            message,
            id.0,
            TriggerState::New,
            repo,
            pr_number,
            head,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Carries out an approval in one transaction: the command is done and bound to `head`,
    /// and that commit's triggers waiting for it go back to `new`. Returns how many moved.
    pub async fn approve(
        &self,
        command_id: i64,
        repo: &RepoId,
        pr_number: u64,
        head: &CommitSha,
    ) -> Result<u64, StoreError> {
        let pr_number = pr_number as i64;
        let repo = repo.as_str();
        let head = head.as_str();
        let message = format!("approved {head}");
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "UPDATE commands SET state = 'done', head_sha = ?, message = ? WHERE id = ?",
            head,
            message,
            command_id,
        )
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query!(
            "UPDATE triggers SET state = ?, message = NULL
             WHERE repo = ? AND pr_number = ? AND head_sha = ? AND state = ?",
            TriggerState::New,
            repo,
            pr_number,
            head,
            TriggerState::AwaitingApproval,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(moved)
    }
}

/// Inserts a command inside its delivery's transaction. One the forge already vouched for
/// starts out `trusted`, so that the queue skips the permission check.
pub(super) async fn insert_command(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    c: &CommandRequest,
    now: Millis,
) -> Result<(), StoreError> {
    let (package, target) = match &c.command {
        Command::Rebuild { package, target } => (package.as_deref(), target.as_deref()),
        Command::Approve { .. } => (None, None),
    };
    let commit_prefix = match &c.command {
        Command::Approve { commit } => commit.as_deref(),
        Command::Rebuild { .. } => None,
    };
    let repo = c.repo.as_str();
    let pr_number = c.pr_number.map(|n| n as i64);
    let head = c.head.as_ref().map(|h| h.as_str());
    let command = c.command.name();
    let state = if c.trusted { "trusted" } else { "new" };
    sqlx::query!(
        "INSERT INTO commands (repo, pr_number, head_sha, user, command, package, target, commit_prefix, state, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        repo,
        pr_number,
        head,
        c.user,
        command,
        package,
        target,
        commit_prefix,
        state,
        now.0,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
