//! Git, through libgit2: a cache of bare mirrors, fetches of just the refs a change needs,
//! the diff of two commits, and export of a package's files straight from the object
//! database. Nothing from a repository is ever executed here.
//!
//! libgit2 calls block, so the async entry points run them with `spawn_blocking`; the
//! blocking functions are public too, for callers already off the runtime (tests, benches).

pub mod cli;
pub mod mirror;
pub mod scope;
pub mod tree;

use std::path::PathBuf;

pub use mirror::{
    init_libgit2, Credentials, FetchAuth, FetchReport, MintError, Mirror, MirrorCache, RemoteRef,
    TokenSource,
};
pub use tree::{
    changed_paths, export_files, resolve_commit, ChangedPath, ExportError, FileEntry, FileKind,
    RepoPath,
};

/// What went wrong talking to git; callers branch on the kind (retry, report, blame the user).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot reach {url}: {message}\n  fix: check the URL and the network; the mirror keeps what it had")]
    Unreachable { url: String, message: String },
    #[error("{url}: authentication failed: {message}\n  fix: check the token (HTTPS) or the SSH key configured for this remote")]
    Auth { url: String, message: String },
    #[error("{url} has no ref `{refname}`\n  fix: check the branch, pull request or change number (it may have been deleted)")]
    MissingRef { url: String, refname: String },
    #[error("`{rev}` is not a commit of {repo} (force-pushed away, or never fetched?)")]
    MissingRev { rev: String, repo: String },
    #[error("{path}: {message}")]
    Repo { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a background git task failed: {0}")]
    Task(String),
}

impl GitError {
    pub(crate) fn repo(path: &std::path::Path, e: git2::Error) -> GitError {
        GitError::Repo {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        }
    }

    /// Faults of the network or the host, worth a retry; the others are the input's fault.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            GitError::Unreachable { .. }
                | GitError::Io { .. }
                | GitError::Task(_)
                | GitError::Repo { .. }
        )
    }
}

/// Runs a blocking libgit2 job on tokio's blocking pool, keeping the workers free.
pub async fn blocking<T, F>(f: F) -> Result<T, GitError>
where
    F: FnOnce() -> Result<T, GitError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GitError::Task(e.to_string()))?
}
