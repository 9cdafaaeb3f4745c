//! The webhook endpoint with GitHub's real example payloads, signed here.

use crate::serve_common;

use axum::body::to_bytes;
use axum::http::StatusCode;
use packetary::model::ChangeKind;
use serde_json::Value;
use serve_common::*;
use tower::ServiceExt;

const REPO: &str = "Codertocat/Hello-World";

struct Harness {
    _dir: tempfile::TempDir,
    queue: packetary::queue::Queue,
    router: axum::Router,
}

async fn harness(limit: usize) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = fake_queue(dir.path(), arc_forge(), FakeRunner::new(Mode::Succeed)).await;
    let router = packetary::web::router(
        app_state(&queue, &["codertocat/*", "github/hello-world"]),
        limit,
    );
    Harness {
        _dir: dir,
        queue,
        router,
    }
}

impl Harness {
    async fn send(&self, req: axum::http::Request<axum::body::Body>) -> (StatusCode, String) {
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let body = to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn triggers(&self) -> usize {
        self.queue.store().triggers().await.expect("triggers").len()
    }
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).expect("fixture")
}

#[tokio::test]
async fn signed_push_is_accepted_once() {
    let h = harness(1 << 20).await;
    let body = push_payload(
        REPO,
        "https://github.com/Codertocat/Hello-World.git",
        "main",
        &"0".repeat(40),
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    );
    let (s, _) = h.send(webhook("push", "d-1", &body, Some(SECRET))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let t = h.queue.store().triggers().await.expect("triggers");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].trigger.kind, ChangeKind::Push);
    assert_eq!(t[0].trigger.ref_name, "refs/heads/main");
    assert_eq!(t[0].trigger.base, None, "a new branch has no base");
    // GitHub redelivers: same delivery id, no second trigger.
    let (s, _) = h.send(webhook("push", "d-1", &body, Some(SECRET))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.triggers().await, 1);
    // The delivery id is not signed: the captured body replayed under a new id is the same
    // delivery.
    let (s, _) = h
        .send(webhook("push", "d-replayed", &body, Some(SECRET)))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.triggers().await, 1);
    // The unchanged fixture, signed with the old (rotated) secret, is also accepted.
    let (s, _) = h
        .send(webhook(
            "push",
            "d-2",
            &bytes("push-branch.json"),
            Some("an old secret"),
        ))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(h.triggers().await, 2);
}

#[tokio::test]
async fn bad_and_missing_signatures_are_refused_before_parsing() {
    let h = harness(1 << 20).await;
    let body = bytes("push-branch.json");
    let (s, _) = h
        .send(webhook("push", "d-1", &body, Some("wrong secret")))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h.send(webhook("push", "d-2", &body, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Garbage that is not even JSON gets 401, not 400: nothing is parsed before the check.
    let (s, _) = h
        .send(webhook("push", "d-3", b"{not json", Some("wrong")))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Signed, then truncated in transit: the signature no longer matches.
    let mut req = webhook("push", "d-4", &body, Some(SECRET));
    *req.body_mut() = axum::body::Body::from(body[..body.len() / 2].to_vec());
    let (s, _) = h.send(req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.triggers().await, 0);
    assert_eq!(h.queue.store().delivery_count().await.expect("count"), 0);
}

#[tokio::test]
async fn malformed_payloads_name_the_field() {
    let h = harness(1 << 20).await;
    // A truncated body, correctly signed: 400.
    let body = bytes("push-branch.json");
    let (s, msg) = h
        .send(webhook(
            "push",
            "d-1",
            &body[..body.len() / 2],
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{msg}");
    // A wrong field: the message names it.
    let mut p: Value = fixture("push-branch.json");
    p["after"] = Value::from("not-a-sha");
    let (s, msg) = h
        .send(webhook(
            "push",
            "d-2",
            &serde_json::to_vec(&p).expect("json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg.contains("after"), "{msg}");
    let mut p: Value = fixture("pull_request-opened.json");
    p["pull_request"]["head"]["sha"] = Value::from(42);
    let (s, msg) = h
        .send(webhook(
            "pull_request",
            "d-3",
            &serde_json::to_vec(&p).expect("json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg.contains("pull_request.head.sha"), "{msg}");
    assert_eq!(h.triggers().await, 0);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let h = harness(4096).await;
    let body = bytes("push-branch.json");
    assert!(body.len() > 4096);
    let (s, _) = h.send(webhook("push", "d-1", &body, Some(SECRET))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length (chunked), the limit holds while reading.
    let mut req = webhook("push", "d-2", &body, Some(SECRET));
    let stream = futures_util::stream::iter(
        body.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    *req.body_mut() = axum::body::Body::from_stream(stream);
    let (s, _) = h.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.triggers().await, 0);
}

#[tokio::test]
async fn other_events_and_actions() {
    let h = harness(1 << 20).await;
    let (s, _) = h
        .send(webhook("ping", "d-0", &bytes("ping.json"), Some(SECRET)))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .send(webhook(
            "issues",
            "d-1",
            &bytes("issues-opened.json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .send(webhook(
            "push",
            "d-2",
            &bytes("push-tag-deleted.json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "tags are not built");
    let (s, _) = h
        .send(webhook(
            "pull_request",
            "d-3",
            &bytes("pull_request-labeled.json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .send(webhook(
            "issue_comment",
            "d-4",
            &bytes("issue_comment-created.json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "a comment on an issue is not a command"
    );
    assert_eq!(h.triggers().await, 0);

    for (i, name) in ["pull_request-opened.json", "pull_request-synchronize.json"]
        .iter()
        .enumerate()
    {
        let (s, _) = h
            .send(webhook(
                "pull_request",
                &format!("pr-{i}"),
                &bytes(name),
                Some(SECRET),
            ))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let t = h.queue.store().triggers().await.expect("triggers");
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].trigger.kind, ChangeKind::PullRequest);
    assert_eq!(t[0].trigger.pr_number, Some(2));
    assert_eq!(t[0].trigger.ref_name, "refs/pull/2/head");
    assert_eq!(t[0].trigger.base_ref.as_deref(), Some("master"));
    assert!(!t[0].trigger.from_fork);
    let (s, _) = h
        .send(webhook(
            "pull_request",
            "pr-c",
            &bytes("pull_request-closed.json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);

    // A rebuild command on a pull request, and a re-run from the checks tab.
    let mut c = fixture("issue_comment-created.json");
    c["issue"]["pull_request"] =
        serde_json::json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1"});
    c["comment"]["body"] = Value::from("/packetary rebuild hello t");
    let (s, _) = h
        .send(webhook(
            "issue_comment",
            "c-1",
            &serde_json::to_vec(&c).expect("json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = h
        .send(webhook(
            "check_run",
            "c-2",
            &bytes("check_run-rerequested.json"),
            Some(SECRET),
        ))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let cmd = h
        .queue
        .store()
        .next_command()
        .await
        .expect("store")
        .expect("a command");
    assert_eq!(cmd.request.user, "Codertocat");
    assert!(
        !cmd.request.trusted,
        "comment authors are checked through the API"
    );
}

#[tokio::test]
async fn repositories_outside_the_allowlist_are_refused() {
    let h = harness(1 << 20).await;
    let body = push_payload(
        "someone/else",
        "https://github.com/someone/else.git",
        "main",
        &"0".repeat(40),
        &"1".repeat(40),
    );
    let (s, _) = h.send(webhook("push", "d-1", &body, Some(SECRET))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.triggers().await, 0);
}

#[tokio::test]
async fn healthz_and_metrics() {
    let h = harness(1 << 20).await;
    let (s, body) = h
        .send(
            axum::http::Request::get("/healthz")
                .body(axum::body::Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!((s, body.trim()), (StatusCode::OK, "ok"));
    let (_, _) = h
        .send(webhook(
            "issues",
            "d-1",
            &bytes("issues-opened.json"),
            Some(SECRET),
        ))
        .await;
    let (s, body) = h
        .send(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("packetary_queue_depth 0"), "{body}");
    assert!(
        body.contains("packetary_builds{state=\"running\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("packetary_webhooks_total{event=\"issues\",result=\"ignored\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn without_github_configuration_webhooks_get_503_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = fake_queue(dir.path(), arc_forge(), FakeRunner::new(Mode::Succeed)).await;
    let mut state = app_state(&queue, &["codertocat/*"]);
    state.forges = github_forges(vec![], &["codertocat/*"]);
    let router = packetary::web::router(state, 1 << 20);
    let body = push_payload(
        REPO,
        "https://github.com/Codertocat/Hello-World.git",
        "main",
        &"0".repeat(40),
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    );
    let req = webhook("push", "d-unconfigured", &body, Some(SECRET));
    let resp = router.oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("not configured") && text.contains("[github]"),
        "{text}"
    );
    assert_eq!(queue.store().triggers().await.expect("triggers").len(), 0);
}

#[tokio::test]
async fn webhooks_route_by_forge() {
    let h = harness(1 << 20).await;
    let body = bytes("push-branch.json");
    let to = |path: &str| {
        let mut req = webhook("push", &format!("d-route{path}"), &body, Some(SECRET));
        *req.uri_mut() = path.parse().expect("uri");
        req
    };
    let (s, msg) = h.send(to("/webhooks/gitlab")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{msg}");
    assert!(msg.contains("no forge named `gitlab`"), "{msg}");
    let (s, msg) = h.send(to("/webhooks/local")).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "the command line takes no webhooks: {msg}"
    );
    let (s, msg) = h.send(to("/webhooks/gerrit")).await;
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "a known forge that is not configured: {msg}"
    );
    assert!(
        msg.contains("gerrit webhooks are not configured") && msg.contains("add a [gerrit] table"),
        "{msg}"
    );
    assert_eq!(h.triggers().await, 0);
    let (s, msg) = h.send(to("/webhooks/github")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{msg}");
    let stored = h.queue.store().triggers().await.expect("triggers");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].trigger.repo.as_str(),
        "github:Codertocat/Hello-World",
        "the repository names its forge"
    );
}
