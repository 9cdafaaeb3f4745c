//! Which commits a change compares: its base (given, the fork point of a pull request, or
//! the default branch) and its head, and the `.packetary.toml` that applies.

use git2::{Oid, Repository};

use super::repo_config::{RepoConfig, RepoConfigError, CONFIG_FILE};
use crate::git::tree::{commit_tree, resolve_commit};
use crate::git::GitError;
use crate::model::CommitSha;

use super::change::{Change, DiffKind, PlanOptions};

pub(super) fn sha(oid: Oid) -> Option<CommitSha> {
    CommitSha::parse(&oid.to_string()).ok()
}

fn is_zero(rev: &str) -> bool {
    !rev.is_empty() && rev.bytes().all(|b| b == b'0')
}

/// Why the commits to compare, or the configuration that applies, cannot be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum EndpointsError {
    #[error(transparent)]
    Git(#[from] GitError),
    /// The configuration's blob cannot be read from the object database.
    #[error("{}", .0.message())]
    ConfigBlob(git2::Error),
    #[error("{CONFIG_FILE} is not UTF-8")]
    ConfigNotUtf8,
    #[error(transparent)]
    Config(#[from] RepoConfigError),
    #[error("the default branch `{name}` is not in the mirror, so a new branch cannot be compared with it\n  fix: fetch it, or name it with --default-branch")]
    NoDefaultBranch { name: String },
    #[error("`{head}` shares no history with `{base}`, so there is nothing to compare it with")]
    Unrelated { head: String, base: String },
}

/// Reads `.packetary.toml` at a commit: `Ok(None)` when absent.
pub(super) fn read_config(
    repo: &Repository,
    commit: Oid,
) -> Result<(Option<Oid>, RepoConfig), EndpointsError> {
    let tree = commit_tree(repo, commit)?;
    let Ok(entry) = tree.get_name_bytes(CONFIG_FILE.as_bytes()).ok_or(()) else {
        return Ok((None, RepoConfig::default()));
    };
    let blob = repo
        .find_blob(entry.id())
        .map_err(EndpointsError::ConfigBlob)?;
    let text = std::str::from_utf8(blob.content()).map_err(|_| EndpointsError::ConfigNotUtf8)?;
    let cfg = RepoConfig::parse(text)?;
    Ok((Some(entry.id()), cfg))
}

/// The commits to compare: `(compared_with, head, config commit, kind, notices)`.
pub(super) struct Endpoints {
    pub(super) old: Option<Oid>,
    pub(super) head: Oid,
    pub(super) config_at: Oid,
    /// Where the previous configuration is read, to see what a change to it affects.
    pub(super) old_config_at: Option<Oid>,
    pub(super) kind: DiffKind,
}

fn default_branch_commit(repo: &Repository, opts: &PlanOptions) -> Result<Oid, EndpointsError> {
    let name = match &opts.default_branch {
        Some(b) => b.clone(),
        None => repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| {
                h.symbolic_target()
                    .ok()
                    .flatten()
                    .map(|s: &str| s.to_string())
            })
            .unwrap_or_else(|| "refs/heads/main".into()),
    };
    resolve_commit(repo, &name).map_err(|_| EndpointsError::NoDefaultBranch { name })
}

/// Compares with the fork point from the default branch; when `head` is already on it,
/// with `head`'s parent, so that at least the pushed commit is planned.
fn fork_point(
    repo: &Repository,
    head: Oid,
    opts: &PlanOptions,
    notices: &mut Vec<String>,
) -> Result<Option<Oid>, EndpointsError> {
    let default = default_branch_commit(repo, opts)?;
    match repo.merge_base(default, head) {
        Ok(mb) if mb == head => {
            let parent = repo
                .find_commit(head)
                .ok()
                .and_then(|c| c.parent_id(0).ok());
            notices.push(
                "the pushed commit is already on the default branch; comparing it with its parent"
                    .into(),
            );
            Ok(parent)
        }
        Ok(mb) => Ok(Some(mb)),
        Err(_) => {
            notices.push(
                "the branch shares no history with the default branch; planning every package"
                    .into(),
            );
            Ok(None)
        }
    }
}

pub(super) fn endpoints(
    repo: &Repository,
    change: &Change,
    opts: &PlanOptions,
    notices: &mut Vec<String>,
) -> Result<Endpoints, EndpointsError> {
    let resolve = |rev: &str| resolve_commit(repo, rev);
    match change {
        Change::Review { base, head } => {
            let h = resolve(head)?;
            let b = resolve(base)?;
            let mb = repo
                .merge_base(b, h)
                .map_err(|_| EndpointsError::Unrelated {
                    head: head.clone(),
                    base: base.clone(),
                })?;
            Ok(Endpoints {
                old: Some(mb),
                head: h,
                config_at: b,
                old_config_at: None,
                kind: DiffKind::Review,
            })
        }
        Change::Push { before, after } => {
            let h = resolve(after)?;
            let (old, kind) = match before.as_deref().filter(|b| !b.is_empty() && !is_zero(b)) {
                None => (fork_point(repo, h, opts, notices)?, DiffKind::NewBranch),
                Some(b) => match resolve_commit(repo, b) {
                    Ok(o) => (Some(o), DiffKind::Push),
                    Err(GitError::MissingRev { .. }) => {
                        notices.push(format!(
                            "`{b}` (the branch's previous tip) is gone, probably force-pushed away; planning everything the branch changed since it left the default branch"
                        ));
                        (fork_point(repo, h, opts, notices)?, DiffKind::ForcePush)
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            Ok(Endpoints {
                old,
                head: h,
                config_at: h,
                old_config_at: old,
                kind,
            })
        }
    }
}
