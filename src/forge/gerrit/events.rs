//! Gerrit's events, as `gerrit stream-events` prints them (one JSON object a line) and as
//! the webhooks plugin posts them (the same object as the body), turned into forge-neutral
//! [`ForgeEvent`]s. A change is a review (`ChangeKind::PullRequest`, its number as the pull
//! request number, its patchset's `refs/changes/NN/C/P` as the ref); a merge or a direct push
//! is a branch update.

use serde::{Deserialize, Deserializer};
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

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "eventCreatedOn")]
    created_on: Option<i64>,
}

#[derive(Deserialize, Default)]
struct Account {
    username: Option<String>,
    name: Option<String>,
    email: Option<String>,
}

impl Account {
    fn label(&self) -> String {
        self.username
            .clone()
            .or_else(|| self.name.clone())
            .or_else(|| self.email.clone())
            .unwrap_or_else(|| "gerrit".into())
    }
}

#[derive(Deserialize)]
struct Change {
    project: String,
    branch: String,
    /// A number in current Gerrit, a string in old versions.
    #[serde(deserialize_with = "number")]
    number: u64,
    #[serde(default)]
    wip: bool,
    #[serde(default)]
    private: bool,
}

#[derive(Deserialize)]
struct PatchSet {
    #[serde(deserialize_with = "number")]
    number: u64,
    revision: CommitSha,
    #[serde(default)]
    parents: Vec<CommitSha>,
    #[serde(rename = "ref")]
    ref_name: String,
}

#[derive(Deserialize)]
struct PatchsetCreated {
    change: Change,
    #[serde(rename = "patchSet")]
    patch_set: PatchSet,
    #[serde(default)]
    uploader: Account,
}

#[derive(Deserialize)]
struct CommentAdded {
    change: Change,
    #[serde(rename = "patchSet")]
    patch_set: PatchSet,
    #[serde(default)]
    author: Account,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
struct ChangeMerged {
    change: Change,
    #[serde(rename = "patchSet")]
    patch_set: PatchSet,
    #[serde(rename = "newRev")]
    new_rev: CommitSha,
    #[serde(default)]
    submitter: Account,
}

#[derive(Deserialize)]
struct ChangeAbandoned {
    change: Change,
}

#[derive(Deserialize)]
struct RefUpdated {
    #[serde(rename = "refUpdate")]
    ref_update: RefUpdate,
    #[serde(default)]
    submitter: Account,
}

#[derive(Deserialize)]
struct RefUpdate {
    #[serde(rename = "oldRev")]
    old_rev: CommitSha,
    #[serde(rename = "newRev")]
    new_rev: CommitSha,
    #[serde(rename = "refName")]
    ref_name: String,
    project: String,
}

fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Text(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number"))),
    }
}

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
                let ref_name = change_ref(&e.change, ps).map_err(|m| bad("patchSet.ref", m))?;
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
fn change_ref(change: &Change, ps: &PatchSet) -> Result<String, String> {
    let patchset = u32::try_from(ps.number).map_err(|_| "patchset number too large".to_string())?;
    let expected = RemoteRef::GerritChange {
        change: change.number,
        patchset,
    }
    .refname();
    if ps.ref_name != expected {
        return Err(format!(
            "`{}` is not the ref of change {} patchset {} ({expected})",
            ps.ref_name, change.number, ps.number
        ));
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> EventContext {
        EventContext {
            git_url: "https://review.example.org".into(),
            skip_wip_and_private: true,
            user: "packetary".into(),
        }
    }

    fn data(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/gerrit")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn with(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&data(name)).expect("json");
        edit(&mut v);
        serde_json::to_vec(&v).expect("json")
    }

    const REV: &str = "4a3c0ba6e3b8b02b0d8d2e5d4f1a2c3b4d5e6f70";
    const PARENT: &str = "1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";

    #[test]
    fn patchset_created_is_a_review_build() {
        let p = ctx().parse(&data("patchset-created.json")).expect("parsed");
        assert_eq!(p.name, "patchset-created");
        let ForgeEvent::Build(t) = p.event else {
            panic!("{:?}", p.event)
        };
        assert_eq!(t.repo.as_str(), "gerrit:openstack/fuel-specs");
        assert_eq!(
            t.clone_url,
            "https://review.example.org/openstack/fuel-specs"
        );
        assert_eq!(t.kind, ChangeKind::PullRequest);
        assert_eq!(t.ref_name, "refs/changes/45/12345/2");
        assert_eq!(t.pr_number, Some(12345));
        assert_eq!(t.head.as_str(), REV);
        assert_eq!(t.base.as_ref().map(|b| b.as_str()), Some(PARENT));
        assert_eq!(t.base_ref.as_deref(), Some("refs/heads/master"));
        assert_eq!(t.sender, "jdoe");
        assert!(!t.from_fork);
        // The same event again (from the other source) has the same id.
        let again = ctx().parse(&data("patchset-created.json")).expect("parsed");
        assert_eq!(again.delivery, p.delivery);
    }

    #[test]
    fn old_servers_send_numbers_as_strings() {
        let body = with("patchset-created.json", |v| {
            v["change"]["number"] = "12345".into();
            v["patchSet"]["number"] = "2".into();
        });
        assert!(matches!(
            ctx().parse(&body).expect("parsed").event,
            ForgeEvent::Build(_)
        ));
    }

    #[test]
    fn wip_and_private_changes_are_skipped_when_configured() {
        for flag in ["wip", "private"] {
            let body = with("patchset-created.json", |v| v["change"][flag] = true.into());
            let p = ctx().parse(&body).expect("parsed");
            assert!(matches!(p.event, ForgeEvent::Ignored(_)), "{flag}: {p:?}");
            let mut c = ctx();
            c.skip_wip_and_private = false;
            assert!(matches!(
                c.parse(&body).expect("parsed").event,
                ForgeEvent::Build(_)
            ));
        }
    }

    #[test]
    fn a_ref_that_is_not_the_changes_is_refused() {
        let body = with("patchset-created.json", |v| {
            v["patchSet"]["ref"] = "refs/heads/master".into();
        });
        let e = ctx().parse(&body).expect_err("refused");
        assert_eq!(e.path, "patchSet.ref");
    }

    #[test]
    fn missing_fields_name_the_field() {
        let body = with("patchset-created.json", |v| {
            v["patchSet"]
                .as_object_mut()
                .expect("object")
                .remove("revision");
        });
        let e = ctx().parse(&body).expect_err("refused");
        assert_eq!(e.path, "patchSet");
        assert!(e.message.contains("revision"), "{e}");
        let body = with("patchset-created.json", |v| {
            v["change"]["project"] = "../x".into()
        });
        assert_eq!(
            ctx().parse(&body).expect_err("refused").path,
            "change.project"
        );
        let body = with("patchset-created.json", |v| {
            v["patchSet"]["revision"] = "not-a-sha".into();
        });
        assert_eq!(
            ctx().parse(&body).expect_err("refused").path,
            "patchSet.revision"
        );
    }

    #[test]
    fn recheck_comments_are_rebuild_commands() {
        let p = ctx().parse(&data("comment-added.json")).expect("parsed");
        let ForgeEvent::Command(c) = p.event else {
            panic!("{:?}", p.event)
        };
        assert_eq!(c.pr_number, Some(12345));
        assert_eq!(c.head.as_ref().map(|h| h.as_str()), Some(REV));
        assert!(c.trusted);
        assert_eq!(c.user, "reviewer");
        assert!(matches!(
            c.command,
            Command::Rebuild {
                package: None,
                target: None
            }
        ));
        let body = with("comment-added.json", |v| {
            v["comment"] = "Patch Set 2: Code-Review+1\n\nLooks good, no recheck needed".into();
        });
        assert!(matches!(
            ctx().parse(&body).expect("parsed").event,
            ForgeEvent::Ignored(_)
        ));
        let body = with("comment-added.json", |v| {
            v["author"]["username"] = "packetary".into();
        });
        assert!(matches!(
            ctx().parse(&body).expect("parsed").event,
            ForgeEvent::Ignored(_)
        ));
    }

    #[test]
    fn recheck_wording() {
        assert!(is_recheck("recheck"));
        assert!(is_recheck("Patch Set 3:\n\nrecheck"));
        assert!(is_recheck("Patch Set 3: Code-Review+1\n\nRECHECK\nplease"));
        assert!(is_recheck("Patch Set 3: recheck"));
        assert!(!is_recheck("Patch Set 3:\n\nplease recheck"));
        assert!(!is_recheck("rechecking now"));
        assert!(!is_recheck(""));
    }

    #[test]
    fn merged_and_pushed_branches_are_built_once() {
        let merged = ctx().parse(&data("change-merged.json")).expect("parsed");
        let ForgeEvent::Build(t) = &merged.event else {
            panic!("{:?}", merged.event)
        };
        assert_eq!(t.kind, ChangeKind::Push);
        assert_eq!(t.ref_name, "refs/heads/master");
        assert_eq!(t.pr_number, None);
        let pushed = ctx().parse(&data("ref-updated.json")).expect("parsed");
        let ForgeEvent::Build(p) = &pushed.event else {
            panic!("{:?}", pushed.event)
        };
        assert_eq!(p.head, t.head);
        assert_eq!(p.base.as_ref().map(|b| b.as_str()), Some(PARENT));
        // Gerrit sends both for a merge: the second is a duplicate delivery.
        assert_eq!(merged.delivery, pushed.delivery);
    }

    #[test]
    fn ref_updates_of_other_refs_and_deletions() {
        let body = with("ref-updated.json", |v| {
            v["refUpdate"]["refName"] = "refs/changes/45/12345/meta".into();
        });
        assert!(matches!(
            ctx().parse(&body).expect("parsed").event,
            ForgeEvent::Ignored(_)
        ));
        let body = with("ref-updated.json", |v| {
            v["refUpdate"]["refName"] = "stable/2024".into();
            v["refUpdate"]["newRev"] = "0".repeat(40).into();
        });
        let p = ctx().parse(&body).expect("parsed");
        assert_eq!(
            p.event,
            ForgeEvent::RefDeleted {
                repo: RepoId::new(ForgeKind::Gerrit, "openstack/fuel-specs").expect("repo"),
                ref_name: "refs/heads/stable/2024".into()
            }
        );
    }

    #[test]
    fn abandoned_changes_are_closed() {
        let p = ctx().parse(&data("change-abandoned.json")).expect("parsed");
        assert_eq!(
            p.event,
            ForgeEvent::Closed {
                repo: RepoId::new(ForgeKind::Gerrit, "openstack/fuel-specs").expect("repo"),
                pr_number: 12345
            }
        );
    }

    #[test]
    fn unknown_types_are_ignored_and_garbage_refused() {
        let p = ctx()
            .parse(br#"{"type":"reviewer-added","change":{},"eventCreatedOn":1}"#)
            .expect("parsed");
        assert!(matches!(p.event, ForgeEvent::Ignored(_)));
        assert_eq!(p.created_on, Some(1));
        for garbage in [
            &b"not json"[..],
            b"",
            b"[]",
            b"{\"no\":\"type\"}",
            b"\xff\xfe",
        ] {
            assert!(ctx().parse(garbage).is_err(), "{garbage:?}");
        }
    }
}
