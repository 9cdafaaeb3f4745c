//! What we tell a forge: the desired state of one status context on one commit.

use serde::{Deserialize, Serialize};

use super::{CommitSha, RepoId};

/// The state of one status context, as commit statuses know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportState {
    Pending,
    Success,
    /// The package did not build.
    Failure,
    /// Infrastructure fault, superseded, cancelled: not the package's doing.
    Error,
}

impl ReportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Pending => "pending",
            ReportState::Success => "success",
            ReportState::Failure => "failure",
            ReportState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<ReportState> {
        match s {
            "pending" => Some(ReportState::Pending),
            "success" => Some(ReportState::Success),
            "failure" => Some(ReportState::Failure),
            "error" => Some(ReportState::Error),
            _ => None,
        }
    }
}

/// A desired status of one context on one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub repo: RepoId,
    pub sha: CommitSha,
    /// `packetary/<target>/<package>`, or [`AGGREGATE_CONTEXT`].
    pub context: String,
    pub state: ReportState,
    pub description: String,
    pub target_url: Option<String>,
    /// For the aggregate: each build it sums up, so that a forge which reports once per
    /// change (a Gerrit vote message) can list them. Empty for the other contexts.
    pub builds: Vec<BuildLine>,
}

/// One build as an aggregate report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLine {
    pub package: String,
    pub target: String,
    /// `queued`, `running`, `succeeded`, `failed`, `error`, `cancelled`, `superseded`.
    pub state: String,
    pub message: Option<String>,
    /// From start to end, once it ended.
    pub duration_ms: Option<u64>,
    /// Its build page.
    pub url: String,
    /// Its build log.
    pub log_url: String,
    /// The change's package repository, once repositories are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
}

impl BuildLine {
    /// Whether it ended because the change moved on (a newer patchset, a closed change).
    pub fn was_cancelled(&self) -> bool {
        matches!(self.state.as_str(), "cancelled" | "superseded")
    }

    pub fn is_final(&self) -> bool {
        !matches!(self.state.as_str(), "queued" | "running")
    }
}

/// The context that sums up every build of a commit; the one to require in branch protection.
pub const AGGREGATE_CONTEXT: &str = "packetary";

/// The context of one package built for one target.
pub fn build_context(target: &str, package: &str) -> String {
    format!("packetary/{target}/{package}")
}
