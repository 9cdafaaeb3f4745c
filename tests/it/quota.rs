//! A change's disk quota (issue 22, `[server] change_disk_quota`) through the real queue:
//! a pull request whose results would pass it fails with the quota's message, its
//! packages off the disk and nothing published; another change still builds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use packetary::executor::{BuildReport, BuildRequest, Progress};
use packetary::model::{BuildId, BuildState, Command, Failure, Outcome, Phase, ReportState};
use packetary::queue::Runner;
use tokio_util::sync::CancellationToken;

use crate::serve_common::tester::{sha, QueueTester, HELLO};
use crate::serve_common::Mode;

/// Each build leaves a source and a binary package of `half` bytes each, and a log; it
/// succeeds, or fails (its packages left behind) when `fail` is set.
#[derive(Clone, Default)]
struct SizedRunner {
    half: Arc<Mutex<usize>>,
    fail: Arc<Mutex<bool>>,
    runs: Arc<Mutex<Vec<BuildId>>>,
}

impl Runner for SizedRunner {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        self.runs.lock().expect("lock").push(req.id.clone());
        let half = *self.half.lock().expect("lock");
        let fail = *self.fail.lock().expect("lock");
        Box::pin(async move {
            let mut r = packetary::queue::error_report(&req, String::new());
            let dir = req.out_root.join("t").join("hello-1-1");
            std::fs::create_dir_all(dir.join("logs")).expect("dir");
            std::fs::write(dir.join("logs/build.log"), "built\n").expect("log");
            let (source, binary) = (
                dir.join("hello-1-1.src.rpm"),
                dir.join("hello-1-1.x86_64.rpm"),
            );
            std::fs::write(&source, vec![7u8; half]).expect("srpm");
            std::fs::write(&binary, vec![7u8; half]).expect("rpm");
            r.dir = dir.clone();
            r.outcome = if fail {
                Outcome::Failed {
                    phase: Phase::Build,
                    failure: Failure::Exit { code: 1 },
                    message: "build phase failed: the tests failed".into(),
                    log: dir.join("logs/build.log"),
                }
            } else {
                Outcome::Succeeded {
                    source,
                    binaries: vec![binary],
                }
            };
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Every `*.rpm` under `dir`.
fn packages_under(dir: &Path) -> Vec<PathBuf> {
    crate::common::files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rpm"))
        .collect()
}

/// Opens (or updates) fork pull request `pr` at `head` and approves that commit.
async fn approved(t: &QueueTester, pr: u64, head: char) {
    t.pull_request_from_fork(pr, head).await;
    t.comment(
        pr,
        "maintainer",
        Command::Approve {
            commit: Some(sha(head).as_str().to_string()),
        },
    )
    .await;
}

#[tokio::test]
async fn a_change_over_its_disk_quota_fails_and_keeps_nothing_while_another_builds() {
    let runner = SizedRunner::default();
    let runs = runner.runs.clone();
    // 600 KiB of packages per build, 1 MiB per change: the first build fits, the second not.
    *runner.half.lock().expect("lock") = 300 << 10;
    let t = QueueTester::builder(Mode::Succeed)
        .runner(runner.clone())
        .disk_quota(1 << 20)
        .build()
        .await;
    t.allow_writer("maintainer");
    t.start().await;

    approved(&t, 7, 'f').await;
    t.wait_status('f', HELLO, ReportState::Success).await;

    approved(&t, 7, 'e').await;
    t.wait_status('e', HELLO, ReportState::Failure).await;
    let (_, why) = t.statuses('e', HELLO).pop().expect("a status");
    assert!(
        why.starts_with("change over its disk quota (1.2 MiB of 1 MiB): fix: "),
        "{why}"
    );
    assert!(why.contains("[server] change_disk_quota"), "{why}");
    let over = t
        .builds()
        .await
        .into_iter()
        .find(|b| b.commit == sha('e'))
        .expect("the build of e");
    assert_eq!(over.state, BuildState::Failed);
    let results = t.dir().join("data/results").join(over.id.as_str());
    assert_eq!(
        packages_under(&results),
        Vec::<PathBuf>::new(),
        "the packages of a build over the quota stayed on disk"
    );
    assert!(
        results.join("t/hello-1-1/logs/build.log").is_file(),
        "its log is kept"
    );

    // Nor does any later build of the change that needs as much.
    approved(&t, 7, 'c').await;
    t.wait_status('c', HELLO, ReportState::Failure).await;
    let (_, why) = t.statuses('c', HELLO).pop().expect("a status");
    assert!(why.starts_with("change over its disk quota ("), "{why}");
    assert_eq!(runs.lock().expect("lock").len(), 3);

    // Another change is not affected.
    approved(&t, 8, 'd').await;
    t.wait_status('d', HELLO, ReportState::Success).await;
    assert_eq!(runs.lock().expect("lock").len(), 4);

    // A failed build's leftovers count too: one that leaves 1.4 MiB takes its change past
    // the quota, and the change's next build fails before it runs.
    *runner.half.lock().expect("lock") = 700 << 10;
    *runner.fail.lock().expect("lock") = true;
    approved(&t, 9, 'b').await;
    t.wait_status('b', HELLO, ReportState::Failure).await;
    let (_, why) = t.statuses('b', HELLO).pop().expect("a status");
    assert_eq!(why, "build phase failed: the tests failed");
    approved(&t, 9, 'a').await;
    t.wait_status('a', HELLO, ReportState::Failure).await;
    let (_, why) = t.statuses('a', HELLO).pop().expect("a status");
    assert!(
        why.starts_with("change over its disk quota (1.4 MiB of 1 MiB): fix: "),
        "{why}"
    );
    assert_eq!(
        runs.lock().expect("lock").len(),
        5,
        "a full change's build ran"
    );
}

/// The real executor takes no results past what the change has left: a build making a
/// 3 MiB package with 1 MiB left fails in its collect phase with the quota's message, and
/// no package of it reaches the disk (the source package written first is removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_writes_no_results_past_the_allowance() {
    let Some(engine) = crate::common::docker().await else {
        return;
    };
    use crate::common::{write, IMAGE};
    use packetary::executor::{DiskAllowance, Executor};
    use packetary::queue::DockerRunner;

    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(
        &w.join("pkg/big.spec"),
        "Name: big\nVersion: 1.0\nRelease: 1\nSummary: big\nLicense: MIT\nBuildArch: noarch\n\n\
%description\nBig.\n\n%install\nmkdir -p %{buildroot}/usr/share/big\n\
head -c 3145728 /dev/urandom > %{buildroot}/usr/share/big/blob\n\n\
%files\n/usr/share/big/blob\n\n%changelog\n* Wed Nov 25 2026 Test <t@example.org> - 1.0-1\n- test\n",
    );
    let package =
        packetary::plan::package_for_spec(&w.join("pkg"), &w.join("pkg/big.spec")).expect("pkg");
    let target = packetary::config::Config::parse(
        &format!("[targets.t]\nbackend = \"rpmbuild\"\nimage = \"{IMAGE}\"\n"),
        None,
    )
    .expect("config")
    .targets
    .into_values()
    .next()
    .expect("target");
    let req = BuildRequest {
        deps_cache: packetary::executor::DepsCache::None,
        id: BuildId::generate(),
        package,
        target,
        out_root: w.join("out"),
        extra_repos: vec![],
        source_date_epoch: None,
        inputs: None,
    };
    let runner = DockerRunner::new(Executor::new(engine));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let allowance = DiskAllowance {
        used: 9 << 20,
        quota: 10 << 20,
    };
    let report = runner
        .run_within(req, Some(allowance), tx, CancellationToken::new())
        .await;
    match &report.outcome {
        Outcome::Failed { phase, message, .. } => {
            assert_eq!(*phase, Phase::Collect, "{message}");
            assert_eq!(
                message,
                &format!("collect phase failed: {}", allowance.refusal(None))
            );
        }
        other => panic!("not failed by the quota: {other:?}"),
    }
    assert_eq!(
        packages_under(&w.join("out")),
        Vec::<PathBuf>::new(),
        "a package past the allowance reached the disk"
    );
}
