//! `[github]`: the API to report to, its credentials, and the webhooks to trust.

use super::file::RawGithub;
use super::{ConfigError, SecretSource};

/// `[github]`: the API to report to and the webhooks to trust.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub api_url: String,
    /// Where repositories are fetched: `owner/name` from `<git_url>/<owner>/<name>`. None:
    /// from the clone URL a webhook names, only when it is on the forge's own web origin.
    pub git_url: Option<String>,
    pub auth: GithubAuth,
    pub webhook_secrets: Vec<SecretSource>,
    /// `owner/name` or `owner/*`; an empty list allows nothing.
    pub repositories: Vec<String>,
    pub build_forks: bool,
}

#[derive(Debug, Clone)]
pub enum GithubAuth {
    /// A personal access token or an installation token.
    Token(SecretSource),
    /// A GitHub App: a JWT signed with its key buys installation tokens.
    App {
        app_id: u64,
        private_key: SecretSource,
        installation_id: u64,
    },
}

pub(super) fn parse_github(
    raw: RawGithub,
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<GithubConfig, ConfigError> {
    let api_url = raw
        .api_url
        .unwrap_or_else(|| "https://api.github.com".to_string())
        .trim_end_matches('/')
        .to_string();
    if url::Url::parse(&api_url)
        .map(|u| !matches!(u.scheme(), "http" | "https"))
        .unwrap_or(true)
    {
        return Err(invalid(
            "github.api_url",
            format!("`{api_url}` is not an http(s) URL"),
            "use \"https://api.github.com\" or your Enterprise server's \"https://HOST/api/v3\"",
        ));
    }
    let git_url = raw.git_url.map(|g| g.trim_end_matches('/').to_string());
    if let Some(g) = &git_url {
        let scheme = url::Url::parse(g).map(|u| u.scheme().to_string());
        if !matches!(scheme.as_deref(), Ok("https" | "http" | "ssh" | "file")) {
            return Err(invalid(
                "github.git_url",
                format!("`{g}` is not an https, ssh or file URL"),
                "use e.g. \"https://github.com\", \"ssh://git@github.example.org\" or, for a local mirror, \"file:///srv/git\"",
            ));
        }
    }
    let auth = match (raw.token, raw.app_id, raw.private_key, raw.installation_id) {
        (Some(t), None, None, None) => GithubAuth::Token(t.into()),
        (None, Some(app_id), Some(key), Some(installation_id)) => GithubAuth::App {
            app_id,
            private_key: key.into(),
            installation_id,
        },
        (Some(_), ..) => {
            return Err(invalid(
                "github.token",
                "is set together with GitHub App keys".into(),
                "use either `token`, or `app_id` + `private_key` + `installation_id`",
            ))
        }
        _ => {
            return Err(invalid(
                "github",
                "no way to authenticate is configured".into(),
                "set `token` (e.g. token = { env = \"GITHUB_TOKEN\" }), or `app_id`, `private_key` and `installation_id`",
            ))
        }
    };
    if raw.webhook_secrets.is_empty() {
        return Err(invalid(
            "github.webhook_secrets",
            "is empty: no webhook could be verified".into(),
            "list the secret(s) set on the GitHub webhook, e.g. [{ env = \"PACKETARY_WEBHOOK_SECRET\" }]",
        ));
    }
    for r in &raw.repositories {
        let ok = match r.split_once('/') {
            Some((o, "*")) => crate::model::RepoId::github(&format!("{o}/x")).is_ok(),
            Some(_) => crate::model::RepoId::github(r).is_ok(),
            None => false,
        };
        if !ok {
            return Err(invalid(
                "github.repositories",
                format!("`{r}` is not `owner/name` or `owner/*`"),
                "list repositories as \"owner/name\", or \"owner/*\" for all of an owner's",
            ));
        }
    }
    Ok(GithubConfig {
        api_url,
        git_url,
        auth,
        webhook_secrets: raw.webhook_secrets.into_iter().map(Into::into).collect(),
        repositories: raw.repositories,
        build_forks: raw.build_forks,
    })
}
