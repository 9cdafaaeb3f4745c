//! A tester for the queue, after rust-lang/bors's `BorsTester`: a queue over a fresh store
//! with the fakes of this directory (forge, planner, sources, runner), driven and checked
//! in the words of a story — `t.push('a')`, `t.wait_status('a', AGGREGATE, Success)`,
//! `t.expect_status(...)` — so that a test says what happens and what must follow, not how
//! to accept a delivery, wake the queue and poll the fake forge.
//!
//! Events go in as GitHub sends them: each is a webhook payload (`push`, `pull_request`
//! opened or synchronize, `issue_comment` created), signed with the test secret and POSTed
//! to the service's own router (`web::router`: verified, parsed, ingested, queued), so every
//! story also goes through the webhook route. Commits are named by one character (`'a'` is
//! `aaaa…`), pushes go to `o/r` unless told otherwise (the router acts for `o/*`), and the
//! target of the fake planner is `t`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use packetary::model::{
    BuildId, BuildState, ChangeKind, Command, CommitSha, RepoId, ReportState, TargetName, Trigger,
};
use packetary::queue::{Planner, Queue, QueueConfig, Runner};
use packetary::store::{BuildRow, Millis, NewBuild, ReportRow, Store, StoredTrigger};
use serde_json::Value;

use super::{
    app_state, fixture, push_payload, queue_config, webhook, FakeForge, FakePlanner, FakeRunner,
    FakeSources, Mode, SECRET,
};

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

/// Where GitHub says `repo` is cloned from.
fn clone_url(repo: &str) -> String {
    format!("https://github.com/{repo}.git")
}

/// A time of delivery `n`, as the payloads' timestamps are written.
fn timestamp(n: u32) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        n / 3600 % 24,
        n / 60 % 60,
        n % 60
    )
}

/// The comment that says `command`.
fn comment_text(command: &Command) -> String {
    let words: Vec<&str> = match command {
        Command::Rebuild { package, target } => {
            assert!(
                package.is_some() || target.is_none(),
                "a rebuild comment names a target only after a package"
            );
            ["rebuild"]
                .into_iter()
                .chain(package.as_deref())
                .chain(target.as_deref())
                .collect()
        }
        Command::Approve { commit } => ["approve"].into_iter().chain(commit.as_deref()).collect(),
    };
    format!("/packetary {}", words.join(" "))
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
    indexing: Option<Arc<dyn packetary::queue::Indexing>>,
    parallel: Option<usize>,
    disk_quota: Option<u64>,
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

    /// Makes stage repositories (and publishes) with `indexing` (none by default).
    pub fn indexing(mut self, indexing: impl packetary::queue::Indexing + 'static) -> Self {
        self.indexing = Some(Arc::new(indexing));
        self
    }

    /// Caps each change's results at `bytes` (`[server] change_disk_quota`; none by default).
    pub fn disk_quota(mut self, bytes: u64) -> Self {
        self.disk_quota = Some(bytes);
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
            pull_requests: Mutex::new(BTreeSet::new()),
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
    /// The pull requests opened so far (the next event of one is a `synchronize`).
    pull_requests: Mutex<BTreeSet<u64>>,
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
            indexing: None,
            parallel: None,
            disk_quota: None,
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
        cfg.change_disk_quota = how.disk_quota;
        Queue::new(
            packetary::queue::Ports {
                store,
                forge: self.forge.clone(),
                planner: how.planner.unwrap_or_else(|| Arc::new(FakePlanner)),
                sources: Arc::new(FakeSources),
                runner,
                indexing: how.indexing,
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

    /// The service's router over this queue, acting for `o/*` with GitHub's webhooks
    /// signed by [`SECRET`].
    fn router(&self) -> axum::Router {
        packetary::web::router(app_state(self.queue(), &["o/*"]), 1 << 20)
    }

    /// Delivers `payload` as GitHub's `event`, signed, through the webhook route; the
    /// route must accept it (202). Each delivery has an id of its own (`d1`, `d2`, ...) and
    /// a body of its own (`stamp` sets a field that differs between GitHub's events, so that
    /// no event is taken for a replay of an earlier one).
    async fn send(&self, event: &str, mut payload: Value, stamp: fn(&mut Value, u32)) {
        use tower::ServiceExt;
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        stamp(&mut payload, n);
        let body = serde_json::to_vec(&payload).expect("json");
        let resp = self
            .router()
            .oneshot(webhook(event, &format!("d{n}"), &body, Some(SECRET)))
            .await
            .expect("response");
        let status = resp.status();
        let answer = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        assert_eq!(
            status,
            axum::http::StatusCode::ACCEPTED,
            "{event} d{n}: {}",
            String::from_utf8_lossy(&answer)
        );
    }

    /// `head` is pushed to `o/r`'s `main`.
    pub async fn push(&self, head: char) {
        self.push_to("o/r", "main", head).await
    }

    /// `head` is pushed to `repo`'s `branch` (a new branch: no commit before), by alice.
    pub async fn push_to(&self, repo: &str, branch: &str, head: char) {
        let zero = "0".repeat(40);
        let body = push_payload(repo, &clone_url(repo), branch, &zero, sha(head).as_str());
        let mut p: Value = serde_json::from_slice(&body).expect("json");
        p["sender"]["login"] = Value::from("alice");
        p["head_commit"]["id"] = Value::from(sha(head).as_str());
        self.send("push", p, |p, n| {
            p["head_commit"]["timestamp"] = Value::from(timestamp(n))
        })
        .await
    }

    /// Pull request `pr` of `o/r`, from a fork, now at `head` (`opened` the first time,
    /// `synchronize` after), by alice.
    pub async fn pull_request_from_fork(&self, pr: u64, head: char) {
        let opened = self.pull_requests.lock().expect("lock").insert(pr);
        let action = if opened { "opened" } else { "synchronize" };
        let mut p = fixture(&format!("pull_request-{action}.json"));
        p["action"] = Value::from(action);
        p["number"] = Value::from(pr);
        let pull = &mut p["pull_request"];
        pull["number"] = Value::from(pr);
        pull["head"]["sha"] = Value::from(sha(head).as_str());
        pull["head"]["ref"] = Value::from("main");
        pull["head"]["repo"]["full_name"] = Value::from("fork/r");
        pull["base"]["ref"] = Value::from("main");
        pull["base"]["repo"]["full_name"] = Value::from("o/r");
        p["repository"]["full_name"] = Value::from("o/r");
        p["repository"]["clone_url"] = Value::from(clone_url("o/r"));
        p["sender"]["login"] = Value::from("alice");
        self.send("pull_request", p, |p, n| {
            p["pull_request"]["updated_at"] = Value::from(timestamp(n))
        })
        .await
    }

    /// `user` comments `/packetary <command>` on pull request `pr` of `o/r`.
    pub async fn comment(&self, pr: u64, user: &str, command: Command) {
        let text = comment_text(&command);
        assert_eq!(
            Command::parse(&text).as_ref(),
            Some(&command),
            "a comment says {command:?}"
        );
        let mut p = fixture("issue_comment-created.json");
        p["issue"]["number"] = Value::from(pr);
        p["issue"]["pull_request"] = serde_json::json!({
            "url": format!("https://api.github.com/repos/o/r/pulls/{pr}"),
        });
        p["comment"]["body"] = Value::from(text);
        p["comment"]["user"]["login"] = Value::from(user);
        p["repository"]["full_name"] = Value::from("o/r");
        p["repository"]["clone_url"] = Value::from(clone_url("o/r"));
        p["sender"]["login"] = Value::from(user);
        self.send("issue_comment", p, |p, n| {
            p["comment"]["id"] = Value::from(n);
            p["comment"]["created_at"] = Value::from(timestamp(n));
        })
        .await
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
        let resp = self
            .router()
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

    /// The fake runner has written `text` so far into the live log `name` of build `id`.
    pub fn set_live_log(&self, id: &BuildId, name: &str, text: &str) {
        self.fake()
            .live
            .lock()
            .expect("lock")
            .insert((id.clone(), name.to_string()), text.as_bytes().to_vec());
    }
}
