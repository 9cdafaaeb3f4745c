//! Short-lived tool containers over the service's own files (createrepo_c indexing a
//! release or a build's repository): the packages they read are build output, so they are
//! confined like a build — no network, every capability dropped (but the two that switch
//! to the service's user), `no-new-privileges`, bounded memory and pids — and stopped at
//! a time limit, so a hung or bloated indexer cannot hold a publication or the host.

use std::collections::HashMap;
use std::time::Duration;

use super::{ContainerSpec, Engine, InfraError, DROP_DEFAULT_CAPS};

/// Memory a tool container may use.
pub const TOOL_MEMORY_BYTES: i64 = 2 << 30;
/// Processes a tool container may run.
pub const TOOL_PIDS: i64 = 256;
/// How long a tool container may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The confined container `name` of `image` running `cmd` as the service's own user
/// (files it writes into `mounts` stay the service's), and the command to give it.
pub fn tool_container(
    name: String,
    image: &str,
    labels: HashMap<String, String>,
    mounts: Vec<(String, String, bool)>,
    cmd: Vec<String>,
) -> (ContainerSpec, Vec<String>) {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut cap_add = vec![DROP_DEFAULT_CAPS.to_string()];
    let cmd = if uid == 0 {
        cmd
    } else {
        cap_add.extend(["SETUID".to_string(), "SETGID".to_string()]);
        [
            "setpriv".to_string(),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
        ]
        .into_iter()
        .chain(cmd)
        .collect()
    };
    let spec = ContainerSpec {
        name,
        image: image.to_string(),
        labels,
        mounts,
        network: false,
        memory_bytes: Some(TOOL_MEMORY_BYTES),
        pids: Some(TOOL_PIDS),
        cap_add,
        security_opt: vec!["no-new-privileges".into()],
        ..Default::default()
    };
    (spec, cmd)
}

impl Engine {
    /// [`Engine::run_once`] stopped at `limit`: the container is removed (killed) and the
    /// run fails naming the limit.
    pub async fn run_once_within(
        &self,
        spec: &ContainerSpec,
        cmd: Vec<String>,
        limit: Duration,
    ) -> Result<(i64, Vec<u8>), InfraError> {
        match tokio::time::timeout(limit, self.run_once(spec, cmd)).await {
            Ok(r) => r,
            Err(_) => {
                // `run_once` was dropped before it removed its container.
                let _ = self.remove(&spec.name).await;
                Err(InfraError(format!(
                    "{} in {} did not finish within {}; stopped",
                    spec.name,
                    spec.image,
                    humantime::format_duration(limit)
                )))
            }
        }
    }
}
