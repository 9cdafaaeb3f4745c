//! The scheduler: claims queued builds while there is room (the store picks them fairly
//! across repositories and in the plan's stage order), prepares each one (the commit's
//! files, the package, a repository of what its change's earlier stages built) and runs it
//! on the [`Runner`](super::Runner). At start it picks up the builds a previous process left
//! running: reattached when their container can be followed, run again otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::finish::Finish;
use super::publish::Publisher;
use super::quota::Quota;
use super::report::Reports;
use super::running::Running;
use super::{
    results_root, work_dir, Indexing, MakeRepoError, Metrics, QueueError, Runner, SourceError,
    SourceProvider, Wakes,
};
use crate::config::Target;
use crate::executor::{BuildRepo, BuildRequest, DepsCache, Progress, ProgressKind};
use crate::model::{BuildId, BuildState, Outcome, PackageSource, TargetName};
use crate::plan::DiscoverError;
use crate::store::ledger::{self, EventKind};
use crate::store::{BuildRow, Millis, Store, StoreError};

/// Why a build could not be handed to the runner; it ends as an infrastructure error.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("target {0} is no longer configured")]
    NoTarget(TargetName),
    #[error("cannot get the sources of {commit}: {source}")]
    Sources { commit: String, source: SourceError },
    #[error("{spec_path}: {source}")]
    Package {
        spec_path: String,
        source: DiscoverError,
    },
    #[error(transparent)]
    EarlierStages(#[from] StoreError),
    #[error("cannot make the repository of this change's earlier stages: {source}")]
    ChangeRepo { source: MakeRepoError },
    #[error("this change's earlier stages built packages, but this service has no way to index a repository of them")]
    NoIndexing,
}

impl PrepareError {
    /// Whether running the build again may help: not for a commit that is gone, a
    /// target no longer configured or a service that cannot index.
    fn retryable(&self) -> bool {
        !matches!(
            self,
            PrepareError::NoTarget(_)
                | PrepareError::NoIndexing
                | PrepareError::Sources {
                    source: SourceError::Missing(_),
                    ..
                }
        )
    }
}

impl From<PrepareError> for Outcome {
    fn from(e: PrepareError) -> Outcome {
        Outcome::Error {
            message: e.to_string(),
        }
    }
}

/// The scheduler stage: claims builds, prepares their inputs (sources, the stage
/// repository, the release's snapshot) and runs them on the runner; hands each outcome to
/// [`Finish`]. Holds the runner, the sources, the indexing port (for stage repositories)
/// and the set of running builds.
pub(super) struct Scheduler {
    pub store: Store,
    /// What a build of a change may still write (`[server] change_disk_quota`).
    pub quota: Arc<Quota>,
    pub sources: Arc<dyn SourceProvider>,
    pub runner: Arc<dyn Runner>,
    pub indexing: Option<Arc<dyn Indexing>>,
    pub targets: Arc<BTreeMap<TargetName, Target>>,
    pub data_dir: PathBuf,
    pub parallel: usize,
    pub running: Arc<Running>,
    pub finish: Arc<Finish>,
    pub publisher: Arc<Publisher>,
    pub reports: Arc<Reports>,
    pub metrics: Arc<Metrics>,
    pub wakes: Arc<Wakes>,
}

impl Scheduler {
    /// The scheduling loop's step: starts queued builds while there is room. A build due
    /// later is on the loop's alarm (set by its requeue); one waiting for room or for its
    /// earlier stages is woken by the end of a running build.
    pub async fn schedule(self: &Arc<Self>) -> Result<Option<Millis>, QueueError> {
        while !self.running.draining() && self.running.count() < self.parallel {
            let Some(b) = self.claim().await? else {
                break;
            };
            let id = b.id.clone();
            self.spawn_running(
                id,
                move |s, token| async move { s.run_build(b, token).await },
            );
        }
        Ok(None)
    }

    /// Claims the next build that may start and reports it running: one transaction.
    async fn claim(&self) -> Result<Option<BuildRow>, QueueError> {
        let mut tx = self.store.tx().await?;
        let Some(b) = ledger::claim(&mut tx, Millis::now()).await? else {
            return Ok(None);
        };
        self.reports
            .transition(
                &mut tx,
                EventKind::Started,
                &b,
                (BuildState::Running, "building"),
                None,
            )
            .await?;
        let written = tx.commit().await?;
        self.reports.written(written);
        Ok(Some(b))
    }

    /// Runs a build's work as a running build: cancellable through the running set,
    /// counted against the parallelism, and the scheduler woken when it ends.
    fn spawn_running<F, Fut>(self: &Arc<Self>, id: BuildId, work: F)
    where
        F: FnOnce(Arc<Scheduler>, CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), QueueError>> + Send + 'static,
    {
        let token = self.running.insert(&id);
        let s = self.clone();
        tokio::spawn(async move {
            if let Err(e) = work(s.clone(), token).await {
                tracing::error!(build = %id, "{e}");
                s.requeue_after_fault(&id, &e).await;
            }
            // Claim again only if this end can have made a build claimable: it freed room
            // the scheduler lacked, or its commit still has builds queued (a later stage).
            let was_full = s.running.count() >= s.parallel;
            s.running.remove(&id);
            if was_full || s.wakes.unblocked.swap(false, Ordering::SeqCst) {
                s.wakes.build.wake();
            }
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
            match self.store.requeue(id, at, Some(&message), false).await {
                Ok(true) => {
                    tracing::warn!(build = %id, "{message}");
                    self.wakes.build.at(at);
                    return;
                }
                // Not running any more: it was finished after all, or ended meanwhile.
                Ok(false) => return,
                Err(e) if !self.running.shutting_down() => {
                    tracing::warn!(build = %id, "cannot requeue yet: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
                // A restart requeues it.
                Err(_) => return,
            }
        }
    }

    fn work_dir(&self, id: &BuildId) -> PathBuf {
        work_dir(&self.data_dir, id)
    }

    /// Removes a build's work directory (its sources) and its stage repository, which
    /// live exactly as long.
    async fn remove_work(&self, id: &BuildId) {
        let _ = tokio::fs::remove_dir_all(self.work_dir(id)).await;
        let _ = tokio::fs::remove_dir_all(crate::repos::stage_dir(&self.data_dir, id)).await;
    }

    async fn run_build(&self, b: BuildRow, cancel: CancellationToken) -> Result<(), QueueError> {
        tracing::info!(build = %b.id, repo = %b.repo, commit = %b.commit, package = %b.package, target = %b.target, attempt = b.attempts, "build started");
        super::failpoint::hit("run:claimed");
        let started = Instant::now();
        let work = self.work_dir(&b.id);
        let out_root = results_root(&self.data_dir, &b.id);
        let _ = tokio::fs::remove_dir_all(&work).await;
        let allowance = self.quota.allowance(&b).await?;
        if let Some(full) = Quota::full(allowance) {
            return self.finish.finish(&b, Err(full), started.elapsed()).await;
        }
        let src = work.join("src");
        let report = match self.prepare(&b, &src, &out_root).await {
            Ok(mut req) => 'run: {
                // The build's inputs, read once: the key of build avoidance and, carried by
                // the request, the record its `build.json` keeps. Meanwhile, any container an
                // earlier attempt left behind is removed: a create request in flight when the
                // service was killed completes after the start-up cleanup.
                let (inputs, ()) =
                    tokio::join!(self.runner.inputs(&req), self.runner.cleanup(&b.id));
                match inputs {
                    Ok(Some(inputs)) => {
                        // Build avoidance: the same inputs as a succeeded build, its results.
                        if inputs.reusable() {
                            let digest = &inputs.input_digest;
                            if let Err(e) = self.store.set_input_digest(&b.id, digest).await {
                                tracing::warn!(build = %b.id, "cannot store the input digest: {e}");
                            }
                            if let Some(report) =
                                super::reuse::reuse(&self.store, &b, &req, digest).await
                            {
                                break 'run Ok(report);
                            }
                        }
                        req.inputs = Some(inputs);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(build = %b.id, "cannot read the build's inputs ({e}): it is not reused, its executor reads them");
                    }
                }
                let (tx, progress) = self.progress_forwarder(&b.id);
                let report = self
                    .runner
                    .run_within(req, allowance, tx, cancel.clone())
                    .await;
                let _ = progress.await;
                Ok(report)
            }
            Err(e) if !e.retryable() => {
                let done = self
                    .finish
                    .give_up(&b, &e.to_string(), started.elapsed())
                    .await;
                self.remove_work(&b.id).await;
                return done;
            }
            Err(e) => Err(Outcome::from(e)),
        };
        let done = self.finish.finish(&b, report, started.elapsed()).await;
        // Only once the ledger knows how it ended: the record, not the sources, is what a
        // restart finishes a build from, but a reattach still needs them until then.
        self.remove_work(&b.id).await;
        done
    }

    /// Exports the commit and finds the package.
    async fn prepare(
        &self,
        b: &BuildRow,
        src: &Path,
        out_root: &Path,
    ) -> Result<BuildRequest, PrepareError> {
        let Some(target) = self.targets.get(&b.target).cloned() else {
            return Err(PrepareError::NoTarget(b.target.clone()));
        };
        self.sources
            .export(&b.clone_url, &b.repo, &b.commit, src)
            .await
            .map_err(|source| PrepareError::Sources {
                commit: b.commit.short().to_string(),
                source,
            })?;
        let package =
            crate::plan::package_for_spec(src, &src.join(&b.spec_path)).map_err(|source| {
                PrepareError::Package {
                    spec_path: b.spec_path.clone(),
                    source,
                }
            })?;
        let mut extra_repos = self.earlier_stages_repo(b, &target).await?;
        extra_repos.extend(self.publisher.published_repos(b, &target).await?);
        let source_date_epoch = self.package_epoch(b, &package).await;
        Ok(BuildRequest {
            id: b.id.clone(),
            deps_cache: deps_cache(b),
            package,
            target,
            out_root: out_root.to_path_buf(),
            extra_repos,
            source_date_epoch,
            inputs: None,
        })
    }

    /// `SOURCE_DATE_EPOCH` of a package: the last commit that touched its files (its spec
    /// and source directory), not the commit being built, so that a commit leaving the
    /// package alone builds the same bytes and can reuse the result.
    async fn package_epoch(&self, b: &BuildRow, package: &PackageSource) -> Option<i64> {
        let rel = |p: &Path| p.strip_prefix(&package.root).ok().map(Path::to_path_buf);
        let paths: Vec<PathBuf> = [rel(&package.spec), rel(&package.source_dir)]
            .into_iter()
            .flatten()
            // The root itself: the whole repository.
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p
                }
            })
            .collect();
        self.sources
            .last_change(&b.clone_url, &b.commit, &paths)
            .await
    }

    /// A later stage of a change builds against the packages its earlier stages built: a
    /// repository of them, given to the build as `change`, served under
    /// `/repos/stages/<build-id>/` (see [`crate::repos::stage_dir`]) and removed with the
    /// build's work directory.
    async fn earlier_stages_repo(
        &self,
        b: &BuildRow,
        target: &Target,
    ) -> Result<Vec<BuildRepo>, PrepareError> {
        if b.stage == 0 {
            return Ok(vec![]);
        }
        let dirs = self.store.earlier_results(b).await?;
        let rpms: Vec<PathBuf> = dirs
            .iter()
            .flat_map(|d| crate::executor::binary_packages_in(d))
            .collect();
        if rpms.is_empty() {
            return Ok(vec![]);
        }
        let Some(indexing) = &self.indexing else {
            return Err(PrepareError::NoIndexing);
        };
        let dir = crate::repos::stage_dir(&self.data_dir, &b.id);
        // What an earlier attempt left is not this attempt's.
        let _ = tokio::fs::remove_dir_all(&dir).await;
        indexing
            .make_repo(target.image.clone(), dir.clone(), rpms)
            .await
            .map_err(|source| PrepareError::ChangeRepo { source })?;
        Ok(vec![self.publisher.served("change", &dir)])
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
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let id = id.clone();
        let progress = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match ev.kind {
                    ProgressKind::Container(c) => {
                        let _ = store.set_build_progress(&id, Some(&c), None).await;
                    }
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

    // ---- after a restart ---------------------------------------------------------------

    /// The builds that were running when the previous process stopped: followed to their
    /// end when their container can be reattached, requeued otherwise.
    pub async fn recover(self: &Arc<Self>) -> Result<(), QueueError> {
        let running = self.store.builds_in_state(BuildState::Running).await?;
        let keep: Vec<_> = running.iter().map(|b| b.id.clone()).collect();
        for b in running {
            if let Some(rec) = self.recorded(&b).await? {
                tracing::info!(build = %b.id, "finishing a build recorded before the restart");
                let id = b.id.clone();
                self.spawn_running(id, move |s, _token| async move {
                    let done = s.finish.finish_recorded(&b, rec, vec![]).await;
                    s.remove_work(&b.id).await;
                    done
                });
            } else if let Some(req) = self.existing_request(&b).await {
                let id = b.id.clone();
                self.spawn_running(id, move |s, token| async move {
                    s.resume_build(b, req, token).await
                });
            } else {
                self.requeue_after_restart(&b).await?;
            }
        }
        // What killed processes left for builds not picked up above (a Swarm's jobs).
        self.runner.sweep(keep).await;
        self.reports.reconcile(&self.store).await?;
        Ok(())
    }

    async fn requeue_after_restart(&self, b: &BuildRow) -> Result<(), QueueError> {
        tracing::info!(build = %b.id, "requeueing a build that was running when the service stopped");
        self.runner.cleanup(&b.id).await;
        self.finish
            .requeue(b, Millis::now(), "requeued after a restart", false)
            .await?;
        Ok(())
    }

    /// The outcome the ledger recorded for a running build before its publication, if
    /// any: such a build is finished from it, not built again.
    async fn recorded(&self, b: &BuildRow) -> Result<Option<super::finish::Recorded>, QueueError> {
        let json = self.store.recorded_outcome(&b.id).await?;
        match json.map(|j| serde_json::from_str(&j)).transpose() {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(build = %b.id, "the recorded outcome does not read back ({e}): building again");
                Ok(None)
            }
        }
    }

    /// The request of a build that was running, from the sources it exported then (a
    /// running container still has them mounted); `None` when they are gone.
    async fn existing_request(&self, b: &BuildRow) -> Option<BuildRequest> {
        let target = self.targets.get(&b.target).cloned()?;
        let src = self.work_dir(&b.id).join("src");
        let package = crate::plan::package_for_spec(&src, &src.join(&b.spec_path)).ok()?;
        // The epoch the container was given, for the record.
        let source_date_epoch = self.package_epoch(b, &package).await;
        Some(BuildRequest {
            id: b.id.clone(),
            deps_cache: deps_cache(b),
            package,
            target,
            out_root: results_root(&self.data_dir, &b.id),
            extra_repos: vec![],
            source_date_epoch,
            inputs: None,
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
        let report = self.runner.reattach(req, tx, cancel).await;
        let _ = progress.await;
        let Some(report) = report else {
            return self.requeue_after_restart(&b).await;
        };
        tracing::info!(build = %b.id, "reattached build ended");
        let done = self.finish.finish(&b, Ok(report), started.elapsed()).await;
        self.remove_work(&b.id).await;
        done
    }
}

/// The dependency cache a build may use: a push's builds share their repository's (the
/// pusher may write it); a change's (a pull request, a Gerrit upload) use none, since
/// whatever its dependency phase runs as root would reach every later build sharing it.
fn deps_cache(b: &BuildRow) -> DepsCache {
    match b.pr_number {
        None => DepsCache::Shared(b.repo.as_str().to_string()),
        Some(_) => DepsCache::None,
    }
}
