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
mod lock;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::docker::{ContainerSpec, Engine, InfraError, LABEL_BUILD};
use crate::format::rpm::{rpm_identity, HeaderError, RpmIdentity};
use crate::model::BuildId;

pub use evr::{evrcmp, vercmp};

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

impl TryFrom<String> for SnapshotId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SnapshotId::parse(&s).ok_or_else(|| format!("`{s}` is not a snapshot id"))
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
        match self.epoch {
            Some(e) => format!(
                "{}-{e}:{}-{}.{}",
                self.name, self.version, self.release, self.arch
            ),
            None => format!(
                "{}-{}-{}.{}",
                self.name, self.version, self.release, self.arch
            ),
        }
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

/// Runs createrepo_c in a container: no network, as the service's own user.
#[derive(Clone)]
pub struct Indexer {
    pub engine: Engine,
    pub image: String,
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

/// Directory of a change's repository for one target: `repo_path` is the repository's path
/// on its forge (`owner/name`), `number` the pull request or change number. `None` when a
/// part could not be a plain directory name.
pub fn change_dir(data_dir: &Path, repo_path: &str, number: u64, target: &str) -> Option<PathBuf> {
    let plain = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0']);
    let mut d = data_dir.join("repos").join("changes");
    for part in repo_path.split('/') {
        if !plain(part) {
            return None;
        }
        d.push(part);
    }
    plain(target).then(|| d.join(number.to_string()).join(target))
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

    /// Checks the rules and lays out the next snapshot in a hidden directory: the pool gets
    /// the new packages, the snapshot links to every package it holds. `None`: nothing new.
    fn stage(&self, packages: &[PathBuf], policy: Policy) -> Result<Option<Stage>, PublishError> {
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

    /// createrepo_c over the staged snapshot, updating from the previous one's metadata.
    async fn index(&self, indexer: &Indexer, stage: &Stage) -> Result<(), PublishError> {
        let cache = self.root.join(".cache");
        std::fs::create_dir_all(&cache).map_err(PublishError::io(&cache))?;
        let mut mounts = vec![
            (stage.tmp.display().to_string(), "/repo".to_string(), false),
            (cache.display().to_string(), "/cache".to_string(), false),
        ];
        let mut cmd: Vec<String> = Vec::new();
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        if uid != 0 {
            cmd.extend([
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
            ]);
        }
        cmd.extend(
            [
                "createrepo_c",
                "--quiet",
                "--no-database",
                "--workers",
                "2",
                "--cachedir",
                "/cache",
            ]
            .map(String::from),
        );
        if let Some(prev) = &stage.previous {
            let prev_dir = self.snapshot_dir(prev);
            if prev_dir.join("repodata").join("repomd.xml").is_file() {
                mounts.push((prev_dir.display().to_string(), "/prev".to_string(), true));
                cmd.extend(["--update", "--update-md-path", "/prev"].map(String::from));
            }
        }
        cmd.push("/repo".into());
        let spec = ContainerSpec {
            name: format!("packetary-publish-{}", BuildId::generate()),
            image: indexer.image.clone(),
            labels: [(LABEL_BUILD.to_string(), "publish".to_string())]
                .into_iter()
                .collect(),
            mounts,
            network: false,
            pids: Some(256),
            ..Default::default()
        };
        let (code, out) = indexer
            .engine
            .run_once(&spec, cmd)
            .await
            .map_err(|InfraError(e)| PublishError::Index(e))?;
        if code != 0 {
            return Err(PublishError::Index(format!(
                "createrepo_c failed in {} (exit {code}): {}",
                indexer.image,
                String::from_utf8_lossy(&out).trim()
            )));
        }
        Ok(())
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

/// A snapshot being made.
struct Stage {
    id: SnapshotId,
    tmp: PathBuf,
    previous: Option<SnapshotId>,
    added: Vec<String>,
}

/// Reads a package file's identity and digest; a link or a non-RPM is refused.
pub fn describe(path: &Path) -> Result<Entry, PublishError> {
    let meta = std::fs::symlink_metadata(path).map_err(PublishError::io(path))?;
    if !meta.is_file() {
        return Err(PublishError::BadPackage(format!(
            "{} is not a regular file (links are not followed)",
            path.display()
        )));
    }
    let RpmIdentity {
        name,
        epoch,
        version,
        release,
        arch,
        ..
    } = rpm_identity(path).map_err(|e| match e {
        HeaderError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            PublishError::BadPackage(format!(
                "{} is not an RPM package: it ends before its header",
                path.display()
            ))
        }
        e => PublishError::BadPackage(e.to_string()),
    })?;
    let safe = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+~^-".contains(c))
    };
    if ![&name, &version, &release, &arch].iter().all(|s| safe(s)) {
        return Err(PublishError::BadPackage(format!(
            "{}: the header's name, version, release or architecture has characters a file name cannot have",
            path.display()
        )));
    }
    let file = format!("{name}-{version}-{release}.{arch}.rpm");
    Ok(Entry {
        file,
        name,
        epoch,
        version,
        release,
        arch,
        sha256: sha256_file(path)?,
    })
}

fn sha256_file(path: &Path) -> Result<String, PublishError> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(PublishError::io(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(PublishError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies `from` (opened without following a link) to a new file `to`, through a
/// temporary name, so that the pool never holds a partial package under its name (the
/// caller flushes the file system once after a batch).
fn copy_into(from: &Path, to: &Path) -> Result<(), PublishError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(PublishError::io(from))?;
    let tmp = to.with_extension(format!("tmp-{}", BuildId::generate()));
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(PublishError::io(&tmp))?;
    let r = std::io::copy(&mut src, &mut dst).and_then(|_| std::fs::rename(&tmp, to));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(PublishError::io(to))
}

/// The RPM files a `publish` argument names: a file, or the `*.rpm` files directly in a
/// directory (regular files only, sorted).
pub fn packages_in(arg: &Path) -> Result<Vec<PathBuf>, PublishError> {
    let meta = std::fs::symlink_metadata(arg).map_err(PublishError::io(arg))?;
    if meta.is_file() {
        return Ok(vec![arg.to_path_buf()]);
    }
    if !meta.is_dir() {
        return Err(PublishError::BadPackage(format!(
            "{} is neither an RPM file nor a directory of them",
            arg.display()
        )));
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(arg)
        .map_err(PublishError::io(arg))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rpm"))
        .collect();
    v.sort();
    Ok(v)
}

/// Flushes the file system holding `dir` (syncfs(2)).
fn sync_fs(dir: &Path) -> Result<(), PublishError> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir).map_err(PublishError::io(dir))?;
    // SAFETY: the descriptor is open and owned by `d` for the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(PublishError::io(dir)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A yum/dnf `.repo` file for a repository served at `base_url` (ending in `/`).
pub fn repo_file(id: &str, name: &str, base_url: &str) -> String {
    format!(
        "[{id}]\nname={name}\nbaseurl={base_url}\nenabled=1\ngpgcheck=0\nrepo_gpgcheck=0\nmetadata_expire=60\n"
    )
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

#[cfg(test)]
mod tests;

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
