//! The publishing rules: what a new snapshot holds, given the previous one and the policy
//! (a change's newer build replaces; a release refuses downgrades and other bytes under a
//! published NEVRA).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::pool::{copy_into, describe, sync_fs};
use super::{evrcmp, Entry, Manifest, Policy, PublishError, RepoDir, SnapshotId, MANIFEST};

/// A snapshot being made.
pub(super) struct Stage {
    pub(super) id: SnapshotId,
    pub(super) tmp: PathBuf,
    pub(super) previous: Option<SnapshotId>,
    pub(super) added: Vec<String>,
}

impl RepoDir {
    /// Checks the rules and lays out the next snapshot in a hidden directory: the pool gets
    /// the new packages, the snapshot links to every package it holds. `None`: nothing new.
    pub(super) fn stage(
        &self,
        packages: &[PathBuf],
        policy: Policy,
    ) -> Result<Option<Stage>, PublishError> {
        let previous = self.latest();
        let old = match &previous {
            Some(id) => self.manifest(id)?.packages,
            None => vec![],
        };
        // Maps, not scans: a first publication may bring thousands of packages.
        let mut incoming: Vec<(Entry, PathBuf)> = Vec::new();
        let mut seen: HashMap<String, (String, PathBuf)> = HashMap::new();
        for p in packages {
            let entry = describe(p)?;
            if let Some((sha, first)) = seen.get(&entry.key()) {
                if *sha != entry.sha256 {
                    return Err(PublishError::Refused(format!(
                        "{} is given twice with different contents ({} and {})",
                        entry.nevra(),
                        first.display(),
                        p.display()
                    )));
                }
                continue;
            }
            seen.insert(entry.key(), (entry.sha256.clone(), p.clone()));
            incoming.push((entry, p.clone()));
        }
        let old_by_key: HashMap<String, &Entry> = old.iter().map(|e| (e.key(), e)).collect();
        let mut newest: HashMap<&str, &Entry> = HashMap::new();
        for e in &old {
            let n = newest.entry(e.name.as_str()).or_insert(e);
            if evrcmp(e.evr(), n.evr()).is_gt() {
                *n = e;
            }
        }
        let mut new_entries: Vec<&Entry> = Vec::new();
        for (entry, path) in &incoming {
            if let Some(o) = old_by_key.get(&entry.key()) {
                if o.sha256 == entry.sha256 {
                    continue;
                }
                if policy == Policy::Release {
                    return Err(PublishError::Refused(format!(
                        "{} is already published with other contents (sha256 {} published, {} given in {})\n  fix: raise the package's Release (or Version) and build it again",
                        entry.nevra(),
                        o.sha256,
                        entry.sha256,
                        path.display()
                    )));
                }
            }
            if policy == Policy::Release {
                if let Some(n) = newest.get(entry.name.as_str()) {
                    if evrcmp(entry.evr(), n.evr()).is_lt() {
                        return Err(PublishError::Refused(format!(
                            "{} would be a downgrade: {} is published\n  fix: give the package a higher Epoch, Version or Release than the published one",
                            entry.nevra(),
                            n.nevra()
                        )));
                    }
                }
            }
            new_entries.push(entry);
        }
        // A change keeps only the newest build of each package and architecture.
        let replaced: HashSet<(&str, &str)> = match policy {
            Policy::Change => new_entries
                .iter()
                .map(|e| (e.name.as_str(), e.arch.as_str()))
                .collect(),
            Policy::Release => HashSet::new(),
        };
        let mut next: Vec<Entry> = old
            .iter()
            .filter(|o| !replaced.contains(&(o.name.as_str(), o.arch.as_str())))
            .cloned()
            .collect();
        let mut files: HashSet<String> = next.iter().map(|e| e.file.clone()).collect();
        let mut added = Vec::new();
        for entry in new_entries {
            if !files.insert(entry.file.clone()) {
                return Err(PublishError::Refused(format!(
                    "{} has the file name {} of another published package (they differ only in epoch)\n  fix: raise the package's Version or Release",
                    entry.nevra(),
                    entry.file
                )));
            }
            next.push(entry.clone());
            added.push(entry.file.clone());
        }
        if added.is_empty() {
            return Ok(None);
        }
        next.sort_by(|a, b| a.file.cmp(&b.file));

        let pool = self.root.join("pool");
        std::fs::create_dir_all(&pool).map_err(PublishError::io(&pool))?;
        let mut copied = false;
        for (entry, path) in &incoming {
            let pooled = pool.join(format!("{}.rpm", entry.sha256));
            if !pooled.exists() {
                copy_into(path, &pooled)?;
                copied = true;
            }
        }
        if copied {
            // One flush of the file system for all new pool files, not an fsync each.
            sync_fs(&pool)?;
        }
        let id = self
            .snapshots()
            .last()
            .map(SnapshotId::after)
            .unwrap_or_else(|| SnapshotId("000001".into()));
        let tmp = self.root.join(format!(".new-{}", id.as_str()));
        if tmp.exists() {
            // Left by a publication that was killed: this one holds the lock.
            std::fs::remove_dir_all(&tmp).map_err(PublishError::io(&tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(PublishError::io(&tmp))?;
        for e in &next {
            let from = pool.join(format!("{}.rpm", e.sha256));
            let to = tmp.join(&e.file);
            std::fs::hard_link(&from, &to).map_err(PublishError::io(&to))?;
        }
        let manifest = Manifest {
            id: id.clone(),
            created: crate::store::Millis::now().0,
            packages: next,
        };
        let mpath = tmp.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| PublishError::Io {
            path: mpath.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&mpath, json).map_err(PublishError::io(&mpath))?;
        Ok(Some(Stage {
            id,
            tmp,
            previous,
            added,
        }))
    }
}
