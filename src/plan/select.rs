//! Which packages each changed path belongs to, and what a change to the repository's
//! configuration rebuilds.

use std::collections::{BTreeMap, BTreeSet};

use git2::Repository;

use super::distgit;
use super::layout::{discover_tree, Layout, PackageDef, PackageId, Resolver};
use super::repo_config::{RepoConfig, CONFIG_FILE};
use crate::git::tree::{changed_paths, commit_tree};
use crate::model::TargetName;

use super::change::{
    Change, DeletedPackage, DiffKind, Plan, PlanOptions, PlannedPackage, Reason, SharedFile,
};
use super::endpoints::{endpoints, read_config, sha, Endpoints, EndpointsError};
use crate::git::GitError;

/// Why the packages of a change cannot be selected: the plan's error.
#[derive(Debug, thiserror::Error)]
enum SelectError {
    #[error("{source}\n  (read at {at})")]
    Config {
        source: EndpointsError,
        at: git2::Oid,
    },
    #[error("{CONFIG_FILE}: key `targets`: no target named `{target}` is configured in this service\n  fix: use one of: {}", known.join(", "))]
    UnknownTarget { target: String, known: Vec<String> },
    #[error(transparent)]
    Git(#[from] GitError),
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

/// Plans `change` in `repo` without asking rpm anything: packages, reasons, targets,
/// deletions, errors. Order and names are filled in later ([`super::complete`]).
pub fn select(repo: &Repository, label: &str, change: &Change, opts: &PlanOptions) -> Plan {
    let mut plan = Plan::empty(label, change);
    let mut notices = Vec::new();
    let ends = match endpoints(repo, change, opts, &mut notices) {
        Ok(e) => e,
        Err(e) => {
            plan.notices = notices;
            plan.errors.push(e.to_string());
            return plan;
        }
    };
    plan.notices = notices;
    plan.kind = ends.kind;
    plan.head = sha(ends.head);
    plan.compared_with = ends.old.and_then(sha);
    plan.config_from = sha(ends.config_at);
    if let Err(e) = select_packages(repo, &ends, opts, &mut plan) {
        plan.errors.push(e.to_string());
    }
    plan
}

fn select_packages(
    repo: &Repository,
    ends: &Endpoints,
    opts: &PlanOptions,
    plan: &mut Plan,
) -> Result<(), SelectError> {
    let (cfg_blob, cfg) =
        read_config(repo, ends.config_at).map_err(|source| SelectError::Config {
            source,
            at: ends.config_at,
        })?;
    let unknown: Vec<&String> = cfg
        .targets
        .iter()
        .chain(cfg.overrides.iter().flat_map(|o| &o.targets))
        .filter(|t| !opts.known_targets.contains(t))
        .collect();
    if let Some(t) = unknown.first() {
        return Err(SelectError::UnknownTarget {
            target: t.to_string(),
            known: opts.known_targets.clone(),
        });
    }

    plan.lookaside = cfg.lookaside.clone();
    let paths = changed_paths(repo, ends.old, ends.head)?;
    plan.changed_paths = paths.len();
    if paths.len() > LARGE_CHANGE {
        plan.notices.push(format!(
            "large change: {} paths differ; every package they touch is planned",
            paths.len()
        ));
    }
    let head_tree = commit_tree(repo, ends.head)?;
    let mut new = Resolver::new(repo, head_tree, cfg.layout);
    let old_tree = ends.old.map(|o| commit_tree(repo, o)).transpose()?;
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
            target_nevrs: Default::default(),
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
                            p.error = match repo.find_blob(f.blob) {
                                Ok(b) => {
                                    distgit::parse_sources(&String::from_utf8_lossy(b.content()))
                                        .err()
                                        .map(|e| e.to_string())
                                }
                                Err(e) => Some(e.message().to_string()),
                            };
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
) -> Result<BTreeMap<PackageId, (PackageDef, String)>, GitError> {
    let now = discover_tree(repo, new.root(), cfg.layout)?;
    let before: BTreeMap<PackageId, PackageDef> = if old_cfg.layout == cfg.layout {
        now.iter().map(|p| (p.id.clone(), p.clone())).collect()
    } else {
        discover_tree(repo, new.root(), old_cfg.layout)?
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
