//! GitHub: webhook verification and parsing, and the reporter (commit statuses through
//! octocrab). GitHub's types stay in this file.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use serde::Deserialize;
use sha2::Sha256;

use super::{ChangeKind, Command, CommandRequest, DeliveryError, Event, Forge, Report, Trigger};
use crate::config::Secret;
use crate::model::{CommitSha, RepoId};

// ---- signature verification ------------------------------------------------------------

/// The webhook secrets currently accepted. Several, so that a secret can be rotated: add
/// the new one, change it on GitHub, then remove the old one.
#[derive(Clone, Debug)]
pub struct WebhookSecrets(pub std::sync::Arc<Vec<Secret>>);

/// Whether `signature` (the `X-Hub-Signature-256` header, `sha256=<hex>`) is the HMAC-SHA256
/// of `body` under one of `secrets`. The comparison is constant-time.
pub fn signature_valid(secrets: &[Secret], signature: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    if sig.len() != 32 {
        return false;
    }
    let mut ok = false;
    for s in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(s.expose().as_bytes()) else {
            continue;
        };
        mac.update(body);
        // `verify_slice` compares in constant time; every secret is tried, so timing does not
        // tell which one matched either.
        ok |= mac.verify_slice(&sig).is_ok();
    }
    ok
}

/// The signature a body gets under a secret (for tests and tools that send webhooks).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook whose signature was checked. Handlers taking this never see unverified bytes.
#[derive(Debug)]
pub struct VerifiedWebhook {
    pub event: String,
    pub delivery: String,
    pub body: Bytes,
}

/// Why a webhook request was refused before it was parsed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRejection {
    #[error("missing X-Hub-Signature-256 header: configure a secret on the webhook")]
    MissingSignature,
    #[error("the signature does not match the body under any configured secret")]
    BadSignature,
    #[error("missing or invalid header {0}")]
    MissingHeader(&'static str),
    #[error("the body is larger than the configured limit")]
    TooLarge,
    #[error("could not read the body: {0}")]
    Body(String),
    #[error("GitHub webhooks are not configured on this server\n  fix: add a [github] table with webhook_secrets to the configuration (see config/packetary.example.toml)")]
    NotConfigured,
}

impl WebhookRejection {
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookRejection::MissingSignature | WebhookRejection::BadSignature => {
                StatusCode::UNAUTHORIZED
            }
            WebhookRejection::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            WebhookRejection::MissingHeader(_) | WebhookRejection::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            WebhookRejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        tracing::info!("webhook refused: {self}");
        (self.status(), format!("{self}\n")).into_response()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Largest body read, as an extension on the request (set by the router); the extractor
/// also honours axum's `DefaultBodyLimit`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

impl<S> FromRequest<S> for VerifiedWebhook
where
    S: Send + Sync,
    WebhookSecrets: FromRef<S>,
{
    type Rejection = WebhookRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let secrets = WebhookSecrets::from_ref(state);
        if secrets.0.is_empty() {
            return Err(WebhookRejection::NotConfigured);
        }
        let headers = req.headers().clone();
        let signature = header(&headers, "x-hub-signature-256")
            .ok_or(WebhookRejection::MissingSignature)?
            .to_string();
        let event = header(&headers, "x-github-event")
            .filter(|e| !e.is_empty() && e.len() < 64)
            .ok_or(WebhookRejection::MissingHeader("X-GitHub-Event"))?
            .to_string();
        let delivery = header(&headers, "x-github-delivery")
            .filter(|d| !d.is_empty() && d.len() <= 128)
            .ok_or(WebhookRejection::MissingHeader("X-GitHub-Delivery"))?
            .to_string();
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(25 << 20);
        if let Some(len) = header(&headers, "content-length").and_then(|l| l.parse::<u64>().ok()) {
            if len > limit as u64 {
                return Err(WebhookRejection::TooLarge);
            }
        }
        let body = http_body_util::Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    WebhookRejection::TooLarge
                } else {
                    WebhookRejection::Body(e.to_string())
                }
            })?
            .to_bytes();
        if !signature_valid(&secrets.0, &signature, &body) {
            return Err(WebhookRejection::BadSignature);
        }
        Ok(VerifiedWebhook {
            event,
            delivery,
            body,
        })
    }
}

// ---- event parsing ---------------------------------------------------------------------

/// A payload that does not have the shape GitHub documents; names the failing field.
#[derive(Debug, thiserror::Error)]
#[error("{event} payload: field `{path}`: {message}")]
pub struct ParseError {
    pub event: String,
    pub path: String,
    pub message: String,
}

fn parse<T: serde::de::DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| ParseError {
        event: event.to_string(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

#[derive(Deserialize)]
struct Repository {
    full_name: RepoId,
    clone_url: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    ref_name: String,
    before: CommitSha,
    after: CommitSha,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
    sender: User,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: u64,
    pull_request: PullRequest,
    repository: Repository,
    sender: User,
}

#[derive(Deserialize)]
struct PullRequest {
    head: PrRef,
    base: PrRef,
}

#[derive(Deserialize)]
struct PrRef {
    sha: CommitSha,
    #[serde(rename = "ref")]
    ref_name: String,
    /// `null` when the fork was deleted.
    repo: Option<RepoRef>,
}

#[derive(Deserialize)]
struct RepoRef {
    full_name: String,
}

#[derive(Deserialize)]
struct IssueCommentEvent {
    action: String,
    issue: Issue,
    comment: Comment,
    repository: Repository,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    /// Present when the issue is a pull request.
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Comment {
    body: Option<String>,
    user: User,
}

#[derive(Deserialize)]
struct CheckRunEvent {
    action: String,
    check_run: CheckRun,
    repository: Repository,
    sender: User,
}

#[derive(Deserialize)]
struct CheckRun {
    head_sha: CommitSha,
}

/// Turns a verified webhook into an [`Event`]. Events and actions Packetary does not act
/// on become [`Event::Ignored`]; malformed payloads of events it does act on are errors.
pub fn parse_event(event: &str, body: &[u8]) -> Result<Event, ParseError> {
    match event {
        "ping" => {
            // Still checked to be JSON, so that a truncated ping is refused like any payload.
            parse::<serde_json::Value>(event, body)?;
            Ok(Event::Ping)
        }
        "push" => {
            let p: Push = parse(event, body)?;
            let Some(branch) = p.ref_name.strip_prefix("refs/heads/") else {
                return Ok(Event::Ignored(format!(
                    "push to {} (not a branch)",
                    p.ref_name
                )));
            };
            if p.deleted || p.after.is_zero() {
                return Ok(Event::RefDeleted {
                    repo: p.repository.full_name,
                    ref_name: p.ref_name,
                });
            }
            Ok(Event::Build(Trigger {
                repo: p.repository.full_name,
                clone_url: p.repository.clone_url,
                kind: ChangeKind::Push,
                ref_name: format!("refs/heads/{branch}"),
                base: Some(p.before).filter(|b| !b.is_zero()),
                head: p.after,
                pr_number: None,
                base_ref: Some(branch.to_string()),
                from_fork: false,
                sender: p.sender.login,
                only_package: None,
                only_target: None,
            }))
        }
        "pull_request" => {
            let p: PullRequestEvent = parse(event, body)?;
            match p.action.as_str() {
                "opened" | "synchronize" | "reopened" => {
                    let from_fork = p.pull_request.head.repo.as_ref().is_none_or(|r| {
                        !r.full_name
                            .eq_ignore_ascii_case(p.repository.full_name.as_str())
                    });
                    Ok(Event::Build(Trigger {
                        ref_name: format!("refs/pull/{}/head", p.number),
                        repo: p.repository.full_name,
                        clone_url: p.repository.clone_url,
                        kind: ChangeKind::PullRequest,
                        base: Some(p.pull_request.base.sha),
                        head: p.pull_request.head.sha,
                        pr_number: Some(p.number),
                        base_ref: Some(p.pull_request.base.ref_name),
                        from_fork,
                        sender: p.sender.login,
                        only_package: None,
                        only_target: None,
                    }))
                }
                "closed" => Ok(Event::Closed {
                    repo: p.repository.full_name,
                    pr_number: p.number,
                }),
                other => Ok(Event::Ignored(format!("pull_request action `{other}`"))),
            }
        }
        "issue_comment" => {
            let p: IssueCommentEvent = parse(event, body)?;
            if p.action != "created" {
                return Ok(Event::Ignored(format!(
                    "issue_comment action `{}`",
                    p.action
                )));
            }
            if p.issue.pull_request.is_none() {
                return Ok(Event::Ignored(
                    "comment on an issue, not a pull request".into(),
                ));
            }
            match p.comment.body.as_deref().and_then(Command::parse) {
                Some(command) => Ok(Event::Command(CommandRequest {
                    repo: p.repository.full_name,
                    pr_number: Some(p.issue.number),
                    head: None,
                    user: p.comment.user.login,
                    command,
                    trusted: false,
                })),
                None => Ok(Event::Ignored(
                    "comment without a /packetary command".into(),
                )),
            }
        }
        "check_run" => {
            let p: CheckRunEvent = parse(event, body)?;
            if p.action != "rerequested" {
                return Ok(Event::Ignored(format!("check_run action `{}`", p.action)));
            }
            let _ = &p.repository.clone_url;
            Ok(Event::Command(CommandRequest {
                repo: p.repository.full_name,
                pr_number: None,
                head: Some(p.check_run.head_sha),
                user: p.sender.login,
                command: Command::Rebuild {
                    package: None,
                    target: None,
                },
                // GitHub offers "Re-run" only to users with write access.
                trusted: true,
            }))
        }
        other => Ok(Event::Ignored(format!("event `{other}`"))),
    }
}

// ---- the reporter ----------------------------------------------------------------------

/// How the reporter authenticates.
#[derive(Clone)]
pub enum Auth {
    /// No credentials: a server without a [github] table, which never reports.
    Anonymous,
    Token(Secret),
    App {
        app_id: u64,
        private_key_pem: Secret,
        installation_id: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("GitHub API URL `{url}`: {message}\n  fix: set [github] api_url to e.g. https://api.github.com")]
    BadUrl { url: String, message: String },
    #[error(
        "GitHub App private key: {0}\n  fix: point [github] private_key at the app's PEM file"
    )]
    BadKey(String),
    #[error("cannot set up the GitHub client: {0}")]
    Client(String),
}

/// Talks to one GitHub (or GitHub Enterprise) API.
#[derive(Clone)]
pub struct GitHub {
    client: Octocrab,
    /// Authenticated as a GitHub App installation: can mint tokens for git fetches.
    app: bool,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitHub { .. }")
    }
}

impl GitHub {
    /// The one constructor: production and tests (pointing at a mock server) share it.
    /// App authentication mints installation tokens as needed; octocrab caches each one and
    /// mints the next when less than 30 seconds of it remain, or when GitHub answers 401.
    pub fn new(api_url: &str, auth: &Auth) -> Result<GitHub, ClientError> {
        let uri: axum::http::Uri =
            api_url
                .parse()
                .map_err(|e: axum::http::uri::InvalidUri| ClientError::BadUrl {
                    url: api_url.to_string(),
                    message: e.to_string(),
                })?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(ClientError::BadUrl {
                url: api_url.to_string(),
                message: "needs a scheme and a host".into(),
            });
        }
        let builder = Octocrab::builder()
            .base_uri(uri)
            .map_err(|e| ClientError::Client(e.to_string()))?
            // The outbox retries with its own backoff and honours Retry-After itself.
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)));
        let client = match auth {
            Auth::Anonymous => builder
                .build()
                .map_err(|e| ClientError::Client(e.to_string()))?,
            Auth::Token(t) => builder
                .personal_token(t.expose().to_string())
                .build()
                .map_err(|e| ClientError::Client(e.to_string()))?,
            Auth::App {
                app_id,
                private_key_pem,
                installation_id,
            } => {
                let app = builder
                    .app_from_rsa_pem(octocrab::models::AppId(*app_id), private_key_pem.expose())
                    .map_err(|e| ClientError::BadKey(e.to_string()))?
                    .build()
                    .map_err(|e| ClientError::Client(e.to_string()))?;
                app.installation(octocrab::models::InstallationId(*installation_id))
                    .map_err(|e| ClientError::Client(e.to_string()))?
            }
        };
        Ok(GitHub {
            client,
            app: matches!(auth, Auth::App { .. }),
        })
    }

    /// An installation token for git over HTTPS (user `x-access-token`), cached by octocrab
    /// and minted again when it would expire within ten minutes: a fetch may take that long.
    pub async fn git_token(&self) -> Result<crate::git::Auth, String> {
        use secrecy::ExposeSecret;
        if !self.app {
            return Err(
                "only a GitHub App installation mints tokens; configure a token instead".into(),
            );
        }
        let token = self
            .client
            .installation_token_with_buffer(chrono::Duration::minutes(10))
            .await
            .map_err(|e| format!("POST /app/installations/{{id}}/access_tokens: {e}"))?;
        Ok(crate::git::Auth::Token {
            username: "x-access-token".into(),
            token: token.expose_secret().to_string(),
        })
    }

    /// POST /repos/{owner}/{repo}/statuses/{sha}
    pub async fn post_status(&self, r: &Report) -> Result<(), DeliveryError> {
        let path = format!(
            "/repos/{}/{}/statuses/{}",
            r.repo.owner(),
            r.repo.name(),
            r.sha
        );
        let body = StatusBody {
            state: r.state.as_str(),
            target_url: r.target_url.as_deref(),
            description: truncate(&r.description, 140),
            context: &r.context,
        };
        let resp = self
            .client
            ._post(path.as_str(), Some(&body))
            .await
            .map_err(|e| transient(format!("POST {path}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = resp.headers().clone();
        Err(http_error(
            "POST",
            &path,
            status,
            &headers,
            body_text(resp).await,
        ))
    }

    /// GET /repos/{owner}/{repo}/collaborators/{username}/permission: may `user` push?
    pub async fn user_can_write(&self, repo: &RepoId, user: &str) -> Result<bool, DeliveryError> {
        let login_ok = !user.is_empty()
            && user.len() <= 64
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '[' | ']'));
        if !login_ok {
            return Ok(false);
        }
        let user = user.replace('[', "%5B").replace(']', "%5D");
        let path = format!(
            "/repos/{}/{}/collaborators/{user}/permission",
            repo.owner(),
            repo.name()
        );
        let resp = self
            .client
            ._get(path.as_str())
            .await
            .map_err(|e| transient(format!("GET {path}: {e}")))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        if !status.is_success() {
            let headers = resp.headers().clone();
            return Err(http_error(
                "GET",
                &path,
                status,
                &headers,
                body_text(resp).await,
            ));
        }
        let text = body_text(resp).await;
        let p: Permission = serde_json::from_str(&text)
            .map_err(|e| transient(format!("GET {path}: unexpected answer: {e}")))?;
        Ok(matches!(
            p.permission.as_str(),
            "admin" | "write" | "maintain"
        ))
    }
}

impl Forge for GitHub {
    fn deliver<'a>(&'a self, report: &'a Report) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.post_status(report))
    }

    fn can_write<'a>(
        &'a self,
        repo: &'a RepoId,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, DeliveryError>> {
        Box::pin(self.user_can_write(repo, user))
    }
}

#[derive(serde::Serialize)]
struct StatusBody<'a> {
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
    description: String,
    context: &'a str,
}

#[derive(Deserialize)]
struct Permission {
    permission: String,
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn transient(message: String) -> DeliveryError {
    DeliveryError {
        message,
        retry_after: None,
        permanent: false,
    }
}

async fn body_text<B>(resp: axum::http::Response<B>) -> String
where
    B: axum::body::HttpBody<Data = Bytes>,
{
    match resp.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes())
            .chars()
            .take(300)
            .collect(),
        Err(_) => String::new(),
    }
}

/// Classifies an error answer: rate limits and server errors are retried, honouring
/// `Retry-After` or `x-ratelimit-reset`; other client errors will not get better.
fn http_error(
    method: &str,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: String,
) -> DeliveryError {
    let retry_after = retry_after(headers, std::time::SystemTime::now());
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (retry_after.is_some()
                || header(headers, "x-ratelimit-remaining") == Some("0")
                || body.to_ascii_lowercase().contains("rate limit")));
    let permanent =
        status.is_client_error() && !rate_limited && status != StatusCode::REQUEST_TIMEOUT;
    DeliveryError {
        message: format!("{method} {path}: {status}: {}", body.trim()),
        retry_after,
        permanent,
    }
}

/// How long GitHub asks us to wait: `Retry-After` (seconds), else, when the rate limit is
/// spent, until `x-ratelimit-reset` (epoch seconds).
pub fn retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    if let Some(secs) = header(headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if header(headers, "x-ratelimit-remaining") == Some("0") {
        let reset = header(headers, "x-ratelimit-reset")?
            .trim()
            .parse::<u64>()
            .ok()?;
        let now = now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
    }
    None
}

impl crate::git::TokenSource for GitHub {
    fn mint(&self) -> BoxFuture<'_, Result<crate::git::Auth, String>> {
        Box::pin(self.git_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let secrets = vec![Secret::new("old"), Secret::new("new")];
        let body = br#"{"zen":"x"}"#;
        assert!(signature_valid(&secrets, &sign("new", body), body));
        assert!(signature_valid(&secrets, &sign("old", body), body));
        assert!(!signature_valid(&secrets, &sign("other", body), body));
        assert!(!signature_valid(&secrets, &sign("new", body), b"{}"));
        assert!(!signature_valid(&secrets, "sha1=00", body));
        assert!(!signature_valid(&secrets, "sha256=zz", body));
        assert!(!signature_valid(&[], &sign("new", body), body));
    }

    #[test]
    fn retry_headers() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        h.insert("x-ratelimit-reset", "1060".parse().expect("header"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(61)));
        h.insert("retry-after", "7".parse().expect("header"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
    }

    #[test]
    fn descriptions_fit_githubs_limit() {
        assert_eq!(truncate("short", 140), "short");
        let long = "é".repeat(200);
        assert_eq!(truncate(&long, 140).chars().count(), 140);
    }
}
