//! Executors: a build from its request to its report. One fresh container per build,
//! phases with their own logs and timings, limits, inputs in and results out through the
//! container engine's API. Docker's types stay in `docker`.
//!
//! # What an executor owes (the seam)
//!
//! The queue hands an executor a [`BuildRequest`] and wants a [`BuildReport`] back,
//! through its `Runner` trait (`crate::queue::Runner`; `DockerRunner` wraps this
//! [`Executor`]). The build shares no disk with the service: only `out_root` is the
//! service's, and only the executor writes there. Any executor (this local Docker one, or
//! one for Swarm or Kubernetes) does the same five things:
//!
//! 1. **Moves the inputs.** The package is files on the service host
//!    ([`PackageSource`]: the spec and its source directory); the executor carries them
//!    to where the build runs, as data (this one: a tar uploaded into the created
//!    container, see `inputs`), together with the files the backend generates
//!    ([`backend::Script::files`]). Every repository is named by URL ([`BuildRepo::url`]:
//!    the service serves the ones it makes under `/repos/`, at `[server] repos_url`,
//!    stage repositories included), which the build reaches in its dependency phase, the
//!    only one with network. A repository that is also a directory on this host
//!    ([`BuildRepo::local`]) is mounted read-only by this executor instead, as its own
//!    optimisation; an executor elsewhere ignores `local`. A target's directory
//!    repository ([`RepoLocation::Dir`](crate::config::RepoLocation)) has a `file://` URL
//!    only, so it makes sense where the build runs on the service host alone.
//! 2. **Runs the phases** (prepare, srpm, deps, build, collect) within the target's limits
//!    and time limit, honours the cancellation token, and never leaves the build's
//!    container (or pod, or task) behind.
//! 3. **Reports progress**: [`Progress`] events on the channel it is given
//!    ([`ProgressKind::PhaseStarted`], [`ProgressKind::PhaseFinished`], and
//!    [`ProgressKind::Finished`] last), and the phase logs ([`LIVE_LOGS`]: `root.log`,
//!    `build.log`) readable while the build runs, in bounded pieces, through the runner
//!    (`crate::queue::Runner::live_log`), which the build pages ask: wherever the build
//!    runs, not from the service's disk. This executor writes them into
//!    [`staging_dir`]`(out_root, target, id)/logs/` and reads them from there
//!    ([`read_live_log`]). The logs are the executor's own files, written from the
//!    build's output stream; nothing the build makes is written there.
//! 4. **Delivers the results** into `out_root/<target>/<n-v-r>/` on the service host:
//!    the SRPM and RPMs as regular files (taken out of the build and checked entry by
//!    entry: no links, no special files, nothing outside the result tree, within size and
//!    count limits, see `results`), and `logs/` with `root.log`, `build.log`,
//!    `state.log` (phase timings) and `build.json` (the report).
//! 5. **Returns the [`BuildReport`]**, whose [`Outcome`] says
//!    whether the package built, failed (the package's fault: phase, kind, first error
//!    line, log) or hit an error of the infrastructure (worth a retry).
//!
//! Optionally, an executor whose builds outlive the service picks them up again after a
//! restart ([`Executor::reattach`]); one that cannot answers `None` and the queue runs the
//! build again.
//!
//! # Files
//!
//! `executor` (the local Docker executor: run, reattach, conclude), `follow` (a driver's
//! output, its exit classified, results taken), `run` (the per-build state, logs and
//! finish), `inputs` (the upload archive), `results` (the download archive, checked),
//! `classify` (reading failed phases' output), `repo` ([`BuildRepo`], and repositories of
//! earlier results),
//! `backend` (what runs in the container), `images`; the Engine API is `crate::docker`.

mod any;
pub mod backend;
mod classify;
mod follow;
pub mod images;
mod inputs;
mod local;
pub mod mockroot;
pub mod provenance;
mod repo;
mod results;
mod run;
pub mod swarm;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Backend, Target};
use crate::model::{BuildId, Nevr, Outcome, PackageSource, Phase, TargetName};

pub use any::{from_config as executor_from_config, AnyExecutor};
pub use classify::{failure_summary, first_error_line, missing_capabilities, tail};
pub use local::Executor;
pub use repo::{binary_packages_in, build_repos, local_repo, BuildRepo};
pub use results::{
    fetch_tree, size_text, DiskAllowance, FetchError, Limits, Taken, MAX_RESULT_BYTES,
    MAX_RESULT_ENTRIES,
};
pub use run::{read_live_log, staging_dir, LiveLog, LIVE_LOGS};
pub use swarm::SwarmExecutor;

/// One build to run.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub id: BuildId,
    /// Which dependency cache the build's dependency phase uses (see [`DepsCache`]).
    pub deps_cache: DepsCache,
    pub package: PackageSource,
    pub target: Target,
    /// Results go to `out_root/<target>/<name>-<version>-<release>/`.
    pub out_root: PathBuf,
    /// Repositories added to the target's for this build (a change's earlier stages, a
    /// release's snapshot, the change's published packages): each a URL the build can
    /// reach, and a directory when the repository is also on this host.
    pub extra_repos: Vec<BuildRepo>,
    /// `SOURCE_DATE_EPOCH` for rpm: the time of the last commit that touched the package
    /// (service, `build --git`); `None`: the newest modification time of its files.
    pub source_date_epoch: Option<i64>,
    /// The build's inputs, recorded once before it runs (the scheduler asks the runner:
    /// `queue::Runner::inputs`); the executor writes exactly this record into
    /// `build.json`. `None`: the executor reads them itself (the CLI's builds, a
    /// reattached build).
    pub inputs: Option<provenance::Provenance>,
}

/// The dependency cache a build may use. What the dependency phase installs runs as root
/// (a change's own earlier-stage packages, their scriptlets included), and whatever it
/// leaves in a cache every later build sharing that cache reads: so a cache is shared only
/// within one trust class (issue 22, H1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DepsCache {
    /// The target's cache of one scope: pushes of one repository (made by people who may
    /// write it), or the command line's own builds.
    Shared(String),
    /// None kept: an untrusted change (a pull request, a fork's, a Gerrit upload)
    /// downloads into its container only.
    #[default]
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub phase: Phase,
    pub started: String,
    pub seconds: f64,
    pub ok: bool,
}

/// What a build produced and how; also written as `build.json` next to the logs (and
/// read back, typed, by build avoidance).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    /// Version of this format ([`provenance::BUILD_JSON_FORMAT`]).
    pub format: u32,
    pub id: BuildId,
    pub package: String,
    pub spec: PathBuf,
    pub target: TargetName,
    pub backend: Backend,
    pub image: String,
    pub image_id: Option<String>,
    pub nevr: Option<Nevr>,
    pub dir: PathBuf,
    pub phases: Vec<PhaseTiming>,
    /// The exact command run in the container (the driver running every phase), once.
    pub command: Vec<String>,
    pub repos: Vec<String>,
    /// The recorded inputs, for `packetary rebuild` and build avoidance; `None` when the
    /// build stopped before they were read.
    pub provenance: Option<provenance::Provenance>,
    /// Set when the build did not run: its results are those of this earlier build with
    /// the same input digest (build avoidance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<BuildId>,
    pub outcome: Outcome,
}

/// Progress of a build, for terminals and build pages.
#[derive(Debug, Clone)]
pub struct Progress {
    pub build: BuildId,
    pub package: String,
    pub target: TargetName,
    pub kind: ProgressKind,
}

#[derive(Debug, Clone)]
pub enum ProgressKind {
    /// The container the build runs in (created, or found again after a restart).
    Container(String),
    PhaseStarted(Phase),
    PhaseFinished {
        phase: Phase,
        elapsed: Duration,
        ok: bool,
    },
    Finished(Box<BuildReport>),
}
