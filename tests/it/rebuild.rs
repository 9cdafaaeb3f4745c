//! `packetary rebuild`: a recorded build made again from its recorded inputs gives the same
//! payload digests; a rebuild whose image changed says so. Real Docker, real rpm.

use crate::common;

use common::*;
use std::path::Path;
use std::process::Command;

const T: &str = "bookworm-rpmbuild";

/// A C package whose payload carries files made during the build (mtimes, a binary).
fn c_package(dir: &Path) {
    write(
        &dir.join("pkg/repro-c.spec"),
        "Name: repro-c\nVersion: 1.0\nRelease: 1\nSummary: t\nLicense: MIT\nSource0: main.c\n\
%description\nt\n%prep\ncp %{SOURCE0} .\n%build\ngcc -O2 -g -o repro-c main.c\necho stamp > stamp\n\
%install\ninstall -D -m 755 repro-c %{buildroot}/usr/bin/repro-c\ninstall -D -m 644 stamp %{buildroot}/usr/share/repro-c/stamp\n\
%files\n/usr/bin/repro-c\n/usr/share/repro-c/stamp\n",
    );
    write(
        &dir.join("pkg/main.c"),
        "#include <stdio.h>\nint main(void) { puts(__FILE__); return 0; }\n",
    );
}

#[test]
fn rebuild_of_a_recorded_build_is_identical() {
    if !docker_available() {
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    c_package(t.path());
    let out = t.path().join("out");
    let b = packetary(
        &["build", "pkg", "-t", T, "-o", out.to_str().unwrap()],
        t.path(),
    );
    assert_eq!(b.code, 0, "{}", b.all());
    let dir = result_dir(&out, T);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("logs/build.json")).unwrap())
            .unwrap();
    assert_eq!(json["format"], 3);
    assert!(prov_setup(&json).starts_with("sha256:"));
    let prov = &json["provenance"];
    assert!(prov["tree_digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(prov["image_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(prov["source_date_epoch"].as_i64().unwrap() > 0);
    assert!(json["command"].is_array(), "the command, once");
    // rpm was told: BUILDTIME is SOURCE_DATE_EPOCH.
    let bt = rpm_query(
        &dir,
        "repro-c-1.0-1.x86_64.rpm",
        "%{BUILDTIME} %{BUILDHOST}",
    );
    assert_eq!(
        bt,
        format!("{} packetary", prov["source_date_epoch"]),
        "{bt}"
    );

    let r = packetary(&["rebuild", dir.to_str().unwrap()], t.path());
    assert_eq!(r.code, 0, "{}", r.all());
    for f in ["repro-c-1.0-1.src.rpm", "repro-c-1.0-1.x86_64.rpm"] {
        assert!(
            r.stdout.contains(&format!("identical {f}")),
            "{f}: {}",
            r.all()
        );
    }
    assert!(!r.stdout.contains("differs"), "{}", r.all());
    assert!(!r.stdout.contains("input changed"), "{}", r.all());

    // A changed input file: said, and the source package differs.
    std::fs::write(
        dir.join("inputs/main.c"),
        "#include <stdio.h>\nint main(void) { return 1; }\n",
    )
    .unwrap();
    let r = packetary(&["rebuild", dir.to_str().unwrap()], t.path());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("input changed: package files"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("differs repro-c-1.0-1.x86_64.rpm"),
        "{}",
        r.all()
    );

    // Bad usage.
    let r = packetary(&["rebuild", "no-such-build"], t.path());
    assert_eq!(r.code, 2, "{}", r.all());
}

/// Removes the images a test made, whatever its outcome.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// Builds `tag` from the builder image with one label: same files, another image id.
/// Returns the image id.
fn derived_image(tag: &str, label: &str) -> String {
    let ctx = tempfile::tempdir().expect("tmp");
    write(
        &ctx.path().join("Dockerfile"),
        &format!("FROM {IMAGE}\nLABEL org.packetary.test-rebuild={label}\n"),
    );
    let st = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(ctx.path())
        .output()
        .expect("docker build");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    String::from_utf8_lossy(&st.stdout).trim().to_string()
}

#[test]
fn rebuild_says_the_image_changed() {
    if !docker_available() {
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    c_package(t.path());
    let tag = format!("packetary/test-rebuild:{}", std::process::id());
    let mut images = Images(vec![tag.clone()]);
    images.0.push(derived_image(&tag, "one"));
    write(
        &t.path().join("p.toml"),
        &format!("[targets.{T}]\nbackend = \"rpmbuild\"\nimage = \"{tag}\"\n"),
    );
    let out = t.path().join("out");
    let b = packetary(
        &[
            "build",
            "pkg",
            "--config",
            "p.toml",
            "-o",
            out.to_str().unwrap(),
        ],
        t.path(),
    );
    assert_eq!(b.code, 0, "{}", b.all());
    let dir = result_dir(&out, T);
    images.0.push(derived_image(&tag, "two"));
    let r = packetary(
        &["rebuild", "--config", "p.toml", dir.to_str().unwrap()],
        t.path(),
    );
    assert!(
        r.stdout.contains("input changed: image id (sha256:"),
        "{}",
        r.all()
    );
    assert!(
        !r.stdout.contains("input changed: package files"),
        "{}",
        r.all()
    );
    // Same files in the image: same packages.
    assert_eq!(r.code, 0, "{}", r.all());
}

/// The recorded setup digest (issue 22, M2): Packetary's version, the driver, the target's
/// dist, chroot setup and limits.
fn prov_setup(json: &serde_json::Value) -> String {
    json["provenance"]["setup"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
