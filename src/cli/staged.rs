//! What `packetary build DIR` and `packetary build --git` share once they have a plan: its
//! builds, in its stages, through the service's own queue over a temporary store
//! ([`packetary::queue::local`]), so that later stages wait for the earlier ones and
//! install from their RPMs (the `change` repository); then the summary and `--publish`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use packetary::config::{Config, Release, Repo};
use packetary::docker::Engine;
use packetary::executor::{BuildReport, Executor};
use packetary::model::{BuildState, Outcome, TargetName, Trigger};
use packetary::plan::Plan;
use packetary::queue::local::{self, LocalRun};
use packetary::queue::planner::package_label;
use packetary::queue::{DockerIndexing, DockerRunner, PlannedBuild, SourceProvider};
use packetary::store::BuildRow;

use super::{
    ensure_images, infra, progress_line, spawn_interrupt_watch, spawn_progress_printer, CliError,
    EXIT_CANCELLED, EXIT_FAILED, EXIT_INFRA,
};

/// A plan's builds and where they run.
pub struct Staged {
    /// The temporary store, opened at the command's start.
    pub store: local::OpeningStore,
    pub trigger: Trigger,
    pub builds: Vec<PlannedBuild>,
    /// Package → the packages of the plan it builds against (by name), for the stages
    /// shown and for the summary of a build whose dependency failed.
    pub after: BTreeMap<String, Vec<String>>,
    pub sources: Arc<dyn SourceProvider>,
    pub engine: Engine,
    /// `--repo`: added to every target's repositories.
    pub extra_repos: Vec<Repo>,
    pub parallel: usize,
    pub out: PathBuf,
    /// `--publish` (checked) and `--data-dir`.
    pub publish: Option<(Release, Option<PathBuf>)>,
    /// `--json`: the summary as one JSON document on stdout.
    pub json: bool,
}

/// Package → the packages of `plan` it builds against, by the names builds carry.
pub fn after_of(plan: &Plan) -> BTreeMap<String, Vec<String>> {
    let name: BTreeMap<_, _> = plan
        .packages
        .iter()
        .map(|p| (&p.id, package_label(p)))
        .collect();
    plan.packages
        .iter()
        .map(|p| {
            let deps = p
                .depends_on
                .iter()
                .filter_map(|d| name.get(d).cloned())
                .collect();
            (package_label(p), deps)
        })
        .collect()
}

/// Runs the builds stage by stage and returns the exit status they add up to.
pub async fn run(config: &Config, s: Staged) -> Result<u8, CliError> {
    let mut targets = config.targets.clone();
    for t in targets.values_mut() {
        t.repos.extend(s.extra_repos.iter().cloned());
    }
    // Both ask Docker, independently: at once.
    let executor = Executor::new(s.engine.clone());
    let builds_on = packetary::executor::executor_from_config(&config.executor, s.engine, "cli")
        .await
        .map_err(infra)?;
    // A Swarm's jobs fetch their inputs and upload their results here while the run lasts.
    let serving = match builds_on.callback_routes() {
        Some(routes) => Some(serve_callbacks(config, routes).await?),
        None => None,
    };
    let (ensured, reaped) = tokio::join!(
        ensure_images(
            executor.engine(),
            config,
            s.builds
                .iter()
                .filter_map(|b| config.targets.get(&b.target)),
        ),
        builds_on.reap_orphans()
    );
    ensured?;
    std::fs::create_dir_all(&s.out)
        .with_context(|| format!("cannot create the output directory {}", s.out.display()))
        .map_err(infra)?;
    let stages = s.builds.iter().map(|b| b.stage + 1).max().unwrap_or(0);
    for line in stage_lines(&s.builds, &s.after) {
        progress_line(&line);
    }
    progress_line(&format!(
        "building {} build(s) in {stages} stage(s), {} at a time, into {}",
        s.builds.len(),
        s.parallel,
        s.out.display()
    ));
    match reaped {
        Ok(0) => {}
        Ok(n) => progress_line(&format!("removed {n} build(s) left by killed runs")),
        Err(e) => tracing::warn!("could not look for leftover containers: {e}"),
    }
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (tx, printer) = spawn_progress_printer(started);
    let ctrl_c = spawn_interrupt_watch(cancel.clone());
    let ended = local::run(LocalRun {
        store: s.store,
        trigger: s.trigger,
        builds: s.builds,
        targets,
        parallel: s.parallel,
        indexing: Arc::new(DockerIndexing {
            engine: executor.engine().clone(),
            data_dir: s.out.clone(),
        }),
        out: s.out,
        sources: s.sources,
        runner: Arc::new(DockerRunner::new(builds_on)),
        progress: tx,
        cancel,
    })
    .await
    .map_err(infra)?;
    if let Some(server) = serving {
        server.abort();
    }
    // The queue's last handles on the progress channel go with its stopped tasks.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), printer).await;
    ctrl_c.abort();
    let mut code = summarize(&ended.reports, &ended.not_run, &s.after, started, s.json);
    if let Some((release, data_dir)) = &s.publish {
        let published = super::publish::publish_reports(
            config,
            release,
            data_dir.as_deref(),
            &ended.reports,
            s.json,
        )
        .await?;
        code = code.max(published);
    }
    Ok(code)
}

/// One line per stage: its packages, each with the packages it builds against.
fn stage_lines(builds: &[PlannedBuild], after: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut by_stage: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for b in builds {
        by_stage.entry(b.stage).or_default().insert(&b.package);
    }
    let stages = by_stage.keys().last().map_or(0, |s| s + 1);
    by_stage
        .iter()
        .map(|(stage, packages)| {
            let names: Vec<String> = packages
                .iter()
                .map(|p| match after.get(*p).filter(|d| !d.is_empty()) {
                    Some(d) => format!("{p} (after {})", d.join(", ")),
                    None => p.to_string(),
                })
                .collect();
            format!("stage {} of {stages}: {}", stage + 1, names.join(", "))
        })
        .collect()
}

/// How one build ended, as the summary says it.
#[derive(Debug)]
struct Ended {
    target: TargetName,
    package: String,
    /// Its NEVR when known, else its package.
    name: String,
    how: How,
    /// How long it ran (its phases), when it ran.
    duration: Option<Duration>,
    /// Its results directory (with `logs/`), when the runner made one.
    dir: Option<PathBuf>,
    /// The log that says why it failed, else its build log when there is one.
    log: Option<PathBuf>,
}

#[derive(Debug)]
enum How {
    Ok {
        rpms: usize,
    },
    Failed(String),
    Error(String),
    /// Why, when it never started.
    Cancelled(&'static str),
}

/// Every build: those the runner ran, then those that never reached it.
fn ended(reports: &[BuildReport], not_run: &[BuildRow]) -> Vec<Ended> {
    let ran = reports.iter().map(|r| {
        let build_log = r.dir.join("logs").join("build.log");
        Ended {
            target: r.target.clone(),
            package: r.package.clone(),
            name: r
                .nevr
                .as_ref()
                .map(|n| n.nvr())
                .unwrap_or_else(|| r.package.clone()),
            how: match &r.outcome {
                Outcome::Succeeded { binaries, .. } => How::Ok {
                    rpms: binaries.len(),
                },
                Outcome::Failed { message, .. } => How::Failed(message.clone()),
                Outcome::Error { message } => How::Error(message.clone()),
                Outcome::Cancelled => How::Cancelled(""),
            },
            duration: (!r.phases.is_empty()).then(|| {
                Duration::from_secs_f64(r.phases.iter().map(|p| p.seconds.max(0.0)).sum())
            }),
            dir: r.dir.is_dir().then(|| r.dir.clone()),
            log: match &r.outcome {
                Outcome::Failed { log, .. } => Some(log.clone()),
                _ => build_log.is_file().then_some(build_log),
            },
        }
    });
    let left = not_run.iter().map(|b| {
        let message = b.message.clone().unwrap_or_default();
        Ended {
            target: b.target.clone(),
            package: b.package.clone(),
            name: b.package.clone(),
            how: match b.state {
                BuildState::Failed => How::Failed(message),
                BuildState::Error => How::Error(message),
                BuildState::Queued => How::Cancelled("never started"),
                _ => How::Cancelled(""),
            },
            duration: match (b.started_at, b.finished_at) {
                (Some(s), Some(f)) => u64::try_from(f.0 - s.0).ok().map(Duration::from_millis),
                _ => None,
            },
            dir: b.result_dir.clone().filter(|d| d.is_dir()),
            log: None,
        }
    });
    ran.chain(left).collect()
}

/// One build as the summary shows it: its result and the one line that says why.
struct Row<'a> {
    e: &'a Ended,
    /// `ok`, `FAILED`, `ERROR`, `CANCELLED`.
    shown: &'static str,
    /// `succeeded`, `failed`, `error`, `cancelled`.
    result: &'static str,
    /// Why it did not succeed, on one line; `None` for a success.
    cause: Option<String>,
    /// The packages of the plan it builds against that did not build for its target.
    missing: Vec<&'a str>,
}

impl Row<'_> {
    /// Successes first, then interruptions, failures last: they stay on screen.
    fn rank(&self) -> u8 {
        match self.e.how {
            How::Ok { .. } => 0,
            How::Cancelled(_) => 1,
            How::Failed(_) | How::Error(_) => 2,
        }
    }

    fn who(&self) -> String {
        format!("{}/{}", self.e.target, self.e.name)
    }
}

/// Text on one line: a cause's lines (a "fix:" under the error) joined.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every build as a [`Row`], failures last, with the exit status they add up to (an
/// interruption outranks what the builds it stopped would have said).
fn rows<'a>(all: &'a [Ended], after: &'a BTreeMap<String, Vec<String>>) -> (Vec<Row<'a>>, u8) {
    let built: BTreeSet<(&TargetName, &str)> = all
        .iter()
        .filter(|e| matches!(e.how, How::Ok { .. }))
        .map(|e| (&e.target, e.package.as_str()))
        .collect();
    let mut code = 0u8;
    let mut rows: Vec<Row> = all
        .iter()
        .map(|e| {
            let missing: Vec<&str> = after
                .get(&e.package)
                .into_iter()
                .flatten()
                .filter(|d| !built.contains(&(&e.target, d.as_str())))
                .map(String::as_str)
                .collect();
            let because = if missing.is_empty() {
                String::new()
            } else {
                format!(
                    " — not built against {}, which it needs and which failed in an earlier stage",
                    missing.join(", ")
                )
            };
            let (shown, result, cause) = match &e.how {
                How::Ok { .. } => ("ok", "succeeded", None),
                How::Failed(m) => {
                    code = code.max(EXIT_FAILED);
                    (
                        "FAILED",
                        "failed",
                        Some(format!("{}{because}", one_line(m))),
                    )
                }
                How::Error(m) => {
                    code = code.max(EXIT_INFRA);
                    ("ERROR", "error", Some(format!("{}{because}", one_line(m))))
                }
                How::Cancelled(why) => {
                    code = EXIT_CANCELLED;
                    let why = if why.is_empty() { "interrupted" } else { why };
                    ("CANCELLED", "cancelled", Some(why.to_string()))
                }
            };
            Row {
                e,
                shown,
                result,
                cause,
                missing,
            }
        })
        .collect();
    // Stable: within a rank, the plan's order (its stages).
    rows.sort_by_key(Row::rank);
    (rows, code)
}

/// The summary's lines (for stdout) and the exit status: how many succeeded, then a table
/// of every build (result, target/package, time, and the results or the cause), the
/// failures last; a failed build whose dependency of an earlier stage did not build says so.
fn summary_lines(
    all: &[Ended],
    after: &BTreeMap<String, Vec<String>>,
    seconds: f64,
) -> (Vec<String>, u8) {
    let (rows, code) = rows(all, after);
    let succeeded = rows.iter().filter(|r| r.rank() == 0).count();
    let failed = rows.iter().filter(|r| r.rank() == 2).count();
    let mut lines = vec![format!(
        "{succeeded} of {} build(s) succeeded in {seconds:.1}s{}",
        rows.len(),
        if failed > 0 {
            format!("; {failed} failed (listed last)")
        } else {
            String::new()
        }
    )];
    if rows.is_empty() {
        return (lines, code);
    }
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let time =
                r.e.duration
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
                    .unwrap_or_else(|| "-".into());
            let details = match (&r.e.how, &r.cause) {
                (How::Ok { rpms }, _) => format!(
                    "→ {} ({rpms} rpm)",
                    r.e.dir.as_deref().unwrap_or(Path::new("?")).display()
                ),
                (_, Some(c)) => c.clone(),
                (_, None) => String::new(),
            };
            [r.shown.to_string(), r.who(), time, details]
        })
        .collect();
    let head = ["RESULT", "TARGET/PACKAGE", "TIME", "DETAILS"].map(String::from);
    let width = |i: usize| {
        std::iter::once(&head)
            .chain(&cells)
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0) + 2, width(1), width(2));
    for c in std::iter::once(&head).chain(&cells) {
        lines.push(
            format!("{:<w0$}{:<w1$}  {:>w2$}  {}", c[0], c[1], c[2], c[3])
                .trim_end()
                .to_string(),
        );
    }
    (lines, code)
}

/// One build in `build --json`.
#[derive(serde::Serialize)]
struct JsonBuild<'a> {
    package: &'a str,
    /// Name-version-release, when the build got that far.
    nevr: Option<&'a str>,
    target: &'a str,
    /// `succeeded`, `failed`, `error` or `cancelled`.
    result: &'static str,
    duration_ms: Option<u64>,
    /// Why it did not succeed, on one line.
    cause: Option<&'a str>,
    /// Packages of the plan it builds against that failed for its target.
    not_built_against: &'a [&'a str],
    /// Its results directory (packages, and `logs/` with `build.json`).
    artifacts: Option<&'a Path>,
    /// The log that says why it failed, else its build log.
    log: Option<&'a Path>,
    rpms: Option<usize>,
}

/// `build --json`'s document: every build (failures last) and the totals.
#[derive(serde::Serialize)]
struct JsonSummary<'a> {
    succeeded: usize,
    total: usize,
    seconds: f64,
    exit_code: u8,
    builds: Vec<JsonBuild<'a>>,
}

/// The summary as one JSON document, and the exit status.
fn summary_json(
    all: &[Ended],
    after: &BTreeMap<String, Vec<String>>,
    seconds: f64,
) -> (String, u8) {
    let (rows, code) = rows(all, after);
    let builds: Vec<JsonBuild> = rows
        .iter()
        .map(|r| JsonBuild {
            package: &r.e.package,
            nevr: (r.e.name != r.e.package).then_some(r.e.name.as_str()),
            target: r.e.target.as_str(),
            result: r.result,
            duration_ms: r
                .e
                .duration
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            cause: r.cause.as_deref(),
            not_built_against: &r.missing,
            artifacts: r.e.dir.as_deref(),
            log: r.e.log.as_deref(),
            rpms: match r.e.how {
                How::Ok { rpms } => Some(rpms),
                _ => None,
            },
        })
        .collect();
    let doc = JsonSummary {
        succeeded: rows.iter().filter(|r| r.rank() == 0).count(),
        total: rows.len(),
        seconds: (seconds * 10.0).round() / 10.0,
        exit_code: code,
        builds,
    };
    let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        // Nothing in it can fail to serialize (strings, numbers, UTF-8 paths are lossy).
        format!("{{\"error\": \"cannot write the summary: {e}\"}}")
    });
    (text, code)
}

/// Prints the summary on stdout (the table, or with `json` one JSON document), with the
/// last lines of each failed build's log on stderr; returns the exit status the builds add
/// up to.
fn summarize(
    reports: &[BuildReport],
    not_run: &[BuildRow],
    after: &BTreeMap<String, Vec<String>>,
    started: Instant,
    json: bool,
) -> u8 {
    for r in reports {
        if let Outcome::Failed { log, .. } = &r.outcome {
            eprintln!(
                "--- last lines of {} ---\n{}\n--- end of {} ---",
                log.display(),
                packetary::executor::tail(log, 25),
                log.display()
            );
        }
    }
    let all = ended(reports, not_run);
    let seconds = started.elapsed().as_secs_f64();
    let (lines, code) = if json {
        let (doc, code) = summary_json(&all, after, seconds);
        (vec![doc], code)
    } else {
        summary_lines(&all, after, seconds)
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    code
}

/// The builds of a plan for `targets` (all of each package's when `None`), in its stages;
/// a package with an error of its own is left out unless `with_errors`, when it builds in
/// its stage like the others (its build then fails and says why).
pub fn builds_of(
    plan: &Plan,
    targets: Option<&[TargetName]>,
    with_errors: bool,
) -> Vec<PlannedBuild> {
    plan.packages
        .iter()
        .filter(|p| with_errors || p.error.is_none())
        .flat_map(|p| {
            p.targets
                .iter()
                .filter(|t| targets.is_none_or(|only| only.contains(t)))
                .map(move |t| PlannedBuild {
                    package: package_label(p),
                    spec_path: p.spec.clone().into(),
                    target: t.clone(),
                    error: None,
                    stage: u32::try_from(p.stage).unwrap_or(u32::MAX),
                    nevr: None,
                })
        })
        .collect()
}

/// Serves a Swarm executor's callback routes on `[server] listen` until aborted.
async fn serve_callbacks(
    config: &Config,
    routes: axum::Router,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} for the Swarm's build tasks\n  fix: set [server] listen to a free address that [executor] callback_url reaches"
            )
        })
        .map_err(infra)?;
    progress_line(&format!(
        "serving the Swarm's build tasks on {listen} (reached at {})",
        match &config.executor {
            packetary::config::ExecutorConfig::Swarm(s) => s.callback_url.as_str(),
            packetary::config::ExecutorConfig::Local => "",
        }
    ));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, routes).await {
            tracing::error!("the Swarm's callback server stopped: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TargetName {
        TargetName::parse(s).expect("target")
    }

    fn end(target: &str, package: &str, how: How) -> Ended {
        Ended {
            target: t(target),
            package: package.into(),
            name: format!("{package}-1.0-1"),
            dir: matches!(how, How::Ok { .. }).then(|| PathBuf::from("/out")),
            how,
            duration: Some(Duration::from_millis(1500)),
            log: None,
        }
    }

    fn ok() -> How {
        How::Ok { rpms: 1 }
    }

    fn after(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(p, d)| (p.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn build(package: &str, target: &str, stage: u32) -> PlannedBuild {
        PlannedBuild {
            package: package.into(),
            spec_path: format!("{package}/{package}.spec").into(),
            target: t(target),
            error: None,
            stage,
            nevr: None,
        }
    }

    #[test]
    fn stages_are_shown_from_one_with_what_each_package_needs() {
        let builds = [
            build("libfoo", "a", 0),
            build("libfoo", "b", 0),
            build("other", "a", 0),
            build("app", "a", 1),
            build("app", "b", 1),
        ];
        let lines = stage_lines(&builds, &after(&[("app", &["libfoo"]), ("libfoo", &[])]));
        assert_eq!(
            lines,
            [
                "stage 1 of 2: libfoo, other",
                "stage 2 of 2: app (after libfoo)"
            ]
        );
        assert!(stage_lines(&[], &BTreeMap::new()).is_empty());
    }

    #[test]
    fn the_table_lists_every_build_with_failures_last() {
        let all = [
            end(
                "a",
                "libfoo",
                How::Failed("build phase failed: boom\n  fix: do not boom".into()),
            ),
            end("b", "libfoo", ok()),
            end(
                "a",
                "app",
                How::Failed("deps phase failed: missing build dependencies: libfoo-devel".into()),
            ),
            end("b", "app", ok()),
            end("a", "other", ok()),
        ];
        let (lines, code) = summary_lines(&all, &after(&[("app", &["libfoo"])]), 1.0);
        assert_eq!(code, EXIT_FAILED);
        assert_eq!(
            lines,
            [
                "3 of 5 build(s) succeeded in 1.0s; 2 failed (listed last)",
                "RESULT  TARGET/PACKAGE  TIME  DETAILS",
                "ok      b/libfoo-1.0-1  1.5s  → /out (1 rpm)",
                "ok      b/app-1.0-1     1.5s  → /out (1 rpm)",
                "ok      a/other-1.0-1   1.5s  → /out (1 rpm)",
                "FAILED  a/libfoo-1.0-1  1.5s  build phase failed: boom fix: do not boom",
                "FAILED  a/app-1.0-1     1.5s  deps phase failed: missing build dependencies: libfoo-devel — not built against libfoo, which it needs and which failed in an earlier stage",
            ]
        );
    }

    #[test]
    fn all_built_is_zero_and_names_nothing() {
        let (lines, code) = summary_lines(&[end("a", "x", ok())], &BTreeMap::new(), 0.5);
        assert_eq!(code, 0);
        assert_eq!(lines[0], "1 of 1 build(s) succeeded in 0.5s");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn errors_and_interruptions_keep_their_exit_statuses() {
        let mut unknown = end("a", "x", How::Error("docker went away".into()));
        unknown.duration = None;
        let all = [
            unknown,
            end("a", "y", How::Failed("srpm phase failed".into())),
        ];
        let (lines, code) = summary_lines(&all, &BTreeMap::new(), 0.0);
        assert_eq!(code, EXIT_INFRA);
        assert_eq!(lines[2], "ERROR   a/x-1.0-1          -  docker went away");
        let all = [
            end("a", "x", How::Cancelled("")),
            end("a", "y", How::Cancelled("never started")),
            end("a", "z", How::Failed("srpm phase failed".into())),
        ];
        let (lines, code) = summary_lines(&all, &BTreeMap::new(), 0.0);
        assert_eq!(code, EXIT_CANCELLED);
        assert_eq!(lines[2], "CANCELLED  a/x-1.0-1       1.5s  interrupted");
        assert_eq!(lines[3], "CANCELLED  a/y-1.0-1       1.5s  never started");
        assert_eq!(
            lines[4],
            "FAILED     a/z-1.0-1       1.5s  srpm phase failed"
        );
    }

    #[test]
    fn the_json_summary_has_every_build_and_its_cause() {
        let mut failed = end("a", "app", How::Failed("build phase failed: x".into()));
        failed.log = Some(PathBuf::from("/out/a/app-1.0-1/logs/build.log"));
        let all = [failed, end("a", "libfoo", ok())];
        let (doc, code) = summary_json(&all, &after(&[("app", &["libfoo"])]), 2.04);
        assert_eq!(code, EXIT_FAILED);
        let v: serde_json::Value = serde_json::from_str(&doc).expect("json");
        assert_eq!(v["succeeded"], 1);
        assert_eq!(v["total"], 2);
        assert_eq!(v["seconds"], 2.0);
        assert_eq!(v["exit_code"], 1);
        let b = &v["builds"];
        assert_eq!(b[0]["package"], "libfoo");
        assert_eq!(b[0]["result"], "succeeded");
        assert_eq!(b[0]["cause"], serde_json::Value::Null);
        assert_eq!(b[0]["artifacts"], "/out");
        assert_eq!(b[0]["rpms"], 1);
        assert_eq!(b[1]["package"], "app");
        assert_eq!(b[1]["nevr"], "app-1.0-1");
        assert_eq!(b[1]["target"], "a");
        assert_eq!(b[1]["result"], "failed");
        assert_eq!(b[1]["duration_ms"], 1500);
        assert_eq!(b[1]["cause"], "build phase failed: x");
        assert_eq!(b[1]["log"], "/out/a/app-1.0-1/logs/build.log");
        assert_eq!(b[1]["not_built_against"], serde_json::json!([]));
    }
}
