//! Stream lines and webhook bodies into events, from recorded fixtures.

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
