//! The two-node Docker Swarm the Swarm executor's tests run on: `deploy/swarm-lab.sh`, which
//! `tests/run.sh` brings up and exports as `PACKETARY_SWARM_*` variables. A test that needs
//! it asks [`lab`]: under CI a missing lab is a failure (the test must not pass by doing
//! nothing), otherwise the test skips and says why.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The lab, as `deploy/swarm-lab.sh up` wrote it to `$PACKETARY_SWARM_LAB_DIR/env`.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The manager daemon, `unix://…/mgr.sock` (the executor's endpoint).
    pub manager: String,
    /// The worker daemon, `unix://…/wrk.sock` (for looking at the worker directly).
    pub worker: String,
    /// The registry every node and the host daemon name: `127.0.0.1:PORT`.
    pub registry: String,
    /// The address build tasks on both nodes reach a service of this host at.
    pub callback_host: String,
    /// The lab's state directory, for `deploy/swarm-lab.sh stop-worker|start-worker`.
    pub dir: String,
}

const VARS: [&str; 5] = [
    "PACKETARY_SWARM_MANAGER",
    "PACKETARY_SWARM_WORKER",
    "PACKETARY_SWARM_REGISTRY",
    "PACKETARY_SWARM_CALLBACK_HOST",
    "PACKETARY_SWARM_LAB_DIR",
];

/// The lab from the environment (read once), or `None` when it is missing and `CI` is not
/// set. Panics under CI without it: run the suite through `tests/run.sh`.
pub fn lab() -> Option<&'static Lab> {
    static LAB: OnceLock<Result<Lab, String>> = OnceLock::new();
    let found = LAB.get_or_init(|| {
        let mut values = Vec::with_capacity(VARS.len());
        let mut missing = Vec::new();
        for var in VARS {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => values.push(v),
                _ => missing.push(var),
            }
        }
        if !missing.is_empty() {
            return Err(format!("{} not set", missing.join(", ")));
        }
        let [manager, worker, registry, callback_host, dir]: [String; 5] =
            values.try_into().map_err(|_| "bad count".to_string())?;
        Ok(Lab {
            manager,
            worker,
            registry,
            callback_host,
            dir,
        })
    });
    match found {
        Ok(lab) => Some(lab),
        Err(e) if std::env::var_os("CI").is_some() => panic!(
            "{}: CI is set but there is no Swarm lab ({e}): run the suite through tests/run.sh \
             (as root), which brings deploy/swarm-lab.sh up and exports its variables",
            this_test()
        ),
        Err(e) => {
            eprintln!(
                "{}: SKIPPED, no Swarm lab ({e}; tests/run.sh brings it up; set CI=1 to make this a failure)",
                this_test()
            );
            None
        }
    }
}

fn this_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/swarm-lab.sh")
}

/// Runs `deploy/swarm-lab.sh ACTION` on the lab; panics with its output when it fails.
fn lab_script(lab: &Lab, action: &str) {
    let out = Command::new(script())
        .arg(action)
        .env("PACKETARY_SWARM_LAB_DIR", &lab.dir)
        .output()
        .unwrap_or_else(|e| panic!("running {} {action}: {e}", script().display()));
    assert!(
        out.status.success(),
        "deploy/swarm-lab.sh {action} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the worker as a machine dies (SIGKILL to its dockerd, containerd, shims and tasks).
/// Hold [`exclusive`] around it: the other Swarm tests expect a live worker.
pub fn stop_worker(lab: &Lab) {
    lab_script(lab, "stop-worker");
}

/// Starts the worker again on its old state; it rejoins the swarm by itself.
pub fn start_worker(lab: &Lab) {
    lab_script(lab, "start-worker");
}

/// The tests share one worker: those that only need it running hold [`shared`], the one
/// that kills it holds [`exclusive`] (and starts it again before letting go).
static WORKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    WORKER.read().await
}

pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    WORKER.write().await
}

/// `docker -H DAEMON ARGS…`'s standard output; panics with its error output when it fails.
pub fn docker_cli(daemon: &str, args: &[&str]) -> String {
    crate::common::docker_out(&[&["-H", daemon], args].concat())
}

/// Which lab node (`manager` or `worker`, its `packetary.node` label) a task was placed on.
pub fn node_of_task(lab: &Lab, task_id: &str) -> String {
    let node = docker_cli(
        &lab.manager,
        &[
            "inspect",
            "--type",
            "task",
            "--format",
            "{{.NodeID}}",
            task_id,
        ],
    );
    docker_cli(
        &lab.manager,
        &[
            "node",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"packetary.node\"}}",
            node.trim(),
        ],
    )
    .trim()
    .to_string()
}

/// The lab the other Swarm tests rely on: two ready nodes, one manager, labelled for
/// placement (`packetary.node`, `rpm=yes`).
#[tokio::test]
async fn lab_has_two_ready_nodes() {
    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    let nodes = docker_cli(
        &lab.manager,
        &[
            "node",
            "ls",
            "--format",
            "{{.ID}} {{.Status}} {{.Availability}} {{.ManagerStatus}}",
        ],
    );
    let rows: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 2, "two nodes, got:\n{nodes}");
    for row in &rows {
        assert_eq!(&row[1..3], ["Ready", "Active"], "node not ready:\n{nodes}");
    }
    let mut labels: Vec<String> = rows
        .iter()
        .map(|row| {
            docker_cli(
                &lab.manager,
                &[
                    "node",
                    "inspect",
                    "--format",
                    "{{index .Spec.Labels \"packetary.node\"}} {{index .Spec.Labels \"rpm\"}}",
                    row[0],
                ],
            )
            .trim()
            .to_string()
        })
        .collect();
    labels.sort();
    assert_eq!(labels, ["manager yes", "worker yes"], "node labels");
    assert_eq!(
        rows.iter().filter(|r| r.get(3) == Some(&"Leader")).count(),
        1,
        "one manager (the leader):\n{nodes}"
    );
}

/// A free port on the lab's callback host, where a service or a `packetary build` listens
/// for its tasks.
pub fn free_callback_port(lab: &Lab) -> u16 {
    std::net::TcpListener::bind((lab.callback_host.as_str(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on the callback host")
        .port()
}

/// The `[executor]` table of a configuration whose builds run on the lab, their tasks
/// calling back at `callback_url`.
pub fn executor_toml(lab: &Lab, callback_url: &str) -> String {
    format!(
        "[executor]\nkind = \"swarm\"\ncallback_url = \"{callback_url}\"\nregistry = \"{}\"\nmanager = \"{}\"\n",
        lab.registry, lab.manager
    )
}

/// `packetary --config CFG images push`: the nodes pull the builders by digest.
pub fn push_images(cfg: &std::path::Path) {
    let dir = cfg.parent().expect("the configuration's directory");
    let run = crate::common::packetary(
        &["--config", cfg.to_str().expect("utf-8"), "images", "push"],
        dir,
    );
    assert_eq!(run.code, 0, "images push:\n{}", run.all());
    assert!(run.stdout.contains("@sha256:"), "{}", run.all());
}

/// No job on the manager and no build container on either node for the builds `ids`
/// (Swarm removes a removed job's container on its node a moment later).
pub fn nothing_left(lab: &Lab, ids: &[String]) {
    assert!(!ids.is_empty(), "no build to look for");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut jobs = String::new();
        let mut containers = vec![];
        for id in ids {
            let filter = format!("label=org.packetary.build-id={id}");
            jobs += &docker_cli(&lab.manager, &["service", "ls", "-q", "--filter", &filter]);
            for d in [&lab.manager, &lab.worker] {
                containers.push(docker_cli(d, &["ps", "-aq", "--filter", &filter]));
            }
        }
        if jobs.trim().is_empty() && containers.iter().all(|c| c.trim().is_empty()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: jobs {jobs:?}, containers {containers:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `packetary --config CFG build pkgs --out OUT` in `dir`, to its end.
pub fn build_pkgs(
    cfg: &std::path::Path,
    dir: &std::path::Path,
    out: &std::path::Path,
) -> crate::common::Run {
    crate::common::packetary(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "build",
            "pkgs",
            "--out",
            out.to_str().expect("utf-8"),
        ],
        dir,
    )
}
