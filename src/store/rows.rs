//! A build's row: as planned ([`NewBuild`]), as read ([`BuildRow`]), and the one column
//! list every query that reads it uses ([`build_rows!`]); a report's row likewise
//! ([`ReportRow`], [`report_rows!`]). Apart from `builds.rs` and `reports.rs` so that the
//! ledger and those queries use them without importing each other.

use std::path::PathBuf;

use super::{Millis, ReportId, StoreError, TriggerId};
use crate::model::{BuildId, BuildState, CommitSha, RepoId, Report, ReportState, TargetName};

/// A build to insert, as planned.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub id: BuildId,
    pub package: String,
    /// The spec's path inside the repository.
    pub spec_path: String,
    pub target: TargetName,
    /// Set when planning found the package unbuildable, or its packages could not be
    /// published where they belong: the row starts out failed, no container started.
    pub error: Option<EarlyFailure>,
    /// Build order within the change (0 first), from the plan's BuildRequires graph.
    pub stage: u32,
}

/// Why a build ends before it starts, and the phase that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyFailure {
    /// `plan` (the spec cannot be built) or `publish` (a publishing rule refuses it).
    pub phase: &'static str,
    pub message: String,
}

impl EarlyFailure {
    pub fn plan(message: impl Into<String>) -> EarlyFailure {
        EarlyFailure {
            phase: "plan",
            message: message.into(),
        }
    }

    pub fn publish(message: impl Into<String>) -> EarlyFailure {
        EarlyFailure {
            phase: "publish",
            message: message.into(),
        }
    }

    /// The build's status line: a publishing refusal's first line starts with its fix; a
    /// planning error says it is one.
    pub fn status_line(&self) -> String {
        match self.phase {
            "plan" => format!("plan: {}", self.message),
            _ => self.message.lines().next().unwrap_or_default().to_string(),
        }
    }
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

/// A `builds` row as SQLite holds it; checked into a `BuildRow` by `TryFrom`. Every query
/// that reads it selects the same 22 columns, in this order: [`build_rows!`]'s.
pub(in crate::store) struct BuildRecord {
    pub(in crate::store) seq: i64,
    pub(in crate::store) id: String,
    pub(in crate::store) trigger_id: i64,
    pub(in crate::store) repo: String,
    pub(in crate::store) clone_url: String,
    pub(in crate::store) commit_sha: String,
    pub(in crate::store) ref_name: String,
    pub(in crate::store) pr_number: Option<i64>,
    pub(in crate::store) package: String,
    pub(in crate::store) spec_path: String,
    pub(in crate::store) target: String,
    pub(in crate::store) state: BuildState,
    pub(in crate::store) attempts: i64,
    pub(in crate::store) next_attempt_at: i64,
    pub(in crate::store) container_id: Option<String>,
    pub(in crate::store) created_at: i64,
    pub(in crate::store) started_at: Option<i64>,
    pub(in crate::store) finished_at: Option<i64>,
    pub(in crate::store) result_dir: Option<String>,
    pub(in crate::store) phase: Option<String>,
    pub(in crate::store) message: Option<String>,
    pub(in crate::store) stage: i64,
}

/// `sqlx::query_as!` of [`BuildRecord`]s with the one column list of a build row between
/// two pieces of SQL: `build_rows!("SELECT", "FROM builds WHERE id = ?", id)`, or an
/// `UPDATE ... RETURNING` and `""`. (sqlx's macros take a `+` of string literals, not
/// `concat!`.)
macro_rules! build_rows {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::store::rows::BuildRecord,
            $before
                + r#" seq AS "seq!", id, trigger_id, repo, clone_url, commit_sha, ref_name,
                    pr_number, package, spec_path, target, state AS "state: crate::model::BuildState",
                    attempts, next_attempt_at, container_id, created_at, started_at, finished_at,
                    result_dir, phase, message, stage "#
                + $after
            $(, $arg)*
        )
    };
}
pub(in crate::store) use build_rows;

impl TryFrom<BuildRecord> for BuildRow {
    type Error = StoreError;

    fn try_from(r: BuildRecord) -> Result<Self, StoreError> {
        Ok(BuildRow {
            seq: r.seq,
            id: BuildId::parse(&r.id)?,
            trigger_id: TriggerId(r.trigger_id),
            repo: RepoId::parse(&r.repo)?,
            clone_url: r.clone_url,
            commit: CommitSha::parse(&r.commit_sha)?,
            ref_name: r.ref_name,
            pr_number: r.pr_number.map(|n| n as u64),
            package: r.package,
            spec_path: r.spec_path,
            target: TargetName::parse(&r.target)?,
            state: r.state,
            attempts: r.attempts,
            next_attempt_at: Millis(r.next_attempt_at),
            container_id: r.container_id,
            created_at: Millis(r.created_at),
            started_at: r.started_at.map(Millis),
            finished_at: r.finished_at.map(Millis),
            result_dir: r.result_dir.map(PathBuf::from),
            phase: r.phase,
            message: r.message,
            stage: r.stage.try_into().unwrap_or(0),
        })
    }
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
    /// The forge's id of what the last delivery created (see `forge::Delivered`).
    pub forge_ref: Option<String>,
}

/// A `reports` row as SQLite holds it; checked into a `ReportRow` by `TryFrom`. Read with
/// [`report_rows!`].
pub(in crate::store) struct ReportRecord {
    pub(in crate::store) id: i64,
    pub(in crate::store) repo: String,
    pub(in crate::store) sha: String,
    pub(in crate::store) context: String,
    pub(in crate::store) state: ReportState,
    pub(in crate::store) description: String,
    pub(in crate::store) target_url: Option<String>,
    pub(in crate::store) builds: Option<String>,
    pub(in crate::store) version: i64,
    pub(in crate::store) delivered_version: i64,
    pub(in crate::store) attempts: i64,
    pub(in crate::store) next_attempt_at: i64,
    pub(in crate::store) last_error: Option<String>,
    pub(in crate::store) abandoned: bool,
    pub(in crate::store) forge_ref: Option<String>,
}

/// `sqlx::query_as!` of [`ReportRecord`]s: the one column list of a report row between
/// `$before` (`SELECT`, or an upsert's `RETURNING`) and `$rest` (`FROM reports ...`).
macro_rules! report_rows {
    ($before:literal, $rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::store::rows::ReportRecord,
            $before
                + r#" id AS "id!", repo, sha, context, state AS "state: ReportState", description,
                      target_url, builds, version, delivered_version, attempts, next_attempt_at,
                      last_error, abandoned AS "abandoned: bool", forge_ref "#
                + $rest
            $(, $arg)*
        )
    };
}

impl TryFrom<ReportRecord> for ReportRow {
    type Error = StoreError;

    fn try_from(r: ReportRecord) -> Result<Self, StoreError> {
        Ok(ReportRow {
            id: ReportId(r.id),
            report: Report {
                repo: RepoId::parse(&r.repo)?,
                sha: CommitSha::parse(&r.sha)?,
                context: r.context,
                state: r.state,
                description: r.description,
                target_url: r.target_url,
                // Written by `set_report` from the same type: a row that does not read back
                // (a downgrade, a hand edit) loses its list, not its delivery.
                builds: r
                    .builds
                    .as_deref()
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or_default(),
            },
            version: r.version,
            delivered_version: r.delivered_version,
            attempts: r.attempts,
            next_attempt_at: Millis(r.next_attempt_at),
            last_error: r.last_error,
            abandoned: r.abandoned,
            forge_ref: r.forge_ref,
        })
    }
}
pub(in crate::store) use report_rows;
