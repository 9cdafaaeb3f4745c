//! End to end: a real git repository, signed webhooks over HTTP, real builds in Docker, and
//! the statuses a mock GitHub receives.

use crate::common;
use crate::serve_common;

use std::time::Duration;

use packetary::config::{Config, GithubAuth, GithubConfig, Secret, SecretSource};
use packetary::model::BuildState;
use packetary::service::{Service, ServiceOptions};
use serde_json::Value;
use serve_common::*;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONTEXT: &str = "packetary/bookworm-rpmbuild/hello-noarch";

/// The embedded defaults (one target, bookworm-rpmbuild), with the data under `dir/data`,
/// two builds at a time, and a `[github]` table reporting to `github`.
fn bot_config(dir: &std::path::Path, github: &MockServer) -> Config {
    let mut config = Config::load(None).expect("defaults");
    config.parallel = 2;
    config.server.data_dir = dir.join("data");
    config.server.public_url = "http://packetary.test".into();
    config.server.max_attempts = 2;
    config.server.retry_backoff = Duration::from_secs(1);
    config.server.shutdown_grace = Duration::from_secs(5);
    config.server.body_limit = 1 << 20;
    config.github = Some(GithubConfig {
        api_url: github.uri(),
        git_url: Some(git_url(dir)),
        auth: GithubAuth::Token(SecretSource::Literal(Secret::new("ghp_e2e"))),
        webhook_secrets: vec![SecretSource::Literal(Secret::new(SECRET))],
        repositories: vec!["test/*".into()],
        build_forks: false,
    });
    config
}

async fn start_bot(dir: &std::path::Path, github: &MockServer) -> Bot {
    Bot::start(bot_config(dir, github)).await
}

async fn mock_github() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("^/repos/test/hello/statuses/[0-9a-f]{40}$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .mount(&server)
        .await;
    server
}

fn contexts_in_order(
    all: &[(String, String, String, String, String)],
    context: &str,
) -> Vec<String> {
    all.iter()
        .filter(|s| s.1 == context)
        .map(|s| s.2.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_builds_in_docker_and_reports_statuses() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let github = mock_github().await;
    let bot = start_bot(dir.path(), &github).await;

    let url = format!("file://{}", repo.display());
    let body = push_payload("test/hello", &url, "main", &"0".repeat(40), &head);
    assert_eq!(post_webhook(bot.addr, "push", "e2e-1", &body).await, 202);
    let all = wait_final(&github, &head, Duration::from_secs(180)).await;

    let per_package = contexts_in_order(&all, CONTEXT);
    assert_eq!(
        per_package.first().map(String::as_str),
        Some("pending"),
        "{all:#?}"
    );
    assert_eq!(
        per_package.last().map(String::as_str),
        Some("success"),
        "{all:#?}"
    );
    let aggregate = contexts_in_order(&all, "packetary");
    assert_eq!(
        aggregate.first().map(String::as_str),
        Some("pending"),
        "{all:#?}"
    );
    assert_eq!(
        aggregate.last().map(String::as_str),
        Some("success"),
        "{all:#?}"
    );
    assert!(
        all.iter().all(|s| s.1 == CONTEXT || s.1 == "packetary"),
        "{all:#?}"
    );

    // The build page, its log and its artifacts, as linked from the status.
    let target_url = &all.iter().rev().find(|s| s.1 == CONTEXT).expect("status").4;
    let page_path = target_url
        .strip_prefix("http://packetary.test")
        .expect("public url");
    let (status, page) = http(bot.addr, "GET", page_path, &[], b"").await;
    let page = String::from_utf8_lossy(&page).into_owned();
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("hello-noarch") && page.contains("succeeded") && page.contains(&head),
        "{page}"
    );
    assert!(
        page.contains("/logs/build.log") && page.contains(".noarch.rpm"),
        "{page}"
    );
    let (status, log) = http(
        bot.addr,
        "GET",
        &format!("{page_path}/logs/build.log"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&log).contains("packetary: === srpm phase ==="));
    let (status, _) = http(
        bot.addr,
        "GET",
        &format!("{page_path}/logs/..%2F..%2Fpacketary.db"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 404);
    let (status, rpm) = http(
        bot.addr,
        "GET",
        &format!("{page_path}/artifacts/hello-noarch-1.0-1.noarch.rpm"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(&rpm[..4], &[0xed, 0xab, 0xee, 0xdb], "an RPM file");
    let (status, index) = http(bot.addr, "GET", "/", &[], b"").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&index).contains("hello-noarch"));
    assert_eq!(bot.store.undelivered_reports().await.expect("count"), 0);
    // The service's own health check reaches the store and Docker.
    let (status, health) = http(bot.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&health));

    // Stopped as SIGTERM stops it: the queue drains, then the server ends cleanly.
    let addr = bot.addr;
    bot.stop().await.expect("a clean stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_update_supersedes_the_running_build() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let (base, slow, fast) = slow_then_fast_pull_request(&repo, "sleep 120");

    let github = mock_github().await;
    let bot = start_bot(dir.path(), &github).await;
    let url = format!("file://{}", repo.display());
    let pr = |action: &str, head: &str| pull_request_payload(action, head, &base, &url);
    assert_eq!(
        post_webhook(bot.addr, "pull_request", "pr-1", &pr("opened", &slow)).await,
        202
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while bot
        .store
        .builds_in_state(BuildState::Running)
        .await
        .expect("builds")
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first build never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        post_webhook(bot.addr, "pull_request", "pr-2", &pr("synchronize", &fast)).await,
        202
    );

    let old = wait_final(&github, &slow, Duration::from_secs(60)).await;
    let last_old = old.iter().rev().find(|s| s.1 == CONTEXT).expect("status");
    assert_eq!(last_old.2, "error", "{old:#?}");
    assert_eq!(last_old.3, format!("superseded by {fast}"));
    assert_eq!(
        contexts_in_order(&old, "packetary")
            .last()
            .map(String::as_str),
        Some("error")
    );
    let new = wait_final(&github, &fast, Duration::from_secs(180)).await;
    assert_eq!(
        contexts_in_order(&new, CONTEXT).last().map(String::as_str),
        Some("success"),
        "{new:#?}"
    );
    assert_eq!(
        contexts_in_order(&new, "packetary")
            .last()
            .map(String::as_str),
        Some("success")
    );
}

/// Every status sent for `sha` is for `context` or the aggregate, and both end in success.
fn assert_only(all: &[(String, String, String, String, String)], context: &str) {
    assert!(
        all.iter().all(|s| s.1 == context || s.1 == "packetary"),
        "{all:#?}"
    );
    for c in [context, "packetary"] {
        assert_eq!(
            contexts_in_order(all, c).last().map(String::as_str),
            Some("success"),
            "{c}: {all:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_builds_and_reports_only_the_package_it_touched() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let before = add_second_package(&repo);
    let after = bump_release(&repo, "hello-two");
    let github = mock_github().await;
    let bot = start_bot(dir.path(), &github).await;

    let url = format!("file://{}", repo.display());
    let body = push_payload("test/hello", &url, "main", &before, &after);
    assert_eq!(post_webhook(bot.addr, "push", "e2e-one", &body).await, 202);
    let all = wait_final(&github, &after, Duration::from_secs(180)).await;
    assert_only(&all, "packetary/bookworm-rpmbuild/hello-two");
    let page = &all
        .iter()
        .rev()
        .find(|s| s.1 != "packetary")
        .expect("status")
        .4;
    let (status, page) = http(
        bot.addr,
        "GET",
        page.strip_prefix("http://packetary.test").expect("url"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("hello-two-1.0-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_is_planned_against_its_merge_base() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    add_second_package(&repo);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    let head = bump_release(&repo, "hello-noarch");
    git(&repo, &["update-ref", "refs/pull/8/head", &head]);
    // The base branch moves on after the fork; its change is not the pull request's.
    git(&repo, &["checkout", "-q", "main"]);
    let base = bump_release(&repo, "hello-two");

    let github = mock_github().await;
    let bot = start_bot(dir.path(), &github).await;
    let mut p: Value = fixture("pull_request-opened.json");
    p["number"] = Value::from(8);
    p["repository"]["full_name"] = Value::from("test/hello");
    p["repository"]["clone_url"] = Value::from(format!("file://{}", repo.display()));
    p["pull_request"]["head"]["sha"] = Value::from(head.clone());
    p["pull_request"]["head"]["ref"] = Value::from("feature");
    p["pull_request"]["head"]["repo"]["full_name"] = Value::from("test/hello");
    p["pull_request"]["base"]["sha"] = Value::from(base);
    p["pull_request"]["base"]["ref"] = Value::from("main");
    let body = serde_json::to_vec(&p).expect("json");
    assert_eq!(
        post_webhook(bot.addr, "pull_request", "e2e-pr-mb", &body).await,
        202
    );
    let all = wait_final(&github, &head, Duration::from_secs(180)).await;
    assert_only(&all, CONTEXT);
}

/// A spec as the build tests write them: `extra` header lines, a `%build` body, and a
/// marker file under /usr/share/<name>.
fn staged_spec(name: &str, extra: &str, build: &str) -> String {
    format!(
        "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: test package\nLicense: MIT\nBuildArch: noarch\n{extra}\n\
%description\nTest package {name}.\n\n%build\n{build}\n\n%install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho {name} > %{{buildroot}}/usr/share/{name}/marker\n\n\
%files\n/usr/share/{name}/marker\n\n%changelog\n* Wed Nov 25 2026 Test <t@example.org> - 1.0-1\n- test\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_builds_after_and_against_the_package_of_the_same_push_it_requires() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("git/test/hello");
    for (name, extra, build) in [
        ("greet", "Provides: greet-devel = 1.0", "true"),
        (
            "user",
            "BuildRequires: greet-devel >= 1.0",
            "test -f /usr/share/greet/marker",
        ),
    ] {
        std::fs::create_dir_all(repo.join(name)).expect("mkdir");
        std::fs::write(
            repo.join(name).join(format!("{name}.spec")),
            staged_spec(name, extra, build),
        )
        .expect("spec");
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "greet and its user"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let github = mock_github().await;
    let bot = start_bot(dir.path(), &github).await;

    let url = format!("file://{}", repo.display());
    let body = push_payload("test/hello", &url, "main", &"0".repeat(40), &head);
    assert_eq!(
        post_webhook(bot.addr, "push", "e2e-stages", &body).await,
        202
    );
    let all = wait_final(&github, &head, Duration::from_secs(240)).await;
    for context in [
        "packetary/bookworm-rpmbuild/greet",
        "packetary/bookworm-rpmbuild/user",
        "packetary",
    ] {
        assert_eq!(
            contexts_in_order(&all, context).last().map(String::as_str),
            Some("success"),
            "{context}: {all:#?}"
        );
    }
    let builds = bot.store.recent_builds(10).await.expect("builds");
    let greet = builds.iter().find(|b| b.package == "greet").expect("greet");
    let user = builds.iter().find(|b| b.package == "user").expect("user");
    assert_eq!((greet.stage, user.stage), (0, 1), "{builds:#?}");
    // The ledger knows each build's container (what a page or an operator looks up).
    for b in [greet, user] {
        let c = b.container_id.as_deref().unwrap_or_default();
        assert!(
            c.len() == 64 && c.chars().all(|x| x.is_ascii_hexdigit()),
            "container of {} not recorded: {b:?}",
            b.package
        );
    }
    assert!(
        user.started_at >= greet.finished_at,
        "user started before greet ended: {builds:#?}"
    );
    let root = std::fs::read_to_string(
        user.result_dir
            .as_ref()
            .expect("result dir")
            .join("logs/root.log"),
    )
    .expect("root.log");
    assert!(root.contains("change=file://"), "{root}");
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_is_refused_by_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let github = MockServer::start().await;
    let mut config = bot_config(dir.path(), &github);
    if let Some(gh) = config.github.as_mut() {
        gh.auth = GithubAuth::Token(SecretSource::Env("PACKETARY_E2E_UNSET_TOKEN".into()));
    }
    let Err(e) = Service::from_config(config, ServiceOptions::default()).await else {
        panic!("a service without its token");
    };
    assert!(e.is_configuration(), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("github.token")
            && message.contains("PACKETARY_E2E_UNSET_TOKEN")
            && message.contains("fix:"),
        "{message}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is opened before the configuration is checked"
    );
}

#[tokio::test]
async fn without_a_github_table_the_service_runs_and_refuses_webhooks_with_the_fix() {
    use tower::ServiceExt;
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let github = MockServer::start().await;
    let mut config = bot_config(dir.path(), &github);
    config.github = None;
    let service = Service::from_config(config, ServiceOptions::default())
        .await
        .expect("a service without [github]");
    let body = push_payload(
        "test/hello",
        "file:///nowhere",
        "main",
        &"0".repeat(40),
        &"1".repeat(40),
    );
    let resp = service
        .router()
        .oneshot(webhook("push", "no-github", &body, Some(SECRET)))
        .await
        .expect("response");
    assert_eq!(resp.status(), 503);
    let text = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("github webhooks are not configured") && text.contains("[github] table"),
        "{text}"
    );
    assert_eq!(service.store().triggers().await.expect("triggers").len(), 0);
    let resp = service
        .router()
        .oneshot(
            axum::http::Request::get("/healthz")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
}
