//! Spec facts from real rpm in the builder image, the spec cache, build order and cycles,
//! and `packetary build --git` end to end. Needs Docker (fails in CI without it).

use crate::plan_common;

use std::collections::BTreeMap;

use crate::common::docker;
use packetary::config::Config;
use packetary::plan;
use packetary::spec::{SpecCache, SpecOracle};
use plan_common::*;

const LIBFOO: &str = "Name: libfoo\nVersion: 2.0\nRelease: 1\nSummary: lib\nLicense: MIT\nBuildArch: noarch\nAutoReqProv: no\n\n\
%description\nlib\n\n%package devel\nSummary: headers\n%description devel\nheaders\n\n\
%install\nmkdir -p %{buildroot}/usr/share/libfoo-devel %{buildroot}/usr/share/libfoo\n\
echo marker > %{buildroot}/usr/share/libfoo-devel/marker\necho lib > %{buildroot}/usr/share/libfoo/lib\n\n\
%files\n/usr/share/libfoo\n\n%files devel\n/usr/share/libfoo-devel\n";

fn app_spec() -> String {
    spec(
        "app",
        "BuildRequires: libfoo-devel >= 2\n%build\ntest -f /usr/share/libfoo-devel/marker || { echo 'libfoo-devel is not installed'; exit 1; }\n",
    )
}

fn config() -> Config {
    Config::load(None).expect("defaults")
}

fn opts() -> plan::PlanOptions {
    let c = config();
    plan::PlanOptions {
        default_branch: Some("refs/heads/main".into()),
        default_targets: c.default_targets.iter().map(|t| t.to_string()).collect(),
        known_targets: c.targets.keys().map(|t| t.to_string()).collect(),
    }
}

#[tokio::test]
async fn order_cycles_and_spec_errors_from_real_rpm() {
    let Some(engine) = docker().await else { return };
    let r = TestRepo::new();
    let c1 = r.commit("main", &[put("README", "x")]);
    let c2 = r.commit(
        "main",
        &[
            put("app/app.spec", &app_spec()),
            put("libfoo/libfoo.spec", LIBFOO),
            put("x/x.spec", &spec("x", "BuildRequires: y")),
            put("y/y.spec", &spec("y", "BuildRequires: x")),
            put("bad/bad.spec", &spec("bad", "Bogus: tag")),
            put(
                "uses-bad/uses-bad.spec",
                &spec("uses-bad", "BuildRequires: bad-devel >= 1"),
            ),
            put("solo/solo.spec", &spec("solo", "BuildRequires: gcc")),
        ],
    );
    let cache_dir = tempfile::tempdir().expect("tmp");
    let cfg = config();
    let oracle = SpecOracle::with_engine(SpecCache::new(cache_dir.path()), engine);
    let started = std::time::Instant::now();
    let plan = plan::plan_change(
        r.path().to_path_buf(),
        "t".into(),
        push(Some(c1), c2),
        opts(),
        &cfg.targets,
        Some(&oracle),
    )
    .await
    .expect("plan");
    eprintln!("cold plan with rpmspec: {:?}", started.elapsed());
    let by_id: BTreeMap<&str, &plan::PlannedPackage> =
        plan.packages.iter().map(|p| (p.id.as_str(), p)).collect();
    assert_eq!(by_id["libfoo"].stage, 0);
    assert_eq!(by_id["libfoo"].name.as_deref(), Some("libfoo"));
    assert_eq!(
        by_id["libfoo"].nevr.as_ref().map(|n| n.nvr()).as_deref(),
        Some("libfoo-2.0-1")
    );
    assert_eq!(by_id["app"].stage, 1);
    assert_eq!(by_id["app"].depends_on, [plan::PackageId::new("libfoo")]);
    assert_eq!(by_id["solo"].stage, 0);
    assert!(by_id["solo"].error.is_none());
    for id in ["x", "y"] {
        let e = by_id[id].error.as_deref().unwrap_or_default();
        assert!(
            e.contains("dependency cycle") && e.contains("x → y → x") || e.contains("y → x → y"),
            "{id}: {e}"
        );
    }
    let bad = by_id["bad"].error.as_deref().unwrap_or_default();
    assert!(
        bad.contains("rpmspec cannot parse bad/bad.spec") && bad.contains("Bogus"),
        "{bad}"
    );
    // The package that needs the broken one is told so, naming it.
    let uses = by_id["uses-bad"];
    assert!(uses.error.is_none());
    assert!(
        uses.notices.len() == 1
            && uses.notices[0].contains("needs bad-devel")
            && uses.notices[0].contains("bad/bad.spec"),
        "{:?}",
        uses.notices
    );
    assert!(
        plan.notices.contains(&uses.notices[0]),
        "{:?}",
        plan.notices
    );
    assert!(by_id["solo"].notices.is_empty());
    // Order in the plan: stage 0 before stage 1.
    let pos = |id: &str| {
        plan.packages
            .iter()
            .position(|p| p.id.as_str() == id)
            .expect("present")
    };
    assert!(pos("libfoo") < pos("app"));

    // Warm: answered from the cache, with no Docker at all.
    let offline = SpecOracle::new(
        SpecCache::new(cache_dir.path()),
        Some("tcp://127.0.0.1:9".into()),
    );
    let started = std::time::Instant::now();
    let warm = plan::plan_change(
        r.path().to_path_buf(),
        "t".into(),
        push(Some(c1), c2),
        opts(),
        &cfg.targets,
        Some(&offline),
    )
    .await
    .expect("plan");
    eprintln!("warm plan: {:?}", started.elapsed());
    assert_eq!(warm.packages, plan.packages);
    assert_eq!(warm.notices, plan.notices);

    // A new spec blob with no Docker: the plan says so and still lists the package.
    let c3 = r.commit(
        "main",
        &[put("solo/solo.spec", &spec("solo", "# new blob"))],
    );
    let p = plan::plan_change(
        r.path().to_path_buf(),
        "t".into(),
        push(Some(c2), c3),
        opts(),
        &cfg.targets,
        Some(&offline),
    )
    .await
    .expect("plan");
    assert_eq!(ids(&p), ["solo"]);
    assert!(
        p.notices
            .iter()
            .any(|n| n.contains("spec queries are unavailable")),
        "{:?}",
        p.notices
    );
}

#[tokio::test]
async fn build_git_builds_in_order_with_the_plan_repository() {
    let Some(_engine) = docker().await else {
        return;
    };
    let r = TestRepo::new();
    let c1 = r.commit("main", &[put("README", "x")]);
    let c2 = r.commit(
        "main",
        &[
            put("app/app.spec", &app_spec()),
            put("libfoo/libfoo.spec", LIBFOO),
        ],
    );
    let work = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_packetary"))
        .args(["build", "--git"])
        .arg(r.url())
        .arg(format!("{c1}..{c2}"))
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .arg("-o")
        .arg(work.path().join("out"))
        .output()
        .expect("run packetary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(
        stdout.contains("ok      bookworm-rpmbuild/libfoo-2.0-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok      bookworm-rpmbuild/app-1.0-1"),
        "{stdout}"
    );
    assert!(stderr.contains("stage 1"), "{stderr}");
    let libfoo = stdout.find("libfoo-2.0-1").expect("libfoo");
    let app = stdout.find("app-1.0-1").expect("app");
    assert!(libfoo < app, "{stdout}");

    // `plan --json` of the same change, offline from the now warm mirror and cache.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_packetary"))
        .args(["plan", "--json", "--offline"])
        .arg(r.url())
        .arg(format!("{c1}..{c2}"))
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .output()
        .expect("run packetary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: plan::Plan = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(plan.packages.len(), 2);
    assert_eq!(
        plan.packages[1].depends_on,
        [plan::PackageId::new("libfoo")]
    );
}

/// An image like the builder's but whose `/bin/sh` is dash, as Debian ships it: spec
/// queries must not depend on the image's shell for `%(...)`.
fn dash_image() {
    let mut child = std::process::Command::new("docker")
        .args(["build", "-q", "-t", "packetary-test/rpmbuild-dash:1", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin"),
        b"FROM packetary/rpmbuild:bookworm\nRUN ln -sf dash /bin/sh\n",
    )
    .expect("write Dockerfile");
    drop(child.stdin.take());
    assert!(
        child.wait().expect("docker build").success(),
        "docker build"
    );
}

/// A config with the default target plus `fedora40`: a dash-as-sh image, Fedora's macros
/// and kernel release.
fn fedora_config() -> Config {
    Config::parse(
        r#"
[targets.bookworm-rpmbuild]
backend = "rpmbuild"
image = "packetary/rpmbuild:bookworm"

[targets.fedora40]
backend = "rpmbuild"
image = "packetary-test/rpmbuild-dash:1"
macros = { fedora = "40", dist = ".fc40" }
uname_r = "6.8.5-301.fc40.x86_64"
"#,
        None,
    )
    .expect("config")
}

async fn ask(
    oracle: &SpecOracle,
    cfg: &Config,
    target: &str,
    path: &str,
    text: &str,
) -> packetary::spec::Answer {
    let dir = tempfile::tempdir().expect("tmp");
    let name = path.rsplit('/').next().expect("name");
    std::fs::write(dir.path().join(name), text).expect("write");
    let t = cfg
        .targets
        .values()
        .find(|t| t.name.as_str() == target)
        .expect("target");
    let blob = git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
        .expect("hash")
        .to_string();
    let key = oracle.key(t).await;
    let mut a = oracle
        .query(
            t,
            &key,
            &[packetary::spec::SpecQuery {
                blob,
                dir: dir.path().to_path_buf(),
                spec_file: name.into(),
                path: path.into(),
            }],
        )
        .await
        .expect("query");
    a.remove(0)
}

#[tokio::test]
async fn target_macros_and_kernel_release_reach_spec_queries() {
    let Some(engine) = docker().await else { return };
    dash_image();
    let cache_dir = tempfile::tempdir().expect("tmp");
    let oracle = SpecOracle::with_engine(SpecCache::new(cache_dir.path()), engine);
    let cfg = fedora_config();
    let cond = spec(
        "cond",
        "%if 0%{?fedora} >= 40\nBuildRequires: new-thing\n%else\nBuildRequires: old-thing\n%endif\n\
         Provides: kernel-is-%(uname -r | tr -c 'a-zA-Z0-9.\\n' _)\n\
         Provides: shell-%(if [[ -n \"$BASH_VERSION\" ]]; then echo bash; else echo other; fi)\n",
    )
    .replace("Release: 1", "Release: 1%{?dist}");
    let plain = ask(
        &oracle,
        &cfg,
        "bookworm-rpmbuild",
        "rpms/cond/cond.spec",
        &cond,
    )
    .await
    .expect("parses without macros");
    let fedora = ask(&oracle, &cfg, "fedora40", "rpms/cond/cond.spec", &cond)
        .await
        .expect("parses with macros");
    assert!(
        plain.build_requires.iter().any(|b| b == "old-thing"),
        "{plain:?}"
    );
    assert!(
        fedora.build_requires.iter().any(|b| b == "new-thing"),
        "{fedora:?}"
    );
    assert_eq!(fedora.nevr.release, "1.fc40");
    assert_eq!(plain.nevr.release, "1");
    // The target's kernel release, not the Docker host's.
    assert!(
        fedora
            .provides
            .iter()
            .any(|b| b == "kernel-is-6.8.5_301.fc40.x86_64"),
        "{fedora:?}"
    );
    assert!(
        !plain.provides.iter().any(|b| b.contains("6.8.5_301")),
        "{plain:?}"
    );
    // %(...) runs under bash, whatever the image's /bin/sh is.
    assert!(
        fedora.provides.iter().any(|p| p == "shell-bash"),
        "{fedora:?}"
    );

    // `%{fedora}` used bare: an error without the target's macros, and the message shows
    // rpm's real complaint with the repository path, not the container's.
    let bare = spec(
        "bare",
        "%if %{fedora} >= 40\nBuildRequires: new-thing\n%endif\n",
    );
    let e = ask(
        &oracle,
        &cfg,
        "bookworm-rpmbuild",
        "rpms/bare/bare.spec",
        &bare,
    )
    .await
    .expect_err("fails without macros");
    assert!(
        matches!(e, packetary::spec::AnswerError::Parse { code: 1, .. }),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(
        e.starts_with("rpmspec cannot parse rpms/bare/bare.spec (exit 1): rpms/bare/bare.spec:")
            && e.contains("bad %if condition"),
        "{e}"
    );
    assert!(!e.contains("/q/"), "{e}");
    let ok = ask(&oracle, &cfg, "fedora40", "rpms/bare/bare.spec", &bare)
        .await
        .expect("parses with macros");
    assert_eq!(ok.build_requires, ["new-thing"]);
}

#[tokio::test]
async fn shared_files_rebuild_only_the_specs_that_name_them() {
    let Some(engine) = docker().await else { return };
    let r = TestRepo::new();
    let c1 = r.commit(
        "main",
        &[
            put(
                "two/a.spec",
                &spec("a", "Source0: a-data.txt\nPatch0: a-fix.patch"),
            ),
            put("two/b.spec", &spec("b", "")),
            put("two/a-data.txt", "1"),
            put("two/a-fix.patch", "1"),
            put("two/notes.txt", "1"),
            put("two/unused.tar.gz", "1"),
            put(
                "tree/SPECS/x.spec",
                &spec("x", "Source0: https://example.org/d/x-1.0.tar.gz"),
            ),
            put("tree/SPECS/y.spec", &spec("y", "")),
            put("tree/SOURCES/x-1.0.tar.gz", "1"),
        ],
    );
    let cfg = config();
    let cache_dir = tempfile::tempdir().expect("tmp");
    let oracle = SpecOracle::with_engine(SpecCache::new(cache_dir.path()), engine);
    let plan_of = |before, after| {
        let path = r.path().to_path_buf();
        let (cfg, oracle) = (&cfg, &oracle);
        async move {
            plan::plan_change(
                path,
                "t".into(),
                push(Some(before), after),
                opts(),
                &cfg.targets,
                Some(oracle),
            )
            .await
            .expect("plan")
        }
    };
    // Named by a's Source0 / Patch0 and x's Source0 (a URL: rpm keeps the file name).
    let c2 = r.commit(
        "main",
        &[
            put("two/a-data.txt", "2"),
            put("two/a-fix.patch", "2"),
            put("tree/SOURCES/x-1.0.tar.gz", "2"),
        ],
    );
    let p = plan_of(c1, c2).await;
    assert_eq!(ids(&p), ["tree/SPECS/x.spec", "two/a.spec"], "{p:?}");
    assert_eq!(
        p.packages[1].reasons,
        [plan::Reason::Changed {
            paths: vec!["two/a-data.txt".into(), "two/a-fix.patch".into()],
            count: 2
        }]
    );
    assert!(
        p.notices
            .iter()
            .any(|n| n.contains("2 spec(s) sharing a directory")),
        "{:?}",
        p.notices
    );

    // Named by no spec: every spec of the directory, and the reason says why.
    let c3 = r.commit("main", &[put("two/notes.txt", "2")]);
    let p = plan_of(c2, c3).await;
    assert_eq!(ids(&p), ["two/a.spec", "two/b.spec"]);
    for pk in &p.packages {
        assert!(
            matches!(&pk.reasons[..], [plan::Reason::Shared { dir, paths, .. }] if dir == "two" && paths == &["two/notes.txt".to_string()]),
            "{:?}",
            pk.reasons
        );
        assert!(
            pk.reasons[0].to_string().contains("named by none"),
            "{}",
            pk.reasons[0]
        );
    }

    // An unused file deleted: nothing to build, and a notice.
    let c4 = r.commit("main", &[Delete("two/unused.tar.gz")]);
    let p = plan_of(c3, c4).await;
    assert!(p.packages.is_empty(), "{p:?}");
    assert!(
        p.notices
            .iter()
            .any(|n| n.contains("deleted two/unused.tar.gz")),
        "{:?}",
        p.notices
    );

    // A spec edited together with a file only the other names: each for its own reason.
    let c5 = r.commit(
        "main",
        &[
            put("two/b.spec", &spec("b", "# edit")),
            put("two/a-data.txt", "3"),
        ],
    );
    let p = plan_of(c4, c5).await;
    assert_eq!(ids(&p), ["two/a.spec", "two/b.spec"]);
}
