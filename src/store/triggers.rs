//! `triggers`: what a forge (or the service itself) asked to build, waiting to be planned.

use super::{Millis, Store, StoreError, TriggerId};
use crate::model::{ChangeKind, CommitSha, RepoId, Trigger};

/// State of a trigger in the planning pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerState {
    New,
    AwaitingApproval,
    Planned,
    Failed,
    Superseded,
    Closed,
}

impl TriggerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerState::New => "new",
            TriggerState::AwaitingApproval => "awaiting_approval",
            TriggerState::Planned => "planned",
            TriggerState::Failed => "failed",
            TriggerState::Superseded => "superseded",
            TriggerState::Closed => "closed",
        }
    }

    pub(super) fn parse(s: &str) -> Option<TriggerState> {
        [
            TriggerState::New,
            TriggerState::AwaitingApproval,
            TriggerState::Planned,
            TriggerState::Failed,
            TriggerState::Superseded,
            TriggerState::Closed,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct StoredTrigger {
    pub id: TriggerId,
    pub trigger: Trigger,
    pub state: TriggerState,
    pub message: Option<String>,
    pub created_at: Millis,
    /// Planning attempts that hit an infrastructure fault.
    pub attempts: i64,
    /// Whether it may have anything to supersede (decided when it was stored: see
    /// migration 0014); `false` skips the supersede step.
    pub supersedes: bool,
}

/// Where a trigger came from.
#[derive(Debug, Clone, Default)]
pub struct TriggerOrigin {
    /// The forge's delivery that brought it; `None` for one the service made itself (a
    /// `/packetary rebuild`).
    pub delivery: Option<String>,
    /// That delivery's event (`push`, `pull_request`, `patchset-created`, ...), while the
    /// delivery is remembered.
    pub event: Option<String>,
}

/// A `triggers` row as SQLite holds it; checked into a `StoredTrigger` by `TryFrom`. Read
/// with [`trigger_rows!`].
struct TriggerRecord {
    id: i64,
    repo: String,
    clone_url: String,
    kind: ChangeKind,
    ref_name: String,
    base_sha: Option<String>,
    head_sha: String,
    pr_number: Option<i64>,
    base_ref: Option<String>,
    from_fork: bool,
    sender: String,
    only_package: Option<String>,
    only_target: Option<String>,
    state: TriggerState,
    message: Option<String>,
    created_at: i64,
    attempts: i64,
    supersedes: bool,
}

/// `sqlx::query_as!` of [`TriggerRecord`]s: the one column list of a trigger row, then
/// `$rest` (`FROM triggers WHERE ...`).
macro_rules! trigger_rows {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            TriggerRecord,
            r#"SELECT id AS "id!", repo, clone_url, kind AS "kind: ChangeKind", ref_name, base_sha,
                      head_sha, pr_number, base_ref, from_fork AS "from_fork: bool", sender,
                      only_package, only_target, state AS "state: TriggerState", message,
                      created_at, attempts, supersedes AS "supersedes: bool" "#
                + $rest
            $(, $arg)*
        )
    };
}

impl TryFrom<TriggerRecord> for StoredTrigger {
    type Error = StoreError;

    fn try_from(r: TriggerRecord) -> Result<Self, StoreError> {
        Ok(StoredTrigger {
            id: TriggerId(r.id),
            trigger: Trigger {
                repo: RepoId::parse(&r.repo)?,
                clone_url: r.clone_url,
                kind: r.kind,
                ref_name: r.ref_name,
                base: r.base_sha.map(|s| CommitSha::parse(&s)).transpose()?,
                head: CommitSha::parse(&r.head_sha)?,
                pr_number: r.pr_number.map(|n| n as u64),
                base_ref: r.base_ref,
                from_fork: r.from_fork,
                sender: r.sender,
                only_package: r.only_package,
                only_target: r.only_target,
            },
            state: r.state,
            message: r.message,
            created_at: Millis(r.created_at),
            attempts: r.attempts,
            supersedes: r.supersedes,
        })
    }
}

impl Store {
    /// Queues a trigger made by the service itself (a rebuild, an approval).
    pub async fn insert_trigger(
        &self,
        t: &Trigger,
        state: TriggerState,
    ) -> Result<TriggerId, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = insert_trigger(&mut tx, t, state, None, Millis::now()).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The oldest trigger still to plan whose time has come.
    pub async fn next_new_trigger(&self) -> Result<Option<StoredTrigger>, StoreError> {
        let now = Millis::now().0;
        let row = trigger_rows!(
            "FROM triggers WHERE state = ? AND next_attempt_at <= ? ORDER BY id LIMIT 1",
            TriggerState::New,
            now,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredTrigger::try_from).transpose()
    }

    /// The oldest triggers due for planning (at most `limit`), oldest first, so that the
    /// planner can take the oldest of each repository at once.
    pub async fn new_triggers_due(&self, limit: i64) -> Result<Vec<StoredTrigger>, StoreError> {
        let now = Millis::now().0;
        let rows = trigger_rows!(
            "FROM triggers WHERE state = ? AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            TriggerState::New,
            now,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredTrigger::try_from).collect()
    }

    /// When the next trigger waiting for a retry of its planning is due.
    pub async fn next_trigger_due(&self) -> Result<Option<Millis>, StoreError> {
        let v = sqlx::query_scalar!(
            r#"SELECT MIN(next_attempt_at) AS "due?: i64" FROM triggers WHERE state = ?"#,
            TriggerState::New,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(Millis))
    }

    /// Plans a trigger again later, after an infrastructure fault.
    pub async fn retry_trigger(
        &self,
        id: TriggerId,
        at: Millis,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE triggers SET attempts = attempts + 1, next_attempt_at = ?, message = ? WHERE id = ? AND state = ?",
            at.0,
            message,
            id.0,
            TriggerState::New,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn triggers(&self) -> Result<Vec<StoredTrigger>, StoreError> {
        let rows = trigger_rows!("FROM triggers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredTrigger::try_from).collect()
    }

    /// The triggers of `sha` in any repository, newest first, at most `limit`, each with
    /// where it came from: the commit page, where its statuses link, shows how they came
    /// about (index `triggers_by_head`, migration 0016).
    pub async fn triggers_of_commit(
        &self,
        sha: &CommitSha,
        limit: i64,
    ) -> Result<Vec<(StoredTrigger, TriggerOrigin)>, StoreError> {
        let head = sha.as_str();
        let rows = trigger_rows!(
            "FROM triggers WHERE head_sha = ? ORDER BY id DESC LIMIT ?",
            head,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        let origins = sqlx::query!(
            r#"SELECT t.id AS "id!", t.delivery, d.event AS "event?"
               FROM triggers t LEFT JOIN deliveries d ON d.id = t.delivery
               WHERE t.head_sha = ?"#,
            head,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let st = StoredTrigger::try_from(r)?;
                let origin = origins
                    .iter()
                    .find(|o| o.id == st.id.0)
                    .map(|o| TriggerOrigin {
                        delivery: o.delivery.clone(),
                        event: o.event.clone(),
                    })
                    .unwrap_or_default();
                Ok((st, origin))
            })
            .collect()
    }

    pub async fn set_trigger_state(
        &self,
        id: TriggerId,
        state: TriggerState,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE triggers SET state = ?, message = ? WHERE id = ?",
            state,
            message,
            id.0,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The most recent trigger of a pull request, or of a commit: what a rebuild repeats.
    pub async fn latest_trigger(
        &self,
        repo: &RepoId,
        pr_number: Option<u64>,
        head: Option<&CommitSha>,
    ) -> Result<Option<StoredTrigger>, StoreError> {
        let pr_number = pr_number.map(|n| n as i64);
        let head = head.map(|h| h.as_str());
        let repo = repo.as_str();
        let row = trigger_rows!(
            "FROM triggers WHERE repo = ?
               AND (? IS NULL OR pr_number = ?) AND (? IS NULL OR head_sha = ?)
             ORDER BY id DESC LIMIT 1",
            repo,
            pr_number,
            pr_number,
            head,
            head,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredTrigger::try_from).transpose()
    }

    /// The commit an approval of a pull request is for: the latest head whose sha starts
    /// with `prefix` when the comment names one, or else the latest head received no later
    /// than the comment (what the maintainer could have looked at).
    pub async fn approval_head(
        &self,
        repo: &RepoId,
        pr_number: u64,
        prefix: Option<&str>,
        not_after: Millis,
    ) -> Result<Option<CommitSha>, StoreError> {
        let pr_number = pr_number as i64;
        let repo = repo.as_str();
        // A hex prefix (checked by the command parser) has no LIKE wildcards in it.
        let pattern = prefix.map(|p| format!("{p}%"));
        let head = sqlx::query_scalar!(
            r#"SELECT head_sha FROM triggers
               WHERE repo = ? AND pr_number = ?
                 AND (? IS NULL AND created_at <= ? OR head_sha LIKE ?)
               ORDER BY id DESC LIMIT 1"#,
            repo,
            pr_number,
            pattern,
            not_after.0,
            pattern,
        )
        .fetch_optional(&self.pool)
        .await?;
        head.map(|h| CommitSha::parse(&h))
            .transpose()
            .map_err(Into::into)
    }
}

/// Inserts a trigger inside the caller's transaction (a delivery's, or its own).
pub(super) async fn insert_trigger(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    t: &Trigger,
    state: TriggerState,
    delivery: Option<&str>,
    now: Millis,
) -> Result<TriggerId, StoreError> {
    let repo = t.repo.as_str();
    let base = t.base.as_ref().map(|s| s.as_str());
    let head = t.head.as_str();
    let pr_number = t.pr_number.map(|n| n as i64);
    let base_ref = t.base_ref.as_deref();
    let only_package = t.only_package.as_deref();
    let only_target = t.only_target.as_deref();
    // Credentials stay in the configuration (issue 22): fetches get them from there.
    let clone_url = crate::model::without_userinfo(&t.clone_url);
    // The change, as superseding matches it: a pull request by number, a branch by ref.
    let (by_pr, key_ref) = match t.kind {
        ChangeKind::PullRequest => (pr_number, None),
        ChangeKind::Push => (None, Some(t.ref_name.as_str())),
    };
    let id = sqlx::query!(
        "INSERT INTO triggers (repo, clone_url, kind, ref_name, base_sha, head_sha, pr_number, base_ref, from_fork, sender, only_package, only_target, delivery, state, created_at, supersedes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
            EXISTS (SELECT 1 FROM triggers o WHERE o.repo = ?1 AND o.state IN ('new', 'awaiting_approval')
                      AND ((?16 IS NOT NULL AND o.pr_number = ?16) OR (?17 IS NOT NULL AND o.pr_number IS NULL AND o.ref_name = ?17)))
            OR EXISTS (SELECT 1 FROM builds b WHERE b.repo = ?1 AND b.state IN ('queued', 'running') AND b.commit_sha != ?6
                      AND ((?16 IS NOT NULL AND b.pr_number = ?16) OR (?17 IS NOT NULL AND b.pr_number IS NULL AND b.ref_name = ?17))))",
        repo,
        clone_url,
        t.kind,
        t.ref_name,
        base,
        head,
        pr_number,
        base_ref,
        t.from_fork,
        t.sender,
        only_package,
        only_target,
        delivery,
        state,
        now.0,
        by_pr,
        key_ref,
    )
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    Ok(TriggerId(id))
}
