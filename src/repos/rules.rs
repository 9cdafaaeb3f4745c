//! The publishing rules: what a new snapshot holds, given the previous one and the policy
//! (a change's newer build replaces; a release refuses downgrades and other bytes under a
//! published NEVRA).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::pool::{copy_into, describe, sync_fs};
use super::{
    evrcmp, newest_by_name, Entry, Manifest, Policy, PublishError, RepoDir, SnapshotId, MANIFEST,
};

/// A snapshot being made.
pub(super) struct Stage {
    pub(super) id: SnapshotId,
    pub(super) tmp: PathBuf,
    pub(super) previous: Option<SnapshotId>,
    pub(super) added: Vec<String>,
}

/// What the rules let into the next snapshot ([`RepoDir::check`]).
pub(super) struct Checked {
    /// Every package given, once per NEVRA, with where it is.
    incoming: Vec<(Entry, PathBuf)>,
    /// What the next snapshot holds.
    next: Vec<Entry>,
    /// File names new in it; empty: nothing new.
    added: Vec<String>,
    previous: Option<SnapshotId>,
}

/// A refusal whose first line starts with the fix (it is what a forge's status shows, cut
/// to 140 characters) and whose next lines explain it. No path of this host: the message
/// reaches pages and statuses.
fn refused(first: String, detail: String) -> PublishError {
    PublishError::Refused(format!("{first}\n{detail}"))
}

impl RepoDir {
    /// The publishing rules alone: reads the latest snapshot's manifest and the packages'
    /// headers, writes nothing. A pull request against a release's branch is checked with
    /// this against the release, so that a merge that would be refused is red before it.
    pub fn check(&self, packages: &[PathBuf], policy: Policy) -> Result<(), PublishError> {
        self.rules(packages, policy).map(|_| ())
    }

    fn rules(&self, packages: &[PathBuf], policy: Policy) -> Result<Checked, PublishError> {
        let previous = self.latest();
        let old = match &previous {
            Some(id) => self.manifest(id)?.packages,
            None => vec![],
        };
        // Maps, not scans: a first publication may bring thousands of packages.
        let mut incoming: Vec<(Entry, PathBuf)> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for p in packages {
            let entry = describe(p)?;
            if let Some(sha) = seen.get(&entry.key()) {
                if *sha != entry.sha256 {
                    return Err(refused(
                        format!(
                            "build each package once: {} was given twice with different contents",
                            entry.nevra()
                        ),
                        format!(
                            "sha256 {} and {}: one publication takes one file per name, version, release and architecture",
                            sha, entry.sha256
                        ),
                    ));
                }
                continue;
            }
            seen.insert(entry.key(), entry.sha256.clone());
            incoming.push((entry, p.clone()));
        }
        let old_by_key: HashMap<String, &Entry> = old.iter().map(|e| (e.key(), e)).collect();
        let newest = newest_by_name(&old);
        let mut new_entries: Vec<&Entry> = Vec::new();
        for (entry, _) in &incoming {
            if let Some(o) = old_by_key.get(&entry.key()) {
                if o.sha256 == entry.sha256 {
                    continue;
                }
                if policy == Policy::Release {
                    return Err(refused(
                        format!(
                            "raise Release: {} is published with other contents",
                            entry.nevra()
                        ),
                        format!(
                            "sha256 {} is published under this name, version and release; this build made sha256 {}.\nA release never takes other bytes under a published version (whoever installed it would not get the change): raise the package's Release (or Version) and build it again.",
                            o.sha256, entry.sha256
                        ),
                    ));
                }
            }
            if policy == Policy::Release {
                if let Some(n) = newest.get(entry.name.as_str()) {
                    if evrcmp(entry.evr(), n.evr()).is_lt() {
                        return Err(downgrade(&entry.nevra(), &n.nevra()));
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
                return Err(refused(
                    format!(
                        "raise Version or Release: {} has the file name of a published package",
                        entry.nevra()
                    ),
                    format!(
                        "{} is published already under another epoch; file names leave the epoch out, so both cannot be in one repository",
                        entry.file
                    ),
                ));
            }
            next.push(entry.clone());
            added.push(entry.file.clone());
        }
        Ok(Checked {
            incoming,
            next,
            added,
            previous,
        })
    }

    /// Checks the rules and lays out the next snapshot in a hidden directory: the pool gets
    /// the new packages, the snapshot links to every package it holds. `None`: nothing new.
    pub(super) fn stage(
        &self,
        packages: &[PathBuf],
        policy: Policy,
    ) -> Result<Option<Stage>, PublishError> {
        let Checked {
            incoming,
            mut next,
            added,
            previous,
        } = self.rules(packages, policy)?;
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

/// The refusal of a lower version than the published one (`published`).
pub fn downgrade(given: &str, published: &str) -> PublishError {
    refused(
        format!("raise Version or Release: {given} is lower than the published {published}"),
        "A release never goes back to a lower version: dnf would not install it over the published one. Give the package a higher Epoch, Version or Release than the published one.".to_string(),
    )
}
