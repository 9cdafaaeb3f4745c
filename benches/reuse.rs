//! Issue 11's build-avoidance figure: webhook received → final `success` status of a
//! reused build. A change is built once; then, N times, `main` moves on by an unrelated
//! commit and the change is delivered again rebased onto it (a new commit, the package's
//! files unchanged): each of those builds reuses the first one's results. In-process
//! service (as `packetary serve` wires it), real git, real Docker for the first build, a
//! wiremock GitHub whose received statuses are polled every 5 ms.
//!
//! `cargo bench --bench reuse` (needs Docker and the builder image). PACKETARY_BENCH_REUSES
//! sets N (default 30).

#[path = "../tests/it/serve_common/mod.rs"]
#[allow(unused_imports)]
mod serve_common;

use std::time::{Duration, Instant};

use packetary::config::{Config, GithubAuth, GithubConfig, Secret, SecretSource};
use serve_common::*;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONTEXT: &str = "packetary/bookworm-rpmbuild/hello-noarch";

/// Waits for the package's final status on `sha`; returns it (state, description).
async fn final_status(github: &MockServer, sha: &str, timeout: Duration) -> (String, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = statuses(github)
            .await
            .into_iter()
            .rfind(|s| s.0 == sha && s.1 == CONTEXT && s.2 != "pending")
        {
            return (s.2, s.3);
        }
        assert!(Instant::now() < deadline, "no final status for {sha}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    let n: usize = std::env::var("PACKETARY_BENCH_REUSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = example_repo(dir.path());
        git(&repo, &["checkout", "-q", "-b", "change"]);
        let spec = repo.join("hello-noarch/hello-noarch.spec");
        let text = std::fs::read_to_string(&spec).expect("spec");
        std::fs::write(&spec, format!("{text}\n# changed\n")).expect("write");
        git_at(&repo, "2026-01-02T03:04:05Z", &["commit", "-q", "-am", "change"]);
        let change = git(&repo, &["rev-parse", "HEAD"]);

        let github = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path_regex("^/repos/test/hello/statuses/[0-9a-f]{40}$"))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
            .mount(&github)
            .await;
        let mut config = Config::load(None).expect("defaults");
        config.server.data_dir = dir.path().join("data");
        config.server.public_url = "http://packetary.test".into();
        config.github = Some(GithubConfig {
            api_url: github.uri(),
            git_url: Some(git_url(dir.path())),
            auth: GithubAuth::Token(SecretSource::Literal(Secret::new("ghp_bench"))),
            webhook_secrets: vec![SecretSource::Literal(Secret::new(SECRET))],
            repositories: vec!["test/*".into()],
            build_forks: false,
        });
        let bot = serve_common::Bot::start(config).await;
        let addr = bot.addr;
        let url = format!("file://{}", repo.display());
        let zero = "0".repeat(40);

        let t = Instant::now();
        let body = push_payload("test/hello", &url, "change", &zero, &change);
        assert_eq!(post_webhook(addr, "push", "first", &body).await, 202);
        let (state, desc) = final_status(&github, &change, Duration::from_secs(300)).await;
        assert_eq!(state, "success", "{desc}");
        eprintln!("first build: {:.2}s ({desc})", t.elapsed().as_secs_f64());

        let mut times = vec![];
        for i in 0..n {
            git(&repo, &["checkout", "-q", "main"]);
            std::fs::write(repo.join("README"), format!("unrelated {i}\n")).expect("write");
            git(&repo, &["add", "README"]);
            git(&repo, &["commit", "-q", "-m", &format!("readme {i}")]);
            let branch = format!("rebased-{i}");
            git(&repo, &["checkout", "-q", "-b", &branch]);
            git(&repo, &["cherry-pick", &change]);
            let head = git(&repo, &["rev-parse", "HEAD"]);
            let body = push_payload("test/hello", &url, &branch, &zero, &head);
            let t = Instant::now();
            assert_eq!(post_webhook(addr, "push", &format!("d{i}"), &body).await, 202);
            let (state, desc) = final_status(&github, &head, Duration::from_secs(60)).await;
            let took = t.elapsed();
            assert_eq!(state, "success", "{desc}");
            assert!(desc.starts_with("reused from "), "not reused: {desc}");
            times.push(took);
        }
        times.sort();
        let pct = |p: f64| {
            let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
            times[i].as_secs_f64() * 1000.0
        };
        println!(
            "reused build, webhook → final success ({} deliveries): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            times.len(),
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
        bot.stop().await.expect("stopped");
    });
}
