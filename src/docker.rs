//! The only place that talks to the Docker Engine. Callers see `Engine`, `ContainerSpec`
//! and `InfraError`; bollard's types stay in here.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerConfig, ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum,
    NetworkConnectRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CommitContainerOptionsBuilder,
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, UploadToContainerOptionsBuilder,
};
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

    /// The image's id (`sha256:...`), or `None` when the daemon does not have it.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, InfraError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(InfraError::docker(&format!("inspect image {image}"), e)),
        }
    }

    /// The value of label `key` on `image`; `None` when the image or the label is missing.
    pub async fn image_label(&self, image: &str, key: &str) -> Result<Option<String>, InfraError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(key).cloned())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(InfraError::docker(&format!("inspect image {image}"), e)),
        }
    }

    /// `docker commit`: the container's file system as image `repo:tag`, with `labels`.
    pub async fn commit(
        &self,
        id: &str,
        repo: &str,
        tag: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), InfraError> {
        let opts = CommitContainerOptionsBuilder::default()
            .container(id)
            .repo(repo)
            .tag(tag)
            .pause(false)
            .build();
        let config = ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .commit_container(opts, config)
            .await
            .map(|_| ())
            .map_err(|e| InfraError::docker(&format!("commit {repo}:{tag}"), e))
    }

    /// Tags (`repo:tag`) of the images carrying `label=value`.
    pub async fn images_with_label(&self, label: &str) -> Result<Vec<String>, InfraError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![label.to_string()]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| InfraError::docker("list images", e))?;
        Ok(list
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| t != "<none>:<none>")
            .collect())
    }

    /// Removes an image by tag; one in use by a container stays (409), which is no error.
    pub async fn remove_image(&self, tag: &str) -> Result<(), InfraError> {
        let opts = RemoveImageOptionsBuilder::default().build();
        match self.docker.remove_image(tag, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(InfraError::docker(&format!("remove image {tag}"), e)),
        }
    }

    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, InfraError> {
        let binds = spec
            .mounts
            .iter()
            .map(|(h, c, ro)| format!("{h}:{c}:{}", if *ro { "ro" } else { "rw" }))
            .collect();
        let host_config = HostConfig {
            binds: Some(binds),
            memory: spec.memory_bytes,
            // Same as memory: no swap, so that the limit is a real limit.
            memory_swap: spec.memory_bytes,
            nano_cpus: spec.nano_cpus,
            pids_limit: spec.pids,
            network_mode: Some(if spec.network { "bridge" } else { "none" }.into()),
            cap_drop: (spec.cap_add.first().map(String::as_str) == Some(DROP_DEFAULT_CAPS))
                .then(|| vec!["ALL".to_string()]),
            cap_add: {
                let add: Vec<String> = spec
                    .cap_add
                    .iter()
                    .filter(|c| c.as_str() != DROP_DEFAULT_CAPS)
                    .cloned()
                    .collect();
                (!add.is_empty()).then_some(add)
            },
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            // The container's own cgroup is the root of what it sees: on a cgroup-v1 host a
            // process with SYS_ADMIN (Mock's) cannot create a hierarchy nor reach the
            // host's `release_agent`. Docker's default on cgroup v2, asked for on v1 too.
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
            auto_remove: Some(false),
            // No docker-init: measured 13% slower per trivial build, and the container only
            // lives for one build, so zombies never pile up.
            init: Some(false),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(
                spec.cmd
                    .clone()
                    .unwrap_or_else(|| vec!["sleep".into(), "infinity".into()]),
            ),
            labels: Some(spec.labels.clone()),
            env: Some(spec.env.clone()),
            hostname: Some("packetary".into()),
            working_dir: Some("/".into()),
            network_disabled: Some(!spec.network),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| InfraError::docker("create the build container", e))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> Result<(), InfraError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| InfraError::docker("start the build container", e))
    }

    /// Starts a container created with a `cmd`, attached to its output first so that none is
    /// lost. Running the work as the main process instead of an exec into an idle container
    /// saves an exec and a kill per container: measured 195 → 124 ms per container lifecycle.
    pub async fn start_attached(&self, id: &str) -> Result<ExecStream, InfraError> {
        let stream = self.attach(id).await?;
        self.start(id).await?;
        Ok(stream)
    }

    /// Attaches to a created container's output, to be started with [`Engine::start`]:
    /// [`Engine::start_attached`] in two steps, so that other calls (the inputs' upload)
    /// can run alongside the attachment.
    pub async fn attach(&self, id: &str) -> Result<ExecStream, InfraError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(opts))
            .await
            .map_err(|e| InfraError::docker("attach to the build container", e))?;
        Ok(ExecStream {
            exit: ExitHandle::Container(id.to_string()),
            output: Some(attached.output),
        })
    }

    /// Everything the main process printed since its start, then the rest as it comes
    /// until it ends (from the daemon's log driver; ends at once for an exited container,
    /// so there is no race with the container ending before the call).
    pub fn replay(&self, id: &str) -> ExecStream {
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        ExecStream {
            exit: ExitHandle::Container(id.to_string()),
            output: Some(Box::pin(self.docker.logs(id, Some(opts)))),
        }
    }

    /// The build container of build `build_id`, if one exists.
    pub async fn find_build_container(
        &self,
        build_id: &str,
    ) -> Result<Option<FoundContainer>, InfraError> {
        let ids = self
            .containers_with_label(&format!("{LABEL_BUILD}={build_id}"))
            .await?;
        let Some(id) = ids.into_iter().next() else {
            return Ok(None);
        };
        let c = match self.docker.inspect_container(&id, None).await {
            Ok(c) => c,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(InfraError::docker("inspect the build container", e)),
        };
        let config = c.config.unwrap_or_default();
        let state = c.state.unwrap_or_default();
        Ok(Some(FoundContainer {
            id,
            image_id: c.image,
            nonce: config
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_NONCE).cloned()),
            cmd: config.cmd.unwrap_or_default(),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            started_at: state.started_at,
        }))
    }

    /// Starts `cmd` in the container; read its output with [`ExecStream::next_chunk`] and
    /// then ask [`Engine::exit_code`].
    pub async fn exec_start(
        &self,
        id: &str,
        cmd: Vec<String>,
        env: Vec<String>,
    ) -> Result<ExecStream, InfraError> {
        let exec = self
            .docker
            .create_exec(
                id,
                bollard::exec::CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(env),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| InfraError::docker("create exec", e))?;
        let started = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| InfraError::docker("start exec", e))?;
        let output = match started {
            bollard::exec::StartExecResults::Attached { output, .. } => Some(output),
            bollard::exec::StartExecResults::Detached => None,
        };
        Ok(ExecStream {
            exit: ExitHandle::Exec(exec.id),
            output,
        })
    }

    /// The exit code of what `exit` names, once its output has ended.
    pub async fn exit_code(&self, exit: &ExitHandle) -> Result<i64, InfraError> {
        match exit {
            ExitHandle::Exec(exec_id) => self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| InfraError::docker("inspect exec", e))?
                .exit_code
                .ok_or_else(|| InfraError("Docker did not report the exit code of a phase".into())),
            ExitHandle::Container(id) => match self.docker.wait_container(id, None).next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // bollard reports a non-zero exit as an error.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(InfraError::docker("wait for the build container", e)),
                None => Err(InfraError(
                    "Docker did not report the exit code of the build container".into(),
                )),
            },
        }
    }

    /// Extracts a tar archive at `path` in the container (`PUT /containers/{id}/archive`),
    /// streamed as it is made: how a build's inputs get in without a shared disk. Works on a
    /// container that is created but not started.
    pub async fn upload(
        &self,
        id: &str,
        path: &str,
        tar: impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), InfraError> {
        let opts = UploadToContainerOptionsBuilder::default()
            .path(path)
            // A directory of the image is never replaced by a file of the archive, nor the
            // other way round.
            .no_overwrite_dir_non_dir("true")
            .build();
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_try_stream(tar))
            .await
            .map_err(|e| InfraError::docker("upload the build's inputs", e))
    }

    /// A tar archive of `path` in the container (`GET /containers/{id}/archive`), as it
    /// comes: how a build's results get out without a shared disk. Works on a stopped
    /// container. Symbolic links are archived as links, never followed, except that
    /// Docker resolves the links among the parents of `path`; the caller checks every
    /// entry.
    pub fn download(&self, id: &str, path: &str) -> TarStream {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let what = format!("download {path} from the build container");
        Box::pin(
            self.docker
                .download_from_container(id, Some(opts))
                .map(move |r| r.map_err(|e| InfraError::docker(&what, e))),
        )
    }

    /// Whether Docker saw the kernel kill the container's main process for lack of memory.
    /// A killed child (the usual case: the compiler, not the driver) is reported by the
    /// driver itself from the cgroup's counter, see `backend::driver`.
    pub async fn oom_killed(&self, id: &str) -> bool {
        matches!(
            self.docker.inspect_container(id, None).await,
            Ok(c) if c.state.as_ref().and_then(|s| s.oom_killed) == Some(true)
        )
    }

    /// Puts the container on the default bridge network, for a phase that may reach out
    /// (the dependency phase); [`Engine::disconnect_all`] takes it off again.
    pub async fn connect_bridge(&self, id: &str) -> Result<(), InfraError> {
        self.docker
            .connect_network(
                "bridge",
                NetworkConnectRequest {
                    container: id.to_string(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| InfraError::docker("connect to network bridge", e))
    }

    /// Where a container on the default bridge reaches this host: the bridge's gateway.
    /// A daemon that has just created its bridge reports the subnet without a `Gateway`
    /// (seen on Docker 20.10 with an empty data root), so the IPAM answer is tried first,
    /// then the IPv4 address of the bridge's interface on this host (the name from the
    /// network's `com.docker.network.bridge.name`, else `docker0`). Only meaningful when
    /// the daemon runs on this host.
    pub async fn bridge_host_address(&self) -> Result<std::net::Ipv4Addr, InfraError> {
        let net = self
            .docker
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| InfraError::docker("inspect network bridge", e))?;
        let ipam: Vec<String> = net
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .collect();
        if let Some(ip) = ipam
            .iter()
            .find_map(|g| g.parse::<std::net::Ipv4Addr>().ok())
        {
            return Ok(ip);
        }
        let iface = net
            .options
            .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
            .unwrap_or_else(|| "docker0".into());
        if let Some(ip) = interface_ipv4(&iface) {
            return Ok(ip);
        }
        Err(InfraError(format!(
            "no address for Docker's bridge: the daemon's network `bridge` names no IPv4 gateway ({}), \
             and interface {iface} has no IPv4 address on this host\n  fix: run the daemon on this host with its default bridge, \
             or give it one with `--bip` (daemon.json \"bip\")",
            if ipam.is_empty() { "none at all".to_string() } else { ipam.join(", ") }
        )))
    }

    /// Takes the container off every network, before phases that must not reach out.
    pub async fn disconnect_all(&self, id: &str) -> Result<(), InfraError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| InfraError::docker("inspect the build container", e))?;
        let nets = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        for name in nets.keys().filter(|n| n.as_str() != "none") {
            self.docker
                .disconnect_network(
                    name,
                    NetworkDisconnectRequest {
                        container: id.to_string(),
                        force: Some(true),
                    },
                )
                .await
                .map_err(|e| InfraError::docker(&format!("disconnect from network {name}"), e))?;
        }
        Ok(())
    }

    /// Removes the container whatever its state; a missing container is not an error.
    /// Force-removes a container. Returns whether this call removed it: `false` when it was
    /// already gone (404) or another client is removing it (409), so callers count honestly.
    pub async fn remove(&self, id: &str) -> Result<bool, InfraError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(false),
            Err(e) => Err(InfraError::docker("remove the build container", e)),
        }
    }

    /// Runs one command in a fresh container made from `spec` and removes it afterwards,
    /// returning the exit code and the combined output. For short queries (rpmspec, createrepo).
    pub async fn run_once(
        &self,
        spec: &ContainerSpec,
        cmd: Vec<String>,
    ) -> Result<(i64, Vec<u8>), InfraError> {
        let spec = ContainerSpec {
            cmd: Some(cmd),
            ..spec.clone()
        };
        let id = self.create(&spec).await?;
        let result = async {
            let mut stream = self.start_attached(&id).await?;
            let mut out = Vec::new();
            while let Some(chunk) = stream.next_chunk().await {
                out.extend_from_slice(&chunk?);
            }
            let code = self.exit_code(&stream.exit()).await?;
            Ok((code, out))
        }
        .await;
        let removed = self.remove(&id).await;
        let r = result?;
        removed?;
        Ok(r)
    }

    /// Ids of the containers carrying `label` (optionally `label=value`), running or not.
    pub async fn containers_with_label(&self, label: &str) -> Result<Vec<String>, InfraError> {
        Ok(self
            .containers_with_label_values(label)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Like [`Engine::containers_with_label`], with the value of the label (key part of `label`).
    pub async fn containers_with_label_values(
        &self,
        label: &str,
    ) -> Result<Vec<(String, String)>, InfraError> {
        let key = label.split('=').next().unwrap_or(label);
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![label.to_string()]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| InfraError::docker("list containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let value = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default();
                c.id.map(|id| (id, value))
            })
            .collect())
    }

    /// Builds `tag` from a tar build context; each output line goes to `progress`.
    pub async fn build_image(
        &self,
        tag: &str,
        context_tar: Vec<u8>,
        buildargs: &HashMap<String, String>,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), InfraError> {
        let opts = BuildImageOptionsBuilder::default()
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(buildargs)
            .build();
        let mut stream = self.docker.build_image(
            opts,
            None,
            Some(bollard::body_full(bytes::Bytes::from(context_tar))),
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| InfraError(format!("building image {tag}: {e}")))?;
            if let Some(detail) = info.error_detail {
                return Err(InfraError(format!(
                    "building image {tag}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
            if let Some(line) = info.stream {
                for l in line.lines().filter(|l| !l.trim().is_empty()) {
                    progress(l);
                }
            }
        }
        Ok(())
    }

    /// `docker import`: makes an image from a root file system tarball.
    pub async fn import_rootfs(
        &self,
        tarball: &Path,
        repo: &str,
        tag: &str,
    ) -> Result<(), InfraError> {
        let file = tokio::fs::File::open(tarball)
            .await
            .map_err(|e| InfraError(format!("open {}: {e}", tarball.display())))?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(opts), Some(body), None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| InfraError(format!("importing {repo}:{tag}: {e}")))?;
            if let Some(detail) = info.error_detail {
                return Err(InfraError(format!(
                    "importing {repo}:{tag}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

/// The first IPv4 address of network interface `name` on this host, from getifaddrs(3).
pub fn interface_ipv4(name: &str) -> Option<std::net::Ipv4Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that we free below with freeifaddrs;
    // every node is only read while the list is alive.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut node = head;
    while !node.is_null() && found.is_none() {
        // SAFETY: `node` is a non-null element of the list getifaddrs returned.
        let ifa = unsafe { &*node };
        node = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family we check
        // before reading it as sockaddr_in.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if ifname.to_bytes() == name.as_bytes() && family == libc::AF_INET {
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

#[cfg(test)]
mod interface_tests {
    #[test]
    fn loopback_has_its_address_and_a_missing_interface_none() {
        assert_eq!(
            super::interface_ipv4("lo"),
            Some(std::net::Ipv4Addr::LOCALHOST)
        );
        assert_eq!(super::interface_ipv4("no-such-if0"), None);
    }
}
