//! The flow's types, shared by every stage: Trigger → Plan → Build → Outcome → Report.
//! Every module depends on `model`; `model` depends on none of them.

mod build;
mod ids;
mod redact;
mod report;
mod trigger;

pub use build::{BuildState, Failure, Outcome, PackageSource, Phase};
pub use ids::{BuildId, CommitSha, ForgeKind, InvalidName, Nevr, RepoId, TargetName};
pub use redact::{has_userinfo, redact, redact_bytes, without_userinfo};
pub use report::{build_context, BuildLine, Report, ReportState, AGGREGATE_CONTEXT};
pub use trigger::{ChangeKind, Command, CommandRequest, ForgeEvent, Trigger};
