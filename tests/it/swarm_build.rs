//! Issue 21: builds as Swarm jobs on the real two-node lab (`swarm_common`): the service's
//! disk shared with no node, inputs fetched and results uploaded over HTTP, output read
//! through the manager, the network only in the dependency phase, nothing left behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{spec, write};
use crate::swarm_common::{
    build_pkgs, docker_cli, executor_toml, free_callback_port, lab, push_images, shared, Lab,
};

const TARGET: &str = "bookworm-rpmbuild";
const LABEL: &str = "org.packetary.build-id";

/// A configuration whose builds run on the lab, served back at the callback host on a free
/// port; the images are built on the host daemon (DOCKER_HOST) and pushed to the lab's
/// registry.
fn config(lab: &Lab, dir: &Path, extra: &str) -> (PathBuf, u16) {
    let port = free_callback_port(lab);
    let path = dir.join("swarm.toml");
    write(
        &path,
        &format!(
            "[build]\nparallel = 6\n\n[server]\nlisten = \"{host}:{port}\"\n\n{executor}\n\
[targets.{TARGET}]\nbackend = \"rpmbuild\"\nimage = \"packetary/rpmbuild:bookworm\"\narch = \"x86_64\"\n{extra}",
            host = lab.callback_host,
            executor = executor_toml(lab, &format!("http://{}:{port}", lab.callback_host)),
        ),
    );
    (path, port)
}

/// `packetary images push` once per test process: the nodes pull the builder by digest.
fn pushed(lab: &Lab) {
    static PUSHED: OnceLock<()> = OnceLock::new();
    PUSHED.get_or_init(|| {
        let d = tempfile::tempdir().expect("tmp");
        push_images(&config(lab, d.path(), "").0);
    });
}

/// The lab node (`manager`/`worker`) each build's task ran on, from its `root.log`.
fn nodes_of(lab: &Lab, out: &Path) -> Vec<String> {
    let mut nodes = vec![];
    for dir in std::fs::read_dir(out.join(TARGET)).expect("results") {
        let log = dir.expect("entry").path().join("logs/root.log");
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("packetary: task on node "))
            .unwrap_or_else(|| panic!("{} names no node:\n{text}", log.display()));
        nodes.push(
            docker_cli(
                &lab.manager,
                &[
                    "node",
                    "inspect",
                    "--format",
                    "{{index .Spec.Labels \"packetary.node\"}}",
                    id.trim(),
                ],
            )
            .trim()
            .to_string(),
        );
    }
    nodes
}

/// The ids of the builds under `out`: their `build.json`, or their staging directory's name
/// (`.build-<id>`, a build that did not finish).
fn build_ids(out: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(out.join(TARGET))
        .expect("results")
        .flatten()
        .filter_map(|e| {
            if let Some(id) = e.file_name().to_string_lossy().strip_prefix(".build-") {
                return Some(id.to_string());
            }
            let j = std::fs::read_to_string(e.path().join("logs/build.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&j).expect("build.json");
            Some(v["id"].as_str().expect("id").to_string())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// [`swarm_common::nothing_left`] for the builds under `out`.
fn nothing_left(lab: &Lab, out: &Path) {
    crate::swarm_common::nothing_left(lab, &build_ids(out));
}

/// Several packages build on both nodes of the swarm; results and logs come back whole;
/// `%build` cannot reach the network (not even the service the task fetched its inputs
/// from); nothing is left on either node.
#[tokio::test(flavor = "multi_thread")]
async fn packages_build_on_both_nodes_offline_and_leave_nothing() {
    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    pushed(lab);
    let d = tempfile::tempdir().expect("tmp");
    let (cfg, port) = config(lab, d.path(), "");
    let probe = format!(
        "if (exec 3<>/dev/tcp/{}/{port}) 2>/dev/null; then echo PROBE-ONLINE; else echo PROBE-OFFLINE; fi\n\
for i in /sys/class/net/*; do echo \"PROBE-LINK ${{i##*/}} $(cat $i/operstate)\"; done\n\
seq 1 20000 | sed 's/^/line /'",
        lab.callback_host
    );
    for i in 1..=6 {
        let body = if i == 1 { probe.as_str() } else { "true" };
        write(
            &d.path().join(format!("pkgs/p{i}/p{i}.spec")),
            &spec(&format!("p{i}"), "", body),
        );
    }
    let out = d.path().join("out");
    let run = build_pkgs(&cfg, d.path(), &out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("6 of 6 build(s) succeeded")
            || run.stderr.contains("6 of 6 build(s) succeeded"),
        "{}",
        run.all()
    );
    for i in 1..=6 {
        let dir = out.join(TARGET).join(format!("p{i}-1.0-1"));
        for f in [
            format!("p{i}-1.0-1.src.rpm"),
            format!("p{i}-1.0-1.noarch.rpm"),
            "logs/build.json".into(),
            "logs/build.log".into(),
        ] {
            assert!(dir.join(&f).is_file(), "{} missing", dir.join(f).display());
        }
    }
    let dir = out.join(TARGET).join("p1-1.0-1");
    let build_log = std::fs::read_to_string(dir.join("logs/build.log")).expect("build.log");
    assert!(
        build_log.contains("PROBE-OFFLINE"),
        "%build reached the network:\n{build_log}"
    );
    assert!(!build_log.contains("PROBE-ONLINE"));
    assert!(build_log.contains("PROBE-LINK eth0 down"), "{build_log}");
    // The whole output came through the manager, in order.
    let lines: Vec<&str> = build_log
        .lines()
        .filter_map(|l| l.strip_prefix("line "))
        .collect();
    assert_eq!(lines.len(), 20000, "lines of %build's output");
    assert!(lines
        .iter()
        .enumerate()
        .all(|(i, l)| *l == (i + 1).to_string()));
    // build.json names the image by digest in the registry.
    let record = std::fs::read_to_string(dir.join("logs/build.json")).expect("build.json");
    assert!(record.contains("\"image_id\": \"sha256:"), "{record}");
    let mut nodes = nodes_of(lab, &out);
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["manager", "worker"], "both nodes ran builds");
    nothing_left(lab, &out);
}

/// `packetary build` on the lab, as a child process, with its output.
fn build_cmd(cfg: &Path, dir: &Path, out: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(crate::common::bin());
    c.args(["--config"])
        .arg(cfg)
        .args(["build", "pkgs", "--out"])
        .arg(out)
        .current_dir(dir)
        .env_remove("PACKETARY_CONFIG");
    c
}

/// The dependency phase gets the network through the agent's gate (a BuildRequires only
/// Debian's mirror has), and the build phase after it has none again.
#[tokio::test(flavor = "multi_thread")]
async fn the_dependency_phase_alone_gets_the_network() {
    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    pushed(lab);
    let d = tempfile::tempdir().expect("tmp");
    let (cfg, port) = config(lab, d.path(), "");
    write(
        &d.path().join("pkgs/z/z.spec"),
        &spec(
            "z",
            "BuildRequires: zlib-devel",
            &format!(
                "test -f /usr/include/zlib.h\n\
if (exec 3<>/dev/tcp/{}/{port}) 2>/dev/null; then echo PROBE-ONLINE; else echo PROBE-OFFLINE; fi",
                lab.callback_host
            ),
        ),
    );
    let out = d.path().join("out");
    let run = build_pkgs(&cfg, d.path(), &out);
    assert_eq!(run.code, 0, "{}", run.all());
    let logs = out.join(TARGET).join("z-1.0-1/logs");
    let root = std::fs::read_to_string(logs.join("root.log")).expect("root.log");
    assert!(
        root.contains("packetary: network given to the dependency phase"),
        "{root}"
    );
    assert!(
        root.contains("packetary: from Debian: zlib1g-dev"),
        "{root}"
    );
    assert!(root.contains("packetary: network taken away"), "{root}");
    let build = std::fs::read_to_string(logs.join("build.log")).expect("build.log");
    assert!(
        build.contains("PROBE-OFFLINE") && !build.contains("PROBE-ONLINE"),
        "{build}"
    );
    nothing_left(lab, &out);
}

/// The worker dies mid-build (its dockerd, containerd and tasks SIGKILLed): the build it
/// ran is an infrastructure fault that starts again on the other node and succeeds; the
/// command-line run (which retries nothing itself) ends green.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_lost_with_its_node_runs_again_on_another() {
    let Some(lab) = lab() else { return };
    let _worker = crate::swarm_common::exclusive().await;
    pushed(lab);
    let d = tempfile::tempdir().expect("tmp");
    let (cfg, _) = config(lab, d.path(), "");
    for i in 1..=2 {
        write(
            &d.path().join(format!("pkgs/s{i}/s{i}.spec")),
            &spec(&format!("s{i}"), "", "echo slow-build; sleep 25"),
        );
    }
    let out = d.path().join("out");
    let child = build_cmd(&cfg, d.path(), &out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("packetary build");
    // Both builds in their build phase, one of them on the worker (the tasks spread).
    let worker_id = docker_cli(
        &lab.manager,
        &[
            "node",
            "ls",
            "-q",
            "--filter",
            "node.label=packetary.node=worker",
        ],
    )
    .trim()
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let on_worker = loop {
        let staging: Vec<String> = std::fs::read_dir(out.join(TARGET))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                std::fs::read_to_string(e.path().join("logs/root.log"))
                    .ok()
                    .map(|r| {
                        r + &std::fs::read_to_string(e.path().join("logs/build.log"))
                            .unwrap_or_default()
                    })
            })
            .collect();
        let building: Vec<&String> = staging
            .iter()
            .filter(|t| t.contains("slow-build"))
            .collect();
        if building.len() == 2 {
            break building
                .iter()
                .any(|t| t.contains(&format!("task on node {worker_id}")));
        }
        assert!(
            Instant::now() < deadline,
            "the builds never reached %build: {staging:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(on_worker, "Swarm placed neither build on the worker");
    crate::swarm_common::stop_worker(lab);
    let finished = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    crate::swarm_common::start_worker(lab);
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&finished.stdout),
        String::from_utf8_lossy(&finished.stderr)
    );
    assert!(finished.status.success(), "{all}");
    assert!(all.contains("2 of 2 build(s) succeeded"), "{all}");
    let moved: Vec<String> = (1..=2)
        .filter_map(|i| {
            std::fs::read_to_string(out.join(TARGET).join(format!("s{i}-1.0-1/logs/root.log"))).ok()
        })
        .filter(|r| r.contains("the build starts again on another node"))
        .collect();
    assert_eq!(moved.len(), 1, "one build ran again elsewhere: {all}");
    assert!(
        moved[0].contains("its node is down") || moved[0].contains("ended `"),
        "{}",
        moved[0]
    );
    // Back to two ready nodes for the next tests.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker_cli(&lab.manager, &["node", "ls", "--format", "{{.Status}}"])
        .lines()
        .all(|s| s == "Ready")
    {
        assert!(Instant::now() < deadline, "the worker did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }
    nothing_left(lab, &out);
}

/// Time and memory limits are reported as on the local executor, and an interrupt removes
/// the job: in each case the job and its container are gone afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts_out_of_memory_and_interrupts_as_on_the_local_executor() {
    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    pushed(lab);
    let case = |name: &str, body: &str, limits: &str| {
        let d = tempfile::tempdir().expect("tmp");
        let (cfg, _) = config(lab, d.path(), limits);
        write(
            &d.path().join(format!("pkgs/{name}/{name}.spec")),
            &spec(name, "", body),
        );
        (d, cfg)
    };
    // The time limit counts from the start: it covers a node pulling the image too.
    let (d, cfg) = case(
        "sleepy",
        "echo slow-build; sleep 300",
        "timeout = \"25s\"\n",
    );
    let out = d.path().join("out");
    let started = Instant::now();
    let run = build_cmd(&cfg, d.path(), &out).output().expect("build");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(1), "{all}");
    assert!(all.contains("exceeded its time limit of 25s"), "{all}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the time limit was not enforced"
    );
    nothing_left(lab, &out);

    let (d, cfg) = case(
        "hog",
        "head -c 400M /dev/zero | tail -n 1 >/dev/null",
        "memory = \"64MiB\"\n",
    );
    let out = d.path().join("out");
    let run = build_cmd(&cfg, d.path(), &out).output().expect("build");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(1), "{all}");
    assert!(all.contains("memory limit (64MiB)"), "{all}");
    let json = std::fs::read_to_string(out.join(TARGET).join("hog-1.0-1/logs/build.json"))
        .expect("build.json");
    assert!(json.contains("out_of_memory"), "{json}");
    nothing_left(lab, &out);

    let (d, cfg) = case("slow", "echo slow-build; sleep 300", "");
    let out = d.path().join("out");
    let child = build_cmd(&cfg, d.path(), &out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("build");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_dir(out.join(TARGET))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("logs/build.log"))
                .is_ok_and(|l| l.contains("slow-build"))
        })
    {
        assert!(Instant::now() < deadline, "the build never reached %build");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ids = build_ids(&out);
    assert!(std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let ended = child.wait_with_output().expect("wait");
    assert_ne!(ended.status.code(), Some(0));
    for id in ids {
        let jobs = docker_cli(
            &lab.manager,
            &[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label={LABEL}={id}"),
            ],
        );
        assert!(
            jobs.trim().is_empty(),
            "the interrupted build's job is still there"
        );
    }
}

/// A GitHub stand-in taking `test/hello`'s statuses, and the configuration of a
/// `packetary serve` reporting to it whose builds run on the lab (listening on the callback
/// host), with `server_extra` in `[server]`: (the stand-in, the address, the file, the log).
async fn swarm_config_for_serve(
    lab: &Lab,
    dir: &Path,
    server_extra: &str,
) -> (wiremock::MockServer, std::net::SocketAddr, PathBuf, PathBuf) {
    let github = crate::serve_common::github_taking_statuses().await;
    let addr: std::net::SocketAddr = format!("{}:{}", lab.callback_host, free_callback_port(lab))
        .parse()
        .expect("addr");
    let config = crate::serve_common::write_server_config(dir, addr, &github.uri(), server_extra);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&executor_toml(lab, &format!("http://{addr}")));
    std::fs::write(&config, text).expect("config");
    (github, addr, config, dir.join("server.log"))
}

/// `packetary serve` with its builds on the swarm is killed (SIGKILL) while a build runs on
/// a node: the job lives on; the restarted service finds it by its label, reads its output
/// again, takes its upload and ends it `success` without building it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_reattaches_to_its_running_jobs() {
    use crate::serve_common::*;
    use packetary::model::BuildState;
    use packetary::store::Store;

    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    pushed(lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let head = add_slow_package(&repo, "echo slow-build\nsleep 15");

    let (github, addr, config, log) =
        swarm_config_for_serve(lab, dir.path(), "shutdown_grace = \"2s\"").await;
    let mut server = spawn_serve(&config, &log, "info,packetary=debug");
    wait_healthy(addr, &log).await;
    let url = format!("file://{}", repo.display());
    let body = push_payload("test/hello", &url, "main", &"0".repeat(40), &head);
    assert_eq!(
        post_webhook(addr, "push", "swarm-crash-1", &body).await,
        202
    );

    let store = Store::open(&dir.path().join("data")).await.expect("store");
    let deadline = Instant::now() + Duration::from_secs(120);
    let slow_id = loop {
        let running = store
            .builds_in_state(BuildState::Running)
            .await
            .expect("builds");
        if let Some(b) = running
            .iter()
            .find(|b| b.package == "hello-slow" && b.phase.as_deref() == Some("build"))
        {
            break b.id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the slow build never reached %build; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let owner = format!(
        "service/{}/{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("hostname")
            .trim(),
        server.id()
    );
    server.kill().expect("SIGKILL");
    let _ = server.wait();
    let filter = format!("label={LABEL}={slow_id}");
    let job = docker_cli(&lab.manager, &["service", "ls", "-q", "--filter", &filter]);
    assert!(!job.trim().is_empty(), "the job died with the service");
    // A job the killed service left for a build its restart does not pick up (as if it
    // died between a build's end in the store and the job's removal): swept at the start.
    let stray = docker_cli(
        &lab.manager,
        &[
            "service",
            "create",
            "--detach",
            "--restart-condition",
            "none",
            "--label",
            &format!("org.packetary.owner={owner}"),
            "--label",
            &format!("{LABEL}=stray-{}", std::process::id()),
            &format!("{}/packetary/rpmbuild:bookworm", lab.registry),
            "sleep",
            "600",
        ],
    );

    let mut server = spawn_serve(&config, &log, "info,packetary=debug");
    wait_healthy(addr, &log).await;
    let all = wait_final(&github, &head, Duration::from_secs(180)).await;
    let last: std::collections::BTreeMap<String, String> =
        all.iter().map(|s| (s.1.clone(), s.2.clone())).collect();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for context in [
        "packetary/bookworm-rpmbuild/hello-noarch",
        "packetary/bookworm-rpmbuild/hello-slow",
        "packetary",
    ] {
        assert_eq!(
            last.get(context).map(String::as_str),
            Some("success"),
            "{context}: {all:#?}\n{log_text}"
        );
    }
    let builds = store.recent_builds(10).await.expect("builds");
    let slow = builds.iter().find(|b| b.id == slow_id).expect("slow build");
    assert_eq!(slow.attempts, 1, "reattached, not run again: {builds:?}");
    let root = std::fs::read_to_string(
        slow.result_dir
            .as_ref()
            .expect("results")
            .join("logs/root.log"),
    )
    .expect("root.log");
    assert!(root.contains("reattached to Swarm job"), "{root}");
    let strays = docker_cli(
        &lab.manager,
        &[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("id={}", stray.trim()),
        ],
    );
    assert!(
        strays.trim().is_empty(),
        "the killed service's stray job was not swept"
    );
    let job = docker_cli(&lab.manager, &["service", "ls", "-q", "--filter", &filter]);
    assert!(job.trim().is_empty(), "the reattached build's job is left");
    let _ = server.kill();
    let _ = server.wait();
}

/// A pull request's new head supersedes the build of the old one running on the swarm:
/// its job is removed at once (not left to its 120 s), its status says by what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseding_push_removes_the_running_job() {
    use crate::serve_common::*;
    use packetary::model::BuildState;
    use packetary::store::Store;

    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    pushed(lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let (base, slow, fast) = slow_then_fast_pull_request(&repo, "echo slow-build\nsleep 120");

    let (github, addr, config, log) = swarm_config_for_serve(lab, dir.path(), "").await;
    let mut server = spawn_serve(&config, &log, "info,packetary=debug");
    wait_healthy(addr, &log).await;
    let url = format!("file://{}", repo.display());
    let pr = |action: &str, head: &str| pull_request_payload(action, head, &base, &url);
    assert_eq!(
        post_webhook(addr, "pull_request", "spr-1", &pr("opened", &slow)).await,
        202
    );
    let store = Store::open(&dir.path().join("data")).await.expect("store");
    let deadline = Instant::now() + Duration::from_secs(120);
    let old_id = loop {
        let running = store
            .builds_in_state(BuildState::Running)
            .await
            .expect("builds");
        if let Some(b) = running.iter().find(|b| b.phase.as_deref() == Some("build")) {
            break b.id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the first build never reached %build; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let filter = format!("label={LABEL}={old_id}");
    assert!(
        !docker_cli(&lab.manager, &["service", "ls", "-q", "--filter", &filter])
            .trim()
            .is_empty()
    );
    let superseded_at = Instant::now();
    assert_eq!(
        post_webhook(addr, "pull_request", "spr-2", &pr("synchronize", &fast)).await,
        202
    );
    let old = wait_final(&github, &slow, Duration::from_secs(60)).await;
    assert!(
        old.iter()
            .any(|s| s.2 == "error" && s.3 == format!("superseded by {fast}")),
        "{old:#?}"
    );
    while !docker_cli(&lab.manager, &["service", "ls", "-q", "--filter", &filter])
        .trim()
        .is_empty()
    {
        assert!(
            superseded_at.elapsed() < Duration::from_secs(30),
            "the superseded build's job is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new = wait_final(&github, &fast, Duration::from_secs(180)).await;
    assert!(
        new.iter().any(|s| s.1 == "packetary" && s.2 == "success"),
        "{new:#?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A Mock target's warm buildroot is made on the service's own daemon (the host's here), in
/// a container that a killed process may leave there: it goes with its build's cleanup (a
/// restarted service runs it when it picks the build up), and a dead command-line run's
/// goes with the next run's reaping, as jobs do.
#[tokio::test(flavor = "multi_thread")]
async fn buildroot_containers_left_on_the_service_s_daemon_are_removed() {
    use packetary::config::SwarmConfig;
    use packetary::docker::Engine;
    use packetary::executor::SwarmExecutor;
    use packetary::model::BuildId;

    let Some(lab) = lab() else { return };
    let Some(host) = crate::common::docker().await else {
        return;
    };
    let manager = Engine::connect(Some(&lab.manager))
        .await
        .expect("the lab's manager");
    let executor = SwarmExecutor::new(
        manager,
        host,
        SwarmConfig {
            callback_url: "http://127.0.0.1:9".into(),
            registry: lab.registry.clone(),
            manager: Some(lab.manager.clone()),
        },
        "cli/test/1".into(),
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let container = |build: &str, owner: &str| {
        let out = std::process::Command::new("docker")
            .args(["run", "-d", "--network", "none"])
            .args(["--label", &format!("org.packetary.build-id={build}")])
            .args(["--label", &format!("org.packetary.owner={owner}")])
            .args([crate::common::IMAGE, "sleep", "300"])
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let exists = |id: &str| {
        std::process::Command::new("docker")
            .args(["inspect", id])
            .output()
            .expect("docker inspect")
            .status
            .success()
    };
    // A killed service's, for a build its restart picks up.
    let build = BuildId::generate();
    let live = format!("service/{}/{}", hostname.trim(), std::process::id());
    let left = container(build.as_str(), &live);
    executor.cleanup(&build).await;
    assert!(
        !exists(&left),
        "the build's cleanup left its buildroot container"
    );
    // A dead command-line run's.
    let mut gone = std::process::Command::new("true").spawn().expect("true");
    let dead_pid = gone.id();
    gone.wait().expect("wait");
    let dead = format!("cli/{}/{dead_pid}", hostname.trim());
    let orphan = container(BuildId::generate().as_str(), &dead);
    let removed = executor.reap_orphans().await.expect("reap");
    assert!(removed >= 1, "nothing reaped");
    assert!(
        !exists(&orphan),
        "the dead run's buildroot container is still there"
    );
}
