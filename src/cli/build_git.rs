//! `packetary build --git REPO RANGE`: the packages a change touched, built in the plan's
//! stages by the service's own queue and scheduler over a temporary store
//! ([`super::staged`], as `packetary build DIR`), so that build order, the `change`
//! repository of earlier stages and cancellation behave exactly as in `packetary serve`.

use std::sync::Arc;

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::model::{ChangeKind, ForgeKind, RepoId, TargetName, Trigger};
use packetary::queue::local;
use packetary::queue::source::PathSource;

use super::plan::{make_plan, write_plan};
use super::staged::{self, Staged};
use super::{absolute, extra_repos, infra, usage, BuildArgs, CliError, EXIT_FAILED, EXIT_USAGE};

pub async fn run(config: Config, args: BuildArgs) -> Result<u8, CliError> {
    // Made while the change is planned.
    let store = local::TempStore::open_ahead();
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
    let publish = match &args.publish {
        Some(r) => Some((
            super::publish::check_build_publish(&config, r, &only)?,
            args.data_dir.clone(),
        )),
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
    let builds = staged::builds_of(&plan, explicit_targets.then_some(only.as_slice()), false);
    let packages: Vec<_> = plan.buildable().cloned().collect();
    let mut code = staged::run(
        &config,
        Staged {
            store,
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
            after: staged::after_of(&plan),
            sources: Arc::new(PathSource::new(repo_path, packages, plan.lookaside.clone())),
            engine,
            extra_repos,
            parallel,
            out,
            publish,
            json: args.json,
        },
    )
    .await?;
    if plan.has_errors() {
        code = code.max(EXIT_FAILED);
    }
    Ok(code)
}
