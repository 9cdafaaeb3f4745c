//! The executor: one fresh container per build, phases with their own logs and timings,
//! limits, and results out. Docker's types stay in `docker`.

pub mod backend;
pub mod docker;
pub mod images;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, RepoLocation, Target};
use crate::model::{BuildId, Failure, Nevr, Outcome, PackageSource, Phase, TargetName};
use backend::{ContainerRepo, MISSING_MARK, NEVR_FILE, OUT_DIR, REPO_DIR, SOURCE_DIR, SPEC_DIR};
pub use docker::{Engine, InfraError, LABEL_BUILD, LABEL_OWNER, LABEL_TARGET};

/// One build to run.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub id: BuildId,
    pub package: PackageSource,
    pub target: Target,
    /// Results go to `out_root/<target>/<name>-<version>-<release>/`.
    pub out_root: PathBuf,
    /// Repositories added to the target's for this build.
    pub extra_repos: Vec<crate::config::Repo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseTiming {
    pub phase: Phase,
    pub started: String,
    pub seconds: f64,
    pub ok: bool,
}

/// What a build produced and how; also written as `build.json` next to the logs.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub id: BuildId,
    pub package: String,
    pub spec: PathBuf,
    pub target: TargetName,
    pub backend: Backend,
    pub image: String,
    pub image_id: Option<String>,
    pub nevr: Option<Nevr>,
    pub dir: PathBuf,
    pub phases: Vec<PhaseTiming>,
    /// The exact commands run in the container, phase by phase, for `packetary rebuild`.
    pub commands: Vec<(Phase, Vec<String>)>,
    pub repos: Vec<String>,
    pub outcome: Outcome,
}

/// Progress of a build, for terminals and build pages.
#[derive(Debug, Clone)]
pub struct Progress {
    pub build: BuildId,
    pub package: String,
    pub target: TargetName,
    pub kind: ProgressKind,
}

#[derive(Debug, Clone)]
pub enum ProgressKind {
    PhaseStarted(Phase),
    PhaseFinished {
        phase: Phase,
        elapsed: Duration,
        ok: bool,
    },
    Finished(Box<BuildReport>),
}

/// Runs builds on one Docker engine.
#[derive(Clone)]
pub struct Executor {
    engine: Engine,
    owner: String,
}

/// State a build keeps while it runs, so that a timeout or cancellation can still tell
/// which phase it stopped in and clean up.
struct Run {
    req: BuildRequest,
    staging: PathBuf,
    container: Option<String>,
    phase: Phase,
    phase_start: Instant,
    phase_started_at: String,
    phases: Vec<PhaseTiming>,
    commands: Vec<(Phase, Vec<String>)>,
    nevr: Option<Nevr>,
    events: Option<UnboundedSender<Progress>>,
    state_log: Vec<u8>,
    oom_limit: Option<i64>,
    /// OOM kills the driver counted in the container's cgroup when a phase failed.
    oom_kills: u64,
}

impl Executor {
    /// An executor whose containers are labelled as this process's (see [`LABEL_OWNER`]).
    pub fn new(engine: Engine) -> Executor {
        Executor {
            engine,
            owner: process_owner(),
        }
    }

    /// Removes build containers left by processes of this host that no longer run
    /// (a `packetary build` killed with SIGKILL cannot clean up after itself). Returns how
    /// many were removed.
    pub async fn reap_orphans(&self) -> Result<usize, InfraError> {
        let host = hostname();
        let mut removed = 0;
        for (id, owner) in self
            .engine
            .containers_with_label_values(LABEL_OWNER)
            .await?
        {
            let mut parts = owner.splitn(3, '/');
            let (Some("cli"), Some(h), Some(pid)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if h != host || Path::new("/proc").join(pid).exists() {
                continue;
            }
            // The owner may have removed it itself between the listing and the /proc check.
            if self.engine.remove(&id).await? {
                tracing::warn!(container = %id, %owner, "removed a build container left by a dead process");
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs one build to its end. Never leaves its container behind: every way out of the
    /// phases (success, failure, timeout, cancellation) goes through the removal below.
    pub async fn run(
        &self,
        req: BuildRequest,
        image_id: Option<String>,
        events: Option<UnboundedSender<Progress>>,
        cancel: CancellationToken,
    ) -> BuildReport {
        let mut run = Run::new(req, events);
        let timeout = run.req.target.limits.timeout;
        run.begin(Phase::Prepare);
        let result = tokio::select! {
            r = self.phases(&mut run) => r,
            () = tokio::time::sleep(timeout) => Err(timed_out(timeout)),
            () = cancel.cancelled() => Err(Stop::Cancelled),
        };
        self.conclude(run, result, image_id).await
    }

    /// Picks up a build whose container outlived the process that started it (the service
    /// was killed): replays the driver's output from the start, follows it to the end and
    /// finishes the build as [`Executor::run`] would, within what is left of its time
    /// limit. `None` when there is nothing to pick up: no container, one never started, or
    /// one whose phases ran as exec sessions (those died with the process); the caller
    /// then removes any container and runs the build again.
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
        run.container = Some(found.id.clone());
        let timeout = run.req.target.limits.timeout;
        let elapsed = found
            .started_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t.get(..19).unwrap_or(t)).ok())
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let left = timeout.saturating_sub(elapsed);
        let steps = [(Phase::Srpm, ""), (Phase::Deps, ""), (Phase::Build, "")];
        for (phase, _) in &steps {
            run.commands.push((*phase, found.cmd.clone()));
        }
        tracing::info!(build = %run.req.id, container = %found.id, "reattached to a build container that outlived the previous process");
        run.begin(Phase::Prepare);
        let logs = run.staging.join("logs");
        let result = async {
            tokio::fs::create_dir_all(&logs)
                .await
                .map_err(|e| infra(format!("create {}: {e}", logs.display())))?;
            // The replay starts from the beginning: the logs are written again.
            let mut root = new_log(&logs.join("root.log")).await?;
            let build = new_log(&logs.join("build.log")).await?;
            let _ = root
                .write_all(
                    format!(
                        "packetary: build {} reattached to container {} after a restart; output replayed from its start\n",
                        run.req.id, found.id
                    )
                    .as_bytes(),
                )
                .await;
            run.end(true);
            let mut logs = Logs { root, build };
            tokio::select! {
                r = self.follow(&mut run, &found.id, stream, &steps, &nonce, &mut logs) => r,
                () = tokio::time::sleep(left) => Err(timed_out(timeout)),
                () = cancel.cancelled() => Err(Stop::Cancelled),
            }
        }
        .await
        .and_then(|()| check_nevr(&run));
        Some(self.conclude(run, result, found.image_id).await)
    }

    /// Removes the container, collects the results and writes the report.
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
        let outcome = match result {
            Ok(()) => {
                run.begin(Phase::Collect);
                match run.collect() {
                    Ok(o) => {
                        run.end(true);
                        o
                    }
                    Err(e) => {
                        run.end(false);
                        Outcome::Error { message: e }
                    }
                }
            }
            Err(stop) => {
                let phase = run.phase;
                run.end(false);
                match stop {
                    Stop::Cancelled => Outcome::Cancelled,
                    Stop::Infra(e) => Outcome::Error { message: e.0 },
                    Stop::Failed(failure, detail) => {
                        let log = run.final_dir().join("logs").join(phase.log_name());
                        Outcome::Failed {
                            phase,
                            message: format!("{phase} phase failed: {detail}"),
                            failure,
                            log,
                        }
                    }
                }
            }
        };
        run.finish(image_id, outcome).await
    }

    async fn phases(&self, run: &mut Run) -> Result<(), Stop> {
        let target = run.req.target.clone();
        let logs = run.staging.join("logs");
        tokio::fs::create_dir_all(&logs)
            .await
            .map_err(|e| infra(format!("create {}: {e}", logs.display())))?;
        let mut repos = target.repos.clone();
        repos.extend(run.req.extra_repos.iter().cloned());
        let mut mounts = vec![
            (
                run.req.package.spec.display().to_string(),
                format!("{SPEC_DIR}/{}", spec_file_name(&run.req.package.spec)),
                true,
            ),
            (
                run.req.package.source_dir.display().to_string(),
                SOURCE_DIR.to_string(),
                true,
            ),
            (
                run.staging.display().to_string(),
                OUT_DIR.to_string(),
                false,
            ),
        ];
        let mut container_repos = vec![];
        let mut network = false;
        for r in &repos {
            match &r.location {
                RepoLocation::Dir(p) => {
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
                RepoLocation::Url(u) => {
                    network = true;
                    container_repos.push(ContainerRepo {
                        name: r.name.clone(),
                        url: u.clone(),
                    });
                }
            }
        }
        let script = backend::script(
            &target,
            &spec_file_name(&run.req.package.spec),
            &container_repos,
        );
        if !script.files.is_empty() {
            let dir = run.staging.join(".packetary");
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| infra(format!("create {}: {e}", dir.display())))?;
            for (name, content) in &script.files {
                tokio::fs::write(dir.join(name), content)
                    .await
                    .map_err(|e| infra(format!("write {name}: {e}")))?;
            }
        }
        let mut root_log = open_log(&logs.join("root.log")).await?;
        let build_log = open_log(&logs.join("build.log")).await?;

        // Phases run back to back in as few processes as possible. Without a network cut
        // they are the container's main process (no exec at all); with one, the container
        // idles and two execs run on either side of the disconnection.
        let mut steps: Vec<(Phase, &str)> = vec![(Phase::Srpm, script.srpm.as_str())];
        if let Some(deps) = &script.deps {
            steps.push((Phase::Deps, deps.as_str()));
        }
        let cut = network && script.offline_build;
        let mut groups = vec![steps];
        if cut {
            groups.push(vec![(Phase::Build, script.build.as_str())]);
        } else {
            groups[0].push((Phase::Build, script.build.as_str()));
        }
        let drivers: Vec<(String, Vec<String>)> = groups
            .iter()
            .map(|group| {
                let nonce = format!("{:016x}", rand::random::<u64>());
                let named: Vec<(&str, &str)> =
                    group.iter().map(|(p, b)| (p.as_str(), *b)).collect();
                let cmd = backend::driver(&nonce, &named);
                for (phase, _) in group {
                    run.commands.push((*phase, cmd.clone()));
                }
                (nonce, cmd)
            })
            .collect();

        let spec = docker::ContainerSpec {
            name: format!("packetary-{}", run.req.id),
            image: target.image.clone(),
            cmd: (!cut).then(|| drivers[0].1.clone()),
            labels: [
                (LABEL_BUILD.to_string(), run.req.id.to_string()),
                (LABEL_TARGET.to_string(), target.name.to_string()),
                (LABEL_OWNER.to_string(), self.owner.clone()),
            ]
            .into_iter()
            .chain((!cut).then(|| (docker::LABEL_NONCE.to_string(), drivers[0].0.clone())))
            .collect(),
            mounts,
            env: script.env.clone(),
            memory_bytes: target.limits.memory_bytes,
            nano_cpus: target.limits.cpus.map(|c| (c * 1e9) as i64),
            pids: Some(target.limits.pids),
            network,
            cap_add: script.cap_add.clone(),
            security_opt: script.security_opt.clone(),
        };
        let _ = root_log
            .write_all(
                format!(
                    "packetary: build {} of {} for {} in image {}\npacketary: limits: memory {}, cpus {}, pids {}, timeout {}\npacketary: repositories: {}\n",
                    run.req.id,
                    run.req.package.relative_spec().display(),
                    target.name,
                    target.image,
                    target.limits.memory_bytes.map(|m| format!("{}MiB", m >> 20)).unwrap_or_else(|| "unlimited".into()),
                    target.limits.cpus.map(|c| c.to_string()).unwrap_or_else(|| "unlimited".into()),
                    target.limits.pids,
                    humantime::format_duration(target.limits.timeout),
                    if container_repos.is_empty() { "none".to_string() } else { container_repos.iter().map(|r| format!("{}={}", r.name, r.url)).collect::<Vec<_>>().join(" ") },
                )
                .as_bytes(),
            )
            .await;
        let id = self.engine.create(&spec).await.map_err(Stop::Infra)?;
        run.container = Some(id.clone());
        let mut logs = Logs {
            root: root_log,
            build: build_log,
        };
        for (i, (group, (nonce, cmd))) in groups.iter().zip(&drivers).enumerate() {
            let stream = if !cut {
                self.engine.start_attached(&id).await
            } else {
                if i == 0 {
                    self.engine.start(&id).await.map_err(Stop::Infra)?;
                } else {
                    self.engine.disconnect_all(&id).await.map_err(Stop::Infra)?;
                }
                self.engine
                    .exec_start(&id, cmd.clone(), script.env.clone())
                    .await
            }
            .map_err(Stop::Infra)?;
            if i == 0 {
                run.end(true);
            }
            self.follow(run, &id, stream, group, nonce, &mut logs)
                .await?;
        }
        check_nevr(run)
    }

    /// Reads a driver's output to its end and turns a non-zero exit into the build's failure.
    async fn follow(
        &self,
        run: &mut Run,
        id: &str,
        stream: docker::ExecStream,
        steps: &[(Phase, &str)],
        nonce: &str,
        logs: &mut Logs,
    ) -> Result<(), Stop> {
        let code = self.run_steps(run, stream, steps, nonce, logs).await?;
        if run.nevr.is_none() {
            let text = tokio::fs::read_to_string(run.staging.join(NEVR_FILE))
                .await
                .unwrap_or_default();
            run.nevr = text.lines().next().and_then(Nevr::parse_query_line);
        }
        if code != 0 {
            return Err(self.classify(run, id, code, &logs_dir_of(run)).await);
        }
        Ok(())
    }

    /// Runs `steps` in one exec, routing output to each phase's log and timing phases by
    /// the markers the driver script prints. Returns the exit code; on failure `run.phase`
    /// is the phase that failed.
    async fn run_steps(
        &self,
        run: &mut Run,
        mut stream: docker::ExecStream,
        steps: &[(Phase, &str)],
        nonce: &str,
        logs: &mut Logs,
    ) -> Result<i64, Stop> {
        let begin = backend::marker(nonce, "begin", "");
        let end = backend::marker(nonce, "end", "");
        let oom = backend::marker(nonce, "oom", "kills ");
        let mut pending: Vec<u8> = Vec::new();
        let mut started_any = false;
        while let Some(chunk) = stream.next_chunk().await {
            pending.extend_from_slice(&chunk.map_err(Stop::Infra)?);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line);
                if let Some(p) = text.trim_end().strip_prefix(&begin) {
                    if let Some(phase) = steps.iter().map(|(p, _)| *p).find(|x| x.as_str() == p) {
                        run.begin(phase);
                        started_any = true;
                        logs.write(
                            phase,
                            format!("packetary: === {phase} phase ===\n").as_bytes(),
                        )
                        .await?;
                    }
                } else if let Some(rest) = text.trim_end().strip_prefix(&end) {
                    if rest.ends_with(" 0") {
                        run.end(true);
                    }
                } else if let Some(n) = text.trim_end().strip_prefix(&oom) {
                    run.oom_kills = n.parse().unwrap_or(0);
                } else {
                    logs.write(run.phase, &line).await?;
                }
            }
        }
        if !pending.is_empty() {
            logs.write(run.phase, &pending).await?;
        }
        logs.flush().await?;
        if !started_any {
            // The driver never ran (no bash in the image?): blame the first phase.
            run.begin(steps[0].0);
        }
        self.engine
            .exit_code(&stream.exit())
            .await
            .map_err(Stop::Infra)
    }

    /// Classifies a non-zero exit: the kernel's OOM killer, build dependencies that could
    /// not be installed, or the package's own failure. The OOM check runs whatever the exit
    /// code, since rpmbuild turns a killed `%build` into a plain 1.
    async fn classify(&self, run: &Run, id: &str, code: i64, logs: &Path) -> Stop {
        if run.oom_kills > 0 || self.engine.oom_killed(id).await {
            return Stop::Failed(
                Failure::OutOfMemory {
                    limit_bytes: run.oom_limit,
                },
                format!(
                    "killed for exceeding the memory limit ({})",
                    run.oom_limit
                        .map(|m| format!("{}MiB", m >> 20))
                        .unwrap_or_else(|| "none set".into())
                ),
            );
        }
        let text = tokio::fs::read_to_string(logs.join(run.phase.log_name()))
            .await
            .unwrap_or_default();
        let phase_text = text
            .rsplit_once(&format!("packetary: === {} phase ===\n", run.phase))
            .map(|(_, t)| t)
            .unwrap_or(&text);
        if run.phase == Phase::Deps {
            let missing = missing_capabilities(phase_text);
            if !missing.is_empty() {
                return Stop::Failed(
                    Failure::MissingDeps {
                        capabilities: missing.clone(),
                    },
                    format!("missing build dependencies: {}", missing.join(", ")),
                );
            }
        }
        let detail = first_error_line(phase_text).unwrap_or_else(|| format!("exit status {code}"));
        Stop::Failed(Failure::Exit { code }, detail)
    }
}

/// The two logs phases write to, as Mock names them.
struct Logs {
    root: tokio::fs::File,
    build: tokio::fs::File,
}

impl Logs {
    async fn write(&mut self, phase: Phase, data: &[u8]) -> Result<(), Stop> {
        let f = if phase.log_name() == "root.log" {
            &mut self.root
        } else {
            &mut self.build
        };
        f.write_all(data)
            .await
            .map_err(|e| infra(format!("write {}: {e}", phase.log_name())))
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        for f in [&mut self.root, &mut self.build] {
            f.flush()
                .await
                .map_err(|e| infra(format!("write logs: {e}")))?;
        }
        Ok(())
    }
}

fn logs_dir_of(run: &Run) -> PathBuf {
    run.staging.join("logs")
}

enum Stop {
    Failed(Failure, String),
    Infra(InfraError),
    Cancelled,
}

fn infra(msg: String) -> Stop {
    Stop::Infra(InfraError(msg))
}

impl Run {
    fn new(req: BuildRequest, events: Option<UnboundedSender<Progress>>) -> Run {
        let staging = staging_dir(&req.out_root, &req.target.name, &req.id);
        Run {
            oom_limit: req.target.limits.memory_bytes,
            req,
            staging,
            container: None,
            phase: Phase::Prepare,
            phase_start: Instant::now(),
            phase_started_at: now(),
            phases: vec![],
            commands: vec![],
            nevr: None,
            events,
            state_log: vec![],
            oom_kills: 0,
        }
    }

    fn begin(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_start = Instant::now();
        self.phase_started_at = now();
        self.state_log
            .extend_from_slice(format!("{} Start: {}\n", self.phase_started_at, phase).as_bytes());
        self.emit(ProgressKind::PhaseStarted(phase));
    }

    fn end(&mut self, ok: bool) {
        let elapsed = self.phase_start.elapsed();
        self.state_log.extend_from_slice(
            format!(
                "{} Finish: {} ({:.3}s, {})\n",
                now(),
                self.phase,
                elapsed.as_secs_f64(),
                if ok { "ok" } else { "failed" }
            )
            .as_bytes(),
        );
        self.phases.push(PhaseTiming {
            phase: self.phase,
            started: self.phase_started_at.clone(),
            seconds: elapsed.as_secs_f64(),
            ok,
        });
        self.emit(ProgressKind::PhaseFinished {
            phase: self.phase,
            elapsed,
            ok,
        });
    }

    fn emit(&self, kind: ProgressKind) {
        if let Some(tx) = &self.events {
            let _ = tx.send(Progress {
                build: self.req.id.clone(),
                package: self
                    .nevr
                    .as_ref()
                    .map(|n| n.name.clone())
                    .unwrap_or_else(|| self.req.package.label()),
                target: self.req.target.name.clone(),
                kind,
            });
        }
    }

    /// `<out>/<target>/<name>-<version>-<release>`, or the spec's name when the SRPM
    /// could not be made.
    fn final_dir(&self) -> PathBuf {
        let leaf = match &self.nevr {
            Some(n) => n.nvr(),
            None => self.req.package.label(),
        };
        self.req
            .out_root
            .join(self.req.target.name.as_str())
            .join(leaf)
    }

    fn collect(&self) -> Result<Outcome, String> {
        let mut srpm = None;
        let mut rpms = vec![];
        let entries = std::fs::read_dir(&self.staging)
            .map_err(|e| format!("read {}: {e}", self.staging.display()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".src.rpm") {
                srpm = Some(name);
            } else if name.ends_with(".rpm") {
                rpms.push(name);
            }
        }
        rpms.sort();
        let srpm = srpm.ok_or("the build produced no SRPM")?;
        if rpms.is_empty() {
            return Err("the build produced no binary RPM".into());
        }
        let dir = self.final_dir();
        Ok(Outcome::Succeeded {
            srpm: dir.join(srpm),
            rpms: rpms.into_iter().map(|r| dir.join(r)).collect(),
        })
    }

    /// Writes state.log and build.json, then moves the staging directory to its final
    /// name, replacing an earlier result of the same NVR.
    async fn finish(mut self, image_id: Option<String>, outcome: Outcome) -> BuildReport {
        let dir = self.final_dir();
        let mut report = BuildReport {
            id: self.req.id.clone(),
            package: self.req.package.label(),
            spec: self.req.package.relative_spec(),
            target: self.req.target.name.clone(),
            backend: self.req.target.backend,
            image: self.req.target.image.clone(),
            image_id,
            nevr: self.nevr.clone(),
            dir: dir.clone(),
            phases: std::mem::take(&mut self.phases),
            commands: std::mem::take(&mut self.commands),
            repos: self
                .req
                .target
                .repos
                .iter()
                .chain(&self.req.extra_repos)
                .map(|r| match &r.location {
                    RepoLocation::Dir(p) => format!("{}=file://{}", r.name, p.display()),
                    RepoLocation::Url(u) => format!("{}={u}", r.name),
                })
                .collect(),
            outcome,
        };
        let logs = self.staging.join("logs");
        let mut moved = std::fs::create_dir_all(&logs).map_err(|e| e.to_string());
        if moved.is_ok() {
            let _ = std::fs::write(logs.join("state.log"), &self.state_log);
            let _ = std::fs::remove_file(self.staging.join(NEVR_FILE));
            let _ = std::fs::remove_dir_all(self.staging.join(".packetary"));
            if let Ok(json) = serde_json::to_vec_pretty(&report) {
                let _ = std::fs::write(logs.join("build.json"), json);
            }
            moved = replace_dir(&self.staging, &dir);
        }
        if let Err(e) = moved {
            report.outcome = Outcome::Error {
                message: format!("could not store the results in {}: {e}", dir.display()),
            };
        }
        if let Some(tx) = &self.events {
            let _ = tx.send(Progress {
                build: report.id.clone(),
                package: report
                    .nevr
                    .as_ref()
                    .map(|n| n.name.clone())
                    .unwrap_or_else(|| report.package.clone()),
                target: report.target.clone(),
                kind: ProgressKind::Finished(Box::new(report.clone())),
            });
        }
        report
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn process_owner() -> String {
    format!("cli/{}/{}", hostname(), std::process::id())
}

fn replace_dir(from: &Path, to: &Path) -> Result<(), String> {
    if to.exists() {
        let old = to.with_file_name(format!(
            ".old-{}-{}",
            to.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            BuildId::generate()
        ));
        std::fs::rename(to, &old).map_err(|e| format!("move aside {}: {e}", to.display()))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(from, to).map_err(|e| format!("rename to {}: {e}", to.display()))
}

/// Adds `rpms` to `dir` (created if needed) and makes it a dnf repository with
/// createrepo_c in `image`, without network: how later builds see earlier ones' packages.
pub async fn local_repo(
    engine: &Engine,
    image: &str,
    dir: &Path,
    rpms: &[PathBuf],
) -> Result<(), InfraError> {
    let io = |e: std::io::Error| InfraError(format!("{}: {e}", dir.display()));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    for rpm in rpms {
        if let Some(name) = rpm.file_name() {
            tokio::fs::copy(rpm, dir.join(name)).await.map_err(io)?;
        }
    }
    let spec = docker::ContainerSpec {
        name: format!("packetary-createrepo-{}", BuildId::generate()),
        image: image.to_string(),
        labels: [(LABEL_BUILD.to_string(), "createrepo".to_string())]
            .into_iter()
            .collect(),
        mounts: vec![(dir.display().to_string(), "/repo".into(), false)],
        network: false,
        pids: Some(256),
        ..Default::default()
    };
    let (code, out) = engine
        .run_once(
            &spec,
            vec!["createrepo_c".into(), "--quiet".into(), "/repo".into()],
        )
        .await?;
    if code != 0 {
        return Err(InfraError(format!(
            "createrepo_c failed in {image} (exit {code}): {}",
            String::from_utf8_lossy(&out).trim()
        )));
    }
    Ok(())
}

/// The binary packages (not the SRPM) in a build's result directory.
pub fn binary_rpms_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.ends_with(".rpm") && !n.ends_with(".src.rpm")
                })
        })
        .collect();
    v.sort();
    v
}

/// Where a running build writes (`logs/` included) before its results move to their
/// `<n-v-r>` directory: what a build page shows live.
pub fn staging_dir(out_root: &Path, target: &TargetName, id: &BuildId) -> PathBuf {
    out_root.join(target.as_str()).join(format!(".build-{id}"))
}

fn timed_out(limit: Duration) -> Stop {
    Stop::Failed(
        Failure::Timeout {
            limit_secs: limit.as_secs(),
        },
        format!(
            "build exceeded its time limit of {}",
            humantime::format_duration(limit)
        ),
    )
}

fn check_nevr(run: &Run) -> Result<(), Stop> {
    if run.nevr.is_none() {
        return Err(Stop::Failed(
            Failure::Exit { code: 0 },
            "the SRPM's header has no usable name/version/release".into(),
        ));
    }
    Ok(())
}

/// A log written from its start again.
async fn new_log(path: &Path) -> Result<tokio::fs::File, Stop> {
    tokio::fs::File::create(path)
        .await
        .map_err(|e| infra(format!("create {}: {e}", path.display())))
}

async fn open_log(path: &Path) -> Result<tokio::fs::File, Stop> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| infra(format!("open {}: {e}", path.display())))
}

fn spec_file_name(spec: &Path) -> String {
    spec.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package.spec".into())
}

fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Capabilities the dependency phase reported as not installable.
pub fn missing_capabilities(log: &str) -> Vec<String> {
    let mut out: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix(MISSING_MARK))
        .map(|s| s.trim().to_string())
        .collect();
    out.dedup();
    out
}

/// The line most worth showing from a failed phase's output.
pub fn first_error_line(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let pick = lines
        .iter()
        .find(|l| {
            let l = l.trim_start();
            l.starts_with("error:") || l.starts_with("Error:") || l.contains(": error:")
        })
        .or_else(|| lines.iter().find(|l| l.contains("Bad exit status")))
        .or_else(|| {
            lines.iter().rev().find(|l| {
                !l.trim().is_empty() && !l.starts_with("packetary:") && !l.starts_with('+')
            })
        })?;
    let s = pick.trim();
    Some(if s.len() > 200 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    })
}

/// The last `n` lines of a log file, for terminals.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines() {
        let log = "+ make\nfoo.c:1: error: expected ';'\nmake: *** [x] Error 1\nerror: Bad exit status from /var/tmp/rpm-tmp (%build)\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("foo.c:1: error: expected ';'")
        );
        let log = "warning: x\nerror: line 7: Unknown tag: Bogus: 1\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: line 7: Unknown tag: Bogus: 1")
        );
        assert_eq!(
            first_error_line("+ true\nsomething broke\n").as_deref(),
            Some("something broke")
        );
        assert_eq!(first_error_line(""), None);
    }

    #[test]
    fn missing_from_log() {
        let log = format!("x\n{MISSING_MARK}foo-devel >= 2\n{MISSING_MARK}bar\n");
        assert_eq!(missing_capabilities(&log), ["foo-devel >= 2", "bar"]);
    }
}
