//! Round trips through a real database: every column's nullability and type, as the query
//! macros declare them, must read back what was written; and the queue rules that live in
//! SQL (stages, superseding, the outbox) must hold.

use std::path::Path;

use super::*;
use crate::model::{
    BuildId, BuildState, ChangeKind, Command, CommandRequest, CommitSha, RepoId, Report,
    ReportState, TargetName, Trigger,
};

pub(super) async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    (dir, store)
}

fn sha(c: char) -> CommitSha {
    CommitSha::parse(&c.to_string().repeat(40)).expect("sha")
}

pub(super) fn pr_trigger(head: char) -> Trigger {
    Trigger {
        repo: RepoId::github("acme/pkgs").expect("repo"),
        clone_url: "https://example.invalid/acme/pkgs.git".into(),
        kind: ChangeKind::PullRequest,
        ref_name: "refs/pull/7/head".into(),
        base: Some(sha('b')),
        head: sha(head),
        pr_number: Some(7),
        base_ref: Some("main".into()),
        from_fork: true,
        sender: "alice".into(),
        only_package: Some("hello".into()),
        only_target: None,
    }
}

pub(super) fn new_build(id: &str, package: &str, stage: u32) -> NewBuild {
    NewBuild {
        id: BuildId::parse(id).expect("id"),
        package: package.into(),
        spec_path: format!("{package}.spec"),
        target: TargetName::parse("el9").expect("target"),
        error: None,
        stage,
    }
}

#[tokio::test]
async fn store_redelivery_is_refused_and_command_round_trips() {
    let (_dir, s) = store().await;
    let c = CommandRequest {
        repo: RepoId::github("acme/pkgs").expect("repo"),
        pr_number: Some(7),
        head: None,
        user: "bob".into(),
        command: Command::Rebuild {
            package: Some("hello".into()),
            target: None,
        },
        trusted: true,
    };
    assert!(s
        .accept("d1", "issue_comment", Inbound::Command(&c))
        .await
        .unwrap());
    assert!(!s
        .accept("d1", "issue_comment", Inbound::Nothing)
        .await
        .unwrap());
    assert_eq!(s.delivery_count().await.unwrap(), 1);

    let got = s.next_command().await.unwrap().expect("a command");
    assert_eq!(got.request, c);
    s.finish_command(got.id, "done", "ok").await.unwrap();
    assert!(s.next_command().await.unwrap().is_none());
    assert!(!s.is_approved(&c.repo, 7, &sha('1')).await.unwrap());
    s.ping().await.unwrap();
}

#[tokio::test]
async fn store_trigger_round_trips_and_waits_for_approval() {
    let (_dir, s) = store().await;
    let t = pr_trigger('1');
    assert!(s
        .accept(
            "d1",
            "pull_request",
            Inbound::Trigger(&t, TriggerState::AwaitingApproval)
        )
        .await
        .unwrap());
    assert!(s.next_new_trigger().await.unwrap().is_none());
    let cmd = approval(&s, "d2", None).await;
    assert_eq!(s.approve(cmd.id, &t.repo, 7, &t.head).await.unwrap(), 1);

    let got = s.next_new_trigger().await.unwrap().expect("a trigger");
    assert_eq!(got.trigger, t);
    assert_eq!(
        (got.state, got.message, got.attempts),
        (TriggerState::New, None, 0)
    );
    let latest = s.latest_trigger(&t.repo, Some(7), None).await.unwrap();
    assert_eq!(latest.map(|l| l.id), Some(got.id));
    assert!(s
        .latest_trigger(&t.repo, None, Some(&sha('9')))
        .await
        .unwrap()
        .is_none());

    let later = Millis::now().after(std::time::Duration::from_secs(3600));
    s.retry_trigger(got.id, later, "git down").await.unwrap();
    assert!(s.next_new_trigger().await.unwrap().is_none());
    assert_eq!(s.next_trigger_due().await.unwrap(), Some(later));
    let all = s.triggers().await.unwrap();
    assert_eq!((all.len(), all[0].attempts), (1, 1));
    assert_eq!(all[0].message.as_deref(), Some("git down"));
}

#[tokio::test]
async fn store_later_stage_waits_and_sees_earlier_results() {
    let (_dir, s) = store().await;
    let id = s
        .insert_trigger(&pr_trigger('1'), TriggerState::New)
        .await
        .unwrap();
    let trigger = s.triggers().await.unwrap().remove(0);
    assert_eq!(trigger.id, id);
    let builds = [new_build("b-lib", "lib", 0), new_build("b-app", "app", 1)];
    s.insert_builds(&trigger, &builds).await.unwrap();
    assert_eq!(s.triggers().await.unwrap()[0].state, TriggerState::Planned);

    let now = Millis::now();
    let first = s.claim_next_build(now).await.unwrap().expect("stage 0");
    assert_eq!((first.package.as_str(), first.stage), ("lib", 0));
    assert_eq!(first.pr_number, Some(7));
    assert_eq!((first.state, first.attempts), (BuildState::Running, 1));
    assert!(
        s.claim_next_build(now).await.unwrap().is_none(),
        "stage 1 waits"
    );
    assert_eq!(s.next_due().await.unwrap(), None);

    s.set_build_progress(&first.id, Some("c1"), Some("rpmbuild"))
        .await
        .unwrap();
    let phases = vec![PhaseRow {
        phase: "rpmbuild".into(),
        started: "2024-01-01T00:00:00Z".into(),
        seconds: 1.5,
        ok: true,
    }];
    s.record_phases(&first.id, &phases).await.unwrap();
    assert_eq!(s.phases(&first.id).await.unwrap(), phases);
    let dir = Path::new("/results/b-lib");
    assert!(s
        .finish_build(&first.id, BuildState::Succeeded, None, Some(dir), None)
        .await
        .unwrap());
    let done = s.build(&first.id).await.unwrap().expect("row");
    assert_eq!(done.container_id.as_deref(), Some("c1"));
    assert_eq!(done.phase.as_deref(), Some("rpmbuild"));
    assert_eq!(done.result_dir.as_deref(), Some(dir));
    assert!(done.finished_at.is_some());

    let second = s
        .claim_next_build(Millis::now())
        .await
        .unwrap()
        .expect("stage 1");
    assert_eq!(second.stage, 1);
    assert_eq!(
        s.earlier_results(&second).await.unwrap(),
        vec![dir.to_path_buf()]
    );
    assert!(s
        .requeue(&second.id, Millis::now(), Some("restart"), false)
        .await
        .unwrap());
    let requeued = s.builds_in_state(BuildState::Queued).await.unwrap();
    assert_eq!((requeued.len(), requeued[0].attempts), (1, 0));
    assert!(s.next_due().await.unwrap().is_some());

    let counts = s.count_builds_by_state().await.unwrap();
    assert_eq!(counts.len(), BuildState::ALL.len());
    assert!(counts.contains(&(BuildState::Succeeded, 1)));
    assert!(counts.contains(&(BuildState::Queued, 1)));
    assert_eq!(s.recent_builds(1).await.unwrap()[0].id, second.id);
    let latest = s
        .latest_builds_of_commit(&trigger.trigger.repo, &trigger.trigger.head)
        .await
        .unwrap();
    assert_eq!(latest.len(), 2);
}

#[tokio::test]
async fn store_new_head_supersedes_the_old_one() {
    let (_dir, s) = store().await;
    let old = pr_trigger('1');
    s.insert_trigger(&old, TriggerState::New).await.unwrap();
    let planned = s.triggers().await.unwrap().remove(0);
    s.insert_builds(&planned, &[new_build("b-old", "hello", 0)])
        .await
        .unwrap();
    let waiting = s.insert_trigger(&old, TriggerState::New).await.unwrap();

    let new = pr_trigger('2');
    let keep = s.insert_trigger(&new, TriggerState::New).await.unwrap();
    let ended = s.supersede(&new, keep).await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, BuildState::Superseded);
    assert_eq!(
        ended[0].message,
        Some(format!("superseded by {}", new.head))
    );
    let states: Vec<_> = s
        .triggers()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.state))
        .collect();
    assert!(states.contains(&(waiting, TriggerState::Superseded)));
    assert!(states.contains(&(keep, TriggerState::New)));

    // An older trigger planned after a newer one arrived (a patchset uploaded while the
    // previous one waited) does not end the newer one.
    let newest = s
        .insert_trigger(&pr_trigger('3'), TriggerState::New)
        .await
        .unwrap();
    s.supersede(&new, keep).await.unwrap();
    let newest_state = s
        .triggers()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id == newest)
        .map(|t| t.state);
    assert_eq!(newest_state, Some(TriggerState::New));

    let closed = s
        .close_change(
            &new.repo,
            ChangeKind::PullRequest,
            &new.ref_name,
            Some(7),
            "closed",
        )
        .await
        .unwrap();
    assert!(closed.is_empty());
    assert_eq!(
        s.triggers().await.unwrap().last().map(|t| t.state),
        Some(TriggerState::Closed)
    );
}

/// A change closed while one of its triggers was being planned: the plan's builds are
/// dropped, not queued (they ran and were voted on after the abandon before).
#[tokio::test]
async fn store_plan_of_a_trigger_ended_meanwhile_inserts_nothing() {
    let (_dir, s) = store().await;
    let t = pr_trigger('1');
    s.insert_trigger(&t, TriggerState::New).await.unwrap();
    let being_planned = s.triggers().await.unwrap().remove(0);
    s.close_change(
        &t.repo,
        ChangeKind::PullRequest,
        &t.ref_name,
        Some(7),
        "closed",
    )
    .await
    .unwrap();
    let planned = s
        .insert_builds(&being_planned, &[new_build("b-late", "hello", 0)])
        .await
        .unwrap();
    assert!(!planned);
    assert!(s.recent_builds(10).await.unwrap().is_empty());
    assert_eq!(
        s.triggers().await.unwrap()[0].state,
        TriggerState::Closed,
        "the plan must not reopen a closed trigger"
    );
}

#[tokio::test]
async fn store_outbox_keeps_the_latest_desire() {
    let (_dir, s) = store().await;
    let mut r = Report {
        repo: RepoId::github("acme/pkgs").expect("repo"),
        sha: sha('1'),
        context: "packetary".into(),
        state: ReportState::Pending,
        description: "queued".into(),
        target_url: None,
        builds: vec![],
    };
    s.set_report(&r).await.unwrap();
    s.set_report(&r).await.unwrap();
    let due = s.due_reports(Millis::now(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (&due[0].report, due[0].version, due[0].abandoned),
        (&r, 1, false)
    );

    r.state = ReportState::Success;
    r.target_url = Some("https://example.invalid/b".into());
    s.set_report(&r).await.unwrap();
    s.mark_delivered(due[0].id, 1, None).await.unwrap();
    assert_eq!(
        s.undelivered_reports().await.unwrap(),
        1,
        "version 2 stays due"
    );

    s.delivery_failed(due[0].id, 2, Millis(0), "boom", true)
        .await
        .unwrap();
    assert_eq!(s.undelivered_reports().await.unwrap(), 0);
    assert_eq!(s.next_report_due().await.unwrap(), None);
    let all = s.reports().await.unwrap();
    assert_eq!((all[0].version, all[0].attempts), (2, 1));
    assert!(all[0].abandoned);
    assert_eq!(all[0].last_error.as_deref(), Some("boom"));
    assert_eq!(all[0].report, r);
}

async fn approval(s: &Store, delivery: &str, commit: Option<&str>) -> StoredCommand {
    let c = CommandRequest {
        repo: RepoId::github("acme/pkgs").expect("repo"),
        pr_number: Some(7),
        head: None,
        user: "maintainer".into(),
        command: Command::Approve {
            commit: commit.map(str::to_string),
        },
        trusted: true,
    };
    assert!(s
        .accept(delivery, "issue_comment", Inbound::Command(&c))
        .await
        .unwrap());
    let got = s.next_command().await.unwrap().expect("the approval");
    assert_eq!(got.request, c);
    got
}

#[tokio::test]
async fn store_approval_is_for_one_commit() {
    let (_dir, s) = store().await;
    let first = pr_trigger('1');
    let waiting = TriggerState::AwaitingApproval;
    assert!(s
        .accept("d1", "pull_request", Inbound::Trigger(&first, waiting))
        .await
        .unwrap());
    let cmd = approval(&s, "d2", None).await;
    // A push after the comment is not what the maintainer looked at.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = pr_trigger('2');
    assert!(s
        .accept("d3", "pull_request", Inbound::Trigger(&second, waiting))
        .await
        .unwrap());
    let head = s
        .approval_head(&first.repo, 7, None, cmd.created_at)
        .await
        .unwrap();
    assert_eq!(head, Some(sha('1')));
    assert_eq!(
        s.approve(cmd.id, &first.repo, 7, &sha('1')).await.unwrap(),
        1
    );
    assert!(s.is_approved(&first.repo, 7, &sha('1')).await.unwrap());
    assert!(!s.is_approved(&first.repo, 7, &sha('2')).await.unwrap());
    let planned = s.next_new_trigger().await.unwrap().expect("approved push");
    assert_eq!(planned.trigger.head, sha('1'));
    s.set_trigger_state(planned.id, TriggerState::Planned, None)
        .await
        .unwrap();
    assert!(
        s.next_new_trigger().await.unwrap().is_none(),
        "the later push still waits"
    );

    // Naming the commit approves that one, whenever it arrived.
    let cmd = approval(&s, "d4", Some("2222222")).await;
    let head = s
        .approval_head(&first.repo, 7, Some("2222222"), cmd.created_at)
        .await
        .unwrap();
    assert_eq!(head, Some(sha('2')));
    let none = s
        .approval_head(&first.repo, 7, Some("3333333"), cmd.created_at)
        .await
        .unwrap();
    assert_eq!(none, None);
}

/// States go through `sqlx::Type` as the texts the schema always held (an old database
/// reads), and a text no variant names reads as `Corrupt`, naming it.
#[tokio::test]
async fn store_states_are_stored_as_their_texts() {
    let (_dir, s) = store().await;
    s.insert_trigger(&pr_trigger('1'), TriggerState::AwaitingApproval)
        .await
        .unwrap();
    let (kind, state): (String, String) = sqlx::query_as("SELECT kind, state FROM triggers")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(
        (kind.as_str(), state.as_str()),
        ("pull_request", "awaiting_approval")
    );
    s.set_trigger_state(s.triggers().await.unwrap()[0].id, TriggerState::New, None)
        .await
        .unwrap();
    let trigger = s.triggers().await.unwrap().remove(0);
    s.insert_builds(&trigger, &[new_build("b-lib", "lib", 0)])
        .await
        .unwrap();
    let claimed = s
        .claim_next_build(Millis::now())
        .await
        .unwrap()
        .expect("claimed");
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM builds UNION ALL SELECT state FROM build_events ORDER BY 1",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(texts, ["queued", "running", "running"]);
    let events: Vec<_> = s
        .build_events(&claimed.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.state))
        .collect();
    assert_eq!(
        events,
        [
            (ledger::EventKind::Planned, BuildState::Queued),
            (ledger::EventKind::Started, BuildState::Running)
        ]
    );

    sqlx::query("UPDATE builds SET state = 'lost'")
        .execute(&s.pool)
        .await
        .unwrap();
    match s.build(&claimed.id).await {
        Err(StoreError::Corrupt(what)) => assert_eq!(what, "build state `lost`"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A transaction that reads, then writes while another connection wrote in between, must
/// not fail: SQLite refuses the write of a deferred transaction whose snapshot is stale
/// (`SQLITE_BUSY_SNAPSHOT`, 517, which no busy timeout waits out). `Store::tx` begins
/// `IMMEDIATE`, so the other writer waits for it instead.
#[tokio::test]
async fn store_a_transaction_that_reads_then_writes_is_not_refused_by_a_concurrent_write() {
    let (_dir, s) = store().await;
    let mut tx = s.tx().await.expect("tx");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM triggers")
        .fetch_one(&mut *tx)
        .await
        .expect("read");
    assert_eq!(n, 0);
    let other = s.clone();
    let writer = tokio::spawn(async move {
        let mut t = pr_trigger('c');
        t.only_package = None;
        other.insert_trigger(&t, TriggerState::New).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("INSERT INTO deliveries (id, event, received_at) VALUES ('d1', 'push', 0)")
        .execute(&mut *tx)
        .await
        .expect("the write after the read");
    tx.commit().await.expect("commit");
    writer.await.expect("join").expect("the other write, after");
}

/// A fork's trigger does not start waiting for an approval that came while it was being
/// planned (the approval found nothing waiting to release): `await_approval` sees it.
#[tokio::test]
async fn store_an_approval_that_came_first_is_not_waited_for() {
    let (_dir, s) = store().await;
    let mut t = pr_trigger('f');
    t.only_package = None;
    s.insert_trigger(&t, TriggerState::New)
        .await
        .expect("trigger");
    let st = s.next_new_trigger().await.expect("read").expect("one");
    // The maintainer's approval lands first: nothing waits yet.
    let c = CommandRequest {
        repo: t.repo.clone(),
        pr_number: t.pr_number,
        head: None,
        user: "bob".into(),
        command: Command::Approve { commit: None },
        trusted: true,
    };
    assert!(s
        .accept_signed("d1", None, "issue_comment", Inbound::Command(&c))
        .await
        .expect("command"));
    let cmd = s.next_command().await.expect("read").expect("one");
    assert_eq!(
        s.approve(cmd.id, &t.repo, 7, &t.head)
            .await
            .expect("approve"),
        0
    );
    // The plan then asks to wait: it must not.
    assert!(!s.await_approval(st.id, &t, "fork").await.expect("await"));
    let now = s
        .next_new_trigger()
        .await
        .expect("read")
        .expect("still new");
    assert_eq!(now.id, st.id);
    // Without an approval, it waits.
    let mut u = pr_trigger('e');
    u.only_package = None;
    s.insert_trigger(&u, TriggerState::New)
        .await
        .expect("trigger");
    let sg = s.next_new_trigger().await.expect("read").expect("one");
    let sg = if sg.id == st.id {
        s.triggers()
            .await
            .expect("all")
            .into_iter()
            .find(|x| x.trigger.head == u.head)
            .expect("g")
    } else {
        sg
    };
    assert!(s.await_approval(sg.id, &u, "fork").await.expect("await"));
}

/// Issue 22: a clone URL's credentials are not kept in the store (they stay in the
/// configuration, and fetches get them from there).
#[tokio::test]
async fn a_clone_url_is_stored_without_its_credentials() {
    let (_dir, store) = store().await;
    let mut t = pr_trigger('c');
    t.clone_url = "https://bot:s3cret@git.corp.example/acme/pkgs.git".into();
    store
        .insert_trigger(&t, TriggerState::New)
        .await
        .expect("insert");
    let stored = store.triggers().await.expect("triggers");
    assert_eq!(
        stored[0].trigger.clone_url,
        "https://git.corp.example/acme/pkgs.git"
    );
}
