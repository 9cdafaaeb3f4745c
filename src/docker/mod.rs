//! The only place that talks to the Docker Engine. Callers see `Engine`, `ContainerSpec`
//! and `InfraError`; bollard's types stay in here.

mod container;
mod exec;
mod image;
mod network;
mod registry;
mod service;
pub use service::{JobSpec, JobTask};
mod tool;

pub use container::ContainerGuard;
pub use network::interface_ipv4;
pub use registry::{pinned_reference, registry_reference};
pub use tool::{tool_container, TOOL_MEMORY_BYTES, TOOL_PIDS, TOOL_TIMEOUT};

use std::collections::HashMap;

use bollard::Docker;
use futures_util::StreamExt;

/// Something outside the package went wrong: retrying may help, the package is not at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InfraError(pub String);

impl InfraError {
    fn docker(what: &str, e: bollard::errors::Error) -> InfraError {
        InfraError(format!("Docker: {what}: {e}"))
    }
}

/// Label put on every build container, so that leftovers can always be found.
pub const LABEL_BUILD: &str = "org.packetary.build-id";
pub const LABEL_TARGET: &str = "org.packetary.target";
/// Which process made the container (`cli/<host>/<pid>`), so that a later run can tell
/// the leftovers of a killed process from the containers of a live one.
pub const LABEL_OWNER: &str = "org.packetary.owner";
/// The nonce of the driver running as the container's main process: what a restarted
/// service needs to read the phase markers again when it reattaches.
pub const LABEL_NONCE: &str = "org.packetary.driver-nonce";

/// A build container found after a restart, with what reattaching needs.
#[derive(Debug, Clone)]
pub struct FoundContainer {
    pub id: String,
    pub image_id: Option<String>,
    pub nonce: Option<String>,
    /// The main process, as created: recorded in the build's provenance.
    pub cmd: Vec<String>,
    /// Docker's `created`, `running`, `exited`, ...
    pub status: String,
    pub started_at: Option<String>,
}

/// The output of a running process: an exec call, or a container's main process.
pub struct ExecStream {
    exit: ExitHandle,
    output: Option<OutputStream>,
}

/// Where to ask for the exit code once the output has ended.
#[derive(Debug, Clone)]
pub enum ExitHandle {
    Exec(String),
    Container(String),
    /// A Swarm job: its exit code is its task's (see `Engine::job_task`).
    Service(String),
}

/// A tar archive as it comes from the daemon, chunk by chunk.
pub type TarStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, InfraError>> + Send>>;

type OutputStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

impl ExecStream {
    /// What to pass to [`Engine::exit_code`]; not the stream itself, so that callers'
    /// futures stay `Send`.
    pub fn exit(&self) -> ExitHandle {
        self.exit.clone()
    }

    /// The next piece of output (stdout and stderr alike), or `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes, InfraError>> {
        let out = self.output.as_mut()?;
        out.next().await.map(|r| {
            r.map(|c| c.into_bytes())
                .map_err(|e| InfraError::docker("read the build output", e))
        })
    }
}

/// First entry of [`ContainerSpec::cap_add`] meaning "drop Docker's default capabilities":
/// the container then has exactly the capabilities listed after it.
pub const DROP_DEFAULT_CAPS: &str = "-ALL";

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// What a build container is made of.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// The main process; `None` keeps the container idle for exec calls.
    pub cmd: Option<Vec<String>>,
    pub labels: HashMap<String, String>,
    /// `(host path, container path, read_only)`.
    pub mounts: Vec<(String, String, bool)>,
    pub env: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
    pub network: bool,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    /// `uid[:gid]` the processes run as; `None` keeps the image's user (root, for builds).
    /// Numeric, so that it needs no entry in the image's `/etc/passwd`.
    pub user: Option<String>,
}

impl Engine {
    /// Connects to `host` (or DOCKER_HOST / the local socket) and agrees on an API version,
    /// so that older daemons (Debian's 20.10 speaks 1.41) are served too.
    pub async fn connect(host: Option<&str>) -> Result<Engine, InfraError> {
        let address = host
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let no_daemon = |e: bollard::errors::Error| {
            InfraError(format!(
                "no Docker daemon answers at {address}: {e}\n  fix: start one (`systemctl start docker`, or `dockerd &`), or set [docker] host / DOCKER_HOST"
            ))
        };
        let docker = match host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
        .map_err(no_daemon)?;
        let docker = docker.with_timeout(std::time::Duration::from_secs(600));
        let docker = docker.negotiate_version().await.map_err(no_daemon)?;
        // negotiate_version already had the daemon answer /version: no separate ping.
        Ok(Engine { docker })
    }

    pub async fn ping(&self) -> Result<(), InfraError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| InfraError::docker("ping", e))
    }
}
