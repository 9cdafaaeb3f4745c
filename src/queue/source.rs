//! A simple way to get a commit's files and a plan, until the `git` and `plan` modules take
//! over: a bare mirror per repository updated with the `git` CLI, `git archive` of the
//! commit, and `plan::discover` on the result (every package × the default targets).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::process::Command;
use tokio::sync::Mutex;

use super::{PlanError, PlannedBuild, Planner, SourceError, SourceProvider};
use crate::forge::Trigger;
use crate::model::{CommitSha, RepoId, TargetName};

/// Bare mirrors under `<data_dir>/git/<owner>/<name>.git`, one fetch at a time per repository.
pub struct GitCliSource {
    root: PathBuf,
    locks: Mutex<HashMap<RepoId, Arc<Mutex<()>>>>,
}

impl GitCliSource {
    pub fn new(root: PathBuf) -> GitCliSource {
        GitCliSource {
            root,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn mirror(&self, repo: &RepoId) -> PathBuf {
        self.root
            .join(repo.owner())
            .join(format!("{}.git", repo.name()))
    }

    async fn lock(&self, repo: &RepoId) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .await
            .entry(repo.clone())
            .or_default()
            .clone()
    }

    async fn export_impl(
        &self,
        clone_url: &str,
        repo: &RepoId,
        commit: &CommitSha,
        dest: &Path,
    ) -> Result<(), SourceError> {
        let lock = self.lock(repo).await;
        let _guard = lock.lock().await;
        let mirror = self.mirror(repo);
        if !mirror.join("HEAD").exists() {
            tokio::fs::create_dir_all(&mirror)
                .await
                .map_err(|e| SourceError::Infra(format!("create {}: {e}", mirror.display())))?;
            git(&mirror, &["init", "--bare", "--quiet"]).await?;
        }
        if !has_commit(&mirror, commit).await {
            let fetched = git(
                &mirror,
                &[
                    "fetch",
                    "--quiet",
                    "--force",
                    "--no-tags",
                    clone_url,
                    "+refs/heads/*:refs/heads/*",
                    "+refs/pull/*/head:refs/pull/*/head",
                ],
            )
            .await;
            if !has_commit(&mirror, commit).await {
                // Some servers hide pull refs; GitHub also serves a reachable commit by id.
                git(
                    &mirror,
                    &["fetch", "--quiet", "--no-tags", clone_url, commit.as_str()],
                )
                .await
                .map_err(|e| match fetched {
                    Err(first) => SourceError::Infra(format!("{first}; then {e}")),
                    Ok(()) => e,
                })?;
            }
            if !has_commit(&mirror, commit).await {
                return Err(SourceError::Missing(format!(
                    "commit {commit} is not in {clone_url}"
                )));
            }
        }
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(|e| SourceError::Infra(format!("create {}: {e}", dest.display())))?;
        let tarball = dest.with_extension("tar");
        let tar_arg = tarball.display().to_string();
        git(
            &mirror,
            &["archive", "--format=tar", "-o", &tar_arg, commit.as_str()],
        )
        .await?;
        let dest_owned = dest.to_path_buf();
        let tb = tarball.clone();
        let unpacked = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let f = std::fs::File::open(&tb).map_err(|e| e.to_string())?;
            // `unpack` refuses entries that would land outside `dest`.
            tar::Archive::new(f)
                .unpack(&dest_owned)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| SourceError::Infra(e.to_string()))?;
        let _ = tokio::fs::remove_file(&tarball).await;
        unpacked.map_err(|e| SourceError::Infra(format!("unpack {commit}: {e}")))
    }
}

async fn has_commit(mirror: &Path, commit: &CommitSha) -> bool {
    git(mirror, &["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .await
        .is_ok()
}

/// Runs git in `dir` without a terminal or credential prompts.
async fn git(dir: &Path, args: &[&str]) -> Result<(), SourceError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| SourceError::Infra(format!("cannot run git: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SourceError::Infra(format!(
            "git {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl SourceProvider for GitCliSource {
    fn export<'a>(
        &'a self,
        clone_url: &'a str,
        repo: &'a RepoId,
        commit: &'a CommitSha,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.export_impl(clone_url, repo, commit, dest))
    }
}

/// Plans every package of the head commit for the given targets.
pub struct DiscoverPlanner {
    sources: Arc<dyn SourceProvider>,
    scratch: PathBuf,
    targets: Vec<TargetName>,
}

impl DiscoverPlanner {
    pub fn new(
        sources: Arc<dyn SourceProvider>,
        scratch: PathBuf,
        targets: Vec<TargetName>,
    ) -> Self {
        DiscoverPlanner {
            sources,
            scratch,
            targets,
        }
    }

    async fn plan_impl(&self, t: &Trigger) -> Result<Vec<PlannedBuild>, PlanError> {
        let dir = self
            .scratch
            .join(format!("plan-{}", crate::model::BuildId::generate()));
        let result = async {
            self.sources
                .export(&t.clone_url, &t.repo, &t.head, &dir)
                .await
                .map_err(|e| match e {
                    SourceError::Missing(m) => PlanError::Invalid(m),
                    SourceError::Infra(m) => PlanError::Infra(m),
                })?;
            let packages = match crate::plan::discover(&dir, &[]) {
                Ok(p) => p,
                Err(crate::plan::DiscoverError::NoSpec(_)) => vec![],
                Err(e) => return Err(PlanError::Invalid(e.to_string())),
            };
            let mut out = vec![];
            for p in packages {
                let spec_path = p.relative_spec();
                for target in &self.targets {
                    out.push(PlannedBuild {
                        package: p.label(),
                        spec_path: spec_path.clone(),
                        target: target.clone(),
                    });
                }
            }
            Ok(out)
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }
}

impl Planner for DiscoverPlanner {
    fn plan<'a>(
        &'a self,
        trigger: &'a Trigger,
    ) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(self.plan_impl(trigger))
    }
}
