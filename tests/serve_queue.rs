//! The store and the queue with fake planner, sources and runner: ordering of statuses,
//! supersede, retries, recovery after a crash, fork approval.

mod serve_common;

use std::sync::Arc;
use std::time::Duration;

use packetary::model::{
    BuildState, ChangeKind, Command, CommandRequest, Report, ReportState, Trigger,
};
use packetary::model::{CommitSha, RepoId};
use packetary::store::{Inbound, Millis, Store, TriggerState};
use serve_common::*;

fn sha(c: char) -> CommitSha {
    CommitSha::parse(&c.to_string().repeat(40)).expect("sha")
}

fn push(head: char) -> Trigger {
    Trigger {
        repo: RepoId::github("o/r").expect("repo"),
        clone_url: "file:///nowhere".into(),
        kind: ChangeKind::Push,
        ref_name: "refs/heads/main".into(),
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

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn states(forge: &FakeForge, sha: &CommitSha, context: &str) -> Vec<(ReportState, String)> {
    forge
        .delivered
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| &r.sha == sha && r.context == context)
        .map(|r| (r.state, r.description.clone()))
        .collect()
}

fn last(forge: &FakeForge, sha: &CommitSha, context: &str) -> Option<ReportState> {
    states(forge, sha, context).last().map(|s| s.0)
}

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
        .mark_delivered(due[0].id, due[0].version)
        .await
        .expect("mark");
    let due = store.due_reports(Millis::now(), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].report.state, ReportState::Error);
    store
        .mark_delivered(due[0].id, due[0].version)
        .await
        .expect("mark");
    // The same desire again is not re-sent.
    store.set_report(&r).await.expect("set");
    assert_eq!(store.undelivered_reports().await.expect("count"), 0);

    // Deliveries are deduplicated.
    let t = push('b');
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
    let dir = tempfile::tempdir().expect("tempdir");
    let forge = arc_forge();
    let runner = FakeRunner::new(Mode::Succeed);
    let q = fake_queue(dir.path(), forge.clone(), runner.clone()).await;
    let store = q.store().clone();
    // Three pushes to repo o/r on different branches, one to o/other.
    for (i, c) in ['a', 'b', 'c'].into_iter().enumerate() {
        let mut t = push(c);
        t.ref_name = format!("refs/heads/b{i}");
        store
            .accept(
                &format!("d{i}"),
                "push",
                Inbound::Trigger(&t, TriggerState::New),
            )
            .await
            .expect("accept");
    }
    let mut t = push('d');
    t.repo = RepoId::github("o/other").expect("repo");
    store
        .accept("d9", "push", Inbound::Trigger(&t, TriggerState::New))
        .await
        .expect("accept");
    q.plan_pending().await.expect("plan");
    // Fairness: with one slot, o/other's build does not wait behind all of o/r's.
    let first = store
        .claim_next_build(Millis::now())
        .await
        .expect("claim")
        .expect("one");
    assert_eq!(first.repo.as_str(), "github:o/r");
    let second = store
        .claim_next_build(Millis::now())
        .await
        .expect("claim")
        .expect("one");
    assert_eq!(
        second.repo.as_str(),
        "github:o/other",
        "the repository with nothing running goes next"
    );
    store
        .requeue(&first.id, Millis::now(), None, false)
        .await
        .expect("requeue");
    store
        .requeue(&second.id, Millis::now(), None, false)
        .await
        .expect("requeue");

    let _tasks = q.start().await.expect("start");
    for c in ['a', 'b', 'c', 'd'] {
        let s = sha(c);
        let f = forge.clone();
        wait_for("final statuses", move || {
            let f = f.clone();
            let s = s.clone();
            async move { last(&f, &s, "packetary") == Some(ReportState::Success) }
        })
        .await;
        let ctx = states(&forge, &sha(c), "packetary/t/hello");
        assert_eq!(
            ctx.first().map(|s| s.0),
            Some(ReportState::Pending),
            "{ctx:?}"
        );
        assert_eq!(
            ctx.last().map(|s| s.0),
            Some(ReportState::Success),
            "{ctx:?}"
        );
        let agg = states(&forge, &sha(c), "packetary");
        assert_eq!(
            agg.first().map(|s| s.0),
            Some(ReportState::Pending),
            "{agg:?}"
        );
    }
    assert_eq!(runner.runs.lock().expect("lock").len(), 4);
    wait_for("an empty outbox", || async {
        store.undelivered_reports().await.expect("count") == 0
    })
    .await;
}

#[tokio::test]
async fn a_new_push_supersedes_the_running_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forge = arc_forge();
    let runner = FakeRunner::new(Mode::Block);
    let q = fake_queue(dir.path(), forge.clone(), runner.clone()).await;
    let store = q.store().clone();
    let _tasks = q.start().await.expect("start");
    store
        .accept(
            "d1",
            "push",
            Inbound::Trigger(&push('a'), TriggerState::New),
        )
        .await
        .expect("accept");
    q.wake();
    wait_for("the first build to run", || async {
        runner.runs.lock().expect("lock").len() == 1
    })
    .await;
    *runner.mode.lock().expect("lock") = Mode::Succeed;
    store
        .accept(
            "d2",
            "push",
            Inbound::Trigger(&push('b'), TriggerState::New),
        )
        .await
        .expect("accept");
    q.wake();
    let f = forge.clone();
    wait_for("both commits to end", move || {
        let f = f.clone();
        async move {
            last(&f, &sha('a'), "packetary") == Some(ReportState::Error)
                && last(&f, &sha('b'), "packetary") == Some(ReportState::Success)
        }
    })
    .await;
    let a = states(&forge, &sha('a'), "packetary/t/hello");
    let (state, desc) = a.last().expect("a status");
    assert_eq!(*state, ReportState::Error);
    assert_eq!(desc, &format!("superseded by {}", sha('b')));
    let builds = store
        .builds_in_state(BuildState::Superseded)
        .await
        .expect("builds");
    assert_eq!(builds.len(), 1);
}

#[tokio::test]
async fn infrastructure_faults_are_retried_then_reported_as_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forge = arc_forge();
    let runner = FakeRunner::new(Mode::InfraError);
    let q = fake_queue(dir.path(), forge.clone(), runner.clone()).await;
    let _tasks = q.start().await.expect("start");
    q.store()
        .accept(
            "d1",
            "push",
            Inbound::Trigger(&push('a'), TriggerState::New),
        )
        .await
        .expect("accept");
    q.wake();
    let f = forge.clone();
    wait_for("the final error", move || {
        let f = f.clone();
        async move { last(&f, &sha('a'), "packetary/t/hello") == Some(ReportState::Error) }
    })
    .await;
    assert_eq!(
        runner.runs.lock().expect("lock").len(),
        2,
        "max_attempts = 2"
    );
    let all = states(&forge, &sha('a'), "packetary/t/hello");
    assert!(
        all.iter()
            .any(|(s, d)| *s == ReportState::Pending && d.contains("retrying")),
        "{all:?}"
    );
    assert_eq!(
        last(&forge, &sha('a'), "packetary"),
        Some(ReportState::Error)
    );
}

#[tokio::test]
async fn running_builds_are_requeued_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // The "crashed" process: planned and claimed a build, then vanished.
        let q = fake_queue(dir.path(), arc_forge(), FakeRunner::new(Mode::Block)).await;
        q.store()
            .accept(
                "d1",
                "push",
                Inbound::Trigger(&push('a'), TriggerState::New),
            )
            .await
            .expect("accept");
        q.plan_pending().await.expect("plan");
        q.store()
            .claim_next_build(Millis::now())
            .await
            .expect("claim")
            .expect("a build");
        q.store().close().await;
    }
    let forge = arc_forge();
    let runner = FakeRunner::new(Mode::Succeed);
    let q = fake_queue(dir.path(), forge.clone(), runner.clone()).await;
    let _tasks = q.start().await.expect("start");
    let f = forge.clone();
    wait_for("the requeued build to succeed", move || {
        let f = f.clone();
        async move { last(&f, &sha('a'), "packetary") == Some(ReportState::Success) }
    })
    .await;
    assert_eq!(runner.runs.lock().expect("lock").len(), 1);
    let b = q.store().recent_builds(10).await.expect("builds");
    assert_eq!(b[0].attempts, 1, "a restart does not count as an attempt");
}

#[tokio::test]
async fn fork_pull_requests_wait_for_a_maintainer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forge = arc_forge();
    forge
        .writers
        .lock()
        .expect("lock")
        .push("maintainer".into());
    let runner = FakeRunner::new(Mode::Succeed);
    let q = fake_queue(dir.path(), forge.clone(), runner.clone()).await;
    let store = q.store().clone();
    let mut t = push('f');
    t.kind = ChangeKind::PullRequest;
    t.pr_number = Some(7);
    t.ref_name = "refs/pull/7/head".into();
    t.from_fork = true;
    store
        .accept(
            "d1",
            "pull_request",
            Inbound::Trigger(&t, TriggerState::New),
        )
        .await
        .expect("accept");
    q.plan_pending().await.expect("plan");
    assert!(store.recent_builds(10).await.expect("builds").is_empty());
    let waiting = store.reports().await.expect("reports");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].report.state, ReportState::Pending);
    assert!(
        waiting[0].report.description.contains("/packetary approve"),
        "{waiting:?}"
    );
    let cmd = |user: &str| CommandRequest {
        repo: t.repo.clone(),
        pr_number: Some(7),
        head: None,
        user: user.into(),
        command: Command::Approve,
        trusted: false,
    };
    // Someone without write permission cannot approve.
    store
        .accept("d2", "issue_comment", Inbound::Command(&cmd("passerby")))
        .await
        .expect("accept");
    q.plan_pending().await.expect("plan");
    assert!(store.recent_builds(10).await.expect("builds").is_empty());
    store
        .accept("d3", "issue_comment", Inbound::Command(&cmd("maintainer")))
        .await
        .expect("accept");
    q.plan_pending().await.expect("plan");
    assert_eq!(store.recent_builds(10).await.expect("builds").len(), 1);
    let _tasks = q.start().await.expect("start");
    let f = forge.clone();
    wait_for("success", move || {
        let f = f.clone();
        async move { last(&f, &sha('f'), "packetary") == Some(ReportState::Success) }
    })
    .await;
}

#[tokio::test]
async fn drain_requeues_builds_still_running_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = FakeRunner::new(Mode::Block);
    let q = fake_queue(dir.path(), arc_forge(), runner.clone()).await;
    let _tasks = q.start().await.expect("start");
    q.store()
        .accept(
            "d1",
            "push",
            Inbound::Trigger(&push('a'), TriggerState::New),
        )
        .await
        .expect("accept");
    q.wake();
    wait_for("the build to run", || async {
        runner.runs.lock().expect("lock").len() == 1
    })
    .await;
    q.drain().await;
    let queued = q
        .store()
        .builds_in_state(BuildState::Queued)
        .await
        .expect("builds");
    assert_eq!(
        queued.len(),
        1,
        "stopped by the shutdown, to run again at the next start"
    );
    let _ = Arc::clone(&runner);
}

/// A fake queue (not started) with one push planned into one queued build of
/// `package` for target `t`.
async fn queue_with_one_build(
    dir: &std::path::Path,
    package: &str,
    spec_path: &str,
) -> (packetary::queue::Queue, packetary::model::BuildId) {
    let q = fake_queue(dir, arc_forge(), FakeRunner::new(Mode::Succeed)).await;
    let store = q.store().clone();
    store
        .accept(
            "d1",
            "push",
            Inbound::Trigger(&push('a'), TriggerState::New),
        )
        .await
        .expect("accept");
    let t = store
        .next_new_trigger()
        .await
        .expect("store")
        .expect("trigger");
    let id = packetary::model::BuildId::generate();
    store
        .insert_builds(
            &t,
            &[packetary::store::NewBuild {
                error: None,
                stage: 0,
                id: id.clone(),
                package: package.into(),
                spec_path: spec_path.into(),
                target: packetary::model::TargetName::parse("t").expect("name"),
            }],
        )
        .await
        .expect("insert");
    (q, id)
}

#[tokio::test]
async fn pages_escape_what_comes_from_repositories() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let evil = "<script>alert(1)</script>";
    let (q, id) = queue_with_one_build(dir.path(), evil, &format!("{evil}/x.spec")).await;
    let router = packetary::web::router(app_state(&q, &["o/*"]), 1 << 20);
    for uri in [
        "/".to_string(),
        format!("/builds/{id}"),
        format!("/?commit={}", sha('a')),
    ] {
        let resp = router
            .clone()
            .oneshot(
                axum::http::Request::get(uri.as_str())
                    .body(axum::body::Body::empty())
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), 200, "{uri}");
        let ct = resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(ct.starts_with("text/html"), "{ct}");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let html = String::from_utf8_lossy(&body);
        assert!(!html.contains(evil), "{uri}: unescaped\n{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{uri}\n{html}"
        );
    }
    for uri in [
        "/builds/nope",
        "/builds/..%2F..%2Fetc",
        &format!("/builds/{id}/logs/..%2Fpacketary.db"),
        &format!("/builds/{id}/artifacts/../../packetary.db"),
    ] {
        let resp = router
            .clone()
            .oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), 404, "{uri}");
    }
}

/// Fails planning with an infrastructure fault the first `n` times.
struct FlakyPlanner(std::sync::Mutex<u32>);

impl packetary::queue::Planner for FlakyPlanner {
    fn plan<'a>(
        &'a self,
        t: &'a Trigger,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Vec<packetary::queue::PlannedBuild>, packetary::queue::PlanError>,
    > {
        Box::pin(async move {
            {
                let mut left = self.0.lock().expect("lock");
                if *left > 0 {
                    *left -= 1;
                    return Err(packetary::queue::PlanError::Infra(
                        "git server unreachable".into(),
                    ));
                }
            }
            FakePlanner.plan(t).await
        })
    }
}

#[tokio::test]
async fn planning_is_retried_after_an_infrastructure_fault() {
    use packetary::queue::Planner;
    let dir = tempfile::tempdir().expect("tempdir");
    let forge = arc_forge();
    let store = Store::open(&dir.path().join("data")).await.expect("store");
    let q = packetary::queue::Queue::new(
        store.clone(),
        forge.clone(),
        Arc::new(FlakyPlanner(std::sync::Mutex::new(1))),
        Arc::new(FakeSources),
        FakeRunner::new(Mode::Succeed),
        queue_config(&dir.path().join("data")),
        Arc::new(packetary::queue::Metrics::default()),
    );
    let _ = FakePlanner.plan(&push('a')).await.expect("plans");
    let _tasks = q.start().await.expect("start");
    store
        .accept(
            "d1",
            "push",
            Inbound::Trigger(&push('a'), TriggerState::New),
        )
        .await
        .expect("accept");
    q.wake();
    let f = forge.clone();
    wait_for("success after a planning retry", move || {
        let f = f.clone();
        async move { last(&f, &sha('a'), "packetary") == Some(ReportState::Success) }
    })
    .await;
    let t = store.triggers().await.expect("triggers");
    assert_eq!(t[0].attempts, 1);
}

/// Plans one good package and one that cannot be built.
struct HalfBrokenPlanner;

impl packetary::queue::Planner for HalfBrokenPlanner {
    fn plan<'a>(
        &'a self,
        _t: &'a Trigger,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Vec<packetary::queue::PlannedBuild>, packetary::queue::PlanError>,
    > {
        Box::pin(async {
            let t = packetary::model::TargetName::parse("t").expect("name");
            Ok(vec![
                packetary::queue::PlannedBuild {
                    package: "hello".into(),
                    spec_path: "hello/hello.spec".into(),
                    target: t.clone(),
                    error: None,
                    stage: 0,
                },
                packetary::queue::PlannedBuild {
                    package: "broken".into(),
                    spec_path: "broken/broken.spec".into(),
                    target: t,
                    error: Some("symlink points outside the repository".into()),
                    stage: 0,
                },
            ])
        })
    }
}

#[tokio::test]
async fn a_package_that_cannot_be_built_fails_alone_and_the_rest_builds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forge = arc_forge();
    let store = Store::open(&dir.path().join("data")).await.expect("store");
    let runner = FakeRunner::new(Mode::Succeed);
    let q = packetary::queue::Queue::new(
        store.clone(),
        forge.clone(),
        Arc::new(HalfBrokenPlanner),
        Arc::new(FakeSources),
        runner,
        queue_config(&dir.path().join("data")),
        Arc::new(packetary::queue::Metrics::default()),
    );
    let _tasks = q.start().await.expect("start");
    store
        .accept(
            "d1",
            "push",
            Inbound::Trigger(&push('b'), TriggerState::New),
        )
        .await
        .expect("accept");
    q.wake();
    let f = forge.clone();
    wait_for(
        "the good package built and the aggregate failed",
        move || {
            let f = f.clone();
            async move {
                last(&f, &sha('b'), "packetary/t/hello") == Some(ReportState::Success)
                    && last(&f, &sha('b'), "packetary") == Some(ReportState::Failure)
            }
        },
    )
    .await;
    assert_eq!(
        last(&forge, &sha('b'), "packetary/t/broken"),
        Some(ReportState::Failure)
    );
}

#[tokio::test]
async fn a_running_build_s_logs_are_served_live() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, id) = queue_with_one_build(dir.path(), "hello", "hello/hello.spec").await;
    let store = q.store().clone();
    let target = packetary::model::TargetName::parse("t").expect("name");
    let running = store
        .claim_next_build(Millis::now())
        .await
        .expect("store")
        .expect("claimed");
    assert_eq!(running.id, id);
    // What the executor writes while the build runs.
    let logs = packetary::build::staging_dir(
        &packetary::queue::results_root(&q.store_dir(), &id),
        &target,
        &id,
    )
    .join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    std::fs::write(logs.join("build.log"), "+ make -j2\ncompiling...\n").expect("write");

    let router = packetary::web::router(app_state(&q, &["o/*"]), 1 << 20);
    let get = |uri: String| {
        let router = router.clone();
        async move {
            let resp = router
                .oneshot(
                    axum::http::Request::get(uri.as_str())
                        .body(axum::body::Body::empty())
                        .expect("req"),
                )
                .await
                .expect("response");
            let status = resp.status();
            let refresh = resp
                .headers()
                .get("refresh")
                .map(|v| v.to_str().expect("ascii").to_string());
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, refresh, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, refresh, text) = get(format!("/builds/{id}/logs/build.log")).await;
    assert_eq!(status, 200);
    assert_eq!(text, "+ make -j2\ncompiling...\n");
    assert_eq!(refresh.as_deref(), Some("5"), "a live log reloads itself");
    let (status, _, html) = get(format!("/builds/{id}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Logs (live)"), "{html}");
    assert!(
        html.contains(&format!("/builds/{id}/logs/build.log")),
        "{html}"
    );
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    let (status, _, _) = get(format!("/builds/{id}/logs/..%2F..%2F..%2Fpacketary.db")).await;
    assert_eq!(status, 404);
}

/// `app` BuildRequires what `lib` builds: the plan puts it one stage later.
struct StagedPlanner;

impl packetary::queue::Planner for StagedPlanner {
    fn plan<'a>(
        &'a self,
        _t: &'a Trigger,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Vec<packetary::queue::PlannedBuild>, packetary::queue::PlanError>,
    > {
        Box::pin(async {
            let t = packetary::model::TargetName::parse("t").expect("name");
            Ok(["lib", "app", "other"]
                .into_iter()
                .map(|p| packetary::queue::PlannedBuild {
                    package: p.into(),
                    spec_path: format!("{p}/{p}.spec").into(),
                    target: t.clone(),
                    error: None,
                    stage: u32::from(p == "app"),
                })
                .collect())
        })
    }
}

/// Records when each package's build starts and ends; each takes a while.
struct TimedRunner(Arc<std::sync::Mutex<Vec<(String, &'static str)>>>);

impl packetary::queue::Runner for TimedRunner {
    fn run(
        &self,
        req: packetary::build::BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<packetary::build::Progress>,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, packetary::build::BuildReport> {
        let name = req.package.label();
        self.0.lock().expect("lock").push((name.clone(), "start"));
        let log = self.0.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            log.lock().expect("lock").push((name, "end"));
            let mut r = packetary::queue::error_report(&req, String::new());
            r.outcome = packetary::model::Outcome::Succeeded {
                srpm: "x.src.rpm".into(),
                rpms: vec![],
            };
            r
        })
    }

    fn cleanup(
        &self,
        _id: &packetary::model::BuildId,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_later_stage_starts_only_after_the_earlier_stage_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forge = arc_forge();
    let store = Store::open(&dir.path().join("data")).await.expect("store");
    let log = Arc::new(std::sync::Mutex::new(vec![]));
    let mut cfg = queue_config(&dir.path().join("data"));
    cfg.parallel = 3;
    let q = packetary::queue::Queue::new(
        store.clone(),
        forge.clone(),
        Arc::new(StagedPlanner),
        Arc::new(FakeSources),
        Arc::new(TimedRunner(log.clone())),
        cfg,
        Arc::new(packetary::queue::Metrics::default()),
    );
    let _tasks = q.start().await.expect("start");
    store
        .accept(
            "d1",
            "push",
            Inbound::Trigger(&push('c'), TriggerState::New),
        )
        .await
        .expect("accept");
    q.wake();
    let f = forge.clone();
    wait_for("all three built", move || {
        let f = f.clone();
        async move { last(&f, &sha('c'), "packetary") == Some(ReportState::Success) }
    })
    .await;
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
