//! The executors a runner drives, behind one type: the queue's `Runner` seam does not
//! change with where builds run (a Kubernetes executor would be a third variant).

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::provenance::{InputsError, Provenance};
use super::{BuildReport, BuildRequest, DiskAllowance, Executor, Progress, SwarmExecutor};
use crate::docker::LABEL_BUILD;
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

    /// Removes whatever build `id` left behind (its container, or its job).
    pub async fn cleanup(&self, id: &BuildId) {
        match self {
            AnyExecutor::Local(e) => {
                let engine = e.engine();
                let label = format!("{LABEL_BUILD}={id}");
                match engine.containers_with_label(&label).await {
                    Ok(ids) => {
                        for c in ids {
                            if let Err(e) = engine.remove(&c).await {
                                tracing::warn!(container = %c, "cannot remove a leftover build container: {e}");
                            }
                        }
                    }
                    Err(e) => tracing::warn!("cannot list leftover build containers: {e}"),
                }
            }
            AnyExecutor::Swarm(e) => e.cleanup(id).await,
        }
    }
}
