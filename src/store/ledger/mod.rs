//! The ledger: a build's life as a few transitions (plan, claim, record, end, requeue, end
//! a change), each a function over one connection that the caller composes into ONE
//! transaction with [`Store::tx`], after bors's `database/operations.rs`. Each transition
//! keeps its commit's counts (`commit_counts`, so that an aggregate status is one row, not
//! a re-read of every build) and appends a build event (`build_events`) in the same
//! transaction; the queue writes the transition's reports in it too, so that a build never
//! ends without its reports, whatever moment the process dies at.

use std::path::Path;

use sqlx::SqliteConnection;

mod reads;

pub use reads::{counts, culprit, latest_of_commit, unreported, BuildEvent};

use super::builds::BuildRecord;
use super::phases::PhaseRow;
use super::{parse_enum, BuildRow, Millis, NewBuild, Store, StoreError, StoredTrigger};
use crate::model::{BuildId, BuildState, CommitSha, RepoId, TargetName};

/// A connection inside a transaction: what every ledger function takes.
pub type Conn = SqliteConnection;
/// One transaction; `&mut tx` is a [`Conn`]. Dropped without [`Tx::commit`], it rolls
/// back.
pub struct Tx(sqlx::Transaction<'static, sqlx::Sqlite>);

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

impl Store {
    /// Begins a transaction that ledger functions (and `reports::upsert`) compose into.
    pub async fn tx(&self) -> Result<Tx, StoreError> {
        Ok(Tx(self.pool.begin().await?))
    }
}

/// What a build event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Planned,
    Started,
    /// A succeeded build's results recorded, before its packages are published.
    Recorded,
    Ended,
    Requeued,
    Superseded,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Planned => "planned",
            EventKind::Started => "started",
            EventKind::Recorded => "recorded",
            EventKind::Ended => "ended",
            EventKind::Requeued => "requeued",
            EventKind::Superseded => "superseded",
            EventKind::Cancelled => "cancelled",
        }
    }
}

/// How many of a commit's latest builds (one per package and target) are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub error: i64,
    pub cancelled: i64,
    pub superseded: i64,
}

impl Counts {
    pub fn total(&self) -> i64 {
        self.open() + self.succeeded + self.failed + self.errored()
    }

    /// Waiting or running.
    pub fn open(&self) -> i64 {
        self.queued + self.running
    }

    /// Ended without completing: not the package's doing.
    pub fn errored(&self) -> i64 {
        self.error + self.cancelled + self.superseded
    }
}

/// How a running build ends: everything that used to be separate writes, in one value.
#[derive(Debug, Clone)]
pub struct BuildEnd<'a> {
    pub id: &'a BuildId,
    pub state: BuildState,
    pub message: &'a str,
    /// The phase it failed in, when it failed.
    pub phase: Option<&'a str>,
    pub result_dir: Option<&'a Path>,
    pub phases: &'a [PhaseRow],
    /// Provides of its binary packages, learned for later plans (only from a build whose
    /// packages were not refused).
    pub provides: Option<LearnedProvides<'a>>,
    /// Where its packages were published: the repository's label and the snapshot made.
    pub publication: Option<(&'a str, Option<&'a str>)>,
}

#[derive(Debug, Clone)]
pub struct LearnedProvides<'a> {
    pub repo: &'a RepoId,
    pub package: &'a str,
    pub target: &'a TargetName,
    pub provides: &'a [String],
}

/// Moves one build from state `from` to `to` in its commit's counts, when it is the
/// latest build of its package and target (an older one is not counted).
async fn shift(
    conn: &mut Conn,
    id: &str,
    from: Option<BuildState>,
    to: Option<BuildState>,
) -> Result<(), StoreError> {
    let from = from.map_or("", BuildState::as_str);
    let to = to.map_or("", BuildState::as_str);
    sqlx::query!(
        "INSERT INTO commit_counts (repo, commit_sha, queued, running, succeeded, failed, error, cancelled, superseded)
         SELECT repo, commit_sha, ?2 = 'queued', ?2 = 'running', ?2 = 'succeeded', ?2 = 'failed',
                ?2 = 'error', ?2 = 'cancelled', ?2 = 'superseded'
         FROM builds WHERE id = ?3 AND latest = 1
         ON CONFLICT (repo, commit_sha) DO UPDATE SET
            queued = queued + (?2 = 'queued') - (?1 = 'queued'),
            running = running + (?2 = 'running') - (?1 = 'running'),
            succeeded = succeeded + (?2 = 'succeeded') - (?1 = 'succeeded'),
            failed = failed + (?2 = 'failed') - (?1 = 'failed'),
            error = error + (?2 = 'error') - (?1 = 'error'),
            cancelled = cancelled + (?2 = 'cancelled') - (?1 = 'cancelled'),
            superseded = superseded + (?2 = 'superseded') - (?1 = 'superseded')",
        from,
        to,
        id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends one event to the build's history.
async fn event(
    conn: &mut Conn,
    id: &str,
    kind: EventKind,
    state: BuildState,
    message: Option<&str>,
    at: Millis,
) -> Result<(), StoreError> {
    let (kind, state) = (kind.as_str(), state.as_str());
    sqlx::query!(
        "INSERT INTO build_events (build_id, kind, state, message, at) VALUES (?, ?, ?, ?, ?)",
        id,
        kind,
        state,
        message,
        at.0,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces a build's phases with `phases`, in one statement.
pub(in crate::store) async fn set_phases(
    conn: &mut Conn,
    id: &str,
    phases: &[PhaseRow],
) -> Result<(), StoreError> {
    if phases.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(
        &phases
            .iter()
            .map(|p| serde_json::json!([p.phase, p.started, p.seconds, p.ok]))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| StoreError::Corrupt(format!("phases: {e}")))?;
    sqlx::query!(
        "INSERT OR REPLACE INTO build_phases (build_id, phase, started, seconds, ok)
         SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]')
         FROM json_each(?2)",
        id,
        json,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Plan: marks the trigger planned and inserts its planned builds (each replacing the
/// earlier build of its package and target at the commit in the counts). Returns `false`,
/// inserting nothing, when the trigger was ended while it was being planned (its change
/// closed, a newer push superseded it): those builds must not run.
pub async fn plan(
    conn: &mut Conn,
    trigger: &StoredTrigger,
    builds: &[NewBuild],
) -> Result<bool, StoreError> {
    let planned = sqlx::query!(
        "UPDATE triggers SET state = 'planned', message = NULL WHERE id = ? AND state = 'new'",
        trigger.id.0,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if planned != 1 {
        return Ok(false);
    }
    let now = Millis::now();
    let t = &trigger.trigger;
    let (repo, head) = (t.repo.as_str(), t.head.as_str());
    let pr_number = t.pr_number.map(|n| n as i64);
    for b in builds {
        let (id, target) = (b.id.as_str(), b.target.as_str());
        let old: Option<String> = sqlx::query_scalar!(
            "UPDATE builds SET latest = 0
             WHERE repo = ? AND commit_sha = ? AND package = ? AND target = ? AND latest = 1
             RETURNING state",
            repo,
            head,
            b.package,
            target,
        )
        .fetch_optional(&mut *conn)
        .await?;
        let old = old
            .map(|s| parse_enum("build state", &s, BuildState::parse))
            .transpose()?;
        let state = if b.error.is_some() {
            BuildState::Failed
        } else {
            BuildState::Queued
        };
        let state_str = state.as_str();
        let message = b.error.as_deref();
        // A build that failed in planning ended there and then.
        let phase = b.error.as_ref().map(|_| "plan");
        let finished_at = b.error.as_ref().map(|_| now.0);
        let stage = i64::from(b.stage);
        sqlx::query!(
            "INSERT INTO builds (id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number, package, spec_path, target, state, next_attempt_at, created_at, message, phase, finished_at, stage)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            id,
            trigger.id.0,
            repo,
            t.clone_url,
            head,
            t.ref_name,
            pr_number,
            b.package,
            b.spec_path,
            target,
            state_str,
            now.0,
            now.0,
            message,
            phase,
            finished_at,
            stage,
        )
        .execute(&mut *conn)
        .await?;
        shift(conn, id, old, Some(state)).await?;
        event(conn, id, EventKind::Planned, state, message, now).await?;
    }
    Ok(true)
}

/// Claim: takes the next queued build whose time has come and whose earlier stages have
/// ended, fairly across repositories (the repository with the fewest running builds
/// first, then queue order), and marks it running.
///
/// The `NOT EXISTS` is the "may start" rule, the same as in `Store::next_due` (keep the
/// two alike): no build of an earlier stage of its trigger and target is still waiting or
/// running. Those that ended, however, let it go: a dependency that failed makes it fail
/// on the missing capability, which says more than a blanket refusal.
pub async fn claim(conn: &mut Conn, now: Millis) -> Result<Option<BuildRow>, StoreError> {
    let row = sqlx::query_as!(
        BuildRecord,
        r#"UPDATE builds SET state = 'running', attempts = attempts + 1, started_at = ?,
                  container_id = NULL, phase = NULL, message = NULL
           WHERE seq = (
              SELECT b.seq FROM builds b
              WHERE b.state = 'queued' AND b.next_attempt_at <= ?
                AND NOT EXISTS (SELECT 1 FROM builds d WHERE d.trigger_id = b.trigger_id AND d.target = b.target AND d.stage < b.stage AND d.state IN ('queued', 'running'))
              ORDER BY (SELECT COUNT(*) FROM builds r WHERE r.repo = b.repo AND r.state = 'running'), b.seq
              LIMIT 1)
           RETURNING seq AS "seq!", id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number,
                     package, spec_path, target, state, attempts, next_attempt_at,
                     container_id, created_at, started_at, finished_at, result_dir, phase,
                     message, stage"#,
        now.0,
        now.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row.map(BuildRow::try_from).transpose()? else {
        return Ok(None);
    };
    let id = row.id.as_str();
    shift(
        conn,
        id,
        Some(BuildState::Queued),
        Some(BuildState::Running),
    )
    .await?;
    event(conn, id, EventKind::Started, BuildState::Running, None, now).await?;
    Ok(Some(row))
}

/// Record: a running build's outcome (opaque JSON, the queue's) and results, kept before
/// its packages are published, so that a restart finishes it from them instead of
/// building and publishing again. Returns `false` when it was no longer running.
pub async fn record(
    conn: &mut Conn,
    id: &BuildId,
    outcome: &str,
    result_dir: &Path,
    phases: &[PhaseRow],
) -> Result<bool, StoreError> {
    let (id, dir) = (id.as_str(), result_dir.display().to_string());
    let n = sqlx::query!(
        "UPDATE builds SET outcome = ?, result_dir = ? WHERE id = ? AND state = 'running'",
        outcome,
        dir,
        id,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    set_phases(conn, id, phases).await?;
    event(
        conn,
        id,
        EventKind::Recorded,
        BuildState::Running,
        None,
        Millis::now(),
    )
    .await?;
    Ok(true)
}

/// End: a running build's final state with everything learned from it. Returns `false`
/// (and changes nothing) when it was no longer running: superseded or cancelled meanwhile.
pub async fn end(conn: &mut Conn, e: &BuildEnd<'_>) -> Result<bool, StoreError> {
    let (id, state) = (e.id.as_str(), e.state.as_str());
    let result_dir = e.result_dir.map(|p| p.display().to_string());
    let now = Millis::now();
    let n = sqlx::query!(
        "UPDATE builds SET state = ?, message = ?, result_dir = COALESCE(?, result_dir),
                phase = COALESCE(?, phase), finished_at = ?, outcome = NULL
         WHERE id = ? AND state = 'running'",
        state,
        e.message,
        result_dir,
        e.phase,
        now.0,
        id,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    set_phases(conn, id, e.phases).await?;
    if let Some(p) = e.provides.as_ref().filter(|p| !p.provides.is_empty()) {
        let (repo, target) = (p.repo.as_str(), p.target.as_str());
        let text = p.provides.join("\n");
        sqlx::query!(
            "INSERT OR REPLACE INTO learned_provides (repo, package, target, build_id, provides, learned_at)
             VALUES (?, ?, ?, ?, ?, ?)",
            repo,
            p.package,
            target,
            id,
            text,
            now.0,
        )
        .execute(&mut *conn)
        .await?;
    }
    if let Some((repository, snapshot)) = e.publication {
        sqlx::query!(
            "INSERT OR REPLACE INTO publications (build_id, repository, snapshot, published_at)
             VALUES (?, ?, ?, ?)",
            id,
            repository,
            snapshot,
            now.0,
        )
        .execute(&mut *conn)
        .await?;
    }
    shift(conn, id, Some(BuildState::Running), Some(e.state)).await?;
    event(conn, id, EventKind::Ended, e.state, Some(e.message), now).await?;
    Ok(true)
}

/// Requeue: a running build back in the queue (an infrastructure fault to retry, a
/// restart, a shutdown). `count_attempt: false` gives back the attempt its claim counted.
/// Returns `false` when it was no longer running.
pub async fn requeue(
    conn: &mut Conn,
    id: &BuildId,
    at: Millis,
    message: Option<&str>,
    count_attempt: bool,
) -> Result<bool, StoreError> {
    let refund: i64 = if count_attempt { 0 } else { 1 };
    let id = id.as_str();
    let n = sqlx::query!(
        "UPDATE builds SET state = 'queued', next_attempt_at = ?, message = ?, container_id = NULL,
                attempts = attempts - ?, outcome = NULL
         WHERE id = ? AND state = 'running'",
        at.0,
        message,
        refund,
        id,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    shift(
        conn,
        id,
        Some(BuildState::Running),
        Some(BuildState::Queued),
    )
    .await?;
    event(
        conn,
        id,
        EventKind::Requeued,
        BuildState::Queued,
        message,
        Millis::now(),
    )
    .await?;
    Ok(true)
}

/// Which builds of a change [`end_change`] ends.
#[derive(Debug, Clone)]
pub struct ChangeEnd<'a> {
    pub repo: &'a RepoId,
    /// A pull request is identified by its number, a branch by its ref.
    pub pr_number: Option<u64>,
    pub ref_name: Option<&'a str>,
    /// Builds at this commit are kept (the change's new head).
    pub keep_sha: Option<&'a CommitSha>,
    pub state: BuildState,
    pub message: &'a str,
}

/// Supersede or cancel: ends the queued and running builds of a change; returns them as
/// they are now.
pub async fn end_change(conn: &mut Conn, c: &ChangeEnd<'_>) -> Result<Vec<BuildRow>, StoreError> {
    let by_pr = c.pr_number.map(|n| n as i64);
    let key_ref = if by_pr.is_some() { None } else { c.ref_name };
    let keep_sha = c.keep_sha.map(|s| s.as_str());
    let repo = c.repo.as_str();
    let rows = sqlx::query_as!(
        BuildRecord,
        r#"SELECT seq AS "seq!", id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number,
                  package, spec_path, target, state, attempts, next_attempt_at,
                  container_id, created_at, started_at, finished_at, result_dir, phase,
                  message, stage
           FROM builds
           WHERE repo = ? AND state IN ('queued', 'running')
             AND ((? IS NOT NULL AND pr_number = ?) OR (? IS NOT NULL AND pr_number IS NULL AND ref_name = ?))
             AND (? IS NULL OR commit_sha != ?)"#,
        repo,
        by_pr,
        by_pr,
        key_ref,
        key_ref,
        keep_sha,
        keep_sha,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: Vec<BuildRow> = rows
        .into_iter()
        .map(BuildRow::try_from)
        .collect::<Result<_, _>>()?;
    let now = Millis::now();
    let state = c.state.as_str();
    let kind = if c.state == BuildState::Superseded {
        EventKind::Superseded
    } else {
        EventKind::Cancelled
    };
    for b in &mut rows {
        let id = b.id.as_str();
        sqlx::query!(
            "UPDATE builds SET state = ?, message = ?, finished_at = ?, outcome = NULL
             WHERE id = ? AND state IN ('queued', 'running')",
            state,
            c.message,
            now.0,
            id,
        )
        .execute(&mut *conn)
        .await?;
        shift(conn, id, Some(b.state), Some(c.state)).await?;
        event(conn, id, kind, c.state, Some(c.message), now).await?;
        b.state = c.state;
        b.message = Some(c.message.to_string());
        b.finished_at = Some(now);
    }
    Ok(rows)
}
