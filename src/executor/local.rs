//! The local Docker executor: a build from its request to its report. Prepares the
//! container (inputs uploaded, repositories given), runs the phases ([`super::follow`]),
//! and concludes: results taken, container removed, report written.

use std::path::Path;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::backend::{self, ContainerRepo, REPO_DIR, SOURCE_DIR, SPEC_DIR};
use super::inputs;
use super::provenance::{self, InputsError, Provenance};
use super::run::{infra, keep_inputs, spec_file_name, timed_out, Logs, Run, Stop};
use super::{BuildReport, BuildRequest, DiskAllowance, Progress};
use crate::config::Backend;
use crate::docker::{self, Engine, InfraError, LABEL_BUILD, LABEL_OWNER, LABEL_TARGET};
use crate::model::Phase;

/// Runs builds on one Docker engine.
#[derive(Clone)]
pub struct Executor {
    pub(super) engine: Engine,
    owner: String,
}

impl Executor {
    /// An executor of a command-line run: its containers are labelled as this process's
    /// (see [`LABEL_OWNER`]), so the next run removes them if this one is killed.
    pub fn new(engine: Engine) -> Executor {
        Executor {
            engine,
            owner: process_owner("cli"),
        }
    }

    /// The service's executor: its containers outlive a killed service on purpose (the
    /// restarted service reattaches to them and removes what it cannot), so a command-line
    /// run's [`Executor::reap_orphans`] must not take them for a dead run's leftovers.
    pub fn for_service(engine: Engine) -> Executor {
        Executor {
            engine,
            owner: process_owner("service"),
        }
    }

    /// Removes build containers left by command-line runs of this host that no longer run
    /// (a `packetary build` killed with SIGKILL cannot clean up after itself); never a
    /// service's, which its restart reattaches to. Returns how many were removed.
    pub async fn reap_orphans(&self) -> Result<usize, InfraError> {
        reap_containers(&self.engine).await
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The inputs of `req` as a build of it would record them now (see
    /// [`super::provenance`]): its image's id looked up, its package hashed, each
    /// repository's snapshot read.
    pub async fn inputs(&self, req: &BuildRequest) -> Result<Provenance, InputsError> {
        // The image's id is asked of Docker while the files are hashed.
        let (image_id, recorded) = tokio::join!(
            self.engine.image_id(&req.target.image),
            provenance::of_request(req, None)
        );
        let image_id = image_id.map_err(|source| InputsError::Image {
            image: req.target.image.clone(),
            source,
        })?;
        Ok(recorded?.with_image_id(image_id))
    }

    /// Runs one build to its end. Its record is `req.inputs` when given (read once, before,
    /// by [`Executor::inputs`]), else read here. Never leaves its container behind: every
    /// way out of the phases (success, failure, timeout, cancellation) goes through the
    /// removal below.
    pub async fn run(
        &self,
        req: BuildRequest,
        events: Option<UnboundedSender<Progress>>,
        cancel: CancellationToken,
    ) -> BuildReport {
        self.run_within(req, None, events, cancel).await
    }

    /// [`Executor::run`], writing no more results to this host than `allowance`.
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
        let image_id = run.provenance.as_ref().and_then(|p| p.image_id.clone());
        self.conclude(run, result, image_id).await
    }

    /// Picks up a build whose container outlived the process that started it (the service
    /// was killed): replays the driver's output from the start, follows it to the end,
    /// takes the results out of the container and finishes the build as
    /// [`Executor::run`] would, within what is left of its time limit. `None` when there
    /// is nothing to pick up: no container, one never started, or one whose phases ran as
    /// exec sessions (those died with the process); the caller then removes any container
    /// and runs the build again.
    pub async fn reattach(
        &self,
        req: BuildRequest,
        events: Option<UnboundedSender<Progress>>,
        cancel: CancellationToken,
    ) -> Option<BuildReport> {
        let found = match self.engine.find_build_container(req.id.as_str()).await {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(build = %req.id, "cannot look for the build's container: {e}");
                return None;
            }
        };
        let nonce = found.nonce.clone()?;
        if found.status == "created" || found.status == "removing" || found.status == "dead" {
            return None;
        }
        let stream = self.engine.replay(&found.id);
        let mut run = Run::new(req, events);
        run.set_container(&found.id);
        let timeout = run.req.target.limits.timeout;
        let elapsed = found
            .started_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t.get(..19).unwrap_or(t)).ok())
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let left = timeout.saturating_sub(elapsed);
        let steps = [(Phase::Srpm, ""), (Phase::Deps, ""), (Phase::Build, "")];
        run.command = found.cmd.clone();
        tracing::info!(build = %run.req.id, container = %found.id, "reattached to a build container that outlived the previous process");
        run.begin(Phase::Prepare);
        // The image is the one the container runs.
        if run.provenance.is_none() {
            match provenance::of_request(&run.req, found.image_id.clone()).await {
                Ok(p) => run.provenance = Some(p),
                Err(e) => tracing::warn!(build = %run.req.id, "cannot record the inputs: {e}"),
            }
        }
        let _ = keep_inputs(&run).await;
        let result = async {
            // The replay starts from the beginning: the logs are written again.
            let mut logs = Logs::open(&run.logs_dir(), true, run.req.target.limits.log_bytes).await?;
            logs.note(&format!(
                "packetary: build {} reattached to container {} after a restart; output replayed from its start",
                run.req.id, found.id
            ))
            .await;
            run.end(true);
            tokio::select! {
                r = self.follow(&mut run, &found.id, stream, &steps, &nonce, &mut logs) => r,
                () = tokio::time::sleep(left) => Err(timed_out(timeout)),
                () = cancel.cancelled() => Err(Stop::Cancelled),
            }
        }
        .await;
        Some(self.conclude(run, result, found.image_id).await)
    }

    /// Removes the container and writes the report. The results were taken out of the
    /// container before, in the collect phase (see [`Executor::follow`]).
    async fn conclude(
        &self,
        mut run: Run,
        result: Result<(), Stop>,
        image_id: Option<String>,
    ) -> BuildReport {
        if let Some(id) = run.container.take() {
            if let Err(e) = self.engine.remove(&id).await {
                tracing::error!(container = %id, "could not remove build container: {e}");
            }
        }
        tracing::debug!(build = %run.req.id, "container removed");
        let outcome = run.outcome(result);
        run.finish(image_id, outcome).await
    }

    /// Prepares the container and runs the phases in it.
    async fn phases(&self, run: &mut Run) -> Result<(), Stop> {
        let target = run.req.target.clone();
        let repos = super::build_repos(&target, &run.req.extra_repos);
        let mut mounts = vec![];
        let mut container_repos = vec![];
        let mut network = false;
        for r in &repos {
            match &r.local {
                // This executor's own optimisation: a repository that is also a directory
                // on the Docker host is mounted read-only. An executor on other machines
                // uses its URL.
                Some(p) => {
                    if !p.is_dir() {
                        return Err(infra(format!(
                            "repository `{}`: {} is not a directory\n  fix: create it (createrepo_c) or remove it from the target",
                            r.name,
                            p.display()
                        )));
                    }
                    let inside = format!("{REPO_DIR}/{}", r.name);
                    mounts.push((p.display().to_string(), inside.clone(), true));
                    container_repos.push(ContainerRepo {
                        name: r.name.clone(),
                        url: format!("file://{inside}"),
                    });
                }
                // Reached over the network, in the dependency phase only.
                None if r.url.starts_with("file://") => {
                    return Err(infra(format!(
                        "repository `{}`: {} is on no host the build can reach\n  fix: give it as an http(s) URL",
                        r.name, r.url
                    )));
                }
                None => {
                    network = true;
                    container_repos.push(ContainerRepo {
                        name: r.name.clone(),
                        url: r.url.clone(),
                    });
                }
            }
        }
        let spec_name = spec_file_name(&run.req.package.spec);
        let script = backend::script(&target, &spec_name, &container_repos);
        // This executor's own optimisation, as for directory repositories: where nothing is
        // generated for the build, the spec and its sources are mounted read-only instead
        // of uploaded (each archive call makes Docker 20.10 start a helper process, ~50 ms).
        // The results still come out only through the checked download.
        let mount_inputs = script.files.is_empty();
        if mount_inputs {
            mounts.push((
                run.req.package.spec.display().to_string(),
                format!("{SPEC_DIR}/{spec_name}"),
                true,
            ));
            mounts.push((
                run.req.package.source_dir.display().to_string(),
                SOURCE_DIR.to_string(),
                true,
            ));
        }
        if let Some((volume, at)) = backend::cache_volume(&target, &run.req.deps_cache) {
            mounts.push((volume, at, false));
        }
        let mut logs = Logs::open(&run.logs_dir(), false, run.req.target.limits.log_bytes).await?;
        // The mock backend's own preparation: a Mock image, its buildroot made ready.
        let image = if target.backend == Backend::Mock {
            let (repos, mounts) = (&container_repos, &mounts);
            super::mockroot::prepare(
                &self.engine,
                &self.owner,
                run,
                &target.image,
                repos,
                mounts,
                network,
                &script,
                &mut logs,
            )
            .await?
        } else {
            target.image.clone()
        };

        // Phases run back to back in one process, the container's main process (an exec
        // costs a round trip). Where only the dependency phase may have network (rpmbuild:
        // the srpm phase expands the spec's macros, the build runs its scripts), the
        // container starts off the network and the driver asks for it with a secret only
        // it holds, and gives it back (see `follow`).
        let online = network || (script.deps.is_some() && backend::deps_online(&target));
        let gated = online && script.offline_build;
        // A gated build whose spec names no build dependency starts in a container that can
        // have no network at all: Docker then makes no network sandbox, which is most of
        // what a start costs (see README, "Benchmarks"). Should its dependency phase ask for
        // the network all the same (a macro that spells BuildRequires), the build starts
        // again in a container that can have it.
        let mut capable =
            online && (!gated || backend::may_name_build_deps(&run.req.package.spec).await);
        let prepared = Prepared {
            image,
            mounts,
            script: &script,
            spec_name: &spec_name,
            mount_inputs,
            repos: &container_repos,
            gated,
        };
        loop {
            match self.attempt(run, &prepared, capable, &mut logs).await {
                Err(Stop::NeedsNetwork) if !capable => {
                    if let Some(id) = run.container.clone() {
                        self.engine.remove(&id).await.map_err(Stop::Infra)?;
                        run.container = None;
                    }
                    run.restart();
                    logs =
                        Logs::open(&run.logs_dir(), true, run.req.target.limits.log_bytes).await?;
                    logs.note("packetary: the dependency phase asked for the network, which the first container could not have (the spec names no BuildRequires, yet a macro gave some): the build starts again in one that can")
                        .await;
                    capable = true;
                }
                r => return r,
            }
        }
    }

    /// Creates the build's container (with a network sandbox when `capable`, for a
    /// dependency phase that may ask for the network), puts its inputs in, starts it and
    /// follows its phases.
    async fn attempt(
        &self,
        run: &mut Run,
        p: &Prepared<'_>,
        capable: bool,
        logs: &mut Logs,
    ) -> Result<(), Stop> {
        let target = run.req.target.clone();
        let script = p.script;
        let mut steps: Vec<(Phase, &str)> = vec![(Phase::Srpm, script.srpm.as_str())];
        if let Some(deps) = &script.deps {
            steps.push((Phase::Deps, deps.as_str()));
        }
        steps.push((Phase::Build, script.build.as_str()));
        let nonce = format!("{:016x}", rand::random::<u64>());
        let named: Vec<(&str, &str)> = steps.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let cmd = backend::driver(&nonce, &named);
        run.command = cmd.clone();
        let mut env = script.env.clone();
        env.push(format!(
            "SOURCE_DATE_EPOCH={}",
            run.provenance
                .as_ref()
                .map(|p| p.source_date_epoch)
                .unwrap_or_default()
        ));
        // Also in a container that cannot have the network: the dependency phase's request
        // is then what starts the build again in one that can.
        if p.gated {
            let token = format!("{:032x}", rand::random::<u128>());
            env.push(format!("{}={token}", backend::NET_TOKEN_ENV));
            run.net_token = Some(token);
        }
        run.net_capable = capable;

        let spec = docker::ContainerSpec {
            name: format!("packetary-{}", run.req.id),
            image: p.image.clone(),
            cmd: Some(cmd),
            labels: [
                (LABEL_BUILD.to_string(), run.req.id.to_string()),
                (LABEL_TARGET.to_string(), target.name.to_string()),
                (LABEL_OWNER.to_string(), self.owner.clone()),
            ]
            .into_iter()
            .chain([(docker::LABEL_NONCE.to_string(), nonce.clone())])
            .collect(),
            mounts: p.mounts.clone(),
            env,
            memory_bytes: target.limits.memory_bytes,
            nano_cpus: target.limits.cpus.map(|c| (c * 1e9) as i64),
            pids: Some(target.limits.pids),
            network: capable,
            cap_add: script.cap_add.clone(),
            security_opt: script.security_opt.clone(),
            user: None,
        };
        let header = run.header(
            &format!("in image {}", target.image),
            p.repos.iter().map(|r| (r.name.as_str(), r.url.as_str())),
        );
        logs.note(&header).await;
        let id = self.engine.create(&spec).await.map_err(Stop::Infra)?;
        tracing::debug!(build = %run.req.id, network = capable, "container created");
        run.set_container(&id);
        // Before the start, all at once: the inputs go in, the output is attached, and a
        // container made on the bridge is taken off it.
        let t0 = std::time::Instant::now();
        let upload = async {
            if p.mount_inputs {
                return Ok(vec![]);
            }
            inputs::upload(
                &self.engine,
                &id,
                &run.req.package,
                p.spec_name,
                &script.files,
            )
            .await
        };
        let offline = async {
            if p.gated && capable {
                self.engine.disconnect_all(&id).await?;
            }
            Ok::<(), InfraError>(())
        };
        let (left_out, attached, offline) = tokio::join!(upload, self.engine.attach(&id), offline);
        let left_out = left_out.map_err(Stop::Infra)?;
        tracing::debug!(build = %run.req.id, elapsed = ?t0.elapsed(), "inputs uploaded");
        for what in left_out {
            logs.note(&format!("packetary: not given to the build: {what}"))
                .await;
        }
        let stream = attached.map_err(Stop::Infra)?;
        offline.map_err(Stop::Infra)?;
        self.engine.start(&id).await.map_err(Stop::Infra)?;
        tracing::debug!(build = %run.req.id, "container started");
        run.end(true);
        self.follow(run, &id, stream, &steps, &nonce, logs).await
    }
}

/// What every attempt of a build's container is made of (see [`Executor::attempt`]).
struct Prepared<'a> {
    image: String,
    mounts: Vec<(String, String, bool)>,
    script: &'a backend::Script,
    spec_name: &'a str,
    /// The spec and sources are mounted, not uploaded.
    mount_inputs: bool,
    repos: &'a [ContainerRepo],
    /// Only the dependency phase may have network, on request.
    gated: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// `<kind>/<host>/<pid>`: who made a container, for [`Executor::reap_orphans`].
pub(super) fn process_owner(kind: &str) -> String {
    format!("{kind}/{}/{}", hostname(), std::process::id())
}

/// Removes the containers of build `id` on `engine`'s daemon (what an earlier attempt of
/// it left); failures are logged, the build goes on.
pub(super) async fn remove_build_containers(engine: &Engine, id: &crate::model::BuildId) {
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

/// [`Executor::reap_orphans`] on `engine`'s daemon (also the Swarm executor's, for the
/// warm buildroots it makes there).
pub(super) async fn reap_containers(engine: &Engine) -> Result<usize, InfraError> {
    let mut removed = 0;
    for (id, owner) in engine.containers_with_label_values(LABEL_OWNER).await? {
        if !left_by_dead_process("cli", &owner) {
            continue;
        }
        // The owner may have removed it itself between the listing and the /proc check.
        if engine.remove(&id).await? {
            tracing::warn!(container = %id, %owner, "removed a build container left by a dead process");
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether `owner` (a [`LABEL_OWNER`] value) is a process of `kind` (`cli`, `service`) of
/// this host that no longer runs: what [`Executor::reap_orphans`] removes for `cli` (never
/// a service's, which its restart reattaches to), and the Swarm executor's sweep for
/// `service` after the restart picked up what it could.
pub(super) fn left_by_dead_process(kind: &str, owner: &str) -> bool {
    let mut parts = owner.splitn(3, '/');
    let (Some(k), Some(h), Some(pid)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if k != kind {
        return false;
    }
    h == hostname() && !Path::new("/proc").join(pid).exists()
}
