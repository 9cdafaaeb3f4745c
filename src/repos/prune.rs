//! Pruning: snapshots beyond the number kept (never one a kept build used), pool files no
//! snapshot links, and change repositories past their age.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{RepoDir, SnapshotId};

impl RepoDir {
    /// Removes snapshots beyond the newest `keep` that are not in `protected` (nor
    /// `latest`), then pool files no snapshot links any more. Failures are logged: a
    /// snapshot left behind is only disk.
    pub fn prune(&self, keep: usize, protected: &BTreeSet<SnapshotId>) {
        let all = self.snapshots();
        let latest = self.latest();
        let cut = all.len().saturating_sub(keep.max(1));
        for id in &all[..cut] {
            if protected.contains(id) || latest.as_ref() == Some(id) {
                continue;
            }
            let dir = self.snapshot_dir(id);
            // Renamed first, so that a reader never sees a half-removed snapshot.
            let gone = self.root.join(format!(".old-{}", id.as_str()));
            match std::fs::rename(&dir, &gone).and_then(|()| std::fs::remove_dir_all(&gone)) {
                Ok(()) => tracing::info!(repo = %self.root.display(), snapshot = %id, "pruned"),
                Err(e) => {
                    tracing::warn!(repo = %self.root.display(), snapshot = %id, "cannot prune: {e}")
                }
            }
        }
        use std::os::unix::fs::MetadataExt;
        for e in std::fs::read_dir(self.root.join("pool"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.metadata().is_ok_and(|m| m.is_file() && m.nlink() == 1) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The change directories (`changes/<owner>/<repo>/<number>`) under `root` none of whose
/// repositories was published into within `age` (by the time `latest` last moved).
pub fn stale_change_repos(root: &Path, age: std::time::Duration) -> Vec<PathBuf> {
    fn visit(dir: &Path, depth: usize, age: std::time::Duration, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let subdirs: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        let repos: Vec<&PathBuf> = subdirs
            .iter()
            .filter(|d| d.join(".lock").is_file())
            .collect();
        if !repos.is_empty() {
            let fresh = repos.iter().any(|r| {
                std::fs::symlink_metadata(r.join("latest"))
                    .or_else(|_| std::fs::metadata(r.join(".lock")))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|e| e < age)
            });
            if !fresh {
                out.push(dir.to_path_buf());
            }
            return;
        }
        if depth < 8 {
            for d in subdirs {
                visit(&d, depth + 1, age, out);
            }
        }
    }
    let mut out = Vec::new();
    visit(root, 0, age, &mut out);
    out
}

/// The ids of snapshots named in repository locations such as
/// `<data_dir>/repos/<release>/<target>/<snapshot>` (what builds record), grouped by
/// repository directory.
pub fn snapshots_named(locations: &[String]) -> BTreeMap<PathBuf, BTreeSet<SnapshotId>> {
    let mut out: BTreeMap<PathBuf, BTreeSet<SnapshotId>> = BTreeMap::new();
    for l in locations {
        let p = Path::new(l.strip_prefix("file://").unwrap_or(l));
        if let (Some(parent), Some(id)) = (
            p.parent(),
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(SnapshotId::parse),
        ) {
            out.entry(parent.to_path_buf()).or_default().insert(id);
        }
    }
    out
}
