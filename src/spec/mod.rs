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
/// or a limit it ran into), naming the spec by its repository path.
pub type Answer = Result<SpecInfo, AnswerError>;

/// Why rpm gave no facts about a spec. Each message names the spec by its repository path
/// and says what to fix; the spec cache keeps a failure as its message, read back as
/// [`AnswerError::Cached`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The query container ended before this spec's answer (not cached).
    #[error("{path}: rpmspec gave no answer (the query container stopped early)")]
    NoAnswer { path: String },
    /// More output than the service reads for one query.
    #[error("{path}: rpmspec printed more than {} MiB for one query; Packetary reads no more\n  fix: look for a macro that expands without end", SHOWN_OUT >> 20)]
    TooMuchOutput { path: String },
    #[error("{path}: rpmspec printed no usable name/version/release")]
    NoNevr { path: String },
    /// The wall-clock limit (exit 124, or 137 after `timeout -k`); not cached.
    #[error("{path}: rpmspec did not finish within {} s and was stopped (a %(...) macro or Lua that does not end?); the spec is asked again at the next plan", QUERY_TIMEOUT.as_secs())]
    Timeout { path: String },
    /// The CPU limit's SIGXCPU (exit 152).
    #[error("{path}: rpmspec used more than {QUERY_CPU_SECS} s of CPU and was stopped\n  fix: look for a macro or Lua loop that does not end")]
    CpuLimit { path: String },
    /// The output limit's SIGXFSZ (exit 153).
    #[error("{path}: rpmspec wrote more than {} MiB and was stopped\n  fix: look for a macro that expands without end", QUERY_FILE_KIB >> 10)]
    OutputLimit { path: String },
    /// rpmspec could not run (exit 126/127): the image's fault; not cached.
    #[error("{path}: rpmspec could not be run in the target's image (exit {code}): {message}; this is the image's fault, not the spec's")]
    CannotRun {
        path: String,
        code: i32,
        message: String,
    },
    /// Another signal; not cached.
    #[error("{path}: rpmspec was killed by signal {signal} while reading the spec; the spec is asked again at the next plan")]
    Killed { path: String, signal: i32 },
    /// The spec itself: rpm's first error lines.
    #[error("rpmspec cannot parse {path} (exit {code}): {message}")]
    Parse {
        path: String,
        code: i32,
        message: String,
    },
    /// A spec the oracle got no reply for at all.
    #[error("no answer from rpmspec")]
    Unanswered,
    /// The spec's files could not be exported to be asked about (not cached).
    #[error("{0}")]
    Unexported(String),
    /// A failure read back from the spec cache, which keeps it as its message.
    #[error("{0}")]
    Cached(String),
}

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
