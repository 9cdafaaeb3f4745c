//! Exec calls, exit codes, and files in and out of a container.

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Engine, ExecStream, ExitHandle, InfraError, TarStream};

impl Engine {
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
            ExitHandle::Service(id) => self
                .job_task(id)
                .await?
                .and_then(|t| t.exit_code)
                .ok_or_else(|| {
                    InfraError("Swarm did not report the exit code of the build's task".into())
                }),
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
}
