//! A build's life: the package it builds, the phases it goes through, how it ends
//! ([`Outcome`]) and the state the queue keeps of it ([`BuildState`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ReportState;

/// The state of a build in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Error,
    Cancelled,
    Superseded,
}

impl BuildState {
    pub const ALL: [BuildState; 7] = [
        BuildState::Queued,
        BuildState::Running,
        BuildState::Succeeded,
        BuildState::Failed,
        BuildState::Error,
        BuildState::Cancelled,
        BuildState::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Error => "error",
            BuildState::Cancelled => "cancelled",
            BuildState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<BuildState> {
        BuildState::ALL.into_iter().find(|b| b.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, BuildState::Queued | BuildState::Running)
    }

    /// The commit status a build in this state stands for.
    pub fn report_state(self) -> ReportState {
        match self {
            BuildState::Queued | BuildState::Running => ReportState::Pending,
            BuildState::Succeeded => ReportState::Success,
            BuildState::Failed => ReportState::Failure,
            BuildState::Error | BuildState::Cancelled | BuildState::Superseded => {
                ReportState::Error
            }
        }
    }
}

/// The phases of a build, in order; each is timed in `state.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Container created, the package given to it, started.
    Prepare,
    /// The SRPM is made from the spec and its sources.
    Srpm,
    /// BuildRequires of the SRPM are installed from the target's repositories.
    Deps,
    /// Binary packages are rebuilt from the SRPM, without network.
    Build,
    /// Results are checked and moved to their final place.
    Collect,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Srpm => "srpm",
            Phase::Deps => "deps",
            Phase::Build => "build",
            Phase::Collect => "collect",
        }
    }

    /// The log a phase writes to, named like Mock's.
    pub fn log_name(self) -> &'static str {
        match self {
            Phase::Prepare | Phase::Deps => "root.log",
            Phase::Srpm | Phase::Build => "build.log",
            Phase::Collect => "state.log",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a package did not build; all of these are the package's doing, not the system's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// A phase's command exited non-zero.
    Exit { code: i64 },
    /// BuildRequires that no repository provides.
    MissingDeps { capabilities: Vec<String> },
    /// The wall-clock limit ran out.
    Timeout { limit_secs: u64 },
    /// The kernel killed the build for exceeding its memory limit.
    OutOfMemory { limit_bytes: Option<i64> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded {
        /// The source package (an SRPM).
        source: PathBuf,
        /// The binary packages (RPMs), subpackages included.
        binaries: Vec<PathBuf>,
    },
    Failed {
        phase: Phase,
        failure: Failure,
        /// One line for a status description: what failed and the first error line.
        message: String,
        log: PathBuf,
    },
    /// An infrastructure fault (Docker, disk, image): worth retrying, not the package's fault.
    Error {
        message: String,
    },
    Cancelled,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }
}

/// One package: a spec file and the directory its sources come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSource {
    /// Canonical path of the tree that was searched; nothing outside it is used.
    pub root: PathBuf,
    /// Canonical path of the spec file.
    pub spec: PathBuf,
    /// Canonical directory mounted as `%_sourcedir`.
    pub source_dir: PathBuf,
}

impl PackageSource {
    /// A name good enough for messages before the spec has been read: its file stem.
    pub fn label(&self) -> String {
        self.spec
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "package".into())
    }

    /// The spec's path relative to the searched tree, for messages.
    pub fn relative_spec(&self) -> PathBuf {
        self.spec
            .strip_prefix(&self.root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| self.spec.clone())
    }
}
