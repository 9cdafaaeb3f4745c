//! The executors a runner drives, behind one type: the queue's `Runner` seam does not
//! change with where builds run (a Kubernetes executor would be a third variant).

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::provenance::{InputsError, Provenance};
use super::{BuildReport, BuildRequest, DiskAllowance, Executor, Progress, SwarmExecutor};
use crate::model::BuildId;

#[derive(Clone)]
pub enum AnyExecutor {
    /// One Docker engine (`[executor] kind = "local"`).
    Local(Executor),
    /// Swarm jobs on the cluster the engine manages.
    Swarm(SwarmExecutor),
}

impl From<Executor> for AnyExecutor {
    fn from(e: Executor) -> AnyExecutor {
        AnyExecutor::Local(e)
    }
}

impl From<SwarmExecutor> for AnyExecutor {
    fn from(e: SwarmExecutor) -> AnyExecutor {
        AnyExecutor::Swarm(e)
    }
}

impl AnyExecutor {
    pub async fn inputs(&self, req: &BuildRequest) -> Result<Provenance, InputsError> {
        match self {
            AnyExecutor::Local(e) => e.inputs(req).await,
            AnyExecutor::Swarm(e) => e.inputs(req).await,
        }
    }

    pub async fn run_within(
        &self,
        req: BuildRequest,
        allowance: Option<DiskAllowance>,
        events: Option<UnboundedSender<Progress>>,
        cancel: CancellationToken,
    ) -> BuildReport {
        match self {
            AnyExecutor::Local(e) => e.run_within(req, allowance, events, cancel).await,
            AnyExecutor::Swarm(e) => e.run_within(req, allowance, events, cancel).await,
        }
    }

    pub async fn reattach(
        &self,
        req: BuildRequest,
        events: Option<UnboundedSender<Progress>>,
        cancel: CancellationToken,
    ) -> Option<BuildReport> {
        match self {
            AnyExecutor::Local(e) => e.reattach(req, events, cancel).await,
            AnyExecutor::Swarm(e) => e.reattach(req, events, cancel).await,
        }
    }

    /// Removes the builds (containers, jobs) of command-line runs that were killed.
    pub async fn reap_orphans(&self) -> Result<usize, crate::docker::InfraError> {
        match self {
            AnyExecutor::Local(e) => e.reap_orphans().await,
            AnyExecutor::Swarm(e) => e.reap_orphans().await,
        }
    }

    /// Removes what killed processes of this service left, but the builds `keep` (see
    /// `Runner::sweep`): a Swarm's jobs; a local container is removed with its build.
    pub async fn sweep(&self, keep: &[BuildId]) {
        if let AnyExecutor::Swarm(e) = self {
            e.sweep(keep).await;
        }
    }

    /// Removes whatever build `id` left behind (its container, or its job).
    pub async fn cleanup(&self, id: &BuildId) {
        match self {
            AnyExecutor::Local(e) => super::local::remove_build_containers(e.engine(), id).await,
            AnyExecutor::Swarm(e) => e.cleanup(id).await,
        }
    }
}

/// The executor `[executor]` asks for: the local engine (`engine`), or Swarm jobs on the
/// manager it names (else on `engine`'s daemon). `kind` is `service` or `cli`: whose builds
/// they are (see `Executor::for_service`).
pub async fn from_config(
    config: &crate::config::ExecutorConfig,
    engine: crate::docker::Engine,
    kind: &str,
) -> Result<AnyExecutor, crate::docker::InfraError> {
    let owner = super::local::process_owner(kind);
    Ok(match config {
        crate::config::ExecutorConfig::Local => AnyExecutor::Local(if kind == "service" {
            Executor::for_service(engine)
        } else {
            Executor::new(engine)
        }),
        crate::config::ExecutorConfig::Swarm(s) => {
            let manager = match &s.manager {
                Some(m) => crate::docker::Engine::connect(Some(m)).await?,
                None => engine.clone(),
            };
            AnyExecutor::Swarm(SwarmExecutor::new(manager, engine, s.clone(), owner))
        }
    })
}

impl AnyExecutor {
    /// The HTTP routes its builds call back (a Swarm job's inputs and results), to serve
    /// at `[executor] callback_url`; `None` for the local engine.
    pub fn callback_routes(&self) -> Option<axum::Router> {
        match self {
            AnyExecutor::Local(_) => None,
            AnyExecutor::Swarm(e) => Some(super::swarm::router(e.tasks())),
        }
    }
}
