//! A stand-in for Gerrit's REST API (only the hosted API is replaced; git and builds are
//! real): answers like Gerrit (`)]}'` prefix, basic auth, 409 for a closed change, 500 when
//! told to) and records every review request.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{json, Value};

pub const USER: &str = "packetary";
pub const PASSWORD: &str = "gerrit-http-pw";
pub const TOKEN: &str = "hook-token-1234";

/// One review request as received.
#[derive(Debug, Clone)]
pub struct Review {
    /// The request's path as sent (the change id percent-encoded).
    pub path: String,
    /// The change id, decoded.
    pub change: String,
    pub sha: String,
    pub authorization: Option<String>,
    /// What the stand-in answered.
    pub status: u16,
    pub message: String,
    pub labels: HashMap<String, i64>,
    pub tag: Option<String>,
    pub at: std::time::Instant,
}

#[derive(Default)]
pub struct FakeGerrit {
    pub reviews: Mutex<Vec<Review>>,
    /// Commit -> (project, change number, patchset, branch).
    pub changes: Mutex<HashMap<String, (String, u64, u64, String)>>,
    /// Statuses to answer to the next review requests (then 200).
    pub fail_next: Mutex<VecDeque<u16>>,
    /// Changes that are closed: reviews get 409.
    pub closed: Mutex<HashSet<u64>>,
    /// The `q` of every query received.
    pub queries: Mutex<Vec<String>>,
    /// Notified at each review request.
    pub reviewed: tokio::sync::Notify,
}

impl FakeGerrit {
    pub fn add_change(&self, sha: &str, project: &str, number: u64, patchset: u64, branch: &str) {
        self.changes.lock().expect("lock").insert(
            sha.to_string(),
            (project.to_string(), number, patchset, branch.to_string()),
        );
    }

    pub fn reviews(&self) -> Vec<Review> {
        self.reviews.lock().expect("lock").clone()
    }

    /// Accepted reviews of a commit.
    pub fn accepted(&self, sha: &str) -> Vec<Review> {
        self.reviews()
            .into_iter()
            .filter(|r| r.sha == sha && r.status == 200)
            .collect()
    }

    /// Waits until `done` holds of the recorded reviews.
    pub async fn wait(&self, what: &str, secs: u64, done: impl Fn(&[Review]) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if done(&self.reviews()) {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; reviews: {:#?}",
                    self.reviews()
                );
            }
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                self.reviewed.notified(),
            )
            .await;
        }
    }
}

fn gerrit_json(status: StatusCode, v: Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        format!(")]}}'\n{v}"),
    )
        .into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

async fn query(
    State(g): State<Arc<FakeGerrit>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    let q = q.get("q").cloned().unwrap_or_default();
    g.queries.lock().expect("lock").push(q.clone());
    let changes = g.changes.lock().expect("lock").clone();
    let found: Vec<Value> = changes
        .iter()
        .filter(|(sha, _)| {
            q.split_whitespace()
                .find_map(|w| w.strip_prefix("commit:"))
                .is_none_or(|c| c == sha.as_str())
        })
        .filter(|(_, (p, n, ..))| !q.contains("status:open") || !g.closed.lock().expect("lock").contains(n) && !p.is_empty())
        .map(|(sha, (project, number, ps, branch))| {
            json!({
                "id": format!("{}~{branch}~I{number:040}", project.replace('/', "%2F")),
                "project": project,
                "branch": branch,
                "_number": number,
                "status": "NEW",
                "current_revision": sha,
                "revisions": { sha.clone(): { "_number": ps, "ref": format!("refs/changes/{:02}/{number}/{ps}", number % 100) } },
            })
        })
        .collect();
    // The catch-up wants each change once, at its latest patchset.
    let mut latest: HashMap<u64, Value> = HashMap::new();
    for c in found {
        let n = c["_number"].as_u64().unwrap_or(0);
        let ps = |v: &Value| {
            v["revisions"]
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|r| r["_number"].as_u64())
                .unwrap_or(0)
        };
        if latest.get(&n).is_none_or(|old| ps(old) < ps(&c)) {
            latest.insert(n, c);
        }
    }
    gerrit_json(StatusCode::OK, Value::Array(latest.into_values().collect()))
}

async fn review(
    State(g): State<Arc<FakeGerrit>>,
    Path((change, sha)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let number: u64 = change
        .rsplit('~')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let status = if !authorized(&headers) {
        401
    } else if g.closed.lock().expect("lock").contains(&number) {
        409
    } else {
        g.fail_next.lock().expect("lock").pop_front().unwrap_or(200)
    };
    g.reviews.lock().expect("lock").push(Review {
        path: uri.path().to_string(),
        change,
        sha,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status,
        message: v["message"].as_str().unwrap_or_default().to_string(),
        labels: v["labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(99)))
                    .collect()
            })
            .unwrap_or_default(),
        tag: v["tag"].as_str().map(str::to_string),
        at: std::time::Instant::now(),
    });
    g.reviewed.notify_waiters();
    match status {
        200 => gerrit_json(StatusCode::OK, json!({"labels": v["labels"]})),
        409 => (StatusCode::CONFLICT, "change is closed").into_response(),
        401 => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
        s => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Internal server error",
        )
            .into_response(),
    }
}

/// Starts the stand-in on a free loopback port; answers its URL and its state.
pub async fn start() -> (String, Arc<FakeGerrit>) {
    let g = Arc::new(FakeGerrit::default());
    let app = axum::Router::new()
        .route("/a/changes/", get(query))
        .route("/a/changes/{change}/revisions/{sha}/review", post(review))
        .with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), g)
}

/// A `patchset-created` event as Gerrit sends it (stream line or webhooks-plugin body).
pub fn patchset_created(
    project: &str,
    branch: &str,
    number: u64,
    ps: u64,
    rev: &str,
    parent: &str,
) -> Value {
    json!({
        "type": "patchset-created",
        "uploader": {"name": "John Doe", "email": "jdoe@example.org", "username": "jdoe"},
        "patchSet": {
            "number": ps, "revision": rev, "parents": [parent],
            "ref": format!("refs/changes/{:02}/{number}/{ps}", number % 100),
            "uploader": {"username": "jdoe"}, "createdOn": 1764100100, "kind": "REWORK"
        },
        "change": change(project, branch, number),
        "project": project,
        "refName": format!("refs/heads/{branch}"),
        "eventCreatedOn": 1764100101
    })
}

pub fn change(project: &str, branch: &str, number: u64) -> Value {
    json!({
        "project": project, "branch": branch, "id": format!("I{number:040}"),
        "number": number, "subject": "a change", "status": "NEW",
        "owner": {"username": "jdoe"},
        "url": format!("https://review.example.org/c/{project}/+/{number}")
    })
}

pub fn comment_added(
    project: &str,
    branch: &str,
    number: u64,
    ps: u64,
    rev: &str,
    comment: &str,
) -> Value {
    json!({
        "type": "comment-added",
        "author": {"name": "Rita", "username": "reviewer"},
        "comment": comment,
        "patchSet": {
            "number": ps, "revision": rev, "parents": [],
            "ref": format!("refs/changes/{:02}/{number}/{ps}", number % 100)
        },
        "change": change(project, branch, number),
        "eventCreatedOn": 1764100200
    })
}

pub fn change_abandoned(project: &str, branch: &str, number: u64) -> Value {
    json!({
        "type": "change-abandoned",
        "abandoner": {"username": "jdoe"},
        "reason": "not needed",
        "change": change(project, branch, number),
        "eventCreatedOn": 1764100300
    })
}
