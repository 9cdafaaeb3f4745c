//! Containers of a SIGKILLed `packetary build` are removed by the next run (by this test's,
//! or by any concurrent CLI run of the suite: either is a run that reaps).

use crate::common;

use common::*;

const T: &str = "bookworm-rpmbuild";

#[test]
fn containers_of_a_killed_run_are_reaped_by_the_next() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(&w.join("pkg/slow.spec"), &spec("slow", "", "sleep 300"));
    write(&w.join("quick/quick.spec"), &spec("quick", "", "true"));
    let mut child = std::process::Command::new(bin())
        .args(["build", "pkg", "--out", "out"])
        .current_dir(w)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for_build_phase(&w.join("out").join(T));
    let pid = child.id();
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let label = format!(
        "label=org.packetary.owner=cli/{}/{pid}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("hostname")
            .trim()
    );
    let ps = |filter: &str| {
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", filter])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // Other tests run builds concurrently in this binary, and any of them may reap the
    // container first: then this run has nothing to remove, but it is gone all the same.
    let left = ps(&label);
    assert!(left <= 1, "{left} containers of one run");
    let r = packetary(&["build", "quick", "--out", "out2"], w);
    assert_eq!(r.code, 0, "{}", r.all());
    if left == 1 && !r.stderr.contains("build(s) left by killed runs") {
        eprintln!("a concurrent run reaped the killed run's container first");
    }
    assert_eq!(ps(&label), 0, "the next run removed it");
}

/// What a restarted service relies on to reattach: the output and exit code of a build
/// container's main process can still be read, from its start, after it ended unobserved.
#[tokio::test]
async fn output_and_exit_code_of_an_unobserved_container_can_be_replayed() {
    let Some(engine) = docker().await else {
        return;
    };
    let spec = packetary::docker::ContainerSpec {
        name: format!("packetary-replay-test-{}", std::process::id()),
        image: IMAGE.into(),
        cmd: Some(vec![
            "bash".into(),
            "-c".into(),
            // Like the driver: one stream, so that the order holds.
            "exec 2>&1; echo first; echo second >&2; exit 7".into(),
        ]),
        labels: [(
            packetary::docker::LABEL_BUILD.to_string(),
            "replay-test".to_string(),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let id = engine.create(&spec).await.expect("create");
    // Started without anyone attached, as a build whose service died.
    engine.start(&id).await.expect("start");
    let exit = packetary::docker::ExitHandle::Container(id.clone());
    let code = engine.exit_code(&exit).await.expect("exit code");
    let mut stream = engine.replay(&id);
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(chunk) = stream.next_chunk().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
    })
    .await;
    let again = engine.exit_code(&stream.exit()).await.expect("exit code");
    engine.remove(&id).await.expect("remove");
    assert!(read.is_ok(), "the replay of an exited container must end");
    assert_eq!((code, again), (7, 7));
    assert_eq!(String::from_utf8_lossy(&out), "first\nsecond\n");
}
