//! The configuration file's format, as serde reads it, and the errors that point into it
//! (file, line, key, and the nearest valid name for a typo).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::secret::RawSecret;
use super::target::Backend;
use super::ConfigError;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) build: RawBuild,
    #[serde(default)]
    pub(super) docker: RawDocker,
    #[serde(default)]
    pub(super) executor: super::executor::RawExecutor,
    #[serde(default)]
    pub(super) images: RawImages,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) github: Option<RawGithub>,
    pub(super) gerrit: Option<RawGerrit>,
    #[serde(default)]
    pub(super) releases: BTreeMap<String, super::release::RawRelease>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) public_url: Option<String>,
    pub(super) repos_url: Option<String>,
    pub(super) body_limit: Option<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) max_attempts: Option<u32>,
    pub(super) retry_backoff: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) min_free_disk: Option<String>,
    #[serde(default)]
    pub(super) private_repositories: Vec<String>,
    pub(super) page_token: Option<RawSecret>,
    pub(super) change_repos_max_age: Option<String>,
    pub(super) change_disk_quota: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGithub {
    pub(super) api_url: Option<String>,
    pub(super) git_url: Option<String>,
    pub(super) token: Option<RawSecret>,
    pub(super) app_id: Option<u64>,
    pub(super) private_key: Option<RawSecret>,
    pub(super) installation_id: Option<u64>,
    #[serde(default)]
    pub(super) webhook_secrets: Vec<RawSecret>,
    #[serde(default)]
    pub(super) repositories: Vec<String>,
    #[serde(default)]
    pub(super) build_forks: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGerrit {
    pub(super) url: Option<String>,
    pub(super) user: Option<String>,
    pub(super) http_password: Option<RawSecret>,
    pub(super) ssh: Option<String>,
    pub(super) ssh_key: Option<RawSecret>,
    pub(super) host_key: Option<String>,
    pub(super) git_url: Option<String>,
    #[serde(default)]
    pub(super) projects: Vec<String>,
    pub(super) label: Option<String>,
    pub(super) success_vote: Option<i32>,
    pub(super) failure_vote: Option<i32>,
    pub(super) webhook_token: Option<RawSecret>,
    pub(super) skip_wip_and_private: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBuild {
    pub(super) parallel: Option<usize>,
    pub(super) out_dir: Option<PathBuf>,
    pub(super) default_targets: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDocker {
    pub(super) host: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImages {
    pub(super) debian_mirror: Option<String>,
    pub(super) debian_suite: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) backend: Backend,
    pub(super) image: String,
    pub(super) arch: Option<String>,
    #[serde(default)]
    pub(super) repos: Vec<RawRepo>,
    pub(super) memory: Option<String>,
    pub(super) cpus: Option<f64>,
    pub(super) pids: Option<i64>,
    pub(super) timeout: Option<String>,
    pub(super) log_size: Option<String>,
    pub(super) releasever: Option<String>,
    pub(super) dist: Option<String>,
    pub(super) chroot_setup: Option<String>,
    #[serde(default)]
    pub(super) macros: BTreeMap<String, String>,
    pub(super) uname_r: Option<String>,
    #[serde(default)]
    pub(super) constraints: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepo {
    pub(super) name: String,
    pub(super) url: String,
}

pub(super) fn parse_raw(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
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
pub(super) fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
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
pub(super) fn closest<'a>(typo: &str, expected: &'a [String]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (edit_distance(typo, e), e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.as_str())
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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

pub(super) fn position(text: &str, file: &str, span: Option<std::ops::Range<usize>>) -> String {
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
pub(super) fn locate(text: &str, file: &str, key: &str) -> String {
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
