//! A plan dropped while its spec query runs (after the query container was created,
//! before or while it starts) leaves no container behind. Needs Docker (fails in CI
//! without it).

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use packetary::config::Config;
use packetary::docker::{Engine, LABEL_BUILD};
use packetary::spec::{SpecCache, SpecOracle, SpecQuery};

/// Spec query containers (label value `spec-…`) that exist now.
async fn spec_containers(engine: &Engine) -> HashSet<String> {
    engine
        .containers_with_label_values(LABEL_BUILD)
        .await
        .expect("list containers")
        .into_iter()
        .filter(|(_, v)| v.starts_with("spec-"))
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_spec_query_leaves_no_container() {
    let Some(engine) = common::docker().await else {
        return;
    };
    let cfg = Config::load(None).expect("defaults");
    let target = cfg
        .targets
        .values()
        .find(|t| t.image.contains("rpmbuild"))
        .or_else(|| cfg.targets.values().next())
        .expect("a target")
        .clone();
    let tmp = tempfile::tempdir().expect("tmp");
    let pkg = tmp.path().join("pkg");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    // Slow enough that the container is still there when the query is dropped.
    common::write(
        &pkg.join("slow.spec"),
        "Name: slow\nVersion: %(sleep 15; echo 1)\nRelease: 1\nSummary: s\nLicense: MIT\n%description\ns\n%files\n",
    );
    // Drop right after the container exists (create done, start maybe not), and once more
    // while it runs.
    for (round, after_seen) in [Duration::ZERO, Duration::from_millis(1500)]
        .into_iter()
        .enumerate()
    {
        let before = spec_containers(&engine).await;
        let oracle = Arc::new(SpecOracle::with_engine(
            SpecCache::new(tmp.path().join(format!("cache{round}"))),
            engine.clone(),
        ));
        let key = oracle.key(&target).await;
        let query = SpecQuery {
            // Unique per round: never a cache hit.
            blob: format!("{:040x}", rand::random::<u128>()),
            dir: pkg.clone(),
            spec_file: "slow.spec".into(),
            path: "pkg/slow.spec".into(),
        };
        let task = {
            let (oracle, target) = (oracle.clone(), target.clone());
            tokio::spawn(async move { oracle.query(&target, &key, &[query]).await })
        };
        let seen = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let now = spec_containers(&engine).await;
                if now.difference(&before).next().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "round {round}: no query container appeared");
        tokio::time::sleep(after_seen).await;
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()), "round {round}");

        let mut left = HashSet::new();
        for _ in 0..50 {
            left = spec_containers(&engine)
                .await
                .difference(&before)
                .cloned()
                .collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            left.is_empty(),
            "round {round}: the dropped query left its containers: {left:?}"
        );
    }
}
