//! The store and the queue with fake planner, sources and runner: ordering of statuses,
//! supersede, retries, recovery after a crash, fork approval. The queue's tests are stories
//! told to a [`QueueTester`].

use crate::serve_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use packetary::executor::{BuildReport, BuildRequest, Progress};
use packetary::model::RepoId;
use packetary::model::{
    BuildId, BuildState, Command, Outcome, Report, ReportState, TargetName, Trigger,
};
use packetary::queue::{error_report, PlanError, PlannedBuild, Planner, Runner};
use packetary::store::{Inbound, Millis, Store, TriggerState};
use serve_common::tester::{push_trigger, sha, QueueTester, AGGREGATE, HELLO};
use serve_common::{FakePlanner, Mode, StagedPlanner, GONE_COMMIT};
use tokio_util::sync::CancellationToken;

use ReportState::{Error, Failure, Pending, Success};

#[tokio::test]
async fn store_migrates_idempotently_and_latest_report_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    drop(store);
    let store = Store::open(dir.path())
        .await
        .expect("reopen runs no migration twice");
    let mut r = Report {
        repo: RepoId::github("o/r").expect("repo"),
        sha: sha('a'),
        context: "packetary".into(),
        state: ReportState::Pending,
        description: "queued".into(),
        target_url: None,
        builds: vec![],
    };
    store.set_report(&r).await.expect("set");
    r.state = ReportState::Success;
    r.description = "done".into();
    store.set_report(&r).await.expect("set");
    let due = store.due_reports(Millis::now(), 10).await.expect("due");
    assert_eq!(due.len(), 1, "one row per context");
    assert_eq!(
        due[0].report.state,
        ReportState::Success,
        "the latest desire wins"
    );
    // A newer desire recorded while the older one was being sent stays due.
    r.state = ReportState::Error;
    store.set_report(&r).await.expect("set");
    store
        .mark_delivered(due[0].id, due[0].version, Some("101"))
        .await
        .expect("mark");
    let due = store.due_reports(Millis::now(), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].report.state, ReportState::Error);
    store
        .mark_delivered(due[0].id, due[0].version, None)
        .await
        .expect("mark");
    // The forge's id of what it created is kept (a delivery that gives none keeps it).
    assert_eq!(
        store.reports().await.expect("reports")[0]
            .forge_ref
            .as_deref(),
        Some("101")
    );
    // The same desire again is not re-sent.
    store.set_report(&r).await.expect("set");
    assert_eq!(store.undelivered_reports().await.expect("count"), 0);

    // Deliveries are deduplicated.
    let t = push_trigger("o/r", "main", 'b');
    assert!(store
        .accept("x", "push", Inbound::Trigger(&t, TriggerState::New))
        .await
        .expect("accept"));
    assert!(!store
        .accept("x", "push", Inbound::Trigger(&t, TriggerState::New))
        .await
        .expect("accept"));
    assert_eq!(store.triggers().await.expect("triggers").len(), 1);
}

#[tokio::test]
async fn statuses_go_pending_then_final_and_builds_are_fair_across_repositories() {
    let t = QueueTester::new(Mode::Succeed).await;
    // Three pushes to repo o/r on different branches, one to o/other.
    t.push_to("o/r", "b0", 'a').await;
    t.push_to("o/r", "b1", 'b').await;
    t.push_to("o/r", "b2", 'c').await;
    t.push_to("o/other", "main", 'd').await;
    t.plan().await;
    // Fairness: with one slot, o/other's build does not wait behind all of o/r's.
    let first = t.claim().await;
    assert_eq!(first.repo.as_str(), "github:o/r");
    let second = t.claim().await;
    assert_eq!(
        second.repo.as_str(),
        "github:o/other",
        "the repository with nothing running goes next"
    );
    t.requeue(&first).await;
    t.requeue(&second).await;

    t.start().await;
    for c in ['a', 'b', 'c', 'd'] {
        t.wait_status(c, AGGREGATE, Success).await;
        t.expect_first_status(c, HELLO, Pending);
        t.expect_status(c, HELLO, Success);
        t.expect_first_status(c, AGGREGATE, Pending);
    }
    assert_eq!(t.runs(), 4);
    t.wait_outbox_empty().await;
}

#[tokio::test]
async fn a_new_push_supersedes_the_running_build() {
    let t = QueueTester::new(Mode::Block).await;
    t.start().await;
    t.push('a').await;
    t.wait_runs(1).await;
    t.set_mode(Mode::Succeed);
    t.push('b').await;
    t.wait_until("both commits to end", |t| {
        t.last_status('a', AGGREGATE) == Some(Error)
            && t.last_status('b', AGGREGATE) == Some(Success)
    })
    .await;
    let a = t.statuses('a', HELLO);
    let (state, desc) = a.last().expect("a status");
    assert_eq!(*state, Error);
    assert_eq!(desc, &format!("superseded by {}", sha('b')));
    assert_eq!(t.builds_in(BuildState::Superseded).await.len(), 1);
}

#[tokio::test]
async fn infrastructure_faults_are_retried_then_reported_as_error() {
    let t = QueueTester::new(Mode::InfraError).await;
    t.start().await;
    t.push('a').await;
    t.wait_status('a', HELLO, Error).await;
    assert_eq!(t.runs(), 2, "max_attempts = 2");
    let all = t.statuses('a', HELLO);
    assert!(
        all.iter()
            .any(|(s, d)| *s == Pending && d.contains("retrying")),
        "{all:?}"
    );
    // The builds' retry policy: retry_backoff (100 ms) after the first attempt.
    assert!(
        all.iter()
            .any(|(_, d)| d.contains("retrying in 100ms (attempt 1 of 2)")),
        "{all:?}"
    );
    t.expect_status('a', AGGREGATE, Error);
}

/// A commit that is gone ("retrying will not help") ends the build as an error at once,
/// with no run and no retry.
#[tokio::test]
async fn a_commit_that_is_gone_is_not_retried() {
    let t = QueueTester::new(Mode::Succeed).await;
    t.start().await;
    t.push(GONE_COMMIT).await;
    t.wait_status(GONE_COMMIT, HELLO, Error).await;
    assert_eq!(t.runs(), 0, "nothing to run without the commit");
    let all = t.statuses(GONE_COMMIT, HELLO);
    assert!(
        all.iter().all(|(_, d)| !d.contains("retrying")),
        "retried: {all:?}"
    );
    let b = &t.builds().await[0];
    assert_eq!(b.state, BuildState::Error);
    assert_eq!(b.attempts, 1, "{b:?}");
    assert!(
        b.message
            .as_deref()
            .is_some_and(|m| m.contains("in the mirror")),
        "{b:?}"
    );
    t.expect_status(GONE_COMMIT, AGGREGATE, Error);
}

#[tokio::test]
async fn running_builds_are_requeued_after_a_crash() {
    // The "crashed" process: planned and claimed a build, then vanished.
    let t = QueueTester::new(Mode::Block).await;
    t.push('a').await;
    t.plan().await;
    t.claim().await;
    let t = t.crash_and_restart(Mode::Succeed).await;
    t.start().await;
    t.wait_status('a', AGGREGATE, Success).await;
    assert_eq!(t.runs(), 1);
    assert_eq!(
        t.builds().await[0].attempts,
        1,
        "a restart does not count as an attempt"
    );
}

#[tokio::test]
async fn fork_pull_requests_wait_for_a_maintainer() {
    let t = QueueTester::new(Mode::Succeed).await;
    t.allow_writer("maintainer");
    t.pull_request_from_fork(7, 'f').await;
    t.plan().await;
    assert!(t.builds().await.is_empty());
    let waiting = t.reports().await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].report.state, Pending);
    assert!(
        waiting[0].report.description.contains("/packetary approve"),
        "{waiting:?}"
    );
    // Someone without write permission cannot approve.
    t.comment(7, "passerby", Command::Approve { commit: None })
        .await;
    t.plan().await;
    assert!(t.builds().await.is_empty());
    t.comment(7, "maintainer", Command::Approve { commit: None })
        .await;
    t.plan().await;
    assert_eq!(t.builds().await.len(), 1);
    t.start().await;
    t.wait_status('f', AGGREGATE, Success).await;
}

#[tokio::test]
async fn a_fork_approval_covers_one_commit_not_later_pushes() {
    let t = QueueTester::new(Mode::Succeed).await;
    t.allow_writer("maintainer");
    t.pull_request_from_fork(7, 'f').await;
    t.plan().await;
    t.comment(7, "maintainer", Command::Approve { commit: None })
        .await;
    t.plan().await;
    assert_eq!(t.builds().await.len(), 1);

    // The fork pushes again: the approval of f does not cover e.
    t.pull_request_from_fork(7, 'e').await;
    t.plan().await;
    let builds = t.builds().await;
    assert!(
        builds.iter().all(|b| b.commit == sha('f')),
        "an unreviewed push was built: {builds:?}"
    );
    let waiting = t.triggers().await;
    let g = waiting
        .iter()
        .find(|s| s.trigger.head == sha('e'))
        .expect("the new push is stored");
    assert_eq!(g.state, TriggerState::AwaitingApproval);

    // An approval naming another commit moves nothing; naming e builds e.
    t.comment(
        7,
        "maintainer",
        Command::Approve {
            commit: Some("fffffff".into()),
        },
    )
    .await;
    t.plan().await;
    assert!(t.builds().await.iter().all(|b| b.commit == sha('f')));
    t.comment(
        7,
        "maintainer",
        Command::Approve {
            commit: Some("eeeeeee".into()),
        },
    )
    .await;
    t.plan().await;
    assert!(t.builds().await.iter().any(|b| b.commit == sha('e')));
}

#[tokio::test]
async fn a_command_survives_a_forge_that_cannot_check_permissions() {
    let t = QueueTester::new(Mode::Succeed).await;
    t.allow_writer("maintainer");
    t.pull_request_from_fork(7, 'f').await;
    t.plan().await;
    t.fail_permission_checks(1);
    t.comment(7, "maintainer", Command::Approve { commit: None })
        .await;
    t.plan().await;
    assert!(t.builds().await.is_empty(), "no permission known yet");
    // Retried once due (the tester's backoff is short), with the forge back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    t.plan().await;
    assert_eq!(t.builds().await.len(), 1, "the approval was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_store_write_fails_goes_back_to_the_queue() {
    use sqlx::Connection;
    let t = QueueTester::new(Mode::Slow).await;
    t.start().await;
    t.push('a').await;
    t.wait_runs(1).await;
    // Another process holds the database's write lock past the busy timeout while the
    // build ends: recording its end fails.
    let db = t.dir().join("data/packetary.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("second connection");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .expect("write lock");
    tokio::time::sleep(Duration::from_secs(6)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("unlock");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let builds = t.builds().await;
        if builds.iter().any(|b| b.state == BuildState::Succeeded) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the build never ended: {builds:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn drain_requeues_builds_still_running_after_the_grace_period() {
    let t = QueueTester::new(Mode::Block).await;
    t.start().await;
    t.push('a').await;
    t.wait_runs(1).await;
    t.drain().await;
    assert_eq!(
        t.builds_in(BuildState::Queued).await.len(),
        1,
        "stopped by the shutdown, to run again at the next start"
    );
}

/// Fails planning with an infrastructure fault the first `n` times.
struct FlakyPlanner(Mutex<u32>);

impl Planner for FlakyPlanner {
    fn plan<'a>(&'a self, t: &'a Trigger) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(async move {
            {
                let mut left = self.0.lock().expect("lock");
                if *left > 0 {
                    *left -= 1;
                    return Err(PlanError::Infra("git server unreachable".into()));
                }
            }
            FakePlanner.plan(t).await
        })
    }
}

#[tokio::test]
async fn planning_is_retried_after_an_infrastructure_fault() {
    // What the flaky planner answers once it works.
    let _ = FakePlanner
        .plan(&push_trigger("o/r", "main", 'a'))
        .await
        .expect("plans");
    let t = QueueTester::builder(Mode::Succeed)
        .planner(FlakyPlanner(Mutex::new(1)))
        .build()
        .await;
    t.start().await;
    t.push('a').await;
    t.wait_status('a', AGGREGATE, Success).await;
    assert_eq!(t.triggers().await[0].attempts, 1);
}

/// Plans one good package and one that cannot be built.
struct HalfBrokenPlanner;

impl Planner for HalfBrokenPlanner {
    fn plan<'a>(&'a self, _t: &'a Trigger) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(async {
            let t = TargetName::parse("t").expect("name");
            Ok(vec![
                PlannedBuild {
                    package: "hello".into(),
                    spec_path: "hello/hello.spec".into(),
                    target: t.clone(),
                    error: None,
                    stage: 0,
                    nevr: None,
                },
                PlannedBuild {
                    package: "broken".into(),
                    spec_path: "broken/broken.spec".into(),
                    target: t,
                    error: Some("symlink points outside the repository".into()),
                    stage: 0,
                    nevr: None,
                },
            ])
        })
    }
}

#[tokio::test]
async fn a_package_that_cannot_be_built_fails_alone_and_the_rest_builds() {
    let t = QueueTester::builder(Mode::Succeed)
        .planner(HalfBrokenPlanner)
        .build()
        .await;
    t.start().await;
    t.push('b').await;
    t.wait_until("the good package built and the aggregate failed", |t| {
        t.last_status('b', HELLO) == Some(Success) && t.last_status('b', AGGREGATE) == Some(Failure)
    })
    .await;
    t.expect_status('b', "packetary/t/broken", Failure);
}

/// Records when each package's build starts and ends; each takes a while.
struct TimedRunner(Arc<Mutex<Vec<(String, &'static str)>>>);

impl Runner for TimedRunner {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let name = req.package.label();
        self.0.lock().expect("lock").push((name.clone(), "start"));
        let log = self.0.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            log.lock().expect("lock").push((name, "end"));
            let mut r = error_report(&req, String::new());
            r.outcome = Outcome::Succeeded {
                source: "x.src.rpm".into(),
                binaries: vec![],
            };
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_later_stage_starts_only_after_the_earlier_stage_ended() {
    let log = Arc::new(Mutex::new(vec![]));
    let t = QueueTester::builder(Mode::Succeed)
        .planner(StagedPlanner(&["lib", "app", "other"]))
        .runner(TimedRunner(log.clone()))
        .parallel(3)
        .build()
        .await;
    t.start().await;
    t.push('c').await;
    t.wait_status('c', AGGREGATE, Success).await;
    let events = log.lock().expect("lock").clone();
    let at = |p: &str, what: &str| {
        events
            .iter()
            .position(|(n, w)| n == p && *w == what)
            .unwrap_or_else(|| panic!("no {what} of {p} in {events:?}"))
    };
    // Three slots: lib and other start together; app waits for both of stage 0 to end.
    assert!(at("other", "start") < at("lib", "end"), "{events:?}");
    assert!(at("lib", "end") < at("app", "start"), "{events:?}");
    assert!(at("other", "end") < at("app", "start"), "{events:?}");
}

/// A build with nowhere to publish (a branch that feeds no release, no indexing) has no
/// publication for a restart to finish: it is ended at once, with no record written first
/// (issue 20: one statement less per build).
#[tokio::test]
async fn a_build_with_nowhere_to_publish_ends_without_a_record() {
    let t = QueueTester::new(Mode::Succeed).await;
    t.push('a').await;
    t.start().await;
    t.wait_status('a', HELLO, Success).await;
    let builds = t.builds().await;
    let [b] = builds.as_slice() else {
        panic!("one build expected: {builds:?}");
    };
    let kinds: Vec<_> = t
        .store()
        .build_events(&b.id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds, ["planned", "started", "ended"]);
}
