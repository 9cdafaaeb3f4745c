//! `packetary build` against the real Docker daemon and real rpm.

use crate::common;

use common::*;
use std::path::Path;

const T: &str = "bookworm-rpmbuild";

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn noarch_and_c_packages_build_with_correct_headers() {
    if !docker_available() {
        return;
    }
    let out = tempfile::tempdir().expect("tmp");
    let r = packetary(
        &[
            "build",
            examples().to_str().expect("utf8"),
            "--out",
            out.path().to_str().expect("utf8"),
        ],
        out.path(),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("2 of 2 build(s) succeeded"),
        "{}",
        r.all()
    );

    let noarch = out.path().join(T).join("hello-noarch-1.0-1");
    let q = rpm_query(
        &noarch,
        "hello-noarch-1.0-1.noarch.rpm",
        "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}\\n[%{FILENAMES}\\n]",
    );
    assert_eq!(
        q,
        "hello-noarch|1.0|1|noarch\n/usr/share/hello-noarch/greeting.txt\n"
    );
    assert!(noarch.join("hello-noarch-1.0-1.src.rpm").is_file());

    let c = out.path().join(T).join("hello-c-2.1-3");
    let q = rpm_query(
        &c,
        "hello-c-*.x86_64.rpm",
        "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}\\n",
    );
    assert_eq!(q, "hello-c|2.1|3|x86_64\nhello-c-devel|2.1|3|x86_64\n");
    let files = rpm_query(&c, "hello-c-2.1-3.x86_64.rpm", "[%{FILENAMES}\\n]");
    assert!(files.lines().any(|f| f == "/usr/bin/hello-c"), "{files}");
    assert!(
        !files.contains("hello.h"),
        "the header belongs to -devel: {files}"
    );
    let files = rpm_query(&c, "hello-c-devel-2.1-3.x86_64.rpm", "[%{FILENAMES}\\n]");
    assert_eq!(files, "/usr/include/hello.h\n");
    // The SRPM carries the patch, and the binary was built with it applied.
    let srpm = rpm_query(&c, "hello-c-2.1-3.src.rpm", "[%{FILENAMES}\\n]");
    assert!(srpm.contains("hello-c-louder.patch"), "{srpm}");
    let run = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/r:ro", c.display()))
        .args([IMAGE, "sh", "-c", "cd /tmp && rpm2cpio /r/hello-c-2.1-3.x86_64.rpm | cpio -idm --quiet && ./usr/bin/hello-c"])
        .output()
        .expect("run the built program");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "HELLO!\n");

    // Logs: root.log, build.log and state.log with each phase timed.
    for log in ["root.log", "build.log", "state.log", "build.json"] {
        assert!(c.join("logs").join(log).is_file(), "missing {log}");
    }
    let state = std::fs::read_to_string(c.join("logs/state.log")).expect("state.log");
    for phase in ["prepare", "srpm", "deps", "build", "collect"] {
        assert!(state.contains(&format!("Start: {phase}")), "{state}");
        assert!(state.contains(&format!("Finish: {phase} (")), "{state}");
    }
    let build_log = std::fs::read_to_string(c.join("logs/build.log")).expect("build.log");
    assert!(
        build_log.contains("Wrote: /out/hello-c-2.1-3.x86_64.rpm"),
        "{build_log}"
    );
    assert!(containers_of_build(&c).is_empty());
}

#[test]
fn build_requires_from_a_local_repository() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let repo = greet_repo(w);

    write(
        &w.join("src/user/user.spec"),
        &spec(
            "user",
            "BuildRequires: greet-devel >= 1.0",
            "test -f /usr/share/greet/marker",
        ),
    );
    // Without the repository: a build failure naming the missing capability.
    let r = packetary(&["build", "src/user", "--out", "out2"], w);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("missing build dependencies: greet-devel >= 1.0"),
        "{}",
        r.all()
    );
    let failed = w.join("out2").join(T).join("user-1.0-1");
    let root_log = std::fs::read_to_string(failed.join("logs/root.log")).expect("root.log");
    assert!(root_log.contains("greet-devel >= 1.0"), "{root_log}");

    // With it: dnf installs the dependency and the build sees its files.
    let r = packetary(
        &[
            "build",
            "src/user",
            "--out",
            "out3",
            "--repo",
            &format!("local={}", repo.display()),
        ],
        w,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let ok = w.join("out3").join(T).join("user-1.0-1");
    let root_log = std::fs::read_to_string(ok.join("logs/root.log")).expect("root.log");
    assert!(root_log.contains("greet"), "{root_log}");
    assert!(ok.join("user-1.0-1.noarch.rpm").is_file());
    assert!(containers_of_build(&ok).is_empty());
}

/// A package that provides `greet-devel`, built with packetary and published with
/// createrepo_c in `w/repo`.
fn greet_repo(w: &Path) -> std::path::PathBuf {
    write(
        &w.join("src/greet/greet.spec"),
        &spec("greet", "Provides: greet-devel = 1.0", "true"),
    );
    let r = packetary(&["build", "src/greet", "--out", "out1"], w);
    assert_eq!(r.code, 0, "{}", r.all());
    let repo = w.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    for f in std::fs::read_dir(w.join("out1").join(T).join("greet-1.0-1"))
        .expect("out")
        .flatten()
    {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.ends_with(".noarch.rpm") {
            std::fs::copy(f.path(), repo.join(&name)).expect("copy");
        }
    }
    createrepo(&repo);
    repo
}

/// Serves `dir` over HTTP on all interfaces (containers on the bridge reach it through
/// the gateway address). Returns the port.
fn serve_dir(dir: std::path::PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut header = String::new();
            while reader
                .read_line(&mut header)
                .map(|n| n > 2)
                .unwrap_or(false)
            {
                header.clear();
            }
            let file = dir.join(path.trim_start_matches('/'));
            let mut stream = reader.into_inner();
            let _ = match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                _ => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    port
}

#[test]
fn build_requires_over_http_then_the_network_is_cut() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let repo = greet_repo(w);
    let port = serve_dir(repo);
    let gateway = bridge_gateway();
    // %build proves the dependency is installed and that only loopback is left.
    write(
        &w.join("src/user/user.spec"),
        &spec(
            "user",
            "BuildRequires: greet-devel >= 1.0",
            "test -f /usr/share/greet/marker\nls /sys/class/net\ntest \"$(ls /sys/class/net)\" = lo",
        ),
    );
    let r = packetary(
        &[
            "build",
            "src/user",
            "--out",
            "out",
            "--repo",
            &format!("remote=http://{gateway}:{port}/"),
        ],
        w,
    );
    let dir = result_dir(&w.join("out"), T);
    let build_log = std::fs::read_to_string(dir.join("logs/build.log")).unwrap_or_default();
    assert_eq!(r.code, 0, "{}\n{build_log}", r.all());
    let root_log = std::fs::read_to_string(dir.join("logs/root.log")).expect("root.log");
    assert!(root_log.contains("greet"), "{root_log}");
    assert!(containers_of_build(&dir).is_empty());
}

/// Builds one spec with a config and returns (run, result dir).
fn build_one(
    name: &str,
    spec_text: &str,
    config: Option<&str>,
) -> (Run, std::path::PathBuf, tempfile::TempDir) {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(&w.join(format!("pkg/{name}.spec")), spec_text);
    let mut args = vec!["build", "pkg", "--out", "out"];
    if let Some(c) = config {
        write(&w.join("packetary.toml"), c);
        args.extend(["--config", "packetary.toml"]);
    }
    let r = packetary(&args, w);
    let dir = result_dir(&w.join("out"), T);
    (r, dir, work)
}

fn limited(extra: &str) -> String {
    format!("[targets.{T}]\nbackend = \"rpmbuild\"\nimage = \"{IMAGE}\"\n{extra}\n")
}

#[test]
fn spec_syntax_error_fails_in_srpm_phase() {
    if !docker_available() {
        return;
    }
    let bad = "Name: broken\nVersion: 1\nRelease: 1\nSummary: x\nLicense: MIT\nBogusTag: 1\n%description\nx\n%files\n";
    let (r, dir, _w) = build_one("broken", bad, None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("srpm phase failed"), "{}", r.all());
    assert!(r.stdout.contains("Unknown tag: BogusTag"), "{}", r.all());
    assert!(r.stderr.contains("last lines of"), "{}", r.all());
    assert!(dir.ends_with("broken"), "{dir:?}");
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn failing_build_section_fails_in_build_phase() {
    if !docker_available() {
        return;
    }
    let (r, dir, _w) = build_one(
        "fails",
        &spec("fails", "", "echo 'compiler says no' >&2; exit 1"),
        None,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("build phase failed"), "{}", r.all());
    assert!(r.stdout.contains("Bad exit status"), "{}", r.all());
    let log = std::fs::read_to_string(dir.join("logs/build.log")).expect("build.log");
    assert!(log.contains("compiler says no"), "{log}");
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn build_past_its_timeout_is_stopped() {
    if !docker_available() {
        return;
    }
    let started = std::time::Instant::now();
    let (r, dir, _w) = build_one(
        "sleepy",
        &spec("sleepy", "", "sleep 300"),
        Some(&limited("timeout = \"4s\"")),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("exceeded its time limit of 4s"),
        "{}",
        r.all()
    );
    assert!(started.elapsed().as_secs() < 60, "timeout not enforced");
    let state = std::fs::read_to_string(dir.join("logs/state.log")).expect("state.log");
    assert!(
        state.contains("Finish: build (") && state.contains("failed"),
        "{state}"
    );
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn build_past_its_memory_limit_is_reported_as_oom() {
    if !docker_available() {
        return;
    }
    // `tail -n 1` keeps a whole line in memory: 400MiB without a newline against 64MiB.
    let hog = "head -c 400M /dev/zero | tail -n 1 >/dev/null";
    let (r, dir, _w) = build_one(
        "hog",
        &spec("hog", "", hog),
        Some(&limited("memory = \"64MiB\"")),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("memory limit (64MiB)"), "{}", r.all());
    let json = std::fs::read_to_string(dir.join("logs/build.json")).expect("build.json");
    assert!(json.contains("out_of_memory"), "{json}");
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn interrupt_removes_the_container() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(&w.join("pkg/slow.spec"), &spec("slow", "", "sleep 300"));
    let child = std::process::Command::new(bin())
        .args(["build", "pkg", "--out", "out"])
        .current_dir(w)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the build phase runs, then press Ctrl-C.
    wait_for_build_phase(&w.join("out").join(T));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dir = result_dir(&w.join("out"), T);
    assert!(
        containers_of_build(&dir).is_empty(),
        "container left behind"
    );
}

#[test]
fn rpmbuild_tree_and_explicit_spec() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    // SPECS/x.spec takes Source0 from the sibling SOURCES/.
    write(
        &w.join("tree/SPECS/tree.spec"),
        &spec(
            "tree",
            "Source0: data.txt",
            "cp %{SOURCE0} . && grep -q from-sources data.txt",
        ),
    );
    write(&w.join("tree/SOURCES/data.txt"), "from-sources\n");
    write(
        &w.join("tree/SPECS/other.spec"),
        &spec("other", "", "exit 1"),
    );
    // --spec picks one package: the failing one next to it is not built.
    let r = packetary(
        &[
            "build",
            "tree",
            "--spec",
            "tree/SPECS/tree.spec",
            "--out",
            "out",
        ],
        w,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("1 of 1 build(s) succeeded"),
        "{}",
        r.all()
    );
    let dir = w.join("out").join(T).join("tree-1.0-1");
    let files = rpm_query(&dir, "tree-1.0-1.src.rpm", "[%{FILENAMES}\\n]");
    assert!(files.lines().any(|f| f == "data.txt"), "{files}");
}

/// A build whose process went away mid-build (the service was killed) is picked up again:
/// its output is replayed into the logs and its results are taken out of the container,
/// which is then removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattached_build_takes_its_results_out_of_the_container() {
    let Some(engine) = docker().await else {
        return;
    };
    use packetary::executor::{BuildRequest, Executor};
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(
        &w.join("pkg/later.spec"),
        &spec("later", "", "sleep 2\necho built-after-the-crash"),
    );
    let package =
        packetary::plan::package_for_spec(&w.join("pkg"), &w.join("pkg/later.spec")).expect("pkg");
    let target = packetary::config::Config::parse(
        &format!("[targets.{T}]\nbackend = \"rpmbuild\"\nimage = \"{IMAGE}\"\n"),
        None,
    )
    .expect("config")
    .targets
    .into_values()
    .next()
    .expect("target");
    let req = BuildRequest {
        deps_cache: packetary::executor::DepsCache::Shared("test".into()),
        id: packetary::model::BuildId::generate(),
        package,
        target,
        out_root: w.join("out"),
        extra_repos: vec![],
        source_date_epoch: None,
        inputs: None,
    };
    let executor = Executor::new(engine);
    let first = {
        let (executor, req) = (executor.clone(), req.clone());
        tokio::spawn(async move {
            executor
                .run(req, None, tokio_util::sync::CancellationToken::new())
                .await
        })
    };
    wait_for_build_phase(&w.join("out").join(T));
    // The process "dies": its future is dropped mid-build, the container runs on.
    first.abort();
    assert!(first.await.is_err(), "the first run ended before the abort");
    let report = executor
        .reattach(req, None, tokio_util::sync::CancellationToken::new())
        .await
        .expect("the container is picked up");
    assert!(report.outcome.succeeded(), "{:?}", report.outcome);
    let dir = w.join("out").join(T).join("later-1.0-1");
    assert_eq!(report.dir, dir);
    assert!(dir.join("later-1.0-1.noarch.rpm").is_file());
    assert!(dir.join("later-1.0-1.src.rpm").is_file());
    let root = std::fs::read_to_string(dir.join("logs/root.log")).expect("root.log");
    assert!(root.contains("reattached to container"), "{root}");
    let build = std::fs::read_to_string(dir.join("logs/build.log")).expect("build.log");
    assert!(build.contains("built-after-the-crash"), "{build}");
    assert!(containers_of_build(&dir).is_empty());
}

/// The service's way through the runner: the inputs are read once before the build (the
/// image id looked up, the package hashed, each repository's `repomd.xml` fetched once,
/// counted by the server) and the build's `build.json` records exactly them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_read_once_are_what_build_json_records() {
    if crate::common::docker().await.is_none() {
        return;
    }
    use packetary::docker::Engine;
    use packetary::executor::{BuildReport, BuildRequest, Executor};
    use packetary::queue::{DockerRunner, Runner};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/base/repodata/repomd.xml"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<repomd/>"))
        .mount(&server)
        .await;
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(&w.join("pkg/once.spec"), &spec("once", "", "true"));
    let package =
        packetary::plan::package_for_spec(&w.join("pkg"), &w.join("pkg/once.spec")).expect("pkg");
    let target = packetary::config::Config::parse(
        &format!(
            "[targets.{T}]\nbackend = \"rpmbuild\"\nimage = \"{IMAGE}\"\nrepos = [{{ name = \"base\", url = \"{}/base\" }}]\n",
            server.uri()
        ),
        None,
    )
    .expect("config")
    .targets
    .into_values()
    .next()
    .expect("target");
    let mut req = BuildRequest {
        deps_cache: packetary::executor::DepsCache::Shared("test".into()),
        id: packetary::model::BuildId::generate(),
        package,
        target,
        out_root: w.join("out"),
        extra_repos: vec![],
        source_date_epoch: Some(1_700_000_000),
        inputs: None,
    };
    let runner = DockerRunner::new(Executor::new(Engine::connect(None).await.expect("docker")));
    let inputs = runner
        .inputs(&req)
        .await
        .expect("inputs")
        .expect("the Docker runner reads them");
    assert!(inputs.reusable(), "{inputs:?}");
    req.inputs = Some(inputs.clone());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let report = runner
        .run(req, tx, tokio_util::sync::CancellationToken::new())
        .await;
    assert!(report.outcome.succeeded(), "{:?}", report.outcome);
    let fetched = server.received_requests().await.expect("recorded").len();
    assert_eq!(fetched, 1, "repomd.xml fetched once per build");
    let json = std::fs::read_to_string(report.dir.join("logs/build.json")).expect("build.json");
    let recorded: BuildReport = serde_json::from_str(&json).expect("a typed record");
    assert_eq!(recorded.provenance.as_ref(), Some(&inputs));
    assert_eq!(recorded.image_id, inputs.image_id);
    assert!(containers_of_build(&report.dir).is_empty());
}
