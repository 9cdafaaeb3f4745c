//! Scheduling over the store: planning triggers into builds, running them fairly across
//! repositories up to the configured parallelism, superseding, retrying infrastructure
//! faults, recovering at start, draining at shutdown, and delivering the outbox of reports.
//!
//! Every state a build can end in produces a final report: nothing is left pending.

pub mod ingest;
pub mod metrics;
pub mod planner;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::build::{BuildReport, BuildRequest, Progress, ProgressKind};
use crate::config::Target;
use crate::forge::Forge;
use crate::model::{
    build_context, BuildId, BuildState, ChangeKind, Command, CommitSha, Outcome, RepoId, Report,
    ReportState, TargetName, Trigger, AGGREGATE_CONTEXT,
};
use crate::store::{
    BuildRow, Millis, NewBuild, PhaseRow, Store, StoreError, StoredTrigger, TriggerState,
};
pub use metrics::Metrics;

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

/// Turns a trigger into builds; [`planner::GitPlanner`] in the service, fakes in tests.
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
}

/// Runs one build; the Docker executor in production, a fake in tests of the scheduling.
pub trait Runner: Send + Sync {
    fn run(
        &self,
        req: BuildRequest,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport>;

    /// Removes whatever a build left behind (its container) after a crash.
    fn cleanup(&self, id: &BuildId) -> BoxFuture<'static, ()>;

    /// Makes `dir` a repository of `rpms` that builds in `image` can install from.
    fn make_repo(
        &self,
        _image: String,
        _dir: PathBuf,
        _rpms: Vec<PathBuf>,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("this runner cannot make package repositories".to_string()) })
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

/// The Docker executor as a [`Runner`]; a missing image is an infrastructure fault.
pub struct DockerRunner {
    pub executor: crate::build::Executor,
}

impl Runner for DockerRunner {
    fn run(
        &self,
        req: BuildRequest,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let executor = self.executor.clone();
        Box::pin(async move {
            let image_id = match executor.engine().image_id(&req.target.image).await {
                Ok(Some(id)) => Some(id),
                Ok(None) => {
                    return error_report(
                        &req,
                        format!(
                            "builder image {} is missing on the Docker host; build it with `packetary images build`",
                            req.target.image
                        ),
                    )
                }
                Err(e) => return error_report(&req, e.to_string()),
            };
            executor.run(req, image_id, Some(events), cancel).await
        })
    }

    fn make_repo(
        &self,
        image: String,
        dir: PathBuf,
        rpms: Vec<PathBuf>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let engine = self.executor.engine().clone();
        Box::pin(async move {
            crate::build::local_repo(&engine, &image, &dir, &rpms)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn reattach(
        &self,
        req: BuildRequest,
        events: tokio::sync::mpsc::UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Option<BuildReport>> {
        let executor = self.executor.clone();
        Box::pin(async move { executor.reattach(req, Some(events), cancel).await })
    }

    fn cleanup(&self, id: &BuildId) -> BoxFuture<'static, ()> {
        let engine = self.executor.engine().clone();
        let label = format!("{}={id}", crate::build::LABEL_BUILD);
        Box::pin(async move {
            match engine.containers_with_label(&label).await {
                Ok(ids) => {
                    for c in ids {
                        if let Err(e) = engine.remove(&c).await {
                            tracing::warn!(container = %c, "cannot remove a leftover build container: {e}");
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot list leftover build containers: {e}"),
            }
        })
    }
}

/// Where the service puts a build's results (its executor's `out_root`).
pub fn results_root(data_dir: &Path, id: &BuildId) -> PathBuf {
    data_dir.join("results").join(id.as_str())
}

/// A report for a build that never reached the executor.
pub fn error_report(req: &BuildRequest, message: String) -> BuildReport {
    BuildReport {
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
        commands: vec![],
        repos: vec![],
        outcome: Outcome::Error { message },
    }
}

/// What the queue needs from the configuration.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub parallel: usize,
    pub data_dir: PathBuf,
    /// Base of the build pages, for `target_url`.
    pub public_url: String,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub shutdown_grace: Duration,
    pub build_forks: bool,
    pub targets: BTreeMap<TargetName, Target>,
}

/// Handle to the running queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    forge: Arc<dyn Forge>,
    planner: Arc<dyn Planner>,
    sources: Arc<dyn SourceProvider>,
    runner: Arc<dyn Runner>,
    cfg: QueueConfig,
    metrics: Arc<Metrics>,
    plan_wake: Notify,
    build_wake: Notify,
    outbox_wake: Notify,
    running: Mutex<HashMap<BuildId, CancellationToken>>,
    /// Set by SIGTERM: take no more builds.
    draining: AtomicBool,
    /// Set when the grace period ran out: stopped builds go back to the queue.
    shutting_down: AtomicBool,
    stop: CancellationToken,
}

/// Errors of the queue's own loops; logged and retried, never fatal to the service.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Queue {
    pub fn new(
        store: Store,
        forge: Arc<dyn Forge>,
        planner: Arc<dyn Planner>,
        sources: Arc<dyn SourceProvider>,
        runner: Arc<dyn Runner>,
        cfg: QueueConfig,
        metrics: Arc<Metrics>,
    ) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                store,
                forge,
                planner,
                sources,
                runner,
                cfg,
                metrics,
                plan_wake: Notify::new(),
                build_wake: Notify::new(),
                outbox_wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
                draining: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                stop: CancellationToken::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The data directory (database, results).
    pub fn store_dir(&self) -> PathBuf {
        self.inner.cfg.data_dir.clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Something new was stored: plan it.
    pub fn wake(&self) {
        self.inner.plan_wake.notify_one();
    }

    /// Recovers from the previous run, then starts the planner, scheduler and outbox loops.
    /// Builds that were running when the service stopped are reattached when their
    /// container still runs its phases (or has finished them); the others have their
    /// containers removed and run again from the start.
    pub async fn start(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, QueueError> {
        let store = &self.inner.store;
        for b in store.builds_in_state(BuildState::Running).await? {
            if let Some(req) = self.existing_request(&b) {
                let id = b.id.clone();
                self.spawn_running(id, move |q, token| async move {
                    q.resume_build(b, req, token).await
                });
            } else {
                self.requeue_after_restart(&b).await?;
            }
        }
        let q = self.clone();
        let planner = tokio::spawn(async move { q.planner_loop().await });
        let q = self.clone();
        let scheduler = tokio::spawn(async move { q.scheduler_loop().await });
        let q = self.clone();
        let outbox = tokio::spawn(async move { q.outbox_loop().await });
        Ok(vec![planner, scheduler, outbox])
    }

    async fn requeue_after_restart(&self, b: &BuildRow) -> Result<(), QueueError> {
        tracing::info!(build = %b.id, "requeueing a build that was running when the service stopped");
        self.inner.runner.cleanup(&b.id).await;
        if self
            .inner
            .store
            .requeue(
                &b.id,
                Millis::now(),
                Some("requeued after a restart"),
                false,
            )
            .await?
        {
            self.report_build(b, BuildState::Queued, "requeued after a restart")
                .await?;
        }
        Ok(())
    }

    /// The request of a build that was running, from the sources it exported then (a
    /// running container still has them mounted); `None` when they are gone.
    fn existing_request(&self, b: &BuildRow) -> Option<BuildRequest> {
        let target = self.inner.cfg.targets.get(&b.target).cloned()?;
        let src = self
            .inner
            .cfg
            .data_dir
            .join("work")
            .join(b.id.as_str())
            .join("src");
        let package = crate::plan::package_for_spec(&src, &src.join(&b.spec_path)).ok()?;
        Some(BuildRequest {
            id: b.id.clone(),
            package,
            target,
            out_root: results_root(&self.inner.cfg.data_dir, &b.id),
            extra_repos: vec![],
        })
    }

    async fn resume_build(
        &self,
        b: BuildRow,
        req: BuildRequest,
        cancel: CancellationToken,
    ) -> Result<(), QueueError> {
        let started = Instant::now();
        let (tx, progress) = self.progress_forwarder(&b.id);
        let report = self.inner.runner.reattach(req, tx, cancel).await;
        let _ = progress.await;
        let Some(report) = report else {
            return self.requeue_after_restart(&b).await;
        };
        tracing::info!(build = %b.id, "reattached build ended");
        let work = self.inner.cfg.data_dir.join("work").join(b.id.as_str());
        let _ = tokio::fs::remove_dir_all(&work).await;
        self.finish(&b, Ok(report), started.elapsed()).await
    }

    /// Forwards a build's events to the store (current phase) and the metrics.
    fn progress_forwarder(
        &self,
        id: &BuildId,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<Progress>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let store = self.inner.store.clone();
        let metrics = self.inner.metrics.clone();
        let id = id.clone();
        let progress = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match ev.kind {
                    ProgressKind::PhaseStarted(p) => {
                        let _ = store.set_build_progress(&id, None, Some(p.as_str())).await;
                    }
                    ProgressKind::PhaseFinished { phase, elapsed, .. } => {
                        metrics.phase_finished(phase.as_str(), elapsed.as_secs_f64());
                    }
                    ProgressKind::Finished(_) => {}
                }
            }
        });
        (tx, progress)
    }

    /// SIGTERM: stop taking builds, let running ones finish within the grace period, then
    /// stop them and put them back in the queue; deliver what reports can be delivered.
    pub async fn drain(&self) {
        let inner = &self.inner;
        inner.draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + inner.cfg.shutdown_grace;
        tracing::info!(
            running = self.running_count(),
            "draining: waiting up to {:?} for running builds",
            inner.cfg.shutdown_grace
        );
        while self.running_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if self.running_count() > 0 {
            tracing::warn!(
                "grace period over: stopping {} build(s); they will run again at the next start",
                self.running_count()
            );
            inner.shutting_down.store(true, Ordering::SeqCst);
            for t in self.tokens() {
                t.cancel();
            }
            let stop_deadline = Instant::now() + Duration::from_secs(30);
            while self.running_count() > 0 && Instant::now() < stop_deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let flush_deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < flush_deadline {
            match self.deliver_due().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("delivering reports at shutdown: {e}");
                    break;
                }
            }
        }
        inner.stop.cancel();
    }

    fn running_count(&self) -> usize {
        self.inner.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn tokens(&self) -> Vec<CancellationToken> {
        self.inner
            .running
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn cancel_running(&self, id: &BuildId) {
        if let Some(t) = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
        {
            t.cancel();
        }
    }

    /// A pull request was closed or a branch deleted: end its queued and running builds.
    pub async fn close_change(
        &self,
        repo: &RepoId,
        kind: ChangeKind,
        ref_name: &str,
        pr_number: Option<u64>,
    ) -> Result<(), QueueError> {
        let message = match kind {
            ChangeKind::PullRequest => "cancelled: the pull request was closed",
            ChangeKind::Push => "cancelled: the branch was deleted",
        };
        let ended = self
            .inner
            .store
            .close_change(repo, kind, ref_name, pr_number, message)
            .await?;
        self.after_ended(&ended, BuildState::Cancelled, message)
            .await
    }

    async fn after_ended(
        &self,
        ended: &[BuildRow],
        state: BuildState,
        message: &str,
    ) -> Result<(), QueueError> {
        let mut commits = vec![];
        for b in ended {
            self.cancel_running(&b.id);
            self.report_build(b, state, message).await?;
            if !commits.contains(&(b.repo.clone(), b.commit.clone())) {
                commits.push((b.repo.clone(), b.commit.clone()));
            }
        }
        for (repo, sha) in commits {
            self.report_aggregate(&repo, &sha).await?;
        }
        Ok(())
    }

    // ---- planning ----------------------------------------------------------------------

    async fn planner_loop(&self) {
        loop {
            let mut wait = Duration::from_secs(30);
            if let Err(e) = self.plan_pending().await {
                tracing::error!("planning: {e}");
                wait = Duration::from_secs(1);
            } else if let Ok(Some(due)) = self.inner.store.next_trigger_due().await {
                let ms = (due.0 - Millis::now().0).max(10) as u64;
                wait = wait.min(Duration::from_millis(ms));
            }
            tokio::select! {
                () = self.inner.plan_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// Handles every stored command and trigger not handled yet.
    pub async fn plan_pending(&self) -> Result<(), QueueError> {
        while let Some(c) = self.inner.store.next_command().await? {
            self.handle_command(c).await?;
        }
        while let Some(t) = self.inner.store.next_new_trigger().await? {
            self.handle_trigger(t).await?;
        }
        Ok(())
    }

    async fn handle_command(&self, c: crate::store::StoredCommand) -> Result<(), QueueError> {
        let store = &self.inner.store;
        let r = &c.request;
        if !r.trusted {
            match self.inner.forge.can_write(&r.repo, &r.user).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(repo = %r.repo, user = %r.user, "ignoring /packetary {} from a user without write permission", r.command.name());
                    store
                        .finish_command(c.id, "refused", "the user has no write permission")
                        .await?;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(repo = %r.repo, user = %r.user, "cannot check permissions: {e}");
                    store
                        .finish_command(c.id, "failed", &format!("permission check failed: {e}"))
                        .await?;
                    return Ok(());
                }
            }
        }
        match &r.command {
            Command::Approve => {
                store.finish_command(c.id, "done", "approved").await?;
                if let Some(pr) = r.pr_number {
                    let n = store.approve(&r.repo, pr).await?;
                    tracing::info!(repo = %r.repo, pr, user = %r.user, "approved builds of a pull request ({n} waiting)");
                }
            }
            Command::Rebuild { package, target } => {
                let Some(latest) = store
                    .latest_trigger(&r.repo, r.pr_number, r.head.as_ref())
                    .await?
                else {
                    store
                        .finish_command(c.id, "refused", "nothing was built here before")
                        .await?;
                    return Ok(());
                };
                let mut t = latest.trigger;
                t.only_package = package.clone();
                t.only_target = target.clone();
                t.sender = r.user.clone();
                store.insert_trigger(&t, TriggerState::New).await?;
                store.finish_command(c.id, "done", "rebuild queued").await?;
            }
        }
        Ok(())
    }

    async fn handle_trigger(&self, st: StoredTrigger) -> Result<(), QueueError> {
        let store = &self.inner.store;
        let t = &st.trigger;
        let superseded = store.supersede(t, st.id).await?;
        if !superseded.is_empty() {
            tracing::info!(repo = %t.repo, head = %t.head, "superseding {} build(s)", superseded.len());
            self.after_ended(
                &superseded,
                BuildState::Superseded,
                &format!("superseded by {}", t.head),
            )
            .await?;
        }
        if t.from_fork && !self.inner.cfg.build_forks {
            let approved = match t.pr_number {
                Some(n) => store.is_approved(&t.repo, n).await?,
                None => false,
            };
            if !approved {
                store
                    .set_trigger_state(
                        st.id,
                        TriggerState::AwaitingApproval,
                        Some("pull request from a fork"),
                    )
                    .await?;
                self.set_report(Report {
                    repo: t.repo.clone(),
                    sha: t.head.clone(),
                    context: AGGREGATE_CONTEXT.into(),
                    state: ReportState::Pending,
                    description: "pull request from a fork: waiting for a maintainer to comment /packetary approve".into(),
                    target_url: Some(self.index_url(&t.head)),
                })
                .await?;
                return Ok(());
            }
        }
        match self.inner.planner.plan(t).await {
            Ok(planned) => {
                let builds: Vec<NewBuild> = planned
                    .into_iter()
                    .filter(|p| t.only_package.as_ref().is_none_or(|o| *o == p.package))
                    .filter(|p| {
                        t.only_target
                            .as_ref()
                            .is_none_or(|o| o == p.target.as_str())
                    })
                    .map(|p| NewBuild {
                        id: BuildId::generate(),
                        package: p.package,
                        spec_path: p.spec_path.display().to_string(),
                        target: p.target,
                        error: p.error,
                        stage: p.stage,
                    })
                    .collect();
                store.insert_builds(&st, &builds).await?;
                tracing::info!(repo = %t.repo, head = %t.head, "planned {} build(s)", builds.len());
                for b in &builds {
                    let (state, description) = match &b.error {
                        None => (ReportState::Pending, "queued".to_string()),
                        Some(e) => (ReportState::Failure, format!("plan: {e}")),
                    };
                    self.set_report(Report {
                        repo: t.repo.clone(),
                        sha: t.head.clone(),
                        context: build_context(b.target.as_str(), &b.package),
                        state,
                        description,
                        target_url: Some(self.build_url(&b.id)),
                    })
                    .await?;
                }
                if builds.is_empty() {
                    self.set_report(Report {
                        repo: t.repo.clone(),
                        sha: t.head.clone(),
                        context: AGGREGATE_CONTEXT.into(),
                        state: ReportState::Success,
                        description: "no package to build".into(),
                        target_url: Some(self.index_url(&t.head)),
                    })
                    .await?;
                } else {
                    self.report_aggregate(&t.repo, &t.head).await?;
                }
                self.inner.build_wake.notify_one();
            }
            Err(PlanError::Infra(m)) if (st.attempts as u32) + 1 < self.inner.cfg.max_attempts => {
                let wait = self
                    .inner
                    .cfg
                    .retry_backoff
                    .saturating_mul(1 << (st.attempts as u32).min(10));
                let msg = format!(
                    "planning failed, retrying in {}: {m}",
                    humantime::format_duration(wait)
                );
                tracing::warn!(repo = %t.repo, head = %t.head, "{msg}");
                store
                    .retry_trigger(st.id, Millis::now().after(wait), &msg)
                    .await?;
                self.set_report(Report {
                    repo: t.repo.clone(),
                    sha: t.head.clone(),
                    context: AGGREGATE_CONTEXT.into(),
                    state: ReportState::Pending,
                    description: msg,
                    target_url: Some(self.index_url(&t.head)),
                })
                .await?;
            }
            Err(e) => {
                tracing::warn!(repo = %t.repo, head = %t.head, "planning failed: {e}");
                let state = match e {
                    PlanError::Invalid(_) => ReportState::Failure,
                    PlanError::Infra(_) => ReportState::Error,
                };
                store
                    .set_trigger_state(st.id, TriggerState::Failed, Some(&e.to_string()))
                    .await?;
                self.set_report(Report {
                    repo: t.repo.clone(),
                    sha: t.head.clone(),
                    context: AGGREGATE_CONTEXT.into(),
                    state,
                    description: format!("planning failed: {e}"),
                    target_url: Some(self.index_url(&t.head)),
                })
                .await?;
            }
        }
        Ok(())
    }

    // ---- running -----------------------------------------------------------------------

    async fn scheduler_loop(&self) {
        loop {
            let mut wait = Duration::from_secs(30);
            match self.schedule().await {
                Ok(Some(due)) => {
                    let ms = (due.0 - Millis::now().0).max(10) as u64;
                    wait = wait.min(Duration::from_millis(ms));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("scheduling: {e}");
                    wait = Duration::from_secs(1);
                }
            }
            tokio::select! {
                () = self.inner.build_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// Starts queued builds while there is room; returns when the next waiting one is due.
    async fn schedule(&self) -> Result<Option<Millis>, QueueError> {
        while !self.inner.draining.load(Ordering::SeqCst)
            && self.running_count() < self.inner.cfg.parallel
        {
            let Some(b) = self.inner.store.claim_next_build(Millis::now()).await? else {
                break;
            };
            let id = b.id.clone();
            self.spawn_running(
                id,
                move |q, token| async move { q.run_build(b, token).await },
            );
        }
        Ok(self.inner.store.next_due().await?)
    }

    /// Runs a build's work as a running build: cancellable through the running map,
    /// counted against the parallelism, and the scheduler woken when it ends.
    fn spawn_running<F, Fut>(&self, id: BuildId, work: F)
    where
        F: FnOnce(Queue, CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), QueueError>> + Send + 'static,
    {
        let token = CancellationToken::new();
        if let Ok(mut m) = self.inner.running.lock() {
            m.insert(id.clone(), token.clone());
        }
        let q = self.clone();
        tokio::spawn(async move {
            if let Err(e) = work(q.clone(), token).await {
                tracing::error!(build = %id, "{e}");
            }
            if let Ok(mut m) = q.inner.running.lock() {
                m.remove(&id);
            }
            q.inner.build_wake.notify_one();
        });
    }

    async fn run_build(&self, b: BuildRow, cancel: CancellationToken) -> Result<(), QueueError> {
        let inner = &self.inner;
        tracing::info!(build = %b.id, repo = %b.repo, commit = %b.commit, package = %b.package, target = %b.target, attempt = b.attempts, "build started");
        self.report_build(&b, BuildState::Running, "building")
            .await?;
        self.report_aggregate(&b.repo, &b.commit).await?;
        let started = Instant::now();
        let work = inner.cfg.data_dir.join("work").join(b.id.as_str());
        let out_root = results_root(&inner.cfg.data_dir, &b.id);
        let _ = tokio::fs::remove_dir_all(&work).await;
        let src = work.join("src");
        let report = match self.prepare(&b, &src, &out_root).await {
            Ok(req) => {
                let (tx, progress) = self.progress_forwarder(&b.id);
                // An earlier attempt may have left a container behind: a create request in
                // flight when the service was killed completes after the start-up cleanup.
                inner.runner.cleanup(&b.id).await;
                let report = inner.runner.run(req, tx, cancel.clone()).await;
                let _ = progress.await;
                Ok(report)
            }
            Err(outcome) => Err(outcome),
        };
        let _ = tokio::fs::remove_dir_all(&work).await;
        self.finish(&b, report, started.elapsed()).await
    }

    /// Exports the commit and finds the package; the `Err` is the build's outcome.
    async fn prepare(
        &self,
        b: &BuildRow,
        src: &Path,
        out_root: &Path,
    ) -> Result<BuildRequest, Outcome> {
        let inner = &self.inner;
        let Some(target) = inner.cfg.targets.get(&b.target).cloned() else {
            return Err(Outcome::Error {
                message: format!("target {} is no longer configured", b.target),
            });
        };
        inner
            .sources
            .export(&b.clone_url, &b.repo, &b.commit, src)
            .await
            .map_err(|e| Outcome::Error {
                message: format!("cannot get the sources of {}: {e}", b.commit.short()),
            })?;
        let package = crate::plan::package_for_spec(src, &src.join(&b.spec_path)).map_err(|e| {
            Outcome::Error {
                message: format!("{}: {e}", b.spec_path),
            }
        })?;
        let extra_repos = self.earlier_stages_repo(b, &target, src).await?;
        Ok(BuildRequest {
            id: b.id.clone(),
            package,
            target,
            out_root: out_root.to_path_buf(),
            extra_repos,
        })
    }

    /// A later stage of a change builds against the packages its earlier stages built: a
    /// repository of them next to the exported sources, given to the build as `change`.
    async fn earlier_stages_repo(
        &self,
        b: &BuildRow,
        target: &crate::config::Target,
        src: &Path,
    ) -> Result<Vec<crate::config::Repo>, Outcome> {
        if b.stage == 0 {
            return Ok(vec![]);
        }
        let error = |message: String| Outcome::Error { message };
        let dirs = self
            .inner
            .store
            .earlier_results(b)
            .await
            .map_err(|e| error(e.to_string()))?;
        let rpms: Vec<PathBuf> = dirs
            .iter()
            .flat_map(|d| crate::build::binary_rpms_in(d))
            .collect();
        if rpms.is_empty() {
            return Ok(vec![]);
        }
        let dir = src.with_file_name("change-repo");
        self.inner
            .runner
            .make_repo(target.image.clone(), dir.clone(), rpms)
            .await
            .map_err(|e| {
                error(format!(
                    "cannot make the repository of this change's earlier stages: {e}"
                ))
            })?;
        Ok(vec![crate::config::Repo {
            name: "change".into(),
            location: crate::config::RepoLocation::Dir(dir),
        }])
    }

    async fn finish(
        &self,
        b: &BuildRow,
        report: Result<BuildReport, Outcome>,
        elapsed: Duration,
    ) -> Result<(), QueueError> {
        let inner = &self.inner;
        let store = &inner.store;
        let (outcome, dir) = match report {
            Ok(r) => {
                let phases: Vec<PhaseRow> = r
                    .phases
                    .iter()
                    .map(|p| PhaseRow {
                        phase: p.phase.as_str().to_string(),
                        started: p.started.clone(),
                        seconds: p.seconds,
                        ok: p.ok,
                    })
                    .collect();
                store.record_phases(&b.id, &phases).await?;
                if r.dir.is_dir() {
                    store.set_result_dir(&b.id, &r.dir).await?;
                }
                let nvr = r.nevr.as_ref().map(|n| n.nvr());
                (r.outcome, nvr)
            }
            Err(o) => (o, None),
        };
        let secs = elapsed.as_secs_f64();
        match outcome {
            Outcome::Succeeded { .. } => {
                let msg = format!(
                    "built {} in {}",
                    dir.as_deref().unwrap_or(&b.package),
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                );
                if store
                    .finish_build(&b.id, BuildState::Succeeded, Some(&msg), None, None)
                    .await?
                {
                    inner.metrics.build_finished("succeeded", secs);
                    self.report_build(b, BuildState::Succeeded, &msg).await?;
                }
            }
            Outcome::Failed { phase, message, .. } => {
                if store
                    .finish_build(
                        &b.id,
                        BuildState::Failed,
                        Some(&message),
                        None,
                        Some(phase.as_str()),
                    )
                    .await?
                {
                    inner.metrics.build_finished("failed", secs);
                    self.report_build(b, BuildState::Failed, &message).await?;
                }
            }
            Outcome::Error { message } => {
                let attempts = b.attempts.max(1) as u32;
                if inner.shutting_down.load(Ordering::SeqCst) {
                    store
                        .requeue(&b.id, Millis::now(), Some("stopped by a shutdown"), false)
                        .await?;
                } else if attempts < inner.cfg.max_attempts {
                    let wait = inner
                        .cfg
                        .retry_backoff
                        .saturating_mul(1 << (attempts - 1).min(10));
                    let msg = format!(
                        "infrastructure error, retrying in {} (attempt {attempts} of {}): {message}",
                        humantime::format_duration(wait),
                        inner.cfg.max_attempts
                    );
                    tracing::warn!(build = %b.id, "{msg}");
                    if store
                        .requeue(&b.id, Millis::now().after(wait), Some(&msg), true)
                        .await?
                    {
                        self.report_build(b, BuildState::Queued, &msg).await?;
                    }
                } else if store
                    .finish_build(&b.id, BuildState::Error, Some(&message), None, None)
                    .await?
                {
                    tracing::warn!(build = %b.id, "giving up after {attempts} attempt(s): {message}");
                    inner.metrics.build_finished("error", secs);
                    self.report_build(b, BuildState::Error, &message).await?;
                }
            }
            Outcome::Cancelled => {
                if inner.shutting_down.load(Ordering::SeqCst) {
                    store
                        .requeue(&b.id, Millis::now(), Some("stopped by a shutdown"), false)
                        .await?;
                } else if store
                    .finish_build(&b.id, BuildState::Cancelled, Some("cancelled"), None, None)
                    .await?
                {
                    inner.metrics.build_finished("cancelled", secs);
                    self.report_build(b, BuildState::Cancelled, "cancelled")
                        .await?;
                }
                // Otherwise it was superseded or its change closed; that path reported it.
            }
        }
        tracing::info!(build = %b.id, "build ended");
        self.report_aggregate(&b.repo, &b.commit).await?;
        Ok(())
    }

    // ---- reports -----------------------------------------------------------------------

    fn build_url(&self, id: &BuildId) -> String {
        format!("{}/builds/{id}", self.inner.cfg.public_url)
    }

    fn index_url(&self, sha: &CommitSha) -> String {
        format!("{}/?commit={sha}", self.inner.cfg.public_url)
    }

    async fn set_report(&self, r: Report) -> Result<(), QueueError> {
        self.inner.store.set_report(&r).await?;
        self.inner.outbox_wake.notify_one();
        Ok(())
    }

    async fn report_build(
        &self,
        b: &BuildRow,
        state: BuildState,
        message: &str,
    ) -> Result<(), QueueError> {
        self.set_report(Report {
            repo: b.repo.clone(),
            sha: b.commit.clone(),
            context: build_context(b.target.as_str(), &b.package),
            state: state.report_state(),
            description: message.to_string(),
            target_url: Some(self.build_url(&b.id)),
        })
        .await
    }

    /// Sums up the latest build of each package and target at a commit.
    async fn report_aggregate(&self, repo: &RepoId, sha: &CommitSha) -> Result<(), QueueError> {
        let builds = self.inner.store.latest_builds_of_commit(repo, sha).await?;
        if builds.is_empty() {
            return Ok(());
        }
        let n = builds.len();
        let count = |f: &dyn Fn(BuildState) -> bool| builds.iter().filter(|b| f(b.state)).count();
        let open = count(&|s| !s.is_final());
        let failed: Vec<&BuildRow> = builds
            .iter()
            .filter(|b| b.state == BuildState::Failed)
            .collect();
        let errored: Vec<&BuildRow> = builds
            .iter()
            .filter(|b| b.state.report_state() == ReportState::Error)
            .collect();
        let first = |b: &BuildRow| {
            format!(
                "{}/{}: {}",
                b.target,
                b.package,
                b.message.as_deref().unwrap_or(b.state.as_str())
            )
        };
        let (state, description) = if open > 0 {
            (
                ReportState::Pending,
                format!("{} of {n} build(s) done", n - open),
            )
        } else if let Some(b) = failed.first() {
            (
                ReportState::Failure,
                format!("{} of {n} failed; {}", failed.len(), first(b)),
            )
        } else if let Some(b) = errored.first() {
            (
                ReportState::Error,
                format!("{} of {n} did not complete; {}", errored.len(), first(b)),
            )
        } else {
            (ReportState::Success, format!("{n} build(s) succeeded"))
        };
        self.set_report(Report {
            repo: repo.clone(),
            sha: sha.clone(),
            context: AGGREGATE_CONTEXT.into(),
            state,
            description,
            target_url: Some(self.index_url(sha)),
        })
        .await
    }

    async fn outbox_loop(&self) {
        loop {
            let mut wait = Duration::from_secs(30);
            match self.deliver_due().await {
                Ok(_) => {
                    if let Ok(Some(due)) = self.inner.store.next_report_due().await {
                        let ms = (due.0 - Millis::now().0).max(10) as u64;
                        wait = wait.min(Duration::from_millis(ms));
                    }
                }
                Err(e) => {
                    tracing::error!("outbox: {e}");
                    wait = Duration::from_secs(1);
                }
            }
            tokio::select! {
                () = self.inner.outbox_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// Delivers the reports that are due, oldest first; returns how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, QueueError> {
        let store = &self.inner.store;
        let due = store.due_reports(Millis::now(), 50).await?;
        let n = due.len();
        for row in due {
            match self.inner.forge.deliver(&row.report).await {
                Ok(()) => {
                    tracing::debug!(context = %row.report.context, sha = %row.report.sha, state = row.report.state.as_str(), "status delivered");
                    store.mark_delivered(row.id, row.version).await?;
                    self.inner.metrics.report("delivered");
                }
                Err(e) => {
                    let attempts = row.attempts + 1;
                    let abandon = e.permanent && attempts >= 3 || attempts >= 20;
                    let backoff = Duration::from_secs(2u64.saturating_pow(attempts.min(12) as u32))
                        .min(Duration::from_secs(3600));
                    let wait = e.retry_after.unwrap_or(backoff);
                    tracing::warn!(context = %row.report.context, sha = %row.report.sha, attempts, abandon, "status delivery failed: {e}");
                    store
                        .delivery_failed(
                            row.id,
                            row.version,
                            Millis::now().after(wait),
                            &e.message,
                            abandon,
                        )
                        .await?;
                    self.inner
                        .metrics
                        .report(if abandon { "abandoned" } else { "retry" });
                }
            }
        }
        Ok(n)
    }
}
