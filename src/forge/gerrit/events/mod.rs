//! Gerrit's events, as `gerrit stream-events` prints them (one JSON object a line) and as
//! the webhooks plugin posts them (the same object as the body), turned into forge-neutral
//! [`ForgeEvent`]s. A change is a review (`ChangeKind::PullRequest`, its number as the pull
//! request number, its patchset's `refs/changes/NN/C/P` as the ref); a merge or a direct push
//! is a branch update.

mod wire;

use sha2::Digest;

use crate::forge::{parse_json, ParseError};
use crate::git::RemoteRef;
use crate::model::{
    ChangeKind, Command, CommandRequest, CommitSha, ForgeEvent, ForgeKind, RepoId, Trigger,
};

/// What the parser needs from the configuration.
#[derive(Clone, Debug)]
pub struct EventContext {
    /// Project P is fetched from `<git_url>/<P>`, whatever an event says.
    pub git_url: String,
    pub skip_wip_and_private: bool,
    /// The bot's own account: its comments are never commands.
    pub user: String,
}

/// A parsed event: its type (for logs and metrics), an id for deduplication (the same event
/// may come through the stream and the webhooks plugin, and again after a reconnect), and
/// what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub name: String,
    pub delivery: String,
    pub event: ForgeEvent,
    /// `eventCreatedOn` (seconds since the epoch), when the event has it.
    pub created_on: Option<i64>,
}

use wire::{Change, PatchSet};
use wire::{ChangeAbandoned, ChangeMerged, CommentAdded, Envelope, PatchsetCreated, RefUpdated};

/// An id standing for one event, short and free of anything the sender chose to be long.
fn delivery(parts: &[&str]) -> String {
    let h = sha2::Sha256::digest(parts.join("\n").as_bytes());
    format!("gerrit-{}", &hex::encode(h)[..40])
}

/// The id of a patchset's `patchset-created` event (also used for it by the catch-up query).
pub fn patchset_delivery(repo: &RepoId, change: u64, patchset: u64, rev: &CommitSha) -> String {
    delivery(&[
        "patchset-created",
        repo.as_str(),
        &change.to_string(),
        &patchset.to_string(),
        rev.as_str(),
    ])
}

/// Whether a review comment asks for a rebuild: Gerrit puts `Patch Set N: <votes>` on the
/// first line; the comment proper must be `recheck` alone on its first line (as Zuul reads it).
pub fn is_recheck(comment: &str) -> bool {
    let mut lines = comment.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines.next();
    if first.is_some_and(|l| l.starts_with("Patch Set ") && l.contains(':')) {
        let rest = first.and_then(|l| l.split_once(':')).map(|(_, r)| r.trim());
        first = match rest {
            Some(r) if r.eq_ignore_ascii_case("recheck") => Some(r),
            _ => lines.next(),
        };
    }
    first.is_some_and(|l| l.eq_ignore_ascii_case("recheck"))
}

impl EventContext {
    fn repo(&self, event: &str, project: &str, path: &str) -> Result<RepoId, ParseError> {
        RepoId::new(ForgeKind::Gerrit, project).map_err(|e| ParseError {
            event: event.into(),
            path: path.into(),
            message: e.to_string(),
        })
    }

    fn clone_url(&self, repo: &RepoId) -> String {
        format!("{}/{}", self.git_url.trim_end_matches('/'), repo.path())
    }

    /// Parses one event (a stream line or a webhook body). Garbage is an error; an event
    /// type that is not handled is `Ignored`, with the reason.
    pub fn parse(&self, body: &[u8]) -> Result<Parsed, ParseError> {
        let env: Envelope = parse_json("gerrit event", body)?;
        let name = env.kind.chars().take(64).collect::<String>();
        let (delivery, event) = self.event(&name, body)?;
        Ok(Parsed {
            name,
            delivery,
            event,
            created_on: env.created_on,
        })
    }

    fn event(&self, name: &str, body: &[u8]) -> Result<(String, ForgeEvent), ParseError> {
        let bad = |path: &str, message: String| ParseError {
            event: name.into(),
            path: path.into(),
            message,
        };
        match name {
            "patchset-created" => {
                let e: PatchsetCreated = parse_json(name, body)?;
                let repo = self.repo(name, &e.change.project, "change.project")?;
                let ps = &e.patch_set;
                let id = patchset_delivery(&repo, e.change.number, ps.number, &ps.revision);
                if self.skip_wip_and_private && (e.change.wip || e.change.private) {
                    let what = if e.change.wip {
                        "work in progress"
                    } else {
                        "private"
                    };
                    return Ok((
                        id,
                        ForgeEvent::Ignored(format!(
                            "change {} is {what} (skip_wip_and_private)",
                            e.change.number
                        )),
                    ));
                }
                let ref_name =
                    change_ref(&e.change, ps).map_err(|m| bad("patchSet.ref", m.to_string()))?;
                let trigger = Trigger {
                    clone_url: self.clone_url(&repo),
                    repo,
                    kind: ChangeKind::PullRequest,
                    ref_name,
                    base: ps.parents.first().cloned(),
                    head: ps.revision.clone(),
                    pr_number: Some(e.change.number),
                    base_ref: Some(branch_ref(&e.change.branch)),
                    from_fork: false,
                    sender: e.uploader.label(),
                    only_package: None,
                    only_target: None,
                };
                Ok((id, ForgeEvent::Build(trigger)))
            }
            "comment-added" => {
                let e: CommentAdded = parse_json(name, body)?;
                let repo = self.repo(name, &e.change.project, "change.project")?;
                let user = e.author.label();
                let id = delivery(&[
                    name,
                    repo.as_str(),
                    &e.change.number.to_string(),
                    &e.patch_set.number.to_string(),
                    &user,
                    &hex::encode(sha2::Sha256::digest(body)),
                ]);
                if e.author.username.as_deref() == Some(self.user.as_str()) {
                    return Ok((id, ForgeEvent::Ignored("the bot's own comment".into())));
                }
                if !is_recheck(&e.comment) {
                    return Ok((id, ForgeEvent::Ignored("a comment without recheck".into())));
                }
                Ok((
                    id,
                    ForgeEvent::Command(CommandRequest {
                        repo,
                        pr_number: Some(e.change.number),
                        head: Some(e.patch_set.revision),
                        user,
                        command: Command::Rebuild {
                            package: None,
                            target: None,
                        },
                        // Anyone who may comment may recheck, as with Zuul.
                        trusted: true,
                    }),
                ))
            }
            "change-merged" => {
                let e: ChangeMerged = parse_json(name, body)?;
                let repo = self.repo(name, &e.change.project, "change.project")?;
                let ref_name = branch_ref(&e.change.branch);
                // The same id as the ref-updated Gerrit sends for the merge: built once.
                let id = delivery(&["ref", repo.as_str(), &ref_name, e.new_rev.as_str()]);
                Ok((
                    id,
                    ForgeEvent::Build(Trigger {
                        clone_url: self.clone_url(&repo),
                        repo,
                        kind: ChangeKind::Push,
                        ref_name,
                        base: e.patch_set.parents.first().cloned(),
                        head: e.new_rev,
                        pr_number: None,
                        base_ref: None,
                        from_fork: false,
                        sender: e.submitter.label(),
                        only_package: None,
                        only_target: None,
                    }),
                ))
            }
            "ref-updated" => {
                let e: RefUpdated = parse_json(name, body)?;
                let u = e.ref_update;
                let repo = self.repo(name, &u.project, "refUpdate.project")?;
                // Old servers send a branch's short name.
                let ref_name = if u.ref_name.starts_with("refs/") {
                    u.ref_name.clone()
                } else {
                    branch_ref(&u.ref_name)
                };
                let id = delivery(&["ref", repo.as_str(), &ref_name, u.new_rev.as_str()]);
                if !matches!(RemoteRef::parse(&ref_name), Some(RemoteRef::Branch(_))) {
                    return Ok((
                        id,
                        ForgeEvent::Ignored(format!("{ref_name} is not a branch")),
                    ));
                }
                if u.new_rev.is_zero() {
                    return Ok((id, ForgeEvent::RefDeleted { repo, ref_name }));
                }
                Ok((
                    id,
                    ForgeEvent::Build(Trigger {
                        clone_url: self.clone_url(&repo),
                        repo,
                        kind: ChangeKind::Push,
                        ref_name,
                        base: Some(u.old_rev).filter(|b| !b.is_zero()),
                        head: u.new_rev,
                        pr_number: None,
                        base_ref: None,
                        from_fork: false,
                        sender: e.submitter.label(),
                        only_package: None,
                        only_target: None,
                    }),
                ))
            }
            "change-abandoned" => {
                let e: ChangeAbandoned = parse_json(name, body)?;
                let repo = self.repo(name, &e.change.project, "change.project")?;
                let id = delivery(&[
                    name,
                    repo.as_str(),
                    &e.change.number.to_string(),
                    &hex::encode(sha2::Sha256::digest(body)),
                ]);
                Ok((
                    id,
                    ForgeEvent::Closed {
                        repo,
                        pr_number: e.change.number,
                    },
                ))
            }
            other => Ok((
                delivery(&[other, &hex::encode(sha2::Sha256::digest(body))]),
                ForgeEvent::Ignored(format!("event type `{other}` is not handled")),
            )),
        }
    }
}

/// `refs/heads/<branch>` for a branch's short name.
fn branch_ref(branch: &str) -> String {
    if branch.starts_with("refs/heads/") {
        branch.to_string()
    } else {
        format!("refs/heads/{branch}")
    }
}

/// The patchset's ref, which must be the one Gerrit gives its change and number (it is
/// fetched, so it is not taken on the event's word).
fn change_ref(change: &Change, ps: &PatchSet) -> Result<String, BadChangeRef> {
    let patchset = u32::try_from(ps.number).map_err(|_| BadChangeRef::PatchsetTooLarge)?;
    let expected = RemoteRef::GerritChange {
        change: change.number,
        patchset,
    }
    .refname();
    if ps.ref_name != expected {
        return Err(BadChangeRef::NotTheChanges {
            named: ps.ref_name.clone(),
            change: change.number,
            patchset: ps.number,
            expected,
        });
    }
    Ok(expected)
}

/// Why an event's patchset ref is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BadChangeRef {
    #[error("patchset number too large")]
    PatchsetTooLarge,
    #[error("`{named}` is not the ref of change {change} patchset {patchset} ({expected})")]
    NotTheChanges {
        named: String,
        change: u64,
        patchset: u64,
        expected: String,
    },
}

#[cfg(test)]
mod tests;
