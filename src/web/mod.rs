//! HTTP: the GitHub webhook, health and metrics, and the build pages. Handlers stay thin:
//! a webhook is verified (by the extractor), parsed, stored, and answered; building happens
//! in the queue, never on the request path.

mod pages;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::future::BoxFuture;

use crate::forge::github::{self, BodyLimit, VerifiedWebhook, WebhookSecrets};
use crate::forge::{ChangeKind, Event};
use crate::queue::Queue;
use crate::store::{BuildState, Inbound, Store, TriggerState};

/// Something `/healthz` must reach (Docker); the store is always checked.
pub trait Probe: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Which repositories the service acts for.
#[derive(Clone, Debug)]
pub struct Allowlist(pub Arc<Vec<String>>);

impl Allowlist {
    pub fn allows(&self, repo: &str) -> bool {
        let owner = repo.split_once('/').map(|(o, _)| o).unwrap_or(repo);
        self.0.iter().any(|r| {
            r.eq_ignore_ascii_case(repo)
                || r.strip_suffix("/*")
                    .is_some_and(|o| o.eq_ignore_ascii_case(owner))
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub queue: Queue,
    pub secrets: WebhookSecrets,
    pub allowlist: Allowlist,
    pub probes: Arc<Vec<Arc<dyn Probe>>>,
    pub data_dir: PathBuf,
}

impl FromRef<AppState> for WebhookSecrets {
    fn from_ref(s: &AppState) -> WebhookSecrets {
        s.secrets.clone()
    }
}

/// The whole HTTP surface. `body_limit` bounds webhook bodies (413 above it).
pub fn router(state: AppState, body_limit: usize) -> Router {
    let webhook = Router::new()
        .route("/webhooks/github", post(github_webhook))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(BodyLimit(body_limit)));
    Router::new()
        .merge(webhook)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(pages::index))
        .route("/builds/{id}", get(pages::build))
        .route("/builds/{id}/logs/{name}", get(pages::log))
        .route("/builds/{id}/artifacts/{*path}", get(pages::artifact))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn github_webhook(State(app): State<AppState>, hook: VerifiedWebhook) -> Response {
    let metrics = app.queue.metrics().clone();
    let (status, result, body) = handle_webhook(&app, &hook).await;
    metrics.webhook(&hook.event, result);
    text(status, body)
}

async fn handle_webhook(
    app: &AppState,
    hook: &VerifiedWebhook,
) -> (StatusCode, &'static str, String) {
    let event = match github::parse_event(&hook.event, &hook.body) {
        Ok(e) => e,
        Err(e) => {
            tracing::info!(delivery = %hook.delivery, "malformed webhook payload: {e}");
            return (StatusCode::BAD_REQUEST, "malformed", e.to_string());
        }
    };
    if let Some(repo) = event.repo() {
        if !app.allowlist.allows(repo.as_str()) {
            tracing::info!(delivery = %hook.delivery, %repo, "webhook for a repository not in [github] repositories");
            return (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("repository {repo} is not in this bot's allowlist"),
            );
        }
    }
    let inbound = match &event {
        Event::Ping => return (StatusCode::OK, "ping", "pong".into()),
        Event::Ignored(why) => {
            tracing::debug!(delivery = %hook.delivery, event = %hook.event, "ignored: {why}");
            return (StatusCode::NO_CONTENT, "ignored", String::new());
        }
        Event::Build(t) => Inbound::Trigger(t, TriggerState::New),
        Event::Command(c) => Inbound::Command(c),
        Event::Closed { .. } | Event::RefDeleted { .. } => Inbound::Nothing,
    };
    match app.store.accept(&hook.delivery, &hook.event, inbound).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(delivery = %hook.delivery, "duplicate delivery ignored");
            return (
                StatusCode::OK,
                "duplicate",
                "duplicate delivery: already accepted".into(),
            );
        }
        Err(e) => {
            tracing::error!(delivery = %hook.delivery, "cannot store the webhook: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                "cannot store the event; redeliver it later".into(),
            );
        }
    }
    let closed = match &event {
        Event::Closed { repo, pr_number } => Some(
            app.queue
                .close_change(repo, ChangeKind::PullRequest, "", Some(*pr_number))
                .await,
        ),
        Event::RefDeleted { repo, ref_name } => Some(
            app.queue
                .close_change(repo, ChangeKind::Push, ref_name, None)
                .await,
        ),
        _ => None,
    };
    if let Some(Err(e)) = closed {
        tracing::error!(delivery = %hook.delivery, "cannot cancel builds: {e}");
    }
    app.queue.wake();
    tracing::info!(delivery = %hook.delivery, event = %hook.event, "webhook accepted");
    (StatusCode::ACCEPTED, "accepted", "accepted".into())
}

async fn healthz(State(app): State<AppState>) -> Response {
    let mut problems = vec![];
    if let Err(e) = app.store.ping().await {
        problems.push(format!("store: {e}"));
    }
    for p in app.probes.iter() {
        if let Err(e) = p.check().await {
            problems.push(format!("{}: {e}", p.name()));
        }
    }
    if problems.is_empty() {
        text(StatusCode::OK, "ok")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, problems.join("\n"))
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    let by_state = match app.store.count_builds_by_state().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let undelivered = app.store.undelivered_reports().await.unwrap_or(0);
    let queued = by_state
        .iter()
        .find(|(s, _)| *s == BuildState::Queued)
        .map(|(_, n)| *n)
        .unwrap_or(0);
    let gauges = [
        (
            "packetary_queue_depth",
            "Builds waiting to start.",
            vec![(String::new(), queued as f64)],
        ),
        (
            "packetary_builds",
            "Builds by state.",
            by_state
                .iter()
                .map(|(s, n)| (format!("state=\"{}\"", s.as_str()), *n as f64))
                .collect(),
        ),
        (
            "packetary_reports_undelivered",
            "Commit statuses not delivered yet.",
            vec![(String::new(), undelivered as f64)],
        ),
    ];
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        app.queue.metrics().render(&gauges),
    )
        .into_response()
}
