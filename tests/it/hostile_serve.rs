//! Attacks on a real `packetary serve` from the network side (issue 8): a flood of idle and
//! slow connections, and payloads that name a clone URL of the attacker's choosing. Each
//! asserts that the attack fails and that the service stays healthy.

use crate::common;
use crate::serve_common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use packetary::store::Store;
use serve_common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wiremock::MockServer;

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sets this process's soft open-file limit (`0` = the hard limit); returns the limit now.
fn set_file_limit(soft: u64, hard: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = libc::rlimit {
            rlim_cur: if soft == 0 { lim.rlim_max } else { soft },
            rlim_max: if hard == 0 { lim.rlim_max } else { hard },
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            lim = want;
        }
    }
    lim.rlim_cur
}

/// `packetary serve` with at most `files` open files (soft and hard), as on a host with the
/// common default of 1,024.
async fn serve(dir: &Path, github: &MockServer, extra: &str, files: u64) -> (Server, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = write_server_config(dir, addr, &github.uri(), extra);
    let log = dir.join("server.log");
    let mut cmd = serve_command(&config, &log, "info,packetary=debug");
    // SAFETY: only an async-signal-safe syscall between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: files,
                rlim_max: files,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server(cmd.spawn().expect("spawn packetary serve"));
    wait_healthy(addr, &log).await;
    (server, addr)
}

/// One request with a deadline: Err when the server does not answer in time.
async fn timed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, Duration), String> {
    let start = Instant::now();
    match tokio::time::timeout(
        Duration::from_secs(5),
        http(addr, method, path, headers, body),
    )
    .await
    {
        Ok((status, _)) => Ok((status, start.elapsed())),
        Err(_) => Err(format!("{method} {path}: no answer within 5 s")),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_do_not_lock_out_webhooks_or_healthz() {
    // `packetary serve` connects to Docker when it starts.
    if !common::docker_available() {
        return;
    }
    // The flood must outnumber the server's file limit, so this process needs more.
    let mine = set_file_limit(0, 0);
    assert!(
        mine >= 2_300,
        "this test needs 2,300 open files, the hard limit is {mine}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let github = MockServer::start().await;
    let (server, addr) = serve(dir.path(), &github, "header_timeout = \"60s\"", 1024).await;

    // 2,000 connections: half idle, half sending a request's headers byte by byte.
    let started = Instant::now();
    let mut flood = Vec::with_capacity(2_000);
    let mut failed = 0;
    for i in 0..2_000 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(mut s)) => {
                failed = 0;
                if i % 2 == 1 {
                    let _ = s
                        .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
                        .await;
                }
                flood.push(s);
            }
            // The backlog is full while the server closes older ones: keep flooding, unless
            // the server stopped accepting altogether.
            _ => {
                failed += 1;
                assert!(
                    failed < 20,
                    "the server stopped accepting connections after {} of the flood",
                    flood.len()
                );
                continue;
            }
        }
    }
    assert!(
        flood.len() > 1_100,
        "only {} connections opened",
        flood.len()
    );
    eprintln!(
        "{} connections opened in {:?}",
        flood.len(),
        started.elapsed()
    );
    let trickle = tokio::spawn({
        async move {
            for round in 0..20u32 {
                for s in flood.iter_mut().skip(1).step_by(2) {
                    let _ = s
                        .write_all(format!("x-slow-{round}: 1\r\n").as_bytes())
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            flood
        }
    });

    let mut health = vec![];
    for i in 0..40 {
        let (status, took) = timed(addr, "GET", "/healthz", &[], b"")
            .await
            .unwrap_or_else(|e| panic!("health check {i} under the flood: {e}"));
        assert_eq!(status, 200, "health check {i}");
        health.push(took);
        let body = push_payload(
            "test/hello",
            "file:///nowhere",
            "main",
            &"0".repeat(40),
            &format!("{:040x}", i + 1),
        );
        let headers = signed_headers("push", &format!("flood-{i}"), &body);
        let (status, _) = timed(addr, "POST", "/webhooks/github", &headers, &body)
            .await
            .unwrap_or_else(|e| panic!("signed webhook {i} under the flood: {e}"));
        assert_eq!(status, 202, "signed webhook {i}");
    }
    health.sort();
    let rss = rss_kib(server.0.id());
    eprintln!(
        "under the flood: /healthz p50 {:?}, max {:?}; server RSS {} KiB",
        health[health.len() / 2],
        health[health.len() - 1],
        rss
    );
    assert!(rss < 100 * 1024, "server RSS {rss} KiB under the flood");
    let flood = trickle.await.expect("trickle");
    drop(flood);
    let store = Store::open(&dir.path().join("data")).await.expect("store");
    assert_eq!(store.triggers().await.expect("triggers").len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_naming_another_clone_url_is_refused_and_gets_no_credentials() {
    // `packetary serve` connects to Docker when it starts.
    if !common::docker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let github = MockServer::start().await;
    // No [github] git_url: only the forge's own origin (here the mock API's) is fetched.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = write_server_config(dir.path(), addr, &github.uri(), "");
    let text = std::fs::read_to_string(&config).expect("config");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("git_url"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, text).expect("config");
    let log = dir.path().join("server.log");
    let _server = Server(spawn_serve(&config, &log, "info,packetary=debug"));
    wait_healthy(addr, &log).await;

    // Where the attacker wants the token sent.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let evil_url = format!("http://{}/test/hello.git", evil.local_addr().expect("addr"));
    let body = push_payload(
        "test/hello",
        &evil_url,
        "main",
        &"0".repeat(40),
        &"1".repeat(40),
    );
    let headers = signed_headers("push", "evil-1", &body);
    let (status, reply) = http(addr, "POST", "/webhooks/github", &headers, &body).await;
    let reply = String::from_utf8_lossy(&reply);
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("repository.clone_url"), "{reply}");
    assert!(
        reply.contains(&github.uri()),
        "names where fetching is allowed: {reply}"
    );

    let contacted = tokio::time::timeout(Duration::from_secs(2), evil.accept()).await;
    assert!(
        contacted.is_err(),
        "the service connected to the payload's host"
    );
    let store = Store::open(&dir.path().join("data")).await.expect("store");
    assert!(store.triggers().await.expect("triggers").is_empty());
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_when_the_data_disk_is_nearly_full_and_says_so() {
    // `packetary serve` connects to Docker when it starts.
    if !common::docker_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let github = MockServer::start().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    // No disk has this much free: the check must fail as on a full one.
    let config = write_server_config(
        dir.path(),
        addr,
        &github.uri(),
        "min_free_disk = \"4000000TiB\"",
    );
    let log = dir.path().join("server.log");
    let _server = Server(spawn_serve(&config, &log, "info"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        if TcpStream::connect(addr).await.is_ok() {
            break http(addr, "GET", "/healthz", &[], b"").await;
        }
        assert!(
            Instant::now() < deadline,
            "server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("disk:") && body.contains("min_free_disk"),
        "{body}"
    );
}

#[tokio::test]
async fn a_damaged_database_is_named_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("packetary.db"),
        "not a database, whatever wrote this\n".repeat(200),
    )
    .expect("write");
    let err = match Store::open(dir.path()).await {
        Ok(_) => panic!("a damaged database opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("restore it from a backup"), "{err}");
}
