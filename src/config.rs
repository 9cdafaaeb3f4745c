//! Service configuration: a TOML file (or the embedded defaults) turned into checked values.
//!
//! Every error names the file, the key and what to change, because a configuration
//! mistake is the user's to fix and nobody should have to read the code to do it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::TargetName;

/// What Packetary uses when no configuration file is given.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

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
    pub server: ServerConfig,
    /// `None` when the file has no [github] table (then `serve` refuses to start).
    pub github: Option<GithubConfig>,
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
}

/// `[github]`: the API to report to and the webhooks to trust.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub api_url: String,
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

/// Where a secret comes from. The value is read only when needed and never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Literal(Secret),
    Env(String),
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            SecretSource::Env(v) => write!(f, "Env({v:?})"),
            SecretSource::File(p) => write!(f, "File({p:?})"),
        }
    }
}

impl SecretSource {
    /// Reads the secret; `key` names the configuration key in the error.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        let invalid = |problem: String, fix: &str| ConfigError::Invalid {
            location: "configuration".into(),
            key: key.to_string(),
            problem,
            fix: fix.to_string(),
        };
        let value = match self {
            SecretSource::Literal(s) => return Ok(s.clone()),
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                invalid(
                    format!("environment variable `{var}` is not set"),
                    "export it before starting packetary, or point the key at a file",
                )
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    format!("cannot read {}: {e}", path.display()),
                    "check the path and its permissions",
                )
            })?,
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(invalid(
                "the secret is empty".into(),
                "put the secret's value there",
            ));
        }
        Ok(Secret(value))
    }
}

/// A secret value: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct ImagesConfig {
    pub debian_mirror: String,
    pub debian_suite: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Rpmbuild,
    Mock,
}

/// A named build environment.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: TargetName,
    pub backend: Backend,
    pub image: String,
    pub arch: String,
    pub repos: Vec<Repo>,
    pub limits: Limits,
    pub releasever: Option<String>,
    pub dist: Option<String>,
    pub chroot_setup: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub pids: i64,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(4 << 30),
            cpus: None,
            pids: 4096,
            timeout: Duration::from_secs(2 * 3600),
        }
    }
}

/// A package repository that satisfies build dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub name: String,
    pub location: RepoLocation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on the Docker host, mounted read-only into the build container.
    Dir(PathBuf),
    /// A remote repository; needs network in the dependency phase.
    Url(String),
}

/// Why a repository given in the configuration or on the command line is refused.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository name `{0}` must be letters, digits, `-`, `_` or `.`")]
    Name(String),
    #[error("repository URL `{0}` has an unsupported scheme; use file://, http:// or https://")]
    Scheme(String),
    #[error("cannot resolve `{location}`: {source}")]
    Resolve {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("repository path `{}` must be absolute", .0.display())]
    Relative(PathBuf),
}

impl Repo {
    /// Parses `NAME=LOCATION` or a bare location (the name is then made from it).
    pub fn parse_arg(arg: &str, index: usize) -> Result<Repo, RepoError> {
        let (name, loc) = match arg.split_once('=') {
            Some((n, l)) if !n.contains('/') && !n.contains(':') => (n.to_string(), l),
            _ => (format!("extra{index}"), arg),
        };
        Repo::new(&name, loc)
    }

    pub fn new(name: &str, location: &str) -> Result<Repo, RepoError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(RepoError::Name(name.to_string()));
        }
        let location = if let Some(path) = location.strip_prefix("file://") {
            RepoLocation::Dir(PathBuf::from(path))
        } else if location.starts_with("http://") || location.starts_with("https://") {
            RepoLocation::Url(location.to_string())
        } else if location.starts_with('/') {
            RepoLocation::Dir(PathBuf::from(location))
        } else if location.contains("://") {
            return Err(RepoError::Scheme(location.to_string()));
        } else {
            // A relative directory given on the command line.
            let abs = std::env::current_dir()
                .map(|d| d.join(location))
                .map_err(|source| RepoError::Resolve {
                    location: location.to_string(),
                    source,
                })?;
            RepoLocation::Dir(abs)
        };
        if let RepoLocation::Dir(p) = &location {
            if !p.is_absolute() {
                return Err(RepoError::Relative(p.clone()));
            }
        }
        Ok(Repo {
            name: name.to_string(),
            location,
        })
    }
}

// ---- the file format -------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    build: RawBuild,
    #[serde(default)]
    docker: RawDocker,
    #[serde(default)]
    images: RawImages,
    #[serde(default)]
    targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    server: RawServer,
    github: Option<RawGithub>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    body_limit: Option<String>,
    shutdown_grace: Option<String>,
    max_attempts: Option<u32>,
    retry_backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGithub {
    api_url: Option<String>,
    token: Option<RawSecret>,
    app_id: Option<u64>,
    private_key: Option<RawSecret>,
    installation_id: Option<u64>,
    #[serde(default)]
    webhook_secrets: Vec<RawSecret>,
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    build_forks: bool,
}

/// A secret is written inline, or as `{ env = "VAR" }`, or as `{ file = "/path" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Literal(String),
    Env { env: String },
    File { file: PathBuf },
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawSecret(..)")
    }
}

impl From<RawSecret> for SecretSource {
    fn from(r: RawSecret) -> SecretSource {
        match r {
            RawSecret::Literal(s) => SecretSource::Literal(Secret(s)),
            RawSecret::Env { env } => SecretSource::Env(env),
            RawSecret::File { file } => SecretSource::File(file),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    parallel: Option<usize>,
    out_dir: Option<PathBuf>,
    default_targets: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    host: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImages {
    debian_mirror: Option<String>,
    debian_suite: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    backend: Backend,
    image: String,
    arch: Option<String>,
    #[serde(default)]
    repos: Vec<RawRepo>,
    memory: Option<String>,
    cpus: Option<f64>,
    pids: Option<i64>,
    timeout: Option<String>,
    releasever: Option<String>,
    dist: Option<String>,
    chroot_setup: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    name: String,
    url: String,
}

impl Config {
    /// Loads `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::parse(&text, Some(p))
            }
            None => Config::parse(DEFAULT_TOML, None),
        }
    }

    /// Parses configuration text; `origin` is only used in messages.
    pub fn parse(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
        let file = origin
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded defaults>".to_string());
        let raw = parse_raw(text, &file)?;
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

        Ok(Config {
            server,
            github,
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
        auth,
        webhook_secrets: raw.webhook_secrets.into_iter().map(Into::into).collect(),
        repositories: raw.repositories,
        build_forks: raw.build_forks,
    })
}

fn join_names<'a>(names: impl Iterator<Item = &'a TargetName>) -> String {
    names.map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| ConfigError::Invalid {
        location: position(text, file, e.span()),
        key: "(syntax)".into(),
        problem: e.message().trim().to_string(),
        fix: "fix the TOML syntax at that line".into(),
    })?;
    serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let message = inner.message().trim().to_string();
        let (key, fix) = match unknown_field(&message) {
            Some((field, expected)) => {
                let key = if path == "." || path.is_empty() {
                    field.clone()
                } else if path.ends_with(&field) {
                    path.clone()
                } else {
                    format!("{path}.{field}")
                };
                let fix = match closest(&field, &expected) {
                    Some(s) => format!(
                        "did you mean `{s}`? valid keys here: {}",
                        expected.join(", ")
                    ),
                    None => format!("remove it; valid keys here: {}", expected.join(", ")),
                };
                (key, fix)
            }
            None => (
                path,
                "see config/packetary.example.toml for the expected form".to_string(),
            ),
        };
        ConfigError::Invalid {
            location: position(text, file, inner.span()),
            key,
            problem: message,
            fix,
        }
    })
}

/// Pulls the field name and the expected names out of serde's unknown-field message.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// The expected name nearest to a typo, if it is near enough to be the one meant.
fn closest<'a>(typo: &str, expected: &'a [String]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (edit_distance(typo, e), e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn position(text: &str, file: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let upto = &text[..r.start.min(text.len())];
            let line = upto.matches('\n').count() + 1;
            let col = upto.len() - upto.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("{file}:{line}:{col}")
        }
        None => file.to_string(),
    }
}

/// Best-effort line of a dotted key in the text, for errors found after parsing.
fn locate(text: &str, file: &str, key: &str) -> String {
    let last = key
        .rsplit('.')
        .next()
        .unwrap_or(key)
        .split('[')
        .next()
        .unwrap_or(key);
    let table = key.rsplit_once('.').map(|(t, _)| t).unwrap_or("");
    let mut in_table = table.is_empty();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            let name = l.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = table.is_empty() || name == table || table.starts_with(&format!("{name}."));
            if !table.is_empty() && name == table && last.is_empty() {
                return format!("{file}:{}", i + 1);
            }
            continue;
        }
        if in_table && l.split(['=', ' ']).next() == Some(last) {
            return format!("{file}:{}", i + 1);
        }
    }
    file.to_string()
}

/// Parses "4GiB", "512M", "1073741824" into bytes, for container memory limits.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let bytes = parse_size(s)?;
    if bytes < 6 * 1024 * 1024 {
        return Err(format!("`{s}` is below Docker's 6MiB minimum"));
    }
    Ok(bytes)
}

/// Parses a size with an optional unit (KiB, MiB, GiB, TiB; K/M/G/T and KB/MB/GB alike).
pub fn parse_size(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("`{s}` has an unknown unit `{other}`")),
    };
    let bytes = num * mult;
    if bytes > i64::MAX as f64 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, Some(Path::new("test.toml")))
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn embedded_defaults_parse() {
        let c = Config::load(None).expect("defaults are valid");
        assert_eq!(c.default_targets.len(), 1);
        let t = &c.targets[&c.default_targets[0]];
        assert_eq!(t.backend, Backend::Rpmbuild);
        assert!(c.parallel >= 1);
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../config/packetary.example.toml");
        let c = Config::parse(text, Some(Path::new("example.toml"))).expect("example is valid");
        assert_eq!(c.parallel, 2);
        let fedora = &c.targets[&TargetName::parse("fedora-43").expect("name")];
        assert_eq!(fedora.backend, Backend::Mock);
        assert_eq!(fedora.repos.len(), 2);
        assert_eq!(fedora.limits.memory_bytes, Some(8 << 30));
        assert_eq!(fedora.limits.timeout, Duration::from_secs(4 * 3600));
        assert_eq!(c.server.body_limit, 25 << 20);
        assert_eq!(c.server.public_url, "https://packetary.example.com");
        let gh = c.github.expect("example has [github]");
        assert!(
            matches!(gh.auth, GithubAuth::Token(SecretSource::Env(ref v)) if v == "GITHUB_TOKEN")
        );
        assert_eq!(gh.webhook_secrets.len(), 1);
        assert!(!gh.build_forks);
    }

    #[test]
    fn github_section_is_checked() {
        let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";
        let e = err(&format!("{base}[github]\nwebhook_secrets = [\"s\"]\n"));
        assert!(e.contains("no way to authenticate"), "{e}");
        let e = err(&format!("{base}[github]\ntoken = \"t\"\n"));
        assert!(e.contains("github.webhook_secrets"), "{e}");
        let e = err(&format!(
            "{base}[github]\ntoken = \"t\"\nwebhook_secrets = [\"s\"]\nrepositories = [\"nope\"]\n"
        ));
        assert!(e.contains("github.repositories"), "{e}");
        let e = err(&format!("{base}[server]\nlisten = \"nowhere\"\n"));
        assert!(e.contains("server.listen"), "{e}");
        let e = err(&format!("{base}[server]\nbody_limit = \"10\"\n"));
        assert!(e.contains("server.body_limit"), "{e}");
        let c = Config::parse(
            &format!("{base}[github]\ntoken = {{ file = \"/nonexistent\" }}\nwebhook_secrets = [\"hunter2\", {{ env = \"PACKETARY_TEST_UNSET\" }}]\n"),
            None,
        )
        .expect("valid");
        let gh = c.github.expect("github");
        let debug = format!("{gh:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(
            gh.webhook_secrets[0]
                .resolve("k")
                .expect("literal")
                .expose(),
            "hunter2"
        );
        let e = gh.webhook_secrets[1]
            .resolve("github.webhook_secrets[1]")
            .expect_err("unset")
            .to_string();
        assert!(
            e.contains("PACKETARY_TEST_UNSET") && e.contains("github.webhook_secrets[1]"),
            "{e}"
        );
        assert!(matches!(&gh.auth, GithubAuth::Token(t) if t.resolve("github.token").is_err()));
    }

    #[test]
    fn typo_in_key_names_file_line_key_and_fix() {
        let e = err("[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\nmemroy = \"1GiB\"\n");
        assert!(e.contains("test.toml:4"), "{e}");
        assert!(e.contains("targets.t.memroy"), "{e}");
        assert!(e.contains("did you mean `memory`"), "{e}");
    }

    #[test]
    fn typo_in_section_is_caught() {
        let e = err("[biuld]\nparallel = 2\n[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n");
        assert!(
            e.contains("biuld") && e.contains("did you mean `build`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";
        assert!(err(&format!("{base}memory = \"lots\"\n")).contains("targets.t.memory"));
        assert!(err(&format!("{base}timeout = \"soon\"\n")).contains("targets.t.timeout"));
        assert!(err(&format!("{base}cpus = 0\n")).contains("targets.t.cpus"));
        let e = err("[targets.t]\nbackend = \"rpmbiuld\"\nimage = \"x\"\n");
        assert!(e.contains("backend") && e.contains("test.toml:2"), "{e}");
        let e = err(&format!("[build]\ndefault_targets = [\"nope\"]\n{base}"));
        assert!(
            e.contains("build.default_targets") && e.contains("use one of: t"),
            "{e}"
        );
        assert!(err("[build]\nparallel = 0\n").contains("build.parallel"));
        assert!(err("").contains("no target"));
        assert!(err("[targets.t\n").contains("test.toml:1"));
    }

    #[test]
    fn unknown_target_lists_known_ones() {
        let c = Config::load(None).expect("defaults");
        let e = c
            .select_targets(&["fedora-99".to_string()])
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("no target named `fedora-99`") && e.contains("bookworm-rpmbuild"),
            "{e}"
        );
    }

    #[test]
    fn sizes_and_repos() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("1K").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert_eq!(
            Repo::parse_arg("local=/srv/repo", 0)
                .map(|r| r.location)
                .ok(),
            Some(RepoLocation::Dir("/srv/repo".into()))
        );
        assert_eq!(
            Repo::parse_arg("https://x/y", 3).map(|r| r.name).ok(),
            Some("extra3".to_string())
        );
        assert!(Repo::new("x", "ftp://x").is_err());
    }
}
