//! What a forge asks for: a [`Trigger`] to build, a command, or a change that went away.

use serde::{Deserialize, Serialize};

use super::{CommitSha, RepoId};

/// What kind of change a trigger is about; it decides which builds a newer one supersedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Push,
    PullRequest,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Push => "push",
            ChangeKind::PullRequest => "pull_request",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        match s {
            "push" => Some(ChangeKind::Push),
            "pull_request" => Some(ChangeKind::PullRequest),
            _ => None,
        }
    }
}

/// A request to build a commit of a repository: a branch update or a pull request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub repo: RepoId,
    /// Where the commits can be fetched from (for a pull request: the base repository,
    /// which also carries `refs/pull/N/head`).
    pub clone_url: String,
    pub kind: ChangeKind,
    /// `refs/heads/<branch>` for a push, `refs/pull/<n>/head` for a pull request.
    pub ref_name: String,
    /// The commit to compare with: the previous head of a branch, the base of a pull request.
    pub base: Option<CommitSha>,
    pub head: CommitSha,
    pub pr_number: Option<u64>,
    /// The branch a pull request targets; its configuration is trusted, the head's is not.
    pub base_ref: Option<String>,
    /// A pull request whose head lives in another repository (not trusted by default).
    pub from_fork: bool,
    /// Who caused it (for logs and pages).
    pub sender: String,
    /// Set by `/packetary rebuild [package] [target]`: build only these.
    pub only_package: Option<String>,
    pub only_target: Option<String>,
}

/// A command written in a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/packetary rebuild [package] [target]`
    Rebuild {
        package: Option<String>,
        target: Option<String>,
    },
    /// `/packetary approve [commit]`: build a pull request from a fork at one commit: the
    /// one named (a hex prefix of at least 7 digits), or else the head the pull request had
    /// when the comment was written. A later push needs a new approval.
    Approve { commit: Option<String> },
}

impl Command {
    /// Finds the first `/packetary ...` line of a comment. Unknown sub-commands and extra
    /// words are ignored rather than guessed at.
    pub fn parse(body: &str) -> Option<Command> {
        for line in body.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("/packetary") {
                continue;
            }
            let sub = words.next()?;
            let safe = |w: &str| {
                !w.is_empty()
                    && w.len() <= 128
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
            };
            return match sub {
                "rebuild" => {
                    let package = words.next();
                    let target = words.next();
                    if words.next().is_some()
                        || package.is_some_and(|p| !safe(p))
                        || target.is_some_and(|t| !safe(t))
                    {
                        return None;
                    }
                    Some(Command::Rebuild {
                        package: package.map(str::to_string),
                        target: target.map(str::to_string),
                    })
                }
                "approve" => {
                    let commit = words.next();
                    let hex = |w: &str| {
                        (7..=40).contains(&w.len()) && w.chars().all(|c| c.is_ascii_hexdigit())
                    };
                    if words.next().is_some() || commit.is_some_and(|c| !hex(c)) {
                        return None;
                    }
                    Some(Command::Approve {
                        commit: commit.map(|c| c.to_ascii_lowercase()),
                    })
                }
                _ => None,
            };
        }
        None
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Rebuild { .. } => "rebuild",
            Command::Approve { .. } => "approve",
        }
    }
}

/// A comment command, with what is needed to act on it once the author's permission is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    pub repo: RepoId,
    pub pr_number: Option<u64>,
    /// The commit it is about, when the event names one (a check run does).
    pub head: Option<CommitSha>,
    pub user: String,
    pub command: Command,
    /// The forge already checked that the user may do this (e.g. a re-run button).
    pub trusted: bool,
}

/// A verified forge event, in forge-neutral terms: what every forge's inbound parser (a
/// webhook, an event stream) produces and the one ingest function consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeEvent {
    Ping,
    /// Build this commit.
    Build(Trigger),
    /// A pull request was closed: its queued and running builds are cancelled.
    Closed {
        repo: RepoId,
        pr_number: u64,
    },
    /// A branch was deleted: its queued and running builds are cancelled.
    RefDeleted {
        repo: RepoId,
        ref_name: String,
    },
    Command(CommandRequest),
    /// Understood but nothing to do; the reason goes to a debug log line.
    Ignored(String),
}

impl ForgeEvent {
    pub fn repo(&self) -> Option<&RepoId> {
        match self {
            ForgeEvent::Build(t) => Some(&t.repo),
            ForgeEvent::Closed { repo, .. } | ForgeEvent::RefDeleted { repo, .. } => Some(repo),
            ForgeEvent::Command(c) => Some(&c.repo),
            ForgeEvent::Ping | ForgeEvent::Ignored(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            Command::parse("thanks!\n/packetary rebuild hello fedora-43\n"),
            Some(Command::Rebuild {
                package: Some("hello".into()),
                target: Some("fedora-43".into())
            })
        );
        assert_eq!(
            Command::parse("/packetary rebuild"),
            Some(Command::Rebuild {
                package: None,
                target: None
            })
        );
        assert_eq!(
            Command::parse("  /packetary   approve  "),
            Some(Command::Approve { commit: None })
        );
        assert_eq!(
            Command::parse("/packetary approve 0123ABCdef"),
            Some(Command::Approve {
                commit: Some("0123abcdef".into())
            })
        );
        assert_eq!(Command::parse("/packetary approve now"), None);
        assert_eq!(Command::parse("/packetary approve 0123ab"), None);
        assert_eq!(Command::parse("/packetary approve 0123abc d"), None);
        assert_eq!(Command::parse("/packetary rebuild a b c"), None);
        assert_eq!(Command::parse("/packetary rebuild ../x"), None);
        assert_eq!(Command::parse("/packetary destroy"), None);
        assert_eq!(Command::parse("please /packetary rebuild"), None);
        assert_eq!(Command::parse(""), None);
    }
}
