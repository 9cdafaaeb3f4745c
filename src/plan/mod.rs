//! From a change to the packages to build, and in what order.
//!
//! `select` (blocking, object database only) finds the packages a change touched;
//! `complete` asks rpm, through the spec cache, for names and dependencies and orders them.
//! [`plan_change`] does both. `discover` finds the packages of a directory on this host
//! (`packetary build PATH`), which [`plan_dir`] plans the same way.

pub mod change;
pub mod dir;
pub mod discover;
pub mod distgit;
mod endpoints;
pub mod layout;
pub mod order;
pub mod provides;
pub mod repo_config;
mod select;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

pub use change::{
    Change, DeletedPackage, DiffKind, Plan, PlanOptions, PlannedPackage, Reason, SharedFile,
};
pub use dir::plan_dir;
pub use discover::{discover, package_for_spec, DiscoverError, PackageSource};
pub use layout::{discover_tree, Layout, PackageDef, PackageId};
pub use repo_config::{RepoConfig, RepoConfigError, CONFIG_FILE};
pub use select::{select, LARGE_CHANGE};

use crate::config::Target;
use crate::git::tree::{commit_tree, export_files, ExportError};
use crate::git::GitError;
use crate::model::TargetName;
use crate::spec::{CacheKey, SpecOracle, SpecQuery};

pub use provides::Learned;

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
    plan_change_learned(repo, label, change, opts, targets, oracle, &Learned::new()).await
}

/// [`plan_change`], ordering also by the Provides `learned` from earlier builds.
pub async fn plan_change_learned(
    repo: PathBuf,
    label: String,
    change: Change,
    opts: PlanOptions,
    targets: &BTreeMap<TargetName, Target>,
    oracle: Option<&SpecOracle>,
    learned: &Learned,
) -> Result<Plan, GitError> {
    crate::git::init_libgit2();
    let path = repo.clone();
    let mut plan = crate::git::blocking(move || {
        let r = Repository::open(&path).map_err(|e| GitError::repo(&path, e))?;
        Ok(select(&r, &label, &change, &opts))
    })
    .await?;
    if let Some(oracle) = oracle {
        complete(&mut plan, &repo, targets, oracle, learned).await;
    } else {
        finish_order(&mut plan, &Facts::new(), learned);
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
    learned: &Learned,
) {
    let (keys, mut facts, misses) = cached_facts(plan, targets, oracle).await;
    if !misses.is_empty() {
        if let Err(e) = query_misses(plan, repo, targets, &keys, oracle, &misses, &mut facts).await
        {
            plan.notices.push(unavailable(&e));
        }
    }
    finish_order(plan, &facts, learned);
}

/// Rpm's answers for one plan, by package and target.
type Facts = HashMap<(PackageId, TargetName), crate::spec::Answer>;
/// Which packages (by index in the plan) the cache had no answer for, per target.
type Misses = BTreeMap<TargetName, Vec<usize>>;

/// The notice of a plan whose specs could not be asked.
fn unavailable(e: &QueryError) -> String {
    format!(
        "spec queries are unavailable ({e}); names and build order are unknown, so every package is in the first stage"
    )
}

/// The cache key of each target of the plan, the answers the cache has, and what it lacks.
async fn cached_facts(
    plan: &Plan,
    targets: &BTreeMap<TargetName, Target>,
    oracle: &SpecOracle,
) -> (BTreeMap<TargetName, CacheKey>, Facts, Misses) {
    let mut facts = Facts::new();
    let mut misses = Misses::new();
    let mut keys: BTreeMap<TargetName, CacheKey> = BTreeMap::new();
    for t in plan.packages.iter().flat_map(|p| &p.targets) {
        if let (false, Some(target)) = (keys.contains_key(t), targets.get(t)) {
            keys.insert(t.clone(), oracle.key(target).await);
        }
    }
    for (i, p) in plan.packages.iter().enumerate() {
        if p.error.is_some() {
            continue;
        }
        let Some(blob) = &p.spec_blob else { continue };
        for t in &p.targets {
            let Some(key) = keys.get(t) else {
                continue;
            };
            match oracle.cached(key, blob) {
                Some(a) => {
                    facts.insert((p.id.clone(), t.clone()), a);
                }
                None => misses.entry(t.clone()).or_default().push(i),
            }
        }
    }
    (keys, facts, misses)
}

/// The packages (by index) the cache had no answer for, each once whatever its targets.
fn missed(misses: &Misses) -> Vec<usize> {
    let mut v: Vec<usize> = misses.values().flatten().copied().collect();
    v.sort();
    v.dedup();
    v
}

/// Why the specs the cache lacks could not be asked about at all: every package is then
/// in the first stage.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    #[error("the plan has no head commit")]
    NoHead,
    #[error("cannot make a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
}

/// Where each package's spec is asked (by index in the plan), or why its files could not
/// be put there (rpm's answer for it is then that error).
pub(crate) type QueryDirs = HashMap<usize, Result<PathBuf, crate::spec::AnswerError>>;

async fn query_misses(
    plan: &Plan,
    repo: &Path,
    targets: &BTreeMap<TargetName, Target>,
    keys: &BTreeMap<TargetName, CacheKey>,
    oracle: &SpecOracle,
    misses: &Misses,
    facts: &mut Facts,
) -> Result<(), QueryError> {
    let head = plan.head.clone().ok_or(QueryError::NoHead)?;
    let tmp = TempDir::new("packetary-plan").map_err(QueryError::TempDir)?;
    // Export each package once, whatever the number of targets.
    let defs: Vec<(usize, PackageDef)> = missed(misses)
        .into_iter()
        .map(|i| (i, def_of(&plan.packages[i])))
        .collect();
    let (repo_path, dir) = (repo.to_path_buf(), tmp.path().to_path_buf());
    let exported: QueryDirs = crate::git::blocking(move || {
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
                        .map_err(|e| crate::spec::AnswerError::Unexported(e.to_string())),
                )
            })
            .collect())
    })
    .await?;
    ask_misses(plan, targets, keys, oracle, misses, &exported, facts).await
}

/// Asks rpm about the packages the cache lacked, each from the directory `dirs` holds for
/// it (spec and sources side by side), one batch per target.
async fn ask_misses(
    plan: &Plan,
    targets: &BTreeMap<TargetName, Target>,
    keys: &BTreeMap<TargetName, CacheKey>,
    oracle: &SpecOracle,
    misses: &Misses,
    dirs: &QueryDirs,
    facts: &mut Facts,
) -> Result<(), QueryError> {
    for (t, idx) in misses {
        let (Some(target), Some(key)) = (targets.get(t), keys.get(t)) else {
            continue;
        };
        let mut queries = Vec::new();
        let mut who = Vec::new();
        for &i in idx {
            let p = &plan.packages[i];
            match dirs.get(&i) {
                Some(Ok(dir)) => {
                    queries.push(SpecQuery {
                        blob: p.spec_blob.clone().unwrap_or_default(),
                        dir: dir.clone(),
                        spec_file: spec_file_name(&p.spec).to_string(),
                        path: p.spec.clone(),
                    });
                    who.push(p.id.clone());
                }
                Some(Err(e)) => {
                    facts.insert((p.id.clone(), t.clone()), Err(e.clone()));
                }
                None => {}
            }
        }
        let answers = oracle.query(target, key, &queries).await?;
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
fn finish_order(plan: &mut Plan, facts: &Facts, learned: &Learned) {
    resolve_shared(plan, facts);
    let mut nodes: BTreeMap<PackageId, order::Node> = BTreeMap::new();
    for p in plan.packages.iter_mut() {
        if p.error.is_some() {
            continue;
        }
        let mut node = order::Node::default();
        for t in &p.targets {
            match facts.get(&(p.id.clone(), t.clone())) {
                Some(Ok(info)) => {
                    match &p.nevr {
                        None => {
                            p.name = Some(info.nevr.name.clone());
                            p.nevr = Some(info.nevr.clone());
                        }
                        Some(n) if *n != info.nevr => {
                            p.target_nevrs.insert(t.clone(), info.nevr.clone());
                        }
                        Some(_) => {}
                    }
                    node.build_requires
                        .extend(info.build_requires.iter().cloned());
                    node.provides.extend(info.provides.iter().cloned());
                }
                Some(Err(e)) => {
                    p.error = Some(if targets_differ(&p.targets) {
                        format!("{t}: {e}")
                    } else {
                        e.to_string()
                    });
                    break;
                }
                None => {}
            }
        }
        if p.error.is_none() {
            // What the last successful build provided, for what rpmspec cannot see.
            node.provides
                .extend(provides::learned_for(learned, &p.targets, spec_stem(&p.spec)).cloned());
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
    note_broken_providers(plan, facts, learned);
}

/// A spec's file name without `.spec`: how builds, statuses and learned Provides name it.
fn spec_stem(spec: &str) -> &str {
    let f = spec_file_name(spec);
    f.strip_suffix(".spec").unwrap_or(f)
}

/// Shared files become reasons of the specs whose Source/Patch tags name them; a file named
/// by none is every spec's (still present) or nobody's (deleted). Specs left without a
/// reason are dropped from the plan.
fn resolve_shared(plan: &mut Plan, facts: &HashMap<(PackageId, TargetName), crate::spec::Answer>) {
    let groups = std::mem::take(&mut plan.shared);
    if groups.is_empty() {
        return;
    }
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in plan.packages.iter().enumerate().filter(|(_, p)| p.shared) {
        members
            .entry(p.spec.rsplit_once('/').map_or("", |(d, _)| d))
            .or_default()
            .push(i);
    }
    let names = |p: &PlannedPackage, file: &str| {
        p.targets.iter().any(|t| {
            matches!(facts.get(&(p.id.clone(), t.clone())), Some(Ok(info)) if info.sources.iter().any(|s| s == file))
        })
    };
    let n = plan.packages.len();
    let mut named: Vec<Vec<String>> = vec![vec![]; n];
    let mut fallback: Vec<Vec<String>> = vec![vec![]; n];
    let mut unused_deleted = Vec::new();
    let none = Vec::new();
    for (dir, fs) in &groups {
        let cands = members.get(dir.as_str()).unwrap_or(&none);
        for f in fs {
            let path = &f.path;
            let base = path.rsplit('/').next().unwrap_or(path);
            let naming: Vec<usize> = cands
                .iter()
                .copied()
                .filter(|&i| names(&plan.packages[i], base))
                .collect();
            if !naming.is_empty() {
                for i in naming {
                    named[i].push(path.clone());
                }
            } else if f.deleted {
                unused_deleted.push(path.clone());
            } else {
                for &i in cands {
                    fallback[i].push(path.clone());
                }
            }
        }
    }
    for (i, p) in plan.packages.iter_mut().enumerate() {
        p.shared = false;
        let own = std::mem::take(&mut named[i]);
        if !own.is_empty() {
            match p.reasons.iter_mut().find_map(|r| match r {
                Reason::Changed { paths, count } => Some((paths, count)),
                _ => None,
            }) {
                Some((paths, count)) => {
                    *count += own.len();
                    paths.extend(own.into_iter().take(5usize.saturating_sub(paths.len())));
                }
                None => p.reasons.insert(
                    0,
                    Reason::Changed {
                        count: own.len(),
                        paths: own.into_iter().take(5).collect(),
                    },
                ),
            }
        }
        let all = std::mem::take(&mut fallback[i]);
        if !all.is_empty() {
            p.reasons.push(Reason::Shared {
                count: all.len(),
                paths: all.into_iter().take(5).collect(),
                dir: p
                    .spec
                    .rsplit_once('/')
                    .map(|(d, _)| d.to_string())
                    .unwrap_or_default(),
            });
        }
    }
    let before = plan.packages.len();
    plan.packages.retain(|p| !p.reasons.is_empty());
    let dropped = before - plan.packages.len();
    if dropped > 0 {
        plan.notices.push(format!(
            "{dropped} spec(s) sharing a directory with changed files are not rebuilt: their Source/Patch tags name none of those files"
        ));
    }
    if !unused_deleted.is_empty() {
        plan.notices.push(format!(
            "deleted {}: named by no spec's Source/Patch tags, so nothing is rebuilt for it",
            unused_deleted.join(", ")
        ));
    }
}

/// A package whose spec has an error is built by nobody, so what it would provide is not
/// in the change: each package of the plan that needs it is told so, naming it. Its
/// capabilities are unknown to rpm now; what its last build provided, its spec's name and
/// the usual subpackage names stand for them.
fn note_broken_providers(
    plan: &mut Plan,
    facts: &HashMap<(PackageId, TargetName), crate::spec::Answer>,
    learned: &Learned,
) {
    const SUBPACKAGES: [&str; 8] = [
        "", "-devel", "-libs", "-static", "-common", "-headers", "-tools", "-data",
    ];
    let broken: Vec<(String, BTreeSet<String>)> = plan
        .packages
        .iter()
        .filter(|p| p.error.is_some())
        .map(|p| {
            let stem = spec_stem(&p.spec);
            let mut caps: BTreeSet<String> =
                SUBPACKAGES.iter().map(|s| format!("{stem}{s}")).collect();
            for t in &p.targets {
                if let Some(v) = learned.get(t).and_then(|m| m.get(stem)) {
                    caps.extend(v.iter().map(|c| order::provide_name(c).to_string()));
                }
            }
            (p.spec.clone(), caps)
        })
        .collect();
    if broken.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for p in plan.packages.iter_mut().filter(|p| p.error.is_none()) {
        let wants: BTreeSet<String> = p
            .targets
            .iter()
            .filter_map(|t| match facts.get(&(p.id.clone(), t.clone())) {
                Some(Ok(info)) => Some(
                    info.build_requires
                        .iter()
                        .flat_map(|c| order::requirement_names(c)),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        for (spec, caps) in &broken {
            let hit: Vec<&String> = wants.iter().filter(|w| caps.contains(*w)).collect();
            if let Some(w) = hit.first() {
                let msg = format!(
                    "{}: needs {w}, which {spec} of this change would build, but that spec has an error; it is built against what the target's repositories have",
                    p.id
                );
                p.notices.push(msg.clone());
                notes.push(msg);
            }
        }
    }
    plan.notices.extend(notes);
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
