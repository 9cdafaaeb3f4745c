//! GitHub's inbound side: webhooks verified by their HMAC-SHA256 signature over the raw
//! body, then parsed into forge-neutral events.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer};
use sha2::Sha256;

use super::header;
use crate::config::Secret;
use crate::forge::{
    parse_json, FetchOrigin, Inbound, ParseError, VerifiedWebhook, WebhookRejection,
};
use crate::model::{
    ChangeKind, Command, CommandRequest, CommitSha, ForgeEvent, ForgeKind, RepoId, Trigger,
};

/// GitHub's webhooks: the secrets that sign them and the repositories the service acts for.
#[derive(Clone, Debug)]
pub struct GitHubWebhooks {
    /// Several, so that a secret can be rotated: add the new one, change it on GitHub,
    /// then remove the old one. None: webhooks are refused with 503 and the fix.
    pub secrets: Arc<Vec<Secret>>,
    /// `owner/name` or `owner/*`.
    pub repositories: Arc<Vec<String>>,
    /// Where the repositories are fetched from; a payload's clone URL elsewhere is refused.
    pub fetch_from: FetchOrigin,
}

impl GitHubWebhooks {
    /// Webhooks of github.com, whose repositories are fetched from https://github.com.
    pub fn new(secrets: Vec<Secret>, repositories: Vec<String>) -> GitHubWebhooks {
        GitHubWebhooks {
            secrets: Arc::new(secrets),
            repositories: Arc::new(repositories),
            fetch_from: FetchOrigin::for_api("https://api.github.com"),
        }
    }

    pub fn fetching_from(mut self, origin: FetchOrigin) -> GitHubWebhooks {
        self.fetch_from = origin;
        self
    }
}

/// The headers GitHub sends with every delivery, checked before the body is read.
struct Envelope<'a> {
    signature: &'a str,
    event: &'a str,
    delivery: &'a str,
}

impl GitHubWebhooks {
    fn envelope<'a>(&self, headers: &'a HeaderMap) -> Result<Envelope<'a>, WebhookRejection> {
        if self.secrets.is_empty() {
            return Err(WebhookRejection::NotConfigured(ForgeKind::GitHub));
        }
        let signature =
            header(headers, "x-hub-signature-256").ok_or(WebhookRejection::MissingSignature)?;
        let event = header(headers, "x-github-event")
            .filter(|e| !e.is_empty() && e.len() < 64)
            .ok_or(WebhookRejection::MissingHeader("X-GitHub-Event"))?;
        let delivery = header(headers, "x-github-delivery")
            .filter(|d| !d.is_empty() && d.len() <= 128)
            .ok_or(WebhookRejection::MissingHeader("X-GitHub-Delivery"))?;
        Ok(Envelope {
            signature,
            event,
            delivery,
        })
    }
}

impl Inbound for GitHubWebhooks {
    fn check(&self, headers: &HeaderMap, _query: Option<&str>) -> Result<(), WebhookRejection> {
        self.envelope(headers).map(|_| ())
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        _query: Option<&str>,
        body: Bytes,
    ) -> Result<VerifiedWebhook, WebhookRejection> {
        let env = self.envelope(headers)?;
        if !signature_valid(&self.secrets, env.signature, &body) {
            return Err(WebhookRejection::BadSignature);
        }
        Ok(VerifiedWebhook {
            event: env.event.to_string(),
            delivery: env.delivery.to_string(),
            body,
        })
    }

    fn parse(&self, hook: &VerifiedWebhook) -> Result<ForgeEvent, ParseError> {
        let mut event = parse_event(&hook.event, &hook.body)?;
        if let ForgeEvent::Build(t) = &mut event {
            t.clone_url = self
                .fetch_from
                .clone_url(&t.repo, &t.clone_url)
                .map_err(|refused| ParseError {
                    event: hook.event.clone(),
                    path: "repository.clone_url".into(),
                    message: refused.to_string(),
                })?;
        }
        Ok(event)
    }

    fn allows(&self, repo: &RepoId) -> bool {
        if repo.forge() != ForgeKind::GitHub {
            return false;
        }
        let path = repo.path();
        let owner = path.split_once('/').map(|(o, _)| o).unwrap_or(path);
        self.repositories.iter().any(|r| {
            r.eq_ignore_ascii_case(path)
                || r.strip_suffix("/*")
                    .is_some_and(|o| o.eq_ignore_ascii_case(owner))
        })
    }
}

/// `repository.full_name` (`owner/name`) as a GitHub [`RepoId`].
fn github_repo<'de, D: Deserializer<'de>>(d: D) -> Result<RepoId, D::Error> {
    let s = String::deserialize(d)?;
    RepoId::github(&s).map_err(serde::de::Error::custom)
}

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

// ---- event parsing ---------------------------------------------------------------------

#[derive(Deserialize)]
struct Repository {
    #[serde(deserialize_with = "github_repo")]
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

/// Turns a verified webhook into a [`ForgeEvent`]. Events and actions Packetary does not act
/// on become [`ForgeEvent::Ignored`]; malformed payloads of events it does act on are errors.
pub fn parse_event(event: &str, body: &[u8]) -> Result<ForgeEvent, ParseError> {
    match event {
        "ping" => {
            // Still checked to be JSON, so that a truncated ping is refused like any payload.
            parse_json::<serde_json::Value>(event, body)?;
            Ok(ForgeEvent::Ping)
        }
        "push" => {
            let p: Push = parse_json(event, body)?;
            let Some(branch) = p.ref_name.strip_prefix("refs/heads/") else {
                return Ok(ForgeEvent::Ignored(format!(
                    "push to {} (not a branch)",
                    p.ref_name
                )));
            };
            if p.deleted || p.after.is_zero() {
                return Ok(ForgeEvent::RefDeleted {
                    repo: p.repository.full_name,
                    ref_name: p.ref_name,
                });
            }
            Ok(ForgeEvent::Build(Trigger {
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
            let p: PullRequestEvent = parse_json(event, body)?;
            match p.action.as_str() {
                "opened" | "synchronize" | "reopened" => {
                    let from_fork = p.pull_request.head.repo.as_ref().is_none_or(|r| {
                        !r.full_name
                            .eq_ignore_ascii_case(p.repository.full_name.path())
                    });
                    Ok(ForgeEvent::Build(Trigger {
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
                "closed" => Ok(ForgeEvent::Closed {
                    repo: p.repository.full_name,
                    pr_number: p.number,
                }),
                other => Ok(ForgeEvent::Ignored(format!(
                    "pull_request action `{other}`"
                ))),
            }
        }
        "issue_comment" => {
            let p: IssueCommentEvent = parse_json(event, body)?;
            if p.action != "created" {
                return Ok(ForgeEvent::Ignored(format!(
                    "issue_comment action `{}`",
                    p.action
                )));
            }
            if p.issue.pull_request.is_none() {
                return Ok(ForgeEvent::Ignored(
                    "comment on an issue, not a pull request".into(),
                ));
            }
            match p.comment.body.as_deref().and_then(Command::parse) {
                Some(command) => Ok(ForgeEvent::Command(CommandRequest {
                    repo: p.repository.full_name,
                    pr_number: Some(p.issue.number),
                    head: None,
                    user: p.comment.user.login,
                    command,
                    trusted: false,
                })),
                None => Ok(ForgeEvent::Ignored(
                    "comment without a /packetary command".into(),
                )),
            }
        }
        "check_run" => {
            let p: CheckRunEvent = parse_json(event, body)?;
            if p.action != "rerequested" {
                return Ok(ForgeEvent::Ignored(format!(
                    "check_run action `{}`",
                    p.action
                )));
            }
            let _ = &p.repository.clone_url;
            Ok(ForgeEvent::Command(CommandRequest {
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
        other => Ok(ForgeEvent::Ignored(format!("event `{other}`"))),
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
}
