//! The build container is not trusted: what a package plants in its output directory must
//! neither be followed on the host nor come out as a result. Real Docker, real rpmbuild:
//! each package's `%build` plants links to files of the host (at paths the test made) and
//! special files, then the test checks the host files and the result directory.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};

const T: &str = "bookworm-rpmbuild";

/// A host file with a secret marker, the directory it is in, and the marker.
struct Secret {
    _dir: tempfile::TempDir,
    file: PathBuf,
    marker: String,
}

impl Secret {
    fn new() -> Secret {
        let dir = tempfile::tempdir().expect("tmp");
        let marker = format!(
            "SECRET-MARKER-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        );
        let file = dir.path().join("secret.txt");
        std::fs::write(&file, format!("{marker}\n")).expect("write secret");
        Secret {
            _dir: dir,
            file,
            marker,
        }
    }

    fn dir(&self) -> &Path {
        self.file.parent().expect("parent")
    }

    /// The host file is as the test wrote it.
    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(&self.file).expect("secret still there"),
            format!("{}\n", self.marker),
            "the host file was written through a planted link"
        );
        let names: Vec<String> = std::fs::read_dir(self.dir())
            .expect("secret dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["secret.txt"],
            "files were written into a host directory"
        );
    }
}

/// Builds a package whose `%build` is `build`; returns the run, its result directory and
/// the work directory (kept alive by the caller).
fn build_planting(name: &str, build: &str) -> (Run, PathBuf, tempfile::TempDir) {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(&w.join(format!("pkg/{name}.spec")), &spec(name, "", build));
    let r = packetary(&["build", "pkg", "--out", "out"], w);
    let dir = result_dir(&w.join("out"), T);
    (r, dir, work)
}

/// Everything under `dir` is a directory or a regular file, and no regular file holds
/// `marker`.
fn assert_only_regular_files(dir: &Path, marker: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read result dir").flatten() {
            let m = std::fs::symlink_metadata(e.path()).expect("lstat");
            let t = m.file_type();
            if t.is_dir() {
                stack.push(e.path());
                continue;
            }
            assert!(
                t.is_file(),
                "{} in the results is not a regular file ({t:?})",
                e.path().display()
            );
            let data = std::fs::read(e.path()).expect("read result");
            assert!(
                !String::from_utf8_lossy(&data).contains(marker),
                "{} holds the host file's secret",
                e.path().display()
            );
        }
    }
}

#[test]
fn planted_build_log_link_is_not_read_into_the_failure() {
    if !docker_available() {
        return;
    }
    let secret = Secret::new();
    let (r, dir, _w) = build_planting(
        "plantlog",
        &format!(
            "mkdir -p /out/logs\nln -sf {} /out/logs/build.log\necho 'the build says no' >&2\nexit 1",
            secret.file.display()
        ),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("build phase failed"), "{}", r.all());
    assert!(
        !r.all().contains(&secret.marker),
        "the host file was read into the failure: {}",
        r.all()
    );
    let log = std::fs::read_to_string(dir.join("logs/build.log")).expect("build.log");
    assert!(log.contains("the build says no"), "{log}");
    secret.assert_untouched();
    assert_only_regular_files(&dir, &secret.marker);
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn planted_state_log_link_does_not_overwrite_a_host_file() {
    if !docker_available() {
        return;
    }
    let secret = Secret::new();
    let f = secret.file.display();
    let (r, dir, _w) = build_planting(
        "plantstate",
        &format!(
            "mkdir -p /out/logs\nln -sf {f} /out/logs/state.log\nln -sf {f} /out/logs/build.json\nln -sf {f} /out/logs/root.log"
        ),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    secret.assert_untouched();
    let state = std::fs::read_to_string(dir.join("logs/state.log")).expect("state.log");
    assert!(state.contains("Start: prepare"), "{state}");
    assert_only_regular_files(&dir, &secret.marker);
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn planted_logs_directory_link_is_not_written_into() {
    if !docker_available() {
        return;
    }
    let secret = Secret::new();
    let (r, dir, _w) = build_planting(
        "plantdir",
        &format!(
            "rm -rf /out/logs\nln -sfn {} /out/logs",
            secret.dir().display()
        ),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    secret.assert_untouched();
    for log in ["root.log", "build.log", "state.log", "build.json"] {
        let m = std::fs::symlink_metadata(dir.join("logs").join(log)).expect(log);
        assert!(m.file_type().is_file(), "{log}: {m:?}");
    }
    let root = std::fs::read_to_string(dir.join("logs/root.log")).expect("root.log");
    assert!(
        root.contains("not taken from the build: /out/logs (a symbolic link)"),
        "{root}"
    );
    assert_only_regular_files(&dir, &secret.marker);
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn planted_links_and_special_files_named_like_rpms_are_refused() {
    if !docker_available() {
        return;
    }
    let secret = Secret::new();
    let (r, dir, _w) = build_planting(
        "plantrpm",
        &format!(
            // Spec code runs unprivileged without CAP_MKNOD: the device node is refused at
            // its making (see build_default_target); results.rs' unit tests cover taking one.
            "ln -s {} /out/evil-1-1.noarch.rpm\nmkfifo /out/fifo-1-1.noarch.rpm\n! mknod /out/null-1-1.noarch.rpm c 1 3",
            secret.file.display()
        ),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("collect phase failed"), "{}", r.all());
    for refused in [
        "evil-1-1.noarch.rpm (a symbolic link)",
        "fifo-1-1.noarch.rpm (a FIFO)",
    ] {
        assert!(r.stdout.contains(refused), "{refused}: {}", r.all());
    }
    assert!(!r.all().contains(&secret.marker), "{}", r.all());
    secret.assert_untouched();
    assert_only_regular_files(&dir, &secret.marker);
    // The package's real results came out; the planted ones did not.
    assert!(dir.join("plantrpm-1.0-1.noarch.rpm").is_file());
    assert!(std::fs::symlink_metadata(dir.join("evil-1-1.noarch.rpm")).is_err());
    assert!(containers_of_build(&dir).is_empty());
}

#[test]
fn a_package_printing_without_end_gets_a_bounded_log() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(
        &w.join("packetary.toml"),
        &format!("[targets.{T}]\nbackend = \"rpmbuild\"\nimage = \"packetary/rpmbuild:bookworm\"\nlog_size = \"1MiB\"\n"),
    );
    // 64 MiB of output on one line, more than the 1 MiB the target lets a log hold.
    write(
        &w.join("pkg/chatty.spec"),
        &spec(
            "chatty",
            "",
            "head -c 67108864 /dev/zero | tr '\\0' 'x'\necho\necho 'the build says no' >&2\nexit 1",
        ),
    );
    let started = std::time::Instant::now();
    let r = packetary(
        &["--config", "packetary.toml", "build", "pkg", "--out", "out"],
        w,
    );
    // Not a speed figure: the service must not spend minutes of CPU on one endless line
    // (it scanned the whole pending line again at every chunk).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "one long line took {:?}",
        started.elapsed()
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let log = result_dir(&w.join("out"), T).join("logs/build.log");
    let text = std::fs::read_to_string(&log).expect("build.log");
    assert!(
        text.len() <= (1 << 20) + 4096,
        "build.log is {} bytes",
        text.len()
    );
    assert!(
        text.ends_with(
            "[packetary: log truncated at 1024 KiB (the target's log_size); the build goes on]\n"
        ),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
}
