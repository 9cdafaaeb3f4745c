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
}

/// The context that sums up every build of a commit; the one to require in branch protection.
pub const AGGREGATE_CONTEXT: &str = "packetary";

/// The context of one package built for one target.
pub fn build_context(target: &str, package: &str) -> String {
    format!("packetary/{target}/{package}")
}
