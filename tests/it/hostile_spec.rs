//! Specs that attack planning: a query that never ends, output by the hundred megabytes.
//! rpmspec runs inside the target's image under a timeout, CPU and output limits, as an
//! unprivileged user; each such spec gets a clear error of its own, the service's memory
//! stays flat, and another repository's planning is not held up (same-run comparison).
//! Needs Docker (fails in CI without it).

use crate::plan_common;
use crate::serve_common;

use std::time::{Duration, Instant};

use crate::common::docker;
use futures_util::future::BoxFuture;
use packetary::config::Config;
use packetary::model::{ReportState, TargetName, Trigger};
use packetary::plan;
use packetary::queue::{PlanError, PlannedBuild, Planner};
use packetary::spec::{SpecCache, SpecOracle, QUERY_TIMEOUT};
use plan_common::*;
use serve_common::tester::{QueueTester, AGGREGATE};
use serve_common::Mode;

fn opts() -> plan::PlanOptions {
    let c = Config::load(None).expect("defaults");
    plan::PlanOptions {
        default_branch: Some("refs/heads/main".into()),
        default_targets: c.default_targets.iter().map(|t| t.to_string()).collect(),
        known_targets: c.targets.keys().map(|t| t.to_string()).collect(),
    }
}

/// A repository whose one commit adds `specs`; returns it and the compared commits.
fn repo_with(specs: &[(&str, String)]) -> (TestRepo, git2::Oid, git2::Oid) {
    let r = TestRepo::new();
    let c1 = r.commit("main", &[put("README", "x")]);
    let edits: Vec<Edit<'_>> = specs.iter().map(|(p, t)| put(p, t)).collect();
    let c2 = r.commit("main", &edits);
    (r, c1, c2)
}

async fn plan_of(
    r: &TestRepo,
    c1: git2::Oid,
    c2: git2::Oid,
    cfg: &Config,
    oracle: &SpecOracle,
) -> (plan::Plan, Duration) {
    let t = Instant::now();
    let p = plan::plan_change(
        r.path().to_path_buf(),
        "t".into(),
        push(Some(c1), c2),
        opts(),
        &cfg.targets,
        Some(oracle),
    )
    .await
    .expect("plan");
    (p, t.elapsed())
}

/// Three ordinary packages, different in every run so that nothing is cached.
fn good_repo(tag: &str) -> (TestRepo, git2::Oid, git2::Oid) {
    repo_with(&[
        ("a/a.spec", spec("a", &format!("# {tag}"))),
        ("b/b.spec", spec("b", &format!("BuildRequires: a\n# {tag}"))),
        ("c/c.spec", spec("c", &format!("# {tag}"))),
    ])
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_query_that_never_ends_stalls_nothing_else() {
    let Some(engine) = docker().await else { return };
    let cfg = Config::load(None).expect("defaults");
    let cache = tempfile::tempdir().expect("tmp");
    let oracle = SpecOracle::with_engine(SpecCache::new(cache.path()), engine);
    // Warm the image and the engine so that both measurements below pay the same.
    let (r, c1, c2) = good_repo("warm-up");
    plan_of(&r, c1, c2, &cfg, &oracle).await;

    let stamp = packetary::model::BuildId::generate().to_string();
    let (r, c1, c2) = good_repo(&format!("alone {stamp}"));
    let (alone_plan, alone) = plan_of(&r, c1, c2, &cfg, &oracle).await;
    assert!(alone_plan.packages.iter().all(|p| p.error.is_none()));

    let (h, h1, h2) = repo_with(&[
        (
            "forever/forever.spec",
            spec("forever", "Provides: %(sleep 100000; echo x)"),
        ),
        ("fine/fine.spec", spec("fine", "")),
    ]);
    let (g, g1, g2) = good_repo(&format!("beside {stamp}"));
    let started = Instant::now();
    let hostile = async {
        let out = plan_of(&h, h1, h2, &cfg, &oracle).await;
        (out, started.elapsed())
    };
    let good = async {
        let out = plan_of(&g, g1, g2, &cfg, &oracle).await;
        (out, started.elapsed())
    };
    let (((hp, _), h_done), ((gp, beside), _)) = tokio::join!(hostile, good);
    eprintln!(
        "good repository alone {alone:?}, beside the hostile one {beside:?}; hostile one {h_done:?}"
    );
    assert!(gp.packages.iter().all(|p| p.error.is_none()), "{gp:?}");
    assert!(
        beside < alone * 3 + Duration::from_secs(3) && beside < QUERY_TIMEOUT / 2,
        "the other repository waited: {beside:?} beside, {alone:?} alone"
    );
    let forever = hp
        .packages
        .iter()
        .find(|p| p.id.as_str() == "forever")
        .expect("forever");
    let e = forever.error.as_deref().unwrap_or_default();
    assert!(
        e.contains("forever/forever.spec") && e.contains("did not finish within 20 s"),
        "{e}"
    );
    assert!(!e.contains("cannot parse"), "{e}");
    // The query was stopped near its limit, not waited for, and the spec beside it planned.
    assert!(
        h_done < QUERY_TIMEOUT + Duration::from_secs(20),
        "{h_done:?}"
    );
    let fine = hp
        .packages
        .iter()
        .find(|p| p.id.as_str() == "fine")
        .expect("fine");
    assert!(fine.error.is_none() && fine.nevr.is_some(), "{fine:?}");
}

#[tokio::test]
async fn a_flood_of_output_is_cut_and_memory_stays_flat() {
    let Some(engine) = docker().await else { return };
    let cfg = Config::load(None).expect("defaults");
    let cache = tempfile::tempdir().expect("tmp");
    let oracle = SpecOracle::with_engine(SpecCache::new(cache.path()), engine);
    let before = peak_rss_kib();
    let (r, c1, c2) = repo_with(&[
        (
            "out/out.spec",
            spec(
                "out",
                "Provides: %(head -c 33554432 /dev/zero | tr '\\0' x)",
            ),
        ),
        (
            "err/err.spec",
            spec(
                "err",
                "Provides: err-%(head -c 157286400 /dev/zero | tr '\\0' y >&2; echo done)",
            ),
        ),
        // Tries to write to the query script's own output, around the limits.
        (
            "sneak/sneak.spec",
            spec(
                "sneak",
                "Provides: sneak-%(head -c 157286400 /dev/zero > /proc/1/fd/1 2>/dev/null; echo done)",
            ),
        ),
    ]);
    let (p, took) = plan_of(&r, c1, c2, &cfg, &oracle).await;
    let grew = peak_rss_kib().saturating_sub(before);
    eprintln!("flood planned in {took:?}, peak RSS grew by {grew} KiB");
    let by = |id: &str| {
        p.packages
            .iter()
            .find(|x| x.id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} in {p:?}"))
    };
    let e = by("out").error.as_deref().unwrap_or_default();
    assert!(
        e.contains("out/out.spec") && e.contains("wrote more than 8 MiB"),
        "{e}"
    );
    // Output on stderr is cut by the same limit; the spec itself is fine.
    assert!(by("err").error.is_none(), "{:?}", by("err").error);
    assert!(by("sneak").error.is_none(), "{:?}", by("sneak").error);
    assert!(
        grew < 64 * 1024,
        "the planner's memory grew by {grew} KiB for 330 MB of hostile output"
    );
}

/// Plans `hello` for any repository; for `o/slow` only after a long while, as a repository
/// whose specs' queries all run into their time limit would.
struct SlowRepo;

const SLOW: Duration = Duration::from_secs(7);

impl Planner for SlowRepo {
    fn plan<'a>(&'a self, t: &'a Trigger) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(async move {
            if t.repo.as_str().ends_with("/slow") {
                tokio::time::sleep(SLOW).await;
            }
            Ok(vec![PlannedBuild {
                error: None,
                package: "hello".into(),
                spec_path: "hello/hello.spec".into(),
                target: TargetName::parse("t").expect("name"),
                stage: 0,
                nevr: None,
            }])
        })
    }
}

#[tokio::test]
async fn a_slow_repository_does_not_hold_up_the_planning_of_another() {
    let t = QueueTester::builder(Mode::Succeed)
        .planner(SlowRepo)
        .build()
        .await;
    t.start().await;
    let started = Instant::now();
    t.push_to("o/slow", "main", 'a').await;
    t.push_to("o/fast", "main", 'b').await;
    t.wait_status('b', AGGREGATE, ReportState::Success).await;
    let fast = started.elapsed();
    eprintln!("the other repository was planned and built in {fast:?} (slow planning: {SLOW:?})");
    assert!(fast < SLOW / 2, "waited for the slow repository: {fast:?}");
    assert_ne!(t.last_status('a', AGGREGATE), Some(ReportState::Success));
    t.wait_status('a', AGGREGATE, ReportState::Success).await;
}
