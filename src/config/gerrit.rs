//! `[gerrit]`: the server whose changes are built and voted on, its stream and webhooks.

use super::file::RawGerrit;
use super::{ConfigError, SecretSource};

/// `[gerrit]`: the Gerrit server whose changes are built and voted on.
#[derive(Debug, Clone)]
pub struct GerritConfig {
    /// REST base, e.g. `https://review.example.org` (no trailing slash).
    pub url: String,
    pub user: String,
    pub http_password: SecretSource,
    /// `ssh://user@host:29418` for `gerrit stream-events`; None: webhooks only.
    pub ssh: Option<GerritSsh>,
    pub ssh_key: Option<SecretSource>,
    /// The SSH server's host key (`<type> <base64>`, a line of its `.pub` file): the only
    /// key accepted. None: the first key seen is kept and a changed one refused.
    pub host_key: Option<String>,
    /// Project P is fetched from `<git_url>/<P>`.
    pub git_url: String,
    /// Project names, or `prefix/*`.
    pub projects: Vec<String>,
    pub label: String,
    pub success_vote: i32,
    pub failure_vote: i32,
    pub webhook_token: Option<SecretSource>,
    pub skip_wip_and_private: bool,
}

/// Where `gerrit stream-events` is run: `ssh://user@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GerritSsh {
    pub user: String,
    pub host: String,
    pub port: u16,
}

pub(super) fn parse_gerrit(
    raw: RawGerrit,
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<GerritConfig, ConfigError> {
    let url = raw
        .url
        .ok_or_else(|| {
            invalid(
                "gerrit.url",
                "is missing".into(),
                "set the REST base of the server, e.g. url = \"https://review.example.org\"",
            )
        })?
        .trim_end_matches('/')
        .to_string();
    if url::Url::parse(&url)
        .map(|u| !matches!(u.scheme(), "http" | "https") || u.host_str().is_none())
        .unwrap_or(true)
    {
        return Err(invalid(
            "gerrit.url",
            format!("`{url}` is not an http(s) URL"),
            "use the server's web address, e.g. \"https://review.example.org\"",
        ));
    }
    let user = raw.user.filter(|u| !u.trim().is_empty()).ok_or_else(|| {
        invalid(
            "gerrit.user",
            "is missing".into(),
            "set the account the bot votes as, e.g. user = \"packetary\"",
        )
    })?;
    let http_password = raw.http_password.ok_or_else(|| {
        invalid(
            "gerrit.http_password",
            "is missing: votes could not be sent".into(),
            "set the account's HTTP password (Settings > HTTP Credentials), e.g. http_password = { env = \"GERRIT_HTTP_PASSWORD\" }",
        )
    })?;
    let ssh = match raw.ssh {
        None => None,
        Some(s) => Some(parse_gerrit_ssh(&s).ok_or_else(|| {
            invalid(
                "gerrit.ssh",
                format!("`{s}` is not an ssh://user@host:port URL"),
                "write e.g. \"ssh://packetary@review.example.org:29418\"",
            )
        })?),
    };
    let host_key = match raw.host_key {
        None => None,
        Some(k) => Some(parse_host_key(&k).ok_or_else(|| {
            invalid(
                "gerrit.host_key",
                format!("`{k}` is not an SSH public key line"),
                "paste the server's host key as its .pub file has it, e.g. host_key = \"ssh-ed25519 AAAAC3Nza...\" (ssh-keyscan -p 29418 review.example.org prints it)",
            )
        })?),
    };
    let git_url = raw
        .git_url
        .ok_or_else(|| {
            invalid(
                "gerrit.git_url",
                "is missing: projects could not be fetched".into(),
                "set where project P is fetched from as `<git_url>/P`, e.g. git_url = \"https://review.example.org\"",
            )
        })?
        .trim_end_matches('/')
        .to_string();
    let scheme = url::Url::parse(&git_url).map(|u| u.scheme().to_string());
    if !matches!(scheme.as_deref(), Ok("https" | "http" | "ssh" | "file")) {
        return Err(invalid(
            "gerrit.git_url",
            format!("`{git_url}` is not an https, ssh or file URL"),
            "use e.g. \"https://review.example.org\", \"ssh://bot@review.example.org:29418\" or, for a local mirror, \"file:///srv/git\"",
        ));
    }
    for p in &raw.projects {
        let name = p.strip_suffix("/*").unwrap_or(p);
        if crate::model::RepoId::new(crate::model::ForgeKind::Gerrit, name).is_err() {
            return Err(invalid(
                "gerrit.projects",
                format!("`{p}` is not a project name or `prefix/*`"),
                "list projects as \"openstack/fuel-specs\", or \"openstack/*\" for all under a prefix",
            ));
        }
    }
    let label = raw.label.unwrap_or_else(|| "Verified".into());
    if label.is_empty()
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "gerrit.label",
            format!("`{label}` is not a label name"),
            "use the label's name as Gerrit shows it, e.g. \"Verified\"",
        ));
    }
    let success_vote = raw.success_vote.unwrap_or(1);
    let failure_vote = raw.failure_vote.unwrap_or(-1);
    for (key, v) in [
        ("gerrit.success_vote", success_vote),
        ("gerrit.failure_vote", failure_vote),
    ] {
        if !(-2..=2).contains(&v) {
            return Err(invalid(
                key,
                format!("{v} is outside the label's range"),
                "use a value of the label, between -2 and 2 (Verified: -1, 0 or 1)",
            ));
        }
    }
    Ok(GerritConfig {
        url,
        user,
        http_password: http_password.into(),
        ssh,
        ssh_key: raw.ssh_key.map(Into::into),
        host_key,
        git_url,
        projects: raw.projects,
        label,
        success_vote,
        failure_vote,
        webhook_token: raw.webhook_token.map(Into::into),
        skip_wip_and_private: raw.skip_wip_and_private.unwrap_or(true),
    })
}

/// An SSH public key line: a known key type and base64, a comment dropped (it would be
/// written into a `known_hosts` file: nothing else may ride along).
fn parse_host_key(s: &str) -> Option<String> {
    let mut parts = s.split_whitespace();
    let (kind, data) = (parts.next()?, parts.next()?);
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    ];
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    (known.contains(&kind) && data.len() >= 16 && data.chars().all(base64))
        .then(|| format!("{kind} {data}"))
}

/// `ssh://user@host:port` (port 29418 when left out).
fn parse_gerrit_ssh(s: &str) -> Option<GerritSsh> {
    let u = url::Url::parse(s).ok()?;
    if u.scheme() != "ssh" || u.username().is_empty() || u.password().is_some() {
        return None;
    }
    if !u.path().trim_matches('/').is_empty() || u.query().is_some() {
        return None;
    }
    let host = u.host_str()?.to_string();
    // Names that ssh would read as options are refused.
    let plain = |v: &str| {
        !v.starts_with('-')
            && v.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')
            })
    };
    if !plain(&host) || !plain(u.username()) {
        return None;
    }
    Some(GerritSsh {
        user: u.username().to_string(),
        host,
        port: u.port().unwrap_or(29418),
    })
}
