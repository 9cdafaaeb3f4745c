//! Bad input: each gets exit status 2 (or 3 for infrastructure) and a message saying what to fix.

use crate::common;

use common::*;

#[test]
fn path_without_any_spec() {
    let w = tempfile::tempdir().expect("tmp");
    write(&w.path().join("pkg/README"), "nothing here");
    let r = packetary(&["build", "pkg"], w.path());
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("no spec file (*.spec) found under"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("fix:"), "{}", r.all());
}

#[test]
fn spec_symlink_pointing_outside_path() {
    let outside = tempfile::tempdir().expect("tmp");
    write(&outside.path().join("evil.spec"), &spec("evil", "", "true"));
    let w = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(w.path().join("pkg")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("evil.spec"),
        w.path().join("pkg/evil.spec"),
    )
    .expect("symlink");
    let r = packetary(&["build", "pkg"], w.path());
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("is a symlink to") && r.stderr.contains("outside"),
        "{}",
        r.all()
    );
}

#[test]
fn unknown_target_name() {
    let w = tempfile::tempdir().expect("tmp");
    write(&w.path().join("pkg/a.spec"), &spec("a", "", "true"));
    let r = packetary(&["build", "pkg", "--target", "fedora-99"], w.path());
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("no target named `fedora-99`"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("bookworm-rpmbuild"), "{}", r.all());
}

#[test]
fn config_file_with_a_typo_in_a_key() {
    let w = tempfile::tempdir().expect("tmp");
    write(&w.path().join("pkg/a.spec"), &spec("a", "", "true"));
    write(
        &w.path().join("bad.toml"),
        "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\ntimeuot = \"1h\"\n",
    );
    let r = packetary(&["--config", "bad.toml", "build", "pkg"], w.path());
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("bad.toml:4"), "{}", r.all());
    assert!(r.stderr.contains("targets.t.timeuot"), "{}", r.all());
    assert!(r.stderr.contains("did you mean `timeout`"), "{}", r.all());
}

#[test]
fn missing_config_file() {
    let w = tempfile::tempdir().expect("tmp");
    let r = packetary(&["--config", "nope.toml", "build"], w.path());
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("nope.toml: cannot read"), "{}", r.all());
}

#[test]
fn no_docker_daemon_is_an_infrastructure_fault() {
    let w = tempfile::tempdir().expect("tmp");
    write(&w.path().join("pkg/a.spec"), &spec("a", "", "true"));
    let out = std::process::Command::new(bin())
        .args(["build", "pkg"])
        .current_dir(w.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no Docker daemon answers"), "{err}");
}
