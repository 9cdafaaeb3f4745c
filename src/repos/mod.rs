//! Package repositories on disk: a release's repository of one target under
//! `<data_dir>/repos/<release>/<target>/`, and a change's under
//! `<data_dir>/repos/changes/<owner>/<repo>/<number>/<target>/`.
//!
//! A repository directory holds
//!
//! ```text
//! pool/<sha256>.rpm           every package once, by content
//! <snapshot>/                 immutable: packages hard-linked from the pool under their
//!   <n>-<v>-<r>.<a>.rpm       canonical names, createrepo_c's repodata/, and
//!   repodata/                 packetary-snapshot.json (what it holds, with digests)
//!   packetary-snapshot.json
//! latest -> <snapshot>        a symlink, replaced by rename(2): readers see one snapshot or
//!                             the next, never one being written
//! .lock                       flock(2)ed while publishing: publications are serialized,
//!                             across processes too
//! .cache/                     createrepo_c's checksum cache
//! ```
//!
//! A publication makes a new snapshot in a hidden directory, runs createrepo_c there with
//! `--update` against the previous snapshot's metadata (a package whose name, size and mtime
//! match is not read again: hard links keep all three), renames it into place, switches
//! `latest`, then prunes snapshots beyond the number kept (never one a kept build used)
//! and pool files no snapshot links any more (link count 1).

mod evr;
mod index;
mod lock;
mod pool;
mod prune;
mod rules;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::docker::Engine;
use crate::model::{BuildId, RepoId};

pub use evr::{evrcmp, vercmp};
pub use index::Indexer;
pub use pool::{describe, packages_in};
pub use prune::{snapshots_named, stale_change_repos};
pub use rules::downgrade;

/// The manifest each snapshot carries.
pub const MANIFEST: &str = "packetary-snapshot.json";
/// The image that indexes a repository when the target's image has no createrepo_c.
pub const DEFAULT_INDEX_IMAGE: &str = "packetary/rpmbuild:bookworm";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A publishing rule refused the packages; nothing was published.
    #[error("{0}")]
    Refused(String),
    /// A file given to publish is not a usable package.
    #[error("{0}")]
    BadPackage(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// createrepo_c could not run or failed.
    #[error("indexing the repository: {0}")]
    Index(String),
}

impl PublishError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
        move |source| PublishError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the fault is the packages' (a rule, a bad file), not the machine's.
    pub fn is_refusal(&self) -> bool {
        matches!(self, PublishError::Refused(_) | PublishError::BadPackage(_))
    }
}

/// A snapshot's id: a zero-padded sequence number, so names sort in publication order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn parse(s: &str) -> Option<SnapshotId> {
        (s.len() >= 6 && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| SnapshotId(s.to_string()))
    }

    fn number(&self) -> u64 {
        self.0.parse().unwrap_or(0)
    }

    fn after(&self) -> SnapshotId {
        SnapshotId(format!("{:06}", self.number() + 1))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A text that is no [`SnapshotId`] (six digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a snapshot id")]
pub struct NotASnapshotId(pub String);

impl TryFrom<String> for SnapshotId {
    type Error = NotASnapshotId;
    fn try_from(s: String) -> Result<Self, NotASnapshotId> {
        SnapshotId::parse(&s).ok_or(NotASnapshotId(s))
    }
}

impl From<SnapshotId> for String {
    fn from(s: SnapshotId) -> String {
        s.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One package of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub file: String,
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub sha256: String,
}

impl Entry {
    /// `name-[epoch:]version-release.arch`, how rules and messages name a package.
    pub fn nevra(&self) -> String {
        nevra(
            &self.name,
            self.epoch,
            &self.version,
            &self.release,
            &self.arch,
        )
    }

    fn evr(&self) -> (Option<u32>, &str, &str) {
        (self.epoch, &self.version, &self.release)
    }

    /// What makes two entries the same NEVRA (no epoch and epoch 0 are the same).
    fn key(&self) -> String {
        format!(
            "{}\0{}\0{}\0{}\0{}",
            self.name,
            self.epoch.unwrap_or(0),
            self.version,
            self.release,
            self.arch
        )
    }
}

/// `name-[epoch:]version-release.arch`: how rules and messages name a package, built or
/// only planned.
pub fn nevra(name: &str, epoch: Option<u32>, version: &str, release: &str, arch: &str) -> String {
    match epoch {
        Some(e) => format!("{name}-{e}:{version}-{release}.{arch}"),
        None => format!("{name}-{version}-{release}.{arch}"),
    }
}

/// The entry of the highest EVR for each name among `entries`: what a release's
/// downgrade rule compares with.
pub fn newest_by_name<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> HashMap<&'a str, &'a Entry> {
    let mut newest: HashMap<&str, &Entry> = HashMap::new();
    for e in entries {
        let n = newest.entry(e.name.as_str()).or_insert(e);
        if evrcmp(e.evr(), n.evr()).is_gt() {
            *n = e;
        }
    }
    newest
}

/// What `packetary-snapshot.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub id: SnapshotId,
    /// Milliseconds since the Unix epoch.
    pub created: i64,
    pub packages: Vec<Entry>,
}

/// How a repository takes new packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A release: a lower EVR than the one published for the same name is refused, so is
    /// other bytes under a published NEVRA (the same bytes again change nothing).
    Release,
    /// A change: what a new build of the change makes replaces what an earlier one made
    /// (same name and architecture), whatever its version.
    Change,
}

/// A publication's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A new snapshot, now `latest`, holding these new packages (canonical file names).
    Snapshot { id: SnapshotId, added: Vec<String> },
    /// Every package was already published with the same bytes: nothing changed.
    Unchanged { id: Option<SnapshotId> },
}

impl Published {
    pub fn snapshot(&self) -> Option<&SnapshotId> {
        match self {
            Published::Snapshot { id, .. } => Some(id),
            Published::Unchanged { id } => id.as_ref(),
        }
    }
}

/// One repository directory (one release or change, one target).
#[derive(Debug, Clone)]
pub struct RepoDir {
    root: PathBuf,
}

/// Directory of a release's repository for one target.
pub fn release_dir(data_dir: &Path, release: &str, target: &str) -> PathBuf {
    data_dir.join("repos").join(release).join(target)
}

/// Directory of the repository of what a build's change built in its earlier stages,
/// `stages/<build-id>`: made before the build, served under `/repos/` (as private as the
/// build's repository) so that a build anywhere can reach it, removed with the build's
/// work directory.
pub fn stage_dir(data_dir: &Path, id: &crate::model::BuildId) -> PathBuf {
    data_dir.join("repos").join("stages").join(id.as_str())
}

/// The URL under `<repos_url>/repos/` of a directory under `<data_dir>/repos/`; `None`
/// when there is no base URL (the command line's builds) or `dir` lies elsewhere.
pub fn served_url(data_dir: &Path, repos_url: &str, dir: &Path) -> Option<String> {
    if repos_url.is_empty() {
        return None;
    }
    let rel = dir.strip_prefix(data_dir.join("repos")).ok()?;
    let segs: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(format!(
        "{}/repos/{}/",
        repos_url.trim_end_matches('/'),
        segs?.join("/")
    ))
}

/// Directory of a change's repository for one target,
/// `changes/<forge>/<path on the forge>/<number>/<target>`: the forge is part of it, so that
/// the same path and number on two forges (`github:o/r` #7, `gerrit:o/r` change 7) never
/// share a repository. `None` when a part could not be a plain directory name.
pub fn change_dir(data_dir: &Path, repo: &RepoId, number: u64, target: &str) -> Option<PathBuf> {
    let plain = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0']);
    let mut d = data_dir
        .join("repos")
        .join("changes")
        .join(repo.forge().as_str());
    for part in repo.path().split('/') {
        if !plain(part) {
            return None;
        }
        d.push(part);
    }
    plain(target).then(|| d.join(number.to_string()).join(target))
}

impl RepoDir {
    pub fn new(root: impl Into<PathBuf>) -> RepoDir {
        RepoDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot `latest` points at, if any.
    pub fn latest(&self) -> Option<SnapshotId> {
        let target = std::fs::read_link(self.root.join("latest")).ok()?;
        SnapshotId::parse(target.to_str()?)
    }

    /// The directory of a snapshot (whatever `latest` does later, this one stays).
    pub fn snapshot_dir(&self, id: &SnapshotId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// The snapshots on disk, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotId> {
        let mut v: Vec<SnapshotId> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| SnapshotId::parse(e.file_name().to_str()?))
            .collect();
        v.sort();
        v
    }

    /// A snapshot's manifest.
    pub fn manifest(&self, id: &SnapshotId) -> Result<Manifest, PublishError> {
        let path = self.snapshot_dir(id).join(MANIFEST);
        let text = std::fs::read(&path).map_err(PublishError::io(&path))?;
        serde_json::from_slice(&text).map_err(|e| PublishError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// Publishes `packages` (RPM files; a link is refused) under `policy`, keeping the
    /// newest `keep` snapshots and every one in `protected`. Waits for any other
    /// publication into this directory to end first.
    pub async fn publish(
        &self,
        indexer: &Indexer,
        packages: &[PathBuf],
        policy: Policy,
        keep: usize,
        protected: &BTreeSet<SnapshotId>,
    ) -> Result<Published, PublishError> {
        std::fs::create_dir_all(&self.root).map_err(PublishError::io(&self.root))?;
        let _lock = lock::exclusive(&self.root.join(".lock")).await?;
        let started = std::time::Instant::now();
        let (this, pkgs) = (self.clone(), packages.to_vec());
        let staged = tokio::task::spawn_blocking(move || this.stage(&pkgs, policy))
            .await
            .map_err(|e| PublishError::Index(e.to_string()))??;
        let Some(stage) = staged else {
            return Ok(Published::Unchanged { id: self.latest() });
        };
        let staged_in = started.elapsed();
        let indexed = self.index(indexer, &stage).await;
        let indexed_in = started.elapsed() - staged_in;
        if let Err(e) = indexed {
            let _ = std::fs::remove_dir_all(&stage.tmp);
            return Err(e);
        }
        let final_dir = self.snapshot_dir(&stage.id);
        std::fs::rename(&stage.tmp, &final_dir).map_err(PublishError::io(&final_dir))?;
        self.switch_latest(&stage.id)?;
        let mut keep_ids = protected.clone();
        keep_ids.insert(stage.id.clone());
        self.prune(keep, &keep_ids);
        tracing::info!(
            repo = %self.root.display(),
            snapshot = %stage.id,
            added = ?stage.added,
            stage_ms = staged_in.as_millis() as u64,
            index_ms = indexed_in.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "published"
        );
        Ok(Published::Snapshot {
            id: stage.id,
            added: stage.added,
        })
    }

    /// Points `latest` at `id` with one rename(2) over the old link.
    fn switch_latest(&self, id: &SnapshotId) -> Result<(), PublishError> {
        let tmp = self.root.join(format!(".latest-{}", BuildId::generate()));
        std::os::unix::fs::symlink(id.as_str(), &tmp).map_err(PublishError::io(&tmp))?;
        let latest = self.root.join("latest");
        std::fs::rename(&tmp, &latest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            PublishError::Io {
                path: latest.clone(),
                source: e,
            }
        })
    }
}

/// A yum/dnf `.repo` file for a repository served at `base_url` (ending in `/`).
pub fn repo_file(id: &str, name: &str, base_url: &str) -> String {
    format!(
        "[{id}]\nname={name}\nbaseurl={base_url}\nenabled=1\ngpgcheck=0\nrepo_gpgcheck=0\nmetadata_expire=60\n"
    )
}

#[cfg(test)]
pub(crate) mod tests;

/// Publishes into a release's repository of one target: the release's rules, its
/// `keep_snapshots`, indexed in the target's image.
pub async fn publish_release(
    engine: &Engine,
    data_dir: &Path,
    release: &crate::config::Release,
    target: &crate::config::Target,
    packages: &[PathBuf],
    protected: &BTreeSet<SnapshotId>,
) -> Result<Published, PublishError> {
    if !release.targets.contains(&target.name) {
        return Err(PublishError::Refused(format!(
            "release `{}` has no target `{}` (its targets: {})\n  fix: add it to [releases.{}] targets",
            release.name,
            target.name,
            release
                .targets
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            release.name
        )));
    }
    let dir = RepoDir::new(release_dir(
        data_dir,
        release.name.as_str(),
        target.name.as_str(),
    ));
    let indexer = Indexer {
        engine: engine.clone(),
        image: target.image.clone(),
    };
    dir.publish(
        &indexer,
        packages,
        Policy::Release,
        release.keep_snapshots,
        protected,
    )
    .await
}
