//! `packetary build --git REPO RANGE`: the packages a change touched, built by the
//! service's own queue and scheduler over a temporary store ([`packetary::queue::local`]),
//! so that build order, the `change` repository of earlier stages and cancellation behave
//! exactly as in `packetary serve`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::executor::Executor;
use packetary::model::{ChangeKind, ForgeKind, RepoId, TargetName, Trigger};
use packetary::queue::local::{self, LocalRun};
use packetary::queue::planner::package_label;
use packetary::queue::source::PathSource;
use packetary::queue::{DockerRunner, PlannedBuild};

use super::plan::{make_plan, write_plan};
use super::{
    absolute, ensure_images, extra_repos, infra, progress_line, spawn_interrupt_watch,
    spawn_progress_printer, summarize, usage, BuildArgs, CliError, EXIT_FAILED, EXIT_USAGE,
};

pub async fn run(config: Config, args: BuildArgs) -> Result<u8, CliError> {
    let git = args.git.clone().unwrap_or_default();
    let [repo, range] = git.as_slice() else {
        return Err(usage(anyhow::anyhow!("--git needs REPO and RANGE")));
    };
    let out =
        absolute(&args.out.clone().unwrap_or_else(|| config.out_dir.clone())).map_err(usage)?;
    let extra_repos = extra_repos(&args)?;
    let only: Vec<TargetName> = config
        .select_targets(&args.targets)
        .map_err(usage)?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let parallel = args.parallel.unwrap_or(config.parallel).max(1);
    let release = match &args.publish {
        Some(r) => Some(super::publish::check_build_publish(&config, r, &only)?),
        None => None,
    };
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    let (plan, repo_path) =
        make_plan(&config, repo, range, &args.git_opts, Some(engine.clone())).await?;
    let mut err = std::io::stderr();
    let _ = write_plan(&plan, &mut err);
    if !plan.errors.is_empty() {
        return Ok(EXIT_USAGE);
    }
    let head = plan
        .head
        .clone()
        .ok_or_else(|| infra(anyhow::anyhow!("the plan has no head commit")))?;
    let explicit_targets = !args.targets.is_empty();
    let packages: Vec<_> = plan.buildable().cloned().collect();
    let builds: Vec<PlannedBuild> = packages
        .iter()
        .flat_map(|p| {
            p.targets
                .iter()
                .filter(|t| !explicit_targets || only.contains(t))
                .map(move |t| PlannedBuild {
                    package: package_label(p),
                    spec_path: p.spec.clone().into(),
                    target: t.clone(),
                    error: None,
                    stage: u32::try_from(p.stage).unwrap_or(u32::MAX),
                })
        })
        .collect();
    let mut targets = config.targets.clone();
    for t in targets.values_mut() {
        t.repos.extend(extra_repos.iter().cloned());
    }
    ensure_images(
        &engine,
        &config,
        builds.iter().filter_map(|b| config.targets.get(&b.target)),
    )
    .await?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))
        .map_err(infra)?;

    let stages = builds.iter().map(|b| b.stage + 1).max().unwrap_or(0);
    progress_line(&format!(
        "building {} build(s) in {stages} stage(s), {parallel} at a time, into {}",
        builds.len(),
        out.display()
    ));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (tx, printer) = spawn_progress_printer(started);
    let ctrl_c = spawn_interrupt_watch(cancel.clone());
    let ended = local::run(LocalRun {
        trigger: Trigger {
            repo: RepoId::new(ForgeKind::Local, "cli").map_err(infra)?,
            clone_url: repo.clone(),
            kind: ChangeKind::Push,
            ref_name: "refs/heads/cli".into(),
            base: plan.compared_with.clone(),
            head,
            pr_number: None,
            base_ref: None,
            from_fork: false,
            sender: "cli".into(),
            only_package: None,
            only_target: None,
        },
        builds,
        targets,
        parallel,
        out,
        sources: Arc::new(PathSource::new(repo_path, packages, plan.lookaside.clone())),
        runner: Arc::new(DockerRunner {
            executor: Executor::new(engine),
        }),
        progress: tx,
        cancel,
    })
    .await
    .map_err(infra)?;
    let reports = ended.reports;
    // The queue's last handles on the progress channel go with its stopped tasks.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), printer).await;
    ctrl_c.abort();
    let mut code = summarize(&reports, started);
    if plan.has_errors() {
        code = code.max(EXIT_FAILED);
    }
    if let Some(release) = &release {
        let published =
            super::publish::publish_reports(&config, release, args.data_dir.as_deref(), &reports)
                .await?;
        code = code.max(published);
    }
    Ok(code)
}
