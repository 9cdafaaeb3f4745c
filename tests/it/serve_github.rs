//! The GitHub reporter against a mock GitHub (wiremock), with every request checked
//! against GitHub's published OpenAPI description.

use crate::serve_common;

use std::sync::Arc;
use std::time::Duration;

use packetary::config::Secret;
use packetary::forge::github::{ApiAuth, GitHub};
use packetary::forge::Forge;
use packetary::model::{CommitSha, RepoId};
use packetary::model::{Report, ReportState};
use packetary::store::Millis;
use serde_json::{json, Value};
use serve_common::*;
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

fn report(state: ReportState, description: &str) -> Report {
    Report {
        repo: RepoId::github("Codertocat/Hello-World").expect("repo"),
        sha: CommitSha::parse(SHA).expect("sha"),
        context: "packetary/bookworm-rpmbuild/hello".into(),
        state,
        description: description.into(),
        target_url: Some("http://packetary.test/builds/x".into()),
        builds: vec![],
    }
}

fn token() -> ApiAuth {
    ApiAuth::Token(Secret::new("ghp_test_token"))
}

/// Every request the mock received conforms to the OpenAPI description.
async fn check_all_against_openapi(server: &MockServer) -> usize {
    let requests = server.received_requests().await.expect("recording on");
    for r in &requests {
        let op =
            match_operation(r.url.path()).unwrap_or_else(|| panic!("unexpected request {}", r.url));
        if r.method.as_str() == "POST" {
            let body: Value = if r.body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&r.body).expect("JSON body")
            };
            check_request_body("post", op, &body)
                .unwrap_or_else(|e| panic!("{} {}: {e}\n{body}", r.method, r.url));
        }
    }
    requests.len()
}

#[tokio::test]
async fn statuses_are_posted_as_github_documents_them() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/repos/Codertocat/Hello-World/statuses/{SHA}"
        )))
        .and(header("authorization", "Bearer ghp_test_token"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": 4242, "state": "pending"})),
        )
        .expect(4)
        .mount(&server)
        .await;
    let gh = GitHub::new(&server.uri(), &token()).expect("client");
    for (s, d) in [
        (ReportState::Pending, "queued"),
        (ReportState::Success, "built hello-1.0-1"),
        (
            ReportState::Failure,
            "srpm phase failed: error: line 7: Unknown tag: Bogus: 1",
        ),
        (ReportState::Error, &"x".repeat(300)),
    ] {
        let delivered = gh.deliver(&report(s, d)).await.expect("delivered");
        // The status's id, for a reporter that updates what it created.
        assert_eq!(delivered.forge_ref.as_deref(), Some("4242"));
    }
    let requests = server.received_requests().await.expect("recording");
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    assert_eq!(bodies[0]["state"], "pending");
    assert_eq!(bodies[0]["context"], "packetary/bookworm-rpmbuild/hello");
    assert_eq!(bodies[0]["target_url"], "http://packetary.test/builds/x");
    assert_eq!(bodies[2]["state"], "failure");
    assert!(
        bodies[3]["description"]
            .as_str()
            .expect("text")
            .chars()
            .count()
            <= 140
    );
    assert_eq!(check_all_against_openapi(&server).await, 4);
}

#[tokio::test]
async fn the_schema_check_catches_wrong_bodies() {
    let op = "/repos/{owner}/{repo}/statuses/{sha}";
    assert!(check_request_body("post", op, &json!({"state": "success", "context": "c"})).is_ok());
    assert!(check_request_body("post", op, &json!({"state": "done"})).is_err());
    assert!(check_request_body("post", op, &json!({"context": "c"})).is_err());
    assert!(check_request_body("post", op, &json!({"state": "success", "context": 3})).is_err());
}

#[tokio::test]
async fn collaborator_permission_decides_who_may_command() {
    let server = MockServer::start().await;
    let perm = |p: &str| json!({"permission": p, "role_name": p, "user": {"login": "u"}});
    for (user, status, body) in [
        ("writer", 200, perm("write")),
        ("admin", 200, perm("admin")),
        ("reader", 200, perm("read")),
        ("stranger", 404, json!({"message": "Not Found"})),
    ] {
        Mock::given(method("GET"))
            .and(path(format!(
                "/repos/Codertocat/Hello-World/collaborators/{user}/permission"
            )))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
    }
    let gh = GitHub::new(&server.uri(), &token()).expect("client");
    let repo = RepoId::github("Codertocat/Hello-World").expect("repo");
    assert!(gh.can_write(&repo, "writer").await.expect("answer"));
    assert!(gh.can_write(&repo, "admin").await.expect("answer"));
    assert!(!gh.can_write(&repo, "reader").await.expect("answer"));
    assert!(!gh.can_write(&repo, "stranger").await.expect("answer"));
    assert!(!gh
        .can_write(&repo, "../../evil")
        .await
        .expect("refused without asking"));
    check_all_against_openapi(&server).await;
}

async fn outbox_with(server: &MockServer) -> (tempfile::TempDir, packetary::queue::Queue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gh = Arc::new(GitHub::new(&server.uri(), &token()).expect("client"));
    let q = fake_queue(dir.path(), gh, FakeRunner::new(Mode::Succeed)).await;
    (dir, q)
}

#[tokio::test]
async fn rate_limits_are_honoured_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("/statuses/"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "1")
                .insert_header("x-ratelimit-remaining", "0")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("/statuses/"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 1})))
        .mount(&server)
        .await;
    let (_dir, q) = outbox_with(&server).await;
    q.store()
        .set_report(&report(ReportState::Success, "ok"))
        .await
        .expect("set");
    assert_eq!(q.deliver_due().await.expect("deliver"), 1);
    let rows = q.store().reports().await.expect("rows");
    let wait = rows[0].next_attempt_at.0 - Millis::now().0;
    assert!(
        (500..=1100).contains(&wait),
        "retry in {wait}ms, Retry-After said 1s"
    );
    assert!(rows[0].last_error.as_deref().unwrap_or("").contains("403"));
    assert_eq!(
        q.deliver_due().await.expect("deliver"),
        0,
        "not before Retry-After"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(q.deliver_due().await.expect("deliver"), 1);
    assert_eq!(q.store().undelivered_reports().await.expect("count"), 0);
    assert_eq!(check_all_against_openapi(&server).await, 2);
}

#[tokio::test]
async fn server_errors_are_retried_and_the_latest_state_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("/statuses/"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("/statuses/"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 1})))
        .mount(&server)
        .await;
    let (_dir, q) = outbox_with(&server).await;
    q.store()
        .set_report(&report(ReportState::Pending, "queued"))
        .await
        .expect("set");
    assert_eq!(q.deliver_due().await.expect("deliver"), 1);
    assert_eq!(q.store().undelivered_reports().await.expect("count"), 1);
    // Meanwhile the build finished: only the final state is sent on the retry.
    q.store()
        .set_report(&report(ReportState::Success, "built"))
        .await
        .expect("set");
    assert_eq!(
        q.deliver_due().await.expect("deliver"),
        1,
        "a new desire is due at once"
    );
    assert_eq!(q.store().undelivered_reports().await.expect("count"), 0);
    let requests = server.received_requests().await.expect("recording");
    let last: Value = serde_json::from_slice(&requests.last().expect("one").body).expect("json");
    assert_eq!(last["state"], "success");
    assert_eq!(requests.len(), 2);
}

#[tokio::test]
async fn github_app_installation_tokens_are_minted_and_renewed_before_expiry() {
    let server = MockServer::start().await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"token": "ghs_installation", "expires_at": soon, "permissions": {"statuses": "write", "metadata": "read"}, "repository_selection": "all"})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("/statuses/"))
        .and(header("authorization", "Bearer ghs_installation"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 1})))
        .expect(2)
        .mount(&server)
        .await;
    let key = std::fs::read_to_string(data("test-app-key.pem")).expect("test key");
    let gh = GitHub::new(
        &server.uri(),
        &ApiAuth::App {
            app_id: 1,
            private_key_pem: Secret::new(key),
            installation_id: 42,
        },
    )
    .expect("client");
    gh.deliver(&report(ReportState::Pending, "queued"))
        .await
        .expect("delivered");
    // The token expires in 20s, within the 30s margin: the next call mints a new one.
    gh.deliver(&report(ReportState::Success, "built"))
        .await
        .expect("delivered");
    let requests = server.received_requests().await.expect("recording");
    let jwt = requests[0]
        .headers
        .get("authorization")
        .expect("auth")
        .to_str()
        .expect("ascii");
    assert_eq!(
        jwt.strip_prefix("Bearer ")
            .expect("bearer")
            .split('.')
            .count(),
        3,
        "a JWT"
    );
    check_all_against_openapi(&server).await;
}

#[tokio::test]
async fn a_github_app_mints_git_tokens_only_for_http_remotes_and_caches_them() {
    let server = MockServer::start().await;
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let later = later
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"token": "ghs_fetch", "expires_at": later, "permissions": {"contents": "read"}, "repository_selection": "all"})))
        .expect(1)
        .mount(&server)
        .await;
    let key = std::fs::read_to_string(data("test-app-key.pem")).expect("test key");
    let gh = std::sync::Arc::new(
        GitHub::new(
            &server.uri(),
            &ApiAuth::App {
                app_id: 1,
                private_key_pem: Secret::new(key),
                installation_id: 42,
            },
        )
        .expect("client"),
    );
    let creds = packetary::git::Credentials::Minted(gh);
    // file:// needs no token: nothing is minted.
    assert!(matches!(
        creds.for_url("file:///srv/git/x.git").await.expect("auth"),
        packetary::git::FetchAuth::None
    ));
    for _ in 0..2 {
        match creds
            .for_url("https://github.com/test/hello.git")
            .await
            .expect("auth")
        {
            packetary::git::FetchAuth::Token { username, token } => {
                assert_eq!(username, "x-access-token");
                assert_eq!(token, "ghs_fetch");
            }
            other => panic!("expected a token, got {other:?}"),
        }
    }
    // `.expect(1)`: the second fetch reused the cached token (checked when `server` drops).
}

#[tokio::test]
async fn a_github_app_that_cannot_mint_fails_the_fetch_with_the_reason() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/app/installations/42/access_tokens"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "boom"})))
        .mount(&server)
        .await;
    let key = std::fs::read_to_string(data("test-app-key.pem")).expect("test key");
    let gh = GitHub::new(
        &server.uri(),
        &ApiAuth::App {
            app_id: 1,
            private_key_pem: Secret::new(key),
            installation_id: 42,
        },
    )
    .expect("client");
    let creds = packetary::git::Credentials::Minted(std::sync::Arc::new(gh));
    let err = creds
        .for_url("https://github.com/test/hello.git")
        .await
        .expect_err("no token");
    let text = err.to_string();
    assert!(
        text.contains("cannot get an access token") && text.contains("github.com/test/hello"),
        "{text}"
    );
    assert!(
        err.is_infrastructure(),
        "retried as an infrastructure fault"
    );
}
