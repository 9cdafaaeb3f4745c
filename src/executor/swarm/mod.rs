//! The Swarm executor: each build is a Swarm job (`replicated-job`, one task, no restart)
//! on the cluster whose manager is `[docker] host`, sharing no disk with the service.
//!
//! What the local executor does through the daemon's API, a job does through its agent
//! (`agent.sh`, the task's main process) and the service's HTTP routes (`tasks`):
//! - inputs: the agent fetches them (`GET <callback_url>/tasks/<build>/inputs`, a token
//!   per build) before any package code runs;
//! - output and live logs: the driver's output (the same driver, phases and markers as the
//!   local executor's) is read through the manager (`/services/<id>/logs`), so no node
//!   needs to reach the service for it, and logs keep coming while the task is offline;
//! - network: where only the dependency phase may have it (rpmbuild), the agent keeps
//!   NET_ADMIN, switches every link down before the driver starts, up once on the
//!   dependency phase's request and down at its end, and runs the driver without NET_ADMIN;
//! - results: the agent uploads `/out` as a tar of known length
//!   (`PUT …/results`), checked and unpacked aside, moved in only when whole;
//! - the end: the agent prints an exit marker with a secret of its own last; a task that
//!   ends without it (its node went down, its image could not be pulled) is an
//!   infrastructure fault, retried by the queue.
//!
//! Reattach after a restart finds the job by its build label and reads the output again
//! from its start; the token and exit marker come back from the job's spec.

mod tasks;
mod warm;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::backend::{self, ContainerRepo};
use super::follow::{classify_exit, read_output, take};
use super::provenance::{self, InputsError, Provenance};
use super::run::{infra, keep_inputs, spec_file_name, timed_out, Logs, Run, Stop};
use super::{BuildReport, BuildRequest, DiskAllowance, Progress};
use crate::config::SwarmConfig;
use crate::docker::{
    self, Engine, InfraError, JobSpec, LABEL_BUILD, LABEL_NONCE, LABEL_OWNER, LABEL_TARGET,
};
use crate::model::{BuildId, Phase};

pub use tasks::{router, Tasks};

/// The agent script, the main process of every build task.
const AGENT: &str = include_str!("agent.sh");
/// Environment of the agent only (see `agent.sh`).
const ENV_URL: &str = "PACKETARY_TASK_URL";
const ENV_TOKEN: &str = "PACKETARY_TASK_TOKEN";
const ENV_EXIT: &str = "PACKETARY_TASK_EXIT";
/// The exit code the agent's marker stands for when it failed itself (`fault`).
const AGENT_FAULT: i64 = -1;
/// How often the running jobs' tasks and the nodes are looked at (two calls to the manager
/// for all jobs, see `watch`).
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Jobs a build may take when their nodes fail (see `SwarmExecutor::phases`).
const NODE_ATTEMPTS: usize = 3;
/// How long a task that Swarm reports ended may take to deliver its last output.
const END_GRACE: Duration = Duration::from_secs(15);
/// How long a task may wait for a node with Swarm naming a reason (no node matches its
/// constraints or has the room it reserves) before the build is an infrastructure fault.
const UNPLACED_LIMIT: Duration = Duration::from_secs(120);

/// Runs builds as Swarm jobs.
#[derive(Clone)]
pub struct SwarmExecutor {
    engine: Engine,
    /// The service's own daemon (`[docker] host`): it makes the Mock targets' warm
    /// buildroots, which it pushes to the registry for the nodes (see `job_image`).
    builder: Engine,
    /// Warm buildroots already in the registry: local tag → pinned registry name. Held
    /// while one is pushed, so that a target's concurrent builds push it once.
    pushed: Arc<tokio::sync::Mutex<HashMap<String, String>>>,
    config: SwarmConfig,
    tasks: Arc<Tasks>,
    owner: String,
    watcher: Arc<watch::Watcher>,
}

impl SwarmExecutor {
    /// An executor on the swarm managed by `engine`'s daemon, making warm buildroots on
    /// `builder`'s; `owner` labels its jobs (`service/<host>/<pid>`, see
    /// `Executor::for_service`).
    pub fn new(
        engine: Engine,
        builder: Engine,
        config: SwarmConfig,
        owner: String,
    ) -> SwarmExecutor {
        SwarmExecutor {
            watcher: watch::Watcher::new(engine.clone(), WATCH_INTERVAL),
            engine,
            builder,
            pushed: Arc::default(),
            config,
            tasks: Arc::default(),
            owner,
        }
    }

    /// The jobs' transfers, for the HTTP server at `[executor] callback_url`.
    pub fn tasks(&self) -> Arc<Tasks> {
        self.tasks.clone()
    }

    /// The image of `target_image` in the registry, by digest: what every node pulls.
    async fn image_digest(&self, image: &str) -> Result<String, InfraError> {
        let reference = docker::registry_reference(&self.config.registry, image);
        self.engine.distribution_digest(&reference).await
    }

    /// The inputs of `req`: the package hashed, each repository's snapshot read, and the
    /// image's digest in the registry (the record names the image the nodes run).
    pub async fn inputs(&self, req: &BuildRequest) -> Result<Provenance, InputsError> {
        let (digest, recorded) = tokio::join!(
            self.image_digest(&req.target.image),
            provenance::of_request(req, None)
        );
        let digest = digest.map_err(|source| InputsError::Image {
            image: req.target.image.clone(),
            source,
        })?;
        Ok(recorded?.with_image_id(Some(digest)))
    }

    /// Runs one build to its end as a job; the job is removed on every way out.
    pub async fn run_within(
        &self,
        req: BuildRequest,
        allowance: Option<DiskAllowance>,
        events: Option<UnboundedSender<Progress>>,
        cancel: CancellationToken,
    ) -> BuildReport {
        let (run, result) = super::run::drive(
            req,
            allowance,
            events,
            cancel,
            async |r| self.inputs(r).await,
            async |run| self.phases(run).await,
        )
        .await;
        self.conclude(run, result).await
    }

    /// Picks up a build whose job outlived the previous service process: its output read
    /// again from the start, its results taken when it uploads them. `None` when there is
    /// no job to follow (the caller runs the build again).
    pub async fn reattach(
        &self,
        req: BuildRequest,
        events: Option<UnboundedSender<Progress>>,
        cancel: CancellationToken,
    ) -> Option<BuildReport> {
        let label = format!("{LABEL_BUILD}={}", req.id);
        let (service, labels) = match self.engine.jobs_with_label(&label).await {
            Ok(mut jobs) if !jobs.is_empty() => jobs.swap_remove(0),
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(build = %req.id, "cannot look for the build's Swarm job: {e}");
                return None;
            }
        };
        let nonce = labels.get(LABEL_NONCE)?.clone();
        let env = self.engine.job_env(&service).await.ok()?;
        let var = |k: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_string))
        };
        let (token, exit_mark) = (var(ENV_TOKEN)?, var(ENV_EXIT)?);
        let mut run = Run::new(req, events);
        run.set_container(&service);
        let timeout = run.req.target.limits.timeout;
        tracing::info!(build = %run.req.id, job = %service, "reattached to a Swarm job that outlived the previous process");
        run.begin(Phase::Prepare);
        if run.provenance.is_none() {
            match self.inputs(&run.req).await {
                Ok(p) => run.provenance = Some(p),
                Err(e) => tracing::warn!(build = %run.req.id, "cannot record the inputs: {e}"),
            }
        }
        let _ = keep_inputs(&run).await;
        let slot = self.tasks.register(
            &run.req.id,
            &token,
            None,
            run.staging.clone(),
            run.allowance,
        );
        let result = async {
            let mut logs =
                Logs::open(&run.logs_dir(), true, run.req.target.limits.log_bytes).await?;
            logs.note(&format!(
                "packetary: build {} reattached to Swarm job {service} after a restart; output read again from its start",
                run.req.id
            ))
            .await;
            let script = self.script(&run)?;
            let steps = steps(&script);
            run.end(true);
            let follow = self.follow(&mut run, &service, &steps, &nonce, &exit_mark, &slot, &mut logs);
            tokio::select! {
                r = follow => r,
                () = tokio::time::sleep(timeout) => Err(timed_out(timeout)),
                () = cancel.cancelled() => Err(Stop::Cancelled),
            }
        }
        .await;
        Some(self.conclude(run, result).await)
    }

    /// Removes the jobs left by command-line runs of this host that no longer run (a
    /// `packetary build` killed with SIGKILL), as `Executor::reap_orphans` does for
    /// containers. Returns how many were removed.
    pub async fn reap_orphans(&self) -> Result<usize, InfraError> {
        let mut removed = 0;
        for (service, labels) in self.engine.jobs_with_label(LABEL_OWNER).await? {
            let owner = labels.get(LABEL_OWNER).map(String::as_str).unwrap_or("");
            if super::local::left_by_dead_process("cli", owner)
                && self.engine.remove_job(&service).await?
            {
                tracing::warn!(job = %service, %owner, "removed a Swarm job left by a dead process");
                removed += 1;
            }
        }
        // A warm buildroot's container the dead run was making on its own daemon.
        Ok(removed + super::local::reap_containers(&self.builder).await?)
    }

    /// Removes the jobs of killed service processes of this host (`service/<host>/<pid>`,
    /// the pid gone) whose build is not in `keep`: jobs of builds a restart does not pick
    /// up. A live process's jobs, and other hosts', are never touched.
    pub async fn sweep(&self, keep: &[BuildId]) {
        let jobs = match self.engine.jobs_with_label(LABEL_OWNER).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!("cannot list Swarm jobs to sweep: {e}");
                return;
            }
        };
        for (service, labels) in jobs {
            let owner = labels.get(LABEL_OWNER).map(String::as_str).unwrap_or("");
            let kept = labels
                .get(LABEL_BUILD)
                .is_some_and(|b| keep.iter().any(|k| k.as_str() == b));
            if kept || !super::local::left_by_dead_process("service", owner) {
                continue;
            }
            match self.engine.remove_job(&service).await {
                Ok(_) => {
                    tracing::warn!(job = %service, %owner, "removed a Swarm job a killed service left")
                }
                Err(e) => tracing::warn!(job = %service, "cannot remove a leftover Swarm job: {e}"),
            }
        }
    }

    /// Removes the jobs of build `id` (after a crash, for a build that runs again).
    pub async fn cleanup(&self, id: &BuildId) {
        let label = format!("{LABEL_BUILD}={id}");
        match self.engine.jobs_with_label(&label).await {
            Ok(jobs) => {
                for (service, _) in jobs {
                    if let Err(e) = self.engine.remove_job(&service).await {
                        tracing::warn!(job = %service, "cannot remove a leftover Swarm job: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list leftover Swarm jobs: {e}"),
        }
        // A warm buildroot's container a killed process was making (see `job_image`).
        super::local::remove_build_containers(&self.builder, id).await;
        self.tasks.forget(id);
    }

    /// The backend's script for `run`, with every repository by URL: a job reaches
    /// nothing on the service's disk.
    fn script(&self, run: &Run) -> Result<backend::Script, Stop> {
        Ok(self.script_and_repos(run)?.0)
    }

    /// [`Self::script`] and the repositories it installs from.
    fn script_and_repos(&self, run: &Run) -> Result<(backend::Script, Vec<ContainerRepo>), Stop> {
        let target = &run.req.target;
        let mut repos = vec![];
        for r in super::build_repos(target, &run.req.extra_repos) {
            if r.url.starts_with("file://") {
                return Err(infra(format!(
                    "repository `{}`: {} is a directory, which a Swarm build on another node cannot reach\n  fix: give it as an http(s) URL (the service serves its own repositories at [server] repos_url)",
                    r.name,
                    crate::model::redact(&r.url)
                )));
            }
            repos.push(ContainerRepo {
                name: r.name.clone(),
                url: r.url.clone(),
            });
        }
        let script = backend::script(target, &spec_file_name(&run.req.package.spec), &repos);
        Ok((script, repos))
    }

    /// Runs the build as a job; a job lost with its node is replaced by one that may not
    /// run there, [`NODE_ATTEMPTS`] times in all (as a Kubernetes Job's `backoffLimit`): a
    /// node's fault is the cluster's business, not a failed build's.
    async fn phases(&self, run: &mut Run) -> Result<(), Stop> {
        let image = self.job_image(run).await?;
        let mut avoid: Vec<String> = vec![];
        loop {
            match self.attempt(run, &image, &avoid).await {
                Err(Stop::NodeFault { node, message }) if avoid.len() + 1 < NODE_ATTEMPTS => {
                    if let Some(service) = run.container.take() {
                        self.engine
                            .remove_job(&service)
                            .await
                            .map_err(Stop::Infra)?;
                    }
                    tracing::warn!(build = %run.req.id, "{message}; trying another node");
                    avoid.push(node.unwrap_or_default());
                    run.restart();
                    let mut logs =
                        Logs::open(&run.logs_dir(), false, run.req.target.limits.log_bytes).await?;
                    logs.note(&format!(
                        "packetary: {message}; the build starts again on another node"
                    ))
                    .await;
                    logs.flush().await?;
                }
                r => return r,
            }
        }
    }

    /// Creates a job of `image` on a node not in `avoid` and follows it to its end.
    async fn attempt(&self, run: &mut Run, image: &str, avoid: &[String]) -> Result<(), Stop> {
        let target = run.req.target.clone();
        let script = self.script(run)?;
        let steps = steps(&script);
        let named: Vec<(&str, &str)> = steps.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let nonce = format!("{:016x}", rand::random::<u64>());
        let driver = backend::driver(&nonce, &named);
        run.command = driver.clone();
        let token = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let exit_mark = format!("@@packetary-exit-{:032x}", rand::random::<u128>());
        // The gate: only the dependency phase may have the network (the local executor
        // connects the container; a job's agent switches its links).
        let gated = script.offline_build;
        let mut cap_add = script.cap_add.clone();
        if gated {
            cap_add.push("NET_ADMIN".into());
        }
        let private_cgroupns = cap_add.iter().any(|c| c == "SYS_ADMIN");
        let mut env = script.env.clone();
        env.push(format!(
            "SOURCE_DATE_EPOCH={}",
            run.provenance
                .as_ref()
                .map(|p| p.source_date_epoch)
                .unwrap_or_default()
        ));
        env.extend([
            format!(
                "{ENV_URL}={}/tasks/{}",
                self.config.callback_url, run.req.id
            ),
            format!("{ENV_TOKEN}={token}"),
            format!("{ENV_EXIT}={exit_mark}"),
            format!("PACKETARY_GATE={}", if gated { "1" } else { "" }),
            format!(
                "PACKETARY_PRIVATE_CGROUPNS={}",
                if private_cgroupns { "1" } else { "" }
            ),
            // Swarm's template: which node the task runs on, for the build's log.
            "PACKETARY_NODE={{.Node.ID}}".into(),
        ]);
        let slot = self.tasks.register(
            &run.req.id,
            &token,
            Some(tasks::Inputs {
                package: run.req.package.clone(),
                spec_name: spec_file_name(&run.req.package.spec),
                files: script.files.clone(),
            }),
            run.staging.clone(),
            run.allowance,
        );
        let mut logs = Logs::open(&run.logs_dir(), false, target.limits.log_bytes).await?;
        let repos = super::build_repos(&target, &run.req.extra_repos);
        let header = run.header(
            &format!("as a Swarm job, image {image}"),
            repos.iter().map(|r| (r.name.as_str(), r.url.as_str())),
        );
        logs.note(&header).await;
        let mut constraints = target.constraints.clone();
        if let Some(arch) = node_arch(&target.arch) {
            constraints.push(format!("node.platform.arch=={arch}"));
        }
        constraints.extend(
            avoid
                .iter()
                .filter(|n| !n.is_empty())
                .map(|n| format!("node.id!={n}")),
        );
        let job = JobSpec {
            container: docker::ContainerSpec {
                name: format!("packetary-{}", run.req.id),
                image: image.to_string(),
                cmd: Some(vec![
                    "bash".into(),
                    "-c".into(),
                    AGENT.into(),
                    "packetary-agent".into(),
                    driver[2].clone(),
                ]),
                labels: [
                    (LABEL_BUILD.to_string(), run.req.id.to_string()),
                    (LABEL_TARGET.to_string(), target.name.to_string()),
                    (LABEL_OWNER.to_string(), self.owner.clone()),
                    (LABEL_NONCE.to_string(), nonce.clone()),
                ]
                .into_iter()
                .collect(),
                env,
                memory_bytes: target.limits.memory_bytes,
                nano_cpus: target.limits.cpus.map(|c| (c * 1e9) as i64),
                pids: Some(target.limits.pids),
                cap_add,
                ..Default::default()
            },
            constraints,
            reserve_memory: target.limits.memory_bytes,
            reserve_nano_cpus: target.limits.cpus.map(|c| (c * 1e9) as i64),
        };
        let service = self.engine.create_job(&job).await.map_err(Stop::Infra)?;
        tracing::debug!(build = %run.req.id, job = %service, "Swarm job created");
        run.set_container(&service);
        run.end(true);
        self.follow(run, &service, &steps, &nonce, &exit_mark, &slot, &mut logs)
            .await
    }

    /// Reads the job's output to its agent's exit marker, watching its task: a task that
    /// ends without the marker, or that Swarm cannot place, is an infrastructure fault.
    /// Then takes the uploaded results.
    #[allow(clippy::too_many_arguments)]
    async fn follow(
        &self,
        run: &mut Run,
        service: &str,
        steps: &[(Phase, &str)],
        nonce: &str,
        exit_mark: &str,
        slot: &tasks::Slot,
        logs: &mut Logs,
    ) -> Result<(), Stop> {
        let mut stream = self.engine.job_output(service);
        let code = tokio::select! {
            r = read_output(run, &mut stream, steps, nonce, logs, None, Some(exit_mark)) => r?,
            fault = self.watch(service) => {
                if let Stop::NodeFault { message, .. } | Stop::Infra(InfraError(message)) = &fault {
                    logs.note(&format!("packetary: {message}")).await;
                }
                let _ = logs.flush().await;
                return Err(fault);
            }
        };
        for what in slot.left_out() {
            logs.note(&format!("packetary: not given to the build: {what}"))
                .await;
        }
        let Some(code) = code else {
            return Err(infra(
                "the Swarm job's output ended before its agent reported".into(),
            ));
        };
        tracing::debug!(build = %run.req.id, code, "Swarm job's driver ended");
        if code == AGENT_FAULT {
            let _ = logs.flush().await;
            // The agent's reason is its last own line before the marker.
            let text = tokio::fs::read_to_string(run.logs_dir().join("root.log"))
                .await
                .unwrap_or_default();
            let reason = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("packetary: "))
                .unwrap_or("see root.log");
            return Err(infra(format!(
                "the build's Swarm task could not run its build, an infrastructure fault: {reason}"
            )));
        }
        let uploaded = slot.take_upload().await;
        if code != 0 {
            let stop = classify_exit(run, code, false).await;
            if let Some(taken) = uploaded {
                if let Err(Stop::Infra(e)) = take(run, taken, logs).await {
                    logs.note(&format!("packetary: results not taken: {e}"))
                        .await;
                }
            }
            let _ = logs.flush().await;
            return Err(stop);
        }
        run.begin(Phase::Collect);
        let taken = match uploaded {
            Some(t) => take(run, t, logs).await,
            None => Err(infra(
                "the build's Swarm task uploaded no results (see root.log): an infrastructure fault".into(),
            )),
        };
        logs.flush().await?;
        taken?;
        run.check_nevr()
    }

    /// Returns (only) when the job's task can no longer deliver: it ended and its output
    /// brought no exit marker within [`END_GRACE`], its node is down, or Swarm could not
    /// place it for [`UNPLACED_LIMIT`].
    async fn watch(&self, service: &str) -> Stop {
        let started = Instant::now();
        let mut ended_at: Option<Instant> = None;
        let mut watching = self.watcher.watch(service);
        loop {
            // The shared watcher looks at all jobs at once every interval: the output's
            // end comes by the exit marker, this only catches what never ends.
            if watching.seen.changed().await.is_err() {
                return infra("the Swarm watcher stopped".into());
            }
            let seen = watching.seen.borrow_and_update().clone();
            let Some((task, node_down)) = seen.tasks.get(service).cloned() else {
                continue;
            };
            let node_down = node_down && !task.ended();
            if task.ended() || node_down {
                // A node that is down delivers nothing more; a task that ended may still.
                let at = *ended_at.get_or_insert_with(Instant::now);
                if node_down || at.elapsed() >= END_GRACE {
                    return Stop::NodeFault {
                        message: format!(
                            "the build's Swarm task on node {} ended `{}`{} before the build did: an infrastructure fault{}",
                            task.node.as_deref().unwrap_or("(none)"),
                            task.state,
                            if node_down { " (its node is down)" } else { "" },
                            task.err.map(|e| format!(" (Swarm: {e})")).unwrap_or_default(),
                        ),
                        node: task.node,
                    };
                }
            } else if task.state == "pending"
                && task.err.is_some()
                && started.elapsed() >= UNPLACED_LIMIT
            {
                return infra(format!(
                    "Swarm cannot place the build's task (Swarm: {})\n  fix: check the target's constraints and the nodes' labels and room (`docker node ls`, `docker node inspect`)",
                    task.err.unwrap_or_default()
                ));
            }
        }
    }

    /// Removes the job and writes the report.
    async fn conclude(&self, mut run: Run, result: Result<(), Stop>) -> BuildReport {
        if let Some(service) = run.container.take() {
            match self.engine.remove_job(&service).await {
                // Not a job: the warm buildroot's container on the service's own daemon,
                // where a timeout or cancellation caught the build (see `job_image`).
                Ok(false) => {
                    if let Err(e) = self.builder.remove(&service).await {
                        tracing::error!(container = %service, "could not remove the buildroot container: {e}");
                    }
                }
                Ok(true) => {}
                Err(e) => {
                    tracing::error!(job = %service, "could not remove the build's Swarm job: {e}")
                }
            }
        }
        self.tasks.forget(&run.req.id);
        let image_id = run.provenance.as_ref().and_then(|p| p.image_id.clone());
        let outcome = run.outcome(result);
        run.finish(image_id, outcome).await
    }
}

/// The phases of `script`, in order.
fn steps(script: &backend::Script) -> Vec<(Phase, &str)> {
    let mut steps: Vec<(Phase, &str)> = vec![(Phase::Srpm, script.srpm.as_str())];
    if let Some(deps) = &script.deps {
        steps.push((Phase::Deps, deps.as_str()));
    }
    steps.push((Phase::Build, script.build.as_str()));
    steps
}

/// Swarm's `node.platform.arch` for a target's rpm architecture, where they agree.
fn node_arch(arch: &str) -> Option<&str> {
    matches!(arch, "x86_64" | "aarch64" | "ppc64le" | "s390x").then_some(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_chosen_by_the_target_s_architecture() {
        assert_eq!(node_arch("x86_64"), Some("x86_64"));
        assert_eq!(node_arch("noarch"), None);
    }
}
