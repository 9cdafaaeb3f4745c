//! Issue 8's figure: the real `packetary serve`, started with the common default of 1,024
//! open files, under 2,000 idle or slow connections (half idle, half trickling a request
//! head): `/healthz` latency and signed webhooks, against the same server without the flood
//! in the same run, and its memory.
//!
//! `cargo bench --bench flood` (needs Docker for `/healthz`, like the tests).

#[path = "../tests/it/serve_common/mod.rs"]
#[allow(unused_imports)]
mod serve_common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use serve_common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `n` health checks and `n / 4` signed webhooks, one at a time; latencies in ms.
async fn probe(addr: SocketAddr, n: usize, tag: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut health, mut hooks) = (vec![], vec![]);
    for i in 0..n {
        let t = Instant::now();
        let (status, _) = http(addr, "GET", "/healthz", &[], b"").await;
        assert_eq!(status, 200);
        health.push(t.elapsed().as_secs_f64() * 1000.0);
        if i % 4 == 0 {
            let body = push_payload(
                "test/hello",
                "file:///nowhere",
                "main",
                &"0".repeat(40),
                &format!("{:040x}", i + 1),
            );
            let headers = signed_headers("push", &format!("{tag}-{i}"), &body);
            let t = Instant::now();
            let (status, _) = http(addr, "POST", "/webhooks/github", &headers, &body).await;
            assert_eq!(status, 202);
            hooks.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    health.sort_by(f64::total_cmp);
    hooks.sort_by(f64::total_cmp);
    (health, hooks)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // SAFETY: plain syscalls on local structs.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let github = wiremock::MockServer::start().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = write_server_config(dir.path(), addr, &github.uri(), "");
    let log = dir.path().join("server.log");
    let mut cmd = serve_command(&config, &log, "info");
    // SAFETY: one async-signal-safe syscall between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut server = cmd.spawn().expect("spawn packetary serve");
    wait_healthy(addr, &log).await;
    let pid = server.id();

    let (base_health, base_hooks) = probe(addr, 400, "base").await;
    let flood_started = Instant::now();
    let mut flood = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        {
            if i % 2 == 1 {
                let _ = s
                    .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
                    .await;
            }
            flood.push(s);
        }
    }
    let opened = flood.len();
    let flood_took = flood_started.elapsed();
    let trickle = tokio::spawn(async move {
        loop {
            for s in flood.iter_mut().skip(1).step_by(2) {
                let _ = s.write_all(b"x-slow: 1\r\n").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let (health, hooks) = probe(addr, 400, "flood").await;
    let (rss, hwm) = rss_mib(pid);
    trickle.abort();
    let p = |v: &[f64], q| percentile(v, q);
    eprintln!(
        "without flood: /healthz p50 {:.2} ms p99 {:.2} ms; webhook p50 {:.2} ms p99 {:.2} ms",
        p(&base_health, 0.5),
        p(&base_health, 0.99),
        p(&base_hooks, 0.5),
        p(&base_hooks, 0.99)
    );
    eprintln!(
        "under {opened} idle/slow connections (opened in {:.1} s, server limited to 1,024 files): /healthz p50 {:.2} ms p99 {:.2} ms (target p99 <= 100 ms, {:.2}x without); webhook p50 {:.2} ms p99 {:.2} ms, all {} accepted; server RSS {rss:.1} MiB, peak {hwm:.1} MiB (target < 100 MB)",
        flood_took.as_secs_f64(),
        p(&health, 0.5),
        p(&health, 0.99),
        p(&health, 0.99) / p(&base_health, 0.99),
        p(&hooks, 0.5),
        p(&hooks, 0.99),
        hooks.len()
    );
    let _ = server.kill();
    let _ = server.wait();
}
