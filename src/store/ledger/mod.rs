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

use super::phases::PhaseRow;
use super::rows::{build_rows, ReportRow};
use super::{BuildRow, Millis, NewBuild, Store, StoreError, StoredTrigger, TriggerState};
use crate::model::{BuildId, BuildState, CommitSha, RepoId, TargetName};

/// A connection inside a transaction: what every ledger function takes.
pub type Conn = SqliteConnection;
/// One transaction; `&mut tx` is a [`Conn`]. Dropped without [`Tx::commit`], it rolls
/// back.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    /// Reports the transaction made due (`reports::upsert_all`), for the outbox once
    /// committed: the transactional outbox handed over in memory, not read back.
    pub(in crate::store) written: Vec<ReportRow>,
}

impl Tx {
    /// Commits; returns the reports it made due, for the outbox to deliver.
    pub async fn commit(self) -> Result<Vec<ReportRow>, StoreError> {
        self.tx.commit().await?;
        Ok(self.written)
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.tx
    }
}

impl Store {
    /// Begins a transaction that ledger functions (and `reports::upsert`) compose into.
    /// `IMMEDIATE`: it takes the write lock at its start (waiting under the busy timeout),
    /// so a transaction that reads before it writes is never refused half-way because
    /// another connection wrote meanwhile (SQLite's `SQLITE_BUSY_SNAPSHOT`, 517, which no
    /// busy timeout waits out: seen as a Gerrit patchset's plan failing and retried 30 s
    /// later, after the older patchset had been voted on).
    pub async fn tx(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            written: vec![],
        })
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

    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Planned,
            EventKind::Started,
            EventKind::Recorded,
            EventKind::Ended,
            EventKind::Requeued,
            EventKind::Superseded,
            EventKind::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
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

/// The commit's counts as a transition's `RETURNING` reads them (a JSON array in the
/// order of [`Counts`]' fields; the database's BEFORE triggers moved them already): `None`
/// when the build is not its package's latest at the commit, and so counts nowhere.
fn counts_after(latest: i64, json: Option<&str>) -> Result<Option<Counts>, StoreError> {
    if latest != 1 {
        return Ok(None);
    }
    let Some(json) = json else {
        return Ok(None);
    };
    let [queued, running, succeeded, failed, error, cancelled, superseded]: [i64; 7] =
        serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("commit counts `{json}`: {e}")))?;
    Ok(Some(Counts {
        queued,
        running,
        succeeded,
        failed,
        error,
        cancelled,
        superseded,
    }))
}

/// A transition that happened, with its commit's counts after it (`None` when the build
/// is not its package's latest at the commit and so counts nowhere): the reports of the
/// transition read them from here, not from the store again.
#[derive(Debug, Clone, Copy)]
pub struct Shifted {
    pub counts: Option<Counts>,
}

/// Plan: inserts the trigger's planned builds (each replacing the earlier build of its
/// package and target at the commit in the counts), the first of which marks the trigger
/// planned (migration 0014; a plan of none marks it with an update). Returns `None`,
/// inserting nothing, when the trigger was ended while it was being planned (its change
/// closed, a newer push superseded it): those builds must not run.
pub async fn plan(
    conn: &mut Conn,
    trigger: &StoredTrigger,
    builds: &[NewBuild],
) -> Result<Option<Shifted>, StoreError> {
    if builds.is_empty() {
        let planned = sqlx::query!(
            "UPDATE triggers SET state = ?, message = NULL WHERE id = ? AND state = ?",
            TriggerState::Planned,
            trigger.id.0,
            TriggerState::New,
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        return Ok((planned == 1).then_some(Shifted { counts: None }));
    }
    let mut counts = None;
    let now = Millis::now();
    let t = &trigger.trigger;
    let (repo, head) = (t.repo.as_str(), t.head.as_str());
    let pr_number = t.pr_number.map(|n| n as i64);
    for (i, b) in builds.iter().enumerate() {
        let (id, target) = (b.id.as_str(), b.target.as_str());
        let state = if b.error.is_some() {
            BuildState::Failed
        } else {
            BuildState::Queued
        };
        let message = b.error.as_ref().map(|e| e.message.as_str());
        // A build that failed in planning ended there and then.
        let phase = b.error.as_ref().map(|e| e.phase);
        let finished_at = b.error.as_ref().map(|_| now.0);
        let stage = i64::from(b.stage);
        // The database replaces the earlier build of the package and target at the commit
        // (`latest`), moves the counts and appends the `planned` event (migration 0013).
        // The first build must find the trigger still to plan, and its insert marks it
        // planned (migration 0014); the later ones find it planned.
        let trigger_state = if i == 0 {
            TriggerState::New
        } else {
            TriggerState::Planned
        };
        let row = sqlx::query!(
            r#"INSERT INTO builds (id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number, package, spec_path, target, state, next_attempt_at, created_at, message, phase, finished_at, stage)
               SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17
               WHERE EXISTS (SELECT 1 FROM triggers WHERE id = ?2 AND state = ?18)
               RETURNING latest, (SELECT json_array(queued, running, succeeded, failed, error, cancelled, superseded)
                                  FROM commit_counts c WHERE c.repo = builds.repo AND c.commit_sha = builds.commit_sha) AS "counts?: String""#,
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
            state,
            now.0,
            now.0,
            message,
            phase,
            finished_at,
            stage,
            trigger_state,
        )
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            // Ended while it was planned (its change closed, a newer push superseded it):
            // nothing inserted, and the caller's transaction rolls back.
            return Ok(None);
        };
        counts = counts_after(row.latest, row.counts.as_deref())?.or(counts);
    }
    Ok(Some(Shifted { counts }))
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
    let row = build_rows!(
        "UPDATE builds SET state = ?1, attempts = attempts + 1, started_at = ?3,
                container_id = NULL, phase = NULL, message = NULL
         WHERE seq = (
            SELECT b.seq FROM builds b
            WHERE b.state = ?2 AND b.next_attempt_at <= ?3
              AND NOT EXISTS (SELECT 1 FROM builds d WHERE d.trigger_id = b.trigger_id AND d.target = b.target AND d.stage < b.stage AND d.state IN (?1, ?2))
            ORDER BY (SELECT COUNT(*) FROM builds r WHERE r.repo = b.repo AND r.state = ?1), b.seq
            LIMIT 1)
         RETURNING",
        "",
        BuildState::Running,
        BuildState::Queued,
        now.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    // The counts and the `started` event follow in the database (migration 0013).
    row.map(BuildRow::try_from).transpose()
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
        "UPDATE builds SET outcome = ?, result_dir = ? WHERE id = ? AND state = ?",
        outcome,
        dir,
        id,
        BuildState::Running,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    // The `recorded` event follows in the database (migration 0013).
    super::phases::set_phases(conn, id, phases).await?;
    Ok(true)
}

/// End: a running build's final state with everything learned from it. Returns `None`
/// (and changes nothing) when it was no longer running: superseded or cancelled meanwhile.
pub async fn end(conn: &mut Conn, e: &BuildEnd<'_>) -> Result<Option<Shifted>, StoreError> {
    let id = e.id.as_str();
    let result_dir = e.result_dir.map(|p| p.display().to_string());
    let now = Millis::now();
    // The counts and the `ended` event follow in the database (migration 0013); the
    // counts after it come back with the row.
    let row = sqlx::query!(
        r#"UPDATE builds SET state = ?, message = ?, result_dir = COALESCE(?, result_dir),
                phase = COALESCE(?, phase), finished_at = ?, outcome = NULL
           WHERE id = ? AND state = ?
           RETURNING latest, (SELECT json_array(queued, running, succeeded, failed, error, cancelled, superseded)
                              FROM commit_counts c WHERE c.repo = builds.repo AND c.commit_sha = builds.commit_sha) AS "counts?: String""#,
        e.state,
        e.message,
        result_dir,
        e.phase,
        now.0,
        id,
        BuildState::Running,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    super::phases::set_phases(conn, id, e.phases).await?;
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
    let counts = counts_after(row.latest, row.counts.as_deref())?;
    Ok(Some(Shifted { counts }))
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
        "UPDATE builds SET state = ?, next_attempt_at = ?, message = ?, container_id = NULL,
                attempts = attempts - ?, outcome = NULL
         WHERE id = ? AND state = ?",
        BuildState::Queued,
        at.0,
        message,
        refund,
        id,
        BuildState::Running,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // The counts and the `requeued` event follow in the database (migration 0013).
    Ok(n == 1)
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
    let now = Millis::now();
    // One statement: the counts and the `superseded` or `cancelled` events follow in the
    // database (migration 0013).
    let rows = build_rows!(
        "UPDATE builds SET state = ?, message = ?, finished_at = ?, outcome = NULL
         WHERE repo = ? AND state IN (?, ?)
           AND ((? IS NOT NULL AND pr_number = ?) OR (? IS NOT NULL AND pr_number IS NULL AND ref_name = ?))
           AND (? IS NULL OR commit_sha != ?)
         RETURNING",
        "",
        c.state,
        c.message,
        now.0,
        repo,
        BuildState::Queued,
        BuildState::Running,
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
    rows.sort_by_key(|b| b.seq);
    Ok(rows)
}
