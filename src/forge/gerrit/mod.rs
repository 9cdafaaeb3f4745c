//! Gerrit: events in, from the webhooks plugin ([`GerritWebhooks`]) and from
//! `gerrit stream-events` over SSH ([`stream`]), parsed by [`events`]; votes out through
//! the REST API ([`GerritApi`]). Gerrit's types stay in this module.

mod api;
pub mod events;
pub mod stream;
mod webhook;

pub use api::{review_for, strip_prefix, GerritApi, GerritApiConfig, NoTlsRoots, ReviewInput};
pub use events::{EventContext, Parsed};
pub use webhook::GerritWebhooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, GerritConfig};

/// Gerrit's parts, made from `[gerrit]`: the reporter, the webhook receiver, and the
/// stream's settings when `ssh` is set.
pub struct Wired {
    pub api: Arc<GerritApi>,
    pub hooks: GerritWebhooks,
    pub events: EventContext,
    pub stream: Option<stream::StreamConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(NoTlsRoots),
}

/// Reads `[gerrit]`'s secrets and makes its parts; `data_dir` holds the stream's state
/// (`gerrit/<host>/`: key file, known_hosts, time of the last event).
pub fn wire(g: &GerritConfig, data_dir: &Path) -> Result<Wired, WireError> {
    let api = GerritApi::new(GerritApiConfig {
        url: g.url.clone(),
        user: g.user.clone(),
        http_password: g.http_password.resolve("gerrit.http_password")?,
        label: g.label.clone(),
        success_vote: g.success_vote,
        failure_vote: g.failure_vote,
    })
    .map_err(WireError::Client)?;
    let token = match &g.webhook_token {
        Some(t) => Some(t.resolve("gerrit.webhook_token")?),
        None => None,
    };
    let events = EventContext {
        git_url: g.git_url.clone(),
        skip_wip_and_private: g.skip_wip_and_private,
        user: g.user.clone(),
    };
    let projects = Arc::new(g.projects.clone());
    if projects.is_empty() {
        tracing::warn!("[gerrit] projects is empty: every event will be ignored");
    }
    let stream = match &g.ssh {
        Some(ssh) => Some(stream::StreamConfig {
            ssh: ssh.clone(),
            key: match &g.ssh_key {
                Some(k) => Some(k.resolve("gerrit.ssh_key")?),
                None => None,
            },
            host_key: g.host_key.clone(),
            state_dir: data_dir
                .join("gerrit")
                .join(format!("{}-{}", ssh.host, ssh.port)),
            program: "ssh".into(),
            projects: projects.clone(),
            skip_wip_and_private: g.skip_wip_and_private,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }),
        None => None,
    };
    Ok(Wired {
        api: Arc::new(api),
        hooks: GerritWebhooks {
            token,
            projects,
            events: events.clone(),
        },
        events,
        stream,
    })
}

/// Whether `project` is one of `projects` (names, or `prefix/*` for every project under it).
pub fn project_allowed(projects: &[String], project: &str) -> bool {
    projects.iter().any(|p| match p.strip_suffix("/*") {
        Some(prefix) => project
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1),
        None => p == project,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn projects() {
        let p = vec!["openstack/*".to_string(), "fuel".to_string()];
        assert!(super::project_allowed(&p, "openstack/fuel-specs"));
        assert!(super::project_allowed(&p, "openstack/a/b"));
        assert!(super::project_allowed(&p, "fuel"));
        assert!(!super::project_allowed(&p, "openstack"));
        assert!(!super::project_allowed(&p, "openstackx/y"));
        assert!(!super::project_allowed(&p, "fuel/x"));
    }
}
