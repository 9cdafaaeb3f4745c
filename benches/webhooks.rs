//! Issue 4's figures, against the real `packetary serve` binary, a real git repository and
//! real builds in Docker, with a local stand-in for GitHub's statuses endpoint:
//!
//! 1. idle memory of a freshly started server;
//! 2. signed deliveries per second (duplicates of an accepted push and unrelated events,
//!    as GitHub redelivers and sends them), and the server's peak memory meanwhile;
//! 3. webhook received → `pending` status sent, one push at a time on a warm mirror.
//!
//! `cargo bench --bench webhooks` (needs Docker and the builder image, like the tests).
//! Sizes: PACKETARY_BENCH_DELIVERIES (default 50000), PACKETARY_BENCH_PUSHES (default 100).

#[path = "../tests/it/serve_common/mod.rs"]
#[allow(unused_imports)]
mod serve_common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use packetary::forge::github::sign;
use serve_common::*;

/// (sha, state, when it arrived) for every status the server sent.
type Seen = Arc<Mutex<Vec<(String, String, Instant)>>>;

async fn fake_github() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/repos/{owner}/{repo}/statuses/{sha}",
            post(
                |State(seen): State<Seen>,
                 UrlPath((_o, _r, sha)): UrlPath<(String, String, String)>,
                 body: Bytes| async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let state = v["state"].as_str().unwrap_or("").to_string();
                    if let Ok(mut s) = seen.lock() {
                        s.push((sha, state, Instant::now()));
                    }
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({"id": 1, "state": v["state"]})),
                    )
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// (VmRSS, VmHWM) of `pid` in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn deliver(
    client: &HttpClient,
    addr: SocketAddr,
    event: &str,
    delivery: &str,
    body: &Bytes,
    signature: &str,
) -> u16 {
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .header("user-agent", "GitHub-Hookshot/bench")
        .body(Full::new(body.clone()))
        .expect("request");
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

async fn wait_for_state(seen: &Seen, sha: &str, state: &str, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(t) = seen.lock().ok().and_then(|s| {
            s.iter()
                .find(|(h, st, _)| h == sha && st == state)
                .map(|(_, _, t)| *t)
        }) {
            return Some(t);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let deliveries = env_usize("PACKETARY_BENCH_DELIVERIES", 50_000);
    let pushes = env_usize("PACKETARY_BENCH_PUSHES", 100);
    let ensure = Command::new(env!("CARGO_BIN_EXE_packetary"))
        .args(["images", "ensure"])
        .status()
        .expect("packetary images ensure");
    assert!(ensure.success(), "the builder images are needed");

    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let url = format!("file://{}", repo.display());
    let (github, seen) = fake_github().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = write_server_config(dir.path(), addr, &format!("http://{github}"), "");
    let log = dir.path().join("server.log");
    let mut server = spawn_serve(&config, &log, "info");
    let pid = server.id();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = hyper::Request::get(format!("http://{addr}/healthz"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        if let Ok(r) = client.request(req).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "server not healthy:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = memory(pid);
    eprintln!("idle memory: {idle_rss:.1} MiB RSS (target < 50 MiB)");

    // The push that every duplicate repeats: accepted once, planned and built once.
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let push = Bytes::from(push_payload(
        "test/hello",
        &url,
        "main",
        &"0".repeat(40),
        &head,
    ));
    let push_sig = sign(SECRET, &push);
    assert_eq!(
        deliver(&client, addr, "push", "bench-push-0", &push, &push_sig).await,
        202
    );
    let unrelated = Bytes::from(std::fs::read(data("issues-opened.json")).expect("fixture"));
    let unrelated_sig = sign(SECRET, &unrelated);

    let concurrency = 64;
    let per_task = deliveries.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let client = client.clone();
        let (push, push_sig) = (push.clone(), push_sig.clone());
        let (unrelated, unrelated_sig) = (unrelated.clone(), unrelated_sig.clone());
        tasks.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<u16, usize>::new();
            for i in 0..per_task {
                let code = if i % 2 == 0 {
                    deliver(&client, addr, "push", "bench-push-0", &push, &push_sig).await
                } else {
                    let id = format!("bench-{t}-{i}");
                    deliver(&client, addr, "issues", &id, &unrelated, &unrelated_sig).await
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        }));
    }
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        for (c, n) in t.await.expect("task") {
            *codes.entry(c).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    let total: usize = codes.values().sum();
    let (rss, hwm) = memory(pid);
    eprintln!(
        "deliveries: {total} in {:.2} s = {:.0}/s (target >= 5000/s), answers {codes:?}; memory {rss:.1} MiB RSS, peak {hwm:.1} MiB (target < 100 MiB)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    assert!(
        codes.keys().all(|c| *c == 200 || *c == 204),
        "unexpected answers {codes:?}"
    );

    // Warm mirror: the first push above fetched the repository. Now one push at a time.
    assert!(
        wait_for_state(&seen, &head, "pending", Duration::from_secs(60))
            .await
            .is_some(),
        "no pending status for the first push"
    );
    let mut before = head;
    let mut latencies = Vec::new();
    for i in 0..pushes {
        let sha = bump_release(&repo, "hello-noarch");
        let body = Bytes::from(push_payload("test/hello", &url, "main", &before, &sha));
        let sig = sign(SECRET, &body);
        let sent = Instant::now();
        let code = deliver(
            &client,
            addr,
            "push",
            &format!("bench-lat-{i}"),
            &body,
            &sig,
        )
        .await;
        assert_eq!(code, 202);
        let Some(at) = wait_for_state(&seen, &sha, "pending", Duration::from_secs(30)).await else {
            panic!(
                "no pending status for push {i}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        before = sha;
    }
    latencies.sort_by(f64::total_cmp);
    let (_, hwm) = memory(pid);
    eprintln!(
        "webhook -> pending ({pushes} pushes, warm mirror, builds running meanwhile): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 1000 ms); peak memory {hwm:.1} MiB",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    let _ = server.kill();
    let _ = server.wait();
}
