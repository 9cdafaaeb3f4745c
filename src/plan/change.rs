//! From a change (a push or a review) to the packages it touched: which commits to
//! compare, which configuration applies, and which packages each changed path belongs to.
//! Only reads the object database; spec facts and order are added afterwards.

use std::collections::{BTreeMap, BTreeSet};

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::distgit;
use super::layout::{discover_tree, Layout, PackageDef, PackageId, Resolver};
use super::repo_config::{RepoConfig, CONFIG_FILE};
use crate::git::tree::{changed_paths, commit_tree, resolve_commit};
use crate::git::GitError;
use crate::model::{CommitSha, Nevr, TargetName};

/// What happened in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// `after` was pushed over `before`; `before` absent (or all zeros) for a new branch.
    Push {
        before: Option<String>,
        after: String,
    },
    /// `head` is proposed for `base` (a branch name or a commit).
    Review { base: String, head: String },
}

/// How the compared commits were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    Push,
    Review,
    NewBranch,
    /// A push whose `before` no longer exists.
    ForcePush,
}

/// Why a package is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Files of the package changed (the first few, and how many in all).
    Changed { paths: Vec<String>, count: usize },
    /// `.packetary.toml` changed in a way that concerns this package.
    Config { detail: String },
    /// Files shared by the specs of `dir` changed and no spec's Source/Patch tags name
    /// them (or rpm could not say): every spec there is rebuilt.
    Shared {
        paths: Vec<String>,
        count: usize,
        dir: String,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |paths: &[String], count: usize| {
            if count > paths.len() {
                format!("{} (+{} more)", paths.join(", "), count - paths.len())
            } else {
                paths.join(", ")
            }
        };
        match self {
            Reason::Changed { paths, count } => write!(f, "changed {}", list(paths, *count)),
            Reason::Config { detail } => f.write_str(detail),
            Reason::Shared { paths, count, dir } => write!(
                f,
                "changed {}, shared by the specs of {} and named by none of their Source/Patch tags, so every one is rebuilt",
                list(paths, *count),
                if dir.is_empty() { "." } else { dir }
            ),
        }
    }
}

/// A changed file of a directory several specs share, pending rpm's word on which specs
/// name it ([`super::complete`] turns it into a [`Reason`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    pub path: String,
    /// Gone from the new tree: nothing can use it any more unless a spec still names it.
    pub deleted: bool,
}

/// One package to build, for one or more targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPackage {
    pub id: PackageId,
    pub layout: Layout,
    pub spec: String,
    pub source_dir: String,
    /// The spec's blob id: the spec cache's key.
    pub spec_blob: Option<String>,
    /// From rpm, when the spec could be queried.
    pub name: Option<String>,
    pub nevr: Option<Nevr>,
    pub targets: Vec<TargetName>,
    pub reasons: Vec<Reason>,
    /// Build stage: every package of a stage may build at once, after the earlier stages.
    pub stage: usize,
    /// Plan packages whose RPMs this one needs (it builds after them and sees them).
    pub depends_on: Vec<PackageId>,
    /// Why it cannot be built; it is then left out of the build but stays in the plan.
    pub error: Option<String>,
    /// A candidate through the shared files of its spec's directory ([`Plan::shared`]);
    /// cleared once rpm has said which specs name them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Things worth knowing about this package (a dependency whose spec is broken).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

/// A package of the compared commit that the change removed: nothing to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedPackage {
    pub id: PackageId,
    pub spec: String,
}

/// Everything needed to run, show or report the builds of one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub repo: String,
    pub change: Change,
    pub kind: DiffKind,
    pub head: Option<CommitSha>,
    /// The commit whose tree `head` was compared with (`None`: everything in `head`).
    pub compared_with: Option<CommitSha>,
    /// Where `.packetary.toml` was read.
    pub config_from: Option<CommitSha>,
    pub changed_paths: usize,
    /// The dist-git lookaside URL template from `.packetary.toml`, if any.
    pub lookaside: Option<String>,
    /// Packages in build order (by stage, then path).
    pub packages: Vec<PlannedPackage>,
    pub deleted: Vec<DeletedPackage>,
    /// Changed shared files by the directory of the specs that share them, kept once per
    /// directory rather than per spec (a first commit of 3,000 specs in 26 directories
    /// would otherwise list each file a hundred times); emptied once resolved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared: BTreeMap<String, Vec<SharedFile>>,
    /// Things worth knowing that do not stop anything.
    pub notices: Vec<String>,
    /// Problems of the whole change (a missing commit, a broken `.packetary.toml`): when
    /// present, nothing is built.
    pub errors: Vec<String>,
}

impl Plan {
    fn empty(repo: &str, change: &Change) -> Plan {
        Plan {
            repo: repo.to_string(),
            change: change.clone(),
            kind: match change {
                Change::Push { .. } => DiffKind::Push,
                Change::Review { .. } => DiffKind::Review,
            },
            head: None,
            compared_with: None,
            config_from: None,
            changed_paths: 0,
            lookaside: None,
            packages: vec![],
            deleted: vec![],
            shared: BTreeMap::new(),
            notices: vec![],
            errors: vec![],
        }
    }

    /// Packages that can be built (no error of their own).
    pub fn buildable(&self) -> impl Iterator<Item = &PlannedPackage> {
        self.packages.iter().filter(|p| p.error.is_none())
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty() || self.packages.iter().any(|p| p.error.is_some())
    }
}

/// What the planner needs from the service configuration.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The branch a new branch is compared with (`refs/heads/main`, or `main`); default:
    /// the repository's HEAD.
    pub default_branch: Option<String>,
    /// Targets used when `.packetary.toml` names none.
    pub default_targets: Vec<String>,
    /// Every target the service knows; others named by a repository are refused.
    pub known_targets: Vec<String>,
}

/// A package a change touched, while paths are mapped.
struct Pick {
    def: PackageDef,
    shown: Vec<String>,
    count: usize,
    bad: Vec<String>,
    shared: bool,
}

/// Changes above this many paths are still planned, with a notice.
pub const LARGE_CHANGE: usize = 10_000;
/// Paths shown per package in its reason.
const SHOWN_PATHS: usize = 5;

fn sha(oid: Oid) -> Option<CommitSha> {
    CommitSha::parse(&oid.to_string()).ok()
}

fn is_zero(rev: &str) -> bool {
    !rev.is_empty() && rev.bytes().all(|b| b == b'0')
}

/// Reads `.packetary.toml` at a commit: `Ok(None)` when absent.
fn read_config(repo: &Repository, commit: Oid) -> Result<(Option<Oid>, RepoConfig), String> {
    let tree = commit_tree(repo, commit).map_err(|e| e.to_string())?;
    let Ok(entry) = tree.get_name_bytes(CONFIG_FILE.as_bytes()).ok_or(()) else {
        return Ok((None, RepoConfig::default()));
    };
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| e.message().to_string())?;
    let text =
        std::str::from_utf8(blob.content()).map_err(|_| format!("{CONFIG_FILE} is not UTF-8"))?;
    let cfg = RepoConfig::parse(text).map_err(|e| e.to_string())?;
    Ok((Some(entry.id()), cfg))
}

/// The commits to compare: `(compared_with, head, config commit, kind, notices)`.
struct Endpoints {
    old: Option<Oid>,
    head: Oid,
    config_at: Oid,
    /// Where the previous configuration is read, to see what a change to it affects.
    old_config_at: Option<Oid>,
    kind: DiffKind,
}

fn default_branch_commit(repo: &Repository, opts: &PlanOptions) -> Result<Oid, String> {
    let name = match &opts.default_branch {
        Some(b) => b.clone(),
        None => repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| {
                h.symbolic_target()
                    .ok()
                    .flatten()
                    .map(|s: &str| s.to_string())
            })
            .unwrap_or_else(|| "refs/heads/main".into()),
    };
    resolve_commit(repo, &name).map_err(|_| {
        format!("the default branch `{name}` is not in the mirror, so a new branch cannot be compared with it\n  fix: fetch it, or name it with --default-branch")
    })
}

/// Compares with the fork point from the default branch; when `head` is already on it,
/// with `head`'s parent, so that at least the pushed commit is planned.
fn fork_point(
    repo: &Repository,
    head: Oid,
    opts: &PlanOptions,
    notices: &mut Vec<String>,
) -> Result<Option<Oid>, String> {
    let default = default_branch_commit(repo, opts)?;
    match repo.merge_base(default, head) {
        Ok(mb) if mb == head => {
            let parent = repo
                .find_commit(head)
                .ok()
                .and_then(|c| c.parent_id(0).ok());
            notices.push(
                "the pushed commit is already on the default branch; comparing it with its parent"
                    .into(),
            );
            Ok(parent)
        }
        Ok(mb) => Ok(Some(mb)),
        Err(_) => {
            notices.push(
                "the branch shares no history with the default branch; planning every package"
                    .into(),
            );
            Ok(None)
        }
    }
}

fn endpoints(
    repo: &Repository,
    change: &Change,
    opts: &PlanOptions,
    notices: &mut Vec<String>,
) -> Result<Endpoints, String> {
    let resolve = |rev: &str| resolve_commit(repo, rev).map_err(|e| e.to_string());
    match change {
        Change::Review { base, head } => {
            let h = resolve(head)?;
            let b = resolve(base)?;
            let mb = repo.merge_base(b, h).map_err(|_| {
                format!("`{head}` shares no history with `{base}`, so there is nothing to compare it with")
            })?;
            Ok(Endpoints {
                old: Some(mb),
                head: h,
                config_at: b,
                old_config_at: None,
                kind: DiffKind::Review,
            })
        }
        Change::Push { before, after } => {
            let h = resolve(after)?;
            let (old, kind) = match before.as_deref().filter(|b| !b.is_empty() && !is_zero(b)) {
                None => (fork_point(repo, h, opts, notices)?, DiffKind::NewBranch),
                Some(b) => match resolve_commit(repo, b) {
                    Ok(o) => (Some(o), DiffKind::Push),
                    Err(GitError::MissingRev { .. }) => {
                        notices.push(format!(
                            "`{b}` (the branch's previous tip) is gone, probably force-pushed away; planning everything the branch changed since it left the default branch"
                        ));
                        (fork_point(repo, h, opts, notices)?, DiffKind::ForcePush)
                    }
                    Err(e) => return Err(e.to_string()),
                },
            };
            Ok(Endpoints {
                old,
                head: h,
                config_at: h,
                old_config_at: old,
                kind,
            })
        }
    }
}

/// Plans `change` in `repo` without asking rpm anything: packages, reasons, targets,
/// deletions, errors. Order and names are filled in later ([`super::complete`]).
pub fn select(repo: &Repository, label: &str, change: &Change, opts: &PlanOptions) -> Plan {
    let mut plan = Plan::empty(label, change);
    let mut notices = Vec::new();
    let ends = match endpoints(repo, change, opts, &mut notices) {
        Ok(e) => e,
        Err(e) => {
            plan.notices = notices;
            plan.errors.push(e);
            return plan;
        }
    };
    plan.notices = notices;
    plan.kind = ends.kind;
    plan.head = sha(ends.head);
    plan.compared_with = ends.old.and_then(sha);
    plan.config_from = sha(ends.config_at);
    if let Err(e) = select_packages(repo, &ends, opts, &mut plan) {
        plan.errors.push(e);
    }
    plan
}

fn select_packages(
    repo: &Repository,
    ends: &Endpoints,
    opts: &PlanOptions,
    plan: &mut Plan,
) -> Result<(), String> {
    let (cfg_blob, cfg) = read_config(repo, ends.config_at)
        .map_err(|e| format!("{e}\n  (read at {})", ends.config_at))?;
    let unknown: Vec<&String> = cfg
        .targets
        .iter()
        .chain(cfg.overrides.iter().flat_map(|o| &o.targets))
        .filter(|t| !opts.known_targets.contains(t))
        .collect();
    if let Some(t) = unknown.first() {
        return Err(format!(
            "{CONFIG_FILE}: key `targets`: no target named `{t}` is configured in this service\n  fix: use one of: {}",
            opts.known_targets.join(", ")
        ));
    }

    plan.lookaside = cfg.lookaside.clone();
    let paths = changed_paths(repo, ends.old, ends.head).map_err(|e| e.to_string())?;
    plan.changed_paths = paths.len();
    if paths.len() > LARGE_CHANGE {
        plan.notices.push(format!(
            "large change: {} paths differ; every package they touch is planned",
            paths.len()
        ));
    }
    let head_tree = commit_tree(repo, ends.head).map_err(|e| e.to_string())?;
    let mut new = Resolver::new(repo, head_tree, cfg.layout);
    let old_tree = ends
        .old
        .map(|o| commit_tree(repo, o))
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut old = old_tree.map(|t| Resolver::new(repo, t, cfg.layout));

    let mut picked: BTreeMap<PackageId, Pick> = BTreeMap::new();
    let mut deleted: BTreeMap<PackageId, DeletedPackage> = BTreeMap::new();
    let mut config_touched = false;
    let mut unowned_bad = Vec::new();
    for c in &paths {
        let (path, bad) = match c.path.to_str() {
            Some(p) => (p.to_string(), None),
            None => {
                // Map by the longest UTF-8 prefix of directories; the package then carries the error.
                let lossy = c.path.display().into_owned();
                let parts: Vec<&[u8]> = c.path.as_bytes().split(|b| *b == b'/').collect();
                let good: Vec<&str> = parts
                    .iter()
                    .take(parts.len().saturating_sub(1))
                    .map_while(|p| std::str::from_utf8(p).ok())
                    .collect();
                (
                    format!("{}/\u{fffd}", good.join("/"))
                        .trim_start_matches('/')
                        .to_string(),
                    Some(lossy),
                )
            }
        };
        if path == CONFIG_FILE {
            config_touched = true;
            continue;
        }
        let owners = new.owners(&path);
        if owners.packages.is_empty() {
            if let Some(b) = &bad {
                unowned_bad.push(b.clone());
            }
        }
        let shared = owners.shared && bad.is_none();
        if let (true, Some(first)) = (shared, owners.packages.first()) {
            let group = first.spec.rsplit_once('/').map_or("", |(d, _)| d);
            plan.shared
                .entry(group.to_string())
                .or_default()
                .push(SharedFile {
                    path: path.clone(),
                    deleted: !new.has_file(&path),
                });
        }
        for p in owners.packages {
            let e = picked.entry(p.id.clone()).or_insert_with(|| Pick {
                def: p.clone(),
                shown: vec![],
                count: 0,
                bad: vec![],
                shared: false,
            });
            if let Some(b) = &bad {
                e.bad.push(b.clone());
            }
            if shared {
                e.shared = true;
                continue;
            }
            e.count += 1;
            if e.shown.len() < SHOWN_PATHS {
                e.shown.push(bad.clone().unwrap_or_else(|| path.clone()));
            }
        }
        if let Some(old) = old.as_mut() {
            for p in old.owners(&path).packages {
                if !picked.contains_key(&p.id) && !new.has_spec(&p.spec) {
                    deleted.insert(
                        p.id.clone(),
                        DeletedPackage {
                            id: p.id.clone(),
                            spec: p.spec.clone(),
                        },
                    );
                }
            }
        }
    }
    for b in unowned_bad {
        plan.notices.push(format!(
            "{b}: a path that is not valid UTF-8, outside any package; ignored"
        ));
    }
    // A package both deleted (old layout) and present (new layout) is simply planned.
    deleted.retain(|id, _| !picked.contains_key(id));

    let mut config_reasons: BTreeMap<PackageId, (PackageDef, String)> = BTreeMap::new();
    match ends.kind {
        DiffKind::Review if config_touched => plan.notices.push(format!(
            "this change edits {CONFIG_FILE}; for a review it is read from the base, so the edit takes effect once merged"
        )),
        DiffKind::Review => {}
        _ => {
            let old_cfg = match ends.old_config_at {
                Some(o) => read_config(repo, o).ok(),
                None => None,
            };
            let changed = old_cfg.as_ref().is_some_and(|(b, _)| *b != cfg_blob) || (ends.old_config_at.is_none() && cfg_blob.is_some());
            if changed {
                let old_cfg = old_cfg.map(|(_, c)| c).unwrap_or_default();
                config_reasons = config_effects(repo, &new, &old_cfg, &cfg, opts)?;
            }
        }
    }

    let mut filtered_out = 0;
    let mut packages = Vec::new();
    let all: BTreeSet<PackageId> = picked
        .keys()
        .chain(config_reasons.keys())
        .cloned()
        .collect();
    for id in all {
        let (def, mut reasons, bad, shared) = match (picked.remove(&id), config_reasons.remove(&id))
        {
            (Some(pick), cfg_reason) => {
                let mut r = vec![];
                if pick.count > 0 {
                    r.push(Reason::Changed {
                        paths: pick.shown,
                        count: pick.count,
                    });
                }
                if let Some((_, d)) = cfg_reason {
                    r.push(Reason::Config { detail: d });
                }
                (pick.def, r, pick.bad, pick.shared)
            }
            (None, Some((def, d))) => (def, vec![Reason::Config { detail: d }], vec![], false),
            (None, None) => continue,
        };
        if !cfg.selects(id.as_str()) {
            filtered_out += 1;
            continue;
        }
        reasons.dedup();
        let targets: Vec<TargetName> = cfg
            .targets_for(id.as_str(), &opts.default_targets)
            .iter()
            .filter_map(|t| TargetName::parse(t).ok())
            .collect();
        let mut p = PlannedPackage {
            id: id.clone(),
            layout: def.layout,
            spec: def.spec.clone(),
            source_dir: def.source_dir.clone(),
            spec_blob: None,
            name: None,
            nevr: None,
            targets,
            reasons,
            stage: 0,
            depends_on: vec![],
            error: def.problem.clone(),
            shared,
            notices: vec![],
        };
        if p.error.is_none() {
            if let Some(b) = bad.first() {
                p.error = Some(format!("{b}: the path is not valid UTF-8\n  fix: rename it; package file names must be UTF-8"));
            }
        }
        if p.error.is_none() {
            match new.package_files(&def) {
                Ok(files) => {
                    p.spec_blob = super::layout::spec_blob(&def, &files).map(|o| o.to_string());
                    if def.layout == Layout::DistGit {
                        if let Some(f) = files.iter().find(|f| f.dest == "sources") {
                            if let Err(e) = repo
                                .find_blob(f.blob)
                                .map_err(|e| e.message().to_string())
                                .and_then(|b| {
                                    distgit::parse_sources(&String::from_utf8_lossy(b.content()))
                                        .map_err(|e| e.to_string())
                                })
                            {
                                p.error = Some(e);
                            }
                        }
                    }
                }
                Err(e) => p.error = Some(e.to_string()),
            }
        }
        if p.targets.is_empty() && p.error.is_none() {
            p.error = Some("no target to build for\n  fix: name targets in .packetary.toml or in the service's default_targets".into());
        }
        packages.push(p);
    }
    if filtered_out > 0 {
        plan.notices.push(format!(
            "{filtered_out} changed package(s) are not selected by {CONFIG_FILE} (`packages`/`exclude`) and are not built"
        ));
    }
    plan.packages = packages;
    plan.deleted = deleted.into_values().collect();
    Ok(())
}

/// Packages of the new tree whose treatment differs between the old and new configuration:
/// newly selected, recognised differently, other targets, other lookaside.
fn config_effects(
    repo: &Repository,
    new: &Resolver<'_>,
    old_cfg: &RepoConfig,
    cfg: &RepoConfig,
    opts: &PlanOptions,
) -> Result<BTreeMap<PackageId, (PackageDef, String)>, String> {
    let now = discover_tree(repo, new.root(), cfg.layout).map_err(|e| e.to_string())?;
    let before: BTreeMap<PackageId, PackageDef> = if old_cfg.layout == cfg.layout {
        now.iter().map(|p| (p.id.clone(), p.clone())).collect()
    } else {
        discover_tree(repo, new.root(), old_cfg.layout)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect()
    };
    let mut out = BTreeMap::new();
    for p in now {
        if !cfg.selects(p.id.as_str()) {
            continue;
        }
        let detail = match before.get(&p.id) {
            None => Some("the package layout in .packetary.toml changed".to_string()),
            Some(_) if !old_cfg.selects(p.id.as_str()) => {
                Some(".packetary.toml now selects this package".into())
            }
            Some(b) if b.layout != p.layout || b.spec != p.spec => {
                Some("the package layout in .packetary.toml changed".into())
            }
            Some(_) => {
                let (t_old, t_new) = (
                    old_cfg.targets_for(p.id.as_str(), &opts.default_targets),
                    cfg.targets_for(p.id.as_str(), &opts.default_targets),
                );
                if t_old != t_new {
                    Some(format!(
                        "targets changed in .packetary.toml: [{}] → [{}]",
                        t_old.join(", "),
                        t_new.join(", ")
                    ))
                } else if p.layout == Layout::DistGit && old_cfg.lookaside != cfg.lookaside {
                    Some("the lookaside URL in .packetary.toml changed".into())
                } else {
                    None
                }
            }
        };
        if let Some(d) = detail {
            out.insert(p.id.clone(), (p, d));
        }
    }
    Ok(out)
}
