//! GitHub's outbound side: commit statuses and permission checks through octocrab, and
//! installation tokens for git fetches.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use octocrab::Octocrab;
use serde::Deserialize;

use super::header;
use crate::config::Secret;
use crate::forge::{Delivered, DeliveryError, Forge};
use crate::git::MintError;
use crate::model::{RepoId, Report};

/// How the reporter authenticates.
#[derive(Clone)]
pub enum ApiAuth {
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
    pub fn new(api_url: &str, auth: &ApiAuth) -> Result<GitHub, ClientError> {
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
            ApiAuth::Anonymous => builder
                .build()
                .map_err(|e| ClientError::Client(e.to_string()))?,
            ApiAuth::Token(t) => builder
                .personal_token(t.expose().to_string())
                .build()
                .map_err(|e| ClientError::Client(e.to_string()))?,
            ApiAuth::App {
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
            app: matches!(auth, ApiAuth::App { .. }),
        })
    }

    /// An installation token for git over HTTPS (user `x-access-token`), cached by octocrab
    /// and minted again when it would expire within ten minutes: a fetch may take that long.
    pub async fn git_token(&self) -> Result<crate::git::FetchAuth, MintError> {
        use secrecy::ExposeSecret;
        if !self.app {
            return Err(MintError::Unsupported(
                "only a GitHub App installation mints tokens; configure a token instead",
            ));
        }
        let token = self
            .client
            .installation_token_with_buffer(chrono::Duration::minutes(10))
            .await
            .map_err(|e| MintError::Api {
                call: "POST /app/installations/{id}/access_tokens",
                source: Box::new(e),
            })?;
        Ok(crate::git::FetchAuth::Token {
            username: "x-access-token".into(),
            token: token.expose_secret().to_string(),
        })
    }

    /// POST /repos/{owner}/{repo}/statuses/{sha}
    /// Returns the status's `id`, when the answer carries one.
    pub async fn post_status(&self, r: &Report) -> Result<Delivered, DeliveryError> {
        let path = format!("/repos/{}/statuses/{}", r.repo.path(), r.sha);
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
            // The status exists whatever the body says: an unreadable one only loses the id.
            let id = serde_json::from_str::<Created>(&body_text(resp).await)
                .ok()
                .map(|c| c.id.to_string());
            return Ok(Delivered { forge_ref: id });
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
        let path = format!("/repos/{}/collaborators/{user}/permission", repo.path());
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
    fn deliver<'a>(
        &'a self,
        report: &'a Report,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
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

/// The part of a created status (or check run) the outbox keeps.
#[derive(Deserialize)]
struct Created {
    id: u64,
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
        obsolete: false,
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
        obsolete: false,
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
    fn mint(&self) -> BoxFuture<'_, Result<crate::git::FetchAuth, MintError>> {
        Box::pin(self.git_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
