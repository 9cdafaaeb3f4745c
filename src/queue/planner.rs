//! The service's planner: a webhook trigger becomes the builds of the packages its change
//! touched, in build order, using the same git mirror and change planner as `packetary plan`.
//!
//! Only the refs a trigger names are fetched (the branch of a push; `refs/pull/N/head` and the
//! base branch of a pull request), plus the remote's default branch, which a new branch is
//! compared with. libgit2 runs on the blocking pool inside [`MirrorCache`] and
//! [`plan::plan_change`], so planning never stalls the runtime's workers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{PlanError, PlannedBuild, Planner};
use crate::config::Target;
use crate::git::{Credentials, GitError, MirrorCache, RemoteRef};
use crate::model::TargetName;
use crate::model::{ChangeKind, Trigger};
use crate::plan::{self, Change, Plan, PlanOptions, PlannedPackage};
use crate::spec::SpecOracle;
use crate::store::Store;

/// Plans triggers with [`plan::plan_change`] over a [`MirrorCache`].
pub struct GitPlanner {
    mirrors: MirrorCache,
    creds: Credentials,
    /// Asks rpm for names and BuildRequires, so that dependencies build first. `None` plans
    /// without it: every package in one stage.
    oracle: Option<SpecOracle>,
    targets: BTreeMap<TargetName, Target>,
    default_targets: Vec<TargetName>,
    /// The remote's default branch per URL, learnt at the first fetch, so that later pushes
    /// fetch it together with their own branch in one round trip.
    default_branches: Mutex<HashMap<String, String>>,
    /// Where the Provides learned from earlier builds are kept (none: not used).
    store: Option<Store>,
}

impl GitPlanner {
    pub fn new(
        mirrors: MirrorCache,
        creds: impl Into<Credentials>,
        oracle: Option<SpecOracle>,
        targets: BTreeMap<TargetName, Target>,
        default_targets: Vec<TargetName>,
    ) -> GitPlanner {
        GitPlanner {
            mirrors,
            creds: creds.into(),
            oracle,
            targets,
            default_targets,
            default_branches: Mutex::new(HashMap::new()),
            store: None,
        }
    }

    /// Orders plans also by the Provides learned from the builds recorded in `store`.
    pub fn with_store(mut self, store: Store) -> GitPlanner {
        self.store = Some(store);
        self
    }

    /// Learned Provides of `repo` for every target; a store error only costs the ordering
    /// they would have given.
    async fn learned(&self, repo: &crate::model::RepoId) -> plan::Learned {
        let mut out = plan::Learned::new();
        let Some(store) = &self.store else {
            return out;
        };
        for t in self.targets.keys() {
            match store.learned_provides(repo, t).await {
                Ok(m) if !m.is_empty() => {
                    out.insert(t.clone(), m);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(repo = %repo, "cannot read learned provides: {e}"),
            }
        }
        out
    }

    fn known_default(&self, url: &str) -> Option<String> {
        self.default_branches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
    }

    /// Fetches what the trigger needs and returns the mirror and the remote's default branch.
    async fn fetch(
        &self,
        t: &Trigger,
        refs: Vec<RemoteRef>,
    ) -> Result<(PathBuf, Option<String>), PlanError> {
        let url = t.clone_url.as_str();
        let known = self.known_default(url);
        let mut refs = refs;
        if let Some(d) = known.as_deref().and_then(RemoteRef::parse) {
            if !refs.contains(&d) {
                refs.push(d);
            }
        }
        let auth = self.creds.for_url(url).await.map_err(git_error)?;
        let (mirror, report) = self
            .mirrors
            .fetch(url, &refs, &auth)
            .await
            .map_err(git_error)?;
        let default = report.default_branch.or(known);
        if let Some(d) = &default {
            let fresh = RemoteRef::parse(d).filter(|r| !refs.contains(r));
            self.default_branches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(url.to_string(), d.clone());
            // First contact with this remote: its default branch was not in the refspecs.
            if let Some(r) = fresh {
                self.mirrors
                    .fetch(url, &[r], &auth)
                    .await
                    .map_err(git_error)?;
            }
        }
        Ok((mirror.path, default))
    }

    async fn plan_impl(&self, t: &Trigger) -> Result<Vec<PlannedBuild>, PlanError> {
        let (refs, change) = change_of(t)?;
        let (mirror, default_branch) = self.fetch(t, refs).await?;
        let opts = PlanOptions {
            default_branch,
            default_targets: self.default_targets.iter().map(|t| t.to_string()).collect(),
            known_targets: self.targets.keys().map(|t| t.to_string()).collect(),
        };
        let learned = self.learned(&t.repo).await;
        let plan = plan::plan_change_learned(
            mirror,
            t.repo.to_string(),
            change,
            opts,
            &self.targets,
            self.oracle.as_ref(),
            &learned,
        )
        .await
        .map_err(git_error)?;
        for n in &plan.notices {
            tracing::info!(repo = %t.repo, head = %t.head, "plan: {n}");
        }
        builds_of(&plan, t.only_package.as_deref(), t.only_target.as_deref())
    }
}

impl Planner for GitPlanner {
    fn plan<'a>(
        &'a self,
        trigger: &'a Trigger,
    ) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(self.plan_impl(trigger))
    }
}

/// The refs to fetch and the change to plan. A push compares with the branch's previous tip
/// (none for a new branch: the planner then uses the fork point from the default branch); a
/// pull request compares with its merge-base with the base branch, whose configuration is
/// the trusted one.
fn change_of(t: &Trigger) -> Result<(Vec<RemoteRef>, Change), PlanError> {
    match t.kind {
        ChangeKind::Push => {
            let branch = RemoteRef::parse(&t.ref_name)
                .filter(|r| matches!(r, RemoteRef::Branch(_)))
                .ok_or_else(|| {
                    PlanError::Invalid(format!("`{}` is not a branch to build", t.ref_name))
                })?;
            Ok((
                vec![branch],
                Change::Push {
                    before: t.base.as_ref().map(|b| b.to_string()),
                    after: t.head.to_string(),
                },
            ))
        }
        ChangeKind::PullRequest => {
            // A review's own ref when it names one (Gerrit's `refs/changes/NN/C/P`, GitHub's
            // `refs/pull/N/head`), else the pull request's.
            let pull = RemoteRef::parse(&t.ref_name)
                .filter(|r| matches!(r, RemoteRef::Pull(_) | RemoteRef::GerritChange { .. }))
                .or_else(|| t.pr_number.map(RemoteRef::Pull))
                .ok_or_else(|| {
                    PlanError::Invalid(format!("`{}` is not a pull request ref", t.ref_name))
                })?;
            let mut refs = vec![pull];
            // The base branch as it is now, like the forge's own diff; the webhook's base
            // commit only when the branch is unknown.
            let base = match t.base_ref.as_deref().and_then(RemoteRef::parse) {
                Some(b @ RemoteRef::Branch(_)) => {
                    let name = b.refname();
                    refs.push(b);
                    name
                }
                _ => t.base.as_ref().map(|b| b.to_string()).ok_or_else(|| {
                    PlanError::Invalid("the pull request names no base branch or commit".into())
                })?,
            };
            Ok((
                refs,
                Change::Review {
                    base,
                    head: t.head.to_string(),
                },
            ))
        }
    }
}

/// Network and host faults are retried; a missing ref or commit is the change's own doing.
/// A rejected credential is the service's configuration, not the author's: retried too, so
/// that a fixed token picks the change up.
fn git_error(e: GitError) -> PlanError {
    match e {
        GitError::Auth { .. } => PlanError::Infra(e.to_string()),
        e if e.is_infrastructure() => PlanError::Infra(e.to_string()),
        e => PlanError::Invalid(e.to_string()),
    }
}

/// The name a package has in status contexts and `/packetary rebuild`: its spec's file
/// stem, as `packetary build` and the build report call it.
pub fn package_label(p: &PlannedPackage) -> String {
    Path::new(&p.spec)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.id.to_string())
}

/// One build per package × target, in the plan's build order, restricted to what a rebuild
/// comment names. Errors of the whole change fail the trigger; a package that cannot be
/// built becomes a build that starts out failed with the reason, and the others still build.
pub fn builds_of(
    plan: &Plan,
    only_package: Option<&str>,
    only_target: Option<&str>,
) -> Result<Vec<PlannedBuild>, PlanError> {
    if !plan.errors.is_empty() {
        return Err(PlanError::Invalid(plan.errors.join("; ")));
    }
    let wanted: Vec<&PlannedPackage> = plan
        .packages
        .iter()
        .filter(|p| only_package.is_none_or(|o| package_label(p) == o))
        .collect();
    if let Some(o) = only_package {
        if wanted.is_empty() {
            let names: Vec<String> = plan.packages.iter().map(package_label).collect();
            return Err(PlanError::Invalid(if names.is_empty() {
                format!("cannot rebuild `{o}`: this change builds no package")
            } else {
                format!(
                    "cannot rebuild `{o}`: this change builds only {}",
                    names.join(", ")
                )
            }));
        }
    }
    // A broken package with no target has no status context to fail in: fail the change.
    let homeless: Vec<String> = wanted
        .iter()
        .filter(|p| p.targets.is_empty())
        .filter_map(|p| {
            p.error
                .as_ref()
                .map(|e| format!("{}: {}", package_label(p), e.replace('\n', " ")))
        })
        .collect();
    if !homeless.is_empty() {
        return Err(PlanError::Invalid(homeless.join("; ")));
    }
    let out: Vec<PlannedBuild> = wanted
        .iter()
        .flat_map(|p| {
            let error = p.error.as_ref().map(|e| e.replace('\n', " "));
            p.targets
                .iter()
                .filter(|t| only_target.is_none_or(|o| t.as_str() == o))
                .map(move |t| PlannedBuild {
                    package: package_label(p),
                    spec_path: PathBuf::from(&p.spec),
                    target: t.clone(),
                    error: error.clone(),
                    stage: u32::try_from(p.stage).unwrap_or(u32::MAX),
                    nevr: p.nevr_on(t).cloned(),
                })
        })
        .collect();
    if let (Some(o), true) = (only_target, out.is_empty()) {
        return Err(PlanError::Invalid(format!(
            "cannot rebuild for `{o}`: no package of this change builds for that target"
        )));
    }
    Ok(out)
}

/// The service's git side: one mirror per repository under `data_dir/mirrors`, shared by
/// the planner and the builds' exports, specs read by rpm through `engine`, cached
/// under `data_dir/specs`, and the Provides learned from builds read from `store`.
pub fn git_backed(
    data_dir: &std::path::Path,
    store: Store,
    creds: Credentials,
    engine: crate::docker::Engine,
    targets: BTreeMap<TargetName, Target>,
    default_targets: Vec<TargetName>,
) -> (
    std::sync::Arc<super::source::MirrorSource>,
    std::sync::Arc<GitPlanner>,
) {
    let mirrors = MirrorCache::new(data_dir.join("mirrors"));
    let sources = super::source::MirrorSource::new(mirrors.clone(), creds.clone());
    let planner = GitPlanner::new(
        mirrors,
        creds,
        Some(SpecOracle::with_engine(
            crate::spec::SpecCache::new(data_dir.join("specs")),
            engine,
        )),
        targets,
        default_targets,
    )
    .with_store(store);
    (std::sync::Arc::new(sources), std::sync::Arc::new(planner))
}
