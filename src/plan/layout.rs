//! Packages in a commit's tree, for the layouts of DESIGN.md, read from the object
//! database. Two ways in: [`discover_tree`] walks the whole tree (a new configuration, a
//! scan), and [`Resolver::owners`] maps one changed path to its packages by looking only
//! at the directories above it, which keeps a small change cheap in a huge repository.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use git2::{ObjectType, Oid, Repository, Tree};
use serde::{Deserialize, Serialize};

use super::repo_config::{LayoutChoice, CONFIG_FILE};
use crate::git::tree::{list_files, ExportError, FileEntry};
use crate::git::GitError;

/// A package's identity in its repository: its directory (`.` for the root), or its spec
/// path where several packages share a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PackageId(String);

impl PackageId {
    pub fn new(s: impl Into<String>) -> PackageId {
        PackageId(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PackageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The layout a package was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    Dir,
    Rpmbuild,
    Specs,
    DistGit,
}

/// A package found in a tree: which spec, and where its sources come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageDef {
    pub id: PackageId,
    pub layout: Layout,
    /// Path of the spec in the repository.
    pub spec: String,
    /// Directory whose files are the package's sources ("" for the root).
    pub source_dir: String,
    /// Why it cannot be built as found (too many specs, a name that is not UTF-8...).
    pub problem: Option<String>,
}

/// What matters about one directory for recognising packages.
#[derive(Debug, Default)]
pub struct DirInfo {
    specs: Vec<String>,
    bad_specs: Vec<String>,
    has_sources_file: bool,
    has_specs_dir: bool,
}

fn read_dir_info(tree: &Tree<'_>) -> DirInfo {
    let mut info = DirInfo::default();
    for e in tree.iter() {
        let name = e.name_bytes();
        match e.kind() {
            Some(ObjectType::Blob) => {
                if name.ends_with(b".spec") {
                    match std::str::from_utf8(name) {
                        Ok(n) => info.specs.push(n.to_string()),
                        Err(_) => info
                            .bad_specs
                            .push(String::from_utf8_lossy(name).into_owned()),
                    }
                } else if name == b"sources" {
                    info.has_sources_file = true;
                }
            }
            Some(ObjectType::Tree) if name == b"SPECS" => info.has_specs_dir = true,
            _ => {}
        }
    }
    info.specs.sort();
    info
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn parent(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

/// The packages whose spec lives directly in `dir`, by the layout rules.
fn classify(dir: &str, info: &DirInfo, choice: LayoutChoice) -> Vec<PackageDef> {
    let name = dir.rsplit('/').next().unwrap_or(dir);
    let is_root = dir.is_empty();
    let n = info.specs.len();
    let mut out = Vec::new();
    let one = |layout: Layout, spec: &str, id: String, source_dir: String| PackageDef {
        id: PackageId(id),
        layout,
        spec: join(dir, spec),
        source_dir,
        problem: None,
    };
    let dir_id = if is_root {
        ".".to_string()
    } else {
        dir.to_string()
    };
    let each = |layout: Layout, source_dir: &str| -> Vec<PackageDef> {
        info.specs
            .iter()
            .map(|s| one(layout, s, join(dir, s), source_dir.to_string()))
            .collect()
    };
    let layout = match choice {
        LayoutChoice::Auto if is_root && info.has_sources_file && n == 1 => Some(Layout::DistGit),
        LayoutChoice::Auto if name == "SPECS" && !is_root => Some(Layout::Rpmbuild),
        LayoutChoice::Auto if n == 1 => Some(Layout::Dir),
        LayoutChoice::Auto if n > 1 => Some(Layout::Specs),
        LayoutChoice::Auto => None,
        LayoutChoice::DistGit => is_root.then_some(Layout::DistGit),
        LayoutChoice::Rpmbuild => (name == "SPECS" && !is_root).then_some(Layout::Rpmbuild),
        LayoutChoice::Dir => Some(Layout::Dir),
        LayoutChoice::Specs => Some(Layout::Specs),
    };
    match layout {
        None => {}
        Some(Layout::Rpmbuild) => out = each(Layout::Rpmbuild, &join(parent(dir), "SOURCES")),
        Some(Layout::Specs) => out = each(Layout::Specs, dir),
        Some(l @ (Layout::Dir | Layout::DistGit)) if n >= 1 => {
            let mut p = one(l, &info.specs[0], dir_id.clone(), dir.to_string());
            if n > 1 {
                p.problem = Some(format!(
                    "{dir_id} holds {n} spec files ({}), but layout `{}` takes one per directory\n  fix: keep one spec here, or set layout = \"specs\" in {CONFIG_FILE}",
                    info.specs.join(", "),
                    if l == Layout::Dir { "dir" } else { "dist-git" }
                ));
            }
            out.push(p);
        }
        Some(_) => {}
    }
    if layout.is_some() || choice == LayoutChoice::Auto {
        for bad in &info.bad_specs {
            out.push(PackageDef {
                id: PackageId(join(dir, bad)),
                layout: layout.unwrap_or(Layout::Dir),
                spec: join(dir, bad),
                source_dir: dir.to_string(),
                problem: Some(format!(
                    "{}: the spec's file name is not valid UTF-8\n  fix: rename it",
                    join(dir, bad)
                )),
            });
        }
    }
    out
}

/// Directories never searched for packages: hidden ones and rpmbuild's output.
fn skipped_dir(name: &[u8]) -> bool {
    name.starts_with(b".") || matches!(name, b"BUILD" | b"BUILDROOT" | b"RPMS" | b"SRPMS")
}

/// Every package in `root`, in path order.
pub fn discover_tree(
    repo: &Repository,
    root: &Tree<'_>,
    choice: LayoutChoice,
) -> Result<Vec<PackageDef>, GitError> {
    let mut out = Vec::new();
    walk(repo, root, "", choice, 0, &mut out)?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn walk(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &str,
    choice: LayoutChoice,
    depth: usize,
    out: &mut Vec<PackageDef>,
) -> Result<(), GitError> {
    if depth > 32 {
        return Ok(());
    }
    out.extend(classify(dir, &read_dir_info(tree), choice));
    for e in tree.iter() {
        if e.kind() != Some(ObjectType::Tree) || skipped_dir(e.name_bytes()) {
            continue;
        }
        // A directory whose name is not UTF-8 cannot hold a package we can name.
        let Ok(name) = std::str::from_utf8(e.name_bytes()) else {
            continue;
        };
        let sub = repo
            .find_tree(e.id())
            .map_err(|err| GitError::repo(repo.path(), err))?;
        walk(repo, &sub, &join(dir, name), choice, depth + 1, out)?;
    }
    Ok(())
}

/// The packages a changed path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub packages: Vec<PackageDef>,
    /// The path is a shared file of several specs: only those whose Source/Patch tags name
    /// it are its owners, once rpm has said which they are.
    pub shared: bool,
}

/// Maps paths of one commit's tree to packages, remembering directories already read.
pub struct Resolver<'r> {
    repo: &'r Repository,
    root: Tree<'r>,
    choice: LayoutChoice,
    dirs: HashMap<String, Option<Rc<DirInfo>>>,
}

impl<'r> Resolver<'r> {
    pub fn new(repo: &'r Repository, root: Tree<'r>, choice: LayoutChoice) -> Resolver<'r> {
        Resolver {
            repo,
            root,
            choice,
            dirs: HashMap::new(),
        }
    }

    pub fn root(&self) -> &Tree<'r> {
        &self.root
    }

    fn dir_info(&mut self, dir: &str) -> Option<Rc<DirInfo>> {
        if let Some(d) = self.dirs.get(dir) {
            return d.clone();
        }
        let info = if dir.is_empty() {
            Some(Rc::new(read_dir_info(&self.root)))
        } else {
            self.root
                .get_path(Path::new(dir))
                .ok()
                .filter(|e| e.kind() == Some(ObjectType::Tree))
                .and_then(|e| self.repo.find_tree(e.id()).ok())
                .map(|t| Rc::new(read_dir_info(&t)))
        };
        self.dirs.insert(dir.to_string(), info.clone());
        info
    }

    /// The packages a path belongs to: the nearest directory above it that holds specs
    /// decides. A spec file directly in a package directory belongs to its own package
    /// only, and to none when it is not a package's spec here (deleted). Any other file of
    /// a directory of several specs, or of an rpmbuild tree's `SOURCES/`, is *shared*: it
    /// belongs to every spec there until their Source/Patch tags say which name it (see
    /// [`super::complete`]). A path whose directory is gone from this tree still finds the
    /// nearest directory that remains.
    pub fn owners(&mut self, path: &str) -> Owners {
        let none = Owners {
            packages: vec![],
            shared: false,
        };
        if path == CONFIG_FILE {
            return none;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let is_spec = path.ends_with(".spec");
        for k in (0..parts.len()).rev() {
            let dir = parts[..k].join("/");
            if k > 0 && skipped_dir(parts[k - 1].as_bytes()) {
                continue;
            }
            let Some(info) = self.dir_info(&dir) else {
                continue;
            };
            if k + 1 < parts.len() && parts[k] == "SOURCES" && info.has_specs_dir {
                let specs_dir = join(&dir, "SPECS");
                if let Some(si) = self.dir_info(&specs_dir) {
                    let pk = classify(&specs_dir, &si, self.choice);
                    if !pk.is_empty() {
                        return Owners {
                            packages: pk,
                            shared: true,
                        };
                    }
                }
            }
            let pk = classify(&dir, &info, self.choice);
            if pk.is_empty() {
                continue;
            }
            let direct = k + 1 == parts.len();
            if direct && is_spec {
                let here = info.specs.iter().any(|s| s == parts[k]);
                let packages = match pk[0].layout {
                    Layout::Dir | Layout::DistGit if here => pk.into_iter().take(1).collect(),
                    Layout::Dir | Layout::DistGit => vec![],
                    Layout::Specs | Layout::Rpmbuild => {
                        pk.into_iter().filter(|p| p.spec == path).collect()
                    }
                };
                return Owners {
                    packages,
                    shared: false,
                };
            }
            return match pk[0].layout {
                Layout::Dir | Layout::DistGit => Owners {
                    packages: pk.into_iter().take(1).collect(),
                    shared: false,
                },
                Layout::Specs | Layout::Rpmbuild => Owners {
                    packages: pk,
                    shared: true,
                },
            };
        }
        none
    }

    /// Whether `path` is a file in this tree.
    pub fn has_file(&self, path: &str) -> bool {
        self.has_spec(path)
    }

    /// Whether the package still exists here (its spec is a file in this tree).
    pub fn has_spec(&self, spec: &str) -> bool {
        self.root
            .get_path(Path::new(spec))
            .map(|e| e.kind() == Some(ObjectType::Blob))
            .unwrap_or(false)
    }

    /// Files of a package, checked (links, submodules, names) and placed as the build
    /// wants them: the spec and the source directory's files side by side.
    pub fn package_files(&self, p: &PackageDef) -> Result<Vec<FileEntry>, ExportError> {
        package_files(self.repo, &self.root, p)
    }
}

/// See [`Resolver::package_files`].
pub fn package_files(
    repo: &Repository,
    root: &Tree<'_>,
    p: &PackageDef,
) -> Result<Vec<FileEntry>, ExportError> {
    let spec_name = p.spec.rsplit('/').next().unwrap_or(&p.spec).to_string();
    let spec_dir = parent(&p.spec).to_string();
    let exists = |dir: &str| {
        dir.is_empty()
            || root
                .get_path(Path::new(dir))
                .map(|e| e.kind() == Some(ObjectType::Tree))
                .unwrap_or(false)
    };
    let mut files = match p.layout {
        Layout::Dir | Layout::DistGit => list_files(repo, root, &p.source_dir, &|rel, is_dir| {
            let hidden = rel
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(".git"));
            !(hidden
                || is_dir && skipped_dir(rel.as_bytes())
                || rel == CONFIG_FILE && p.source_dir.is_empty())
        })?,
        Layout::Specs => {
            let spec_name = spec_name.clone();
            list_files(repo, root, &p.source_dir, &move |rel, is_dir| {
                is_dir && !skipped_dir(rel.as_bytes())
                    || !is_dir && (!rel.ends_with(".spec") || rel == spec_name)
            })?
        }
        Layout::Rpmbuild => {
            let mut v = if exists(&p.source_dir) {
                list_files(repo, root, &p.source_dir, &|_, _| true)?
            } else {
                vec![]
            };
            let name = spec_name.clone();
            v.extend(list_files(repo, root, &spec_dir, &move |rel, is_dir| {
                !is_dir && rel == name
            })?);
            v
        }
    };
    if !files.iter().any(|f| f.dest == spec_name) {
        return Err(ExportError::DanglingSymlink {
            link: p.spec.clone(),
            target: "(the spec is missing)".into(),
        });
    }
    files.sort_by(|a, b| a.dest.cmp(&b.dest));
    files.dedup_by(|a, b| a.dest == b.dest);
    Ok(files)
}

/// The blob id of the spec among a package's files (the cache key of spec queries).
pub fn spec_blob(p: &PackageDef, files: &[FileEntry]) -> Option<Oid> {
    let name = p.spec.rsplit('/').next().unwrap_or(&p.spec);
    files.iter().find(|f| f.dest == name).map(|f| f.blob)
}
