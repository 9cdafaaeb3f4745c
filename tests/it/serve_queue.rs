//! The store and the queue with fake planner, sources and runner: ordering of statuses,
//! supersede, retries, recovery after a crash, fork approval. The queue's tests are stories
//! told to a [`QueueTester`].

use crate::serve_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use packetary::executor::provenance::{self, InputsError, Provenance, RepoRecord};
use packetary::executor::{BuildReport, BuildRequest, DepsCache, Progress};
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
async fn pages_of_private_repositories_need_the_page_token() {
    use tower::ServiceExt;
    let t = QueueTester::new(Mode::Succeed).await;
    let id = t
        .insert_build("secret-pkg", "secret-pkg/secret-pkg.spec")
        .await;
    let mut state = serve_common::app_state(t.queue(), &["o/*"]);
    state.access = std::sync::Arc::new(packetary::web::access::Access::new(
        vec!["github:o/*".into()],
        Some(packetary::config::Secret::new("page-s3cret")),
    ));
    let router = packetary::web::router(state, 1 << 20);
    let send = |req: axum::http::Request<axum::body::Body>| {
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.expect("response");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let get = |uri: String, auth: Option<(&'static str, String)>| {
        let mut r = axum::http::Request::get(uri);
        if let Some((k, v)) = auth {
            r = r.header(k, v);
        }
        r.body(axum::body::Body::empty()).expect("req")
    };
    for uri in [
        format!("/builds/{id}"),
        format!("/builds/{id}/logs/build.log"),
        format!("/builds/{id}/artifacts/x.rpm"),
    ] {
        let (status, _, body) = send(get(uri.clone(), None)).await;
        assert_eq!(status, 401, "{uri}: {body}");
        assert!(body.contains("/login?next="), "{body}");
        let (status, _, _) = send(get(
            uri.clone(),
            Some(("authorization", "Bearer wrong".into())),
        ))
        .await;
        assert_eq!(status, 401, "{uri} with a wrong token");
    }
    let (status, _, _) = send(get(
        format!("/builds/{id}"),
        Some(("authorization", "Bearer page-s3cret".into())),
    ))
    .await;
    assert_eq!(status, 200);
    let (_, _, index) = send(get("/".into(), None)).await;
    assert!(
        !index.contains("secret-pkg"),
        "listed without the token: {index}"
    );

    // Logging in sets the cookie, which then shows the private builds.
    let login = |token: &str, next: &str| {
        axum::http::Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(format!("token={token}&next={next}")))
            .expect("req")
    };
    let (status, _, _) = send(login("wrong", "/")).await;
    assert_eq!(status, 401);
    let (status, headers, _) = send(login("page-s3cret", "%2F%2Fevil.example%2F")).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/", "an open redirect");
    let cookie = headers["set-cookie"].to_str().expect("ascii").to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_string();
    let (_, _, index) = send(get("/".into(), Some(("cookie", pair)))).await;
    assert!(index.contains("secret-pkg"), "{index}");
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

#[tokio::test]
async fn pages_escape_what_comes_from_repositories() {
    let t = QueueTester::new(Mode::Succeed).await;
    let evil = "<script>alert(1)</script>";
    let id = t.insert_build(evil, &format!("{evil}/x.spec")).await;
    for uri in [
        "/".to_string(),
        format!("/builds/{id}"),
        format!("/?commit={}", sha('a')),
    ] {
        let page = t.get(&uri).await;
        assert_eq!(page.status, 200, "{uri}");
        let ct = page.content_type.expect("content-type");
        assert!(ct.starts_with("text/html"), "{ct}");
        let html = page.body;
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
        assert_eq!(t.get(uri).await.status, 404, "{uri}");
    }
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
                },
                PlannedBuild {
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

/// A running build's page and log come from the runner (`Runner::live_log`), not from a
/// directory on the service's disk; only the allow-listed logs are asked for.
#[tokio::test]
async fn a_running_build_s_logs_are_served_live() {
    let t = QueueTester::new(Mode::Succeed).await;
    let id = t.insert_build("hello", "hello/hello.spec").await;
    let running = t.claim().await;
    assert_eq!(running.id, id);
    // What the runner has of the build's log: not on the service's disk (an executor
    // elsewhere keeps its logs elsewhere), asked through `Runner::live_log`.
    t.set_live_log(&id, "build.log", "+ make -j2\ncompiling...\n");
    t.set_live_log(&id, "secret.log", "not a live log's name");

    let log = t.get(&format!("/builds/{id}/logs/build.log")).await;
    assert_eq!(log.status, 200);
    assert_eq!(log.body, "+ make -j2\ncompiling...\n");
    assert_eq!(
        log.refresh.as_deref(),
        Some("5"),
        "a live log reloads itself"
    );
    let page = t.get(&format!("/builds/{id}")).await;
    assert_eq!(page.status, 200);
    let html = page.body;
    assert!(html.contains("Logs (live)"), "{html}");
    assert!(
        html.contains(&format!("/builds/{id}/logs/build.log")),
        "{html}"
    );
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(!html.contains("root.log"), "not written yet: {html}");
    assert!(!html.contains("secret.log"), "{html}");
    let other = t.get(&format!("/builds/{id}/logs/secret.log")).await;
    assert_eq!(
        other.status, 404,
        "only the allow-listed logs are asked for"
    );
    let escape = t
        .get(&format!("/builds/{id}/logs/..%2F..%2F..%2Fpacketary.db"))
        .await;
    assert_eq!(escape.status, 404);
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

/// A change's package repository is as private as its project, whatever the depth of the
/// project's path (Gerrit's `team/secret/specs`, not only GitHub's `owner/repo`).
#[tokio::test]
async fn change_repositories_of_private_projects_need_the_page_token() {
    use tower::ServiceExt;
    let t = QueueTester::new(Mode::Succeed).await;
    let mut state = serve_common::app_state(t.queue(), &["o/*"]);
    state.access = std::sync::Arc::new(packetary::web::access::Access::new(
        vec!["gerrit:team/secret/specs".into()],
        Some(packetary::config::Secret::new("page-s3cret")),
    ));
    let repo = state
        .data_dir
        .join("repos/changes/gerrit/team/secret/specs/5/t1");
    std::fs::create_dir_all(repo.join("000001/repodata")).expect("mkdir");
    std::fs::write(repo.join(".lock"), "").expect("lock");
    std::fs::write(repo.join("000001/repodata/repomd.xml"), "<repomd/>").expect("repomd");
    std::os::unix::fs::symlink("000001", repo.join("latest")).expect("latest");
    let router = packetary::web::router(state, 1 << 20);
    let status = |uri: &str, token: Option<&str>| {
        let router = router.clone();
        let mut r = axum::http::Request::get(uri);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let req = r.body(axum::body::Body::empty()).expect("req");
        async move {
            router
                .oneshot(req)
                .await
                .expect("response")
                .status()
                .as_u16()
        }
    };
    for uri in [
        "/repos/changes/gerrit/team/secret/specs/5/t1/latest/repodata/repomd.xml",
        "/repos/changes/gerrit/team/secret/specs/5/t1.repo",
    ] {
        assert_eq!(status(uri, None).await, 401, "{uri} without the token");
        assert_eq!(status(uri, Some("wrong")).await, 401, "{uri}, wrong token");
        assert_eq!(status(uri, Some("page-s3cret")).await, 200, "{uri}");
    }
}

/// Reads a build's inputs (counting each read) and "builds" by writing a results directory
/// whose `build.json` is the report, with the record the request carried.
#[derive(Default, Clone)]
struct InputsRunner {
    /// Each read: the build and the inputs answered.
    reads: Arc<Mutex<Vec<(BuildId, Provenance)>>>,
    /// Each run: the build and the inputs its request carried.
    runs: Arc<Mutex<Vec<Carried>>>,
    /// Each run's dependency cache.
    caches: Arc<Mutex<Vec<DepsCache>>>,
}

type Carried = (BuildId, Option<Provenance>);

/// The inputs the fake reads: the same for every build of a package.
fn fake_inputs(req: &BuildRequest) -> Provenance {
    let mut p = Provenance {
        tree_digest: format!("sha256:tree-of-{}", req.package.label()),
        source_date_epoch: 1_700_000_000,
        backend: req.target.backend,
        image: req.target.image.clone(),
        image_id: Some("sha256:image".into()),
        arch: req.target.arch.clone(),
        macros: req.target.rpm_defines(),
        releasever: req.target.releasever.clone(),
        repositories: vec![RepoRecord {
            name: "base".into(),
            url: "https://repo.test/base".into(),
            snapshot: Some("sha256:snapshot".into()),
        }],
        spec: req.package.relative_spec(),
        source_dir: "hello".into(),
        setup: provenance::setup_digest(&req.target),
        input_digest: String::new(),
    };
    p.input_digest = provenance::input_digest(&p);
    p
}

impl Runner for InputsRunner {
    fn inputs(
        &self,
        req: &BuildRequest,
    ) -> BoxFuture<'static, Result<Option<Provenance>, InputsError>> {
        let p = fake_inputs(req);
        self.reads
            .lock()
            .expect("lock")
            .push((req.id.clone(), p.clone()));
        Box::pin(async move { Ok(Some(p)) })
    }

    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        self.runs
            .lock()
            .expect("lock")
            .push((req.id.clone(), req.inputs.clone()));
        self.caches
            .lock()
            .expect("lock")
            .push(req.deps_cache.clone());
        Box::pin(async move {
            let dir = req.out_root.join("t/hello-1-1");
            std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
            for f in ["hello-1-1.src.rpm", "hello-1-1.noarch.rpm"] {
                std::fs::write(dir.join(f), f).expect("write");
            }
            let mut r = error_report(&req, String::new());
            r.provenance = req.inputs.clone();
            r.dir = dir.clone();
            r.outcome = Outcome::Succeeded {
                source: dir.join("hello-1-1.src.rpm"),
                binaries: vec![dir.join("hello-1-1.noarch.rpm")],
            };
            let json = serde_json::to_vec_pretty(&r).expect("json");
            std::fs::write(dir.join("logs/build.json"), json).expect("write");
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The scheduler reads a build's inputs once, through the runner: the digest it stores
/// for build avoidance is the one in the record the build's `build.json` keeps, and a
/// later build with the same inputs reuses that result without running (its own
/// `build.json`, read back typed, has the same record).
#[tokio::test]
async fn inputs_are_read_once_and_key_both_reuse_and_the_record() {
    let runner = InputsRunner::default();
    let t = QueueTester::builder(Mode::Succeed)
        .runner(runner.clone())
        .build()
        .await;
    t.start().await;
    t.push('a').await;
    t.wait_status('a', HELLO, Success).await;
    let b1 = t.builds().await.remove(0);
    {
        let reads = runner.reads.lock().expect("lock");
        assert_eq!(reads.len(), 1, "inputs read once per build: {reads:?}");
        assert_eq!(reads[0].0, b1.id);
        let runs = runner.runs.lock().expect("lock");
        assert_eq!(runs.len(), 1, "{runs:?}");
        // The run was given exactly what was read.
        assert_eq!(runs[0].1.as_ref(), Some(&reads[0].1));
    }
    let dir1 = b1.result_dir.clone().expect("results directory");
    let record1: BuildReport = serde_json::from_str(
        &std::fs::read_to_string(dir1.join("logs/build.json")).expect("build.json"),
    )
    .expect("a typed record");
    let digest = record1.provenance.expect("provenance").input_digest;
    // The digest the store keys reuse with is the record's.
    let found = t
        .store()
        .succeeded_with_digest(&digest, &b1.target, &b1.repo, b1.pr_number)
        .await
        .expect("store");
    assert_eq!(found.map(|f| f.0), Some(b1.id.clone()));

    // A new commit, the same package files: reused, not run.
    t.push('b').await;
    t.wait_status('b', HELLO, Success).await;
    let b2 = t.builds().await.remove(0);
    assert_ne!(b2.id, b1.id);
    assert_eq!(
        runner.runs.lock().expect("lock").len(),
        1,
        "reused, not run"
    );
    let reads: Vec<BuildId> = runner
        .reads
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(reads, vec![b1.id.clone(), b2.id.clone()]);
    let last = t.statuses('b', HELLO).pop().expect("a status");
    assert_eq!(last.1, format!("reused from {}", b1.id));
    let dir2 = b2.result_dir.clone().expect("results directory");
    let record2: BuildReport = serde_json::from_str(
        &std::fs::read_to_string(dir2.join("logs/build.json")).expect("build.json"),
    )
    .expect("a typed record");
    assert_eq!(record2.id, b2.id);
    assert_eq!(record2.reused_from.as_ref(), Some(&b1.id));
    assert_eq!(
        record2.provenance.map(|p| p.input_digest),
        Some(digest.clone())
    );
}

/// Issue 22 (M1): build avoidance follows trust. With the same inputs, a push does not take
/// a fork pull request's results (the push's packages are published), another repository's
/// results are never taken, and a build of a pull request may take a push's.
#[tokio::test]
async fn reuse_never_takes_results_of_lower_trust_or_another_repository() {
    let runner = InputsRunner::default();
    let t = QueueTester::builder(Mode::Succeed)
        .runner(runner.clone())
        .build()
        .await;
    t.allow_writer("maintainer");
    t.start().await;
    let runs = || runner.runs.lock().expect("lock").len();
    // A fork's pull request, approved, builds first.
    t.pull_request_from_fork(7, 'f').await;
    t.comment(7, "maintainer", Command::Approve { commit: None })
        .await;
    t.wait_status('f', HELLO, Success).await;
    assert_eq!(runs(), 1);
    // A push with the same inputs builds anew.
    t.push('a').await;
    t.wait_status('a', HELLO, Success).await;
    assert_eq!(runs(), 2, "a push took a fork's results");
    // Another repository with the same inputs builds anew too.
    t.push_to("o/other", "main", 'b').await;
    t.wait_status('b', HELLO, Success).await;
    assert_eq!(runs(), 3, "results taken across repositories");
    // A later push of the same repository takes the push's results.
    t.push('c').await;
    t.wait_status('c', HELLO, Success).await;
    assert_eq!(runs(), 3, "a push's results not reused by a push");
    let last = t.statuses('c', HELLO).pop().expect("a status");
    assert!(last.1.starts_with("reused from "), "{last:?}");
    // Issue 22 (H1): the fork's build shared no dependency cache; each repository's pushes
    // share their own.
    assert_eq!(
        *runner.caches.lock().expect("lock"),
        vec![
            DepsCache::None,
            DepsCache::Shared("github:o/r".into()),
            DepsCache::Shared("github:o/other".into()),
        ]
    );
}

/// An RPM file whose header provides `names` (a lead, an empty signature header, and a
/// header with the PROVIDENAME tag only): what the host's header reader reads.
fn rpm_providing(names: &[&str]) -> Vec<u8> {
    let mut store = Vec::new();
    for n in names {
        store.extend(n.as_bytes());
        store.push(0);
    }
    let mut out = vec![0xed, 0xab, 0xee, 0xdb];
    out.resize(96, 0);
    for (n, size) in [(0u32, 0u32), (1, store.len() as u32)] {
        out.extend([0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0]);
        out.extend(n.to_be_bytes());
        out.extend(size.to_be_bytes());
    }
    for w in [1047u32, 8, 0, names.len() as u32] {
        out.extend(w.to_be_bytes());
    }
    out.extend(store);
    out
}

/// Builds `hello` at once; the n-th build's binary RPM provides `cap<n>`.
#[derive(Default, Clone)]
struct ProvidingRunner {
    runs: Arc<Mutex<usize>>,
}

impl Runner for ProvidingRunner {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let n = {
            let mut runs = self.runs.lock().expect("lock");
            *runs += 1;
            *runs
        };
        Box::pin(async move {
            let dir = req.out_root.join("t/hello-1-1");
            std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
            std::fs::write(dir.join("hello-1-1.src.rpm"), "src").expect("write");
            let rpm = dir.join("hello-1-1.x86_64.rpm");
            std::fs::write(&rpm, rpm_providing(&[&format!("cap{n}")])).expect("write");
            let mut r = error_report(&req, String::new());
            r.dir = dir.clone();
            r.outcome = Outcome::Succeeded {
                source: dir.join("hello-1-1.src.rpm"),
                binaries: vec![rpm],
            };
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Issue 22 (lower): the Provides that order a repository's plans are learned from its
/// pushes only; a fork's pull request does not overwrite them.
#[tokio::test]
async fn provides_are_learned_from_pushes_not_from_pull_requests() {
    let t = QueueTester::builder(Mode::Succeed)
        .runner(ProvidingRunner::default())
        .build()
        .await;
    t.allow_writer("maintainer");
    t.start().await;
    let learned = || async {
        let repo = RepoId::github("o/r").expect("repo");
        let target = packetary::model::TargetName::parse("t").expect("t");
        t.store()
            .learned_provides(&repo, &target)
            .await
            .expect("store")
    };
    t.push('a').await;
    t.wait_status('a', HELLO, Success).await;
    assert_eq!(
        learned().await.get("hello"),
        Some(&vec!["cap1".to_string()])
    );
    t.pull_request_from_fork(7, 'f').await;
    t.comment(7, "maintainer", Command::Approve { commit: None })
        .await;
    t.wait_status('f', HELLO, Success).await;
    assert_eq!(
        learned().await.get("hello"),
        Some(&vec!["cap1".to_string()]),
        "a pull request's packages reordered the branch's plans"
    );
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
