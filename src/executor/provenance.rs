//! What a build was made from, recorded in `build.json` so that `packetary rebuild` can
//! make it again and a later build with the same inputs can reuse it (build avoidance):
//! the package's files as a tree digest, `SOURCE_DATE_EPOCH`, the image id, the target's
//! arch/backend/macros and each repository with the snapshot it was in.
//!
//! The input digest ([`input_digest`]) hashes exactly the things that decide the bytes of
//! the result; file modification times are not among them (rpm clamps them to
//! `SOURCE_DATE_EPOCH`), so a new commit that does not touch a package gives the same
//! digest as long as `SOURCE_DATE_EPOCH` comes from the last commit that touched it.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Backend, Target};
use crate::executor::{build_repos, BuildRepo};
use crate::model::PackageSource;

/// Version of the `build.json` format (see README, "build.json"). 2: `provenance` added,
/// the driver command recorded once (`command`) instead of once per phase. 3: the input
/// digest also covers the spec, the source directory and `setup` (issue 22, M2).
pub const BUILD_JSON_FORMAT: u32 = 3;

/// Largest `repomd.xml` read (they are a few KiB).
const MAX_REPOMD: usize = 4 << 20;
/// Directory levels walked below the source directory (as the input upload does).
const MAX_DEPTH: usize = 64;

/// The recorded inputs of one build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `sha256:` over the package's files (relative names, modes, contents; see
    /// [`tree_digest`]).
    pub tree_digest: String,
    /// Seconds since the epoch given to rpm as `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: i64,
    pub backend: Backend,
    pub image: String,
    /// The image's id (`sha256:...`) when the build started.
    pub image_id: Option<String>,
    pub arch: String,
    /// The target's distribution macros, `name value` as given to `--define`.
    pub macros: Vec<String>,
    pub releasever: Option<String>,
    pub repositories: Vec<RepoRecord>,
    /// The spec and the source directory relative to the package's root (as kept under
    /// [`INPUTS_DIR`]).
    pub spec: PathBuf,
    pub source_dir: PathBuf,
    /// `sha256:` of what else decides the result ([`setup_digest`]): Packetary's version,
    /// the backend's driver scripts, the target's dist, chroot setup and limits.
    #[serde(default)]
    pub setup: String,
    /// `sha256:` of all of the above: equal digests, same result (see [`input_digest`]).
    pub input_digest: String,
}

/// `sha256:` over what decides a build's result besides its files, image and repositories:
/// Packetary's version, the driver scripts the backend runs for `target` (with a fixed spec
/// name), and the target's dist, chroot setup and limits.
pub fn setup_digest(target: &Target) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(format!("{:?}", super::backend::script(target, "SPEC", &[])).as_bytes());
    h.update(format!("{:?}", target.dist).as_bytes());
    h.update(target.chroot_setup.as_bytes());
    h.update(format!("{:?}", target.limits).as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A repository a build could install from, with the state it was in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRecord {
    pub name: String,
    /// `file://<dir>` or the http(s) URL.
    pub url: String,
    /// `sha256:` of its `repodata/repomd.xml` read when the build started; `None` when it
    /// could not be read (the build then recorded no snapshot and is never reused).
    pub snapshot: Option<String>,
}

/// `sha256:` of a repository's `repodata/repomd.xml`, from its directory when it is on
/// this host, else over HTTP from its URL: the id of the snapshot a build sees
/// (createrepo_c writes a new one on each change).
pub async fn repomd_digest(r: &BuildRepo) -> Result<String, RepomdError> {
    let repomd = read_repomd(r).await?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&repomd))))
}

/// A repository's `repodata/repomd.xml` that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RepomdError {
    #[error("repository `{repo}`: repodata/repomd.xml: {error}")]
    Read { repo: String, error: io::Error },
    #[error("repository `{repo}`: {url}: {error}")]
    Fetch {
        repo: String,
        url: String,
        error: crate::http::HttpError,
    },
}

/// `repodata/repomd.xml` of `r`: read from its directory, or fetched from its URL.
async fn read_repomd(r: &BuildRepo) -> Result<Vec<u8>, RepomdError> {
    match &r.local {
        Some(p) => tokio::fs::read(p.join("repodata/repomd.xml"))
            .await
            .map_err(|error| RepomdError::Read {
                repo: r.name.clone(),
                error,
            }),
        None => {
            let url = format!("{}/repodata/repomd.xml", r.url.trim_end_matches('/'));
            let limits = crate::http::Limits {
                head: Duration::from_secs(15),
                body: Duration::from_secs(60),
                max_bytes: MAX_REPOMD,
            };
            crate::http::get(&url, limits)
                .await
                .map_err(|error| RepomdError::Fetch {
                    repo: r.name.clone(),
                    url: crate::model::redact(&url),
                    error,
                })
        }
    }
}

/// The files of a package: the spec and everything under its source directory, as
/// (path relative to the package's root, file). Links are kept as links (their target is
/// what is hashed); nothing outside the root is read.
fn package_files(package: &PackageSource) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let rel = |p: &Path| {
        p.strip_prefix(&package.root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from(p.file_name().unwrap_or_default()))
    };
    let mut out = vec![(rel(&package.spec), package.spec.clone())];
    let mut stack = vec![(package.source_dir.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let path = e.path();
            let ft = e.file_type()?;
            if ft.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
            } else if path != package.spec {
                out.push((rel(&path), path));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `sha256:` over the package's files: for each, in name order, its relative name, its
/// kind and mode bits, and the sha256 of its contents (a link: of its target). The mtimes
/// are left out: a checkout or export does not keep them.
pub fn tree_digest(package: &PackageSource) -> io::Result<String> {
    let mut h = Sha256::new();
    for (rel, path) in package_files(package)? {
        let meta = std::fs::symlink_metadata(&path)?;
        let (kind, content) = if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&path)?;
            ("l", Sha256::digest(t.as_os_str().as_encoded_bytes()))
        } else if meta.file_type().is_file() {
            let mut f = std::fs::File::open(&path)?;
            let mut fh = Sha256::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                fh.update(&buf[..n]);
            }
            ("f", fh.finalize())
        } else {
            ("o", Sha256::digest(b""))
        };
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(format!("\0{kind}\0{:o}\0", meta.permissions().mode() & 0o7777).as_bytes());
        h.update(content);
        h.update(b"\n");
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Directory of a build's results holding a copy of its package's files, for
/// `packetary rebuild` of a results directory.
pub const INPUTS_DIR: &str = "inputs";

/// Copies the package's regular files (those [`tree_digest`] covers; links left out) under
/// `dest`, at the same relative names, modes kept (but set-id and sticky bits, which are
/// dropped): the tree a rebuild starts from ([`kept_package`]) has the same digest.
pub fn keep_inputs(package: &PackageSource, dest: &Path) -> io::Result<()> {
    for (rel, path) in package_files(package)? {
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let to = dest.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Regular files only: a results directory is served, and holds no links (a
        // package's links are not kept; its rebuild then names its files as changed).
        if std::fs::symlink_metadata(&path)?.file_type().is_file() {
            std::fs::copy(&path, &to)?;
            // Never a set-id or sticky bit on the host's copy (a package's files are
            // untrusted); such a package's rebuild names its files as changed.
            let mode = std::fs::metadata(&to)?.permissions().mode();
            if mode & 0o7000 != 0 {
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode & 0o777))?;
            }
        }
    }
    Ok(())
}

/// The package kept by [`keep_inputs`] in `inputs`, given the spec's and the source
/// directory's names relative to the original root.
pub fn kept_package(inputs: &Path, spec: &Path, source_dir: &Path) -> PackageSource {
    PackageSource {
        root: inputs.to_path_buf(),
        spec: inputs.join(spec),
        source_dir: inputs.join(source_dir),
    }
}

/// `SOURCE_DATE_EPOCH` for a package outside git: the newest modification time among its
/// files (0 when there is none).
pub fn newest_mtime(package: &PackageSource) -> i64 {
    package_files(package)
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, p)| std::fs::symlink_metadata(p).ok())
        .filter_map(|m| m.modified().ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .max()
        .unwrap_or(0)
}

/// Why the inputs of a build could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("cannot read the package's files: {0}")]
    Files(#[source] io::Error),
    /// The task reading the package's files did not end (a panic, a runtime shutting down).
    #[error("cannot read the package's files: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot look up the image {image}: {source}")]
    Image {
        image: String,
        source: crate::docker::InfraError,
    },
}

/// The `SOURCE_DATE_EPOCH` a build request is given, else its package's newest mtime
/// (read off the async threads).
pub async fn epoch_of(req: &crate::executor::BuildRequest) -> Result<i64, InputsError> {
    if let Some(e) = req.source_date_epoch {
        return Ok(e);
    }
    let pkg = req.package.clone();
    tokio::task::spawn_blocking(move || newest_mtime(&pkg))
        .await
        .map_err(InputsError::Task)
}

/// The inputs of `req` (see [`record`]), its image being `image_id`: the one way a
/// build's record is made, by the runner's port for the scheduler
/// (`queue::Runner::inputs`) or by the executor for a request that carries none.
pub async fn of_request(
    req: &crate::executor::BuildRequest,
    image_id: Option<String>,
) -> Result<Provenance, InputsError> {
    let epoch = epoch_of(req).await?;
    record(&req.package, &req.target, &req.extra_repos, image_id, epoch).await
}

/// Records the inputs of a build of `package` for `target` (its own repositories and
/// `extra`), reading each repository's snapshot now.
pub async fn record(
    package: &PackageSource,
    target: &Target,
    extra: &[BuildRepo],
    image_id: Option<String>,
    source_date_epoch: i64,
) -> Result<Provenance, InputsError> {
    let pkg = package.clone();
    let tree = tokio::task::spawn_blocking(move || tree_digest(&pkg))
        .await
        .map_err(InputsError::Task)?
        .map_err(InputsError::Files)?;
    let mut repositories = vec![];
    for r in build_repos(target, extra) {
        let snapshot = match repomd_digest(&r).await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("no snapshot id for {e}");
                None
            }
        };
        // Recorded in `build.json` and compared between builds: never with credentials.
        repositories.push(RepoRecord {
            name: r.name.clone(),
            url: crate::model::redact(&r.url),
            snapshot,
        });
    }
    let mut p = Provenance {
        tree_digest: tree,
        source_date_epoch,
        backend: target.backend,
        image: target.image.clone(),
        image_id,
        arch: target.arch.clone(),
        macros: target.rpm_defines(),
        releasever: target.releasever.clone(),
        repositories,
        spec: package.relative_spec(),
        source_dir: package
            .source_dir
            .strip_prefix(&package.root)
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        setup: setup_digest(target),
        input_digest: String::new(),
    };
    p.input_digest = input_digest(&p);
    Ok(p)
}

/// `sha256:` over every recorded input but the digest itself; repository URLs are left out
/// where they name a directory of the change's earlier results (their snapshot says what
/// is in them). `None` fields hash as absent, so a build whose image id or a repository's
/// snapshot is unknown still gets a digest, but [`Provenance::reusable`] says no.
impl Provenance {
    /// The record with the image's id `image_id`, its digest computed again.
    pub fn with_image_id(mut self, image_id: Option<String>) -> Provenance {
        self.image_id = image_id;
        self.input_digest = input_digest(&self);
        self
    }
}

pub fn input_digest(p: &Provenance) -> String {
    let mut h = Sha256::new();
    let mut put = |k: &str, v: &str| {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    };
    put("format", &BUILD_JSON_FORMAT.to_string());
    put("tree", &p.tree_digest);
    put("source_date_epoch", &p.source_date_epoch.to_string());
    put("backend", p.backend.as_str());
    put("image", &p.image);
    put("image_id", p.image_id.as_deref().unwrap_or("-"));
    put("arch", &p.arch);
    put("releasever", p.releasever.as_deref().unwrap_or("-"));
    // Which spec of the tree is built: in a directory of several specs, every spec has the
    // same tree.
    put("spec", &p.spec.to_string_lossy());
    put("source_dir", &p.source_dir.to_string_lossy());
    put("setup", &p.setup);
    for m in &p.macros {
        put("macro", m);
    }
    for r in &p.repositories {
        let url = if r.name == "change" { "-" } else { &r.url };
        put(
            "repo",
            &format!(
                "{} {} {}",
                r.name,
                url,
                r.snapshot.as_deref().unwrap_or("-")
            ),
        );
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

impl Provenance {
    /// Whether a build with these inputs may be reused: every input is known.
    pub fn reusable(&self) -> bool {
        self.image_id.is_some() && self.repositories.iter().all(|r| r.snapshot.is_some())
    }

    /// The inputs that differ between a recorded build (`self`) and `now`, named for a
    /// person: `image id (sha256:a… → sha256:b…)`.
    pub fn differences(&self, now: &Provenance) -> Vec<String> {
        let mut d = vec![];
        let mut cmp = |what: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{what} ({a} → {b})"));
            }
        };
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "unknown".into());
        cmp(
            "package files",
            self.tree_digest.clone(),
            now.tree_digest.clone(),
        );
        cmp(
            "SOURCE_DATE_EPOCH",
            self.source_date_epoch.to_string(),
            now.source_date_epoch.to_string(),
        );
        cmp(
            "backend",
            self.backend.as_str().into(),
            now.backend.as_str().into(),
        );
        cmp("image", self.image.clone(), now.image.clone());
        cmp("image id", opt(&self.image_id), opt(&now.image_id));
        cmp("arch", self.arch.clone(), now.arch.clone());
        cmp("releasever", opt(&self.releasever), opt(&now.releasever));
        cmp("macros", self.macros.join(", "), now.macros.join(", "));
        let path = |p: &Path| p.display().to_string();
        cmp("spec", path(&self.spec), path(&now.spec));
        cmp(
            "source directory",
            path(&self.source_dir),
            path(&now.source_dir),
        );
        cmp(
            "setup (Packetary's version, driver scripts, dist, chroot setup, limits)",
            self.setup.clone(),
            now.setup.clone(),
        );
        for r in &self.repositories {
            match now.repositories.iter().find(|n| n.name == r.name) {
                None => d.push(format!("repository {} (no longer used)", r.name)),
                Some(n) => {
                    if r.url != n.url {
                        d.push(format!("repository {} URL ({} → {})", r.name, r.url, n.url));
                    } else if r.snapshot != n.snapshot {
                        d.push(format!(
                            "repository {} snapshot ({} → {})",
                            r.name,
                            opt(&r.snapshot),
                            opt(&n.snapshot)
                        ));
                    }
                }
            }
        }
        for n in &now.repositories {
            if !self.repositories.iter().any(|r| r.name == n.name) {
                d.push(format!("repository {} (new)", n.name));
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(dir: &Path) -> PackageSource {
        let root = dir.canonicalize().unwrap();
        PackageSource {
            spec: root.join("p/p.spec"),
            source_dir: root.join("p"),
            root,
        }
    }

    /// A package's set-id file is kept for its rebuild without the set-id bit: the host
    /// never holds a set-id file a package brought (as root, `copy` keeps the mode).
    #[test]
    fn kept_inputs_carry_no_set_id_bits() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("p")).unwrap();
        std::fs::write(t.path().join("p/p.spec"), "Name: p\n").unwrap();
        std::fs::write(t.path().join("p/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            t.path().join("p/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        let dest = t.path().join("kept");
        keep_inputs(&package(t.path()), &dest).unwrap();
        let mode = std::fs::metadata(dest.join("p/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn tree_digest_covers_names_modes_contents_not_mtimes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("p/sub")).unwrap();
        std::fs::write(t.path().join("p/p.spec"), "Name: p\n").unwrap();
        std::fs::write(t.path().join("p/sub/a.patch"), "a").unwrap();
        let p = package(t.path());
        let d0 = tree_digest(&p).unwrap();
        // Touching changes nothing.
        let f = std::fs::File::options()
            .append(true)
            .open(t.path().join("p/sub/a.patch"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(tree_digest(&p).unwrap(), d0);
        std::fs::write(t.path().join("p/sub/a.patch"), "b").unwrap();
        let d1 = tree_digest(&p).unwrap();
        assert_ne!(d1, d0);
        std::fs::set_permissions(
            t.path().join("p/sub/a.patch"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let d2 = tree_digest(&p).unwrap();
        assert_ne!(d2, d1);
        std::fs::rename(
            t.path().join("p/sub/a.patch"),
            t.path().join("p/sub/b.patch"),
        )
        .unwrap();
        assert_ne!(tree_digest(&p).unwrap(), d2);
        assert!(newest_mtime(&p) > 0);
        let kept = t.path().join("kept");
        keep_inputs(&p, &kept).unwrap();
        let k = kept_package(
            &kept.canonicalize().unwrap(),
            Path::new("p/p.spec"),
            Path::new("p"),
        );
        assert_eq!(tree_digest(&k).unwrap(), tree_digest(&p).unwrap());
    }

    #[test]
    fn differences_name_the_input() {
        let a = Provenance {
            tree_digest: "sha256:t".into(),
            source_date_epoch: 1,
            backend: Backend::Rpmbuild,
            image: "i".into(),
            image_id: Some("sha256:1".into()),
            arch: "x86_64".into(),
            macros: vec![],
            releasever: None,
            repositories: vec![RepoRecord {
                name: "base".into(),
                url: "file:///r".into(),
                snapshot: Some("sha256:s1".into()),
            }],
            spec: "p.spec".into(),
            source_dir: "".into(),
            setup: "sha256:setup".into(),
            input_digest: String::new(),
        };
        // Issue 22 (M2): a sibling spec of the same tree, or another setup, is another
        // build.
        for change in [
            |p: &mut Provenance| p.spec = "q.spec".into(),
            |p: &mut Provenance| p.source_dir = "q".into(),
            |p: &mut Provenance| p.setup = "sha256:other".into(),
        ] {
            let mut other = a.clone();
            change(&mut other);
            assert_ne!(input_digest(&a), input_digest(&other), "{other:?}");
        }
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        assert_eq!(input_digest(&a), input_digest(&b));
        b.image_id = Some("sha256:2".into());
        b.repositories[0].snapshot = Some("sha256:s2".into());
        let d = a.differences(&b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("image id (sha256:1 → sha256:2)"), "{d:?}");
        assert!(d[1].starts_with("repository base snapshot"), "{d:?}");
        assert_ne!(input_digest(&a), input_digest(&b));
    }
}
