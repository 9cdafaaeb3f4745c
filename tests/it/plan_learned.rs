//! Provides learned from builds: a `pkgconfig()` capability that rpm's generators add at
//! build time (so rpmspec cannot see it) is read from the built RPM when the queue records
//! the build, stored by package and target, and orders the next plans. Needs Docker (fails
//! in CI without it).

use crate::plan_common;
use crate::serve_common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::docker;
use futures_util::future::BoxFuture;
use packetary::config::Config;
use packetary::executor::{BuildReport, BuildRequest, Progress};
use packetary::model::{BuildId, Outcome, RepoId, ReportState, TargetName};
use packetary::plan;
use packetary::queue::{error_report, Runner};
use packetary::spec::{SpecCache, SpecOracle};
use plan_common::{push, put, spec, TestRepo};
use serve_common::tester::{QueueTester, AGGREGATE};
use serve_common::Mode;
use tokio_util::sync::CancellationToken;

/// A library whose `.pc` file gets `pkgconfig(granite)` from rpm's pkgconfig generator at
/// build time (the image has no pkg-config, so a stand-in does its one job).
const GRANITE: &str = r#"Name: granite
Version: 1.0
Release: 1
Summary: granite
License: MIT
BuildArch: noarch
%global __pkgconfig_provides /usr/bin/awk -F/ '{sub(/[.]pc$/, "", $NF); print "pkgconfig(" $NF ") = 1.0"}'

%description
granite

%install
mkdir -p %{buildroot}/usr/share/pkgconfig
printf 'Name: granite\nDescription: granite\nVersion: 1.0\n' > %{buildroot}/usr/share/pkgconfig/granite.pc

%files
/usr/share/pkgconfig/granite.pc
"#;

/// Answers every build with the RPMs given, as the Docker runner would after a success.
struct Built(Vec<PathBuf>);

impl Runner for Built {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let binaries = self.0.clone();
        Box::pin(async move {
            let mut r = error_report(&req, String::new());
            r.outcome = Outcome::Succeeded {
                source: "granite-1.0-1.src.rpm".into(),
                binaries,
            };
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_pkgconfig_dependency_learned_from_a_build_orders_the_next_plan() {
    let Some(engine) = docker().await else { return };
    // A real build of granite, with the real rpmbuild backend.
    let work = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(work.path().join("granite")).expect("mkdir");
    std::fs::write(work.path().join("granite/granite.spec"), GRANITE).expect("spec");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_packetary"))
        .args(["build", "granite", "--out", "out"])
        .current_dir(work.path())
        .output()
        .expect("packetary build");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rpm = work
        .path()
        .join("out/bookworm-rpmbuild/granite-1.0-1/granite-1.0-1.noarch.rpm");
    let provides = packetary::format::rpm::rpm_provides(&rpm).expect("header");
    assert_eq!(provides, ["granite = 1.0-1", "pkgconfig(granite) = 1.0"]);

    // The queue learns it when it records the build (the fake planner's one build, `hello`
    // for target `t` of `o/r`, made granite's RPM).
    let t = QueueTester::builder(Mode::Succeed)
        .runner(Built(vec![rpm.clone()]))
        .build()
        .await;
    t.start().await;
    t.push('a').await;
    t.wait_status('a', AGGREGATE, ReportState::Success).await;
    let repo = RepoId::github("o/r").expect("repo");
    let target = TargetName::parse("t").expect("target");
    let learned = t
        .store()
        .learned_provides(&repo, &target)
        .await
        .expect("learned");
    assert_eq!(learned.get("hello"), Some(&provides));

    // Planning: rpmspec alone cannot see that app needs granite; the learned Provides can.
    let r = TestRepo::new();
    let c1 = r.commit("main", &[put("README", "x")]);
    let c2 = r.commit(
        "main",
        &[
            put("granite/granite.spec", GRANITE),
            put(
                "app/app.spec",
                &spec("app", "BuildRequires: pkgconfig(granite) >= 1.0"),
            ),
        ],
    );
    let cfg = Config::load(None).expect("defaults");
    let cache = tempfile::tempdir().expect("tmp");
    let oracle = SpecOracle::with_engine(SpecCache::new(cache.path()), engine);
    let opts = plan::PlanOptions {
        default_branch: Some("refs/heads/main".into()),
        default_targets: vec!["bookworm-rpmbuild".into()],
        known_targets: vec!["bookworm-rpmbuild".into()],
    };
    let stage_of = |p: &plan::Plan, id: &str| {
        p.packages
            .iter()
            .find(|x| x.id.as_str() == id)
            .map(|x| (x.stage, x.depends_on.clone()))
            .expect("planned")
    };
    let blind = plan::plan_change(
        r.path().to_path_buf(),
        "t".into(),
        push(Some(c1), c2),
        opts.clone(),
        &cfg.targets,
        Some(&oracle),
    )
    .await
    .expect("plan");
    assert_eq!(stage_of(&blind, "app"), (0, vec![]));
    let bookworm = TargetName::parse("bookworm-rpmbuild").expect("target");
    let mut learned_map = plan::Learned::new();
    learned_map.insert(
        bookworm,
        BTreeMap::from([("granite".to_string(), learned["hello"].clone())]),
    );
    let seeing = plan::plan_change_learned(
        r.path().to_path_buf(),
        "t".into(),
        push(Some(c1), c2),
        opts,
        &cfg.targets,
        Some(&oracle),
        &learned_map,
    )
    .await
    .expect("plan");
    assert_eq!(stage_of(&seeing, "granite"), (0, vec![]));
    assert_eq!(
        stage_of(&seeing, "app"),
        (1, vec![plan::PackageId::new("granite")])
    );
}
