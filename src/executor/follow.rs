//! Following a driver: its output routed to the phase logs by the markers it prints, its
//! exit code classified, and once it has ended the results taken out of the container.

use crate::model::{Failure, Nevr, Phase};

use super::backend;
use super::classify::{exit_status, failure_summary, missing_capabilities};
use super::local::Executor;
use super::results::{self, FetchError};
use super::run::{infra, Logs, Run, Stop};
use crate::docker::ExecStream;

/// Longest line kept whole to look for the driver's markers; past it a line is the
/// package's output and goes to the log in pieces.
const LONG_LINE: usize = 64 << 10;

impl Executor {
    /// Reads the driver's output to its end and turns a non-zero exit into the build's
    /// failure. Then takes the results out of the container (the collect phase, on
    /// success): what a failed build left still names its result directory.
    pub(super) async fn follow(
        &self,
        run: &mut Run,
        id: &str,
        stream: ExecStream,
        steps: &[(Phase, &str)],
        nonce: &str,
        logs: &mut Logs,
    ) -> Result<(), Stop> {
        let code = self.run_steps(run, id, stream, steps, nonce, logs).await?;
        tracing::debug!(build = %run.req.id, code, "driver ended");
        if code != 0 {
            let stop = self.classify(run, id, code).await;
            // The phase's failure is the build's; refusals are noted by `take_results`.
            if let Err(Stop::Infra(e)) = self.take_results(run, id, logs).await {
                logs.note(&format!("packetary: results not taken: {e}"))
                    .await;
            }
            let _ = logs.flush().await;
            return Err(stop);
        }
        run.begin(Phase::Collect);
        let taken = self.take_results(run, id, logs).await;
        logs.flush().await?;
        taken?;
        run.check_nevr()
    }

    /// Downloads the container's `/out` into the staging directory, checked entry by entry
    /// (see [`results`]), notes in `root.log` what was not taken, and fails the build when
    /// something named like a result was not a regular file.
    async fn take_results(&self, run: &mut Run, id: &str, logs: &mut Logs) -> Result<(), Stop> {
        let t0 = std::time::Instant::now();
        let taken = results::fetch(&self.engine, id, run.staging.clone(), run.allowance).await;
        tracing::debug!(build = %run.req.id, elapsed = ?t0.elapsed(), "results downloaded");
        take(run, taken, logs).await
    }

    /// Runs `steps` in one exec, routing output to each phase's log and timing phases by
    /// the markers the driver script prints. Returns the exit code; on failure `run.phase`
    /// is the phase that failed.
    #[allow(clippy::too_many_arguments)]
    async fn run_steps(
        &self,
        run: &mut Run,
        id: &str,
        mut stream: ExecStream,
        steps: &[(Phase, &str)],
        nonce: &str,
        logs: &mut Logs,
    ) -> Result<i64, Stop> {
        let net = HostNet {
            engine: &self.engine,
            container: id,
        };
        match read_output(run, &mut stream, steps, nonce, logs, Some(net), None).await? {
            Some(code) => Ok(code),
            None => self
                .engine
                .exit_code(&stream.exit())
                .await
                .map_err(Stop::Infra),
        }
    }

    /// Classifies a non-zero exit: the kernel's OOM killer, build dependencies that could
    /// not be installed, or the package's own failure. The OOM check runs whatever the exit
    /// code, since rpmbuild turns a killed `%build` into a plain 1. The text read is the
    /// service's own log of the phase, in a directory no container sees.
    async fn classify(&self, run: &Run, id: &str, code: i64) -> Stop {
        let killed = run.oom_kills == 0 && self.engine.oom_killed(id).await;
        classify_exit(run, code, killed).await
    }
}

/// Classifies a non-zero exit of a driver (see `Executor::classify`); `oom_killed`: the
/// engine saw its main process killed for memory.
pub(super) async fn classify_exit(run: &Run, code: i64, oom_killed: bool) -> Stop {
    if run.oom_kills > 0 || oom_killed {
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
    let text = tokio::fs::read_to_string(run.logs_dir().join(run.phase.log_name()))
        .await
        .unwrap_or_default();
    let phase_text = text
        .rsplit_once(&format!("packetary: === {} phase ===\n", run.phase))
        .map(|(_, t)| t)
        .unwrap_or(&text);
    match backend::classify(run.req.target.backend, code, phase_text) {
        Some(backend::Verdict::Infra(m)) => return infra(m),
        Some(backend::Verdict::MissingDeps(missing)) => {
            return Stop::Failed(
                Failure::MissingDeps {
                    capabilities: missing.clone(),
                },
                format!("missing build dependencies: {}", missing.join(", ")),
            )
        }
        None => {}
    }
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
    let detail = failure_summary(phase_text, run.req.target.name.as_str())
        .unwrap_or_else(|| exit_status(code));
    Stop::Failed(Failure::Exit { code }, detail)
}

/// The network of a container on this executor's own daemon, which the driver asks for
/// and gives back with marker lines.
#[derive(Clone, Copy)]
pub(super) struct HostNet<'a> {
    pub engine: &'a crate::docker::Engine,
    pub container: &'a str,
}

/// Reads a driver's output, routing it to each phase's log and timing phases by the
/// markers it prints, until the stream ends or the driver's runner prints its exit marker
/// (`exit_marker`, then a space and the code: a Swarm job's agent, whose output stream
/// never ends by itself; its marker holds a secret of its own, as spec code can print
/// anything and read the driver's nonce). Returns the exit code that marker gave; on failure `run.phase` is the phase that failed. With `net`, the
/// driver's network requests go to the daemon; without (a job whose agent gates the network
/// itself), such lines are only the package's output.
pub(super) async fn read_output(
    run: &mut Run,
    stream: &mut ExecStream,
    steps: &[(Phase, &str)],
    nonce: &str,
    logs: &mut Logs,
    net: Option<HostNet<'_>>,
    exit_marker: Option<&str>,
) -> Result<Option<i64>, Stop> {
    let begin = backend::marker(nonce, "begin", "");
    let end = backend::marker(nonce, "end", "");
    let oom = backend::marker(nonce, "oom", "kills ");
    let mut exit_code = None;
    let net_on = run
        .net_token
        .as_deref()
        .filter(|_| net.is_some())
        .map(backend::net_on_marker);
    let mut pending: Vec<u8> = Vec::new();
    // Bytes of `pending` already searched for a newline, and whether `pending` starts in
    // the middle of a line whose head went to the log as data: a package printing one
    // endless line must cost neither quadratic scanning nor unbounded memory.
    let mut scanned = 0;
    let mut continuing = false;
    let mut started_any = false;
    let mut net_given = false;
    'reading: while let Some(chunk) = stream.next_chunk().await {
        pending.extend_from_slice(&chunk.map_err(Stop::Infra)?);
        let mut pieces: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut start = 0;
        while let Some(off) = pending[scanned..].iter().position(|b| *b == b'\n') {
            let nl = scanned + off;
            pieces.push((continuing, pending[start..=nl].to_vec()));
            continuing = false;
            start = nl + 1;
            scanned = start;
        }
        // Markers are short lines: a longer one is the package's output.
        if pending.len() - start > LONG_LINE {
            pieces.push((true, pending[start..].to_vec()));
            start = pending.len();
            continuing = true;
        }
        pending.drain(..start);
        scanned = pending.len();
        for (data_only, line) in pieces {
            if data_only {
                logs.write(run.phase, &line).await?;
                continue;
            }
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
                // Whatever the phase's script did, no network outlives the dependency
                // phase (a process it left behind may have asked for it).
                if let (Some(n), true) = (net, run.phase == Phase::Deps && net_given) {
                    n.engine
                        .disconnect_all(n.container)
                        .await
                        .map_err(Stop::Infra)?;
                    net_given = false;
                }
            } else if let Some(code) = exit_marker.and_then(|m| text.trim_end().strip_prefix(m)) {
                exit_code = Some(code.trim().parse::<i64>().unwrap_or(1));
                break 'reading;
            } else if let Some(n) = text.trim_end().strip_prefix(&oom) {
                run.oom_kills = n.parse().unwrap_or(0);
            } else if net_on.as_deref() == Some(text.trim_end())
                && run.net_token.is_some()
                && run.phase == Phase::Deps
            {
                // Given once, and in the dependency phase only: a process that phase left
                // behind (a scriptlet's, as root: it can read the token from
                // `/proc/1/environ`) cannot get it for the build.
                run.net_token = None;
                if !run.net_capable {
                    return Err(Stop::NeedsNetwork);
                }
                net_given = true;
                logs.note("packetary: network given to the dependency phase")
                    .await;
                if let Some(n) = net {
                    n.engine
                        .connect_bridge(n.container)
                        .await
                        .map_err(Stop::Infra)?;
                }
            } else if let (Some(n), backend::NET_OFF_MARKER) = (net, text.trim_end()) {
                n.engine
                    .disconnect_all(n.container)
                    .await
                    .map_err(Stop::Infra)?;
                logs.note("packetary: network taken away").await;
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
    Ok(exit_code)
}

/// Takes what came out of a build's `/out` (downloaded, or uploaded by a Swarm job) as its
/// results: notes in `root.log` what was not taken, and fails the build when something
/// named like a result was not a regular file.
pub(super) async fn take(
    run: &mut Run,
    taken: Result<results::Taken, FetchError>,
    logs: &mut Logs,
) -> Result<(), Stop> {
    let taken = match taken {
        Ok(t) => t,
        Err(FetchError::Infra(m)) => return Err(infra(m)),
        Err(FetchError::TooBig(m)) => {
            logs.note(&format!("packetary: results refused: {m}")).await;
            return Err(Stop::Failed(Failure::Exit { code: 0 }, m));
        }
    };
    if run.nevr.is_none() {
        run.nevr = taken
            .nevr
            .as_deref()
            .and_then(|t| t.lines().next())
            .and_then(Nevr::parse_query_line);
    }
    for what in &taken.ignored {
        logs.note(&format!("packetary: not taken from the build: {what}"))
            .await;
    }
    if taken.more_ignored > 0 {
        logs.note(&format!(
            "packetary: not taken from the build: {} more",
            taken.more_ignored
        ))
        .await;
    }
    run.results = taken.files;
    if !taken.refused.is_empty() {
        let list = taken.refused.join(", ");
        logs.note(&format!("packetary: results refused: {list}"))
            .await;
        return Err(Stop::Failed(
            Failure::Exit { code: 0 },
            format!("results must be regular files; the build left {list}"),
        ));
    }
    Ok(())
}
