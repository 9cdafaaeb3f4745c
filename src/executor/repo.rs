//! The repositories a build installs from ([`BuildRepo`]), and package repositories made
//! of earlier builds' results, for later builds to install from.

use std::path::{Path, PathBuf};

use super::results::open_regular;
use crate::config::{Repo, RepoLocation};
use crate::docker::{self, Engine, InfraError, LABEL_BUILD};
use crate::format::Format;
use crate::model::BuildId;

/// A repository a build installs from: always a URL, so that an executor anywhere can
/// reach it, and the same repository as a directory when it also lies on this host. The
/// local executor mounts `local` read-only when it is set (an optimisation: no network
/// for it); an executor elsewhere uses `url` in the dependency phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRepo {
    pub name: String,
    /// Where a build reaches it over the network (`http(s)://`), or a `file://` URL kept
    /// only for the record when the repository exists on this host alone (the CLI's).
    pub url: String,
    /// The same repository on this host, if it is here.
    pub local: Option<PathBuf>,
}

impl BuildRepo {
    /// A repository on this host only: its `file://` URL is for the record.
    pub fn local_only(name: &str, dir: &Path) -> BuildRepo {
        BuildRepo {
            name: name.to_string(),
            url: format!("file://{}", dir.display()),
            local: Some(dir.to_path_buf()),
        }
    }
}

/// A target's configured repository: a directory is local (its URL a `file://` one), a
/// URL has no local copy.
impl From<&Repo> for BuildRepo {
    fn from(r: &Repo) -> BuildRepo {
        match &r.location {
            RepoLocation::Dir(p) => BuildRepo::local_only(&r.name, p),
            RepoLocation::Url(u) => BuildRepo {
                name: r.name.clone(),
                url: u.clone(),
                local: None,
            },
        }
    }
}

/// Every repository a build of `target` installs from: the target's own, then `extra`.
pub fn build_repos(target: &crate::config::Target, extra: &[BuildRepo]) -> Vec<BuildRepo> {
    target
        .repos
        .iter()
        .map(BuildRepo::from)
        .chain(extra.iter().cloned())
        .collect()
}

/// Adds `packages` to `dir` (created if needed) and makes it a repository with the
/// format's indexer (createrepo_c for RPMs) in `image`, without network: how later builds
/// see earlier ones' packages. Each package must be a regular file; a link is refused, never
/// followed.
pub async fn local_repo(
    engine: &Engine,
    image: &str,
    dir: &Path,
    packages: &[PathBuf],
) -> Result<(), InfraError> {
    let format = packages
        .iter()
        .map(|p| Format::of_file(p))
        .reduce(|a, b| if a == b { a } else { None })
        .flatten()
        .ok_or_else(|| {
            InfraError(format!(
                "{}: a repository needs packages of one known format",
                dir.display()
            ))
        })?;
    let rpms = packages;
    let io = |e: std::io::Error| InfraError(format!("{}: {e}", dir.display()));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let (dir_owned, rpms_owned) = (dir.to_path_buf(), rpms.to_vec());
    tokio::task::spawn_blocking(move || copy_regular(&rpms_owned, &dir_owned))
        .await
        .map_err(|e| InfraError(format!("{}: {e}", dir.display())))?
        .map_err(io)?;
    // Confined like a build (the packages are build output), as the service's user.
    let (spec, cmd) = docker::tool_container(
        format!("packetary-createrepo-{}", BuildId::generate()),
        image,
        [(LABEL_BUILD.to_string(), "createrepo".to_string())]
            .into_iter()
            .collect(),
        vec![(dir.display().to_string(), "/repo".into(), false)],
        format.index_command("/repo"),
    );
    let (code, out) = engine
        .run_once_within(&spec, cmd, docker::TOOL_TIMEOUT)
        .await?;
    if code != 0 {
        return Err(InfraError(format!(
            "making the repository failed in {image} (exit {code}): {}",
            String::from_utf8_lossy(&out).trim()
        )));
    }
    Ok(())
}

/// Copies each of `rpms`, which must be a regular file, into `dir` as a new regular file
/// (whatever had its name there is replaced, not written through).
fn copy_regular(rpms: &[PathBuf], dir: &Path) -> std::io::Result<()> {
    for rpm in rpms {
        let Some(name) = rpm.file_name() else {
            continue;
        };
        let (mut from, _) = open_regular(rpm)?;
        let to = dir.join(name);
        let tmp = dir.join(format!(
            ".{}.{}",
            name.to_string_lossy(),
            BuildId::generate()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let copied = std::io::copy(&mut from, &mut f).and_then(|_| std::fs::rename(&tmp, &to));
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied?;
    }
    Ok(())
}

/// The binary packages (not the SRPM) in a build's result directory: regular files only,
/// links are not followed.
pub fn binary_packages_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            Format::of_file(p).is_some_and(|f| f.is_binary(name))
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_binary_rpms() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        let secret = d.join("secret");
        std::fs::write(&secret, "secret").expect("write");
        std::fs::write(d.join("a-1-1.noarch.rpm"), "a").expect("write");
        std::fs::write(d.join("a-1-1.src.rpm"), "s").expect("write");
        std::os::unix::fs::symlink(&secret, d.join("evil-1-1.noarch.rpm")).expect("link");
        std::fs::create_dir(d.join("dir.rpm")).expect("mkdir");
        assert_eq!(binary_packages_in(d), [d.join("a-1-1.noarch.rpm")]);
    }

    #[test]
    fn copies_regular_files_and_refuses_links() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        let secret = d.join("secret");
        std::fs::write(&secret, "secret").expect("write");
        std::fs::write(d.join("a-1-1.noarch.rpm"), "a").expect("write");
        std::os::unix::fs::symlink(&secret, d.join("evil-1-1.noarch.rpm")).expect("link");
        let repo = d.join("repo");
        std::fs::create_dir(&repo).expect("mkdir");
        // A link already in the repository is replaced, not written through.
        std::os::unix::fs::symlink(&secret, repo.join("a-1-1.noarch.rpm")).expect("link");
        copy_regular(&[d.join("a-1-1.noarch.rpm")], &repo).expect("copies");
        assert_eq!(std::fs::read_to_string(&secret).expect("secret"), "secret");
        assert_eq!(
            std::fs::read_to_string(repo.join("a-1-1.noarch.rpm")).expect("copy"),
            "a"
        );
        assert!(copy_regular(&[d.join("evil-1-1.noarch.rpm")], &repo).is_err());
        assert!(!repo.join("evil-1-1.noarch.rpm").exists());
    }
}
