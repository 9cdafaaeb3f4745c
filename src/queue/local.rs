//! One change built on this host, through the service's own queue: `packetary build --git`
//! plans a change, then hands its builds to a [`Queue`] over a temporary store, so that
//! build order, the `change` repository of earlier stages, cancellation and finishing are
//! the service's, not a second scheduler's. Nothing is reported to a forge (the repository
//! is a [`ForgeKind::Local`] one); the caller gets every build's [`BuildReport`], and the
//! store's rows of the builds that ended (or were left) without reaching the runner.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::{
    Indexing, Metrics, PlanError, PlannedBuild, Planner, Ports, Queue, QueueConfig, QueueError,
    Runner, SourceProvider,
};
use crate::config::Target;
use crate::executor::provenance::{InputsError, Provenance};
use crate::executor::{BuildReport, BuildRequest, Progress};
use crate::forge::{DeliveryError, Forge};
use crate::model::{BuildId, RepoId, Report, TargetName, Trigger};
use crate::store::{BuildRow, Store, StoreError, TriggerState};

/// The temporary store a local run keeps its builds in, removed with it. Making it (SQLite,
/// the migrations) is tens of milliseconds of a trivial build: [`TempStore::open_ahead`]
/// makes it while the caller does its other start-up work.
pub struct TempStore {
    // Before `tmp`: the store closes before its directory goes.
    store: Store,
    tmp: crate::plan::TempDir,
}

/// A [`TempStore`] being made.
pub struct OpeningStore(tokio::task::JoinHandle<Result<TempStore, LocalRunError>>);

impl TempStore {
    pub async fn open() -> Result<TempStore, LocalRunError> {
        let tmp = crate::plan::TempDir::new("packetary-local").map_err(LocalRunError::TempDir)?;
        let store = Store::open(tmp.path()).await?;
        Ok(TempStore { store, tmp })
    }

    /// Starts making one on the runtime; [`OpeningStore::wait`] takes it.
    pub fn open_ahead() -> OpeningStore {
        OpeningStore(tokio::spawn(TempStore::open()))
    }
}

impl OpeningStore {
    pub async fn wait(self) -> Result<TempStore, LocalRunError> {
        self.0
            .await
            .map_err(|e| LocalRunError::TempDir(std::io::Error::other(e)))?
    }
}

/// What to build and how.
pub struct LocalRun {
    /// Where the builds are kept (see [`TempStore::open_ahead`]).
    pub store: OpeningStore,
    /// The change, as the queue would get it from a forge (its repository `local:...`).
    pub trigger: Trigger,
    /// The builds the plan asked for, in its stages.
    pub builds: Vec<PlannedBuild>,
    pub targets: BTreeMap<TargetName, Target>,
    pub parallel: usize,
    /// Results land in `out/<target>/<name>-<version>-<release>/`, as for `packetary build`.
    pub out: PathBuf,
    pub sources: Arc<dyn SourceProvider>,
    pub runner: Arc<dyn Runner>,
    /// Makes the `change` repository of earlier stages.
    pub indexing: Arc<dyn Indexing>,
    /// Every build's progress, for the terminal.
    pub progress: UnboundedSender<Progress>,
    /// Cancelled on Ctrl-C: running builds stop and remove their containers, queued ones
    /// never start.
    pub cancel: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalRunError {
    #[error("cannot make the temporary store: {0}")]
    TempDir(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What became of the builds.
pub struct LocalOutcome {
    /// The report of every build the runner ran, in the order they ended.
    pub reports: Vec<BuildReport>,
    /// The builds that never reached the runner, as the store left them: ended in their
    /// preparation (sources, the earlier stages' repository) with their message, or still
    /// queued after a Ctrl-C.
    pub not_run: Vec<BuildRow>,
}

/// Runs the builds to their end and returns what became of them.
pub async fn run(r: LocalRun) -> Result<LocalOutcome, LocalRunError> {
    let TempStore { store, tmp } = r.store.wait().await?;
    let reports = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(LocalRunner {
        inner: r.runner,
        out: r.out,
        progress: r.progress,
        reports: reports.clone(),
    });
    let ports = Ports {
        store: store.clone(),
        forge: Arc::new(NoForge),
        planner: Arc::new(FixedPlan(r.builds)),
        sources: r.sources,
        runner,
        indexing: Some(r.indexing),
    };
    let queue = Queue::new(
        ports,
        QueueConfig {
            parallel: r.parallel.max(1),
            data_dir: tmp.path().to_path_buf(),
            public_url: String::new(),
            repos_url: String::new(),
            // The user sees a fault at once and runs again; nothing waits for a retry.
            max_attempts: 1,
            retry_backoff: Duration::from_secs(1),
            shutdown_grace: Duration::ZERO,
            build_forks: true,
            targets: r.targets,
            repos: Default::default(),
            // The user's own builds on their own machine.
            change_disk_quota: None,
        },
        Arc::new(Metrics::default()),
    );
    store.insert_trigger(&r.trigger, TriggerState::New).await?;
    let tasks = queue.start().await?;
    queue.wake();
    // Looked at again when a build ends (its end is in the store by then), and every
    // 100 ms for the ends that run nothing (a plan that failed).
    loop {
        tokio::select! {
            () = r.cancel.cancelled() => break,
            () = queue.build_ended() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        // Done once no build runs either: the drain then has nothing to wait for.
        if queue.running() == 0 && done(&store).await? {
            break;
        }
    }
    // Stops the loops; on Ctrl-C (grace zero) it also stops the running builds.
    queue.drain().await;
    for t in tasks {
        t.abort();
    }
    let reports = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));
    let ran: std::collections::HashSet<&BuildId> = reports.iter().map(|r| &r.id).collect();
    let not_run = store
        .recent_builds(i64::MAX)
        .await?
        .into_iter()
        .filter(|b| !ran.contains(&b.id))
        .collect();
    store.close().await;
    Ok(LocalOutcome { reports, not_run })
}

/// The trigger is planned (or failed to plan) and every build of it has ended.
async fn done(store: &Store) -> Result<bool, StoreError> {
    let planned = store
        .triggers()
        .await?
        .iter()
        .all(|t| t.state != TriggerState::New);
    if !planned {
        return Ok(false);
    }
    let builds = store.recent_builds(i64::MAX).await?;
    Ok(builds.iter().all(|b| b.state.is_final()))
}

/// The plan was made before the queue started: it is handed over as it is.
struct FixedPlan(Vec<PlannedBuild>);

impl Planner for FixedPlan {
    fn plan<'a>(&'a self, _t: &'a Trigger) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// A local repository has no forge to tell; the terminal shows the builds instead.
struct NoForge;

impl Forge for NoForge {
    fn deliver<'a>(
        &'a self,
        _r: &'a Report,
    ) -> BoxFuture<'a, Result<crate::forge::Delivered, DeliveryError>> {
        Box::pin(async { Ok(crate::forge::Delivered::default()) })
    }

    fn can_write<'a>(
        &'a self,
        _repo: &'a RepoId,
        _user: &'a str,
    ) -> BoxFuture<'a, Result<bool, DeliveryError>> {
        Box::pin(async { Ok(true) })
    }
}

/// The real runner, with results in the user's output directory, progress copied to the
/// terminal and each report kept for the summary.
struct LocalRunner {
    inner: Arc<dyn Runner>,
    out: PathBuf,
    progress: UnboundedSender<Progress>,
    reports: Arc<Mutex<Vec<BuildReport>>>,
}

impl Runner for LocalRunner {
    fn run(
        &self,
        mut req: BuildRequest,
        events: UnboundedSender<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        req.out_root = self.out.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let terminal = self.progress.clone();
        let tee = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let _ = terminal.send(ev.clone());
                let _ = events.send(ev);
            }
        });
        let fut = self.inner.run(req, tx, cancel);
        let reports = self.reports.clone();
        Box::pin(async move {
            let report = fut.await;
            let _ = tee.await;
            reports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(report.clone());
            report
        })
    }

    fn cleanup(&self, id: &BuildId) -> BoxFuture<'static, ()> {
        self.inner.cleanup(id)
    }

    fn inputs(
        &self,
        req: &BuildRequest,
    ) -> BoxFuture<'static, Result<Option<Provenance>, InputsError>> {
        self.inner.inputs(req)
    }
}
