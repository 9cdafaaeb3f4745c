//! Forges in and out. Inbound, a forge's parser turns what it sends (a webhook today, an
//! event stream later) into forge-neutral [`ForgeEvent`]s; outbound, [`Forge`] delivers
//! [`Report`]s. [`Forges`] is the registry keyed by [`ForgeKind`]: `/webhooks/<forge>`
//! routes to the forge's [`Inbound`], and a report goes to the forge its repository is on.
//! Nothing forge-specific leaves this module.
//!
//! Adding a forge (Gerrit, GitLab): a `ForgeKind` variant, an `Inbound` for its webhooks,
//! a `Forge` for its reports, and one `Forges::with` call where the service is wired.

pub mod gerrit;
pub mod github;
mod origin;

pub use origin::FetchOrigin;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use futures_util::future::BoxFuture;

use crate::model::{ForgeEvent, ForgeKind, RepoId, Report};

/// Why a report could not be delivered, and when to try again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    /// What the forge asked for (Retry-After, rate-limit reset), if anything.
    pub retry_after: Option<Duration>,
    /// Retrying will not help (e.g. the repository is gone or the token lacks access).
    pub permanent: bool,
    /// The report no longer matters (a closed change, whose label cannot be set): dropped
    /// at once, not tried again like a permanent error.
    pub obsolete: bool,
}

/// What a forge answered to a delivered report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The forge's id of what it created (a GitHub status's `id`; a check run's, for the
    /// reporter that updates it later); `None` when it gives none (a Gerrit review).
    pub forge_ref: Option<String>,
}

/// What the queue needs from a forge. Implemented by [`github::GitHub`] and by the
/// [`Forges`] registry, which hands each call to the repository's forge; tests may fake it.
pub trait Forge: Send + Sync {
    fn deliver<'a>(&'a self, report: &'a Report)
        -> BoxFuture<'a, Result<Delivered, DeliveryError>>;
    /// Whether `user` may push to `repo` (and so may command builds).
    fn can_write<'a>(
        &'a self,
        repo: &'a RepoId,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, DeliveryError>>;
}

/// A webhook whose authenticity was checked. Parsers taking this never see unverified bytes.
#[derive(Debug)]
pub struct VerifiedWebhook {
    /// The forge's name for the event (`push`, `patchset-created`), for logs and metrics.
    pub event: String,
    /// The forge's delivery id: a redelivery of the same id is not built twice.
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
    /// The webhook's `?token=` is missing or wrong (the token itself is never shown).
    #[error("missing or wrong token: the webhook's URL must end in ?token=<webhook_token>")]
    BadToken,
    #[error("missing or invalid header {0}")]
    MissingHeader(&'static str),
    #[error("the body is larger than the configured limit")]
    TooLarge,
    #[error("could not read the body: {0}")]
    Body(String),
    #[error("the body did not arrive within {0:?}")]
    SlowBody(Duration),
    #[error("{0} webhooks are not configured on this server\n  fix: add a [{0}] table with the webhook's secret to the configuration (see config/packetary.example.toml)")]
    NotConfigured(ForgeKind),
    #[error("no forge named `{0}`; webhooks go to /webhooks/<forge>, e.g. /webhooks/github")]
    UnknownForge(String),
}

impl WebhookRejection {
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookRejection::MissingSignature | WebhookRejection::BadSignature => {
                StatusCode::UNAUTHORIZED
            }
            WebhookRejection::BadToken => StatusCode::FORBIDDEN,
            WebhookRejection::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebhookRejection::MissingHeader(_) | WebhookRejection::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            WebhookRejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookRejection::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            WebhookRejection::UnknownForge(_) => StatusCode::NOT_FOUND,
        }
    }
}

/// A payload that does not have the shape the forge documents; names the failing field.
#[derive(Debug, thiserror::Error)]
#[error("{event} payload: field `{path}`: {message}")]
pub struct ParseError {
    pub event: String,
    pub path: String,
    pub message: String,
}

/// Parses JSON into `T`, naming the failing field of a malformed payload.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    event: &str,
    body: &[u8],
) -> Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| ParseError {
        event: event.to_string(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// The inbound side of a forge's webhooks. The web layer calls `check` before it reads the
/// body (cheap refusals first), `verify` on the body read within the limit, then `parse`.
pub trait Inbound: Send + Sync {
    /// Refuses what the headers (or the query string) already show to be wrong.
    fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), WebhookRejection>;
    /// Checks the body's authenticity (signature, token) before anything parses it.
    fn verify(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        body: Bytes,
    ) -> Result<VerifiedWebhook, WebhookRejection>;
    fn parse(&self, hook: &VerifiedWebhook) -> Result<ForgeEvent, ParseError>;
    /// Whether the service acts for `repo` (its configured repositories).
    fn allows(&self, repo: &RepoId) -> bool;
}

/// The forges the service talks to, by kind: where webhooks come in and reports go out.
#[derive(Clone, Default)]
pub struct Forges {
    inbound: BTreeMap<ForgeKind, Arc<dyn Inbound>>,
    outbound: BTreeMap<ForgeKind, Arc<dyn Forge>>,
}

impl Forges {
    pub fn new() -> Forges {
        Forges::default()
    }

    /// Registers a forge's webhook parser and reporter.
    pub fn with(mut self, kind: ForgeKind, inbound: Arc<dyn Inbound>, out: Arc<dyn Forge>) -> Self {
        self.inbound.insert(kind, inbound);
        self.outbound.insert(kind, out);
        self
    }

    pub fn inbound(&self, kind: ForgeKind) -> Option<&Arc<dyn Inbound>> {
        self.inbound.get(&kind)
    }

    fn outbound(&self, repo: &RepoId) -> Result<&Arc<dyn Forge>, DeliveryError> {
        self.outbound
            .get(&repo.forge())
            .ok_or_else(|| DeliveryError {
                message: format!(
                    "no {} forge is configured for {repo}; add its table to the configuration",
                    repo.forge()
                ),
                retry_after: None,
                permanent: true,
                obsolete: false,
            })
    }
}

impl Forge for Forges {
    fn deliver<'a>(
        &'a self,
        report: &'a Report,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        match self.outbound(&report.repo) {
            Ok(f) => f.deliver(report),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn can_write<'a>(
        &'a self,
        repo: &'a RepoId,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, DeliveryError>> {
        match self.outbound(repo) {
            Ok(f) => f.can_write(repo, user),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}
