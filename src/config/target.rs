//! Build environments: targets, their limits and the repositories that satisfy build
//! dependencies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::model::TargetName;

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

impl Backend {
    /// The name used in the configuration and in `build.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Rpmbuild => "rpmbuild",
            Backend::Mock => "mock",
        }
    }
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
    /// rpm macros of the target's distribution (`fedora = "40"`), for spec queries and builds.
    pub macros: BTreeMap<String, String>,
    /// What `uname -r` answers in spec queries (`%(uname -r)`), instead of the Docker host's.
    pub uname_r: Option<String>,
    /// Swarm placement constraints of the target's builds (`node.labels.rpm==yes`), beside
    /// its `arch` (which places it on nodes of that architecture); the local executor
    /// ignores them.
    pub constraints: Vec<String>,
}

impl Target {
    /// The distribution macros specs see: those a Mock `dist`/`releasever` imply (`fc40`
    /// gives `%fedora 40`, `el9` gives `%rhel 9`, and `%dist .fc40`), overridden by the
    /// target's own `macros`. Without them `%if %{fedora}` fails and `%{?fedora}` silently
    /// takes the other branch.
    pub fn rpm_macros(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(d) = self.dist.as_deref().filter(|d| !d.is_empty()) {
            m.insert(
                "dist".to_string(),
                format!(".{}", d.trim_start_matches('.')),
            );
            let d = d.trim_start_matches('.');
            let num = |p: &str| {
                d.strip_prefix(p)
                    .map(|n| n.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            };
            if let Some(n) = num("fc") {
                m.insert("fedora".into(), n);
            } else if let Some(n) = num("el") {
                m.insert("rhel".into(), n);
            }
        }
        m.extend(self.macros.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    }

    /// [`Target::rpm_macros`] as `name value` pairs for `--define`.
    pub fn rpm_defines(&self) -> Vec<String> {
        self.rpm_macros()
            .into_iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    format!("{k} %{{nil}}")
                } else {
                    format!("{k} {v}")
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub pids: i64,
    pub timeout: Duration,
    /// Most bytes kept of each build log; a package printing without end must not fill
    /// the service's disk.
    pub log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(4 << 30),
            cpus: None,
            pids: 4096,
            timeout: Duration::from_secs(2 * 3600),
            log_bytes: 64 << 20,
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

/// Why a size (a memory limit, a log size) is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size")]
    NotASize(String),
    #[error("`{size}` has an unknown unit `{unit}`")]
    UnknownUnit { size: String, unit: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
    #[error("`{0}` is below Docker's 6MiB minimum")]
    BelowDockerMinimum(String),
}

/// Parses "4GiB", "512M", "1073741824" into bytes, for container memory limits.
pub fn parse_bytes(s: &str) -> Result<i64, SizeError> {
    let bytes = parse_size(s)?;
    if bytes < 6 * 1024 * 1024 {
        return Err(SizeError::BelowDockerMinimum(s.to_string()));
    }
    Ok(bytes)
}

/// Parses a size with an optional unit (KiB, MiB, GiB, TiB; K/M/G/T and KB/MB/GB alike).
pub fn parse_size(s: &str) -> Result<i64, SizeError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| SizeError::NotASize(s.to_string()))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(SizeError::UnknownUnit {
                size: s.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let bytes = num * mult;
    if bytes > i64::MAX as f64 {
        return Err(SizeError::TooLarge(s.to_string()));
    }
    Ok(bytes as i64)
}
