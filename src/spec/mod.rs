//! What a spec says (name, version, BuildRequires, Provides, source files), from real rpm.
//!
//! Spec files are programs (macros run shell and Lua), so they are only ever evaluated by
//! `rpmspec` inside the target's image, with the package mounted read-only, no network, as
//! an unprivileged user, and within time, CPU and output limits. Answers are cached by the
//! spec's blob id and everything about the target that changes them (image id, macros,
//! kernel release), one small JSON file each, so a warm plan reads a few files and never
//! starts a container.

mod answer;
mod cache;
mod container;
mod oracle;

pub use cache::{CacheKey, SpecCache};
pub use oracle::SpecOracle;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::docker::InfraError;
use crate::model::Nevr;

/// What rpm made of a spec for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecInfo {
    pub nevr: Nevr,
    pub build_requires: Vec<String>,
    /// Provides of every binary package the spec makes.
    pub provides: Vec<String>,
    /// File names its `Source`/`Patch` tags name (rpm keeps the last path component).
    #[serde(default)]
    pub sources: Vec<String>,
}

/// One answer: the spec's facts, or why they are unknown (rpm's complaint about the spec,
/// or a limit it ran into), as a message naming the spec by its repository path.
pub type Answer = Result<SpecInfo, String>;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Docker or the image failed: nothing is known about the specs, nothing is cached.
    #[error("cannot query specs: {0}")]
    Infra(#[from] InfraError),
}

/// A spec to ask about: its blob id (the cache key), the exported package directory, and
/// its path in the repository (what messages name).
#[derive(Debug, Clone)]
pub struct SpecQuery {
    pub blob: String,
    pub dir: PathBuf,
    pub spec_file: String,
    pub path: String,
}
/// Bumped when what a query asks, or how, changes: older answers are then asked again.
const QUERY_VERSION: &str = "4";

/// Wall-clock limit of one rpmspec call: a `%(sleep 1000)` costs this, once per plan.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// CPU seconds one rpmspec call may use (a Lua loop).
const QUERY_CPU_SECS: u32 = 30;
/// Bytes one rpmspec call may write to each of stdout and stderr (`ulimit -f`).
const QUERY_FILE_KIB: u64 = 8 * 1024;
/// Bytes of each call's stdout and stderr that come back to the service.
const SHOWN_OUT: u64 = 2 << 20;
const SHOWN_ERR: u64 = 16 << 10;
/// What the service reads from one batch container at most, whatever happens inside.
const BATCH_OUTPUT_CAP: usize = 96 << 20;
/// A batch container is removed after this long, whatever it is doing.
const BATCH_DEADLINE: Duration = Duration::from_secs(600);
/// Specs asked about in one container; bounded so one bad spec's output stays readable.
const BATCH: usize = 100;
