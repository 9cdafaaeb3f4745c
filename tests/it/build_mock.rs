//! `packetary build` with the mock backend against the real Docker daemon and the real Mock
//! (packetary/mock:debian-test, made by images/mock-debian-test/build.sh from
//! ../shared/peers/mock): the rpmbuild backend's end-to-end cases, and Mock's own.
//!
//! The image and the warm buildroot are made once per run (see `mock_config`); the cases
//! then run in parallel, each from the warm buildroot.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const T: &str = "debian12-mock";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The config naming the `debian12-mock` target, after the image, its buildroot repository
/// and the target's warm buildroot exist: built once per test process (build.sh skips what
/// is up to date, so a run after tests/run.sh costs nothing).
fn mock_config() -> &'static Path {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let config = mock_image().join("packetary.toml");
        assert!(config.is_file(), "build.sh wrote no {}", config.display());
        // One build first, alone: it makes the target's warm buildroot that the cases,
        // each its own packetary process, then share.
        let work = tempfile::tempdir().expect("tmp");
        write(
            &work.path().join("warm/warm.spec"),
            &spec("warm", "", "true"),
        );
        let r = packetary(
            &[
                "build",
                "warm",
                "--out",
                "out",
                "--config",
                config.to_str().expect("utf8"),
            ],
            work.path(),
        );
        assert_eq!(r.code, 0, "the warm-up build failed: {}", r.all());
        config
    })
}

/// `images/mock-debian-test/build.sh`, once per test process for every module that needs
/// the Mock test image (two runs at once would race on its output directory): returns
/// `target/mock-debian-test`, with `packetary.toml` and the buildroot repository `repo`.
pub(crate) fn mock_image() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::process::Command::new(root().join("images/mock-debian-test/build.sh"))
            .output()
            .expect("run images/mock-debian-test/build.sh");
        assert!(
            out.status.success(),
            "images/mock-debian-test/build.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        root().join("target/mock-debian-test")
    })
}

/// Builds the package directory `pkg` in `w` for the mock target, with `extra` config lines
/// appended to the target's table and `args` added.
pub(crate) fn mock_build(w: &Path, pkg: &str, extra: &str, args: &[&str]) -> Run {
    let base = std::fs::read_to_string(mock_config()).expect("config");
    write(&w.join("packetary.toml"), &format!("{base}{extra}\n"));
    let mut all = vec!["build", pkg, "--out", "out", "--config", "packetary.toml"];
    all.extend(args);
    packetary(&all, w)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn noarch_and_c_packages_build_with_mock() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    // hello-c with a %check, next to hello-noarch.
    for (from, to) in [
        ("examples/hello-noarch", "pkgs/hello-noarch"),
        ("examples/hello-c", "pkgs/hello-c"),
    ] {
        std::fs::create_dir_all(w.join(to)).expect("mkdir");
        for f in std::fs::read_dir(root().join(from))
            .expect("examples")
            .flatten()
        {
            std::fs::copy(f.path(), w.join(to).join(f.file_name())).expect("copy");
        }
    }
    let spec = w.join("pkgs/hello-c/hello-c.spec");
    let text = read(&spec).replace(
        "%install",
        "%check\ntest \"$(./hello)\" = HELLO! && echo check-ran-here\n\n%install",
    );
    write(&spec, &text);
    let r = mock_build(w, "pkgs", "", &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("2 of 2 build(s) succeeded"),
        "{}",
        r.all()
    );

    let noarch = w.join("out").join(T).join("hello-noarch-1.0-1");
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

    let c = w.join("out").join(T).join("hello-c-2.1-3");
    let q = rpm_query(
        &c,
        "hello-c-*.x86_64.rpm",
        "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}\\n",
    );
    assert_eq!(q, "hello-c|2.1|3|x86_64\nhello-c-devel|2.1|3|x86_64\n");
    let files = rpm_query(&c, "hello-c-devel-2.1-3.x86_64.rpm", "[%{FILENAMES}\\n]");
    assert_eq!(files, "/usr/include/hello.h\n");
    let srpm = rpm_query(&c, "hello-c-2.1-3.src.rpm", "[%{FILENAMES}\\n]");
    assert!(srpm.contains("hello-c-louder.patch"), "{srpm}");
    let run = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/r:ro", c.display()))
        .args([IMAGE, "sh", "-c", "cd /tmp && rpm2cpio /r/hello-c-2.1-3.x86_64.rpm | cpio -idm --quiet && ./usr/bin/hello-c"])
        .output()
        .expect("run the built program");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "HELLO!\n");

    // The service's logs, with rpmbuild's output live in build.log (%check ran), and
    // Mock's own logs of both calls.
    let build_log = read(&c.join("logs/build.log"));
    assert!(build_log.contains("check-ran-here"), "{build_log}");
    assert!(
        build_log.contains("Wrote: /builddir/build/RPMS/hello-c-2.1-3.x86_64.rpm"),
        "{build_log}"
    );
    for log in ["build.log", "root.log", "state.log", "hw_info.log"] {
        assert!(
            c.join("logs/mock/srpm").join(log).is_file(),
            "missing srpm {log}"
        );
        assert!(
            c.join("logs/mock/build").join(log).is_file(),
            "missing build {log}"
        );
    }
    assert!(c.join("logs/mock/build/installed_pkgs.log").is_file());
    assert!(read(&c.join("logs/mock/build/build.log")).contains("check-ran-here"));
    // One buildroot per build: the second call reuses the first's (no chroot install, and
    // no root cache made).
    let root_log = read(&c.join("logs/mock/build/root.log"));
    assert!(!root_log.contains("root_cache"), "{root_log}");
    let state = read(&c.join("logs/state.log"));
    for phase in ["prepare", "srpm", "build", "collect"] {
        assert!(state.contains(&format!("Finish: {phase} (")), "{state}");
    }
    assert!(containers_of_build(&c).is_empty());
    assert!(containers_of_build(&noarch).is_empty());
}

#[test]
fn failing_build_section_names_the_rpmbuild_error() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(
        &w.join("pkg/fails.spec"),
        &spec("fails", "", "echo 'compiler says no' >&2; exit 1"),
    );
    let r = mock_build(w, "pkg", "", &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("build phase failed"), "{}", r.all());
    // rpmbuild's error line, not Mock's command line.
    assert!(r.stdout.contains("Bad exit status"), "{}", r.all());
    assert!(!r.stdout.contains("bash --login"), "{}", r.all());
    let dir = result_dir(&w.join("out"), T);
    let log = read(&dir.join("logs/build.log"));
    assert!(log.contains("compiler says no"), "{log}");
    let mock_log = read(&dir.join("logs/mock/build/build.log"));
    assert!(mock_log.contains("compiler says no"), "{mock_log}");
    let json = read(&dir.join("logs/build.json"));
    assert!(json.contains("\"state\": \"failed\""), "{json}");
    assert!(containers_of_build(&dir).is_empty());
}

/// What a spec writes to stdout and stderr comes out in the order it wrote it, in the log
/// and in Mock's own: Mock reads the two pipes stdout first, so a stderr line and the
/// stdout line just after it came out swapped, and a failure's summary could name half a
/// command (`failing_specs::mock::check_fails` once read "`test` failed in %check").
#[test]
fn stdout_and_stderr_keep_the_spec_s_order() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(
        &w.join("pkg/order.spec"),
        &spec(
            "order",
            "",
            "for i in 1 2 3; do sleep 0.3; echo \"to-stderr-$i\" >&2; echo \"to-stdout-$i\"; done",
        ),
    );
    let r = mock_build(w, "pkg", "", &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = result_dir(&w.join("out"), T);
    for log in ["logs/build.log", "logs/mock/build/build.log"] {
        let text = read(&dir.join(log));
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("to-std")).collect();
        assert_eq!(
            lines,
            [
                "to-stderr-1",
                "to-stdout-1",
                "to-stderr-2",
                "to-stdout-2",
                "to-stderr-3",
                "to-stdout-3"
            ],
            "{log}:\n{text}"
        );
    }
}

#[test]
fn missing_build_requires_are_named() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(
        &w.join("pkg/needy.spec"),
        &spec("needy", "BuildRequires: no-such-thing-devel >= 2", "true"),
    );
    let r = mock_build(w, "pkg", "", &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("missing build dependencies: no-such-thing-devel >= 2"),
        "{}",
        r.all()
    );
    let dir = result_dir(&w.join("out"), T);
    let json = read(&dir.join("logs/build.json"));
    assert!(json.contains("missing_deps"), "{json}");
    let root_log = read(&dir.join("logs/mock/build/root.log"));
    assert!(root_log.contains("no-such-thing-devel"), "{root_log}");
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn build_past_its_timeout_is_stopped() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(&w.join("pkg/sleepy.spec"), &spec("sleepy", "", "sleep 300"));
    let started = std::time::Instant::now();
    let r = mock_build(w, "pkg", "timeout = \"15s\"", &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("exceeded its time limit of 15s"),
        "{}",
        r.all()
    );
    assert!(started.elapsed().as_secs() < 90, "timeout not enforced");
    let dir = result_dir(&w.join("out"), T);
    let state = read(&dir.join("logs/state.log"));
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
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    // Mock and dnf need their few hundred MiB; the package wants far more.
    let hog = "head -c 3G /dev/zero | tail -n 1 >/dev/null";
    write(&w.join("pkg/hog.spec"), &spec("hog", "", hog));
    let r = mock_build(w, "pkg", "memory = \"768MiB\"", &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("memory limit (768MiB)"), "{}", r.all());
    let dir = result_dir(&w.join("out"), T);
    let json = read(&dir.join("logs/build.json"));
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
    let base = std::fs::read_to_string(mock_config()).expect("config");
    write(&w.join("packetary.toml"), &base);
    write(&w.join("pkg/slow.spec"), &spec("slow", "", "sleep 300"));
    let child = std::process::Command::new(bin())
        .args(["build", "pkg", "--out", "out", "--config", "packetary.toml"])
        .current_dir(w)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
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

/// Root code in the build (a `%post` of a BuildRequires, run by dnf as root in the
/// container that Mock needs `SYS_ADMIN` in) cannot mount a cgroup hierarchy, nor remount
/// the cgroup file system writable: dnf runs without `SYS_ADMIN`, and the container has its
/// own cgroup namespace besides.
#[test]
fn root_code_in_the_build_cannot_mount_the_cgroup_hierarchy() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let probe = r#"mkdir -p /tmp/cg1 /tmp/cg2
exec > /var/tmp/cgroup-probe 2>&1
echo "uid $(id -u)"
grep CapEff /proc/self/status
if mount -t cgroup -o none,name=packetary cgroup /tmp/cg1; then echo "new hierarchy: MOUNTED"; else echo "new hierarchy: refused"; fi
if mount -t cgroup -o memory cgroup /tmp/cg2; then
  if ls /tmp/cg2/release_agent >/dev/null 2>&1; then echo "release_agent: REACHABLE"; else echo "release_agent: absent"; fi
else echo "memory hierarchy: refused"; fi
if mount -o remount,rw /sys/fs/cgroup 2>/dev/null && touch /sys/fs/cgroup/x 2>/dev/null; then echo "cgroupfs: WRITABLE"; else echo "cgroupfs: read-only"; fi"#;
    write(
        &w.join("src/probe/probe.spec"),
        &spec(
            "probe",
            &format!("Provides: probe-devel\n%post\n{probe}\n"),
            "true",
        ),
    );
    let r = mock_build(w, "src/probe", "", &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let repo = w.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    std::fs::copy(
        w.join("out")
            .join(T)
            .join("probe-1.0-1/probe-1.0-1.noarch.rpm"),
        repo.join("probe-1.0-1.noarch.rpm"),
    )
    .expect("copy");
    createrepo(&repo);
    write(
        &w.join("src/user/user.spec"),
        &spec(
            "user",
            "BuildRequires: probe-devel",
            "cat /var/tmp/cgroup-probe",
        ),
    );
    let r = mock_build(
        w,
        "src/user",
        "",
        &["--repo", &format!("local={}", repo.display())],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = w.join("out").join(T).join("user-1.0-1");
    let log = read(&dir.join("logs/build.log"));
    // The probe ran as root, without SYS_ADMIN (bit 21 of CapEff) ...
    assert!(log.contains("uid 0"), "{log}");
    let cap_eff = log
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|c| u64::from_str_radix(c.trim(), 16).ok())
        .expect("CapEff line");
    assert_eq!(cap_eff & (1 << 21), 0, "SYS_ADMIN in {cap_eff:x}: {log}");
    // ... so: no new hierarchy, not the container's own, no writable cgroupfs.
    assert!(log.contains("new hierarchy: refused"), "{log}");
    assert!(log.contains("memory hierarchy: refused"), "{log}");
    assert!(log.contains("cgroupfs: read-only"), "{log}");
    assert!(
        !log.contains("MOUNTED") && !log.contains("REACHABLE") && !log.contains("WRITABLE"),
        "{log}"
    );
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn a_mock_target_on_a_non_mock_image_is_refused() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(
        &w.join("packetary.toml"),
        &format!("[targets.wrong]\nbackend = \"mock\"\nimage = \"{IMAGE}\"\n"),
    );
    write(&w.join("pkg/a.spec"), &spec("a", "", "true"));
    let r = packetary(
        &["build", "pkg", "--out", "out", "--config", "packetary.toml"],
        w,
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.all()
            .contains(&format!("image {IMAGE} is not a Mock image")),
        "{}",
        r.all()
    );
    assert!(
        r.all().contains("org.packetary.backend=rpmbuild"),
        "{}",
        r.all()
    );
}

/// Issue 22: a repository URL's credentials are given to Mock in its config, and dnf
/// quotes the URL, credentials included, when it cannot reach it: none of the build's
/// logs (its phase logs, Mock's own) keep them.
#[test]
fn credentials_of_an_unreachable_repository_stay_out_of_the_logs() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let base = std::fs::read_to_string(mock_config()).expect("config");
    assert!(base.contains("repos = ["), "{base}");
    let config = base.replacen(
        "repos = [",
        "repos = [{ name = \"private\", url = \"http://user:s3cret@127.0.0.1:9/x\" }, ",
        1,
    );
    write(&w.join("packetary.toml"), &config);
    write(&w.join("pkg/cred.spec"), &spec("cred", "", "true"));
    let r = packetary(
        &["build", "pkg", "--out", "out", "--config", "packetary.toml"],
        w,
    );
    assert_ne!(r.code, 0, "a repository out of reach: {}", r.all());
    assert!(!r.all().contains("s3cret"), "{}", r.all());
    let seen = files_under(&w.join("out"));
    for p in &seen {
        let text = String::from_utf8_lossy(&std::fs::read(p).expect("read")).into_owned();
        assert!(!text.contains("s3cret"), "{}:\n{text}", p.display());
    }
    assert!(
        seen.iter().any(|p| p.ends_with("logs/mock/srpm/root.log")),
        "Mock's root.log was taken: {seen:?}"
    );
}
