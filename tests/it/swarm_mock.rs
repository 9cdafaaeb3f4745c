//! Issue 21: a Mock target builds through the Swarm on the real two-node lab
//! (`swarm_common`): the Mock image pushed by `packetary images push`, the buildroot
//! repository reached by HTTP only (a directory is on no node), Mock's SYS_ADMIN allowed by
//! the agent because the lab's daemons give every task a private cgroup namespace
//! (`deploy/swarm-lab.sh`), the warm buildroot made once on the service's daemon and pulled
//! by the nodes, Mock's logs back, nothing left.
//! And the agent's refusal on a daemon that runs containers in the host's cgroup namespace.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;

use crate::common::{docker_available, spec, write};
use crate::swarm_common::{
    build_pkgs, docker_cli, executor_toml, free_callback_port, lab, nothing_left, push_images,
    shared, Lab,
};

const TARGET: &str = "debian12-mock";
const IMAGE: &str = "packetary/mock:debian-test";

/// The Mock test image on the host daemon and its buildroot repository (a directory of the
/// host), made by `images/mock-debian-test/build.sh` (through `build_mock`, once per process).
fn buildroot_repo() -> PathBuf {
    let repo = crate::build_mock::mock_image().join("repo");
    assert!(
        repo.join("repodata/repomd.xml").is_file(),
        "build.sh made no repository at {}",
        repo.display()
    );
    repo
}

/// The buildroot repository over HTTP on the lab's callback host, one server for the test
/// process (on a thread and runtime of its own): every test's target has the same URL, so
/// the same warm buildroot, made once.
fn repo_server(lab: &Lab) -> &'static RepoServer {
    static SERVER: OnceLock<RepoServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (host, dir) = (lab.callback_host.clone(), buildroot_repo());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tx.send(serve_dir(&host, dir).await).expect("send");
                // Serves for as long as the test process runs.
                std::future::pending::<()>().await
            });
        });
        rx.recv().expect("the repository server started")
    })
}

/// How many buildroot RPMs the repository server has sent.
fn rpms_sent(server: &RepoServer) -> usize {
    server
        .sent
        .lock()
        .expect("lock")
        .iter()
        .filter(|p| p.ends_with(".rpm"))
        .count()
}

/// A static HTTP server of one directory on the lab's callback host (what the nodes reach),
/// naming the files it sent; it serves while its runtime runs.
struct RepoServer {
    url: String,
    sent: Arc<Mutex<Vec<String>>>,
}

async fn serve_dir(host: &str, dir: PathBuf) -> RepoServer {
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/repo/{*path}",
            axum::routing::get(
                |State((dir, sent)): State<(PathBuf, Arc<Mutex<Vec<String>>>)>,
                 UrlPath(path): UrlPath<String>| async move {
                    if path.split('/').any(|s| s.is_empty() || s.starts_with('.')) {
                        return Err(StatusCode::NOT_FOUND);
                    }
                    // Streamed: the buildroot RPM is hundreds of MB.
                    let file = tokio::fs::File::open(dir.join(&path))
                        .await
                        .map_err(|_| StatusCode::NOT_FOUND)?;
                    let len = file
                        .metadata()
                        .await
                        .map_err(|_| StatusCode::NOT_FOUND)?
                        .len();
                    sent.lock().expect("lock").push(path);
                    Ok((
                        [(axum::http::header::CONTENT_LENGTH, len.to_string())],
                        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
                    ))
                },
            ),
        )
        .with_state((dir, sent.clone()));
    let listener = tokio::net::TcpListener::bind((host, 0))
        .await
        .expect("bind the repository server on the callback host");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    RepoServer {
        url: format!("http://{host}:{port}/repo/"),
        sent,
    }
}

/// A configuration whose Mock builds run on the lab, with the buildroot repository at
/// `repo_url`; the callback on a free port of the callback host, which the tasks are told
/// to reach at `callback_url` when given.
fn config(lab: &Lab, dir: &Path, repo_url: &str, callback_url: Option<&str>) -> PathBuf {
    let port = free_callback_port(lab);
    let path = dir.join("swarm.toml");
    let callback = callback_url
        .map(str::to_string)
        .unwrap_or_else(|| format!("http://{}:{port}", lab.callback_host));
    write(
        &path,
        &format!(
            "[server]\nlisten = \"{host}:{port}\"\n\n{executor}\n\
[targets.{TARGET}]\nbackend = \"mock\"\nimage = \"{IMAGE}\"\narch = \"x86_64\"\nreleasever = \"12\"\n\
chroot_setup = \"install packetary-debian-buildroot\"\n\
repos = [{{ name = \"buildroot\", url = \"{repo_url}\" }}]\n",
            host = lab.callback_host,
            executor = executor_toml(lab, &callback),
        ),
    );
    path
}

/// `packetary images push` of the Mock image, once per test process.
fn pushed(lab: &Lab) {
    static PUSHED: OnceLock<()> = OnceLock::new();
    PUSHED.get_or_init(|| {
        let d = tempfile::tempdir().expect("tmp");
        push_images(&config(lab, d.path(), "http://unused.invalid/", None));
    });
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A Mock build as a Swarm job: the image by digest from the lab's registry, its
/// buildroot installed once from the repository served over HTTP (on the service's daemon,
/// then pushed), Mock's mounts allowed in the task's private cgroup namespace; SRPM, RPM and
/// Mock's logs come back; a second build installs no buildroot; nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_mock_target_builds_on_the_swarm() {
    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    let lab2 = lab.clone();
    let server = tokio::task::spawn_blocking(move || {
        pushed(&lab2);
        repo_server(&lab2)
    })
    .await
    .expect("push");
    let d = tempfile::tempdir().expect("tmp");
    let cfg = config(lab, d.path(), &server.url, None);
    write(
        &d.path().join("pkgs/m/m.spec"),
        &spec(
            "m",
            "",
            "echo mock-build-ran-here\nsed 's/^/CGROUP-OF-BUILD /' /proc/self/cgroup",
        ),
    );
    let out = d.path().join("out");
    let started = Instant::now();
    let (cfg2, dir2, out2) = (cfg.clone(), d.path().to_path_buf(), out.clone());
    let run = tokio::task::spawn_blocking(move || build_pkgs(&cfg2, &dir2, &out2))
        .await
        .expect("build");
    eprintln!(
        "a_mock_target_builds_on_the_swarm: build took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let dir = out.join(TARGET).join("m-1.0-1");
    let root_log = std::fs::read_to_string(dir.join("logs/root.log")).unwrap_or_default();
    assert_eq!(run.code, 0, "{}\n--- root.log\n{root_log}", run.all());
    assert!(
        run.stdout.contains("1 of 1 build(s) succeeded"),
        "{}",
        run.all()
    );
    for f in [
        "m-1.0-1.src.rpm",
        "m-1.0-1.noarch.rpm",
        "logs/build.json",
        "logs/build.log",
        "logs/root.log",
    ] {
        assert!(dir.join(f).is_file(), "{} missing", dir.join(f).display());
    }
    for phase in ["srpm", "build"] {
        for log in ["build.log", "root.log", "state.log"] {
            let p = dir.join("logs/mock").join(phase).join(log);
            assert!(p.is_file(), "Mock's {phase} {log} missing");
        }
    }
    let mock_build = read(&dir.join("logs/mock/build/build.log"));
    assert!(mock_build.contains("mock-build-ran-here"), "{mock_build}");
    // The build ran in the task's own cgroup namespace: its cgroup is the namespace's root.
    let cgroups: Vec<&str> = mock_build
        .lines()
        .filter_map(|l| l.strip_prefix("CGROUP-OF-BUILD "))
        .collect();
    assert!(!cgroups.is_empty(), "{mock_build}");
    assert!(cgroups.iter().all(|l| l.ends_with(":/")), "{cgroups:?}");
    // The buildroot came from the repository over HTTP (a directory is on no node).
    let sent = server.sent.lock().expect("lock").clone();
    assert!(
        sent.iter().any(|p| p.ends_with(".x86_64.rpm")),
        "nothing fetched the buildroot RPM from {}: {sent:?}",
        server.url
    );
    // The buildroot was made once, on the service's daemon, and pushed (by this build or
    // by a concurrent test's): the job ran from it.
    assert!(
        root_log.contains("packetary: warm buildroot packetary/mockroot:")
            || root_log.contains("packetary: making the warm buildroot packetary/mockroot:"),
        "{root_log}"
    );
    assert!(
        root_log.contains("/packetary/mockroot@sha256:"),
        "the job's image is not the warm buildroot's: {root_log}"
    );
    // The task named its node, one of the lab's.
    let node = root_log
        .lines()
        .find_map(|l| l.strip_prefix("packetary: task on node "))
        .unwrap_or_else(|| panic!("root.log names no node:\n{root_log}"));
    let label = docker_cli(
        &lab.manager,
        &[
            "node",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"packetary.node\"}}",
            node.trim(),
        ],
    );
    assert!(
        ["manager", "worker"].contains(&label.trim()),
        "node {node} is not the lab's: {label}"
    );
    let record = read(&dir.join("logs/build.json"));
    assert!(record.contains("\"image_id\": \"sha256:"), "{record}");
    let v: serde_json::Value = serde_json::from_str(&record).expect("build.json");
    let mut ids = vec![v["id"].as_str().expect("id").to_string()];

    // A second build starts from the warm buildroot: no node installs the buildroot again
    // (nothing fetches its RPM), and it is quicker than the first.
    let before = rpms_sent(server);
    let out = d.path().join("out2");
    let started = Instant::now();
    let (cfg2, dir2, out2) = (cfg.clone(), d.path().to_path_buf(), out.clone());
    let run = tokio::task::spawn_blocking(move || build_pkgs(&cfg2, &dir2, &out2))
        .await
        .expect("build");
    let second = started.elapsed().as_secs_f64();
    eprintln!("a_mock_target_builds_on_the_swarm: second build took {second:.1}s");
    let dir = out.join(TARGET).join("m-1.0-1");
    let root_log = std::fs::read_to_string(dir.join("logs/root.log")).unwrap_or_default();
    assert_eq!(run.code, 0, "{}\n--- root.log\n{root_log}", run.all());
    assert!(
        root_log.contains("packetary: warm buildroot packetary/mockroot:")
            && !root_log.contains("making the warm buildroot"),
        "{root_log}"
    );
    assert_eq!(
        rpms_sent(server),
        before,
        "the second build installed the buildroot again: {root_log}"
    );
    let record = read(&dir.join("logs/build.json"));
    let v: serde_json::Value = serde_json::from_str(&record).expect("build.json");
    ids.push(v["id"].as_str().expect("id").to_string());
    nothing_left(lab, &ids);
}

/// The agent's own failure on a node (here: the service it must fetch the build's inputs
/// from answers 404, as a wrong `callback_url` would) is an infrastructure fault named in
/// `root.log`, not the package's failed SRPM phase; nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_fault_on_the_swarm_is_not_the_package_s() {
    let Some(lab) = lab() else { return };
    let _worker = shared().await;
    let lab2 = lab.clone();
    let server = tokio::task::spawn_blocking(move || {
        pushed(&lab2);
        repo_server(&lab2)
    })
    .await
    .expect("push");
    let d = tempfile::tempdir().expect("tmp");
    // The repository server has no /tasks/ route: the agent's GET of its inputs is a 404.
    let wrong = server.url.trim_end_matches("/repo/").to_string();
    let cfg = config(lab, d.path(), &server.url, Some(&wrong));
    write(&d.path().join("pkgs/f/f.spec"), &spec("f", "", "true"));
    let out = d.path().join("out");
    let (cfg2, dir2, out2) = (cfg.clone(), d.path().to_path_buf(), out.clone());
    let run = tokio::task::spawn_blocking(move || build_pkgs(&cfg2, &dir2, &out2))
        .await
        .expect("build");
    assert_ne!(run.code, 0, "{}", run.all());
    let dir = crate::common::result_dir(&out, TARGET);
    let root_log = read(&dir.join("logs/root.log"));
    assert!(
        root_log.contains("packetary: cannot fetch the build's inputs from"),
        "{root_log}"
    );
    let record = read(&dir.join("logs/build.json"));
    let v: serde_json::Value = serde_json::from_str(&record).expect("build.json");
    assert_eq!(v["outcome"]["state"], "error", "{record}");
    assert!(
        v["outcome"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("infrastructure fault")),
        "{record}"
    );
    assert!(!run.all().contains("srpm phase failed"), "{}", run.all());
    nothing_left(lab, &[v["id"].as_str().expect("id").to_string()]);
}

/// The agent refuses a target with SYS_ADMIN (PACKETARY_PRIVATE_CGROUPNS) in a container
/// that shares the host's cgroup namespace, before it fetches anything, and lets it pass in
/// a private one. Run on the host daemon (the lab's nodes are all private; Swarm on API 1.41
/// cannot ask for the host's namespace per service): the same agent, the same check.
#[test]
fn the_agent_refuses_sys_admin_in_the_host_cgroup_namespace() {
    use std::io::BufRead;
    if !docker_available() {
        return;
    }
    let agent = include_str!("../../src/executor/swarm/agent.sh");
    // The agent's output up to its first attempt to fetch the inputs (there is nothing to
    // fetch from: it would retry for half a minute), or to its end.
    let run = |mode: &str| {
        let name = format!("packetary-test-agent-{:016x}", rand::random::<u64>());
        let mut child = std::process::Command::new("docker")
            .args(["run", "--rm", "--name", &name, "--network", "none"])
            .args(["--cgroupns", mode])
            .args(["-e", "PACKETARY_TASK_URL=http://127.0.0.1:9/tasks/x"])
            .args([
                "-e",
                "PACKETARY_TASK_TOKEN=t",
                "-e",
                "PACKETARY_TASK_EXIT=@@exit",
            ])
            .args(["-e", "PACKETARY_PRIVATE_CGROUPNS=1"])
            .args([
                IMAGE,
                "bash",
                "-c",
                agent,
                "packetary-agent",
                "echo DRIVER-RAN",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker run");
        let mut text = String::new();
        for line in std::io::BufReader::new(child.stdout.take().expect("stdout")).lines() {
            let line = line.expect("agent output");
            text += &line;
            text.push('\n');
            if line.starts_with("packetary: get ") {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", &name])
                    .output();
                break;
            }
        }
        let status = child.wait().expect("wait");
        (status.code(), text)
    };
    let (code, text) = run("host");
    assert_eq!(code, Some(97), "{text}");
    assert!(
        text.contains("runs containers in the host's cgroup namespace")
            && text.contains("--default-cgroupns-mode=private")
            && text.contains("@@exit -1"),
        "{text}"
    );
    assert!(!text.contains("packetary: get "), "{text}");
    assert!(!text.contains("DRIVER-RAN"), "{text}");
    // In a private namespace the check passes: the agent goes on to fetch its inputs.
    let (_, text) = run("private");
    assert!(
        text.contains("packetary: get http://127.0.0.1:9/tasks/x/inputs"),
        "{text}"
    );
    assert!(!text.contains("host's cgroup namespace"), "{text}");
}
