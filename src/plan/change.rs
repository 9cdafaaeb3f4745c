//! From a change (a push or a review) to the packages it touched: which commits to
//! compare, which configuration applies, and which packages each changed path belongs to.
//! Only reads the object database; spec facts and order are added afterwards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::layout::{Layout, PackageId};
use crate::model::{CommitSha, Nevr, TargetName};

/// What happened in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// `after` was pushed over `before`; `before` absent (or all zeros) for a new branch.
    Push {
        before: Option<String>,
        after: String,
    },
    /// `head` is proposed for `base` (a branch name or a commit).
    Review { base: String, head: String },
}

/// How the compared commits were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    Push,
    Review,
    NewBranch,
    /// A push whose `before` no longer exists.
    ForcePush,
}

/// Why a package is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Files of the package changed (the first few, and how many in all).
    Changed { paths: Vec<String>, count: usize },
    /// `.packetary.toml` changed in a way that concerns this package.
    Config { detail: String },
    /// Files shared by the specs of `dir` changed and no spec's Source/Patch tags name
    /// them (or rpm could not say): every spec there is rebuilt.
    Shared {
        paths: Vec<String>,
        count: usize,
        dir: String,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |paths: &[String], count: usize| {
            if count > paths.len() {
                format!("{} (+{} more)", paths.join(", "), count - paths.len())
            } else {
                paths.join(", ")
            }
        };
        match self {
            Reason::Changed { paths, count } => write!(f, "changed {}", list(paths, *count)),
            Reason::Config { detail } => f.write_str(detail),
            Reason::Shared { paths, count, dir } => write!(
                f,
                "changed {}, shared by the specs of {} and named by none of their Source/Patch tags, so every one is rebuilt",
                list(paths, *count),
                if dir.is_empty() { "." } else { dir }
            ),
        }
    }
}

/// A changed file of a directory several specs share, pending rpm's word on which specs
/// name it ([`super::complete`] turns it into a [`Reason`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    pub path: String,
    /// Gone from the new tree: nothing can use it any more unless a spec still names it.
    pub deleted: bool,
}

/// One package to build, for one or more targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPackage {
    pub id: PackageId,
    pub layout: Layout,
    pub spec: String,
    pub source_dir: String,
    /// The spec's blob id: the spec cache's key.
    pub spec_blob: Option<String>,
    /// From rpm, when the spec could be queried.
    pub name: Option<String>,
    pub nevr: Option<Nevr>,
    /// The NEVR on each target where it differs from `nevr` (a `%{?dist}` in Release).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_nevrs: BTreeMap<TargetName, Nevr>,
    pub targets: Vec<TargetName>,
    pub reasons: Vec<Reason>,
    /// Build stage: every package of a stage may build at once, after the earlier stages.
    pub stage: usize,
    /// Plan packages whose RPMs this one needs (it builds after them and sees them).
    pub depends_on: Vec<PackageId>,
    /// Why it cannot be built; it is then left out of the build but stays in the plan.
    pub error: Option<String>,
    /// A candidate through the shared files of its spec's directory ([`Plan::shared`]);
    /// cleared once rpm has said which specs name them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Things worth knowing about this package (a dependency whose spec is broken).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

impl PlannedPackage {
    /// The package's NEVR on `target`, when rpm could read the spec there.
    pub fn nevr_on(&self, target: &TargetName) -> Option<&Nevr> {
        self.target_nevrs.get(target).or(self.nevr.as_ref())
    }
}

/// A package of the compared commit that the change removed: nothing to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedPackage {
    pub id: PackageId,
    pub spec: String,
}

/// Everything needed to run, show or report the builds of one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub repo: String,
    pub change: Change,
    pub kind: DiffKind,
    pub head: Option<CommitSha>,
    /// The commit whose tree `head` was compared with (`None`: everything in `head`).
    pub compared_with: Option<CommitSha>,
    /// Where `.packetary.toml` was read.
    pub config_from: Option<CommitSha>,
    pub changed_paths: usize,
    /// The dist-git lookaside URL template from `.packetary.toml`, if any.
    pub lookaside: Option<String>,
    /// Packages in build order (by stage, then path).
    pub packages: Vec<PlannedPackage>,
    pub deleted: Vec<DeletedPackage>,
    /// Changed shared files by the directory of the specs that share them, kept once per
    /// directory rather than per spec (a first commit of 3,000 specs in 26 directories
    /// would otherwise list each file a hundred times); emptied once resolved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared: BTreeMap<String, Vec<SharedFile>>,
    /// Things worth knowing that do not stop anything.
    pub notices: Vec<String>,
    /// Problems of the whole change (a missing commit, a broken `.packetary.toml`): when
    /// present, nothing is built.
    pub errors: Vec<String>,
}

impl Plan {
    pub(super) fn empty(repo: &str, change: &Change) -> Plan {
        Plan {
            repo: repo.to_string(),
            change: change.clone(),
            kind: match change {
                Change::Push { .. } => DiffKind::Push,
                Change::Review { .. } => DiffKind::Review,
            },
            head: None,
            compared_with: None,
            config_from: None,
            changed_paths: 0,
            lookaside: None,
            packages: vec![],
            deleted: vec![],
            shared: BTreeMap::new(),
            notices: vec![],
            errors: vec![],
        }
    }

    /// Packages that can be built (no error of their own).
    pub fn buildable(&self) -> impl Iterator<Item = &PlannedPackage> {
        self.packages.iter().filter(|p| p.error.is_none())
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty() || self.packages.iter().any(|p| p.error.is_some())
    }
}

/// What the planner needs from the service configuration.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The branch a new branch is compared with (`refs/heads/main`, or `main`); default:
    /// the repository's HEAD.
    pub default_branch: Option<String>,
    /// Targets used when `.packetary.toml` names none.
    pub default_targets: Vec<String>,
    /// Every target the service knows; others named by a repository are refused.
    pub known_targets: Vec<String>,
}
