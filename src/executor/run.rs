//! The state of one build while it runs: its phases and their timings, its logs on the
//! service host, and how it finishes (report, `state.log`, `build.json`, the results
//! moved to their `<n-v-r>` directory).
//!
//! Every file here is written by the service in the staging directory, which no container
//! sees: the build's output reaches the logs through the attach stream, its results
//! through [`super::results`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

use super::{BuildReport, BuildRequest, PhaseTiming, Progress, ProgressKind};
use crate::docker::InfraError;
use crate::format::Format;
use crate::model::{BuildId, Failure, Nevr, Outcome, Phase, TargetName};

/// State a build keeps while it runs, so that a timeout or cancellation can still tell
/// which phase it stopped in and clean up.
pub(crate) struct Run {
    pub req: BuildRequest,
    pub staging: PathBuf,
    pub container: Option<String>,
    pub phase: Phase,
    phase_start: Instant,
    phase_started_at: String,
    phases: Vec<PhaseTiming>,
    /// The driver command, once (every phase runs in it).
    pub command: Vec<String>,
    pub provenance: Option<super::provenance::Provenance>,
    pub nevr: Option<Nevr>,
    events: Option<UnboundedSender<Progress>>,
    state_log: Vec<u8>,
    pub oom_limit: Option<i64>,
    /// OOM kills the driver counted in the container's cgroup when a phase failed.
    pub oom_kills: u64,
    /// Result files taken out of the container into the staging directory, by name.
    pub results: Vec<String>,
    /// The secret with which the driver asks for the network for its dependency phase
    /// (see `backend::NET_TOKEN_ENV`); taken once the network has been given, so that
    /// nothing left running asks again.
    pub net_token: Option<String>,
    /// What the build may still write to this host (its change's disk quota); results
    /// past it are not taken.
    pub allowance: Option<super::results::DiskAllowance>,
    /// Whether the container can be given the network (it was made with a network
    /// sandbox); a request for it from one that cannot is [`Stop::NeedsNetwork`].
    pub net_capable: bool,
}

/// Why a build stopped before its end.
pub(crate) enum Stop {
    Failed(Failure, String),
    Infra(InfraError),
    Cancelled,
    /// The dependency phase asked for the network in a container made without a network
    /// sandbox: the build starts again in one with it.
    NeedsNetwork,
    /// A Swarm job's task was lost with its node (the node went down, Swarm failed or
    /// rejected the task before its agent reported): the executor tries another node.
    NodeFault {
        node: Option<String>,
        message: String,
    },
}

pub(crate) fn infra(msg: String) -> Stop {
    Stop::Infra(InfraError(msg))
}

pub(crate) fn timed_out(limit: Duration) -> Stop {
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

/// Where a running build writes (`logs/` included) before its results move to their
/// `<n-v-r>` directory: what a build page shows live.
pub fn staging_dir(out_root: &Path, target: &TargetName, id: &BuildId) -> PathBuf {
    out_root.join(target.as_str()).join(format!(".build-{id}"))
}

/// The logs of a build that may be read while it runs: the phase logs, which only the
/// executor writes (from the build's output stream).
pub const LIVE_LOGS: [&str; 2] = ["root.log", "build.log"];

/// A part of a running build's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLog {
    pub bytes: Vec<u8>,
    /// Where `bytes` start in the log.
    pub offset: u64,
    /// The log's whole length when it was read.
    pub size: u64,
}

/// Reads at most `limit` bytes of the live log `name` of build `id` from its staging
/// directory under `out_root`: from `from`, or the last `limit` bytes when `from` is
/// `None` (what a page of a build under way shows). `None`: not a live log's name, or not
/// written (yet, or any more: the build finished and its logs moved with its results).
pub async fn read_live_log(
    out_root: &Path,
    target: &TargetName,
    id: &BuildId,
    name: &str,
    from: Option<u64>,
    limit: usize,
) -> std::io::Result<Option<LiveLog>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if !LIVE_LOGS.contains(&name) {
        return Ok(None);
    }
    let path = staging_dir(out_root, target, id).join("logs").join(name);
    // The executor's own regular file; anything else is not a log.
    match tokio::fs::symlink_metadata(&path).await {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = f.metadata().await?.len();
    let limit = limit as u64;
    let offset = from.unwrap_or_else(|| size.saturating_sub(limit)).min(size);
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut bytes = Vec::new();
    f.take(limit.min(size - offset))
        .read_to_end(&mut bytes)
        .await?;
    Ok(Some(LiveLog {
        bytes,
        offset,
        size,
    }))
}

/// The two logs phases write to, as Mock names them.
pub(crate) struct Logs {
    root: tokio::fs::File,
    build: tokio::fs::File,
    /// Bytes written to (root, build) by this process.
    written: [u64; 2],
    /// The target's `log_size`: what comes after is dropped, with a line saying so.
    max: u64,
}

impl Logs {
    /// The logs in `dir`, appended to, or written from their start again when `fresh`
    /// (a reattached build replays its output from the start).
    pub async fn open(dir: &Path, fresh: bool, max: u64) -> Result<Logs, Stop> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| infra(format!("create {}: {e}", dir.display())))?;
        let open = |name: &str| {
            let path = dir.join(name);
            async move {
                let mut o = tokio::fs::OpenOptions::new();
                o.create(true);
                if fresh {
                    o.write(true).truncate(true);
                } else {
                    o.append(true);
                }
                o.open(&path)
                    .await
                    .map_err(|e| infra(format!("open {}: {e}", path.display())))
            }
        };
        Ok(Logs {
            root: open("root.log").await?,
            build: open("build.log").await?,
            written: [0, 0],
            max,
        })
    }

    /// A line (or a piece of a very long one) of a phase's output, with the credentials of
    /// any URL in it redacted: dnf and Mock print the repositories they fail to reach.
    pub async fn write(&mut self, phase: Phase, data: &[u8]) -> Result<(), Stop> {
        let data = &*crate::model::redact_bytes(data);
        let (f, written) = if phase.log_name() == "root.log" {
            (&mut self.root, &mut self.written[0])
        } else {
            (&mut self.build, &mut self.written[1])
        };
        let room = self.max.saturating_sub(*written);
        if room == 0 {
            return Ok(());
        }
        let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        *written += n as u64;
        let fail = |e: std::io::Error| infra(format!("write {}: {e}", phase.log_name()));
        f.write_all(&data[..n]).await.map_err(fail)?;
        if *written >= self.max {
            let note = format!(
                "\n[packetary: log truncated at {} KiB (the target's log_size); the build goes on]\n",
                self.max >> 10
            );
            f.write_all(note.as_bytes()).await.map_err(fail)?;
        }
        Ok(())
    }

    /// A line of the service's own in `root.log`; losing it fails nothing.
    pub async fn note(&mut self, line: &str) {
        let _ = self.root.write_all(format!("{line}\n").as_bytes()).await;
    }

    pub async fn flush(&mut self) -> Result<(), Stop> {
        for f in [&mut self.root, &mut self.build] {
            f.flush()
                .await
                .map_err(|e| infra(format!("write logs: {e}")))?;
        }
        Ok(())
    }
}

impl Run {
    /// The run of `req`, its record taken from the request (see [`BuildRequest::inputs`]).
    pub fn new(mut req: BuildRequest, events: Option<UnboundedSender<Progress>>) -> Run {
        let provenance = req.inputs.take();
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
            command: vec![],
            provenance,
            nevr: None,
            events,
            state_log: vec![],
            oom_kills: 0,
            results: vec![],
            net_token: None,
            allowance: None,
            net_capable: false,
        }
    }

    /// The lines a build's `root.log` starts with: what is built where (`placed`: "in image
    /// X", "as a Swarm job, image Y"), its limits and its repositories (credentials
    /// redacted).
    pub fn header<'a>(
        &self,
        placed: &str,
        repos: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> String {
        let (target, limits) = (&self.req.target, &self.req.target.limits);
        let repos: Vec<String> = repos
            .into_iter()
            .map(|(name, url)| format!("{name}={}", crate::model::redact(url)))
            .collect();
        format!(
            "packetary: build {} of {} for {} {placed}\npacketary: limits: memory {}, cpus {}, pids {}, timeout {}\npacketary: repositories: {}",
            self.req.id,
            self.req.package.relative_spec().display(),
            target.name,
            limits.memory_bytes.map(|m| format!("{}MiB", m >> 20)).unwrap_or_else(|| "unlimited".into()),
            limits.cpus.map(|c| c.to_string()).unwrap_or_else(|| "unlimited".into()),
            limits.pids,
            humantime::format_duration(limits.timeout),
            if repos.is_empty() { "none".to_string() } else { repos.join(" ") },
        )
    }

    /// Back to the prepare phase, for a new container: what the phases of the last one
    /// timed is forgotten (its logs are written again), `state.log` keeps it.
    pub fn restart(&mut self) {
        self.phases.clear();
        self.nevr = None;
        self.results.clear();
        self.oom_kills = 0;
        self.net_token = None;
        self.begin(Phase::Prepare);
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.staging.join("logs")
    }

    pub fn begin(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_start = Instant::now();
        self.phase_started_at = now();
        self.state_log
            .extend_from_slice(format!("{} Start: {}\n", self.phase_started_at, phase).as_bytes());
        self.emit(ProgressKind::PhaseStarted(phase));
    }

    pub fn end(&mut self, ok: bool) {
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

    /// The build's container is `id` from now on (removed with the build, and told to the
    /// queue, which keeps it in the store).
    pub(super) fn set_container(&mut self, id: &str) {
        self.container = Some(id.to_string());
        self.emit(ProgressKind::Container(id.to_string()));
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

    /// Fails the build when the SRPM's NEVR could not be read.
    pub fn check_nevr(&self) -> Result<(), Stop> {
        if self.nevr.is_none() {
            return Err(Stop::Failed(
                Failure::Exit { code: 0 },
                "the SRPM's header has no usable name/version/release".into(),
            ));
        }
        Ok(())
    }

    /// `<out>/<target>/<name>-<version>-<release>`, or the spec's name when the SRPM
    /// could not be made.
    pub fn final_dir(&self) -> PathBuf {
        let leaf = match &self.nevr {
            Some(n) => n.nvr(),
            None => self.req.package.label(),
        };
        self.req
            .out_root
            .join(self.req.target.name.as_str())
            .join(leaf)
    }

    /// The outcome of a build whose phases all passed, from the results taken out of its
    /// container.
    pub fn collect(&self) -> Result<Outcome, CollectError> {
        let format = Format::of(self.req.target.backend);
        let mut source = None;
        let mut binaries = vec![];
        for name in &self.results {
            if format.is_source(name) {
                source = Some(name.clone());
            } else if format.is_binary(name) {
                binaries.push(name.clone());
            }
        }
        binaries.sort();
        let source = source.ok_or(CollectError::NoSource)?;
        if binaries.is_empty() {
            return Err(CollectError::NoBinary);
        }
        let dir = self.final_dir();
        Ok(Outcome::Succeeded {
            source: dir.join(source),
            binaries: binaries.into_iter().map(|r| dir.join(r)).collect(),
        })
    }

    /// The build's outcome from how its phases ended: collected on success (moving to the
    /// collect phase if it was not there yet), else the stop's failure, in the phase it
    /// stopped in.
    pub fn outcome(&mut self, result: Result<(), Stop>) -> Outcome {
        let run = self;
        match result {
            Ok(()) => {
                if run.phase != Phase::Collect {
                    run.begin(Phase::Collect);
                }
                match run.collect() {
                    Ok(o) => {
                        run.end(true);
                        o
                    }
                    Err(e) => {
                        run.end(false);
                        Outcome::Error {
                            message: e.to_string(),
                        }
                    }
                }
            }
            Err(stop) => {
                let phase = run.phase;
                run.end(false);
                match stop {
                    Stop::Cancelled => Outcome::Cancelled,
                    Stop::NeedsNetwork => Outcome::Error {
                        message: "the dependency phase asked for the network, which its container could not have".into(),
                    },
                    Stop::Infra(e) => Outcome::Error { message: e.0 },
                    Stop::NodeFault { message, .. } => Outcome::Error { message },
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
        }
    }

    /// Writes state.log and build.json, then moves the staging directory to its final
    /// name, replacing an earlier result of the same NVR.
    pub async fn finish(mut self, image_id: Option<String>, outcome: Outcome) -> BuildReport {
        let dir = self.final_dir();
        let mut report = BuildReport {
            format: super::provenance::BUILD_JSON_FORMAT,
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
            command: std::mem::take(&mut self.command),
            provenance: self.provenance.take(),
            reused_from: None,
            repos: super::build_repos(&self.req.target, &self.req.extra_repos)
                .iter()
                .map(|r| format!("{}={}", r.name, crate::model::redact(&r.url)))
                .collect(),
            outcome,
        };
        let logs = self.logs_dir();
        let mut moved = std::fs::create_dir_all(&logs).map_err(ResultsError::Logs);
        if moved.is_ok() {
            let _ = std::fs::write(logs.join("state.log"), &self.state_log);
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

/// A build whose phases passed but whose results are not what a build makes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error("the build produced no source package")]
    NoSource,
    #[error("the build produced no binary package")]
    NoBinary,
}

/// Why the results could not be moved to their `<n-v-r>` directory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResultsError {
    #[error("{0}")]
    Logs(std::io::Error),
    #[error("move aside {}: {source}", path.display())]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rename to {}: {source}", path.display())]
    Rename {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn replace_dir(from: &Path, to: &Path) -> Result<(), ResultsError> {
    if to.exists() {
        let old = to.with_file_name(format!(
            ".old-{}-{}",
            to.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            BuildId::generate()
        ));
        std::fs::rename(to, &old).map_err(|source| ResultsError::MoveAside {
            path: to.to_path_buf(),
            source,
        })?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(from, to).map_err(|source| ResultsError::Rename {
        path: to.to_path_buf(),
        source,
    })
}

pub(crate) fn spec_file_name(spec: &Path) -> String {
    spec.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package.spec".into())
}

fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What every executor's `run_within` does around its own phases: the run of `req` begun
/// in prepare, its inputs read by `inputs` when the request came without them, a copy of
/// the package kept beside the results while `phases` runs, all within the target's time
/// limit and until `cancel`. Returns the run (its container or job still to remove) and how
/// its phases ended.
pub(super) async fn drive(
    req: BuildRequest,
    allowance: Option<super::results::DiskAllowance>,
    events: Option<UnboundedSender<Progress>>,
    cancel: tokio_util::sync::CancellationToken,
    inputs: impl AsyncFnOnce(
        &BuildRequest,
    )
        -> Result<super::provenance::Provenance, super::provenance::InputsError>,
    phases: impl AsyncFnOnce(&mut Run) -> Result<(), Stop>,
) -> (Run, Result<(), Stop>) {
    let mut run = Run::new(req, events);
    run.allowance = allowance;
    let timeout = run.req.target.limits.timeout;
    run.begin(Phase::Prepare);
    let result = tokio::select! {
        r = async {
            if run.provenance.is_none() {
                let read = inputs(&run.req).await.map_err(|e| infra(e.to_string()))?;
                run.provenance = Some(read);
            }
            tracing::debug!(build = %run.req.id, "inputs read");
            // The copy is made while the container (or job) is prepared.
            let keeping = keep_inputs(&run);
            tokio::try_join!(keeping, phases(&mut run)).map(|_| ())
        } => r,
        () = tokio::time::sleep(timeout) => Err(timed_out(timeout)),
        () = cancel.cancelled() => Err(Stop::Cancelled),
    };
    (run, result)
}

/// Keeps a copy of the package's files beside the results, for `packetary rebuild DIR`
/// (what [`super::provenance::tree_digest`] covered).
pub(super) fn keep_inputs(run: &Run) -> impl std::future::Future<Output = Result<(), Stop>> {
    let (pkg, dest) = (
        run.req.package.clone(),
        run.staging.join(super::provenance::INPUTS_DIR),
    );
    keep_inputs_in(pkg, dest)
}

async fn keep_inputs_in(
    pkg: crate::model::PackageSource,
    dest: std::path::PathBuf,
) -> Result<(), Stop> {
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&dest);
        super::provenance::keep_inputs(&pkg, &dest)
    })
    .await
    .map_err(|e| infra(e.to_string()))?
    .map_err(|e| infra(format!("cannot keep a copy of the package's files: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live log is read by allow-listed name only, in a bounded window, never through
    /// a link.
    #[tokio::test]
    async fn live_logs_are_read_by_name_and_bounded() {
        let d = tempfile::tempdir().expect("tmp");
        let (t, id) = (
            TargetName::parse("t").expect("t"),
            BuildId::parse("b1").expect("id"),
        );
        let logs = staging_dir(d.path(), &t, &id).join("logs");
        std::fs::create_dir_all(&logs).expect("mkdir");
        std::fs::write(logs.join("build.log"), "0123456789").expect("write");
        std::fs::write(logs.join("build.json"), "{}").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", logs.join("root.log")).expect("link");
        let read = |name: &'static str, from, limit| {
            let (root, t, id) = (d.path().to_path_buf(), t.clone(), id.clone());
            async move { read_live_log(&root, &t, &id, name, from, limit).await }
        };
        let all = read("build.log", Some(0), 100).await.expect("read");
        assert_eq!(all.map(|l| l.bytes), Some(b"0123456789".to_vec()));
        let tail = read("build.log", None, 4)
            .await
            .expect("read")
            .expect("log");
        assert_eq!(
            (tail.bytes.as_slice(), tail.offset, tail.size),
            (&b"6789"[..], 6, 10)
        );
        let mid = read("build.log", Some(2), 3)
            .await
            .expect("read")
            .expect("log");
        assert_eq!(mid.bytes, b"234");
        let past = read("build.log", Some(50), 3)
            .await
            .expect("read")
            .expect("log");
        assert!(past.bytes.is_empty());
        assert_eq!(read("build.json", Some(0), 10).await.expect("read"), None);
        assert_eq!(read("root.log", Some(0), 10).await.expect("read"), None);
        assert_eq!(read("../x", Some(0), 10).await.expect("read"), None);
    }
}
