//! Issue 20's store figures.
//!
//! 1. **Statements per push**: the SQL statements the store runs (counted from sqlx's own
//!    `sqlx::query` log events) for a one-package push, from the signed GitHub webhook
//!    entering the service's route (the queue tester posts it: verified, parsed, `ingest`)
//!    to its build's final status delivered, through the real queue over a real SQLite
//!    file, with the fake runner of the tests (a build that succeeds at once).
//! 2. **Ending one build, 2 vs 200 packages**: the time of the transaction that ends a
//!    build and writes its reports (`ledger::end`, the commit's counts, the build's status
//!    and the aggregate, as the GitHub reporter asks), median over the builds of a change,
//!    for a change of 2 and of 200 packages; beside it, in the same run, the old shape: the
//!    aggregate summed up by re-reading every latest build of the commit with a per-row
//!    `MAX(seq)` subquery.
//!
//! `cargo bench --bench ledger`

#[path = "../tests/it/serve_common/mod.rs"]
#[allow(unused_imports)]
mod serve_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use packetary::model::{
    BuildId, BuildState, ChangeKind, CommitSha, RepoId, Report, ReportState, TargetName, Trigger,
};
use packetary::store::ledger::{self, BuildEnd};
use packetary::store::{reports, Millis, NewBuild, Store, TriggerState};
use serve_common::tester::{QueueTester, HELLO};
use serve_common::Mode;
use tracing_subscriber::layer::SubscriberExt;

/// Counts sqlx's statement log events; with `PACKETARY_BENCH_LIST=1`, prints each one's
/// summary (which statements a push costs).
struct Statements(Arc<AtomicUsize>, bool);

struct Summary(String);

impl tracing::field::Visit for Summary {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        if f.name() == "db.statement" && self.0.is_empty() {
            self.0 = format!("{v:?}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        if f.name() == "db.statement" {
            self.0 = v.split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if e.metadata().target() == "sqlx::query" {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            if self.1 {
                let mut s = Summary(String::new());
                e.record(&mut s);
                eprintln!("{n:4} {}", s.0.chars().take(110).collect::<String>());
            }
        }
    }
}

fn trigger(head: &CommitSha) -> Trigger {
    Trigger {
        repo: RepoId::github("acme/pkgs").expect("repo"),
        clone_url: "file:///nowhere".into(),
        kind: ChangeKind::Push,
        ref_name: "refs/heads/main".into(),
        base: None,
        head: head.clone(),
        pr_number: None,
        base_ref: Some("main".into()),
        from_fork: false,
        sender: "alice".into(),
        only_package: None,
        only_target: None,
    }
}

/// Plans a change of `n` packages at `head` and claims them all; returns their ids.
async fn running_change(store: &Store, head: &CommitSha, n: usize) -> Vec<BuildId> {
    let t = trigger(head);
    store
        .insert_trigger(&t, TriggerState::New)
        .await
        .expect("trigger");
    let st = store
        .triggers()
        .await
        .expect("triggers")
        .into_iter()
        .rfind(|s| s.trigger.head == *head)
        .expect("stored");
    let builds: Vec<NewBuild> = (0..n)
        .map(|i| NewBuild {
            id: BuildId::generate(),
            package: format!("pkg{i:03}"),
            spec_path: format!("pkg{i:03}/pkg{i:03}.spec"),
            target: TargetName::parse("t").expect("target"),
            error: None,
            stage: 0,
        })
        .collect();
    store.insert_builds(&st, &builds).await.expect("plan");
    let mut ids = vec![];
    while let Some(b) = store.claim_next_build(Millis::now()).await.expect("claim") {
        ids.push(b.id);
    }
    assert_eq!(ids.len(), n);
    ids
}

fn status(repo: &RepoId, sha: &CommitSha, context: String, d: String) -> Report {
    Report {
        repo: repo.clone(),
        sha: sha.clone(),
        context,
        state: ReportState::Success,
        description: d,
        target_url: None,
        builds: vec![],
    }
}

/// Ends `id` as the queue does for a GitHub repository, in one transaction; `old_shape`
/// sums the aggregate up the old way instead of from the counts. Returns the time taken.
async fn end_one(store: &Store, head: &CommitSha, id: &BuildId, old_shape: bool) -> Duration {
    let repo = RepoId::github("acme/pkgs").expect("repo");
    let t0 = Instant::now();
    let mut tx = store.tx().await.expect("tx");
    let ended = ledger::end(
        &mut tx,
        &BuildEnd {
            id,
            state: BuildState::Succeeded,
            message: "built",
            phase: None,
            result_dir: None,
            phases: &[],
            provides: None,
            publication: None,
        },
    )
    .await
    .expect("end")
    .expect("it was running");
    let description = if old_shape {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT state FROM builds b WHERE repo = ? AND commit_sha = ?
               AND seq = (SELECT MAX(seq) FROM builds x WHERE x.repo = b.repo AND x.commit_sha = b.commit_sha
                          AND x.package = b.package AND x.target = b.target)
             ORDER BY package, target",
        )
        .bind(repo.as_str())
        .bind(head.as_str())
        .fetch_all(&mut *tx)
        .await
        .expect("old aggregate");
        let done = rows.iter().filter(|r| r.0 != "running").count();
        format!("{done} of {} build(s) done", rows.len())
    } else {
        let c = ended.counts.expect("counts");
        format!("{} of {} build(s) done", c.total() - c.open(), c.total())
    };
    reports::upsert_all(
        &mut tx,
        &[
            status(&repo, head, format!("packetary/t/{id}"), "built".into()),
            status(&repo, head, "packetary".into(), description),
        ],
    )
    .await
    .expect("reports");
    tx.commit().await.expect("commit");
    t0.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median time to end one build (all but the last, which ends the change) in changes of
/// `n` packages, over at least `samples` ends.
async fn end_median(n: usize, samples: usize, old_shape: bool) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("store");
    let mut times = vec![];
    let mut c = 0u32;
    while times.len() < samples {
        c += 1;
        let head = CommitSha::parse(&format!("{c:040x}")).expect("sha");
        let ids = running_change(&store, &head, n).await;
        for id in &ids[..n - 1] {
            times.push(end_one(&store, &head, id, old_shape).await);
        }
    }
    store.close().await;
    median(times)
}

fn main() {
    let count = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        )
        .with(Statements(
            count.clone(),
            std::env::var_os("PACKETARY_BENCH_LIST").is_some(),
        ));
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // 1. Statements for a one-package push.
        let t = QueueTester::new(Mode::Succeed).await;
        t.start().await;
        // Let the loops' start-up queries pass.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The first push of the branch, then the next one once the first ended (the
        // steady state: nothing of the branch left open to supersede).
        for (head, what) in [('a', "first push of a branch"), ('b', "next push of the branch")] {
            let before = count.load(Ordering::Relaxed);
            t.push(head).await;
            t.wait_status(head, HELLO, ReportState::Success).await;
            // The last delivery is marked after the forge answered.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let statements = count.load(Ordering::Relaxed) - before;
            println!("one-package push ({what}), forge event to final status: {statements} store statements");
        }

        // 2. Ending one build: 2 vs 200 packages, counts vs the old re-read.
        for old_shape in [false, true] {
            let small = end_median(2, 200, old_shape).await;
            let large = end_median(200, 200, old_shape).await;
            println!(
                "end one build ({}): 2 packages {:?}, 200 packages {:?}, ratio {:.2}",
                if old_shape {
                    "old: re-read every build"
                } else {
                    "ledger: counts"
                },
                small,
                large,
                large.as_secs_f64() / small.as_secs_f64()
            );
        }
    });
}
