//! Spec facts from real rpm in the builder image, the spec cache, build order and cycles,
//! and `packetary build --git` end to end. Needs Docker (fails in CI without it).

mod plan_common;

use std::collections::BTreeMap;

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
    assert!(warm.notices.is_empty(), "{:?}", warm.notices);

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
