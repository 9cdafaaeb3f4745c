//! Reading commits without a working tree: resolving revisions, diffing two commits,
//! listing a directory's files (checking links and submodules) and writing them out.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};
use serde::Serialize;

use super::GitError;

/// A path inside a repository. Git paths are bytes; most are UTF-8, and those that are not
/// must still be reported rather than dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(Vec<u8>);

impl RepoPath {
    pub fn new(bytes: impl Into<Vec<u8>>) -> RepoPath {
        RepoPath(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// For messages: invalid bytes shown as U+FFFD.
    pub fn display(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl Serialize for RepoPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStatus {
    Added,
    Deleted,
    Modified,
}

/// One path that differs between two commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedPath {
    pub path: RepoPath,
    pub status: ChangeStatus,
}

/// Resolves a revision (full or abbreviated id, branch, `refs/...`) to a commit id.
pub fn resolve_commit(repo: &Repository, rev: &str) -> Result<Oid, GitError> {
    let missing = || GitError::MissingRev {
        rev: rev.to_string(),
        repo: repo.path().display().to_string(),
    };
    let obj = repo.revparse_single(rev).map_err(|e| match e.code() {
        git2::ErrorCode::NotFound | git2::ErrorCode::Ambiguous | git2::ErrorCode::InvalidSpec => {
            missing()
        }
        _ => GitError::repo(repo.path(), e),
    })?;
    obj.peel_to_commit().map(|c| c.id()).map_err(|_| missing())
}

/// The commit's root tree.
pub fn commit_tree(repo: &Repository, commit: Oid) -> Result<Tree<'_>, GitError> {
    repo.find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| GitError::repo(repo.path(), e))
}

/// Paths that differ between `old` and `new` (every path of `new` when `old` is `None`).
/// No rename detection: a rename is a deletion plus an addition, and both sides matter.
/// Identical subtrees are skipped by id, so a small change in a big tree is cheap.
pub fn changed_paths(
    repo: &Repository,
    old: Option<Oid>,
    new: Oid,
) -> Result<Vec<ChangedPath>, GitError> {
    let new_tree = commit_tree(repo, new)?;
    let old_tree = old.map(|o| commit_tree(repo, o)).transpose()?;
    let mut opts = git2::DiffOptions::new();
    opts.skip_binary_check(true).ignore_submodules(false);
    let diff = repo
        .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), Some(&mut opts))
        .map_err(|e| GitError::repo(repo.path(), e))?;
    let mut out = Vec::with_capacity(diff.deltas().len());
    for d in diff.deltas() {
        let status = match d.status() {
            git2::Delta::Added => ChangeStatus::Added,
            git2::Delta::Deleted => ChangeStatus::Deleted,
            _ => ChangeStatus::Modified,
        };
        let file = if status == ChangeStatus::Deleted {
            d.old_file()
        } else {
            d.new_file()
        };
        if let Some(p) = file.path_bytes() {
            out.push(ChangedPath {
                path: RepoPath::new(p),
                status,
            });
        }
    }
    Ok(out)
}

/// Why a package's files cannot be exported. Each is the repository's doing, with a fix.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "{path}: the path is not valid UTF-8\n  fix: rename it; package file names must be UTF-8"
    )]
    NotUtf8 { path: String },
    #[error("{link} is a symlink to `{target}`, which is outside the repository\n  fix: replace the link by the file itself")]
    EscapingSymlink { link: String, target: String },
    #[error("{link} is a symlink to `{target}`, which does not exist in this commit")]
    DanglingSymlink { link: String, target: String },
    #[error("{link} is a symlink to the directory `{target}`; only links to files are exported\n  fix: link the files, or move the directory into the package")]
    DirectorySymlink { link: String, target: String },
    #[error("{path} is a git submodule; its files are not in this repository\n  fix: add the files themselves, or list the tarball in the `sources` file")]
    Submodule { path: String },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Regular,
    Executable,
}

/// A file to export: where it goes (relative to the export directory) and which blob it is.
/// Symlinks inside the repository are already resolved to the blob they point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub dest: String,
    /// Where it is in the repository (the link's path for a resolved link).
    pub repo_path: String,
    pub blob: Oid,
    pub kind: FileKind,
}

const MAX_LINK_HOPS: usize = 8;
const MAX_DEPTH: usize = 32;

/// Files under `dir` ("" for the root) of `root`, recursively, with `dest` relative to `dir`.
/// `keep(relative path, is_dir)` prunes what is not wanted. Checks every entry kept: names
/// must be UTF-8, links must stay in the repository, submodules are refused.
pub fn list_files(
    repo: &Repository,
    root: &Tree<'_>,
    dir: &str,
    keep: &dyn Fn(&str, bool) -> bool,
) -> Result<Vec<FileEntry>, ExportError> {
    let tree = if dir.is_empty() {
        root.clone()
    } else {
        let e = root
            .get_path(Path::new(dir))
            .map_err(|e| GitError::repo(repo.path(), e))?;
        repo.find_tree(e.id())
            .map_err(|e| GitError::repo(repo.path(), e))?
    };
    let mut out = Vec::new();
    walk(repo, root, &tree, dir, "", keep, 0, &mut out)?;
    out.sort_by(|a, b| a.dest.cmp(&b.dest));
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    root: &Tree<'_>,
    tree: &Tree<'_>,
    base: &str,
    rel: &str,
    keep: &dyn Fn(&str, bool) -> bool,
    depth: usize,
    out: &mut Vec<FileEntry>,
) -> Result<(), ExportError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for entry in tree.iter() {
        let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
            return Err(ExportError::NotUtf8 {
                path: join(
                    &join(base, rel),
                    &String::from_utf8_lossy(entry.name_bytes()),
                ),
            });
        };
        let rel_path = join(rel, name);
        let repo_path = join(base, &rel_path);
        match entry.kind() {
            Some(ObjectType::Tree) if keep(&rel_path, true) => {
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(|e| GitError::repo(repo.path(), e))?;
                walk(repo, root, &sub, base, &rel_path, keep, depth + 1, out)?;
            }
            Some(ObjectType::Commit) if keep(&rel_path, false) => {
                return Err(ExportError::Submodule { path: repo_path });
            }
            Some(ObjectType::Blob) if keep(&rel_path, false) => {
                let (blob, kind) = match entry.filemode() {
                    0o120000 => resolve_link(repo, root, &repo_path, entry.id())?,
                    0o100755 => (entry.id(), FileKind::Executable),
                    _ => (entry.id(), FileKind::Regular),
                };
                out.push(FileEntry {
                    dest: rel_path,
                    repo_path,
                    blob,
                    kind,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// Follows a symlink inside the commit's tree, never outside the repository.
fn resolve_link(
    repo: &Repository,
    root: &Tree<'_>,
    link: &str,
    mut blob: Oid,
) -> Result<(Oid, FileKind), ExportError> {
    let mut at = link.to_string();
    for _ in 0..MAX_LINK_HOPS {
        let b = repo
            .find_blob(blob)
            .map_err(|e| GitError::repo(repo.path(), e))?;
        let target = String::from_utf8_lossy(b.content()).into_owned();
        let escape = || ExportError::EscapingSymlink {
            link: link.to_string(),
            target: target.clone(),
        };
        if target.starts_with('/') {
            return Err(escape());
        }
        let mut parts: Vec<&str> = at.split('/').collect();
        parts.pop();
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(escape());
                    }
                }
                c => parts.push(c),
            }
        }
        let resolved = parts.join("/");
        let entry =
            root.get_path(Path::new(&resolved))
                .map_err(|_| ExportError::DanglingSymlink {
                    link: link.to_string(),
                    target: target.clone(),
                })?;
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Blob), 0o120000) => {
                at = resolved;
                blob = entry.id();
            }
            (Some(ObjectType::Blob), 0o100755) => return Ok((entry.id(), FileKind::Executable)),
            (Some(ObjectType::Blob), _) => return Ok((entry.id(), FileKind::Regular)),
            (Some(ObjectType::Tree), _) => {
                return Err(ExportError::DirectorySymlink {
                    link: link.to_string(),
                    target,
                })
            }
            _ => {
                return Err(ExportError::Submodule { path: resolved });
            }
        }
    }
    Err(ExportError::DanglingSymlink {
        link: link.to_string(),
        target: "(too many levels of symbolic links)".into(),
    })
}

/// Writes `files` under `dest` from the object database (no checkout). `dest` should be
/// new or empty; existing files of the same name are replaced.
pub fn export_files(
    repo: &Repository,
    files: &[FileEntry],
    dest: &Path,
) -> Result<(), ExportError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    for f in files {
        // `dest` names come from tree entries (no `..`, no `/`), but check anyway.
        if f.dest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(ExportError::EscapingSymlink {
                link: f.repo_path.clone(),
                target: f.dest.clone(),
            });
        }
        let path = dest.join(&f.dest);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let blob = repo
            .find_blob(f.blob)
            .map_err(|e| GitError::repo(repo.path(), e))?;
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, blob.content()).map_err(io(&path))?;
        let mode = if f.kind == FileKind::Executable {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit made straight from (path, content, mode) entries.
    fn commit(repo: &Repository, files: &[(&str, &[u8], i32)]) -> Oid {
        let mut idx = git2::Index::new().expect("index");
        for (p, content, mode) in files {
            let oid = repo.blob(content).expect("blob");
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: *mode as u32,
                uid: 0,
                gid: 0,
                file_size: 0,
                id: oid,
                flags: 0,
                flags_extended: 0,
                path: p.as_bytes().to_vec(),
            };
            idx.add(&entry).expect("add");
        }
        let tree = idx.write_tree_to(repo).expect("tree");
        let tree = repo.find_tree(tree).expect("tree");
        let sig = git2::Signature::new("t", "t@x", &git2::Time::new(0, 0)).expect("sig");
        repo.commit(None, &sig, &sig, "c", &tree, &[])
            .expect("commit")
    }

    #[test]
    fn links_are_resolved_inside_and_refused_outside() {
        let t = tempfile::tempdir().expect("tmp");
        let repo = Repository::init_bare(t.path()).expect("init");
        let c = commit(
            &repo,
            &[
                ("p/a.spec", b"Name: a", 0o100644),
                ("p/run.sh", b"#!/bin/sh", 0o100755),
                ("p/shared.patch", b"../common/x.patch", 0o120000),
                ("common/x.patch", b"patch", 0o100644),
                ("q/evil", b"../../etc/passwd", 0o120000),
                ("r/abs", b"/etc/passwd", 0o120000),
            ],
        );
        let root = commit_tree(&repo, c).expect("tree");
        let files = list_files(&repo, &root, "p", &|_, _| true).expect("p is fine");
        let names: Vec<_> = files.iter().map(|f| f.dest.as_str()).collect();
        assert_eq!(names, ["a.spec", "run.sh", "shared.patch"]);
        let out = tempfile::tempdir().expect("tmp");
        export_files(&repo, &files, out.path()).expect("export");
        assert_eq!(
            std::fs::read(out.path().join("shared.patch")).expect("read"),
            b"patch"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.path().join("run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        for dir in ["q", "r"] {
            let e = list_files(&repo, &root, dir, &|_, _| true).expect_err("escapes");
            assert!(matches!(e, ExportError::EscapingSymlink { .. }), "{e}");
        }
    }

    #[test]
    fn diff_lists_both_sides() {
        let t = tempfile::tempdir().expect("tmp");
        let repo = Repository::init_bare(t.path()).expect("init");
        let a = commit(&repo, &[("x/1", b"1", 0o100644), ("y/2", b"2", 0o100644)]);
        let b = commit(&repo, &[("x/1", b"1b", 0o100644), ("z/3", b"3", 0o100644)]);
        let mut d: Vec<(String, ChangeStatus)> = changed_paths(&repo, Some(a), b)
            .expect("diff")
            .into_iter()
            .map(|c| (c.path.display().into_owned(), c.status))
            .collect();
        d.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            d,
            [
                ("x/1".to_string(), ChangeStatus::Modified),
                ("y/2".to_string(), ChangeStatus::Deleted),
                ("z/3".to_string(), ChangeStatus::Added)
            ]
        );
        assert_eq!(changed_paths(&repo, None, a).expect("all").len(), 2);
        assert!(matches!(
            resolve_commit(&repo, &"1".repeat(40)),
            Err(GitError::MissingRev { .. })
        ));
    }
}
