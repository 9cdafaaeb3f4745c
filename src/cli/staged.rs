//! What `packetary build DIR` and `packetary build --git` share once they have a plan: its
//! builds, in its stages, through the service's own queue over a temporary store
//! ([`packetary::queue::local`]), so that later stages wait for the earlier ones and
//! install from their RPMs (the `change` repository); then the summary and `--publish`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

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
    let executor = Executor::new(s.engine);
    let (ensured, reaped) = tokio::join!(
        ensure_images(
            executor.engine(),
            config,
            s.builds
                .iter()
                .filter_map(|b| config.targets.get(&b.target)),
        ),
        executor.reap_orphans()
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
        Ok(n) => progress_line(&format!(
            "removed {n} build container(s) left by killed runs"
        )),
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
        runner: Arc::new(DockerRunner::new(executor)),
        progress: tx,
        cancel,
    })
    .await
    .map_err(infra)?;
    // The queue's last handles on the progress channel go with its stopped tasks.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), printer).await;
    ctrl_c.abort();
    let mut code = summarize(&ended.reports, &ended.not_run, &s.after, started);
    if let Some((release, data_dir)) = &s.publish {
        let published =
            super::publish::publish_reports(config, release, data_dir.as_deref(), &ended.reports)
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
}

#[derive(Debug)]
enum How {
    Ok {
        dir: PathBuf,
        rpms: usize,
    },
    Failed(String),
    Error(String),
    /// Why, when it never started.
    Cancelled(&'static str),
}

/// Every build: those the runner ran, then those that never reached it.
fn ended(reports: &[BuildReport], not_run: &[BuildRow]) -> Vec<Ended> {
    let ran = reports.iter().map(|r| Ended {
        target: r.target.clone(),
        package: r.package.clone(),
        name: r
            .nevr
            .as_ref()
            .map(|n| n.nvr())
            .unwrap_or_else(|| r.package.clone()),
        how: match &r.outcome {
            Outcome::Succeeded { binaries, .. } => How::Ok {
                dir: r.dir.clone(),
                rpms: binaries.len(),
            },
            Outcome::Failed { message, .. } => How::Failed(message.clone()),
            Outcome::Error { message } => How::Error(message.clone()),
            Outcome::Cancelled => How::Cancelled(""),
        },
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
                BuildState::Queued => How::Cancelled(" (never started)"),
                _ => How::Cancelled(""),
            },
        }
    });
    ran.chain(left).collect()
}

/// The summary's lines (for stdout) and the exit status: one line per build (a failed one
/// whose dependency of an earlier stage did not build says so), the total, what failed.
fn summary_lines(
    all: &[Ended],
    after: &BTreeMap<String, Vec<String>>,
    seconds: f64,
) -> (Vec<String>, u8) {
    let built: BTreeSet<(&TargetName, &str)> = all
        .iter()
        .filter(|e| matches!(e.how, How::Ok { .. }))
        .map(|e| (&e.target, e.package.as_str()))
        .collect();
    // The packages of the plan it builds against that did not build for its target.
    let missing = |e: &Ended| -> Vec<&str> {
        after
            .get(&e.package)
            .into_iter()
            .flatten()
            .filter(|d| !built.contains(&(&e.target, d.as_str())))
            .map(String::as_str)
            .collect()
    };
    let mut code = 0u8;
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for e in all {
        let who = format!("{}/{}", e.target, e.name);
        let m = missing(e);
        let because = if m.is_empty() {
            String::new()
        } else {
            format!(
                " — not built against {}, which it needs and which failed in an earlier stage",
                m.join(", ")
            )
        };
        match &e.how {
            How::Ok { dir, rpms } => {
                lines.push(format!("ok      {who} → {} ({rpms} rpm)", dir.display()));
                continue;
            }
            How::Failed(msg) => {
                code = code.max(EXIT_FAILED);
                lines.push(format!("FAILED  {who}: {msg}{because}"));
            }
            How::Error(msg) => {
                code = code.max(EXIT_INFRA);
                lines.push(format!("ERROR   {who}: {msg}{because}"));
            }
            How::Cancelled(why) => {
                code = EXIT_CANCELLED;
                lines.push(format!("CANCELLED {who}{why}"));
                continue;
            }
        }
        failed.push(if m.is_empty() {
            who
        } else {
            format!("{who} (because {} failed)", m.join(", "))
        });
    }
    lines.push(format!(
        "{} of {} build(s) succeeded in {seconds:.1}s",
        built.len(),
        all.len()
    ));
    if !failed.is_empty() {
        lines.push(format!("failed: {}", failed.join(", ")));
    }
    (lines, code)
}

/// Prints the summary on stdout, with the last lines of each failed build's log on
/// stderr; returns the exit status the builds add up to.
fn summarize(
    reports: &[BuildReport],
    not_run: &[BuildRow],
    after: &BTreeMap<String, Vec<String>>,
    started: Instant,
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
    let (lines, code) = summary_lines(
        &ended(reports, not_run),
        after,
        started.elapsed().as_secs_f64(),
    );
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
                })
        })
        .collect()
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
            how,
        }
    }

    fn ok() -> How {
        How::Ok {
            dir: PathBuf::from("/out"),
            rpms: 1,
        }
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
    fn a_later_stage_failing_after_its_dependency_says_so() {
        let all = [
            end(
                "a",
                "libfoo",
                How::Failed("build phase failed: boom".into()),
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
        assert_eq!(lines[0], "FAILED  a/libfoo-1.0-1: build phase failed: boom");
        assert_eq!(
            lines[2],
            "FAILED  a/app-1.0-1: deps phase failed: missing build dependencies: libfoo-devel — not built against libfoo, which it needs and which failed in an earlier stage"
        );
        // For the target where libfoo built, app is judged on its own.
        assert_eq!(lines[3], "ok      b/app-1.0-1 → /out (1 rpm)");
        assert_eq!(lines[5], "3 of 5 build(s) succeeded in 1.0s");
        assert_eq!(
            lines[6],
            "failed: a/libfoo-1.0-1, a/app-1.0-1 (because libfoo failed)"
        );
    }

    #[test]
    fn all_built_is_zero_and_names_nothing() {
        let (lines, code) = summary_lines(&[end("a", "x", ok())], &BTreeMap::new(), 0.5);
        assert_eq!(code, 0);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("1 of 1 build(s) succeeded in 0.5s")
        );
    }

    #[test]
    fn errors_and_interruptions_keep_their_exit_statuses() {
        let all = [
            end("a", "x", How::Error("docker went away".into())),
            end("a", "y", How::Failed("srpm phase failed".into())),
        ];
        let (lines, code) = summary_lines(&all, &BTreeMap::new(), 0.0);
        assert_eq!(code, EXIT_INFRA);
        assert_eq!(lines[0], "ERROR   a/x-1.0-1: docker went away");
        assert_eq!(
            lines.last().map(String::as_str),
            Some("failed: a/x-1.0-1, a/y-1.0-1")
        );
        let all = [
            end("a", "x", How::Cancelled("")),
            end("a", "y", How::Cancelled(" (never started)")),
        ];
        let (lines, code) = summary_lines(&all, &BTreeMap::new(), 0.0);
        assert_eq!(code, EXIT_CANCELLED);
        assert_eq!(lines[1], "CANCELLED a/y-1.0-1 (never started)");
        assert_eq!(lines[2], "0 of 2 build(s) succeeded in 0.0s");
    }
}
