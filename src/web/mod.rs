//! HTTP: forges' webhooks (`/webhooks/<forge>`), health and metrics, and the build pages.
//! Handlers stay thin: a webhook is verified by its forge's inbound side, parsed, ingested
//! and answered; building happens in the queue, never on the request path.

pub mod access;
mod commit;
mod html;
pub mod listener;
mod pages;
mod repos;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;

use crate::forge::{Forges, WebhookRejection};
use crate::model::{BuildState, ForgeKind};
use crate::queue::ingest::{ingest, Ingested};
use crate::queue::Queue;
use crate::store::Store;

/// Something `/healthz` must reach (Docker); the store is always checked.
pub trait Probe: Send + Sync {
    fn name(&self) -> &'static str;
    /// The probe's own error, shown as `<name>: <error>`.
    fn check(&self) -> BoxFuture<'_, Result<(), ProbeError>>;
}

/// What a [`Probe`] found wrong: each probe's own error type.
pub type ProbeError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub queue: Queue,
    /// Where `/webhooks/<forge>` goes.
    pub forges: Forges,
    pub probes: Arc<Vec<Arc<dyn Probe>>>,
    pub data_dir: PathBuf,
    /// Which repositories' pages need the page token.
    pub access: Arc<access::Access>,
    /// The runner the queue builds on: a running build's live logs are read through it
    /// (`Runner::live_log`), wherever it runs builds.
    pub runner: Arc<dyn crate::queue::Runner>,
}

/// The whole HTTP surface. `body_limit` bounds webhook bodies (413 above it), which must
/// arrive within 10 s.
pub fn router(state: AppState, body_limit: usize) -> Router {
    router_with(state, body_limit, Duration::from_secs(10))
}

/// [`router`] with the time a webhook's body may take to arrive (408 after it): a sender
/// trickling a body holds a connection that eviction cannot take back.
pub fn router_with(state: AppState, body_limit: usize, body_timeout: Duration) -> Router {
    let webhook = Router::new()
        .route("/webhooks/{forge}", post(webhook))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(BodyLimit(body_limit, body_timeout)));
    Router::new()
        .merge(webhook)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(pages::index))
        .route("/login", get(access::login_form).post(access::login))
        .route("/builds/{id}", get(pages::build))
        .route("/builds/{id}/logs/{name}", get(pages::log))
        .route("/builds/{id}/artifacts/{*path}", get(pages::artifact))
        .route("/repos/", get(repos::serve_root))
        .route("/repos/{*path}", get(repos::serve))
        // The path only: a query string may carry a secret (Gerrit's `?token=`).
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
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

/// Largest webhook body read and the time it may take, as an extension on the request (set
/// by the router).
#[derive(Clone, Copy, Debug)]
struct BodyLimit(usize, Duration);

/// `POST /webhooks/<forge>`: the forge's inbound side checks the headers, the body is read
/// within the limit, verified, parsed, and handed to [`ingest`]. Answers at once; building
/// happens in the queue.
async fn webhook(
    State(app): State<AppState>,
    UrlPath(forge): UrlPath<String>,
    req: Request,
) -> Response {
    match receive(&app, &forge, req).await {
        Ok((status, body)) => text(status, body),
        Err(rejection) => {
            // Not counted: the event name of an unverified request is the sender's choice.
            tracing::info!(forge, "webhook refused: {rejection}");
            text(rejection.status(), rejection.to_string())
        }
    }
}

async fn receive(
    app: &AppState,
    forge: &str,
    req: Request,
) -> Result<(StatusCode, String), WebhookRejection> {
    let kind = ForgeKind::parse(forge)
        .filter(|k| *k != ForgeKind::Local)
        .ok_or_else(|| WebhookRejection::UnknownForge(forge.chars().take(32).collect()))?;
    let inbound = app
        .forges
        .inbound(kind)
        .ok_or(WebhookRejection::NotConfigured(kind))?;
    // The parts are kept, not copied: the body is read after the headers are checked.
    let (parts, body) = req.into_parts();
    let (headers, query) = (&parts.headers, parts.uri.query());
    inbound.check(headers, query)?;
    let BodyLimit(limit, timeout) = parts
        .extensions
        .get::<BodyLimit>()
        .copied()
        .unwrap_or(BodyLimit(25 << 20, Duration::from_secs(10)));
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(WebhookRejection::TooLarge);
    }
    let body = tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect())
        .await
        .map_err(|_| WebhookRejection::SlowBody(timeout))?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                WebhookRejection::TooLarge
            } else {
                WebhookRejection::Body(e.to_string())
            }
        })?
        .to_bytes();
    let hook = inbound.verify(headers, query, body)?;
    let event = match inbound.parse(&hook) {
        Ok(e) => e,
        Err(e) => {
            tracing::info!(delivery = %hook.delivery, "malformed webhook payload: {e}");
            app.queue.metrics().webhook(&hook.event, "malformed");
            return Ok((StatusCode::BAD_REQUEST, e.to_string()));
        }
    };
    let allows = |r: &crate::model::RepoId| inbound.allows(r);
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&hook.body))
    };
    let (status, result, body) = match ingest(
        &app.queue,
        &hook.delivery,
        Some(&digest),
        &hook.event,
        event,
        &allows,
    )
    .await
    {
        Ok(Ingested::Ping) => (StatusCode::OK, "ping", "pong".into()),
        Ok(Ingested::Ignored(why)) => {
            tracing::debug!(delivery = %hook.delivery, event = %hook.event, "ignored: {why}");
            (StatusCode::NO_CONTENT, "ignored", String::new())
        }
        Ok(Ingested::Forbidden(repo)) => {
            tracing::info!(delivery = %hook.delivery, %repo, "webhook for a repository this service does not act for");
            (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("repository {repo} is not in this bot's allowlist"),
            )
        }
        Ok(Ingested::Duplicate) => {
            tracing::info!(delivery = %hook.delivery, "duplicate delivery ignored (same delivery id, or the same signed body replayed under a new one)");
            (
                StatusCode::OK,
                "duplicate",
                "duplicate delivery: already accepted".into(),
            )
        }
        Ok(Ingested::Accepted) => {
            tracing::info!(delivery = %hook.delivery, event = %hook.event, "webhook accepted");
            (StatusCode::ACCEPTED, "accepted", "accepted".into())
        }
        Err(e) => {
            tracing::error!(delivery = %hook.delivery, "cannot store the webhook: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                "cannot store the event; redeliver it later".into(),
            )
        }
    };
    app.queue.metrics().webhook(&hook.event, result);
    Ok((status, body))
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
