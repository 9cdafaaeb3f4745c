//! `packetary plan REPO RANGE`: which packages a change touched, for which targets, in
//! what order; also what `build --git` builds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::git::{GitError, MirrorCache, RemoteRef};
use packetary::plan;
use packetary::service::git_auth_from_env;
use packetary::spec::{SpecCache, SpecOracle};

use super::{absolute, infra, usage, CliError, GitOpts, PlanArgs, EXIT_FAILED, EXIT_USAGE};

pub async fn run(config: Config, args: PlanArgs) -> Result<u8, CliError> {
    let (plan, _) = make_plan(&config, &args.repo, &args.range, &args.git_opts, None).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &plan).map_err(infra)?;
        let _ = writeln!(out);
    } else {
        write_plan(&plan, &mut out).map_err(infra)?;
    }
    Ok(plan_exit_code(&plan))
}

/// Where mirrors and spec answers live between runs.
pub(super) fn cache_dir(opts: &GitOpts) -> PathBuf {
    opts.cache_dir
        .clone()
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("packetary")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/packetary")))
        .unwrap_or_else(|| PathBuf::from(".packetary-cache"))
}

/// `BASE..HEAD` is a push, `BASE...HEAD` (or `--review`) a review.
fn parse_range(range: &str, review: bool) -> Result<plan::Change, CliError> {
    let (base, head, three) = if let Some((b, h)) = range.split_once("...") {
        (b, h, true)
    } else if let Some((b, h)) = range.split_once("..") {
        (b, h, false)
    } else {
        return Err(usage(anyhow::anyhow!(
            "`{range}` is not a range\n  fix: write BASE..HEAD (a push of HEAD over BASE) or BASE...HEAD (a review of HEAD for BASE)"
        )));
    };
    if head.is_empty() || (three || review) && base.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "`{range}`: both ends of the range are needed"
        )));
    }
    Ok(if three || review {
        plan::Change::Review {
            base: base.to_string(),
            head: head.to_string(),
        }
    } else {
        plan::Change::Push {
            before: (!base.is_empty()).then(|| base.to_string()),
            after: head.to_string(),
        }
    })
}

/// The repository to plan in: a local path as it is, or the mirror of a URL, fetched
/// first with every branch plus the refs the range names.
async fn open_source(
    repo: &str,
    change: &plan::Change,
    opts: &GitOpts,
) -> Result<(PathBuf, Option<String>), CliError> {
    let local = Path::new(repo);
    if !repo.contains("://") && local.exists() {
        return Ok((absolute(local).map_err(usage)?, None));
    }
    if !repo.contains("://") && !repo.contains('@') {
        return Err(usage(anyhow::anyhow!(
            "`{repo}` is neither a directory nor a git URL\n  fix: pass a path to a repository, or an https://, ssh:// or file:// URL"
        )));
    }
    let cache = MirrorCache::new(cache_dir(opts).join("mirrors"));
    if opts.offline {
        let m = cache.mirror_for(repo);
        if !m.path.join("HEAD").exists() {
            return Err(usage(anyhow::anyhow!(
                "there is no mirror of {repo} yet\n  fix: run once without --offline"
            )));
        }
        return Ok((m.path, None));
    }
    let mut refs = vec![RemoteRef::AllBranches];
    let revs: Vec<&str> = match change {
        plan::Change::Push { before, after } => before
            .iter()
            .map(String::as_str)
            .chain([after.as_str()])
            .collect(),
        plan::Change::Review { base, head } => vec![base, head],
    };
    for rev in revs
        .into_iter()
        .chain(opts.fetch.iter().map(String::as_str))
    {
        if rev.starts_with("refs/") || rev.starts_with("pull/") {
            match RemoteRef::parse(rev) {
                Some(RemoteRef::Branch(_)) => {}
                Some(r) => refs.push(r),
                None => return Err(usage(anyhow::anyhow!("`{rev}` is not a valid ref name"))),
            }
        }
    }
    let started = Instant::now();
    match cache.fetch(repo, &refs, &git_auth_from_env()).await {
        Ok((m, report)) => {
            tracing::info!(
                "fetched {repo} in {:.2}s ({} refs updated)",
                started.elapsed().as_secs_f64(),
                report.updated.len()
            );
            Ok((m.path, report.default_branch))
        }
        Err(e @ GitError::MissingRef { .. }) => Err(usage(e)),
        Err(e) => Err(infra(e)),
    }
}

pub async fn make_plan(
    config: &Config,
    repo: &str,
    range: &str,
    opts: &GitOpts,
    engine: Option<Engine>,
) -> Result<(plan::Plan, PathBuf), CliError> {
    let change = parse_range(range, opts.review)?;
    let (path, remote_default) = open_source(repo, &change, opts).await?;
    let options = plan::PlanOptions {
        default_branch: opts.default_branch.clone().or(remote_default),
        default_targets: config
            .default_targets
            .iter()
            .map(|t| t.to_string())
            .collect(),
        known_targets: config.targets.keys().map(|t| t.to_string()).collect(),
    };
    let cache = SpecCache::new(cache_dir(opts).join("specs"));
    let oracle = (!opts.no_spec).then(|| match engine {
        Some(e) => SpecOracle::with_engine(cache.clone(), e),
        None => SpecOracle::new(cache.clone(), config.docker_host.clone()),
    });
    let plan = plan::plan_change(
        path.clone(),
        repo.to_string(),
        change,
        options,
        &config.targets,
        oracle.as_ref(),
    )
    .await
    .map_err(infra)?;
    Ok((plan, path))
}

pub fn write_plan(plan: &plan::Plan, out: &mut dyn Write) -> std::io::Result<()> {
    let short = |c: &Option<packetary::model::CommitSha>| {
        c.as_ref()
            .map(|c| c.short().to_string())
            .unwrap_or_else(|| "-".into())
    };
    writeln!(
        out,
        "plan for {} ({:?}): {} compared with {}, {} path(s) changed, .packetary.toml from {}",
        plan.repo,
        plan.kind,
        short(&plan.head),
        plan.compared_with
            .as_ref()
            .map(|c| c.short().to_string())
            .unwrap_or_else(|| "nothing (every package)".into()),
        plan.changed_paths,
        short(&plan.config_from),
    )?;
    for n in &plan.notices {
        writeln!(out, "  note: {n}")?;
    }
    for e in &plan.errors {
        writeln!(out, "  ERROR: {e}")?;
    }
    let mut stage = usize::MAX;
    for p in &plan.packages {
        if p.error.is_none() && p.stage != stage {
            stage = p.stage;
            writeln!(out, "stage {stage}:")?;
        }
        let why: Vec<String> = p.reasons.iter().map(|r| r.to_string()).collect();
        let targets: Vec<&str> = p.targets.iter().map(|t| t.as_str()).collect();
        match &p.error {
            None => {
                writeln!(
                    out,
                    "  {:<32} {:<24} [{}] {:?}; {}",
                    p.id.as_str(),
                    p.nevr
                        .as_ref()
                        .map(|n| n.nvr())
                        .unwrap_or_else(|| "?".into()),
                    targets.join(", "),
                    p.layout,
                    why.join("; ")
                )?;
                if !p.depends_on.is_empty() {
                    let d: Vec<&str> = p.depends_on.iter().map(|d| d.as_str()).collect();
                    writeln!(out, "  {:<32} after {}", "", d.join(", "))?;
                }
            }
            Some(e) => writeln!(out, "  ERROR {}: {}", p.id, e.replace('\n', "\n        "))?,
        }
    }
    for d in &plan.deleted {
        writeln!(out, "  deleted {} (not built)", d.id)?;
    }
    if plan.packages.is_empty() && plan.errors.is_empty() {
        writeln!(out, "  nothing to build")?;
    }
    Ok(())
}

fn plan_exit_code(plan: &plan::Plan) -> u8 {
    if !plan.errors.is_empty() {
        EXIT_USAGE
    } else if plan.has_errors() {
        EXIT_FAILED
    } else {
        0
    }
}
