//! The ledger's bookkeeping over a real database: the counts and the history the
//! database keeps (migration 0013) after every kind of transition.

use std::path::Path;

use super::tests::{new_build, pr_trigger, store};
use super::*;
use crate::model::{BuildId, BuildState, CommitSha};

/// The commit's counts as a recount of its latest builds, the slow way.
async fn recount(s: &Store, head: &CommitSha) -> ledger::Counts {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT state FROM builds WHERE commit_sha = ? AND seq IN
           (SELECT MAX(seq) FROM builds WHERE commit_sha = ? GROUP BY package, target)",
    )
    .bind(head.as_str())
    .bind(head.as_str())
    .fetch_all(&s.pool)
    .await
    .unwrap();
    let mut c = ledger::Counts::default();
    for (state,) in rows {
        *match state.as_str() {
            "queued" => &mut c.queued,
            "running" => &mut c.running,
            "succeeded" => &mut c.succeeded,
            "failed" => &mut c.failed,
            "error" => &mut c.error,
            "cancelled" => &mut c.cancelled,
            _ => &mut c.superseded,
        } += 1;
    }
    c
}

/// The database keeps the counts and the history (migration 0013): after every kind of
/// transition the counts equal a recount of the latest builds, what a transition returns
/// equals what is stored, and each build's history names its transitions in order.
#[tokio::test]
async fn store_counts_and_events_follow_every_transition() {
    let (_dir, s) = store().await;
    let mut t = pr_trigger('1');
    t.only_package = None;
    s.insert_trigger(&t, TriggerState::New).await.unwrap();
    let st = s.triggers().await.unwrap().remove(0);
    let head = st.trigger.head.clone();
    let mut failed_in_plan = new_build("b-bad", "bad", 0);
    failed_in_plan.error = Some(EarlyFailure::plan("no spec"));
    let mut tx = s.tx().await.unwrap();
    let planned = ledger::plan(
        &mut tx,
        &st,
        &[
            new_build("b-a", "a", 0),
            new_build("b-b", "b", 0),
            failed_in_plan,
        ],
    )
    .await
    .unwrap()
    .expect("planned");
    tx.commit().await.unwrap();
    let expected = ledger::Counts {
        queued: 2,
        failed: 1,
        ..Default::default()
    };
    assert_eq!(planned.counts, Some(expected));
    assert_eq!(recount(&s, &head).await, expected);

    let a = s.claim_next_build(Millis::now()).await.unwrap().expect("a");
    let b = s.claim_next_build(Millis::now()).await.unwrap().expect("b");
    assert!(s
        .requeue(&b.id, Millis::now(), Some("engine gone"), false)
        .await
        .unwrap());
    s.claim_next_build(Millis::now())
        .await
        .unwrap()
        .expect("b again");
    let mut tx = s.tx().await.unwrap();
    assert!(ledger::record(&mut tx, &a.id, "{}", Path::new("/r/a"), &[])
        .await
        .unwrap());
    let ended = ledger::end(
        &mut tx,
        &ledger::BuildEnd {
            id: &a.id,
            state: BuildState::Succeeded,
            message: "built",
            phase: None,
            result_dir: None,
            phases: &[],
            provides: None,
            publication: None,
        },
    )
    .await
    .unwrap()
    .expect("a was running");
    let stored = ledger::counts(&mut tx, &st.trigger.repo, &head)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ended.counts, stored);
    assert_eq!(stored, Some(recount(&s, &head).await));
    assert_eq!(
        stored.map(|c| (c.running, c.succeeded, c.failed)),
        Some((1, 1, 1))
    );

    // A rebuild of `a` at the same commit replaces it in the counts; `b` is superseded.
    let mut tx = s.tx().await.unwrap();
    let superseded = ledger::end_change(
        &mut tx,
        &ledger::ChangeEnd {
            repo: &st.trigger.repo,
            pr_number: Some(7),
            ref_name: None,
            keep_sha: None,
            state: BuildState::Superseded,
            message: "superseded",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        superseded
            .iter()
            .map(|r| (r.id.as_str(), r.state))
            .collect::<Vec<_>>(),
        [("b-b", BuildState::Superseded)]
    );
    s.insert_trigger(&t, TriggerState::New).await.unwrap();
    let again = s.triggers().await.unwrap().pop().expect("trigger");
    s.insert_builds(&again, &[new_build("b-a2", "a", 0)])
        .await
        .unwrap();
    let now = ledger::Counts {
        queued: 1,
        failed: 1,
        superseded: 1,
        ..Default::default()
    };
    assert_eq!(recount(&s, &head).await, now);
    let mut tx = s.tx().await.unwrap();
    assert_eq!(
        ledger::counts(&mut tx, &st.trigger.repo, &head)
            .await
            .unwrap(),
        Some(now)
    );
    drop(tx);

    use ledger::EventKind::*;
    let kinds = |id: &'static str| {
        let s = s.clone();
        async move {
            s.build_events(&BuildId::parse(id).unwrap())
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.kind, e.state, e.message))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        kinds("b-a").await,
        [
            (Planned, BuildState::Queued, None),
            (Started, BuildState::Running, None),
            (Recorded, BuildState::Running, None),
            (Ended, BuildState::Succeeded, Some("built".into())),
        ]
    );
    assert_eq!(
        kinds("b-b").await,
        [
            (Planned, BuildState::Queued, None),
            (Started, BuildState::Running, None),
            (Requeued, BuildState::Queued, Some("engine gone".into())),
            (Started, BuildState::Running, None),
            (
                Superseded,
                BuildState::Superseded,
                Some("superseded".into())
            ),
        ]
    );
    assert_eq!(
        kinds("b-bad").await,
        [(Planned, BuildState::Failed, Some("no spec".into()))]
    );
}

/// A trigger is stored knowing whether it has anything to supersede (migration 0014): an
/// older trigger of its change still to plan, or an open build of its change at another
/// commit. The intake skips the supersede step for the others.
#[tokio::test]
async fn store_a_trigger_knows_whether_it_may_supersede() {
    let (_dir, s) = store().await;
    let supersedes = |s: &Store| {
        let s = s.clone();
        async move {
            s.triggers()
                .await
                .unwrap()
                .pop()
                .expect("trigger")
                .supersedes
        }
    };
    let mut t = pr_trigger('1');
    t.only_package = None;
    s.insert_trigger(&t, TriggerState::New).await.unwrap();
    assert!(!supersedes(&s).await, "the first of its change");

    // The same pull request again while the first is still to plan.
    t.head = CommitSha::parse(&"2".repeat(40)).unwrap();
    s.insert_trigger(&t, TriggerState::New).await.unwrap();
    assert!(supersedes(&s).await, "an older trigger is still to plan");

    // Another pull request of the repository is another change.
    let mut other = t.clone();
    other.pr_number = Some(8);
    s.insert_trigger(&other, TriggerState::New).await.unwrap();
    assert!(!supersedes(&s).await, "another change");

    // Plan the first two: a queued build at the second head, nothing left to plan.
    for st in s
        .triggers()
        .await
        .unwrap()
        .into_iter()
        .filter(|st| st.trigger.pr_number == Some(7))
    {
        let id = format!("b-{}", st.id.0);
        s.insert_builds(&st, &[new_build(&id, "a", 0)])
            .await
            .unwrap();
    }
    t.head = CommitSha::parse(&"3".repeat(40)).unwrap();
    s.insert_trigger(&t, TriggerState::New).await.unwrap();
    assert!(
        supersedes(&s).await,
        "open builds of the change at another commit"
    );

    // Once they ended, a new head has nothing to supersede.
    while let Some(b) = s.claim_next_build(Millis::now()).await.unwrap() {
        assert!(s
            .finish_build(&b.id, BuildState::Succeeded, None, None, None)
            .await
            .unwrap());
    }
    sqlx::query("UPDATE triggers SET state = 'superseded' WHERE head_sha = ?")
        .bind("3".repeat(40))
        .execute(&s.pool)
        .await
        .unwrap();
    t.head = CommitSha::parse(&"4".repeat(40)).unwrap();
    s.insert_trigger(&t, TriggerState::New).await.unwrap();
    assert!(!supersedes(&s).await, "everything of the change ended");
}
