//! The store: SQLite through sqlx. The only place with SQL. Everything the service must not
//! forget across a restart lives here: deliveries seen, triggers, the build queue, phases
//! and the outbox of reports.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::model::{
    BuildId, BuildState, ChangeKind, Command, CommandRequest, CommitSha, InvalidName, RepoId,
    Report, ReportState, TargetName, Trigger,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}\n  fix: check that [server] data_dir is writable")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database holds an invalid value: {0}")]
    Corrupt(String),
}

impl From<InvalidName> for StoreError {
    fn from(e: InvalidName) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Milliseconds since the Unix epoch, the store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Millis {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        Millis(ms)
    }

    pub fn after(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(d.as_millis() as i64))
    }

    /// RFC 3339, for pages.
    pub fn rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TriggerId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportId(pub i64);

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

    fn parse(s: &str) -> Option<TriggerState> {
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
}

#[derive(Debug, Clone)]
pub struct StoredCommand {
    pub id: i64,
    pub request: CommandRequest,
}

/// A build to insert, as planned.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub id: BuildId,
    pub package: String,
    /// The spec's path inside the repository.
    pub spec_path: String,
    pub target: TargetName,
    /// Set when planning found the package unbuildable: the row starts out failed.
    pub error: Option<String>,
    /// Build order within the change (0 first), from the plan's BuildRequires graph.
    pub stage: u32,
}

#[derive(Debug, Clone)]
pub struct BuildRow {
    pub seq: i64,
    pub id: BuildId,
    pub trigger_id: TriggerId,
    pub repo: RepoId,
    pub clone_url: String,
    pub commit: CommitSha,
    pub ref_name: String,
    pub pr_number: Option<u64>,
    pub package: String,
    pub spec_path: String,
    pub target: TargetName,
    pub state: BuildState,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub container_id: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub result_dir: Option<PathBuf>,
    pub phase: Option<String>,
    pub message: Option<String>,
    pub stage: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PhaseRow {
    pub phase: String,
    pub started: String,
    pub seconds: f64,
    pub ok: bool,
}

#[derive(Debug, Clone)]
pub struct ReportRow {
    pub id: ReportId,
    pub report: Report,
    pub version: i64,
    pub delivered_version: i64,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub last_error: Option<String>,
    pub abandoned: bool,
}

/// What the webhook handler hands over to the store in one transaction.
#[derive(Debug, Clone)]
pub enum Inbound<'a> {
    Trigger(&'a Trigger, TriggerState),
    Command(&'a CommandRequest),
    /// Nothing to queue, but remember the delivery (closed PRs, deletions act at once).
    Nothing,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A queued build `b` may start: no build of an earlier stage of its trigger and target is
/// still waiting or running (those that ended, however, let it go: a dependency that failed
/// makes it fail on the missing capability, which says more than a blanket refusal).
const READY: &str = "NOT EXISTS (SELECT 1 FROM builds d WHERE d.trigger_id = b.trigger_id AND d.target = b.target AND d.stage < b.stage AND d.state IN ('queued', 'running'))";

/// The result directories of the builds of `trigger`'s earlier stages that succeeded for
/// `target`: what a later stage builds against.
const EARLIER_RESULTS: &str = "SELECT result_dir FROM builds WHERE trigger_id = ? AND target = ? AND stage < ? AND state = 'succeeded' AND result_dir IS NOT NULL ORDER BY stage, seq";

const BUILD_COLUMNS: &str = "seq, id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number, package, spec_path, target, state, attempts, next_attempt_at, container_id, created_at, started_at, finished_at, result_dir, phase, message, stage";
const TRIGGER_COLUMNS: &str = "id, repo, clone_url, kind, ref_name, base_sha, head_sha, pr_number, base_ref, from_fork, sender, only_package, only_target, state, message, created_at, attempts";
const REPORT_COLUMNS: &str = "id, repo, sha, context, state, description, target_url, version, delivered_version, attempts, next_attempt_at, last_error, abandoned";

impl Store {
    /// Opens (creating if missing) `data_dir/packetary.db`, in WAL mode with a busy timeout,
    /// and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("packetary.db");
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: sqlx::Error::Io(e),
        })?;
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Cheap query for /healthz.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- ingest ------------------------------------------------------------------------

    /// Records a delivery and what it asks for, atomically. Returns `false` (and stores
    /// nothing) when the delivery id was seen before: GitHub redelivers on timeouts and on
    /// request, and a redelivery must not build twice.
    pub async fn accept(
        &self,
        delivery: &str,
        event: &str,
        inbound: Inbound<'_>,
    ) -> Result<bool, StoreError> {
        let now = Millis::now();
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO deliveries (id, event, received_at) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING",
        )
        .bind(delivery)
        .bind(event)
        .bind(now.0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        match inbound {
            Inbound::Trigger(t, state) => {
                insert_trigger(&mut tx, t, state, Some(delivery), now).await?;
            }
            Inbound::Command(c) => {
                sqlx::query(
                    "INSERT INTO commands (repo, pr_number, head_sha, user, command, package, target, state, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(c.repo.as_str())
                .bind(c.pr_number.map(|n| n as i64))
                .bind(c.head.as_ref().map(|h| h.as_str()))
                .bind(&c.user)
                .bind(c.command.name())
                .bind(match &c.command {
                    Command::Rebuild { package, .. } => package.clone(),
                    Command::Approve => None,
                })
                .bind(match &c.command {
                    Command::Rebuild { target, .. } => target.clone(),
                    Command::Approve => None,
                })
                .bind(if c.trusted { "trusted" } else { "new" })
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
            }
            Inbound::Nothing => {}
        }
        tx.commit().await?;
        Ok(true)
    }

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

    pub async fn delivery_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM deliveries")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    // ---- triggers ----------------------------------------------------------------------

    /// The oldest trigger still to plan whose time has come.
    pub async fn next_new_trigger(&self) -> Result<Option<StoredTrigger>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE state = 'new' AND next_attempt_at <= ? ORDER BY id LIMIT 1"
        ))
        .bind(Millis::now().0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| trigger_from_row(&r)).transpose()
    }

    /// When the next trigger waiting for a retry of its planning is due.
    pub async fn next_trigger_due(&self) -> Result<Option<Millis>, StoreError> {
        let v: Option<i64> =
            sqlx::query("SELECT MIN(next_attempt_at) FROM triggers WHERE state = 'new'")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(v.map(Millis))
    }

    /// Plans a trigger again later, after an infrastructure fault.
    pub async fn retry_trigger(
        &self,
        id: TriggerId,
        at: Millis,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE triggers SET attempts = attempts + 1, next_attempt_at = ?, message = ? WHERE id = ? AND state = 'new'",
        )
        .bind(at.0)
        .bind(message)
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn triggers(&self) -> Result<Vec<StoredTrigger>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trigger_from_row).collect()
    }

    pub async fn set_trigger_state(
        &self,
        id: TriggerId,
        state: TriggerState,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE triggers SET state = ?, message = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(message)
            .bind(id.0)
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
        let row = sqlx::query(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE repo = ?
               AND (? IS NULL OR pr_number = ?) AND (? IS NULL OR head_sha = ?)
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(repo.as_str())
        .bind(pr_number.map(|n| n as i64))
        .bind(pr_number.map(|n| n as i64))
        .bind(head.map(|h| h.as_str()))
        .bind(head.map(|h| h.as_str()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| trigger_from_row(&r)).transpose()
    }

    /// Moves a pull request's triggers that wait for a maintainer's approval back to `new`.
    pub async fn approve(&self, repo: &RepoId, pr_number: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE triggers SET state = 'new', message = NULL
             WHERE repo = ? AND pr_number = ? AND state = 'awaiting_approval'",
        )
        .bind(repo.as_str())
        .bind(pr_number as i64)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Whether a maintainer already approved builds of this pull request.
    pub async fn is_approved(&self, repo: &RepoId, pr_number: u64) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM commands WHERE repo = ? AND pr_number = ? AND command = 'approve' AND state = 'done'",
        )
        .bind(repo.as_str())
        .bind(pr_number as i64)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(n > 0)
    }

    // ---- commands ----------------------------------------------------------------------

    pub async fn next_command(&self) -> Result<Option<StoredCommand>, StoreError> {
        let row = sqlx::query(
            "SELECT id, repo, pr_number, head_sha, user, command, package, target, state FROM commands
             WHERE state IN ('new', 'trusted') ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let command = match r.try_get::<String, _>("command")?.as_str() {
            "rebuild" => Command::Rebuild {
                package: r.try_get("package")?,
                target: r.try_get("target")?,
            },
            "approve" => Command::Approve,
            other => return Err(StoreError::Corrupt(format!("unknown command `{other}`"))),
        };
        Ok(Some(StoredCommand {
            id: r.try_get("id")?,
            request: CommandRequest {
                repo: RepoId::parse(&r.try_get::<String, _>("repo")?)?,
                pr_number: r.try_get::<Option<i64>, _>("pr_number")?.map(|n| n as u64),
                head: r
                    .try_get::<Option<String>, _>("head_sha")?
                    .map(|s| CommitSha::parse(&s))
                    .transpose()?,
                user: r.try_get("user")?,
                command,
                trusted: r.try_get::<String, _>("state")? == "trusted",
            },
        }))
    }

    pub async fn finish_command(
        &self,
        id: i64,
        state: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE commands SET state = ?, message = ? WHERE id = ?")
            .bind(state)
            .bind(message)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- builds ------------------------------------------------------------------------

    /// Inserts the planned builds of a trigger and marks the trigger planned, atomically.
    pub async fn insert_builds(
        &self,
        trigger: &StoredTrigger,
        builds: &[NewBuild],
    ) -> Result<(), StoreError> {
        let now = Millis::now();
        let t = &trigger.trigger;
        let mut tx = self.pool.begin().await?;
        for b in builds {
            sqlx::query(
                "INSERT INTO builds (id, trigger_id, repo, clone_url, commit_sha, ref_name, pr_number, package, spec_path, target, state, next_attempt_at, created_at, message, phase, finished_at, stage)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(b.id.as_str())
            .bind(trigger.id.0)
            .bind(t.repo.as_str())
            .bind(&t.clone_url)
            .bind(t.head.as_str())
            .bind(&t.ref_name)
            .bind(t.pr_number.map(|n| n as i64))
            .bind(&b.package)
            .bind(&b.spec_path)
            .bind(b.target.as_str())
            .bind(if b.error.is_some() { "failed" } else { "queued" })
            .bind(now.0)
            .bind(now.0)
            .bind(b.error.as_deref())
            .bind(b.error.as_ref().map(|_| "plan"))
            .bind(b.error.as_ref().map(|_| now.0))
            .bind(i64::from(b.stage))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE triggers SET state = 'planned', message = NULL WHERE id = ?")
            .bind(trigger.id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the queued and running builds of the same change (branch or pull request) at
    /// other commits than `head`, and the triggers not yet planned; returns the builds ended.
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
        let now = Millis::now();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "UPDATE builds SET state = ?, message = ?, finished_at = ?
             WHERE repo = ? AND state IN ('queued', 'running')
               AND ((? IS NOT NULL AND pr_number = ?) OR (? IS NOT NULL AND pr_number IS NULL AND ref_name = ?))
               AND (? IS NULL OR commit_sha != ?)
             RETURNING {BUILD_COLUMNS}"
        ))
        .bind(build_state.as_str())
        .bind(message)
        .bind(now.0)
        .bind(repo.as_str())
        .bind(by_pr)
        .bind(by_pr)
        .bind(key_ref)
        .bind(key_ref)
        .bind(keep_sha.map(|s| s.as_str()))
        .bind(keep_sha.map(|s| s.as_str()))
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE triggers SET state = ?, message = ?
             WHERE repo = ? AND state IN ('new', 'awaiting_approval')
               AND ((? IS NOT NULL AND pr_number = ?) OR (? IS NOT NULL AND pr_number IS NULL AND ref_name = ?))
               AND (? IS NULL OR id != ?)",
        )
        .bind(trigger_state.as_str())
        .bind(message)
        .bind(repo.as_str())
        .bind(by_pr)
        .bind(by_pr)
        .bind(key_ref)
        .bind(key_ref)
        .bind(keep_trigger.map(|t| t.0))
        .bind(keep_trigger.map(|t| t.0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(build_from_row).collect()
    }

    /// Takes the next queued build whose time has come and whose earlier stages have ended,
    /// fairly across repositories: the repository with the fewest running builds goes
    /// first, then queue order.
    pub async fn claim_next_build(&self, now: Millis) -> Result<Option<BuildRow>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE builds SET state = 'running', attempts = attempts + 1, started_at = ?,
                    container_id = NULL, phase = NULL, message = NULL
             WHERE seq = (
                SELECT b.seq FROM builds b
                WHERE b.state = 'queued' AND b.next_attempt_at <= ? AND {READY}
                ORDER BY (SELECT COUNT(*) FROM builds r WHERE r.repo = b.repo AND r.state = 'running'), b.seq
                LIMIT 1)
             RETURNING {BUILD_COLUMNS}"
        ))
        .bind(now.0)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| build_from_row(&r)).transpose()
    }

    /// What `b` builds against: the results of its change's earlier stages that succeeded.
    pub async fn earlier_results(&self, b: &BuildRow) -> Result<Vec<PathBuf>, StoreError> {
        let rows = sqlx::query(EARLIER_RESULTS)
            .bind(b.trigger_id.0)
            .bind(b.target.as_str())
            .bind(i64::from(b.stage))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(PathBuf::from(r.try_get::<String, _>(0)?)))
            .collect()
    }

    /// When the earliest queued build that may start becomes due, if any is waiting.
    pub async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        let v: Option<i64> = sqlx::query(&format!(
            "SELECT MIN(b.next_attempt_at) FROM builds b WHERE b.state = 'queued' AND {READY}"
        ))
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(v.map(Millis))
    }

    pub async fn set_build_progress(
        &self,
        id: &BuildId,
        container: Option<&str>,
        phase: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE builds SET container_id = COALESCE(?, container_id), phase = COALESCE(?, phase)
             WHERE id = ? AND state = 'running'",
        )
        .bind(container)
        .bind(phase)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a running build. Returns `false` when it was no longer running (superseded or
    /// cancelled meanwhile), in which case nothing changes.
    pub async fn finish_build(
        &self,
        id: &BuildId,
        state: BuildState,
        message: Option<&str>,
        result_dir: Option<&Path>,
        phase: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE builds SET state = ?, message = ?, result_dir = COALESCE(?, result_dir),
                    phase = COALESCE(?, phase), finished_at = ?
             WHERE id = ? AND state = 'running'",
        )
        .bind(state.as_str())
        .bind(message)
        .bind(result_dir.map(|p| p.display().to_string()))
        .bind(phase)
        .bind(Millis::now().0)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Records where a build's results are, whatever state it ended in.
    pub async fn set_result_dir(&self, id: &BuildId, dir: &Path) -> Result<(), StoreError> {
        sqlx::query("UPDATE builds SET result_dir = ? WHERE id = ?")
            .bind(dir.display().to_string())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Puts a running build back in the queue (retry after an infrastructure fault, or a
    /// restart). Returns `false` when it was no longer running.
    pub async fn requeue(
        &self,
        id: &BuildId,
        at: Millis,
        message: Option<&str>,
        count_attempt: bool,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE builds SET state = 'queued', next_attempt_at = ?, message = ?, container_id = NULL,
                    attempts = attempts - ?
             WHERE id = ? AND state = 'running'",
        )
        .bind(at.0)
        .bind(message)
        .bind(if count_attempt { 0 } else { 1 })
        .bind(id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn record_phases(&self, id: &BuildId, phases: &[PhaseRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM build_phases WHERE build_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        for p in phases {
            sqlx::query(
                "INSERT OR REPLACE INTO build_phases (build_id, phase, started, seconds, ok) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id.as_str())
            .bind(&p.phase)
            .bind(&p.started)
            .bind(p.seconds)
            .bind(p.ok)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn phases(&self, id: &BuildId) -> Result<Vec<PhaseRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT phase, started, seconds, ok FROM build_phases WHERE build_id = ? ORDER BY started",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PhaseRow {
                    phase: r.try_get("phase")?,
                    started: r.try_get("started")?,
                    seconds: r.try_get("seconds")?,
                    ok: r.try_get("ok")?,
                })
            })
            .collect()
    }

    pub async fn build(&self, id: &BuildId) -> Result<Option<BuildRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| build_from_row(&r)).transpose()
    }

    pub async fn builds_in_state(&self, state: BuildState) -> Result<Vec<BuildRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE state = ? ORDER BY seq"
        ))
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(build_from_row).collect()
    }

    pub async fn recent_builds(&self, limit: i64) -> Result<Vec<BuildRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds ORDER BY seq DESC LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(build_from_row).collect()
    }

    /// The latest build of each package and target at a commit: what its aggregate status
    /// sums up (a rebuild replaces the earlier build of the same package and target).
    pub async fn latest_builds_of_commit(
        &self,
        repo: &RepoId,
        sha: &CommitSha,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds b WHERE repo = ? AND commit_sha = ?
               AND seq = (SELECT MAX(seq) FROM builds x WHERE x.repo = b.repo AND x.commit_sha = b.commit_sha
                          AND x.package = b.package AND x.target = b.target)
             ORDER BY package, target"
        ))
        .bind(repo.as_str())
        .bind(sha.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(build_from_row).collect()
    }

    pub async fn count_builds_by_state(&self) -> Result<Vec<(BuildState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM builds GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<(BuildState, i64)> = BuildState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let s: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            if let Some(slot) = out.iter_mut().find(|(b, _)| b.as_str() == s) {
                slot.1 = n;
            }
        }
        Ok(out)
    }

    // ---- reports -----------------------------------------------------------------------

    /// Records the desired state of a context. The latest desire wins: an undelivered older
    /// state is replaced, not queued behind. Unchanged desires are not re-sent.
    pub async fn set_report(&self, r: &Report) -> Result<(), StoreError> {
        let now = Millis::now();
        sqlx::query(
            "INSERT INTO reports (repo, sha, context, state, description, target_url, next_attempt_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (repo, sha, context) DO UPDATE SET
                state = excluded.state, description = excluded.description, target_url = excluded.target_url,
                version = version + 1, attempts = 0, next_attempt_at = excluded.next_attempt_at,
                last_error = NULL, abandoned = 0, updated_at = excluded.updated_at
             WHERE state != excluded.state OR description != excluded.description
                OR COALESCE(target_url, '') != COALESCE(excluded.target_url, '')",
        )
        .bind(r.repo.as_str())
        .bind(r.sha.as_str())
        .bind(&r.context)
        .bind(r.state.as_str())
        .bind(&r.description)
        .bind(r.target_url.as_deref())
        .bind(now.0)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reports whose latest desire is not delivered yet and whose retry time has come.
    pub async fn due_reports(&self, now: Millis, limit: i64) -> Result<Vec<ReportRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REPORT_COLUMNS} FROM reports
             WHERE delivered_version < version AND abandoned = 0 AND next_attempt_at <= ?
             ORDER BY next_attempt_at, id LIMIT ?"
        ))
        .bind(now.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(report_from_row).collect()
    }

    /// When the next undelivered report becomes due.
    pub async fn next_report_due(&self) -> Result<Option<Millis>, StoreError> {
        let v: Option<i64> = sqlx::query(
            "SELECT MIN(next_attempt_at) FROM reports WHERE delivered_version < version AND abandoned = 0",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(v.map(Millis))
    }

    pub async fn reports(&self) -> Result<Vec<ReportRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {REPORT_COLUMNS} FROM reports ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(report_from_row).collect()
    }

    /// Marks `version` delivered; a newer desire recorded meanwhile stays due.
    pub async fn mark_delivered(&self, id: ReportId, version: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE reports SET delivered_version = MAX(delivered_version, ?), last_error = NULL WHERE id = ?",
        )
        .bind(version)
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed delivery of `version` and when to try again (or gives up on it).
    pub async fn delivery_failed(
        &self,
        id: ReportId,
        version: i64,
        next: Millis,
        error: &str,
        abandon: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE reports SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, abandoned = ?
             WHERE id = ? AND version = ?",
        )
        .bind(next.0)
        .bind(error)
        .bind(abandon)
        .bind(id.0)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reports not delivered yet (for metrics and for tests that wait for quiet).
    pub async fn undelivered_reports(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) FROM reports WHERE delivered_version < version AND abandoned = 0",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?)
    }
}

async fn insert_trigger(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    t: &Trigger,
    state: TriggerState,
    delivery: Option<&str>,
    now: Millis,
) -> Result<TriggerId, StoreError> {
    let id = sqlx::query(
        "INSERT INTO triggers (repo, clone_url, kind, ref_name, base_sha, head_sha, pr_number, base_ref, from_fork, sender, only_package, only_target, delivery, state, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.repo.as_str())
    .bind(&t.clone_url)
    .bind(t.kind.as_str())
    .bind(&t.ref_name)
    .bind(t.base.as_ref().map(|s| s.as_str()))
    .bind(t.head.as_str())
    .bind(t.pr_number.map(|n| n as i64))
    .bind(t.base_ref.as_deref())
    .bind(t.from_fork)
    .bind(&t.sender)
    .bind(t.only_package.as_deref())
    .bind(t.only_target.as_deref())
    .bind(delivery)
    .bind(state.as_str())
    .bind(now.0)
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    Ok(TriggerId(id))
}

fn trigger_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<StoredTrigger, StoreError> {
    let kind: String = r.try_get("kind")?;
    let state: String = r.try_get("state")?;
    Ok(StoredTrigger {
        id: TriggerId(r.try_get("id")?),
        trigger: Trigger {
            repo: RepoId::parse(&r.try_get::<String, _>("repo")?)?,
            clone_url: r.try_get("clone_url")?,
            kind: ChangeKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("trigger kind `{kind}`")))?,
            ref_name: r.try_get("ref_name")?,
            base: r
                .try_get::<Option<String>, _>("base_sha")?
                .map(|s| CommitSha::parse(&s))
                .transpose()?,
            head: CommitSha::parse(&r.try_get::<String, _>("head_sha")?)?,
            pr_number: r.try_get::<Option<i64>, _>("pr_number")?.map(|n| n as u64),
            base_ref: r.try_get("base_ref")?,
            from_fork: r.try_get("from_fork")?,
            sender: r.try_get("sender")?,
            only_package: r.try_get("only_package")?,
            only_target: r.try_get("only_target")?,
        },
        state: TriggerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("trigger state `{state}`")))?,
        message: r.try_get("message")?,
        created_at: Millis(r.try_get("created_at")?),
        attempts: r.try_get("attempts")?,
    })
}

fn build_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<BuildRow, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(BuildRow {
        seq: r.try_get("seq")?,
        id: BuildId::parse(&r.try_get::<String, _>("id")?)?,
        trigger_id: TriggerId(r.try_get("trigger_id")?),
        repo: RepoId::parse(&r.try_get::<String, _>("repo")?)?,
        clone_url: r.try_get("clone_url")?,
        commit: CommitSha::parse(&r.try_get::<String, _>("commit_sha")?)?,
        ref_name: r.try_get("ref_name")?,
        pr_number: r.try_get::<Option<i64>, _>("pr_number")?.map(|n| n as u64),
        package: r.try_get("package")?,
        spec_path: r.try_get("spec_path")?,
        target: TargetName::parse(&r.try_get::<String, _>("target")?)?,
        state: BuildState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("build state `{state}`")))?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: Millis(r.try_get("next_attempt_at")?),
        container_id: r.try_get("container_id")?,
        created_at: Millis(r.try_get("created_at")?),
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(Millis),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(Millis),
        result_dir: r
            .try_get::<Option<String>, _>("result_dir")?
            .map(PathBuf::from),
        phase: r.try_get("phase")?,
        message: r.try_get("message")?,
        stage: r.try_get::<i64, _>("stage")?.try_into().unwrap_or(0),
    })
}

fn report_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ReportRow, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(ReportRow {
        id: ReportId(r.try_get("id")?),
        report: Report {
            repo: RepoId::parse(&r.try_get::<String, _>("repo")?)?,
            sha: CommitSha::parse(&r.try_get::<String, _>("sha")?)?,
            context: r.try_get("context")?,
            state: ReportState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("report state `{state}`")))?,
            description: r.try_get("description")?,
            target_url: r.try_get("target_url")?,
        },
        version: r.try_get("version")?,
        delivered_version: r.try_get("delivered_version")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: Millis(r.try_get("next_attempt_at")?),
        last_error: r.try_get("last_error")?,
        abandoned: r.try_get("abandoned")?,
    })
}
