//! `packetary rebuild --release`: every source package of a release's latest snapshot is
//! built again from that snapshot; reproducible packages come out identical, one whose
//! build is not reproducible is named as differing. Real Docker, real rpm, real createrepo_c.

use crate::common;

use common::*;

const T: &str = "bookworm-rpmbuild";

#[test]
fn a_release_is_rebuilt_from_its_snapshot_and_differences_are_named() {
    if !docker_available() {
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let cfg = t.path().join("packetary.toml");
    write(
        &cfg,
        &format!("[releases.stable]\nbranches = [\"main\"]\ntargets = [\"{T}\"]\n"),
    );
    let cfg = cfg.to_str().expect("utf-8");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let examples = examples.to_str().expect("utf-8");
    let built = packetary(
        &[
            "--config",
            cfg,
            "build",
            examples,
            "-t",
            T,
            "-o",
            "out",
            "--publish",
            "stable",
            "--data-dir",
            "data",
        ],
        t.path(),
    );
    assert_eq!(built.code, 0, "{}", built.all());

    let rebuild = |target: Option<&str>| {
        let mut args = vec![
            "--config",
            cfg,
            "rebuild",
            "--release",
            "stable",
            "--data-dir",
            "data",
        ];
        if let Some(t) = target {
            args.extend(["--target", t]);
        }
        packetary(&args, t.path())
    };
    let r = rebuild(Some(T));
    assert_eq!(r.code, 0, "{}", r.all());
    for rpm in [
        "hello-c-2.1-3.x86_64.rpm",
        "hello-c-devel-2.1-3.x86_64.rpm",
        "hello-noarch-1.0-1.noarch.rpm",
    ] {
        assert!(
            r.stdout.contains(&format!("identical {rpm}")),
            "{rpm} not identical: {}",
            r.all()
        );
    }
    assert!(
        r.stdout
            .contains("2 identical, 0 differ, 0 no longer build"),
        "{}",
        r.all()
    );

    // A package whose payload carries the moment it was built cannot be rebuilt the same.
    write(
        &t.path().join("stamp/stamp.spec"),
        "Name: stamp\nVersion: 1.0\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
%description\nt\n%install\nmkdir -p %{buildroot}/usr/share/stamp\n\
date +%s%N > %{buildroot}/usr/share/stamp/now\n%files\n/usr/share/stamp/now\n",
    );
    let built = packetary(
        &[
            "--config",
            cfg,
            "build",
            "stamp",
            "-t",
            T,
            "-o",
            "out2",
            "--publish",
            "stable",
            "--data-dir",
            "data",
        ],
        t.path(),
    );
    assert_eq!(built.code, 0, "{}", built.all());
    let r = rebuild(None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("differs stamp-"), "{}", r.all());
    assert!(
        r.stdout.contains("identical hello-noarch-1.0-1.noarch.rpm"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout
            .contains("2 identical, 1 differ, 0 no longer build"),
        "{}",
        r.all()
    );

    let bad = rebuild(Some("no-such-target"));
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr.contains("has no target no-such-target"),
        "{}",
        bad.all()
    );
}
