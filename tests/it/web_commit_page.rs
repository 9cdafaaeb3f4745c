//! The commit page (`/?commit=<sha>`, where an aggregate status links) lists the builds of
//! an old commit too, however many builds came after it.

use crate::serve_common;

use packetary::model::{BuildId, TargetName};
use packetary::store::NewBuild;
use serve_common::tester::{sha, QueueTester};
use serve_common::Mode;

#[tokio::test]
async fn an_old_commit_page_lists_its_build_after_many_newer_ones() {
    let t = QueueTester::new(Mode::Succeed).await;
    let old = t.insert_build("old-package", "old-package.spec").await;
    // More newer builds than the recent-builds list shows, at another commit.
    t.push('b').await;
    let newer = t
        .store()
        .next_new_trigger()
        .await
        .expect("store")
        .expect("trigger");
    assert_eq!(newer.trigger.head, sha('b'));
    let builds: Vec<NewBuild> = (0..210)
        .map(|i| NewBuild {
            error: None,
            stage: 0,
            id: BuildId::generate(),
            package: format!("new-{i}"),
            spec_path: format!("new-{i}.spec"),
            target: TargetName::parse("t").expect("name"),
        })
        .collect();
    t.store()
        .insert_builds(&newer, &builds)
        .await
        .expect("insert");

    let page = t.get(&format!("/?commit={}", sha('a'))).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(old.as_str()) && page.body.contains("old-package"),
        "the old commit's page lacks its build:\n{}",
        page.body
    );
    assert!(!page.body.contains("new-0"), "{}", page.body);
    let page = t.get(&format!("/?commit={}", sha('b'))).await;
    assert!(page.body.contains("new-209"), "{}", page.body);
}
