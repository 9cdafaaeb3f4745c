//! A commit's files for a build: `git archive` of the commit from the bare mirror the
//! planner fetched ([`crate::git::MirrorCache`], one per clone URL), so that each repository
//! is mirrored once. `git archive` rather than an export through libgit2 because it takes
//! the whole tree as it is (symlinks, submodule placeholders) without judging it; the
//! planner already refused what cannot be built.

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

use super::{SourceError, SourceProvider};
use crate::git::{cli, Credentials, GitError, MirrorCache, RemoteRef};
use crate::model::{CommitSha, RepoId};
use crate::plan::{fetch_lookaside, PlannedPackage};

/// Exports commits from the planner's mirrors.
pub struct MirrorSource {
    mirrors: MirrorCache,
    creds: Credentials,
}

impl MirrorSource {
    pub fn new(mirrors: MirrorCache, creds: impl Into<Credentials>) -> MirrorSource {
        MirrorSource {
            mirrors,
            creds: creds.into(),
        }
    }

    async fn export_impl(
        &self,
        clone_url: &str,
        commit: &CommitSha,
        dest: &Path,
    ) -> Result<(), SourceError> {
        let mirror = self.mirrors.mirror_for(clone_url).path;
        if !cli::has_commit(&mirror, commit.as_str()).await {
            // Planned by another process, or the mirror was removed since: fetch every
            // branch, pull request head and Gerrit patchset.
            let auth = self
                .creds
                .for_url(clone_url)
                .await
                .map_err(|e| SourceError::Infra(e.to_string()))?;
            self.mirrors
                .fetch(clone_url, &RemoteRef::every_head(), &auth)
                .await
                .map_err(|e| match e {
                    e @ (GitError::MissingRef { .. } | GitError::MissingRev { .. }) => {
                        SourceError::Missing(e.to_string())
                    }
                    e => SourceError::Infra(e.to_string()),
                })?;
            if !cli::has_commit(&mirror, commit.as_str()).await {
                return Err(SourceError::Missing(format!(
                    "commit {commit} is not in {}",
                    crate::model::redact(clone_url)
                )));
            }
        }
        archive(&mirror, commit, dest).await
    }
}

/// Writes the tree of `commit` in the repository at `repo` (bare or not) into `dest`.
pub async fn archive(repo: &Path, commit: &CommitSha, dest: &Path) -> Result<(), SourceError> {
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(|e| SourceError::Infra(format!("create {}: {e}", dest.display())))?;
    let tarball = dest.with_extension("tar");
    cli::archive_tar(repo, commit.as_str(), &tarball)
        .await
        .map_err(|e| SourceError::Infra(e.to_string()))?;
    let dest_owned = dest.to_path_buf();
    let tb = tarball.clone();
    let unpacked = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let f = std::fs::File::open(&tb)?;
        // `unpack` refuses entries that would land outside `dest`.
        tar::Archive::new(f).unpack(&dest_owned)
    })
    .await
    .map_err(|e| SourceError::Infra(e.to_string()))?;
    let _ = tokio::fs::remove_file(&tarball).await;
    unpacked.map_err(|e| SourceError::Infra(format!("unpack {commit}: {e}")))
}

/// Exports commits of one repository on this host (a path or a mirror), for
/// `packetary build --git`; dist-git packages of the plan also get their lookaside
/// tarballs, downloaded and checked against their `sources` file.
pub struct PathSource {
    repo: PathBuf,
    packages: Vec<PlannedPackage>,
    lookaside: Option<String>,
}

impl PathSource {
    pub fn new(repo: PathBuf, packages: Vec<PlannedPackage>, lookaside: Option<String>) -> Self {
        PathSource {
            repo,
            packages,
            lookaside,
        }
    }

    async fn export_impl(&self, commit: &CommitSha, dest: &Path) -> Result<(), SourceError> {
        archive(&self.repo, commit, dest).await?;
        for p in &self.packages {
            let dir = dest.join(&p.source_dir);
            if dir.is_dir() {
                fetch_lookaside(p, &dir, self.lookaside.as_deref())
                    .await
                    .map_err(|e| SourceError::Missing(format!("{}: {e}", p.id)))?;
            }
        }
        Ok(())
    }
}

impl SourceProvider for PathSource {
    fn export<'a>(
        &'a self,
        _clone_url: &'a str,
        _repo: &'a RepoId,
        commit: &'a CommitSha,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.export_impl(commit, dest))
    }

    fn last_change<'a>(
        &'a self,
        _clone_url: &'a str,
        commit: &'a CommitSha,
        paths: &'a [PathBuf],
    ) -> BoxFuture<'a, Option<i64>> {
        Box::pin(cli::last_change(&self.repo, commit.as_str(), paths))
    }
}

impl SourceProvider for MirrorSource {
    fn export<'a>(
        &'a self,
        clone_url: &'a str,
        _repo: &'a RepoId,
        commit: &'a CommitSha,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.export_impl(clone_url, commit, dest))
    }

    fn last_change<'a>(
        &'a self,
        clone_url: &'a str,
        commit: &'a CommitSha,
        paths: &'a [PathBuf],
    ) -> BoxFuture<'a, Option<i64>> {
        let mirror = self.mirrors.mirror_for(clone_url).path;
        Box::pin(async move { cli::last_change(&mirror, commit.as_str(), paths).await })
    }
}
