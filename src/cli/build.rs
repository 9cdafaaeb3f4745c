//! `packetary build [PATH]`: every package under PATH for each target, each in its own
//! container.

use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::executor::{self, BuildRequest, Executor};
use packetary::model::BuildId;
use packetary::plan;

use super::{
    absolute, ensure_images, extra_repos, infra, progress_line, spawn_interrupt_watch,
    spawn_progress_printer, summarize, usage, BuildArgs, CliError,
};

pub async fn run(config: Config, args: BuildArgs) -> Result<u8, CliError> {
    let targets = config.select_targets(&args.targets).map_err(usage)?;
    let out = args.out.clone().unwrap_or_else(|| config.out_dir.clone());
    let out = absolute(&out).map_err(usage)?;
    let root = &args.path;
    if !root.is_dir() {
        return Err(usage(anyhow::anyhow!(
            "{} is not a directory\n  fix: pass the directory that holds the package(s)",
            root.display()
        )));
    }
    let packages = match &args.spec {
        Some(spec) => {
            let spec = if spec.is_absolute() || spec.exists() {
                spec.clone()
            } else {
                root.join(spec)
            };
            vec![plan::package_for_spec(root, &spec).map_err(usage)?]
        }
        None => plan::discover(root, std::slice::from_ref(&out)).map_err(usage)?,
    };
    let extra_repos = extra_repos(&args)?;
    let release = match &args.publish {
        Some(r) => {
            let names: Vec<_> = targets.iter().map(|t| t.name.clone()).collect();
            Some(super::publish::check_build_publish(&config, r, &names)?)
        }
        None => None,
    };
    let parallel = args.parallel.unwrap_or(config.parallel).max(1);

    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    // The builder images made if missing; each build looks up its image's id when it
    // records its inputs.
    ensure_images(&engine, &config, targets.iter()).await?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))
        .map_err(infra)?;

    let requests: Vec<BuildRequest> = packages
        .iter()
        .flat_map(|p| {
            targets.iter().map(|t| BuildRequest {
                id: BuildId::generate(),
                package: p.clone(),
                target: t.clone(),
                out_root: out.clone(),
                extra_repos: extra_repos.clone(),
                source_date_epoch: None,
                inputs: None,
            })
        })
        .collect();
    progress_line(&format!(
        "building {} package(s) × {} target(s) = {} build(s), {} at a time, into {}",
        packages.len(),
        targets.len(),
        requests.len(),
        parallel,
        out.display()
    ));

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (tx, printer) = spawn_progress_printer(started);
    let ctrl_c = spawn_interrupt_watch(cancel.clone());

    let executor = Executor::new(engine);
    match executor.reap_orphans().await {
        Ok(0) => {}
        Ok(n) => progress_line(&format!(
            "removed {n} build container(s) left by killed runs"
        )),
        Err(e) => tracing::warn!("could not look for leftover containers: {e}"),
    }
    let reports: Vec<executor::BuildReport> = futures_util::stream::iter(requests)
        .map(|req| executor.run(req, Some(tx.clone()), cancel.clone()))
        .buffer_unordered(parallel)
        .collect()
        .await;
    drop(tx);
    let _ = printer.await;
    ctrl_c.abort();

    let mut code = summarize(&reports, started);
    if let Some(release) = &release {
        let published =
            super::publish::publish_reports(&config, release, args.data_dir.as_deref(), &reports)
                .await?;
        code = code.max(published);
    }
    Ok(code)
}
