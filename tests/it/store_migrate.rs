//! A store written before repositories carried their forge is carried over: its rows read
//! back as `github:owner/name`, and new rows of the same repository meet the old ones.

use std::path::Path;

use packetary::model::{ForgeKind, RepoId};
use packetary::store::{Millis, Store};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;

/// Applies the migrations before 0004 only, as an older release left the database.
async fn old_database(data_dir: &Path) {
    let old = data_dir.join("old-migrations");
    std::fs::create_dir_all(&old).expect("mkdir");
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for e in std::fs::read_dir(&all).expect("migrations") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if name.as_str() < "0004" {
            std::fs::copy(&p, old.join(&name)).expect("copy");
        }
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(data_dir.join("packetary.db"))
        .create_if_missing(true)
        .connect()
        .await
        .expect("connect");
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .expect("migrator")
        .run(&mut conn)
        .await
        .expect("old migrations");
    let sha = "a".repeat(40);
    for sql in [
        "INSERT INTO triggers (repo, clone_url, kind, ref_name, head_sha, created_at) VALUES ('Codertocat/Hello-World', 'file:///x', 'push', 'refs/heads/main', ?, 0)",
        "INSERT INTO builds (id, trigger_id, repo, clone_url, commit_sha, ref_name, package, spec_path, target, state, next_attempt_at, created_at, message) VALUES ('b1', 1, 'Codertocat/Hello-World', 'file:///x', ?, 'refs/heads/main', 'hello', 'hello.spec', 't', 'succeeded', 0, 0, 'built')",
        "INSERT INTO reports (repo, sha, context, state, description, next_attempt_at, updated_at) VALUES ('Codertocat/Hello-World', ?, 'packetary', 'pending', 'queued', 0, 0)",
    ] {
        sqlx::query(sql)
            .bind(&sha)
            .execute(&mut conn)
            .await
            .expect("old row");
    }
}

#[tokio::test]
async fn rows_of_an_older_store_name_their_forge() {
    let dir = tempfile::tempdir().expect("tempdir");
    old_database(dir.path()).await;
    let store = Store::open(dir.path()).await.expect("open migrates");
    let repo = RepoId::github("Codertocat/Hello-World").expect("repo");
    assert_eq!(repo.forge(), ForgeKind::GitHub);

    let triggers = store.triggers().await.expect("triggers");
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].trigger.repo, repo);

    let builds = store.recent_builds(10).await.expect("builds");
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].repo, repo);
    let sha = builds[0].commit.clone();
    let latest = store
        .latest_builds_of_commit(&repo, &sha)
        .await
        .expect("by commit");
    assert_eq!(latest.len(), 1, "old builds are found under the new name");

    let due = store.due_reports(Millis::now(), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].report.repo, repo);
}
