//! Containers of a SIGKILLed `packetary build` are removed by the next run. In its own test
//! binary: any concurrent CLI run would reap the container too and race the assertions.

mod common;

use common::*;

const T: &str = "bookworm-rpmbuild";

#[test]
fn containers_of_a_killed_run_are_reaped_by_the_next() {
    if !docker_or_skip("containers_of_a_killed_run_are_reaped_by_the_next") {
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
    assert_eq!(ps(&label), 1, "the killed run leaves its container");
    let r = packetary(&["build", "quick", "--out", "out2"], w);
    assert_eq!(r.code, 0, "{}", r.all());
    // Other tests run builds concurrently; only containers this run really removed count,
    // so at least ours is reported.
    assert!(
        r.stderr.contains("build container(s) left by killed runs")
            && !r.stderr.contains("removed 0 build"),
        "{}",
        r.all()
    );
    assert_eq!(ps(&label), 0, "the next run removed it");
}
