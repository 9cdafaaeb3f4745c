//! What builds learn and reuse, told to a [`QueueTester`]: the inputs read once and the
//! digest that keys build avoidance, reuse that follows trust, Provides learned only from
//! pushes.

use crate::serve_common;

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use packetary::executor::provenance::{self, InputsError, Provenance, RepoRecord};
use packetary::executor::{BuildReport, BuildRequest, DepsCache, Progress};
use packetary::model::RepoId;
use packetary::model::{BuildId, Command, Outcome, ReportState};
use packetary::queue::{error_report, Runner};
use serve_common::tester::{QueueTester, HELLO};
use serve_common::Mode;
use tokio_util::sync::CancellationToken;

use ReportState::Success;

/// Reads a build's inputs (counting each read) and "builds" by writing a results directory
/// whose `build.json` is the report, with the record the request carried.
#[derive(Default, Clone)]
struct InputsRunner {
    /// Each read: the build and the inputs answered.
    reads: Arc<Mutex<Vec<(BuildId, Provenance)>>>,
    /// Each run: the build and the inputs its request carried.
    runs: Arc<Mutex<Vec<Carried>>>,
    /// Each run's dependency cache.
    caches: Arc<Mutex<Vec<DepsCache>>>,
}

type Carried = (BuildId, Option<Provenance>);

/// The inputs the fake reads: the same for every build of a package.
fn fake_inputs(req: &BuildRequest) -> Provenance {
    let mut p = Provenance {
        tree_digest: format!("sha256:tree-of-{}", req.package.label()),
        source_date_epoch: 1_700_000_000,
        backend: req.target.backend,
        image: req.target.image.clone(),
        image_id: Some("sha256:image".into()),
        arch: req.target.arch.clone(),
        macros: req.target.rpm_defines(),
        releasever: req.target.releasever.clone(),
        repositories: vec![RepoRecord {
            name: "base".into(),
            url: "https://repo.test/base".into(),
            snapshot: Some("sha256:snapshot".into()),
        }],
        spec: req.package.relative_spec(),
        source_dir: "hello".into(),
        setup: provenance::setup_digest(&req.target),
        input_digest: String::new(),
    };
    p.input_digest = provenance::input_digest(&p);
    p
}

impl Runner for InputsRunner {
    fn inputs(
        &self,
        req: &BuildRequest,
    ) -> BoxFuture<'static, Result<Option<Provenance>, InputsError>> {
        let p = fake_inputs(req);
        self.reads
            .lock()
            .expect("lock")
            .push((req.id.clone(), p.clone()));
        Box::pin(async move { Ok(Some(p)) })
    }

    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        self.runs
            .lock()
            .expect("lock")
            .push((req.id.clone(), req.inputs.clone()));
        self.caches
            .lock()
            .expect("lock")
            .push(req.deps_cache.clone());
        Box::pin(async move {
            let dir = req.out_root.join("t/hello-1-1");
            std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
            for f in ["hello-1-1.src.rpm", "hello-1-1.noarch.rpm"] {
                std::fs::write(dir.join(f), f).expect("write");
            }
            let mut r = error_report(&req, String::new());
            r.provenance = req.inputs.clone();
            r.dir = dir.clone();
            r.outcome = Outcome::Succeeded {
                source: dir.join("hello-1-1.src.rpm"),
                binaries: vec![dir.join("hello-1-1.noarch.rpm")],
            };
            let json = serde_json::to_vec_pretty(&r).expect("json");
            std::fs::write(dir.join("logs/build.json"), json).expect("write");
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The scheduler reads a build's inputs once, through the runner: the digest it stores
/// for build avoidance is the one in the record the build's `build.json` keeps, and a
/// later build with the same inputs reuses that result without running (its own
/// `build.json`, read back typed, has the same record).
#[tokio::test]
async fn inputs_are_read_once_and_key_both_reuse_and_the_record() {
    let runner = InputsRunner::default();
    let t = QueueTester::builder(Mode::Succeed)
        .runner(runner.clone())
        .build()
        .await;
    t.start().await;
    t.push('a').await;
    t.wait_status('a', HELLO, Success).await;
    let b1 = t.builds().await.remove(0);
    {
        let reads = runner.reads.lock().expect("lock");
        assert_eq!(reads.len(), 1, "inputs read once per build: {reads:?}");
        assert_eq!(reads[0].0, b1.id);
        let runs = runner.runs.lock().expect("lock");
        assert_eq!(runs.len(), 1, "{runs:?}");
        // The run was given exactly what was read.
        assert_eq!(runs[0].1.as_ref(), Some(&reads[0].1));
    }
    let dir1 = b1.result_dir.clone().expect("results directory");
    let record1: BuildReport = serde_json::from_str(
        &std::fs::read_to_string(dir1.join("logs/build.json")).expect("build.json"),
    )
    .expect("a typed record");
    let digest = record1.provenance.expect("provenance").input_digest;
    // The digest the store keys reuse with is the record's.
    let found = t
        .store()
        .succeeded_with_digest(&digest, &b1.target, &b1.repo, b1.pr_number)
        .await
        .expect("store");
    assert_eq!(found.map(|f| f.0), Some(b1.id.clone()));

    // A new commit, the same package files: reused, not run.
    t.push('b').await;
    t.wait_status('b', HELLO, Success).await;
    let b2 = t.builds().await.remove(0);
    assert_ne!(b2.id, b1.id);
    assert_eq!(
        runner.runs.lock().expect("lock").len(),
        1,
        "reused, not run"
    );
    let reads: Vec<BuildId> = runner
        .reads
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(reads, vec![b1.id.clone(), b2.id.clone()]);
    let last = t.statuses('b', HELLO).pop().expect("a status");
    assert_eq!(last.1, format!("reused from {}", b1.id));
    let dir2 = b2.result_dir.clone().expect("results directory");
    let record2: BuildReport = serde_json::from_str(
        &std::fs::read_to_string(dir2.join("logs/build.json")).expect("build.json"),
    )
    .expect("a typed record");
    assert_eq!(record2.id, b2.id);
    assert_eq!(record2.reused_from.as_ref(), Some(&b1.id));
    assert_eq!(
        record2.provenance.map(|p| p.input_digest),
        Some(digest.clone())
    );
}

/// Issue 22 (M1): build avoidance follows trust. With the same inputs, a push does not take
/// a fork pull request's results (the push's packages are published), another repository's
/// results are never taken, and a build of a pull request may take a push's.
#[tokio::test]
async fn reuse_never_takes_results_of_lower_trust_or_another_repository() {
    let runner = InputsRunner::default();
    let t = QueueTester::builder(Mode::Succeed)
        .runner(runner.clone())
        .build()
        .await;
    t.allow_writer("maintainer");
    t.start().await;
    let runs = || runner.runs.lock().expect("lock").len();
    // A fork's pull request, approved, builds first.
    t.pull_request_from_fork(7, 'f').await;
    t.comment(7, "maintainer", Command::Approve { commit: None })
        .await;
    t.wait_status('f', HELLO, Success).await;
    assert_eq!(runs(), 1);
    // A push with the same inputs builds anew.
    t.push('a').await;
    t.wait_status('a', HELLO, Success).await;
    assert_eq!(runs(), 2, "a push took a fork's results");
    // Another repository with the same inputs builds anew too.
    t.push_to("o/other", "main", 'b').await;
    t.wait_status('b', HELLO, Success).await;
    assert_eq!(runs(), 3, "results taken across repositories");
    // A later push of the same repository takes the push's results.
    t.push('c').await;
    t.wait_status('c', HELLO, Success).await;
    assert_eq!(runs(), 3, "a push's results not reused by a push");
    let last = t.statuses('c', HELLO).pop().expect("a status");
    assert!(last.1.starts_with("reused from "), "{last:?}");
    // Issue 22 (H1): the fork's build shared no dependency cache; each repository's pushes
    // share their own.
    assert_eq!(
        *runner.caches.lock().expect("lock"),
        vec![
            DepsCache::None,
            DepsCache::Shared("github:o/r".into()),
            DepsCache::Shared("github:o/other".into()),
        ]
    );
}

/// An RPM file whose header provides `names` (a lead, an empty signature header, and a
/// header with the PROVIDENAME tag only): what the host's header reader reads.
fn rpm_providing(names: &[&str]) -> Vec<u8> {
    let mut store = Vec::new();
    for n in names {
        store.extend(n.as_bytes());
        store.push(0);
    }
    let mut out = vec![0xed, 0xab, 0xee, 0xdb];
    out.resize(96, 0);
    for (n, size) in [(0u32, 0u32), (1, store.len() as u32)] {
        out.extend([0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0]);
        out.extend(n.to_be_bytes());
        out.extend(size.to_be_bytes());
    }
    for w in [1047u32, 8, 0, names.len() as u32] {
        out.extend(w.to_be_bytes());
    }
    out.extend(store);
    out
}

/// Builds `hello` at once; the n-th build's binary RPM provides `cap<n>`.
#[derive(Default, Clone)]
struct ProvidingRunner {
    runs: Arc<Mutex<usize>>,
}

impl Runner for ProvidingRunner {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let n = {
            let mut runs = self.runs.lock().expect("lock");
            *runs += 1;
            *runs
        };
        Box::pin(async move {
            let dir = req.out_root.join("t/hello-1-1");
            std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
            std::fs::write(dir.join("hello-1-1.src.rpm"), "src").expect("write");
            let rpm = dir.join("hello-1-1.x86_64.rpm");
            std::fs::write(&rpm, rpm_providing(&[&format!("cap{n}")])).expect("write");
            let mut r = error_report(&req, String::new());
            r.dir = dir.clone();
            r.outcome = Outcome::Succeeded {
                source: dir.join("hello-1-1.src.rpm"),
                binaries: vec![rpm],
            };
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Issue 22 (lower): the Provides that order a repository's plans are learned from its
/// pushes only; a fork's pull request does not overwrite them.
#[tokio::test]
async fn provides_are_learned_from_pushes_not_from_pull_requests() {
    let t = QueueTester::builder(Mode::Succeed)
        .runner(ProvidingRunner::default())
        .build()
        .await;
    t.allow_writer("maintainer");
    t.start().await;
    let learned = || async {
        let repo = RepoId::github("o/r").expect("repo");
        let target = packetary::model::TargetName::parse("t").expect("t");
        t.store()
            .learned_provides(&repo, &target)
            .await
            .expect("store")
    };
    t.push('a').await;
    t.wait_status('a', HELLO, Success).await;
    assert_eq!(
        learned().await.get("hello"),
        Some(&vec!["cap1".to_string()])
    );
    t.pull_request_from_fork(7, 'f').await;
    t.comment(7, "maintainer", Command::Approve { commit: None })
        .await;
    t.wait_status('f', HELLO, Success).await;
    assert_eq!(
        learned().await.get("hello"),
        Some(&vec!["cap1".to_string()]),
        "a pull request's packages reordered the branch's plans"
    );
}
