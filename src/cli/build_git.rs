//! `packetary build --git REPO RANGE`: the packages a change touched, built stage by stage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use packetary::build::{self, BuildRequest, Engine, Executor};
use packetary::config::{Config, Repo};
use packetary::git::GitError;
use packetary::model::{BuildId, Outcome, TargetName};
use packetary::plan;

use super::plan::{make_plan, write_plan};
use super::{
    absolute, ensure_images, infra, progress_line, spawn_interrupt_watch, spawn_progress_printer,
    summarize, usage, BuildArgs, CliError, EXIT_FAILED, EXIT_USAGE,
};

/// `build --git REPO RANGE`: plan, export each package at HEAD, build stage by stage. A
/// package that needs another of the plan gets a local repository of what was built.
pub async fn run(config: Config, args: BuildArgs) -> Result<u8, CliError> {
    let git = args.git.clone().unwrap_or_default();
    let [repo, range] = git.as_slice() else {
        return Err(usage(anyhow::anyhow!("--git needs REPO and RANGE")));
    };
    let out =
        absolute(&args.out.clone().unwrap_or_else(|| config.out_dir.clone())).map_err(usage)?;
    let extra_repos: Vec<Repo> = args
        .repos
        .iter()
        .enumerate()
        .map(|(i, r)| Repo::parse_arg(r, i).map_err(|e| usage(anyhow::anyhow!("--repo {r}: {e}"))))
        .collect::<Result<_, _>>()?;
    let only: Vec<TargetName> = config
        .select_targets(&args.targets)
        .map_err(usage)?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let parallel = args.parallel.unwrap_or(config.parallel).max(1);
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
    let packages: Vec<plan::PlannedPackage> = plan
        .buildable()
        .cloned()
        .map(|mut p| {
            if explicit_targets {
                p.targets.retain(|t| only.contains(t));
            }
            p
        })
        .collect();

    let image_ids = ensure_images(
        &engine,
        &config,
        packages
            .iter()
            .flat_map(|p| &p.targets)
            .filter_map(|t| config.targets.get(t)),
    )
    .await?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))
        .map_err(infra)?;

    // Export every package at HEAD, straight from the object database.
    let work = plan::TempDir::new("packetary-git").map_err(infra)?;
    let to_export: Vec<(usize, plan::PlannedPackage)> =
        packages.iter().cloned().enumerate().collect();
    let src_root = work.path().join("src");
    let exported: Vec<Result<plan::PackageSource, String>> = packetary::git::blocking(move || {
        let r = git2::Repository::open(&repo_path).map_err(|e| GitError::Repo {
            path: repo_path.clone(),
            message: e.message().to_string(),
        })?;
        let oid = git2::Oid::from_str(head.as_str()).map_err(|e| GitError::Repo {
            path: repo_path.clone(),
            message: e.message().to_string(),
        })?;
        Ok(to_export
            .iter()
            .map(|(i, p)| {
                plan::export_package(&r, oid, p, &src_root.join(i.to_string()))
                    .map_err(|e| e.to_string())
            })
            .collect())
    })
    .await
    .map_err(infra)?;
    let mut sources: HashMap<plan::PackageId, Result<plan::PackageSource, String>> = HashMap::new();
    for (p, e) in packages.iter().zip(exported) {
        let e = match e {
            Ok(src) => {
                match plan::fetch_lookaside(p, &src.source_dir, plan.lookaside.as_deref()).await {
                    Ok(()) => Ok(src),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        sources.insert(p.id.clone(), e);
    }

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (tx, printer) = spawn_progress_printer(started);
    let ctrl_c = spawn_interrupt_watch(cancel.clone());

    let executor = Executor::new(engine.clone());
    let mut reports = Vec::new();
    let mut not_built: Vec<(plan::PackageId, String)> = Vec::new();
    let mut failed: std::collections::HashSet<plan::PackageId> = Default::default();
    let mut local_repo_ready: HashMap<TargetName, PathBuf> = HashMap::new();
    let max_stage = packages.iter().map(|p| p.stage).max().unwrap_or(0);
    for stage in 0..=max_stage {
        let mut requests = Vec::new();
        for p in packages.iter().filter(|p| p.stage == stage) {
            let src = match &sources[&p.id] {
                Ok(s) => s.clone(),
                Err(e) => {
                    failed.insert(p.id.clone());
                    not_built.push((p.id.clone(), e.clone()));
                    continue;
                }
            };
            if let Some(d) = p.depends_on.iter().find(|d| failed.contains(*d)) {
                failed.insert(p.id.clone());
                not_built.push((
                    p.id.clone(),
                    format!("not built: it needs {d}, which did not build"),
                ));
                continue;
            }
            for t in &p.targets {
                let target = config.targets[t].clone();
                let mut extra = extra_repos.clone();
                if !p.depends_on.is_empty() {
                    if let Some(dir) = local_repo_ready.get(t) {
                        extra.push(
                            Repo::new("packetary-plan", &dir.display().to_string())
                                .map_err(|e| infra(anyhow::anyhow!(e)))?,
                        );
                    }
                }
                requests.push((
                    p.id.clone(),
                    BuildRequest {
                        id: BuildId::generate(),
                        package: src.clone(),
                        target,
                        out_root: out.clone(),
                        extra_repos: extra,
                    },
                ));
            }
        }
        if requests.is_empty() {
            continue;
        }
        progress_line(&format!(
            "stage {stage}: {} build(s), {parallel} at a time",
            requests.len()
        ));
        let done: Vec<(plan::PackageId, build::BuildReport)> = futures_util::stream::iter(requests)
            .map(|(id, req)| {
                let image_id = image_ids.get(&req.target.image).cloned();
                let fut = executor.run(req, image_id, Some(tx.clone()), cancel.clone());
                async move { (id, fut.await) }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut new_rpms: HashMap<TargetName, Vec<PathBuf>> = HashMap::new();
        for (id, r) in &done {
            match &r.outcome {
                Outcome::Succeeded { rpms, .. } => new_rpms
                    .entry(r.target.clone())
                    .or_default()
                    .extend(rpms.iter().cloned()),
                _ => {
                    failed.insert(id.clone());
                }
            }
        }
        if stage < max_stage {
            for (t, rpms) in new_rpms {
                let dir = work.path().join(format!("repo-{t}"));
                packetary::build::local_repo(&engine, &config.targets[&t].image, &dir, &rpms)
                    .await
                    .map_err(infra)?;
                local_repo_ready.insert(t, dir);
            }
        }
        reports.extend(done.into_iter().map(|(_, r)| r));
    }
    drop(tx);
    let _ = printer.await;
    ctrl_c.abort();
    let mut code = summarize(&reports, started);
    for (id, why) in &not_built {
        println!("NOT BUILT {id}: {why}");
        code = code.max(EXIT_FAILED);
    }
    if plan.has_errors() {
        code = code.max(EXIT_FAILED);
    }
    Ok(code)
}
