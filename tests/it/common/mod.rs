//! Helpers shared by the integration tests: the real binary, the real Docker daemon.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const IMAGE: &str = "packetary/rpmbuild:bookworm";

/// Whether a Docker daemon answers, asked once per process (the first test to ask waits
/// for the answer; the others reuse it): `Err` says why not. Asked on the caller's runtime.
static DOCKER: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();

async fn docker_probe() -> &'static Result<(), String> {
    DOCKER
        .get_or_init(|| async {
            packetary::docker::Engine::connect(None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
}

/// The test asking (libtest names each test's thread after it).
fn this_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string()
}

/// Whether the tests that need Docker run, by the answer of the one probe of all tests:
/// under CI a missing daemon is a failure, not a skip (tests that need Docker must not pass
/// by doing nothing); otherwise the test says that it skips and why.
fn verdict(probe: &Result<(), String>) -> bool {
    match probe {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!(
                "{}: CI is set but no Docker daemon answers; .ci/run must start one: {e}",
                this_test()
            )
        }
        Err(e) => {
            eprintln!(
                "{}: SKIPPED, no Docker daemon (set CI=1 to make this a failure): {e}",
                this_test()
            );
            false
        }
    }
}

/// [`docker`] for a test that is not async: whether Docker answers (a test that has not
/// got the answer yet asks on a runtime of its own, on a thread of its own).
pub fn docker_available() -> bool {
    let probe = match DOCKER.get() {
        Some(p) => p,
        None => std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(docker_probe())
        })
        .join()
        .expect("docker probe thread"),
    };
    verdict(probe)
}

/// The Docker daemon for a test that needs one, or `None` when it skips (see [`verdict`]:
/// under CI no daemon is a failure). The daemon is probed once per process; the engine
/// returned is connected on the caller's runtime (bollard's pooled connections belong to
/// the runtime that opened them, and each `#[tokio::test]` has its own).
pub async fn docker() -> Option<packetary::docker::Engine> {
    if !verdict(docker_probe().await) {
        return None;
    }
    Some(
        packetary::docker::Engine::connect(None)
            .await
            .unwrap_or_else(|e| panic!("{}: the Docker daemon answered once: {e}", this_test())),
    )
}

/// `docker ARGS…`'s standard output (on the suite's daemon unless ARGS name another with
/// `-H`); panics with its error output when it fails.
pub fn docker_out(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where a container on Docker's default bridge reaches this host (a service the test
/// runs on all interfaces): the library's one answer, `Engine::bridge_host_address`,
/// which also holds on a daemon that has just created its bridge. Panics with what was
/// tried when there is none. Callable from sync and async tests alike (own runtime on
/// its own thread).
pub fn bridge_gateway() -> String {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let engine = packetary::docker::Engine::connect(None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            match engine.bridge_host_address().await {
                Ok(ip) => ip.to_string(),
                Err(e) => panic!("{e}"),
            }
        })
    })
    .join()
    .expect("bridge gateway thread")
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packetary"))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

pub fn packetary(args: &[&str], cwd: &Path) -> Run {
    let out: Output = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("PACKETARY_CONFIG")
        .output()
        .expect("run packetary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn write(path: &Path, content: &str) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// A minimal noarch spec; `extra` is inserted in the preamble, `build` is the %build body.
pub fn spec(name: &str, extra: &str, build: &str) -> String {
    format!(
        "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: test package\nLicense: MIT\nBuildArch: noarch\n{extra}\n\
%description\nTest package {name}.\n\n%build\n{build}\n\n%install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho {name} > %{{buildroot}}/usr/share/{name}/marker\n\n\
%files\n/usr/share/{name}/marker\n\n%changelog\n* Wed Nov 25 2026 Test <t@example.org> - 1.0-1\n- test\n"
    )
}

/// Header fields of RPM files, read by real rpm in the builder image.
pub fn rpm_query(dir: &Path, glob: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/r:ro", dir.display()))
        .args([IMAGE, "sh", "-c"])
        .arg(format!("rpm -qp --qf '{format}' /r/{glob}"))
        .output()
        .expect("docker run rpm");
    assert!(
        out.status.success(),
        "rpm -qp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs createrepo_c (real, in the builder image) on a directory of RPMs.
pub fn createrepo(dir: &Path) {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/repo", dir.display()))
        .args([IMAGE, "createrepo_c", "--quiet", "/repo"])
        .output()
        .expect("docker run createrepo_c");
    assert!(
        out.status.success(),
        "createrepo_c failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Containers (running or not) that belong to the build recorded in `logs/build.json`.
pub fn containers_of_build(result_dir: &Path) -> Vec<String> {
    let json = std::fs::read_to_string(result_dir.join("logs/build.json")).expect("build.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let id = v["id"].as_str().expect("id").to_string();
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=org.packetary.build-id={id}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The only result directory under `out/<target>/`.
pub fn result_dir(out: &Path, target: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out.join(target))
        .expect("target dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "expected one result dir, got {dirs:?}");
    dirs[0].clone()
}

/// Waits until some build under `target_dir` is in its build phase.
pub fn wait_for_build_phase(target_dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let building = std::fs::read_dir(target_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("logs/build.log"))
                    .is_ok_and(|l| l.contains("=== build phase"))
            });
        if building {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "build never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
