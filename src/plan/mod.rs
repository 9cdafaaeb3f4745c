//! From a change to the packages to build, and in what order.
//!
//! `select` (blocking, object database only) finds the packages a change touched;
//! `complete` asks rpm, through the spec cache, for names and dependencies and orders them.
//! [`plan_change`] does both. `discover` is the older file-system discovery used by
//! `packetary build PATH`.

pub mod change;
pub mod discover;
pub mod distgit;
pub mod layout;
pub mod order;
pub mod repo_config;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

pub use change::{
    select, Change, DeletedPackage, DiffKind, Plan, PlanOptions, PlannedPackage, Reason,
};
pub use discover::{discover, package_for_spec, DiscoverError, PackageSource};
pub use layout::{discover_tree, Layout, PackageDef, PackageId};
pub use repo_config::{RepoConfig, RepoConfigError, CONFIG_FILE};

use crate::config::Target;
use crate::git::tree::{commit_tree, export_files, ExportError};
use crate::git::GitError;
use crate::model::TargetName;
use crate::spec::{SpecOracle, SpecQuery};

/// Plans a change end to end: selection on the blocking pool, then spec facts and order.
/// `repo` is a bare mirror or any repository; `label` names it in the plan.
pub async fn plan_change(
    repo: PathBuf,
    label: String,
    change: Change,
    opts: PlanOptions,
    targets: &BTreeMap<TargetName, Target>,
    oracle: Option<&SpecOracle>,
) -> Result<Plan, GitError> {
    crate::git::init_libgit2();
    let path = repo.clone();
    let mut plan = crate::git::blocking(move || {
        let r = Repository::open(&path).map_err(|e| GitError::repo(&path, e))?;
        Ok(select(&r, &label, &change, &opts))
    })
    .await?;
    if let Some(oracle) = oracle {
        complete(&mut plan, &repo, targets, oracle).await;
    } else {
        finish_order(&mut plan, &HashMap::new());
    }
    Ok(plan)
}

/// Fills in names, NEVRs, dependencies and stages. Specs not in the cache are exported and
/// asked in the target's image; if that is impossible (no Docker) the plan says so and
/// keeps every package in one stage.
pub async fn complete(
    plan: &mut Plan,
    repo: &Path,
    targets: &BTreeMap<TargetName, Target>,
    oracle: &SpecOracle,
) {
    let mut facts: HashMap<(PackageId, TargetName), crate::spec::Answer> = HashMap::new();
    let mut misses: BTreeMap<TargetName, Vec<usize>> = BTreeMap::new();
    for (i, p) in plan.packages.iter().enumerate() {
        if p.error.is_some() {
            continue;
        }
        let Some(blob) = &p.spec_blob else { continue };
        for t in &p.targets {
            let Some(target) = targets.get(t) else {
                continue;
            };
            match oracle.cached(target, blob) {
                Some(a) => {
                    facts.insert((p.id.clone(), t.clone()), a);
                }
                None => misses.entry(t.clone()).or_default().push(i),
            }
        }
    }
    if !misses.is_empty() {
        if let Err(e) = query_misses(plan, repo, targets, oracle, &misses, &mut facts).await {
            plan.notices.push(format!(
                "spec queries are unavailable ({e}); names and build order are unknown, so every package is in the first stage"
            ));
        }
    }
    finish_order(plan, &facts);
}

async fn query_misses(
    plan: &Plan,
    repo: &Path,
    targets: &BTreeMap<TargetName, Target>,
    oracle: &SpecOracle,
    misses: &BTreeMap<TargetName, Vec<usize>>,
    facts: &mut HashMap<(PackageId, TargetName), crate::spec::Answer>,
) -> Result<(), String> {
    let head = plan.head.clone().ok_or("the plan has no head commit")?;
    let tmp = TempDir::new("packetary-plan")
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    // Export each package once, whatever the number of targets.
    let wanted: Vec<usize> = {
        let mut v: Vec<usize> = misses.values().flatten().copied().collect();
        v.sort();
        v.dedup();
        v
    };
    let defs: Vec<(usize, PackageDef)> = wanted
        .iter()
        .map(|&i| (i, def_of(&plan.packages[i])))
        .collect();
    let (repo_path, dir) = (repo.to_path_buf(), tmp.path().to_path_buf());
    let exported: HashMap<usize, Result<PathBuf, String>> = crate::git::blocking(move || {
        let r = Repository::open(&repo_path).map_err(|e| GitError::repo(&repo_path, e))?;
        let oid = Oid::from_str(head.as_str()).map_err(|e| GitError::repo(&repo_path, e))?;
        Ok(defs
            .into_iter()
            .map(|(i, d)| {
                let dest = dir.join(i.to_string());
                (
                    i,
                    export_def(&r, oid, &d, &dest)
                        .map(|_| dest)
                        .map_err(|e| e.to_string()),
                )
            })
            .collect())
    })
    .await
    .map_err(|e| e.to_string())?;
    for (t, idx) in misses {
        let Some(target) = targets.get(t) else {
            continue;
        };
        let mut queries = Vec::new();
        let mut who = Vec::new();
        for &i in idx {
            let p = &plan.packages[i];
            match exported.get(&i) {
                Some(Ok(dir)) => {
                    queries.push(SpecQuery {
                        blob: p.spec_blob.clone().unwrap_or_default(),
                        dir: dir.clone(),
                        spec_file: spec_file_name(&p.spec).to_string(),
                    });
                    who.push(p.id.clone());
                }
                Some(Err(e)) => {
                    facts.insert((p.id.clone(), t.clone()), Err(e.clone()));
                }
                None => {}
            }
        }
        let answers = oracle
            .query(target, &queries)
            .await
            .map_err(|e| e.to_string())?;
        for (id, a) in who.into_iter().zip(answers) {
            facts.insert((id, t.clone()), a);
        }
    }
    Ok(())
}

/// A directory removed on drop (the `tempfile` crate is only a dev-dependency).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let base =
            std::env::temp_dir().join(format!("{prefix}-{}", crate::model::BuildId::generate()));
        std::fs::create_dir_all(&base)?;
        Ok(TempDir(base))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Applies spec facts: names, per-package rpm errors, then the dependency order.
fn finish_order(plan: &mut Plan, facts: &HashMap<(PackageId, TargetName), crate::spec::Answer>) {
    let mut nodes: BTreeMap<PackageId, order::Node> = BTreeMap::new();
    for p in plan.packages.iter_mut() {
        if p.error.is_some() {
            continue;
        }
        let mut node = order::Node::default();
        for t in &p.targets {
            match facts.get(&(p.id.clone(), t.clone())) {
                Some(Ok(info)) => {
                    if p.nevr.is_none() {
                        p.name = Some(info.nevr.name.clone());
                        p.nevr = Some(info.nevr.clone());
                    }
                    node.build_requires
                        .extend(info.build_requires.iter().cloned());
                    node.provides.extend(info.provides.iter().cloned());
                }
                Some(Err(e)) => {
                    p.error = Some(if targets_differ(&p.targets) {
                        format!("{t}: {e}")
                    } else {
                        e.clone()
                    });
                    break;
                }
                None => {}
            }
        }
        if p.error.is_none() {
            nodes.insert(p.id.clone(), node);
        }
    }
    let o = order::order(&nodes);
    for p in plan.packages.iter_mut() {
        if let Some(msg) = o.cycles.get(&p.id) {
            p.error = Some(msg.clone());
        }
        p.stage = o.stage.get(&p.id).copied().unwrap_or(0);
        p.depends_on = o.depends_on.get(&p.id).cloned().unwrap_or_default();
    }
    plan.packages
        .sort_by(|a, b| (a.stage, &a.id).cmp(&(b.stage, &b.id)));
}

fn targets_differ(t: &[TargetName]) -> bool {
    t.len() > 1
}

fn spec_file_name(spec: &str) -> &str {
    spec.rsplit('/').next().unwrap_or(spec)
}

fn def_of(p: &PlannedPackage) -> PackageDef {
    PackageDef {
        id: p.id.clone(),
        layout: p.layout,
        spec: p.spec.clone(),
        source_dir: p.source_dir.clone(),
        problem: None,
    }
}

fn export_def(
    repo: &Repository,
    commit: Oid,
    d: &PackageDef,
    dest: &Path,
) -> Result<PackageSource, ExportError> {
    let root = commit_tree(repo, commit)?;
    let files = layout::package_files(repo, &root, d)?;
    export_files(repo, &files, dest)?;
    let canon = |p: &Path| {
        p.canonicalize().map_err(|source| ExportError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let root = canon(dest)?;
    Ok(PackageSource {
        spec: root.join(spec_file_name(&d.spec)),
        source_dir: root.clone(),
        root,
    })
}

/// Writes a planned package's files at `commit` into `dest` (spec and sources side by
/// side), from the object database, and returns it as the executor wants it. dist-git
/// tarballs are not fetched here: see [`fetch_lookaside`].
pub fn export_package(
    repo: &Repository,
    commit: Oid,
    p: &PlannedPackage,
    dest: &Path,
) -> Result<PackageSource, ExportError> {
    export_def(repo, commit, &def_of(p), dest)
}

/// For a dist-git package exported to `dir`: downloads and verifies the tarballs its
/// `sources` file lists. A no-op for other layouts.
pub async fn fetch_lookaside(
    p: &PlannedPackage,
    dir: &Path,
    template: Option<&str>,
) -> Result<(), distgit::LookasideError> {
    if p.layout != Layout::DistGit {
        return Ok(());
    }
    let Ok(text) = tokio::fs::read_to_string(dir.join("sources")).await else {
        return Ok(());
    };
    let sources = distgit::parse_sources(&text)?;
    let name = p.name.clone().unwrap_or_else(|| {
        Path::new(spec_file_name(&p.spec))
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    distgit::fetch_sources(template, &name, &sources, dir).await
}
