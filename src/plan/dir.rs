//! A directory on this host planned like a change (`packetary build DIR`): every package
//! found there, for every target given, with names, dependencies and stages from rpm's
//! answers, through the same cache, oracle and order as [`super::plan_change`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};

use super::{
    ask_misses, cached_facts, finish_order, missed, unavailable, Change, Facts, Layout, Learned,
    PackageId, PackageSource, Plan, PlannedPackage, QueryDirs, QueryError, TempDir,
};
use crate::config::Target;
use crate::model::TargetName;
use crate::spec::SpecOracle;

/// Plans `packages` (found under one root by [`super::discover`] or named with `--spec`)
/// for each of `targets`. Without an oracle, or when rpm cannot be asked, every package is
/// in the first stage (the plan's notices say why). A spec rpm cannot read keeps its error
/// in the plan and stays in the first stage.
pub async fn plan_dir(
    packages: &[PackageSource],
    targets: &BTreeMap<TargetName, Target>,
    oracle: Option<&SpecOracle>,
) -> Plan {
    let root = packages
        .first()
        .map(|p| p.root.display().to_string())
        .unwrap_or_default();
    let mut plan = Plan::empty(
        &root,
        &Change::Push {
            before: None,
            after: String::new(),
        },
    );
    let names: Vec<TargetName> = targets.keys().cloned().collect();
    plan.packages = planned_packages(packages, &names);
    let mut facts = Facts::new();
    if let Some(oracle) = oracle {
        let (keys, cached, misses) = cached_facts(&plan, targets, oracle).await;
        facts = cached;
        if !misses.is_empty() {
            let asked = match TempDir::new("packetary-plan") {
                Ok(tmp) => {
                    let dirs = query_dirs(&plan, packages, &missed(&misses), tmp.path());
                    ask_misses(&plan, targets, &keys, oracle, &misses, &dirs, &mut facts).await
                }
                Err(e) => Err(QueryError::TempDir(e)),
            };
            if let Err(e) = asked {
                plan.notices.push(unavailable(&e));
            }
        }
    }
    finish_order(&mut plan, &facts, &Learned::new());
    plan
}

/// The plan's packages, as `select` would name them in a repository of these files: a
/// directory with one spec is the package `dir` (layout `dir`, `.` for the root), each spec
/// of a directory of several or of an rpmbuild tree's `SPECS/` is its own (by its path).
fn planned_packages(packages: &[PackageSource], targets: &[TargetName]) -> Vec<PlannedPackage> {
    let rel = |p: &PackageSource, path: &Path| -> String {
        path.strip_prefix(&p.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    };
    let spec_dir = |p: &PackageSource| p.spec.parent().map(Path::to_path_buf);
    let mut beside: HashMap<Option<PathBuf>, usize> = HashMap::new();
    for p in packages {
        *beside.entry(spec_dir(p)).or_default() += 1;
    }
    packages
        .iter()
        .map(|p| {
            let spec = rel(p, &p.spec);
            let dir = spec.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            let (layout, id) = if spec_dir(p).as_deref() != Some(p.source_dir.as_path()) {
                (Layout::Rpmbuild, spec.clone())
            } else if beside.get(&spec_dir(p)).copied().unwrap_or(0) > 1 {
                (Layout::Specs, spec.clone())
            } else if dir.is_empty() {
                (Layout::Dir, ".".to_string())
            } else {
                (Layout::Dir, dir)
            };
            PlannedPackage {
                id: PackageId::new(id),
                layout,
                spec_blob: std::fs::read(&p.spec)
                    .ok()
                    .and_then(|b| Oid::hash_object(ObjectType::Blob, &b).ok())
                    .map(|o| o.to_string()),
                spec,
                source_dir: rel(p, &p.source_dir),
                name: None,
                nevr: None,
                target_nevrs: Default::default(),
                targets: targets.to_vec(),
                reasons: vec![],
                stage: 0,
                depends_on: vec![],
                error: None,
                shared: false,
                notices: vec![],
            }
        })
        .collect()
}

/// The directory each package's spec is asked in: its own when the sources are beside
/// the spec, else (an rpmbuild tree) a copy of the spec with links to its sources.
fn query_dirs(plan: &Plan, packages: &[PackageSource], wanted: &[usize], tmp: &Path) -> QueryDirs {
    wanted
        .iter()
        .filter_map(|&i| {
            let pp = &plan.packages[i];
            let p = packages.iter().find(|p| {
                p.spec
                    .strip_prefix(&p.root)
                    .is_ok_and(|s| s.to_string_lossy() == pp.spec)
            })?;
            if p.spec.parent() == Some(p.source_dir.as_path()) {
                return Some((i, Ok(p.source_dir.clone())));
            }
            let dest = tmp.join(i.to_string());
            let put = side_by_side(p, &dest)
                .map(|()| dest)
                .map_err(|e| crate::spec::AnswerError::Unexported(e.to_string()));
            Some((i, put))
        })
        .collect()
}

/// A file of a package that could not be put beside its spec.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct CopyError {
    path: PathBuf,
    source: std::io::Error,
}

/// Writes the spec of `p` into `dest` with its source directory's files beside it (hard
/// links, copies across file systems), as rpm reads an exported package.
fn side_by_side(p: &PackageSource, dest: &Path) -> Result<(), CopyError> {
    let fail = |what: &Path, e: std::io::Error| CopyError {
        path: what.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dest).map_err(|e| fail(dest, e))?;
    for entry in std::fs::read_dir(&p.source_dir).map_err(|e| fail(&p.source_dir, e))? {
        let entry = entry.map_err(|e| fail(&p.source_dir, e))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let to = dest.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &to).is_err() {
            std::fs::copy(entry.path(), &to).map_err(|e| fail(&entry.path(), e))?;
        }
    }
    let name = p.spec.file_name().unwrap_or_default();
    let to = dest.join(name);
    let _ = std::fs::remove_file(&to);
    std::fs::copy(&p.spec, &to).map_err(|e| fail(&p.spec, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn packages_are_named_as_in_a_repository() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = tmp.path();
        write(&r.join("libfoo/libfoo.spec"), "Name: libfoo\n");
        write(&r.join("many/a.spec"), "Name: a\n");
        write(&r.join("many/b.spec"), "Name: b\n");
        write(&r.join("tree/SPECS/t.spec"), "Name: t\n");
        write(&r.join("tree/SOURCES/data.txt"), "x\n");
        let found = crate::plan::discover(r, &[]).expect("discover");
        let t = [TargetName::parse("t1").expect("name")];
        let ps = planned_packages(&found, &t);
        let got: Vec<(&str, Layout, &str, &str)> = ps
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.layout,
                    p.spec.as_str(),
                    p.source_dir.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("libfoo", Layout::Dir, "libfoo/libfoo.spec", "libfoo"),
                ("many/a.spec", Layout::Specs, "many/a.spec", "many"),
                ("many/b.spec", Layout::Specs, "many/b.spec", "many"),
                (
                    "tree/SPECS/t.spec",
                    Layout::Rpmbuild,
                    "tree/SPECS/t.spec",
                    "tree/SOURCES"
                ),
            ]
        );
        assert!(ps.iter().all(|p| p.targets == t && p.error.is_none()));
        // The blob id git gives the same bytes: the spec cache's key, as for a change.
        assert_eq!(
            ps[0].spec_blob.as_deref(),
            Some(
                Oid::hash_object(ObjectType::Blob, b"Name: libfoo\n")
                    .expect("oid")
                    .to_string()
                    .as_str()
            )
        );
    }

    #[test]
    fn a_spec_at_the_root_is_the_package_dot() {
        let tmp = tempfile::tempdir().expect("tmp");
        write(&tmp.path().join("solo.spec"), "Name: solo\n");
        let found = crate::plan::discover(tmp.path(), &[]).expect("discover");
        let ps = planned_packages(&found, &[]);
        assert_eq!(ps[0].id.as_str(), ".");
        assert_eq!(ps[0].source_dir, "");
    }

    #[test]
    fn an_rpmbuild_spec_is_asked_beside_its_sources() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = tmp.path().join("root");
        write(&r.join("tree/SPECS/t.spec"), "Name: t\n");
        write(&r.join("tree/SOURCES/data.txt"), "x\n");
        write(&r.join("dir/d.spec"), "Name: d\n");
        let found = crate::plan::discover(&r, &[]).expect("discover");
        let mut plan = Plan::empty(
            "r",
            &Change::Push {
                before: None,
                after: String::new(),
            },
        );
        plan.packages = planned_packages(&found, &[]);
        let q = tmp.path().join("q");
        let dirs = query_dirs(&plan, &found, &[0, 1], &q);
        // `dir/d.spec` is asked where it is; the rpmbuild tree's spec from a directory
        // holding it and its sources.
        assert_eq!(dirs[&0].as_ref().expect("dir"), &found[0].source_dir);
        let t = dirs[&1].as_ref().expect("tree");
        assert!(t.starts_with(&q));
        assert_eq!(
            std::fs::read_to_string(t.join("t.spec")).expect("spec"),
            "Name: t\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.join("data.txt")).expect("source"),
            "x\n"
        );
    }

    #[tokio::test]
    async fn without_rpm_every_package_is_in_the_first_stage() {
        let tmp = tempfile::tempdir().expect("tmp");
        write(&tmp.path().join("a/a.spec"), "Name: a\n");
        write(&tmp.path().join("b/b.spec"), "Name: b\n");
        let found = crate::plan::discover(tmp.path(), &[]).expect("discover");
        let plan = plan_dir(&found, &BTreeMap::new(), None).await;
        let got: Vec<(&str, usize)> = plan
            .packages
            .iter()
            .map(|p| (p.id.as_str(), p.stage))
            .collect();
        assert_eq!(got, [("a", 0), ("b", 0)]);
        assert!(plan.errors.is_empty());
    }
}
