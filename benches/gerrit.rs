//! Issue 12's figure: a Gerrit `patchset-created` received (posted to
//! `/webhooks/gerrit?token=`) → the first review request (the start message with the label
//! at 0) sent to Gerrit, one patchset at a time on a warm mirror, with a real repository,
//! real planning and real builds in Docker, and a stand-in for Gerrit's REST API.
//!
//! `cargo bench --bench gerrit` (needs Docker and the builder image, like the tests).
//! Size: PACKETARY_BENCH_PATCHSETS (default 40).

#[path = "../tests/it/gerrit_common/mod.rs"]
mod gerrit_common;
#[path = "../tests/it/serve_common/mod.rs"]
#[allow(unused_imports)]
mod serve_common;

use std::path::Path;
use std::time::{Duration, Instant};

use gerrit_common::*;
use packetary::config::{Config, GerritConfig, Secret, SecretSource};
use serve_common::{example_repo, git, git_url, http};

const PROJECT: &str = "test/hello";

/// Patchset 1 of change `n`: `greeting.txt` changed on top of main (the spec is unchanged,
/// so its rpmspec answer is cached, as for most patchsets of a busy repository).
fn patchset(repo: &Path, n: u64) -> (String, String) {
    let parent = git(repo, &["rev-parse", "main"]);
    git(repo, &["checkout", "-q", "--detach", "main"]);
    std::fs::write(
        repo.join("hello-noarch/greeting.txt"),
        format!("hello {n}\n"),
    )
    .expect("write");
    git(repo, &["commit", "-q", "-am", &format!("change {n}")]);
    let rev = git(repo, &["rev-parse", "HEAD"]);
    git(
        repo,
        &[
            "update-ref",
            &format!("refs/changes/{:02}/{n}/1", n % 100),
            &rev,
        ],
    );
    git(repo, &["checkout", "-q", "main"]);
    (rev, parent)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("PACKETARY_BENCH_PATCHSETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let (url, gerrit) = start().await;
    let mut config = Config::load(None).expect("defaults");
    config.parallel = 1;
    config.server.data_dir = dir.path().join("data");
    config.server.public_url = "http://packetary.test".into();
    config.gerrit = Some(GerritConfig {
        url,
        user: USER.into(),
        http_password: SecretSource::Literal(Secret::new(PASSWORD)),
        ssh: None,
        ssh_key: None,
        host_key: None,
        git_url: git_url(dir.path()),
        projects: vec!["test/*".into()],
        label: "Verified".into(),
        success_vote: 1,
        failure_vote: -1,
        webhook_token: Some(SecretSource::Literal(Secret::new(TOKEN))),
        skip_wip_and_private: true,
    });
    let bot = serve_common::Bot::start(config).await;
    let addr = bot.addr;

    let mut samples = vec![];
    // Change 1 warms the mirror and the spec cache; it is not counted.
    for c in 1..=n + 1 {
        let (rev, parent) = patchset(&repo, c);
        gerrit.add_change(&rev, PROJECT, c, 1, "main");
        let body = serde_json::to_vec(&patchset_created(PROJECT, "main", c, 1, &rev, &parent))
            .expect("json");
        let sent = Instant::now();
        let (status, _) = http(
            addr,
            "POST",
            &format!("/webhooks/gerrit?token={TOKEN}"),
            &[("content-type", "application/json".into())],
            &body,
        )
        .await;
        assert_eq!(status, 202);
        gerrit
            .wait("the start message", 120, |r| r.iter().any(|r| r.sha == rev))
            .await;
        let first = gerrit
            .reviews()
            .into_iter()
            .find(|r| r.sha == rev)
            .map(|r| r.at)
            .expect("a review");
        if c > 1 {
            samples.push(first - sent);
        }
        // One change at a time: its build ends (and is voted on) before the next.
        gerrit
            .wait("the vote", 300, |r| {
                r.iter()
                    .any(|r| r.sha == rev && r.labels.get("Verified").is_some_and(|v| *v != 0))
            })
            .await;
    }
    bot.stop().await.expect("stopped");
    samples.sort();
    println!(
        "patchset-created -> first review request, {} patchsets, warm mirror: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
}
