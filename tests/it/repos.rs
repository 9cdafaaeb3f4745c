//! `packetary publish`: release repositories with real rpmbuild, createrepo_c and dnf in
//! the builder image, and the real binary. The publishing rules, immutable snapshots and
//! two publications racing.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{docker_available, packetary, write, IMAGE};

const TARGET: &str = "bookworm-rpmbuild";

/// Builds noarch binary RPMs of `(name, version, release)` with rpmbuild in the builder
/// image, all in one container, into `out` (created); `salt` goes into the payload so that
/// two runs make different bytes for the same NEVRA.
pub fn make_rpms(out: &Path, packages: &[(&str, &str, &str)], salt: &str) -> Vec<PathBuf> {
    let specs = out.join(".specs");
    std::fs::create_dir_all(&specs).expect("mkdir");
    let mut script = String::from("set -e\n");
    for (name, version, release) in packages {
        write(
            &specs.join(format!("{name}-{version}-{release}.spec")),
            &format!(
                "Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
%description\nt\n%install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho '{name} {salt}' > %{{buildroot}}/usr/share/{name}/marker\n\
%files\n/usr/share/{name}/marker\n"
            ),
        );
        script.push_str(&format!(
            "rpmbuild -bb --quiet --define '_topdir /tmp/t' /out/.specs/{name}-{version}-{release}.spec >/dev/null\n"
        ));
    }
    script.push_str("cp /tmp/t/RPMS/noarch/*.rpm /out/\n");
    let o = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/out", out.display()))
        .args([IMAGE, "sh", "-c", &script])
        .output()
        .expect("docker run rpmbuild");
    assert!(
        o.status.success(),
        "rpmbuild: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(&specs).expect("rm specs");
    packages
        .iter()
        .map(|(n, v, r)| out.join(format!("{n}-{v}-{r}.noarch.rpm")))
        .collect()
}

/// What dnf (in the builder image) sees in the repository at `dir`: `name-evr.arch` lines.
pub fn dnf_list(dir: &Path) -> Vec<String> {
    let o = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/repo:ro", dir.display()))
        .args([
            IMAGE,
            "dnf",
            "-q",
            "--releasever=1",
            "--setopt=reposdir=/dev/null",
            "--setopt=cachedir=/tmp/dnf",
            "--repofrompath=r,/repo",
            "--repo=r",
            "repoquery",
            "--qf",
            "%{name}-%{evr}.%{arch}",
        ])
        .output()
        .expect("docker run dnf");
    assert!(
        o.status.success(),
        "dnf repoquery: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Every file under `dir` with its bytes, to show that a snapshot did not change.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).expect("prefix").to_path_buf(),
                    std::fs::read(&p).expect("read"),
                );
            }
        }
    }
    out
}

fn config(dir: &Path) -> PathBuf {
    let c = dir.join("packetary.toml");
    write(
        &c,
        &format!(
            "[releases.stable]\nbranches = [\"main\"]\ntargets = [\"{TARGET}\"]\nkeep_snapshots = 3\n"
        ),
    );
    c
}

fn publish(cfg: &Path, data: &Path, files: &[&Path]) -> common::Run {
    let mut args: Vec<String> = vec![
        "--config".into(),
        cfg.display().to_string(),
        "publish".into(),
        "stable".into(),
        TARGET.into(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    packetary(&args, data.parent().expect("parent"))
}

#[test]
fn publishing_rules_and_immutable_snapshots() {
    if !docker_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(tmp.path());
    let data = tmp.path().join("data");
    let repo = data.join("repos/stable").join(TARGET);
    let v1 = make_rpms(&tmp.path().join("v1"), &[("alpha", "1.10", "1")], "one");

    let r = publish(&cfg, &data, &[&v1[0]]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("snapshot 000001"), "{}", r.all());
    assert_eq!(dnf_list(&repo.join("latest")), ["alpha-1.10-1.noarch"]);
    let first = tree(&repo.join("000001"));

    // The same bytes again: a no-op, no new snapshot.
    let r = publish(&cfg, &data, &[&v1[0]]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("unchanged"), "{}", r.all());
    assert!(!repo.join("000002").exists());

    // Other bytes under the published NEVRA: refused, exit 1, nothing published.
    let rebuilt = make_rpms(
        &tmp.path().join("rebuilt"),
        &[("alpha", "1.10", "1")],
        "two",
    );
    let r = publish(&cfg, &data, &[&rebuilt[0]]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("raise Release: alpha-1.10-1.noarch is published with other contents"),
        "{}",
        r.all()
    );
    // A downgrade (1.9 is older than 1.10 for rpm): refused.
    let old = make_rpms(&tmp.path().join("old"), &[("alpha", "1.9", "5")], "x");
    let r = publish(&cfg, &data, &[&old[0]]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("raise Version or Release: alpha-1.9-5.noarch is lower than the published alpha-1.10-1.noarch"),
        "{}",
        r.all()
    );
    assert!(!repo.join("000002").exists(), "a refusal makes no snapshot");

    // An upgrade and a new package, given as a directory: snapshot 2 has all three.
    let v2 = tmp.path().join("v2");
    make_rpms(&v2, &[("alpha", "1.10", "2"), ("beta", "1", "1")], "y");
    let r = publish(&cfg, &data, &[&v2]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("snapshot 000002"), "{}", r.all());
    assert_eq!(
        dnf_list(&repo.join("latest")),
        [
            "alpha-1.10-1.noarch",
            "alpha-1.10-2.noarch",
            "beta-1-1.noarch"
        ]
    );
    assert_eq!(
        std::fs::read_link(repo.join("latest")).expect("latest"),
        Path::new("000002")
    );
    // The earlier snapshot is still readable and byte for byte what it was.
    assert_eq!(tree(&repo.join("000001")), first);
    assert_eq!(dnf_list(&repo.join("000001")), ["alpha-1.10-1.noarch"]);

    // Not an RPM: bad usage (2), named.
    let junk = tmp.path().join("junk.rpm");
    write(&junk, "not an rpm");
    let r = publish(&cfg, &data, &[&junk]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("junk.rpm is not an RPM package"),
        "{}",
        r.all()
    );
    // An unknown release: bad usage, naming the configured ones.
    let r = packetary(
        &[
            "--config",
            &cfg.display().to_string(),
            "publish",
            "nope",
            TARGET,
            &v2.display().to_string(),
        ],
        tmp.path(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("fix: use one of: stable"), "{}", r.all());
    // A target the release does not have: bad usage, naming its targets.
    let r = packetary(
        &[
            "--config",
            &cfg.display().to_string(),
            "publish",
            "stable",
            "other",
            &v2.display().to_string(),
        ],
        tmp.path(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no target named `other`"), "{}", r.all());
}

#[test]
fn racing_publications_are_serialized() {
    if !docker_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(tmp.path());
    let data = tmp.path().join("data");
    let repo = data.join("repos/stable").join(TARGET);
    let base = make_rpms(&tmp.path().join("base"), &[("base", "1", "1")], "b");
    let r = publish(&cfg, &data, &[&base[0]]);
    assert_eq!(r.code, 0, "{}", r.all());
    let one = make_rpms(&tmp.path().join("one"), &[("gamma", "1", "1")], "g");
    let two = make_rpms(&tmp.path().join("two"), &[("delta", "1", "1")], "d");
    let spawn = |f: &Path| {
        Command::new(common::bin())
            .args([
                "--config",
                &cfg.display().to_string(),
                "publish",
                "stable",
                TARGET,
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg(f)
            .env_remove("PACKETARY_CONFIG")
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn(&one[0]));
        let b = s.spawn(|| spawn(&two[0]));
        (
            a.join().expect("join").expect("run"),
            b.join().expect("join").expect("run"),
        )
    });
    for o in [&a, &b] {
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Each made its own snapshot on top of the other's: the last lists both.
    assert_eq!(
        dnf_list(&repo.join("latest")),
        ["base-1-1.noarch", "delta-1-1.noarch", "gamma-1-1.noarch"]
    );
    assert!(repo.join("000003").is_dir() && !repo.join("000004").exists());
}

#[test]
fn build_with_publish_publishes_what_succeeded() {
    if !docker_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(tmp.path());
    let data = tmp.path().join("data");
    let pkg = tmp.path().join("pkg");
    write(&pkg.join("hello.spec"), &common::spec("hello", "", "true"));
    let r = packetary(
        &[
            "--config",
            &cfg.display().to_string(),
            "build",
            &pkg.display().to_string(),
            "--out",
            &tmp.path().join("out").display().to_string(),
            "--publish",
            "stable",
            "--data-dir",
            &data.display().to_string(),
        ],
        tmp.path(),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("published 2 package(s) into stable/bookworm-rpmbuild, snapshot 000001"),
        "{}",
        r.all()
    );
    let latest = data.join("repos/stable").join(TARGET).join("latest");
    assert_eq!(dnf_list(&latest), ["hello-1.0-1.noarch", "hello-1.0-1.src"]);
    // An unknown release is refused before anything is built.
    let r = packetary(
        &[
            "--config",
            &cfg.display().to_string(),
            "build",
            &pkg.display().to_string(),
            "--publish",
            "nope",
        ],
        tmp.path(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(!r.stdout.contains("succeeded"), "{}", r.all());
}
