//! Scheduling over the store: planning triggers into builds, running them fairly across
//! repositories up to the configured parallelism, superseding, retrying infrastructure
//! faults, recovering at start, draining at shutdown, and delivering the outbox of reports.
//!
//! Every state a build can end in produces a final report: nothing is left pending.
//!
//! The flow, one stage a type, each holding only the ports it uses: [`ingest`] stores
//! forge events; [`intake::Intake`] plans them into builds (commands, fork approval,
//! supersede, closed changes); [`scheduler::Scheduler`] claims and runs builds (and picks
//! up those a restart interrupted); [`finish::Finish`] turns a build's outcome into its
//! final state, a retry and reports; [`publish::Publisher`] puts succeeded builds into
//! package repositories; [`report::Reports`] writes the statuses a transition changes and
//! [`report::Outbox`] delivers them. `retry` and `poll` are the one retry policy and the
//! one loop the stages share; `running` is the set of running builds. This file composes
//! the stages into the [`Queue`] handle the service and the CLI drive.

mod failpoint;
mod finish;
mod indexing;
pub mod ingest;
mod intake;
pub mod local;
pub mod metrics;
pub mod planner;
mod poll;
mod publish;
mod quota;
mod report;
pub use report::paths;
mod retry;
mod reuse;
mod runner;
mod running;
mod scheduler;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Target;
use crate::forge::Forge;
use crate::model::{ChangeKind, RepoId, TargetName};
use crate::store::{Store, StoreError};
pub use indexing::{DockerIndexing, Indexing, PublishInto};
pub use metrics::Metrics;
pub use runner::{
    error_report, results_root, DockerRunner, LiveLogError, MakeRepoError, PlanError, PlannedBuild,
    Planner, Runner, SourceError, SourceProvider,
};

/// What the queue needs from the configuration.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub parallel: usize,
    pub data_dir: PathBuf,
    /// Base of the build pages, for `target_url`.
    pub public_url: String,
    /// Base of the URLs builds reach `/repos/` at (`[server] repos_url`); empty: none
    /// (the command line's builds get their repositories as directories only).
    pub repos_url: String,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub shutdown_grace: Duration,
    pub build_forks: bool,
    pub targets: BTreeMap<TargetName, Target>,
    /// `[releases]` and the per-change repositories' lifetime (`publish.rs`).
    pub repos: ReposConfig,
    /// `[server] change_disk_quota` (`quota.rs`); `None`: no quota.
    pub change_disk_quota: Option<u64>,
}

/// What the queue publishes where (see [`crate::repos`]).
#[derive(Debug, Clone, Default)]
pub struct ReposConfig {
    pub releases: BTreeMap<crate::config::ReleaseName, crate::config::Release>,
    /// A change's repositories are removed this long after their last publication; zero:
    /// never by age (only when the change closes).
    pub change_max_age: Duration,
}

/// The components the queue drives, wired by the service (or the CLI, or a test).
pub struct Ports {
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    pub planner: Arc<dyn Planner>,
    pub sources: Arc<dyn SourceProvider>,
    pub runner: Arc<dyn Runner>,
    /// Indexes package repositories: the stage repository of a change's earlier builds
    /// and the published ones. `None` (fakes): later stages get no `change` repository
    /// and nothing is published.
    pub indexing: Option<Arc<dyn Indexing>>,
}

/// Wake-ups between the stages' loops: each stage wakes the next when it stored work, now
/// or at the time it becomes due.
#[derive(Default)]
pub(crate) struct Wakes {
    pub plan: poll::Alarm,
    /// A plan ended (for [`Queue::plan_pending`], which waits for them).
    pub plan_done: Notify,
    pub build: poll::Alarm,
    pub outbox: poll::Alarm,
    /// Reports committed since the outbox last looked, handed over in memory.
    pub handoff: report::Handoff,
    /// When the planning loop must read the stored commands.
    pub commands: poll::DueAt,
    /// A build ended while builds of its commit were still queued (a later stage may now
    /// start): the scheduler claims again when the build leaves the running set. Without
    /// it (and with room before), nothing new can have become claimable.
    pub unblocked: std::sync::atomic::AtomicBool,
}

/// Handle to the running queue: its stages, composed. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    store: Store,
    public_url: String,
    data_dir: PathBuf,
    shutdown_grace: Duration,
    metrics: Arc<Metrics>,
    wakes: Arc<Wakes>,
    running: Arc<running::Running>,
    intake: Arc<intake::Intake>,
    scheduler: Arc<scheduler::Scheduler>,
    outbox: Arc<report::Outbox>,
    stop: CancellationToken,
}

/// How long a start waits for the statuses already due to be delivered.
const START_DELIVERY: Duration = Duration::from_secs(2);

/// Errors of the queue's own loops; logged and retried, never fatal to the service.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot record a build's outcome: {0}")]
    Record(#[from] serde_json::Error),
}

impl Queue {
    /// Composes the stages over `ports`: each gets only what it uses.
    pub fn new(ports: Ports, cfg: QueueConfig, metrics: Arc<Metrics>) -> Queue {
        let retries = retry::Retries::from_config(&cfg);
        let wakes = Arc::new(Wakes::default());
        let running = Arc::new(running::Running::default());
        let targets = Arc::new(cfg.targets.clone());
        let reports = Arc::new(report::Reports::new(
            &cfg.public_url,
            &cfg.data_dir,
            wakes.clone(),
        ));
        let publisher = Arc::new(publish::Publisher {
            store: ports.store.clone(),
            indexing: ports.indexing.clone(),
            data_dir: cfg.data_dir.clone(),
            repos_url: cfg.repos_url.clone(),
            targets: targets.clone(),
            repos: cfg.repos.clone(),
        });
        let quota = Arc::new(quota::Quota {
            store: ports.store.clone(),
            data_dir: cfg.data_dir.clone(),
            bytes: cfg.change_disk_quota,
        });
        let finish = Arc::new(finish::Finish {
            store: ports.store.clone(),
            quota: quota.clone(),
            publisher: publisher.clone(),
            policy: retries.builds,
            reports: reports.clone(),
            running: running.clone(),
            metrics: metrics.clone(),
            wakes: wakes.clone(),
        });
        let scheduler = Arc::new(scheduler::Scheduler {
            store: ports.store.clone(),
            quota,
            sources: ports.sources.clone(),
            runner: ports.runner,
            indexing: ports.indexing,
            targets,
            data_dir: cfg.data_dir.clone(),
            parallel: cfg.parallel,
            running: running.clone(),
            finish,
            publisher: publisher.clone(),
            reports: reports.clone(),
            metrics: metrics.clone(),
            wakes: wakes.clone(),
        });
        let intake = Arc::new(intake::Intake {
            store: ports.store.clone(),
            forge: ports.forge.clone(),
            planner: ports.planner,
            policy: retries.planning,
            build_forks: cfg.build_forks,
            reports,
            publisher,
            running: running.clone(),
            wakes: wakes.clone(),
            planning: Default::default(),
            skipped: Default::default(),
        });
        let outbox = Arc::new(report::Outbox {
            store: ports.store.clone(),
            forge: ports.forge,
            policy: retries.outbox,
            metrics: metrics.clone(),
            wakes: wakes.clone(),
            retry_at: poll::DueAt::now(),
            delivered: Default::default(),
            paths: paths::DiskPaths::new(&cfg.data_dir),
        });
        Queue {
            store: ports.store,
            public_url: cfg.public_url,
            data_dir: cfg.data_dir,
            shutdown_grace: cfg.shutdown_grace,
            metrics,
            wakes,
            running,
            intake,
            scheduler,
            outbox,
            stop: CancellationToken::new(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Base of the service's URLs (`[server] public_url`).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The data directory (database, results).
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// The runner builds run on (the build pages read live logs through it).
    pub fn runner(&self) -> Arc<dyn Runner> {
        self.scheduler.runner.clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Something new was stored: plan it.
    /// How many builds run in this process.
    pub fn running(&self) -> usize {
        self.running.count()
    }

    /// Resolves once a running build has ended (at once if one ended since the last call
    /// and nobody waited): what a caller waiting for its builds waits on.
    pub async fn build_ended(&self) {
        self.running.ended().await
    }

    pub fn wake(&self) {
        self.wakes.plan.wake();
    }

    /// A command was stored: the planning loop reads the commands at its next step (it
    /// reads them only then, at start, and when a retry is due).
    pub fn command_stored(&self) {
        self.wakes.commands.set(crate::store::Millis(0));
        self.wakes.plan.wake();
    }

    /// Recovers from the previous run, then starts the planner, scheduler and outbox loops.
    /// Builds that were running when the service stopped are reattached when their
    /// container still runs its phases (or has finished them); the others have their
    /// containers removed and run again from the start.
    pub async fn start(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, QueueError> {
        self.scheduler.recover().await?;
        // What is due later is known to the loops' alarms from now on; this once, ask.
        let store = &self.store;
        let due = [
            (&self.wakes.plan, store.next_trigger_due().await?),
            (&self.wakes.plan, store.next_command_due().await?),
            (&self.wakes.build, store.next_due().await?),
            (&self.wakes.outbox, store.next_report_due().await?),
        ];
        for (alarm, at) in due {
            if let Some(at) = at {
                alarm.at(at);
            }
        }
        // What the forge should already know (statuses of builds planned or ended before
        // this start) goes out before new builds start and replace it, for a while at most.
        match tokio::time::timeout(START_DELIVERY, self.outbox.deliver_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("delivering due statuses at start: {e}"),
            Err(_) => tracing::info!(
                "delivering due statuses at start took over {START_DELIVERY:?}; the outbox goes on"
            ),
        }
        let (intake, wakes, stop) = (self.intake.clone(), self.wakes.clone(), self.stop.clone());
        let planner = tokio::spawn(async move {
            poll::run("planning", &wakes.plan, &stop, || intake.plan_step()).await
        });
        let (scheduler, wakes, stop) = (
            self.scheduler.clone(),
            self.wakes.clone(),
            self.stop.clone(),
        );
        let scheduling = tokio::spawn(async move {
            poll::run("scheduling", &wakes.build, &stop, || scheduler.schedule()).await
        });
        let (outbox, wakes, stop) = (self.outbox.clone(), self.wakes.clone(), self.stop.clone());
        let delivering = tokio::spawn(async move {
            poll::run("outbox", &wakes.outbox, &stop, || outbox.step()).await
        });
        Ok(vec![planner, scheduling, delivering])
    }

    /// Handles every stored command and trigger not handled yet (see
    /// [`intake::Intake::plan_pending`]).
    pub async fn plan_pending(&self) -> Result<(), QueueError> {
        self.intake.plan_pending().await
    }

    /// A pull request was closed or a branch deleted: end its queued and running builds.
    pub async fn close_change(
        &self,
        repo: &RepoId,
        kind: ChangeKind,
        ref_name: &str,
        pr_number: Option<u64>,
    ) -> Result<(), QueueError> {
        self.intake
            .close_change(repo, kind, ref_name, pr_number)
            .await
    }

    /// Delivers the reports that are due, oldest first; returns how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, QueueError> {
        self.outbox.deliver_due().await
    }

    /// SIGTERM: stop taking builds, let running ones finish within the grace period, then
    /// stop them and put them back in the queue; deliver what reports can be delivered.
    pub async fn drain(&self) {
        let running = &self.running;
        running.start_draining();
        let deadline = Instant::now() + self.shutdown_grace;
        tracing::info!(
            running = running.count(),
            "draining: waiting up to {:?} for running builds",
            self.shutdown_grace
        );
        while running.count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if running.count() > 0 {
            if self.shutdown_grace.is_zero() {
                // A command-line run being interrupted: nothing runs again later.
                tracing::info!("stopping {} build(s)", running.count());
            } else {
                tracing::warn!(
                    "grace period over: stopping {} build(s); they will run again at the next start",
                    running.count()
                );
            }
            running.shut_down();
            let stop_deadline = Instant::now() + Duration::from_secs(30);
            while running.count() > 0 && Instant::now() < stop_deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let flush_deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < flush_deadline {
            match self.outbox.deliver_due().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("delivering reports at shutdown: {e}");
                    break;
                }
            }
        }
        self.stop.cancel();
    }
}

/// A build's scratch directory (its exported sources, the repository of its change's
/// earlier stages); removed when the build ends.
fn work_dir(data_dir: &std::path::Path, id: &crate::model::BuildId) -> PathBuf {
    data_dir.join("work").join(id.as_str())
}
