//! Service configuration: a TOML file (or the embedded defaults) turned into checked values.
//!
//! Every error names the file, the key and what to change, because a configuration
//! mistake is the user's to fix and nobody should have to read the code to do it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// `[executor]`: the local engine or a Swarm.
    pub executor: ExecutorConfig,
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

mod executor;
mod file;
mod gerrit;
mod github;
mod release;
mod secret;
mod server;
mod target;

pub use executor::{ExecutorConfig, SwarmConfig};
use file::*;
use gerrit::parse_gerrit;
pub use gerrit::{GerritConfig, GerritSsh};
use github::parse_github;
pub use github::{GithubAuth, GithubConfig};
pub use release::{Release, ReleaseName};
pub use secret::{Secret, SecretSource};
use server::parse_server;
pub use server::ServerConfig;
pub use target::{
    parse_bytes, parse_size, Backend, ImagesConfig, Limits, Repo, RepoError, RepoLocation,
    SizeError, Target,
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
                        p.to_string(),
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
            for (i, c) in t.constraints.iter().enumerate() {
                if !executor::check_constraint(c) {
                    return Err(invalid(
                        &format!("targets.{name}.constraints[{i}]"),
                        format!("`{c}` is not a Swarm placement constraint"),
                        "write `node.labels.NAME==VALUE`, `node.hostname!=NAME` or another of Swarm's `node.`/`engine.` attributes with == or !=",
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
                    constraints: t.constraints,
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
        let executor = executor::parse_executor(raw.executor, &invalid)?;
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
            executor,
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

fn join_names<'a>(names: impl Iterator<Item = &'a TargetName>) -> String {
    names.map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
