//! A tester for the queue, after rust-lang/bors's `BorsTester`: a queue over a fresh store
//! with the fakes of this directory (forge, planner, sources, runner), driven and checked
//! in the words of a story — `t.push('a')`, `t.wait_status('a', AGGREGATE, Success)`,
//! `t.expect_status(...)` — so that a test says what happens and what must follow, not how
//! to accept a delivery, wake the queue and poll the fake forge.
//!
//! Events go in through the queue's one ingest function, as a forge's would. Commits are
//! named by one character (`'a'` is `aaaa…`), pushes go to `o/r` unless told otherwise, and
//! the target of the fake planner is `t`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use packetary::model::{
    BuildId, BuildState, ChangeKind, Command, CommandRequest, CommitSha, ForgeEvent, RepoId,
    ReportState, TargetName, Trigger,
};
use packetary::queue::ingest::{ingest, Ingested};
use packetary::queue::{Planner, Queue, QueueConfig, Runner};
use packetary::store::{BuildRow, Millis, NewBuild, ReportRow, Store, StoredTrigger};

use super::{app_state, queue_config, FakeForge, FakePlanner, FakeRunner, FakeSources, Mode};

/// The aggregate status of a commit.
pub const AGGREGATE: &str = "packetary";
/// The status of the fake planner's one build, `hello` for target `t`.
pub const HELLO: &str = "packetary/t/hello";

/// The commit named `c`: `c` forty times.
pub fn sha(c: char) -> CommitSha {
    CommitSha::parse(&c.to_string().repeat(40)).expect("sha")
}

/// A push of `head` to `repo`'s `branch` (whose base branch is `main`), by alice.
pub fn push_trigger(repo: &str, branch: &str, head: char) -> Trigger {
    Trigger {
        repo: RepoId::github(repo).expect("repo"),
        clone_url: "file:///nowhere".into(),
        kind: ChangeKind::Push,
        ref_name: format!("refs/heads/{branch}"),
        base: None,
        head: sha(head),
        pr_number: None,
        base_ref: Some("main".into()),
        from_fork: false,
        sender: "alice".into(),
        only_package: None,
        only_target: None,
    }
}

/// What a page of the web interface answered.
pub struct Page {
    pub status: u16,
    pub content_type: Option<String>,
    /// The `refresh` header of a live page.
    pub refresh: Option<String>,
    pub body: String,
}

/// How the queue under test is made; see [`QueueTester::builder`].
pub struct QueueTesterBuilder {
    mode: Mode,
    planner: Option<Arc<dyn Planner>>,
    runner: Option<Arc<dyn Runner>>,
    parallel: Option<usize>,
}

impl QueueTesterBuilder {
    /// Plans with `planner` instead of the fake planner's one `hello`.
    pub fn planner(mut self, planner: impl Planner + 'static) -> Self {
        self.planner = Some(Arc::new(planner));
        self
    }

    /// Runs builds with `runner` instead of a [`FakeRunner`] (then [`QueueTester::runs`]
    /// and [`QueueTester::set_mode`] are not available).
    pub fn runner(mut self, runner: impl Runner + 'static) -> Self {
        self.runner = Some(Arc::new(runner));
        self
    }

    /// Runs up to `n` builds at once (one by default).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = Some(n);
        self
    }

    pub async fn build(self) -> QueueTester {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tester = QueueTester {
            dir,
            forge: Arc::new(FakeForge::default()),
            fake_runner: None,
            queue: None,
            deliveries: AtomicU32::new(0),
            tasks: Mutex::new(vec![]),
        };
        tester.queue = Some(tester.make_queue(self).await);
        tester
    }
}

/// A queue under test, with the fake forge it reports to and the fake runner it builds on.
pub struct QueueTester {
    dir: tempfile::TempDir,
    pub forge: Arc<FakeForge>,
    fake_runner: Option<Arc<FakeRunner>>,
    queue: Option<Queue>,
    deliveries: AtomicU32,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl QueueTester {
    /// A queue (not started) whose fake runner answers every build with `mode`.
    pub async fn new(mode: Mode) -> QueueTester {
        QueueTester::builder(mode).build().await
    }

    /// A queue to be made with another planner, runner or parallelism.
    pub fn builder(mode: Mode) -> QueueTesterBuilder {
        QueueTesterBuilder {
            mode,
            planner: None,
            runner: None,
            parallel: None,
        }
    }

    async fn make_queue(&mut self, how: QueueTesterBuilder) -> Queue {
        let data = self.data_dir();
        let store = Store::open(&data).await.expect("store");
        let runner: Arc<dyn Runner> = match how.runner {
            Some(r) => {
                self.fake_runner = None;
                r
            }
            None => {
                let fake = FakeRunner::new(how.mode);
                self.fake_runner = Some(fake.clone());
                fake
            }
        };
        let mut cfg: QueueConfig = queue_config(&data);
        if let Some(n) = how.parallel {
            cfg.parallel = n;
        }
        Queue::new(
            packetary::queue::Ports {
                store,
                forge: self.forge.clone(),
                planner: how.planner.unwrap_or_else(|| Arc::new(FakePlanner)),
                sources: Arc::new(FakeSources),
                runner,
                indexing: None,
            },
            cfg,
            Arc::new(packetary::queue::Metrics::default()),
        )
    }

    /// The process died: its store is closed and a new process, with a new forge and a
    /// fake runner answering `mode`, opens the same data directory (not started).
    pub async fn crash_and_restart(mut self, mode: Mode) -> QueueTester {
        self.store().close().await;
        self.forge = Arc::new(FakeForge::default());
        self.tasks = Mutex::new(vec![]);
        let queue = self.make_queue(QueueTester::builder(mode)).await;
        self.queue = Some(queue);
        self
    }

    pub fn queue(&self) -> &Queue {
        self.queue.as_ref().expect("a queue")
    }

    pub fn store(&self) -> &Store {
        self.queue().store()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    // ---- the forge's side: events in ------------------------------------------------

    async fn send(&self, event_name: &str, event: ForgeEvent) {
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        let got = ingest(
            self.queue(),
            &format!("d{n}"),
            None,
            event_name,
            event,
            &|_| true,
        )
        .await
        .expect("ingest");
        assert_eq!(got, Ingested::Accepted, "{event_name} d{n}");
    }

    /// `head` is pushed to `o/r`'s `main`.
    pub async fn push(&self, head: char) {
        self.push_to("o/r", "main", head).await
    }

    /// `head` is pushed to `repo`'s `branch`.
    pub async fn push_to(&self, repo: &str, branch: &str, head: char) {
        self.send("push", ForgeEvent::Build(push_trigger(repo, branch, head)))
            .await
    }

    /// Pull request `pr` of `o/r`, from a fork, now at `head`.
    pub async fn pull_request_from_fork(&self, pr: u64, head: char) {
        let mut t = push_trigger("o/r", "main", head);
        t.kind = ChangeKind::PullRequest;
        t.pr_number = Some(pr);
        t.ref_name = format!("refs/pull/{pr}/head");
        t.from_fork = true;
        self.send("pull_request", ForgeEvent::Build(t)).await
    }

    /// `user` comments `/packetary <command>` on pull request `pr` of `o/r`.
    pub async fn comment(&self, pr: u64, user: &str, command: Command) {
        let c = CommandRequest {
            repo: RepoId::github("o/r").expect("repo"),
            pr_number: Some(pr),
            head: None,
            user: user.into(),
            command,
            trusted: false,
        };
        self.send("issue_comment", ForgeEvent::Command(c)).await
    }

    /// `user` may push to the repositories (and so may command builds).
    pub fn allow_writer(&self, user: &str) {
        self.forge.writers.lock().expect("lock").push(user.into());
    }

    /// The next `n` permission checks fail (the forge is down).
    pub fn fail_permission_checks(&self, n: u32) {
        *self.forge.permission_faults.lock().expect("lock") = n;
    }

    // ---- driving the queue --------------------------------------------------------

    /// Handles what was sent, as the planning loop would.
    pub async fn plan(&self) {
        self.queue().plan_pending().await.expect("plan");
    }

    /// Recovers and starts the planning, scheduling and outbox loops.
    pub async fn start(&self) {
        let tasks = self.queue().start().await.expect("start");
        self.tasks.lock().expect("lock").extend(tasks);
    }

    /// SIGTERM.
    pub async fn drain(&self) {
        self.queue().drain().await
    }

    /// Claims the next build as the scheduler would (without running it).
    pub async fn claim(&self) -> BuildRow {
        self.store()
            .claim_next_build(Millis::now())
            .await
            .expect("claim")
            .expect("a build to claim")
    }

    /// Puts a claimed build back in the queue, due now.
    pub async fn requeue(&self, b: &BuildRow) {
        self.store()
            .requeue(&b.id, Millis::now(), None, false)
            .await
            .expect("requeue");
    }

    /// Pushes `a` and stores one queued build of `package` at `spec_path` for target `t`
    /// for it, without planning; returns the build's id.
    pub async fn insert_build(&self, package: &str, spec_path: &str) -> BuildId {
        self.push('a').await;
        let t: StoredTrigger = self
            .store()
            .next_new_trigger()
            .await
            .expect("store")
            .expect("trigger");
        let id = BuildId::generate();
        self.store()
            .insert_builds(
                &t,
                &[NewBuild {
                    error: None,
                    stage: 0,
                    id: id.clone(),
                    package: package.into(),
                    spec_path: spec_path.into(),
                    target: TargetName::parse("t").expect("name"),
                }],
            )
            .await
            .expect("insert");
        id
    }

    /// From now on the fake runner answers `mode`.
    pub fn set_mode(&self, mode: Mode) {
        *self.fake().mode.lock().expect("lock") = mode;
    }

    fn fake(&self) -> &FakeRunner {
        self.fake_runner
            .as_deref()
            .expect("the tester's own FakeRunner (not a custom runner)")
    }

    // ---- what happened ------------------------------------------------------------

    /// How many builds the fake runner was asked to run.
    pub fn runs(&self) -> usize {
        self.fake().runs.lock().expect("lock").len()
    }

    /// The statuses delivered for `head` in `context`, oldest first.
    pub fn statuses(&self, head: char, context: &str) -> Vec<(ReportState, String)> {
        let sha = sha(head);
        self.forge
            .delivered
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.sha == sha && r.context == context)
            .map(|r| (r.state, r.description.clone()))
            .collect()
    }

    pub fn first_status(&self, head: char, context: &str) -> Option<ReportState> {
        self.statuses(head, context).first().map(|s| s.0)
    }

    pub fn last_status(&self, head: char, context: &str) -> Option<ReportState> {
        self.statuses(head, context).last().map(|s| s.0)
    }

    /// The latest status delivered for `head` in `context` is `state`.
    pub fn expect_status(&self, head: char, context: &str, state: ReportState) {
        let all = self.statuses(head, context);
        assert_eq!(
            all.last().map(|s| s.0),
            Some(state),
            "{context} of {head}: {all:?}"
        );
    }

    /// The first status delivered for `head` in `context` was `state`.
    pub fn expect_first_status(&self, head: char, context: &str, state: ReportState) {
        let all = self.statuses(head, context);
        assert_eq!(
            all.first().map(|s| s.0),
            Some(state),
            "{context} of {head}: {all:?}"
        );
    }

    pub async fn builds_in(&self, state: BuildState) -> Vec<BuildRow> {
        self.store().builds_in_state(state).await.expect("builds")
    }

    /// The ten most recent builds, newest first.
    pub async fn builds(&self) -> Vec<BuildRow> {
        self.store().recent_builds(10).await.expect("builds")
    }

    pub async fn triggers(&self) -> Vec<StoredTrigger> {
        self.store().triggers().await.expect("triggers")
    }

    /// The outbox: the desired statuses, delivered or not.
    pub async fn reports(&self) -> Vec<ReportRow> {
        self.store().reports().await.expect("reports")
    }

    // ---- waiting --------------------------------------------------------------------

    /// Waits (up to 10 s) until `done` holds; panics naming `what` otherwise.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&QueueTester) -> bool) {
        for _ in 0..200 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let delivered = self.forge.delivered.lock().expect("lock").clone();
        panic!("timed out waiting for {what}; delivered: {delivered:#?}");
    }

    /// Waits until the latest status delivered for `head` in `context` is `state`.
    pub async fn wait_status(&self, head: char, context: &str, state: ReportState) {
        let what = format!("{context} of {head} to be {}", state.as_str());
        self.wait_until(&what, |t| t.last_status(head, context) == Some(state))
            .await
    }

    /// Waits until the fake runner was asked to run `n` builds.
    pub async fn wait_runs(&self, n: usize) {
        self.wait_until(&format!("{n} build(s) to run"), |t| t.runs() == n)
            .await
    }

    /// Waits until every report in the outbox was delivered.
    pub async fn wait_outbox_empty(&self) {
        for _ in 0..200 {
            if self.store().undelivered_reports().await.expect("count") == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for an empty outbox");
    }

    // ---- the web interface ------------------------------------------------------------

    /// GETs `uri` from the web interface over this queue (acting for `o/*`).
    pub async fn get(&self, uri: &str) -> Page {
        use tower::ServiceExt;
        let router = packetary::web::router(app_state(self.queue(), &["o/*"]), 1 << 20);
        let resp = router
            .oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .expect("req"),
            )
            .await
            .expect("response");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        let (content_type, refresh) = (header("content-type"), header("refresh"));
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        Page {
            status,
            content_type,
            refresh,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Where the executor would write the logs of build `id` while it runs.
    pub fn live_logs_dir(&self, id: &BuildId) -> PathBuf {
        packetary::executor::staging_dir(
            &packetary::queue::results_root(&self.queue().store_dir(), id),
            &TargetName::parse("t").expect("name"),
            id,
        )
        .join("logs")
    }
}
