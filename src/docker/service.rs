//! Swarm services: a build as a one-task job (one replica, never restarted), its task's state, its
//! output through the manager, and its removal. The manager is the daemon `Engine` talks
//! to; the task runs on whichever node Swarm picks.

use std::collections::HashMap;

use bollard::models::{
    Limit, ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, LogsOptionsBuilder,
};

use super::{ContainerSpec, Engine, ExecStream, ExitHandle, InfraError, DROP_DEFAULT_CAPS};

/// A build as a Swarm job: its container, where it may run and what it needs there.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// Name, image (by digest), command, labels, environment, limits and capabilities.
    /// Mounts are refused (no shared disk); `security_opt` has no Swarm equivalent on API
    /// 1.41 and is applied by the job's own agent instead (`no_new_privs`).
    pub container: ContainerSpec,
    /// Placement constraints (`node.labels.rpm==yes`, `node.platform.arch==x86_64`).
    pub constraints: Vec<String>,
    /// What Swarm must find free on a node to place the task there.
    pub reserve_memory: Option<i64>,
    pub reserve_nano_cpus: Option<i64>,
}

/// Where a job's one task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTask {
    pub state: String,
    /// The node Swarm placed it on (its id) and that node's hostname when known.
    pub node: Option<String>,
    pub exit_code: Option<i64>,
    /// Swarm's error for a task that failed or was rejected (`no suitable node`, an image
    /// it could not pull, a node that went down).
    pub err: Option<String>,
}

impl JobTask {
    /// Swarm will do nothing more with it.
    pub fn ended(&self) -> bool {
        matches!(
            self.state.as_str(),
            "complete" | "failed" | "shutdown" | "rejected" | "orphaned" | "remove"
        )
    }
}

impl Engine {
    /// Creates the job; returns the service's id.
    pub async fn create_job(&self, job: &JobSpec) -> Result<String, InfraError> {
        let c = &job.container;
        if !c.mounts.is_empty() {
            return Err(InfraError(
                "a Swarm job shares no disk with the service: it cannot mount host paths".into(),
            ));
        }
        let drop_all = c.cap_add.first().map(String::as_str) == Some(DROP_DEFAULT_CAPS);
        let add: Vec<String> = c
            .cap_add
            .iter()
            .filter(|x| x.as_str() != DROP_DEFAULT_CAPS)
            .map(|x| {
                if x.starts_with("CAP_") {
                    x.clone()
                } else {
                    format!("CAP_{x}")
                }
            })
            .collect();
        let spec = ServiceSpec {
            name: Some(c.name.clone()),
            labels: Some(c.labels.clone()),
            // One replica that Swarm never restarts, not `replicated-job`: removing a job
            // service leaves its task and its container on the node (moby/moby#42789,
            // #44312, still so on 20.10), which a build service cannot afford.
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(c.image.clone()),
                    labels: Some(c.labels.clone()),
                    command: c.cmd.clone(),
                    env: Some(c.env.clone()),
                    user: c.user.clone(),
                    capability_drop: drop_all.then(|| vec!["ALL".to_string()]),
                    capability_add: (!add.is_empty()).then_some(add),
                    // The job's own agent is its main process and reaps what it must.
                    init: Some(false),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: c.nano_cpus,
                        memory_bytes: c.memory_bytes,
                        pids: c.pids,
                    }),
                    reservations: Some(ResourceObject {
                        nano_cpus: job.reserve_nano_cpus,
                        memory_bytes: job.reserve_memory,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                // A failed task is not run again by Swarm: the queue decides (an
                // infrastructure fault is retried as a new job, elsewhere if it can).
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    max_attempts: Some(0),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(job.constraints.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_service(spec, None)
            .await
            .map_err(|e| InfraError::docker("create the build's Swarm job", e))?;
        created
            .id
            .ok_or_else(|| InfraError("Docker: the Swarm job was created without an id".into()))
    }

    /// The job's task, once Swarm has made it.
    pub async fn job_task(&self, service: &str) -> Result<Option<JobTask>, InfraError> {
        let opts = ListTasksOptionsBuilder::default()
            .filters(&HashMap::from([("service", vec![service])]))
            .build();
        let tasks = self
            .docker
            .list_tasks(Some(opts))
            .await
            .map_err(|e| InfraError::docker("list the Swarm job's tasks", e))?;
        // One task per job; the newest if Swarm ever made another.
        let Some(t) = tasks
            .into_iter()
            .max_by_key(|t| t.created_at.clone().unwrap_or_default())
        else {
            return Ok(None);
        };
        Ok(Some(task_of(t)))
    }

    /// Everything the job's task printed since its start, then the rest as it comes, read
    /// through the manager (no connection to the node is needed). The stream does not end
    /// by itself: the job's agent prints its exit marker last.
    pub fn job_output(&self, service: &str) -> ExecStream {
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        ExecStream {
            exit: ExitHandle::Service(service.to_string()),
            output: Some(Box::pin(self.docker.service_logs(service, Some(opts)))),
        }
    }

    /// Removes the job (Swarm stops and removes its task's container on its node). `false`
    /// when there was none.
    pub async fn remove_job(&self, service: &str) -> Result<bool, InfraError> {
        match self.docker.delete_service(service).await {
            Ok(()) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(InfraError::docker("remove the build's Swarm job", e)),
        }
    }

    /// The jobs carrying `label` (`key` or `key=value`), with their labels.
    pub async fn jobs_with_label(
        &self,
        label: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, InfraError> {
        let opts = ListServicesOptionsBuilder::default()
            .filters(&HashMap::from([("label", vec![label])]))
            .build();
        let services = self
            .docker
            .list_services(Some(opts))
            .await
            .map_err(|e| InfraError::docker("list Swarm jobs", e))?;
        Ok(services
            .into_iter()
            .filter_map(|s| {
                let labels = s.spec.and_then(|sp| sp.labels).unwrap_or_default();
                Some((s.id?, labels))
            })
            .collect())
    }

    /// The environment a job was created with (a restarted service reads its task's token
    /// back from it).
    pub async fn job_env(&self, service: &str) -> Result<Vec<String>, InfraError> {
        let s = self
            .docker
            .inspect_service(
                service,
                None::<bollard::query_parameters::InspectServiceOptions>,
            )
            .await
            .map_err(|e| InfraError::docker("inspect the build's Swarm job", e))?;
        Ok(s.spec
            .and_then(|sp| sp.task_template)
            .and_then(|t| t.container_spec)
            .and_then(|c| c.env)
            .unwrap_or_default())
    }

    /// The task of each of the jobs `services` (the newest, if Swarm ever made another),
    /// in one call.
    pub async fn job_tasks(
        &self,
        services: &[String],
    ) -> Result<HashMap<String, JobTask>, InfraError> {
        let ids: Vec<&str> = services.iter().map(String::as_str).collect();
        let opts = ListTasksOptionsBuilder::default()
            .filters(&HashMap::from([("service", ids)]))
            .build();
        let tasks = self
            .docker
            .list_tasks(Some(opts))
            .await
            .map_err(|e| InfraError::docker("list the Swarm jobs' tasks", e))?;
        let mut newest: HashMap<String, (String, JobTask)> = HashMap::new();
        for t in tasks {
            let Some(service) = t.service_id.clone() else {
                continue;
            };
            let created = t.created_at.clone().unwrap_or_default();
            if newest.get(&service).is_some_and(|(c, _)| *c >= created) {
                continue;
            }
            newest.insert(service, (created, task_of(t)));
        }
        Ok(newest.into_iter().map(|(s, (_, t))| (s, t)).collect())
    }

    /// The ids of the nodes that are down.
    pub async fn nodes_down(&self) -> Result<std::collections::HashSet<String>, InfraError> {
        let nodes = self
            .docker
            .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
            .await
            .map_err(|e| InfraError::docker("list the Swarm's nodes", e))?;
        Ok(nodes
            .into_iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.state)
                    .is_some_and(|s| s == bollard::models::NodeState::DOWN)
            })
            .filter_map(|n| n.id)
            .collect())
    }
}

fn task_of(t: bollard::models::Task) -> JobTask {
    let status = t.status.unwrap_or_default();
    JobTask {
        state: status
            .state
            .map(|s: TaskState| s.to_string())
            .unwrap_or_default(),
        node: t.node_id,
        exit_code: status.container_status.and_then(|c| c.exit_code),
        err: status.err.filter(|e| !e.is_empty()),
    }
}
