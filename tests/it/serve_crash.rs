//! Crash test: the real binary is killed with SIGKILL while one build runs and another
//! waits; started again, it finishes both and every status ends final. Then SIGTERM stops
//! it cleanly.

use crate::common;
use crate::serve_common;

use std::process::Command;
use std::time::{Duration, Instant};

use packetary::model::BuildState;
use packetary::store::Store;
use serve_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_build_loses_nothing() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    // A second, slow package that sorts first, so that it runs (in its build phase, inside
    // its container) while the other waits (parallel = 1) when the server is killed.
    let head = add_slow_package(&repo, "sleep 8");

    let github = crate::serve_common::github_taking_statuses().await;
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let data = dir.path().join("data");
    let config = write_server_config(dir.path(), addr, &github.uri(), "shutdown_grace = \"2s\"");
    let log = dir.path().join("server.log");

    let mut server = spawn_serve(&config, &log, "info,packetary=debug");
    wait_healthy(addr, &log).await;
    let url = format!("file://{}", repo.display());
    let body = push_payload("test/hello", &url, "main", &"0".repeat(40), &head);
    assert_eq!(post_webhook(addr, "push", "crash-1", &body).await, 202);

    // Wait for one build running and one queued, then kill -9.
    let store = Store::open(&data).await.expect("store");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut slow_building = None;
    loop {
        let running = store
            .builds_in_state(BuildState::Running)
            .await
            .expect("builds");
        let queued = store
            .builds_in_state(BuildState::Queued)
            .await
            .expect("builds");
        if running.len() == 1 && queued.len() == 1 && running[0].package == "hello-noarch" {
            break;
        }
        if let Some(b) = running
            .first()
            .filter(|b| b.package == "hello-slow" && b.phase.as_deref() == Some("build"))
        {
            slow_building = Some(b.id.clone());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "builds did not start; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill().expect("SIGKILL");
    let _ = server.wait();
    // The slow build's container outlives the server, still in its build phase.
    let slow_container = slow_building.as_ref().map(|id| {
        let out = Command::new("docker")
            .args(["ps", "-q", "--no-trunc", "--filter"])
            .arg(format!("label=org.packetary.build-id={id}"))
            .output()
            .expect("docker ps");
        let cid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            !cid.is_empty(),
            "the slow build's container died with the server"
        );
        cid
    });
    let unfinished = store
        .builds_in_state(BuildState::Running)
        .await
        .expect("builds")
        .len()
        + store
            .builds_in_state(BuildState::Queued)
            .await
            .expect("builds")
            .len();
    assert!(unfinished >= 1, "the kill came too late to test anything");
    // A command-line run meanwhile removes the containers of killed command-line runs,
    // never the service's: the restarted service reattaches to those.
    let cli = dir.path().join("cli");
    common::write(
        &cli.join("quick/quick.spec"),
        &common::spec("quick", "", "true"),
    );
    let r = common::packetary(&["build", "quick", "--out", "out"], &cli);
    assert_eq!(r.code, 0, "{}", r.all());
    if let Some(cid) = &slow_container {
        let out = Command::new("docker")
            .args(["ps", "-q", "--no-trunc", "--filter"])
            .arg(format!("id={cid}"))
            .output()
            .expect("docker ps");
        assert!(
            !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "a command-line run removed the killed service's build container\n{}",
            r.all()
        );
    }

    let mut server = spawn_serve(&config, &log, "info,packetary=debug");
    wait_healthy(addr, &log).await;
    let all = wait_final(&github, &head, Duration::from_secs(120)).await;

    let mut last = std::collections::BTreeMap::new();
    for s in &all {
        last.insert(s.1.clone(), s.2.clone());
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    // What the builds printed, for a failure's message.
    let mut build_logs = String::new();
    for b in store.recent_builds(10).await.expect("builds") {
        if let Some(d) = &b.result_dir {
            let text = std::fs::read_to_string(d.join("logs/build.log")).unwrap_or_default();
            build_logs.push_str(&format!("--- {} build.log:\n{text}\n", b.package));
        }
    }
    let log_text = format!("{log_text}\n{build_logs}");
    assert_eq!(
        last.get("packetary/bookworm-rpmbuild/hello-noarch")
            .map(String::as_str),
        Some("success"),
        "{all:#?}\n{log_text}"
    );
    assert_eq!(
        last.get("packetary/bookworm-rpmbuild/hello-slow")
            .map(String::as_str),
        Some("success"),
        "{all:#?}\n{log_text}"
    );
    assert_eq!(
        last.get("packetary").map(String::as_str),
        Some("success"),
        "{all:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.undelivered_reports().await.expect("count") > 0 {
        assert!(Instant::now() < deadline, "reports left undelivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let builds = store.recent_builds(10).await.expect("builds");
    assert!(
        builds.iter().all(|b| b.attempts == 1),
        "a restart is not an attempt: {builds:?}"
    );
    let leftovers = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!(
            "name=packetary-{}",
            builds
                .iter()
                .find(|b| b.package == "hello-slow")
                .expect("slow")
                .id
        ))
        .output()
        .expect("docker ps");
    assert!(
        leftovers.stdout.is_empty(),
        "the killed build's container is left behind"
    );
    // The build that was in its container when the server died was reattached, not run
    // again: its logs name the same container and hold the phases from before the crash.
    if let Some(cid) = &slow_container {
        let slow = builds
            .iter()
            .find(|b| b.package == "hello-slow")
            .expect("slow");
        let dir = slow.result_dir.as_ref().expect("result dir");
        let root = std::fs::read_to_string(dir.join("logs/root.log")).expect("root.log");
        assert!(
            root.contains(&format!("reattached to container {cid}")),
            "{root}\n{log_text}"
        );
        let build = std::fs::read_to_string(dir.join("logs/build.log")).expect("build.log");
        assert!(
            build.contains("=== srpm phase ===") && build.contains("=== build phase ==="),
            "{build}"
        );
        assert!(
            log_text.contains("reattached to a build container"),
            "{log_text}"
        );
    }
    // No secret in the log.
    assert!(
        !log_text.contains("ghp_crash") && !log_text.contains(SECRET),
        "a secret was logged"
    );

    // SIGTERM: a clean, prompt stop.
    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
}

/// The process dies (a test-only failpoint aborts it, as SIGKILL would) at each point
/// between writes that used to be separate — after a build's results are recorded, after
/// its packages are published, after it ended and before its reports are delivered, and
/// inside a requeue — and is started again. Then: no build lost or built twice, every
/// context's last status final and equal to the ledger's state, the release repository
/// holds exactly what the ledger says was published, and no status is sent twice for one
/// desired state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_point_of_a_builds_life_loses_nothing() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    for point in [
        "finish:recorded",
        "finish:published",
        "finish:ended",
        "run:claimed",
    ] {
        crash_at(point).await;
    }
}

async fn crash_at(point: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let github = crate::serve_common::github_taking_statuses().await;
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let data = dir.path().join("data");
    // A push to `main` publishes into the release `stable`.
    let config = write_server_config(
        dir.path(),
        addr,
        &github.uri(),
        "shutdown_grace = \"2s\"\n[releases.stable]\nbranches = [\"main\"]\ntargets = [\"bookworm-rpmbuild\"]",
    );
    let log = dir.path().join("server.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Run 1 dies at the point. After `run:claimed`, run 2 dies inside the requeue of the
    // build the first left running without a container.
    let mut crashes = vec![point];
    if point == "run:claimed" {
        crashes.push("requeue:before-commit");
    }
    for (i, p) in crashes.iter().enumerate() {
        let mut server = serve_command(&config, &log, "info,packetary=debug")
            .env("PACKETARY_FAILPOINT", p)
            .spawn()
            .expect("spawn");
        if i == 0 {
            wait_healthy(addr, &log).await;
            let url = format!("file://{}", repo.display());
            let body = push_payload("test/hello", &url, "main", &"0".repeat(40), &head);
            assert_eq!(post_webhook(addr, "push", "crash-1", &body).await, 202);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = server.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{p}: the failpoint was never reached\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(!status.success(), "{p}: the server exited by itself");
        assert!(
            log_text().contains(&format!("failpoint {p}: aborting")),
            "{p}: died elsewhere\n{}",
            log_text()
        );
    }

    let mut server = spawn_serve(&config, &log, "info,packetary=debug");
    wait_healthy(addr, &log).await;
    wait_final(&github, &head, Duration::from_secs(120)).await;
    let store = Store::open(&data).await.expect("store");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.undelivered_reports().await.expect("count") > 0 {
        assert!(
            Instant::now() < deadline,
            "{point}: reports left undelivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all: Vec<_> = statuses(&github)
        .await
        .into_iter()
        .filter(|s| s.0 == head)
        .collect();
    let context = |s: &(String, String, String, String, String)| s.1.clone();

    let builds = store.recent_builds(10).await.expect("builds");
    assert_eq!(builds.len(), 1, "{point}: one build planned: {builds:?}");
    let b = &builds[0];
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{point}: {b:?}\n{}",
        log_text()
    );
    assert_eq!(b.attempts, 1, "{point}: a crash is not an attempt");
    // Built once: one start that ran a container (a claim that died before running is
    // requeued and started again).
    let events = store.build_events(&b.id).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let expected: &[&str] = if point == "run:claimed" {
        &[
            "planned", "started", "requeued", "started", "recorded", "ended",
        ]
    } else {
        &["planned", "started", "recorded", "ended"]
    };
    assert_eq!(kinds, expected, "{point}: history of the build");

    // Every context's last status is final and the ledger's.
    let mut last = std::collections::BTreeMap::new();
    for s in &all {
        last.insert(context(s), s.2.clone());
    }
    assert_eq!(
        last.get("packetary/bookworm-rpmbuild/hello-noarch")
            .map(String::as_str),
        Some(b.state.report_state().as_str()),
        "{point}: {all:#?}"
    );
    assert_eq!(
        last.get("packetary").map(String::as_str),
        Some("success"),
        "{point}: {all:#?}"
    );
    // No desired state sent twice: a context's consecutive statuses differ (the same
    // words may come back later as a new desire, e.g. "building" after a requeue).
    let mut previous = std::collections::BTreeMap::new();
    for s in &all {
        let now = (s.2.clone(), s.3.clone());
        assert!(
            previous.insert(context(s), now.clone()) != Some(now),
            "{point}: status sent twice: {s:?}\n{all:#?}"
        );
    }
    // The release holds what the ledger says was published, once.
    let publications = store.publications(&b.id).await.expect("publications");
    assert_eq!(
        publications
            .iter()
            .map(|p| p.repository.as_str())
            .collect::<Vec<_>>(),
        ["stable/bookworm-rpmbuild"],
        "{point}"
    );
    let latest = data.join("repos/stable/bookworm-rpmbuild/latest");
    let mut rpms: Vec<String> = std::fs::read_dir(&latest)
        .expect("latest snapshot")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rpm"))
        .collect();
    rpms.sort();
    assert_eq!(
        rpms,
        [
            "hello-noarch-1.0-1.noarch.rpm",
            "hello-noarch-1.0-1.src.rpm"
        ],
        "{point}"
    );
    assert!(
        b.message
            .as_deref()
            .is_some_and(|m| m.contains("stable/bookworm-rpmbuild")),
        "{point}: {b:?}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
