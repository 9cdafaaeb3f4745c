//! Helpers shared by the `serve_*` tests.
#![allow(dead_code)]
mod fakes;
mod openapi;
pub mod tester;

pub use fakes::*;
pub use openapi::*;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use packetary::forge::github::sign;
use packetary::forge::{DeliveryError, Forge};
use packetary::model::RepoId;
use packetary::model::Report;
use serde_json::Value;

pub const SECRET: &str = "It's a Secret to Everybody";

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/github")
        .join(name)
}

/// A webhook payload from @octokit/webhooks-examples (see tests/extract_github_fixtures.py).
pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(data(name)).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A webhook request as GitHub sends it, signed with `secret`.
pub fn webhook(
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: Option<&str>,
) -> axum::http::Request<axum::body::Body> {
    let mut b = axum::http::Request::builder()
        .method("POST")
        .uri("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("user-agent", "GitHub-Hookshot/test");
    if let Some(s) = secret {
        b = b.header("x-hub-signature-256", sign(s, body));
    }
    b.body(axum::body::Body::from(body.to_vec()))
        .expect("request")
}

/// A forge that records what it is told.
#[derive(Default)]
pub struct FakeForge {
    pub delivered: Mutex<Vec<Report>>,
    pub writers: Mutex<Vec<String>>,
    /// The next this many permission checks fail as a forge that is down would.
    pub permission_faults: Mutex<u32>,
}

impl Forge for FakeForge {
    fn deliver<'a>(
        &'a self,
        report: &'a Report,
    ) -> BoxFuture<'a, Result<packetary::forge::Delivered, DeliveryError>> {
        Box::pin(async move {
            let mut delivered = self.delivered.lock().expect("lock");
            delivered.push(report.clone());
            Ok(packetary::forge::Delivered {
                forge_ref: Some(format!("fake-{}", delivered.len())),
            })
        })
    }

    fn can_write<'a>(
        &'a self,
        _repo: &'a RepoId,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, DeliveryError>> {
        Box::pin(async move {
            let mut faults = self.permission_faults.lock().expect("lock");
            if *faults > 0 {
                *faults -= 1;
                return Err(DeliveryError {
                    message: "502 Bad Gateway".into(),
                    retry_after: None,
                    permanent: false,
                    obsolete: false,
                });
            }
            Ok(self.writers.lock().expect("lock").iter().any(|w| w == user))
        })
    }
}

pub fn arc_forge() -> Arc<FakeForge> {
    Arc::new(FakeForge::default())
}

// ---- git ---------------------------------------------------------------------------------

pub fn git(dir: &Path, args: &[&str]) -> String {
    git_with(dir, args, None)
}

/// git with both dates set to `date` (a cherry-pick keeps the author date of its commit).
pub fn git_at(dir: &Path, date: &str, args: &[&str]) -> String {
    git_with(dir, args, Some(date))
}

fn git_with(dir: &Path, args: &[&str], date: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org");
    if let Some(d) = date {
        cmd.env("GIT_AUTHOR_DATE", d).env("GIT_COMMITTER_DATE", d);
    }
    let out = cmd.output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with the hello-noarch example on `main`; returns its path.
pub fn example_repo(root: &Path) -> PathBuf {
    let repo = root.join("git/test/hello");
    std::fs::create_dir_all(repo.join("hello-noarch")).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-noarch");
    for f in ["hello-noarch.spec", "greeting.txt"] {
        std::fs::copy(ex.join(f), repo.join("hello-noarch").join(f)).expect("copy");
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "hello"]);
    repo
}

/// The `[github] git_url` under which [`example_repo`] is `test/hello`: the service
/// fetches from there whatever clone URL a payload names.
pub fn git_url(root: &Path) -> String {
    format!("file://{}/git", root.display())
}

/// Adds a second package, `hello-two` (hello-noarch under another name), and commits it;
/// returns the new head.
pub fn add_second_package(repo: &Path) -> String {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-noarch");
    let dir = repo.join("hello-two");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let spec = std::fs::read_to_string(ex.join("hello-noarch.spec")).expect("spec");
    std::fs::write(
        dir.join("hello-two.spec"),
        spec.replacen(
            "Name:           hello-noarch",
            "Name:           hello-two",
            1,
        ),
    )
    .expect("write");
    std::fs::copy(ex.join("greeting.txt"), dir.join("greeting.txt")).expect("copy");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "hello-two"]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Bumps the Release of `package`'s spec and commits; returns the new head.
pub fn bump_release(repo: &Path, package: &str) -> String {
    let spec = repo.join(package).join(format!("{package}.spec"));
    let text = std::fs::read_to_string(&spec).expect("spec");
    let release = text
        .lines()
        .find_map(|l| l.strip_prefix("Release:"))
        .and_then(|r| r.trim().parse::<u32>().ok())
        .expect("a numeric Release");
    std::fs::write(
        &spec,
        text.replacen(
            &format!("Release:        {release}"),
            &format!("Release:        {}", release + 1),
            1,
        ),
    )
    .expect("write");
    git(
        repo,
        &["commit", "-q", "-am", &format!("{package}: release")],
    );
    git(repo, &["rev-parse", "HEAD"])
}

/// A push payload (from the fixture) for `repo_dir`'s `branch` at `after`.
pub fn push_payload(
    full_name: &str,
    clone_url: &str,
    branch: &str,
    before: &str,
    after: &str,
) -> Vec<u8> {
    let mut p = fixture("push-branch.json");
    p["ref"] = Value::from(format!("refs/heads/{branch}"));
    p["before"] = Value::from(before);
    p["after"] = Value::from(after);
    p["created"] = Value::from(before.chars().all(|c| c == '0'));
    p["repository"]["full_name"] = Value::from(full_name);
    p["repository"]["clone_url"] = Value::from(clone_url);
    serde_json::to_vec(&p).expect("json")
}

// ---- a tiny HTTP client (no client crate needed for a few requests) ---------------------

/// Sends one HTTP/1.1 request to `addr` and returns the status and body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    let mut out = vec![];
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let mut body = out[split..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

/// The headers GitHub sends with a delivery of `body`, signed with [`SECRET`].
pub fn signed_headers(event: &str, delivery: &str, body: &[u8]) -> [(&'static str, String); 4] {
    [
        ("content-type", "application/json".to_string()),
        ("x-github-event", event.to_string()),
        ("x-github-delivery", delivery.to_string()),
        ("x-hub-signature-256", sign(SECRET, body)),
    ]
}

/// Posts a signed webhook to a running server.
pub async fn post_webhook(
    addr: std::net::SocketAddr,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> u16 {
    let headers = signed_headers(event, delivery, body);
    http(addr, "POST", "/webhooks/github", &headers, body)
        .await
        .0
}

/// The statuses a mock GitHub received, in order: (sha, context, state, description, target_url).
pub async fn statuses(
    server: &wiremock::MockServer,
) -> Vec<(String, String, String, String, String)> {
    let mut out = vec![];
    for r in server.received_requests().await.unwrap_or_default() {
        if let Some(sha) = r.url.path().split("/statuses/").nth(1) {
            let b: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            check_request_body("post", "/repos/{owner}/{repo}/statuses/{sha}", &b).unwrap_or_else(
                |e| {
                    panic!("status body does not conform to GitHub's OpenAPI description: {e}\n{b}")
                },
            );
            let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
            out.push((
                sha.to_string(),
                s("context"),
                s("state"),
                s("description"),
                s("target_url"),
            ));
        }
    }
    out
}

/// Waits until every context seen for `sha` has a final state, with the aggregate among them.
pub async fn wait_final(
    server: &wiremock::MockServer,
    sha: &str,
    timeout: std::time::Duration,
) -> Vec<(String, String, String, String, String)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let all: Vec<_> = statuses(server)
            .await
            .into_iter()
            .filter(|s| s.0 == sha)
            .collect();
        let mut last: std::collections::BTreeMap<String, String> = Default::default();
        for s in &all {
            last.insert(s.1.clone(), s.2.clone());
        }
        let done = last.contains_key("packetary")
            && last.len() > 1
            && last.values().all(|s| s != "pending");
        if done {
            return all;
        }
        if std::time::Instant::now() > deadline {
            panic!("statuses of {sha} not final after {timeout:?}: {all:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

// ---- the real server as a child process ----------------------------------------------

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Writes `dir/packetary.toml` for a `packetary serve` on `addr` with its data in
/// `dir/data`, reporting to `api_url` with the token from PACKETARY_TEST_TOKEN, one build at
/// a time; `server_extra` adds lines to `[server]`. Returns the file's path.
pub fn write_server_config(
    dir: &Path,
    addr: std::net::SocketAddr,
    api_url: &str,
    server_extra: &str,
) -> PathBuf {
    let config = dir.join("packetary.toml");
    std::fs::write(
        &config,
        format!(
            r#"[build]
parallel = 1
[server]
listen = "{addr}"
data_dir = "{data}"
public_url = "http://packetary.test"
{server_extra}
[github]
api_url = "{api_url}"
git_url = "{git_url}"
token = {{ env = "PACKETARY_TEST_TOKEN" }}
webhook_secrets = ["{SECRET}"]
repositories = ["test/*"]
[targets.bookworm-rpmbuild]
backend = "rpmbuild"
image = "packetary/rpmbuild:bookworm"
"#,
            data = dir.join("data").display(),
            git_url = git_url(dir),
        ),
    )
    .expect("config");
    config
}

/// Waits until a spawned `packetary serve` answers `/healthz`; panics with its log if not.
pub async fn wait_healthy(addr: std::net::SocketAddr, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            tokio::net::TcpStream::connect(addr).await.map(|_| ())
        })
        .await
        {
            if http(addr, "GET", "/healthz", &[], b"").await.0 == 200 {
                return;
            }
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "server not healthy; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Starts the real binary's `serve` with `config`, its log (filter `log_filter`) appended
/// to `log`.
pub fn spawn_serve(config: &Path, log: &Path, log_filter: &str) -> std::process::Child {
    serve_command(config, log, log_filter)
        .spawn()
        .expect("spawn packetary serve")
}

/// The command [`spawn_serve`] runs, to adjust before spawning.
pub fn serve_command(config: &Path, log: &Path, log_filter: &str) -> std::process::Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_packetary"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("PACKETARY_TEST_TOKEN", "ghp_crash")
        .env("PACKETARY_LOG", log_filter)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    cmd
}

// ---- the service in this process --------------------------------------------------------

/// The service as `packetary serve` runs it (`Service::from_config`, then `serve`), in this
/// process, on a free loopback port; fetches need no credentials (`file://` repositories).
pub struct Bot {
    pub addr: std::net::SocketAddr,
    pub store: packetary::store::Store,
    stop: tokio_util::sync::CancellationToken,
    served: tokio::task::JoinHandle<Result<(), packetary::service::ServiceError>>,
}

impl Bot {
    pub async fn start(config: packetary::config::Config) -> Bot {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Bot::start_on(config, listener).await
    }

    /// On a listener of the test's own (bound first, when the configuration names its port).
    pub async fn start_on(
        config: packetary::config::Config,
        listener: tokio::net::TcpListener,
    ) -> Bot {
        let service = packetary::service::Service::from_config(
            config,
            packetary::service::ServiceOptions {
                git_auth: Some(packetary::git::FetchAuth::None),
            },
        )
        .await
        .expect("service");
        let store = service.store().clone();
        let addr = listener.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(service.serve(listener, {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }));
        Bot {
            addr,
            store,
            stop,
            served,
        }
    }

    /// Stops the service as SIGTERM does and waits (up to a minute) for it to end.
    pub async fn stop(self) -> Result<(), packetary::service::ServiceError> {
        self.stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(60), self.served)
            .await
            .expect("the service stops within a minute")
            .expect("the service task")
    }
}

/// Adds `hello-slow` (hello-noarch's spec with `build` as its %build) to the example
/// repository, sorting first, in its first commit: a push that creates `main` plans only
/// what that root commit holds as new. Returns the commit.
pub fn add_slow_package(repo: &Path, build: &str) -> String {
    let slow = repo.join("a-slow");
    std::fs::create_dir_all(&slow).expect("mkdir");
    let spec = std::fs::read_to_string(repo.join("hello-noarch/hello-noarch.spec")).expect("spec");
    let spec = spec
        .replace("hello-noarch", "hello-slow")
        .replace("%install", &format!("%build\n{build}\n\n%install"));
    std::fs::write(slow.join("hello-slow.spec"), spec).expect("write");
    std::fs::copy(
        repo.join("hello-noarch/greeting.txt"),
        slow.join("greeting.txt"),
    )
    .expect("copy");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "--amend", "-m", "hello and slow"]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Pull request 5 of the example repository from branch `feature`: a first head whose
/// %build is `slow_build`, then a fixed one (Release 2), `refs/pull/5/head` at the second
/// (GitHub carries it in the base repository). Returns (base, first head, second head).
pub fn slow_then_fast_pull_request(repo: &Path, slow_build: &str) -> (String, String, String) {
    let base = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "-q", "-b", "feature"]);
    let spec = repo.join("hello-noarch/hello-noarch.spec");
    let original = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(
        &spec,
        original.replace("%install", &format!("%build\n{slow_build}\n\n%install")),
    )
    .expect("write");
    git(repo, &["commit", "-q", "-am", "slow"]);
    let slow = git(repo, &["rev-parse", "HEAD"]);
    std::fs::write(
        &spec,
        original.replace("Release:        1", "Release:        2"),
    )
    .expect("write");
    git(repo, &["commit", "-q", "-am", "fast"]);
    let fast = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["update-ref", "refs/pull/5/head", &fast]);
    (base, slow, fast)
}

/// A `pull_request` webhook body (`opened` or `synchronize`) for pull request 5 of
/// `test/hello` at `url`, from `feature` at `head` onto `main` at `base`.
pub fn pull_request_payload(action: &str, head: &str, base: &str, url: &str) -> Vec<u8> {
    let mut p: Value = fixture(if action == "opened" {
        "pull_request-opened.json"
    } else {
        "pull_request-synchronize.json"
    });
    p["action"] = Value::from(action);
    p["number"] = Value::from(5);
    p["repository"]["full_name"] = Value::from("test/hello");
    p["repository"]["clone_url"] = Value::from(url);
    p["pull_request"]["head"]["sha"] = Value::from(head);
    p["pull_request"]["head"]["ref"] = Value::from("feature");
    p["pull_request"]["head"]["repo"]["full_name"] = Value::from("test/hello");
    p["pull_request"]["base"]["sha"] = Value::from(base);
    p["pull_request"]["base"]["ref"] = Value::from("main");
    serde_json::to_vec(&p).expect("json")
}

/// A GitHub stand-in that takes every status of `test/hello`.
pub async fn github_taking_statuses() -> wiremock::MockServer {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("^/repos/test/hello/statuses/"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .mount(&github)
        .await;
    github
}
