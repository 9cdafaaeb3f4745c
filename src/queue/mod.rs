//! Scheduling over the store: planning triggers into builds, running them fairly across
//! repositories up to the configured parallelism, superseding, retrying infrastructure
//! faults, recovering at start, draining at shutdown, and delivering the outbox of reports.
//!
//! Every state a build can end in produces a final report: nothing is left pending.
//!
//! The flow, one file a step: [`ingest`] stores forge events; `intake` plans them into
//! builds (commands, fork approval, supersede, closed changes); `scheduler` claims and
//! runs builds (and picks up those a restart interrupted); `finish` turns a build's
//! outcome into its final state, a retry and reports; `report` sums builds up into
//! statuses and delivers them. `retry` and `poll` are the one retry policy and the one
//! loop the steps share. This file holds the [`Queue`] handle and its running builds.

mod failpoint;
mod finish;
pub mod ingest;
mod intake;
pub mod local;
pub mod metrics;
pub mod planner;
mod poll;
mod publish;
mod report;
mod retry;
mod reuse;
mod runner;
mod scheduler;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Target;
use crate::forge::Forge;
use crate::model::{BuildId, TargetName};
use crate::store::{Millis, Store, StoreError};
pub use metrics::Metrics;
pub use runner::{
    error_report, results_root, DockerRunner, MakeRepoError, PlanError, PlannedBuild, Planner,
    Runner, SourceError, SourceProvider,
};

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
    /// `[releases]` and the per-change repositories' lifetime (`publish.rs`).
    pub repos: ReposConfig,
}

/// What the queue publishes where (see [`crate::repos`]).
#[derive(Debug, Clone, Default)]
pub struct ReposConfig {
    pub releases: BTreeMap<crate::config::ReleaseName, crate::config::Release>,
    /// A change's repositories are removed this long after their last publication; zero:
    /// never by age (only when the change closes).
    pub change_max_age: Duration,
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
    retry: retry::Retries,
    metrics: Arc<Metrics>,
    plan_wake: Notify,
    /// Repositories being planned now: one plan per repository at a time, several
    /// repositories at once, so that a slow one holds up only itself.
    planning: Mutex<std::collections::HashSet<crate::model::RepoId>>,
    /// A plan ended (for [`Queue::plan_pending`], which waits for them).
    plan_done: Notify,
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
    #[error("cannot record a build's outcome: {0}")]
    Record(#[from] serde_json::Error),
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
                retry: retry::Retries::from_config(&cfg),
                cfg,
                metrics,
                plan_wake: Notify::new(),
                planning: Mutex::new(std::collections::HashSet::new()),
                plan_done: Notify::new(),
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

    /// Base of the service's URLs (`[server] public_url`).
    pub fn public_url(&self) -> &str {
        &self.inner.cfg.public_url
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
        self.recover().await?;
        let q = self.clone();
        let planner = tokio::spawn(async move {
            let i = &q.inner;
            poll::run("planning", &i.plan_wake, &i.stop, || q.plan_step()).await
        });
        let q = self.clone();
        let scheduler = tokio::spawn(async move {
            let i = &q.inner;
            poll::run("scheduling", &i.build_wake, &i.stop, || q.schedule()).await
        });
        let q = self.clone();
        let outbox = tokio::spawn(async move {
            let i = &q.inner;
            poll::run("outbox", &i.outbox_wake, &i.stop, || q.outbox_step()).await
        });
        Ok(vec![planner, scheduler, outbox])
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
            if inner.cfg.shutdown_grace.is_zero() {
                // A command-line run being interrupted: nothing runs again later.
                tracing::info!("stopping {} build(s)", self.running_count());
            } else {
                tracing::warn!(
                    "grace period over: stopping {} build(s); they will run again at the next start",
                    self.running_count()
                );
            }
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

    // ---- running builds ----------------------------------------------------------------

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
                q.requeue_after_fault(&id, &e).await;
            }
            if let Ok(mut m) = q.inner.running.lock() {
                m.remove(&id);
            }
            q.inner.build_wake.notify_one();
        });
    }

    /// A build whose own bookkeeping failed (the store was locked, the disk full) would stay
    /// `running` until a restart: it goes back to the queue as soon as the store takes the
    /// write again, without counting an attempt.
    async fn requeue_after_fault(&self, id: &BuildId, e: &QueueError) {
        let message = format!("requeued after a fault of the service: {e}");
        let mut wait = std::time::Duration::from_millis(500);
        loop {
            let at = Millis::now().after(wait);
            match self
                .inner
                .store
                .requeue(id, at, Some(&message), false)
                .await
            {
                Ok(true) => {
                    tracing::warn!(build = %id, "{message}");
                    return;
                }
                // Not running any more: it was finished after all, or ended meanwhile.
                Ok(false) => return,
                Err(e) if !self.shutting_down() => {
                    tracing::warn!(build = %id, "cannot requeue yet: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
                // A restart requeues it.
                Err(_) => return,
            }
        }
    }

    /// Whether builds that stop now go back to the queue (the grace period of a shutdown
    /// ran out) rather than end.
    fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// A build's scratch directory (its exported sources, the repository of its change's
    /// earlier stages); removed when the build ends.
    fn work_dir(&self, id: &BuildId) -> PathBuf {
        self.inner.cfg.data_dir.join("work").join(id.as_str())
    }
}
