//! Intake, the planning step: stored commands (`/packetary approve`, `/packetary rebuild`)
//! and new triggers become builds. A newer push supersedes the older builds of its change,
//! a pull request from a fork waits for a maintainer, the planner's answer becomes queued
//! builds with pending statuses, and a planning fault is retried under the planning policy.
//! A closed pull request or deleted branch ends its builds here too: both are a change
//! moving on, and both end builds the same way.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::publish::Publisher;
use super::report::reporter::{reporter, BuildStatus};
use super::report::Reports;
use super::retry::{Fault, RetryPolicy};
use super::running::Running;
use super::{PlanError, PlannedBuild, Planner, QueueError, Wakes};
use crate::forge::Forge;
use crate::model::{BuildId, BuildState, ChangeKind, Command, RepoId, ReportState};
use crate::store::ledger::{self, EventKind};
use crate::store::{
    changes, reports, BuildRow, EarlyFailure, Millis, NewBuild, ReportRow, Store, StoredCommand,
    StoredTrigger, TriggerState,
};

/// Repositories planned at once (each runs its own spec query containers).
const PLANS_AT_ONCE: usize = 4;
/// Due triggers looked at per step to find the oldest of each repository.
const PLAN_SCAN: i64 = 256;

/// The intake stage: the store's triggers and commands, the planner, the forge (for a
/// commenter's permission), the planning retry policy, and what a change's end touches
/// (running builds to stop, change repositories to remove).
pub(super) struct Intake {
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    pub planner: Arc<dyn Planner>,
    pub policy: RetryPolicy,
    pub build_forks: bool,
    pub reports: Arc<Reports>,
    pub publisher: Arc<Publisher>,
    pub running: Arc<Running>,
    pub wakes: Arc<Wakes>,
    /// Repositories being planned now: one plan per repository at a time, several
    /// repositories at once, so that a slow one holds up only itself.
    pub planning: Mutex<HashSet<RepoId>>,
    /// A due trigger was left for later (its repository was being planned, or enough
    /// were): the plan that ends next wakes the loop for it.
    pub skipped: AtomicBool,
}

impl Intake {
    /// The planning loop's step: handles new commands and starts planning the oldest due
    /// trigger of each repository not being planned already (each on its own task). What
    /// is due later is on the loop's alarm (set where a retry is stored). A trigger left
    /// for later is planned when the plan before it ends (which wakes this loop); in case
    /// that plan ended meanwhile, look again after a second.
    pub async fn plan_step(self: &Arc<Self>) -> Result<Option<Millis>, QueueError> {
        if self.wakes.commands.take_if_due(Millis::now()) {
            self.handle_commands().await?;
        }
        self.start_plans().await?;
        Ok(self
            .skipped
            .load(Ordering::SeqCst)
            .then(|| Millis::now().after(std::time::Duration::from_secs(1))))
    }

    /// Handles every stored command and trigger not handled yet, one trigger at a time in
    /// the order they came (what tests and a one-shot run want), after any plan the
    /// planning loop has started for the same repository.
    pub async fn plan_pending(&self) -> Result<(), QueueError> {
        loop {
            self.handle_commands().await?;
            let Some(st) = self.store.next_new_trigger().await? else {
                if self.plans_running() == 0 {
                    return Ok(());
                }
                self.wakes.plan_done.notified().await;
                continue;
            };
            let repo = st.trigger.repo.clone();
            if !self
                .planning
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(repo.clone())
            {
                self.wakes.plan_done.notified().await;
                continue;
            }
            let r = self.handle_trigger(st).await;
            self.planning
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&repo);
            r?;
        }
    }

    async fn handle_commands(&self) -> Result<(), QueueError> {
        while let Some(c) = self.store.next_command().await? {
            self.handle_command(c).await?;
        }
        Ok(())
    }

    fn plans_running(&self) -> usize {
        self.planning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Starts planning the oldest due trigger of each repository that is not being planned
    /// (up to [`PLANS_AT_ONCE`] in all); returns how many started.
    async fn start_plans(self: &Arc<Self>) -> Result<usize, QueueError> {
        let due = self.store.new_triggers_due(PLAN_SCAN).await?;
        let mut seen = std::collections::HashSet::new();
        let mut started = 0;
        for st in due {
            let repo = st.trigger.repo.clone();
            if !seen.insert(repo.clone()) {
                self.skipped.store(true, Ordering::SeqCst);
                continue;
            }
            {
                let mut planning = self.planning.lock().unwrap_or_else(|p| p.into_inner());
                if planning.len() >= PLANS_AT_ONCE || !planning.insert(repo.clone()) {
                    self.skipped.store(true, Ordering::SeqCst);
                    continue;
                }
            }
            started += 1;
            let q = self.clone();
            tokio::spawn(async move {
                if let Err(e) = q.handle_trigger(st).await {
                    tracing::error!(repo = %repo, "planning: {e}");
                }
                q.planning
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&repo);
                q.wakes.plan_done.notify_one();
                if q.skipped.swap(false, Ordering::SeqCst) {
                    q.wakes.plan.wake();
                }
            });
        }
        Ok(started)
    }

    async fn handle_command(&self, c: StoredCommand) -> Result<(), QueueError> {
        let store = &self.store;
        let r = &c.request;
        if !r.trusted {
            match self.forge.can_write(&r.repo, &r.user).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(repo = %r.repo, user = %r.user, "ignoring /packetary {} from a user without write permission", r.command.name());
                    store
                        .finish_command(c.id, "refused", "the user has no write permission")
                        .await?;
                    return Ok(());
                }
                Err(e) => {
                    // A forge that is down must not lose a maintainer's command: retried under
                    // the planning policy, dropped only when it gives up.
                    let attempt = u32::try_from(c.attempts + 1).unwrap_or(u32::MAX);
                    let fault = if e.permanent {
                        Fault::Permanent
                    } else {
                        Fault::Transient
                    };
                    if let Some(wait) = self.policy.next(attempt, fault) {
                        let msg = format!(
                            "permission check failed, retrying in {}: {e}",
                            humantime::format_duration(wait)
                        );
                        tracing::warn!(repo = %r.repo, user = %r.user, "{msg}");
                        let at = Millis::now().after(wait);
                        store.retry_command(c.id, at, &msg).await?;
                        self.wakes.commands.set(at);
                        self.wakes.plan.at(at);
                    } else {
                        tracing::warn!(repo = %r.repo, user = %r.user, "cannot check permissions: {e}");
                        store
                            .finish_command(
                                c.id,
                                "failed",
                                &format!("permission check failed: {e}"),
                            )
                            .await?;
                    }
                    return Ok(());
                }
            }
        }
        match &r.command {
            Command::Approve { commit } => {
                let Some(pr) = r.pr_number else {
                    store
                        .finish_command(c.id, "refused", "approve is a pull request command")
                        .await?;
                    return Ok(());
                };
                let head = store
                    .approval_head(&r.repo, pr, commit.as_deref(), c.created_at)
                    .await?;
                let Some(head) = head else {
                    let why = match commit {
                        Some(p) => format!("no push of this pull request has a commit {p}"),
                        None => "no push of this pull request was seen before the comment".into(),
                    };
                    tracing::info!(repo = %r.repo, pr, user = %r.user, "approval refused: {why}");
                    store.finish_command(c.id, "refused", &why).await?;
                    return Ok(());
                };
                let n = store.approve(c.id, &r.repo, pr, &head).await?;
                tracing::info!(repo = %r.repo, pr, %head, user = %r.user, "approved builds of a pull request at one commit ({n} waiting)");
            }
            Command::Rebuild { package, target } => {
                if let (Some(pr), Some(head)) = (r.pr_number, &r.head) {
                    // Building an older head would supersede the change's current builds.
                    let current = store.latest_trigger(&r.repo, Some(pr), None).await?;
                    if let Some(cur) = current.filter(|c| c.trigger.head != *head) {
                        let why = format!(
                            "rebuild of {} ignored: it is not the change's current revision ({}); ask again on the current one",
                            head.short(),
                            cur.trigger.head.short()
                        );
                        tracing::info!(repo = %r.repo, pr, user = %r.user, "{why}");
                        store.finish_command(c.id, "refused", &why).await?;
                        self.reports
                            .commit(store, &r.repo, head, ReportState::Error, why)
                            .await?;
                        return Ok(());
                    }
                }
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
        if st.supersedes {
            self.supersede(&st).await?;
        }
        if !self.may_build(&st).await? {
            return Ok(());
        }
        match self.planner.plan(&st.trigger).await {
            Ok(planned) => self.record_plan(&st, planned).await,
            Err(e) => self.planning_failed(&st, e).await,
        }
    }

    /// Ends the builds of the same change that this trigger makes obsolete, with their
    /// reports: one transaction.
    async fn supersede(&self, st: &StoredTrigger) -> Result<(), QueueError> {
        let t = &st.trigger;
        let message = format!("superseded by {}", t.head);
        let mut tx = self.store.tx().await?;
        let superseded = changes::supersede(&mut tx, t, st.id).await?;
        self.reports
            .ended(&mut tx, &superseded, BuildState::Superseded, &message)
            .await?;
        let written = tx.commit().await?;
        if !superseded.is_empty() {
            tracing::info!(repo = %t.repo, head = %t.head, "superseding {} build(s)", superseded.len());
        }
        self.after_ended(&superseded, written);
        Ok(())
    }

    /// Whether the trigger may be planned now: a pull request from a fork waits until a
    /// maintainer approves it (unless the service builds forks), with a pending status
    /// that says so.
    async fn may_build(&self, st: &StoredTrigger) -> Result<bool, QueueError> {
        let t = &st.trigger;
        if !t.from_fork || self.build_forks {
            return Ok(true);
        }
        let store = &self.store;
        // Waiting starts only if no approval of its head is done, in one statement: an
        // approval that came while this trigger was still `new` found nothing waiting to
        // release, and is seen here instead.
        if store
            .await_approval(st.id, t, "pull request from a fork")
            .await?
        {
            self.reports
                .commit(
                    store,
                    &t.repo,
                    &t.head,
                    ReportState::Pending,
                    format!(
                        "pull request from a fork: waiting for a maintainer to comment /packetary approve {}",
                        t.head.short()
                    ),
                )
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Stores the planned builds (those a rebuild command asked for) and their statuses.
    async fn record_plan(
        &self,
        st: &StoredTrigger,
        planned: Vec<PlannedBuild>,
    ) -> Result<(), QueueError> {
        let t = &st.trigger;
        let planned: Vec<PlannedBuild> = planned
            .into_iter()
            .filter(|p| t.only_package.as_ref().is_none_or(|o| *o == p.package))
            .filter(|p| {
                t.only_target
                    .as_ref()
                    .is_none_or(|o| o == p.target.as_str())
            })
            .collect();
        // A build whose release would refuse its packages ends here: no container starts.
        let refusals = self.publisher.refusals_before_build(t, &planned).await?;
        let builds: Vec<NewBuild> = planned
            .into_iter()
            .zip(refusals)
            .map(|(p, refused)| NewBuild {
                id: BuildId::generate(),
                package: p.package,
                spec_path: p.spec_path.display().to_string(),
                target: p.target,
                error: p
                    .error
                    .map(EarlyFailure::plan)
                    .or(refused.map(EarlyFailure::publish)),
                stage: p.stage,
            })
            .collect();
        let mut tx = self.store.tx().await?;
        let Some(planned) = ledger::plan(&mut tx, st, &builds).await? else {
            // Closed or superseded while it was planned: that transition reported it.
            tracing::info!(repo = %t.repo, head = %t.head, "the trigger ended while it was planned: its builds are dropped");
            return Ok(());
        };
        let reporter = reporter(t.repo.forge());
        let mut out = Vec::with_capacity(builds.len() + 1);
        for b in &builds {
            let description = match &b.error {
                None => "queued".to_string(),
                Some(e) => e.status_line(),
            };
            let state = if b.error.is_some() {
                BuildState::Failed
            } else {
                BuildState::Queued
            };
            let status = BuildStatus {
                repo: &t.repo,
                sha: &t.head,
                target: &b.target,
                package: &b.package,
                state,
                message: &description,
                url: self.reports.build_url(&b.id),
            };
            out.extend(reporter.build_status(status));
        }
        if !builds.is_empty() {
            let commit = (&t.repo, &t.head);
            out.extend(
                self.reports
                    .aggregate_report(
                        &mut tx,
                        reporter,
                        EventKind::Planned,
                        commit,
                        planned.counts,
                    )
                    .await?,
            );
        }
        reports::upsert_all(&mut tx, &out).await?;
        let written = tx.commit().await?;
        self.reports.written(written);
        tracing::info!(repo = %t.repo, head = %t.head, "planned {} build(s)", builds.len());
        if builds.is_empty() {
            self.reports
                .commit(
                    &self.store,
                    &t.repo,
                    &t.head,
                    ReportState::Success,
                    "no package to build".into(),
                )
                .await?;
        }
        self.wakes.build.wake();
        Ok(())
    }

    /// Retries an infrastructure fault under the planning policy; otherwise the trigger
    /// fails, as `failure` when the repository is at fault and `error` when not.
    async fn planning_failed(&self, st: &StoredTrigger, e: PlanError) -> Result<(), QueueError> {
        let store = &self.store;
        let t = &st.trigger;
        let (fault, state) = match e {
            PlanError::Invalid(_) => (Fault::Permanent, ReportState::Failure),
            PlanError::Infra(_) => (Fault::Transient, ReportState::Error),
        };
        let attempt = st.attempts as u32 + 1;
        if let Some(wait) = self.policy.next(attempt, fault) {
            let msg = format!(
                "planning failed, retrying in {}: {e}",
                humantime::format_duration(wait)
            );
            tracing::warn!(repo = %t.repo, head = %t.head, "{msg}");
            let at = Millis::now().after(wait);
            store.retry_trigger(st.id, at, &msg).await?;
            self.wakes.plan.at(at);
            return self
                .reports
                .commit(store, &t.repo, &t.head, ReportState::Pending, msg)
                .await;
        }
        tracing::warn!(repo = %t.repo, head = %t.head, "planning failed: {e}");
        store
            .set_trigger_state(st.id, TriggerState::Failed, Some(&e.to_string()))
            .await?;
        self.reports
            .commit(
                store,
                &t.repo,
                &t.head,
                state,
                format!("planning failed: {e}"),
            )
            .await
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
        let mut tx = self.store.tx().await?;
        let ended = changes::close(&mut tx, repo, kind, ref_name, pr_number, message).await?;
        self.reports
            .ended(&mut tx, &ended, BuildState::Cancelled, message)
            .await?;
        let written = tx.commit().await?;
        if let (ChangeKind::PullRequest, Some(n)) = (kind, pr_number) {
            self.publisher.remove_change_repos(repo, n);
        }
        self.after_ended(&ended, written);
        Ok(())
    }

    /// Builds a change's end just ended: those running are stopped, its reports handed
    /// to the outbox.
    fn after_ended(&self, ended: &[BuildRow], written: Vec<ReportRow>) {
        for b in ended {
            self.running.cancel(&b.id);
        }
        self.reports.written(written);
    }
}
