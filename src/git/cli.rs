//! The git command line, for what libgit2 does not do as well: `git archive` of a whole
//! tree, `git log` over paths, and a quick existence check. Always without a terminal or a
//! credential prompt, and killed when the caller's future is dropped.

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// A git command that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// `command` is git's subcommand, `stderr` what git said.
    #[error("git {command}: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Runs git in `dir` without a terminal or credential prompts.
pub async fn run(dir: &Path, args: &[&str]) -> Result<(), CliError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(CliError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CliError::Failed {
            command: args.first().copied().unwrap_or("").to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether `commit` is a commit object of the repository at `repo`.
pub async fn has_commit(repo: &Path, commit: &str) -> bool {
    run(repo, &["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .await
        .is_ok()
}

/// Writes the tree of `commit` as a tar file at `tarball`.
pub async fn archive_tar(repo: &Path, commit: &str, tarball: &Path) -> Result<(), CliError> {
    let tar_arg = tarball.display().to_string();
    run(repo, &["archive", "--format=tar", "-o", &tar_arg, commit]).await
}

/// `git log -1 --format=%at COMMIT -- PATHS` in `repo`: the author time, which a rebase or
/// cherry-pick keeps (the committer time changes), so a rebased change builds the same
/// bytes and can reuse its earlier result. `None` when git cannot say.
pub async fn last_change(repo: &Path, commit: &str, paths: &[PathBuf]) -> Option<i64> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args(["log", "-1", "--format=%at", commit, "--"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true);
    for p in paths {
        // A literal path: no pathspec magic from file names.
        cmd.arg(format!(":(literal){}", p.display()));
    }
    let out = cmd.output().await.ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
