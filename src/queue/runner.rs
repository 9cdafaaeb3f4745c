//! The queue's seams: what it asks of a planner ([`Planner`]), of a source of commits
//! ([`SourceProvider`]) and of a build executor ([`Runner`]), with the errors each may
//! answer. Kept apart from the scheduling so that the fakes of the tests and the real
//! components ([`DockerRunner`], [`super::planner::GitPlanner`],
//! [`super::source::MirrorSource`]) implement one small, stable surface.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::docker::InfraError;
use crate::executor::provenance::{InputsError, Provenance};
use crate::executor::{BuildReport, BuildRequest, DiskAllowance, LiveLog, Progress};
use crate::model::{BuildId, CommitSha, Outcome, RepoId, TargetName, Trigger};

/// One build the planner asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBuild {
    /// The package's name, as shown in its status context.
    pub package: String,
    /// The spec's path inside the repository.
    pub spec_path: PathBuf,
    pub target: TargetName,
    /// Why the package cannot be built (a spec that does not parse, a symlink out of the
    /// repository...): recorded as a failed build, so that the rest of the change still builds
    /// and the aggregate status still fails.
    pub error: Option<String>,
    /// Build order within the change: starts after the earlier stages, against their RPMs.
    pub stage: u32,
    /// The source package's name, epoch, version and release on this target, as rpm read
    /// the spec (`None`: not known). What a release's publishing rules are checked
    /// against before the build starts.
    pub nevr: Option<crate::model::Nevr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The repository is at fault (unreadable configuration, broken layout): reported as
    /// `failure` so that the author fixes it.
    #[error("{0}")]
    Invalid(String),
    /// Fetching or another infrastructure step failed: reported as `error`.
    #[error("{0}")]
    Infra(String),
}

/// Turns a trigger into builds; [`super::planner::GitPlanner`] in the service, fakes in tests.
pub trait Planner: Send + Sync {
    fn plan<'a>(
        &'a self,
        trigger: &'a Trigger,
    ) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The commit cannot be found: retrying will not help.
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Infra(String),
}

/// Materialises the files of a commit into an empty directory `dest`.
pub trait SourceProvider: Send + Sync {
    fn export<'a>(
        &'a self,
        clone_url: &'a str,
        repo: &'a RepoId,
        commit: &'a CommitSha,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SourceError>>;

    /// The author time (seconds since the epoch) of the last commit up to `commit` that
    /// touched any of `paths` (relative to the repository's root): the package's
    /// `SOURCE_DATE_EPOCH`, the same for every later commit that leaves the package alone
    /// (so that build avoidance can reuse its result). `None` when unknown: the build then
    /// takes its files' newest modification time.
    fn last_change<'a>(
        &'a self,
        _clone_url: &'a str,
        _commit: &'a CommitSha,
        _paths: &'a [PathBuf],
    ) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async { None })
    }
}

/// Why [`super::Indexing::make_repo`] could not make a package repository.
#[derive(Debug, thiserror::Error)]
pub enum MakeRepoError {
    /// The container that runs `createrepo` failed, or the files could not be copied.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// A live log that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the live log {name} of build {id}: {source}")]
pub struct LiveLogError {
    pub id: BuildId,
    pub name: String,
    #[source]
    pub source: std::io::Error,
}

/// Runs one build; the Docker executor in production, a fake in tests of the scheduling.
pub trait Runner: Send + Sync {
    fn run(
        &self,
        req: BuildRequest,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport>;

    /// [`Runner::run`] with what the build may still write to the service's disk (its
    /// change's quota less what the change's results hold): a runner that can takes no
    /// results past it. The queue checks the results against the quota after the build
    /// either way, so a runner that cannot (the default) only writes more before that.
    fn run_within(
        &self,
        req: BuildRequest,
        allowance: Option<DiskAllowance>,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let _ = allowance;
        self.run(req, events, cancel)
    }

    /// Removes whatever a build left behind (its container) after a crash.
    fn cleanup(&self, id: &BuildId) -> BoxFuture<'static, ()>;

    /// After a restart's recovery: removes what killed processes of this service left that
    /// belongs to none of `keep` (the builds being picked up). The default has nothing to
    /// sweep.
    fn sweep(&self, keep: Vec<BuildId>) -> BoxFuture<'static, ()> {
        let _ = keep;
        Box::pin(async {})
    }

    /// The inputs of `req` (see [`crate::executor::provenance`]), read once per build by
    /// the scheduler: their digest keys build avoidance when every input is known
    /// ([`Provenance::reusable`]), and the request carries them to [`Runner::run`], whose
    /// `build.json` records exactly them. `Ok(None)`: this runner cannot tell (the build
    /// always runs, and records its inputs itself if it can).
    fn inputs(
        &self,
        _req: &BuildRequest,
    ) -> BoxFuture<'static, Result<Option<Provenance>, InputsError>> {
        Box::pin(async { Ok(None) })
    }

    /// At most `limit` bytes of the live log `name` (one of
    /// [`LIVE_LOGS`](crate::executor::LIVE_LOGS)) of a build this runner is running: from
    /// `from`, or the last `limit` bytes when `from` is `None`. What the build pages show
    /// while a build runs; the runner, not the service's disk, has them (an executor
    /// elsewhere has its logs elsewhere). `Ok(None)`: no such log (not running here, not
    /// written yet, not a live log's name).
    fn live_log(
        &self,
        _id: &BuildId,
        _target: &TargetName,
        _name: &str,
        _from: Option<u64>,
        _limit: usize,
    ) -> BoxFuture<'static, Result<Option<LiveLog>, LiveLogError>> {
        Box::pin(async { Ok(None) })
    }

    /// Follows a build whose container outlived the previous service process to its end;
    /// `None` when it cannot be picked up and must run again.
    fn reattach(
        &self,
        _req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, Option<BuildReport>> {
        Box::pin(async { None })
    }
}

/// An executor (the local Docker one, or Swarm jobs) as a [`Runner`]; a missing image is
/// an infrastructure fault.
pub struct DockerRunner {
    pub executor: crate::executor::AnyExecutor,
    /// The results root (`out_root`) of each build running here: where its live logs are.
    running: Arc<Mutex<HashMap<BuildId, PathBuf>>>,
}

impl DockerRunner {
    pub fn new(executor: impl Into<crate::executor::AnyExecutor>) -> DockerRunner {
        DockerRunner {
            executor: executor.into(),
            running: Arc::default(),
        }
    }

    /// Remembers where `req` writes until the guard is dropped (the build ended).
    fn track(&self, req: &BuildRequest) -> Tracked {
        if let Ok(mut m) = self.running.lock() {
            m.insert(req.id.clone(), req.out_root.clone());
        }
        Tracked(self.running.clone(), req.id.clone())
    }
}

/// A build [`DockerRunner`] runs; forgotten when dropped.
struct Tracked(Arc<Mutex<HashMap<BuildId, PathBuf>>>, BuildId);

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&self.1);
        }
    }
}

impl Runner for DockerRunner {
    fn run(
        &self,
        req: BuildRequest,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        self.run_within(req, None, events, cancel)
    }

    fn run_within(
        &self,
        req: BuildRequest,
        allowance: Option<DiskAllowance>,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let executor = self.executor.clone();
        let tracked = self.track(&req);
        Box::pin(async move {
            let _tracked = tracked;
            let mut req = req;
            // Read by the scheduler (`Runner::inputs`), with the image id; here only for a
            // request that came without them.
            let inputs = match req.inputs.take() {
                Some(p) => p,
                None => match executor.inputs(&req).await {
                    Ok(p) => p,
                    Err(e) => return error_report(&req, e.to_string()),
                },
            };
            if inputs.image_id.is_none() {
                return error_report(
                    &req,
                    format!(
                        "builder image {} is missing on the Docker host; build it with `packetary images build`",
                        req.target.image
                    ),
                );
            }
            req.inputs = Some(inputs);
            executor
                .run_within(req, allowance, Some(events), cancel)
                .await
        })
    }

    fn inputs(
        &self,
        req: &BuildRequest,
    ) -> BoxFuture<'static, Result<Option<Provenance>, InputsError>> {
        let executor = self.executor.clone();
        let req = req.clone();
        Box::pin(async move { executor.inputs(&req).await.map(Some) })
    }

    fn reattach(
        &self,
        req: BuildRequest,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Option<BuildReport>> {
        let executor = self.executor.clone();
        let tracked = self.track(&req);
        Box::pin(async move {
            let _tracked = tracked;
            executor.reattach(req, Some(events), cancel).await
        })
    }

    fn live_log(
        &self,
        id: &BuildId,
        target: &TargetName,
        name: &str,
        from: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Option<LiveLog>, LiveLogError>> {
        let out_root = self.running.lock().ok().and_then(|m| m.get(id).cloned());
        let (id, target, name) = (id.clone(), target.clone(), name.to_string());
        Box::pin(async move {
            let Some(out_root) = out_root else {
                return Ok(None);
            };
            crate::executor::read_live_log(&out_root, &target, &id, &name, from, limit)
                .await
                .map_err(|source| LiveLogError { id, name, source })
        })
    }

    fn cleanup(&self, id: &BuildId) -> BoxFuture<'static, ()> {
        let (executor, id) = (self.executor.clone(), id.clone());
        Box::pin(async move { executor.cleanup(&id).await })
    }

    fn sweep(&self, keep: Vec<BuildId>) -> BoxFuture<'static, ()> {
        let executor = self.executor.clone();
        Box::pin(async move { executor.sweep(&keep).await })
    }
}

/// Where the service puts a build's results (its executor's `out_root`).
pub fn results_root(data_dir: &Path, id: &BuildId) -> PathBuf {
    data_dir.join("results").join(id.as_str())
}

/// A report for a build that never reached the executor.
pub fn error_report(req: &BuildRequest, message: String) -> BuildReport {
    BuildReport {
        format: crate::executor::provenance::BUILD_JSON_FORMAT,
        id: req.id.clone(),
        package: req.package.label(),
        spec: req.package.relative_spec(),
        target: req.target.name.clone(),
        backend: req.target.backend,
        image: req.target.image.clone(),
        image_id: None,
        nevr: None,
        dir: req.out_root.clone(),
        phases: vec![],
        command: vec![],
        repos: vec![],
        provenance: None,
        reused_from: None,
        outcome: Outcome::Error { message },
    }
}
