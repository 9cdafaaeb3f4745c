//! Service configuration: a TOML file (or the embedded defaults) turned into checked values.
//!
//! Every error names the file, the key and what to change, because a configuration
//! mistake is the user's to fix and nobody should have to read the code to do it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::TargetName;

/// What Packetary uses when no configuration file is given.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}\n  fix: check the path given to --config or PACKETARY_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: key `{key}`: {problem}\n  fix: {fix}")]
    Invalid {
        location: String,
        key: String,
        problem: String,
        fix: String,
    },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` for the embedded defaults.
    pub source: Option<PathBuf>,
    pub parallel: usize,
    pub out_dir: PathBuf,
    pub default_targets: Vec<TargetName>,
    pub docker_host: Option<String>,
    pub images: ImagesConfig,
    pub targets: BTreeMap<TargetName, Target>,
    /// The file defined no target, so the embedded defaults' are used.
    pub targets_from_defaults: bool,
    pub server: ServerConfig,
    /// `None` when the file has no [github] table (then `serve` refuses to start).
    pub github: Option<GithubConfig>,
    /// `None` when the file has no [gerrit] table.
    pub gerrit: Option<GerritConfig>,
    /// `[releases.NAME]`: branches whose pushes publish into package repositories.
    pub releases: BTreeMap<ReleaseName, Release>,
}

/// `[server]`: the webhook service.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// Holds the SQLite database, git mirrors, work trees and build results.
    pub data_dir: PathBuf,
    /// Base of the links put in statuses (`target_url`); the build pages live under it.
    pub public_url: String,
    /// Largest webhook body accepted; GitHub caps payloads at 25 MiB.
    pub body_limit: usize,
    /// How long SIGTERM waits for running builds before stopping them.
    pub shutdown_grace: Duration,
    /// Attempts of a build that keeps hitting infrastructure faults.
    pub max_attempts: u32,
    /// First wait before retrying after an infrastructure fault; doubles each time.
    pub retry_backoff: Duration,
    /// Open HTTP connections at most; past it the one idle the longest is closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this; idle keep-alive connections end after it.
    pub header_timeout: Duration,
    /// A webhook's body must arrive within this (GitHub sends it at once).
    pub body_timeout: Duration,
    /// `/healthz` fails when the data directory's file system has less free.
    pub min_free_disk: u64,
    /// Repositories (`forge:path` or `forge:prefix/*`) whose pages need `page_token`.
    pub private_repositories: Vec<String>,
    pub page_token: Option<SecretSource>,
    /// A change's package repositories are removed this long after their last publication
    /// (and at once when the change closes).
    pub change_repos_max_age: Duration,
}

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

mod file;
mod release;
mod secret;
mod target;

use file::*;
pub use release::{Release, ReleaseName};
pub use secret::{Secret, SecretSource};
pub use target::{
    parse_bytes, parse_size, Backend, ImagesConfig, Limits, Repo, RepoError, RepoLocation, Target,
};

impl Config {
    /// Loads `path` over the embedded defaults, or the defaults alone when `path` is
    /// `None`. A file that defines targets replaces the default target set; one that
    /// defines none (only `[server]` and `[github]`, say) keeps the embedded target.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::parse_over_defaults(&text, Some(p))?
            }
            None => Config::parse(DEFAULT_TOML, None)?,
        };
        tracing::info!(
            "active targets: {} (default: {}){}",
            join_names(config.targets.keys()),
            join_names(config.default_targets.iter()),
            match path {
                Some(p) if config.targets_from_defaults => format!(
                    "; {} defines none, so the embedded defaults' are used",
                    p.display()
                ),
                Some(p) => format!(", from {}", p.display()),
                None => ", from the embedded defaults".to_string(),
            }
        );
        Ok(config)
    }

    /// Parses configuration text on its own; `origin` is only used in messages.
    pub fn parse(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
        Config::parse_impl(text, origin, false)
    }

    /// Parses configuration text merged over the embedded defaults (see [`Config::load`]).
    pub fn parse_over_defaults(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
        Config::parse_impl(text, origin, true)
    }

    fn parse_impl(text: &str, origin: Option<&Path>, merge: bool) -> Result<Config, ConfigError> {
        let file = origin
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded defaults>".to_string());
        let mut raw = parse_raw(text, &file)?;
        let targets_from_defaults = merge && raw.targets.is_empty();
        if targets_from_defaults {
            raw.targets = parse_raw(DEFAULT_TOML, "<embedded defaults>")?.targets;
        }
        let invalid = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
            location: locate(text, &file, key),
            key: key.to_string(),
            problem,
            fix: fix.to_string(),
        };

        let parallel = match raw.build.parallel {
            Some(0) => {
                return Err(invalid(
                    "build.parallel",
                    "must be at least 1".into(),
                    "set it to the number of builds to run at once, or remove it to use the number of cores",
                ))
            }
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };

        let mut targets = BTreeMap::new();
        for (name, t) in raw.targets {
            let key = |k: &str| format!("targets.{name}.{k}");
            let tname = TargetName::parse(&name).map_err(|e| {
                invalid(
                    &format!("targets.{name}"),
                    e.to_string(),
                    "rename the [targets.NAME] table",
                )
            })?;
            if t.image.trim().is_empty() {
                return Err(invalid(
                    &key("image"),
                    "is empty".into(),
                    "name a builder image, e.g. \"packetary/rpmbuild:bookworm\"",
                ));
            }
            let mut limits = Limits::default();
            if let Some(m) = &t.memory {
                limits.memory_bytes = Some(parse_bytes(m).map_err(|p| {
                    invalid(
                        &key("memory"),
                        p,
                        "write bytes or a size like \"512MiB\" or \"4GiB\"",
                    )
                })?);
            }
            if let Some(c) = t.cpus {
                if !(c > 0.0 && c.is_finite()) {
                    return Err(invalid(
                        &key("cpus"),
                        format!("{c} is not a positive number of cores"),
                        "write e.g. 2 or 0.5, or remove the key for no limit",
                    ));
                }
                limits.cpus = Some(c);
            }
            if let Some(p) = t.pids {
                if p < 16 {
                    return Err(invalid(
                        &key("pids"),
                        format!("{p} is too few processes for any build"),
                        "use at least 16; the default is 4096",
                    ));
                }
                limits.pids = p;
            }
            if let Some(s) = &t.timeout {
                limits.timeout = humantime::parse_duration(s).map_err(|e| {
                    invalid(
                        &key("timeout"),
                        format!("`{s}`: {e}"),
                        "write a duration like \"90s\", \"30m\" or \"2h\"",
                    )
                })?;
                if limits.timeout.is_zero() {
                    return Err(invalid(
                        &key("timeout"),
                        "is zero".into(),
                        "write a duration like \"30m\"",
                    ));
                }
            }
            if let Some(s) = &t.log_size {
                limits.log_bytes = parse_size(s).ok().filter(|n| *n >= 4096).ok_or_else(|| {
                    invalid(
                        &key("log_size"),
                        format!("`{s}` is not a size of at least 4KiB"),
                        "write e.g. \"64MiB\" (the default)",
                    )
                })? as u64;
            }
            let mut repos = Vec::new();
            for (i, r) in t.repos.iter().enumerate() {
                let repo = Repo::new(&r.name, &r.url).map_err(|p| {
                    invalid(
                        &format!("targets.{name}.repos[{i}]"),
                        p.to_string(),
                        "give each repository a name and a file://, http(s):// URL or an absolute path",
                    )
                })?;
                if repos.iter().any(|x: &Repo| x.name == repo.name) {
                    return Err(invalid(
                        &format!("targets.{name}.repos[{i}].name"),
                        format!("repository name `{}` is used twice", r.name),
                        "give each repository of a target its own name",
                    ));
                }
                repos.push(repo);
            }
            for (m, v) in &t.macros {
                let name_ok = m.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !name_ok {
                    return Err(invalid(
                        &key("macros"),
                        format!("`{m}` is not an rpm macro name"),
                        "write names without `%`, letters, digits and `_`, e.g. macros = { fedora = \"40\", dist = \".fc40\" }",
                    ));
                }
                if v.contains(['\n', '\0']) {
                    return Err(invalid(
                        &key("macros"),
                        format!("the value of `{m}` spans lines"),
                        "give each macro a one-line value",
                    ));
                }
            }
            if let Some(u) = &t.uname_r {
                if u.is_empty()
                    || !u
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-+~".contains(c))
                {
                    return Err(invalid(
                        &key("uname_r"),
                        format!("`{u}` is not a kernel release"),
                        "write what `uname -r` prints on the target, e.g. \"6.8.5-301.fc40.x86_64\"",
                    ));
                }
            }
            let arch = t.arch.unwrap_or_else(|| "x86_64".to_string());
            if arch.is_empty() || !arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid(
                    &key("arch"),
                    format!("`{arch}` is not an architecture"),
                    "write e.g. \"x86_64\" or \"aarch64\"",
                ));
            }
            targets.insert(
                tname.clone(),
                Target {
                    name: tname,
                    backend: t.backend,
                    image: t.image,
                    arch,
                    repos,
                    limits,
                    releasever: t.releasever,
                    dist: t.dist,
                    chroot_setup: t
                        .chroot_setup
                        .unwrap_or_else(|| "install @buildsys-build".to_string()),
                    macros: t.macros,
                    uname_r: t.uname_r,
                },
            );
        }
        if targets.is_empty() {
            return Err(invalid(
                "targets",
                "no target is defined".into(),
                "add a [targets.NAME] table with at least `backend` and `image` (see config/packetary.example.toml)",
            ));
        }

        let default_targets = match raw.build.default_targets {
            Some(list) => {
                let mut out = Vec::new();
                for n in list {
                    let t = TargetName::parse(&n)
                        .ok()
                        .filter(|t| targets.contains_key(t))
                        .ok_or_else(|| {
                            invalid(
                                "build.default_targets",
                                format!("names `{n}`, which is not a target of this file"),
                                &format!("use one of: {}", join_names(targets.keys())),
                            )
                        })?;
                    out.push(t);
                }
                out
            }
            None => targets.keys().cloned().collect(),
        };

        let server = parse_server(raw.server, &invalid)?;
        let github = raw.github.map(|g| parse_github(g, &invalid)).transpose()?;
        let gerrit = raw.gerrit.map(|g| parse_gerrit(g, &invalid)).transpose()?;
        let releases = release::parse_releases(raw.releases, &targets, &invalid)?;

        Ok(Config {
            server,
            github,
            gerrit,
            releases,
            targets_from_defaults,
            source: origin.map(Path::to_path_buf),
            parallel,
            out_dir: raw
                .build
                .out_dir
                .unwrap_or_else(|| PathBuf::from("packetary-out")),
            default_targets,
            docker_host: raw.docker.host,
            images: ImagesConfig {
                debian_mirror: raw
                    .images
                    .debian_mirror
                    .unwrap_or_else(|| "http://deb.debian.org/debian".to_string()),
                debian_suite: raw
                    .images
                    .debian_suite
                    .unwrap_or_else(|| "bookworm".to_string()),
            },
            targets,
        })
    }

    /// Looks targets up by name; an unknown name is a usage error that lists the known ones.
    pub fn select_targets(&self, names: &[String]) -> Result<Vec<Target>, ConfigError> {
        if names.is_empty() {
            return Ok(self
                .default_targets
                .iter()
                .filter_map(|t| self.targets.get(t).cloned())
                .collect());
        }
        names
            .iter()
            .map(|n| {
                TargetName::parse(n)
                    .ok()
                    .and_then(|t| self.targets.get(&t).cloned())
                    .ok_or_else(|| ConfigError::Invalid {
                        location: self
                            .source
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "<embedded defaults>".into()),
                        key: format!("targets.{n}"),
                        problem: format!("there is no target named `{n}`"),
                        fix: format!(
                            "use one of: {} (or add [targets.{n}] to the configuration)",
                            join_names(self.targets.keys())
                        ),
                    })
            })
            .collect()
    }
}

fn parse_server(
    raw: RawServer,
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<ServerConfig, ConfigError> {
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen = listen.parse().map_err(|e| {
        invalid(
            "server.listen",
            format!("`{listen}`: {e}"),
            "write an address and port, e.g. \"0.0.0.0:8080\"",
        )
    })?;
    let public_url = raw
        .public_url
        .unwrap_or_else(|| format!("http://{listen}"))
        .trim_end_matches('/')
        .to_string();
    if url::Url::parse(&public_url)
        .map(|u| !matches!(u.scheme(), "http" | "https"))
        .unwrap_or(true)
    {
        return Err(invalid(
            "server.public_url",
            format!("`{public_url}` is not an http(s) URL"),
            "write the URL users reach this server at, e.g. \"https://packetary.example.com\"",
        ));
    }
    let body_limit = match &raw.body_limit {
        Some(s) => parse_size(s).ok().filter(|n| *n >= 1024).ok_or_else(|| {
            invalid(
                "server.body_limit",
                format!("`{s}` is not a size of at least 1KiB"),
                "write e.g. \"25MiB\"",
            )
        })? as usize,
        None => 25 << 20,
    };
    let duration =
        |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                Some(s) => humantime::parse_duration(s).map_err(|e| {
                    invalid(
                        key,
                        format!("`{s}`: {e}"),
                        "write a duration like \"90s\", \"10m\"",
                    )
                }),
                None => Ok(default),
            }
        };
    let max_attempts = raw.max_attempts.unwrap_or(3);
    if max_attempts == 0 {
        return Err(invalid(
            "server.max_attempts",
            "must be at least 1".into(),
            "use 1 for no retries",
        ));
    }
    let min_free_disk = match &raw.min_free_disk {
        Some(s) => parse_size(s).ok().filter(|n| *n >= 0).ok_or_else(|| {
            invalid(
                "server.min_free_disk",
                format!("`{s}` is not a size"),
                "write e.g. \"1GiB\" (\"0\" turns the check off)",
            )
        })? as u64,
        None => 512 << 20,
    };
    for p in &raw.private_repositories {
        let path = p.strip_suffix("/*").unwrap_or(p);
        if crate::model::RepoId::parse(path).is_err() {
            return Err(invalid(
                "server.private_repositories",
                format!("`{p}` is not `forge:owner/name` or `forge:owner/*`"),
                "list repositories as they are stored, e.g. \"github:acme/specs\" or \"github:acme/*\"",
            ));
        }
    }
    if !raw.private_repositories.is_empty() && raw.page_token.is_none() {
        return Err(invalid(
            "server.page_token",
            "is not set, but private_repositories are listed: nobody could see their builds".into(),
            "set page_token = { env = \"PACKETARY_PAGE_TOKEN\" } (or a file), and give it to the people who may see them",
        ));
    }
    let max_connections = raw.max_connections.unwrap_or(1024);
    if max_connections < 16 {
        return Err(invalid(
            "server.max_connections",
            format!("{max_connections} is too few to serve webhooks and health checks"),
            "use at least 16 (the default is 1024)",
        ));
    }
    Ok(ServerConfig {
        listen,
        data_dir: raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("packetary-data")),
        public_url,
        body_limit,
        shutdown_grace: duration(
            "server.shutdown_grace",
            &raw.shutdown_grace,
            Duration::from_secs(600),
        )?,
        max_attempts,
        retry_backoff: duration(
            "server.retry_backoff",
            &raw.retry_backoff,
            Duration::from_secs(30),
        )?,
        max_connections,
        min_free_disk,
        private_repositories: raw.private_repositories,
        page_token: raw.page_token.map(Into::into),
        header_timeout: duration(
            "server.header_timeout",
            &raw.header_timeout,
            Duration::from_secs(10),
        )?,
        body_timeout: duration(
            "server.body_timeout",
            &raw.body_timeout,
            Duration::from_secs(10),
        )?,
        change_repos_max_age: duration(
            "server.change_repos_max_age",
            &raw.change_repos_max_age,
            Duration::from_secs(30 * 24 * 3600),
        )?,
    })
}

fn parse_github(
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

fn parse_gerrit(
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
        git_url,
        projects: raw.projects,
        label,
        success_vote,
        failure_vote,
        webhook_token: raw.webhook_token.map(Into::into),
        skip_wip_and_private: raw.skip_wip_and_private.unwrap_or(true),
    })
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

fn join_names<'a>(names: impl Iterator<Item = &'a TargetName>) -> String {
    names.map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
