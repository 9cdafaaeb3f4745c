//! Issue 21: builds as Swarm jobs on the real two-node lab (`swarm_common`): the service's
//! disk shared with no node, inputs fetched and results uploaded over HTTP, output read
//! through the manager, the network only in the dependency phase, nothing left behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{packetary, spec, write};
use crate::swarm_common::{docker_cli, lab, shared, Lab};

const TARGET: &str = "bookworm-rpmbuild";
const LABEL: &str = "org.packetary.build-id";

/// A configuration whose builds run on the lab, served back at the callback host on a free
/// port; the images are built on the host daemon (DOCKER_HOST) and pushed to the lab's
/// registry.
fn config(lab: &Lab, dir: &Path, extra: &str) -> (PathBuf, u16) {
    let port = std::net::TcpListener::bind((lab.callback_host.as_str(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on the callback host")
        .port();
    let path = dir.join("swarm.toml");
    write(
        &path,
        &format!(
            "[build]\nparallel = 6\n\n[server]\nlisten = \"{host}:{port}\"\n\n\
[executor]\nkind = \"swarm\"\ncallback_url = \"http://{host}:{port}\"\nregistry = \"{registry}\"\nmanager = \"{manager}\"\n\n\
[targets.{TARGET}]\nbackend = \"rpmbuild\"\nimage = \"packetary/rpmbuild:bookworm\"\narch = \"x86_64\"\n{extra}",
            host = lab.callback_host,
            registry = lab.registry,
            manager = lab.manager,
        ),
    );
    (path, port)
}

/// `packetary images push` once per test process: the nodes pull the builder by digest.
fn pushed(lab: &Lab) {
    static PUSHED: OnceLock<()> = OnceLock::new();
    PUSHED.get_or_init(|| {
        let d = tempfile::tempdir().expect("tmp");
        let (cfg, _) = config(lab, d.path(), "");
        let run = packetary(
            &["--config", cfg.to_str().expect("utf-8"), "images", "push"],
            d.path(),
        );
        assert_eq!(run.code, 0, "images push:\n{}", run.all());
        assert!(run.stdout.contains("@sha256:"), "{}", run.all());
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

/// No job on the manager, no build container on either node (Swarm removes a removed
/// job's container on its node a moment later).
fn nothing_left(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = docker_cli(
            &lab.manager,
            &["service", "ls", "-q", "--filter", &format!("label={LABEL}")],
        );
        let containers: Vec<String> = [&lab.manager, &lab.worker]
            .iter()
            .map(|d| docker_cli(d, &["ps", "-aq", "--filter", &format!("label={LABEL}")]))
            .collect();
        if jobs.trim().is_empty() && containers.iter().all(|c| c.trim().is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: jobs {jobs:?}, containers {containers:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
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
    let run = packetary(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "build",
            "pkgs",
            "--out",
            out.to_str().expect("utf-8"),
        ],
        d.path(),
    );
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
    nothing_left(lab);
}
