//! Issue 22: createrepo_c reads build output, so its containers are confined like builds:
//! every capability dropped, `no-new-privileges`, a memory limit, and a time limit at
//! which a hung one is stopped. Real Docker: `local_repo` (the executor's repositories)
//! runs in an image whose `createrepo_c` reports what it was given.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

const FAKE: &str = "packetary-test/fake-createrepo:1";

/// The builder's image with a `createrepo_c` that writes its capabilities, its
/// no-new-privileges flag and its memory limit into the repository directory.
fn fake_createrepo_image() {
    let mut child = std::process::Command::new("docker")
        .args(["build", "-q", "-t", FAKE, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    let script = r#"#!/bin/sh
for d in "$@"; do :; done
{ grep -E '^(CapEff|NoNewPrivs):' /proc/self/status
  cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
} > "$d/confined.txt"
"#;
    use base64::Engine as _;
    let dockerfile = format!(
        "FROM {IMAGE}\nRUN echo {} | base64 -d > /usr/local/bin/createrepo_c && chmod 755 /usr/local/bin/createrepo_c\n",
        base64::engine::general_purpose::STANDARD.encode(script)
    );
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), dockerfile.as_bytes())
        .expect("write Dockerfile");
    drop(child.stdin.take());
    assert!(
        child.wait().expect("docker build").success(),
        "docker build"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_createrepo_container_has_no_capabilities_nor_new_privileges_and_bounded_memory() {
    let Some(engine) = docker().await else {
        return;
    };
    tokio::task::spawn_blocking(fake_createrepo_image)
        .await
        .expect("image");
    let work = tempfile::tempdir().expect("tmp");
    let pkg = work.path().join("a-1-1.noarch.rpm");
    std::fs::write(&pkg, "not really an rpm").expect("pkg");
    let dir = work.path().join("repo");
    packetary::executor::local_repo(&engine, FAKE, &dir, &[pkg])
        .await
        .expect("indexed");
    assert_confined(&dir);
}

/// What the fake `createrepo_c` saw in `dir`: no capability, no new privileges, the tool
/// memory limit.
fn assert_confined(dir: &std::path::Path) {
    let seen = std::fs::read_to_string(dir.join("confined.txt")).expect("the fake ran");
    assert!(seen.contains("CapEff:\t0000000000000000"), "{seen}");
    assert!(seen.contains("NoNewPrivs:\t1"), "{seen}");
    let limit = packetary::docker::TOOL_MEMORY_BYTES.to_string();
    assert!(seen.lines().any(|l| l.trim() == limit), "{seen}");
}

/// The other call site: a release's publication (`repos::RepoDir::publish`, what
/// `publish_release` and the queue's publisher run) indexes its snapshot in the same
/// confined container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_publication_indexes_in_a_confined_container() {
    let Some(engine) = docker().await else {
        return;
    };
    tokio::task::spawn_blocking(fake_createrepo_image)
        .await
        .expect("image");
    let work = tempfile::tempdir().expect("tmp");
    let out = work.path().join("rpms");
    std::fs::create_dir_all(&out).expect("dir");
    let rpms = {
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            crate::repos::make_rpms(&out, &[("confined", "1.0", "1")], "index")
        })
        .await
        .expect("rpms")
    };
    let repo = packetary::repos::RepoDir::new(work.path().join("release"));
    let indexer = packetary::repos::Indexer {
        engine,
        image: FAKE.into(),
    };
    let published = repo
        .publish(
            &indexer,
            &rpms,
            packetary::repos::Policy::Release,
            10,
            &Default::default(),
        )
        .await
        .expect("published");
    let packetary::repos::Published::Snapshot { id, .. } = published else {
        panic!("nothing published: {published:?}");
    };
    assert_confined(&repo.snapshot_dir(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_tool_container_is_stopped_at_its_time_limit() {
    let Some(engine) = docker().await else {
        return;
    };
    let (spec, cmd) = packetary::docker::tool_container(
        format!(
            "packetary-test-hung-{}",
            packetary::model::BuildId::generate()
        ),
        IMAGE,
        Default::default(),
        vec![],
        vec!["sleep".into(), "600".into()],
    );
    let t0 = Instant::now();
    let e = engine
        .run_once_within(&spec, cmd, Duration::from_secs(2))
        .await
        .expect_err("stopped");
    assert!(e.to_string().contains("did not finish within 2s"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={}", spec.name)])
        .output()
        .expect("docker ps");
    assert!(left.stdout.is_empty(), "the container is removed");
}
