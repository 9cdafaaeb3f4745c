//! `[server]`: where the service listens, what it keeps and for how long, its limits.

use std::path::PathBuf;
use std::time::Duration;

use super::file::RawServer;
use super::{parse_size, ConfigError, SecretSource};

/// `[server] change_disk_quota` when the file sets none.
pub const DEFAULT_CHANGE_DISK_QUOTA: u64 = 10 << 30;

/// `[server]`: the webhook service.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// Holds the SQLite database, git mirrors, work trees and build results.
    pub data_dir: PathBuf,
    /// Base of the links put in statuses (`target_url`); the build pages live under it.
    pub public_url: String,
    /// Base of the URLs build containers reach `/repos/` at (the repositories a build
    /// installs from, stage repositories included): from a container's network the
    /// service may answer at another address than people use. Default: `public_url`.
    pub repos_url: String,
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
    /// Most bytes the results of one change (a pull request, a Gerrit change) may hold on
    /// this host, all its builds counted; `None`: no cap. Pushes are not counted.
    pub change_disk_quota: Option<u64>,
}

pub(super) fn parse_server(
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
    let repos_url = match raw.repos_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => public_url.clone(),
    };
    if url::Url::parse(&repos_url)
        .map(|u| !matches!(u.scheme(), "http" | "https") || u.query().is_some())
        .unwrap_or(true)
    {
        return Err(invalid(
            "server.repos_url",
            format!("`{repos_url}` is not an http(s) URL without a query"),
            "write the URL build containers reach this server at, e.g. \"http://172.17.0.1:8080\" (leave it out to use public_url)",
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
    let change_disk_quota = match &raw.change_disk_quota {
        Some(s) => parse_size(s)
            .ok()
            .filter(|n| *n == 0 || *n >= 1 << 20)
            .ok_or_else(|| {
                invalid(
                    "server.change_disk_quota",
                    format!("`{s}` is not a size of at least 1MiB"),
                    "write e.g. \"10GiB\" (the default), or \"0\" for no quota",
                )
            })? as u64,
        None => DEFAULT_CHANGE_DISK_QUOTA,
    };
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
        repos_url,
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
        change_disk_quota: (change_disk_quota > 0).then_some(change_disk_quota),
    })
}
