//! `[executor]`: where builds run. `local` (the default) is the Docker daemon of
//! `[docker] host`, with bind mounts and the archive API; `swarm` makes each build a
//! Swarm job on the cluster that daemon manages, with no shared disk (see DESIGN.md,
//! "Builds on a cluster").

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExecutor {
    pub(super) kind: Option<String>,
    pub(super) callback_url: Option<String>,
    pub(super) registry: Option<String>,
    pub(super) manager: Option<String>,
}

/// Where builds run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExecutorConfig {
    /// One Docker engine, the service's own disk mounted where it helps.
    #[default]
    Local,
    Swarm(SwarmConfig),
}

/// A Docker Swarm whose manager is `[docker] host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmConfig {
    /// How a build task reaches this process (`http://10.0.0.1:8080`): it fetches its
    /// inputs from, and uploads its results to, `<callback_url>/tasks/<build>/…`.
    pub callback_url: String,
    /// Where the nodes pull builder images from (`127.0.0.1:5000`): `packetary images push`
    /// pushes there, and builds name their image by digest in it.
    pub registry: String,
    /// The Docker endpoint of a Swarm manager (`unix:///…`, `tcp://…`); `None`: `[docker]
    /// host` is one. Spec queries, repository indexing and image builds stay on `[docker]
    /// host`, which shares the service's disk; only builds go to the swarm.
    pub manager: Option<String>,
}

pub(super) fn parse_executor(
    raw: RawExecutor,
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<ExecutorConfig, ConfigError> {
    match raw.kind.as_deref().unwrap_or("local") {
        "local" => {
            for (key, set) in [
                ("callback_url", raw.callback_url.is_some()),
                ("registry", raw.registry.is_some()),
                ("manager", raw.manager.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        &format!("executor.{key}"),
                        "is only read by kind = \"swarm\"".into(),
                        "remove it, or set executor.kind = \"swarm\"",
                    ));
                }
            }
            Ok(ExecutorConfig::Local)
        }
        "swarm" => {
            let Some(callback_url) = raw.callback_url else {
                return Err(invalid(
                    "executor.callback_url",
                    "is missing: build tasks on other nodes must reach this service".into(),
                    "write the URL the nodes reach [server] listen at, e.g. \"http://10.0.0.1:8080\"",
                ));
            };
            let callback_url = callback_url.trim_end_matches('/').to_string();
            let ok = url::Url::parse(&callback_url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
            });
            if !ok {
                return Err(invalid(
                    "executor.callback_url",
                    format!("`{callback_url}` is not an http(s) URL without credentials"),
                    "write e.g. \"http://10.0.0.1:8080\" (each build carries its own token)",
                ));
            }
            let Some(registry) = raw.registry else {
                return Err(invalid(
                    "executor.registry",
                    "is missing: the nodes pull builder images from a registry".into(),
                    "write the registry's host:port as the nodes reach it, e.g. \"127.0.0.1:5000\"",
                ));
            };
            let registry = registry.trim_end_matches('/').to_string();
            if registry.is_empty()
                || registry.contains("://")
                || !registry
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:/_".contains(c))
            {
                return Err(invalid(
                    "executor.registry",
                    format!("`{registry}` is not a registry's host[:port]"),
                    "write it without a scheme, e.g. \"127.0.0.1:5000\" or \"registry.example.com\"",
                ));
            }
            if let Some(m) = &raw.manager {
                let ok = ["unix://", "tcp://", "http://", "https://"]
                    .iter()
                    .any(|p| m.starts_with(p) && m.len() > p.len());
                if !ok {
                    return Err(invalid(
                        "executor.manager",
                        format!("`{m}` is not a Docker endpoint"),
                        "write e.g. \"unix:///var/run/docker.sock\" or \"tcp://manager:2376\", or leave it out to use [docker] host",
                    ));
                }
            }
            Ok(ExecutorConfig::Swarm(SwarmConfig {
                callback_url,
                registry,
                manager: raw.manager,
            }))
        }
        other => Err(invalid(
            "executor.kind",
            format!("`{other}` is not an executor"),
            "write \"local\" (one Docker engine, the default) or \"swarm\"",
        )),
    }
}

/// Checks a target's placement constraints (`node.labels.rpm==yes`): Swarm's own syntax,
/// `<attribute> == or != <value>`, one per entry.
pub(super) fn check_constraint(c: &str) -> bool {
    let Some((attr, value)) = c.split_once("==").or_else(|| c.split_once("!=")) else {
        return false;
    };
    let (attr, value) = (attr.trim(), value.trim());
    !attr.is_empty()
        && !value.is_empty()
        && (attr.starts_with("node.") || attr.starts_with("engine."))
        && c.chars().all(|ch| !ch.is_control())
}
