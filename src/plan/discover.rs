//! Finding packages in a directory tree.
//!
//! Supported layouts: a directory with one spec and its patches/sources; an rpmbuild tree
//! (`SPECS/*.spec` with `SOURCES/`); a directory of many specs without sources (each spec is
//! its own package). Nothing found here is executed on the host.

use std::path::{Component, Path, PathBuf};

pub use crate::model::PackageSource;

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no spec file (*.spec) found under {0}\n  fix: point PATH at a package directory, or name the spec with --spec FILE")]
    NoSpec(PathBuf),
    #[error("{link} is a symlink to {target}, which is outside {root}\n  fix: replace the link by the file itself, or build from a directory that contains its target")]
    EscapingSymlink {
        link: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("{0} is not a spec file (expected a *.spec file)")]
    NotASpec(PathBuf),
    #[error("{spec} is outside {root}\n  fix: pass a spec inside PATH, or change PATH")]
    Outside { spec: PathBuf, root: PathBuf },
    #[error(
        "{0}: the path is not valid UTF-8\n  fix: rename it; spec and source names must be UTF-8"
    )]
    NotUtf8(PathBuf),
}

/// Directories never searched: version control, build output and hidden directories.
fn skipped(name: &str) -> bool {
    name.starts_with('.')
        || matches!(
            name,
            "BUILD" | "BUILDROOT" | "RPMS" | "SRPMS" | "node_modules" | "target"
        )
}

/// Every package under `root`, in path order. `exclude` (e.g. the output directory) is not searched.
pub fn discover(root: &Path, exclude: &[PathBuf]) -> Result<Vec<PackageSource>, DiscoverError> {
    let root = canonical(root)?;
    let exclude: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let mut specs = Vec::new();
    walk(&root, &exclude, 0, &mut specs)?;
    specs.sort();
    if specs.is_empty() {
        return Err(DiscoverError::NoSpec(root));
    }
    specs.iter().map(|s| package_for_spec(&root, s)).collect()
}

fn walk(
    dir: &Path,
    exclude: &[PathBuf],
    depth: usize,
    specs: &mut Vec<PathBuf>,
) -> Result<(), DiscoverError> {
    if depth > 16 || exclude.iter().any(|e| e == dir) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| DiscoverError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| DiscoverError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            // A non-UTF-8 spec can't be named to rpm reliably; other files are only sources.
            if path.extension().is_some_and(|e| e == "spec") {
                return Err(DiscoverError::NotUtf8(path));
            }
            continue;
        };
        let ft = entry.file_type().map_err(|source| DiscoverError::Io {
            path: path.clone(),
            source,
        })?;
        if ft.is_dir() {
            if !skipped(name) {
                walk(&path, exclude, depth + 1, specs)?;
            }
        } else if name.ends_with(".spec") && (ft.is_file() || ft.is_symlink()) {
            specs.push(path);
        }
    }
    Ok(())
}

/// The package a given spec belongs to, checking that nothing it uses leaves `root`.
pub fn package_for_spec(root: &Path, spec: &Path) -> Result<PackageSource, DiscoverError> {
    let root = canonical(root)?;
    let spec_abs = if spec.is_absolute() {
        spec.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| DiscoverError::Io {
                path: spec.to_path_buf(),
                source,
            })?
            .join(spec)
    };
    if spec_abs.extension().is_none_or(|e| e != "spec") {
        return Err(DiscoverError::NotASpec(spec.to_path_buf()));
    }
    let real = canonical(&spec_abs)?;
    if !real.starts_with(&root) {
        return Err(if spec_abs.is_symlink() {
            DiscoverError::EscapingSymlink {
                link: spec_abs,
                target: real,
                root,
            }
        } else {
            DiscoverError::Outside { spec: real, root }
        });
    }
    let spec_dir = spec_abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.clone());
    let spec_dir = canonical(&spec_dir)?;
    // rpmbuild tree: SPECS/x.spec takes its sources from the sibling SOURCES/.
    let source_dir = match (spec_dir.file_name(), spec_dir.parent()) {
        (Some(n), Some(parent)) if n == "SPECS" && parent.join("SOURCES").is_dir() => {
            canonical(&parent.join("SOURCES"))?
        }
        _ => spec_dir,
    };
    if !source_dir.starts_with(&root) {
        return Err(DiscoverError::Outside { spec: real, root });
    }
    check_links(&root, &source_dir, 0)?;
    Ok(PackageSource {
        root,
        spec: real,
        source_dir,
    })
}

/// Refuses symlinks that lead out of the tree: the container would follow them into the host.
fn check_links(root: &Path, dir: &Path, depth: usize) -> Result<(), DiscoverError> {
    if depth > 16 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| DiscoverError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            let resolved = path
                .canonicalize()
                .unwrap_or_else(|_| lexical_target(&path, &target));
            if !resolved.starts_with(root) {
                return Err(DiscoverError::EscapingSymlink {
                    link: path,
                    target: resolved,
                    root: root.to_path_buf(),
                });
            }
        } else if ft.is_dir() && !entry.file_name().to_string_lossy().starts_with('.') {
            check_links(root, &path, depth + 1)?;
        }
    }
    Ok(())
}

/// Where a dangling link points, without touching the file system.
fn lexical_target(link: &Path, target: &Path) -> PathBuf {
    let base = link.parent().unwrap_or(Path::new("/"));
    let mut out = PathBuf::new();
    for c in base.join(target).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn canonical(p: &Path) -> Result<PathBuf, DiscoverError> {
    p.canonicalize().map_err(|source| DiscoverError::Io {
        path: p.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(p, "x").expect("write");
    }

    #[test]
    fn finds_all_layouts() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        touch(&r.join("pkg-a/a.spec"));
        touch(&r.join("pkg-a/a.patch"));
        touch(&r.join("tree/SPECS/b.spec"));
        touch(&r.join("tree/SOURCES/b-1.tar.gz"));
        touch(&r.join("many/c.spec"));
        touch(&r.join("many/d.spec"));
        touch(&r.join(".git/hidden.spec"));
        let found = discover(r, &[]).expect("discovers");
        let names: Vec<_> = found.iter().map(|p| p.label()).collect();
        assert_eq!(names, ["c", "d", "a", "b"]);
        let b = &found[3];
        assert!(b.source_dir.ends_with("tree/SOURCES"), "{:?}", b.source_dir);
        assert!(found[2].source_dir.ends_with("pkg-a"));
    }

    #[test]
    fn no_spec_is_an_error() {
        let t = tempfile::tempdir().expect("tmp");
        touch(&t.path().join("README"));
        assert!(matches!(
            discover(t.path(), &[]),
            Err(DiscoverError::NoSpec(_))
        ));
    }

    #[test]
    fn escaping_symlinks_are_refused() {
        let outside = tempfile::tempdir().expect("tmp");
        touch(&outside.path().join("evil.spec"));
        let t = tempfile::tempdir().expect("tmp");
        fs::create_dir_all(t.path().join("p")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path().join("evil.spec"), t.path().join("p/x.spec"))
            .expect("symlink");
        let e = discover(t.path(), &[]).expect_err("refused");
        assert!(matches!(e, DiscoverError::EscapingSymlink { .. }), "{e}");
        assert!(e.to_string().contains("outside"));

        // A source that links out is refused too, even when dangling.
        let t2 = tempfile::tempdir().expect("tmp");
        touch(&t2.path().join("p/ok.spec"));
        std::os::unix::fs::symlink("/etc/shadow-nope", t2.path().join("p/src.tar"))
            .expect("symlink");
        assert!(matches!(
            discover(t2.path(), &[]),
            Err(DiscoverError::EscapingSymlink { .. })
        ));

        // Links inside the tree are fine.
        let t3 = tempfile::tempdir().expect("tmp");
        touch(&t3.path().join("p/ok.spec"));
        touch(&t3.path().join("common/shared.patch"));
        std::os::unix::fs::symlink("../common/shared.patch", t3.path().join("p/shared.patch"))
            .expect("symlink");
        assert_eq!(discover(t3.path(), &[]).expect("ok").len(), 2 - 1);
    }

    #[test]
    fn explicit_spec_must_be_a_spec_inside_root() {
        let t = tempfile::tempdir().expect("tmp");
        touch(&t.path().join("p/a.spec"));
        touch(&t.path().join("p/notes.txt"));
        assert!(package_for_spec(t.path(), &t.path().join("p/a.spec")).is_ok());
        assert!(matches!(
            package_for_spec(t.path(), &t.path().join("p/notes.txt")),
            Err(DiscoverError::NotASpec(_))
        ));
        let other = tempfile::tempdir().expect("tmp");
        touch(&other.path().join("o.spec"));
        assert!(matches!(
            package_for_spec(&t.path().join("p"), &other.path().join("o.spec")),
            Err(DiscoverError::Outside { .. })
        ));
    }
}
