//! The mirror cache against real repositories over file://: refspecs of pull requests and
//! Gerrit changes, bad remotes, and concurrent fetches of one mirror.

use crate::plan_common;

use packetary::git::{FetchAuth, GitError, MirrorCache, RemoteRef};
use plan_common::*;

#[tokio::test]
async fn fetches_branches_pull_and_gerrit_refs() {
    let r = TestRepo::new();
    let base = r.commit("main", &[put("a/a.spec", &spec("a", ""))]);
    let pr = r.commit_on(
        "refs/pull/7/head",
        Some(base),
        &[put("a/a.spec", &spec("a", "# pr"))],
    );
    let cl = r.commit_on(
        "refs/changes/45/12345/2",
        Some(base),
        &[put("a/a.patch", "p")],
    );
    let cache_dir = tempfile::tempdir().expect("tmp");
    let cache = MirrorCache::new(cache_dir.path());

    let (m, report) = cache
        .fetch(
            &r.url(),
            &[RemoteRef::AllBranches, RemoteRef::Pull(7)],
            &FetchAuth::None,
        )
        .await
        .expect("fetch");
    assert_eq!(report.default_branch.as_deref(), Some("refs/heads/main"));
    let repo = m.open().expect("open");
    assert_eq!(repo.refname_to_id("refs/pull/7/head").expect("pr ref"), pr);
    assert_eq!(repo.refname_to_id("refs/heads/main").expect("main"), base);
    // Only what was asked for: the Gerrit change is not there yet.
    assert!(repo.refname_to_id("refs/changes/45/12345/2").is_err());

    let gerrit = RemoteRef::parse("refs/changes/45/12345/2").expect("ref");
    cache
        .fetch(&r.url(), &[gerrit], &FetchAuth::None)
        .await
        .expect("fetch change");
    assert_eq!(
        repo.refname_to_id("refs/changes/45/12345/2")
            .expect("change"),
        cl
    );

    // The review plans from the mirror.
    let plan = packetary::plan::select(&repo, "m", &review("main", pr), &options());
    assert_eq!(ids(&plan), ["a"]);

    // A force-pushed pull request replaces the ref.
    let pr2 = r.commit_on(
        "refs/pull/7/head",
        Some(base),
        &[put("a/a.spec", &spec("a", "# pr v2"))],
    );
    cache
        .fetch(&r.url(), &[RemoteRef::Pull(7)], &FetchAuth::None)
        .await
        .expect("refetch");
    assert_eq!(repo.refname_to_id("refs/pull/7/head").expect("pr ref"), pr2);
}

#[tokio::test]
async fn bad_remotes_and_refs_give_clear_errors() {
    let cache_dir = tempfile::tempdir().expect("tmp");
    let cache = MirrorCache::new(cache_dir.path());
    let e = cache
        .fetch(
            "file:///nonexistent/repo.git",
            &[RemoteRef::AllBranches],
            &FetchAuth::None,
        )
        .await
        .expect_err("unreachable");
    assert!(matches!(e, GitError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("cannot reach file:///nonexistent/repo.git"),
        "{e}"
    );
    assert!(e.is_infrastructure());

    let r = TestRepo::new();
    r.commit("main", &[put("a/a.spec", &spec("a", ""))]);
    let e = cache
        .fetch(&r.url(), &[RemoteRef::Pull(99)], &FetchAuth::None)
        .await
        .expect_err("missing ref");
    assert!(
        e.to_string().contains("has no ref `refs/pull/99/head`"),
        "{e}"
    );
    assert!(!e.is_infrastructure());

    // An unreachable HTTPS remote, with a token configured, fails without hanging.
    let e = cache
        .fetch(
            "https://127.0.0.1:9/o/r.git",
            &[RemoteRef::AllBranches],
            &FetchAuth::Token {
                username: "x-access-token".into(),
                token: "secret".into(),
            },
        )
        .await
        .expect_err("refused");
    assert!(!e.to_string().contains("secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_mirror_do_not_corrupt_it() {
    let r = TestRepo::new();
    let mut tip = r.commit("main", &[put("a/a.spec", &spec("a", ""))]);
    for i in 0..20 {
        tip = r.commit(
            "main",
            &[put(&format!("p{i}/p{i}.spec"), &spec(&format!("p{i}"), ""))],
        );
        r.commit_on(
            &format!("refs/pull/{i}/head"),
            Some(tip),
            &[put("a/x", &i.to_string())],
        );
    }
    let cache_dir = tempfile::tempdir().expect("tmp");
    // Two caches on one directory stand for two processes: only the file lock serialises them.
    let caches = [
        MirrorCache::new(cache_dir.path()),
        MirrorCache::new(cache_dir.path()),
    ];
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let cache = caches[(i % 2) as usize].clone();
        let url = r.url();
        tasks.push(tokio::spawn(async move {
            cache
                .fetch(
                    &url,
                    &[RemoteRef::AllBranches, RemoteRef::Pull(i)],
                    &FetchAuth::None,
                )
                .await
                .map(|(m, _)| m)
        }));
    }
    // A reader meanwhile: it sees a ref before or after a fetch, never a broken one.
    let mirror = caches[0].mirror_for(&r.url());
    for t in tasks {
        let m = t.await.expect("join").expect("fetch");
        assert_eq!(m, mirror);
        let repo = m.open().expect("open");
        let main = repo.refname_to_id("refs/heads/main").expect("main");
        assert_eq!(main, tip);
        repo.find_commit(main).expect("commit readable");
    }
    let repo = mirror.open().expect("open");
    for i in 0..12 {
        let id = repo
            .refname_to_id(&format!("refs/pull/{i}/head"))
            .expect("pr");
        let c = repo.find_commit(id).expect("commit");
        c.tree().expect("tree").iter().count();
    }
    // The object database is whole: every object of main's history reads back.
    let mut walk = repo.revwalk().expect("walk");
    walk.push(tip).expect("push");
    assert_eq!(walk.count(), 21);
    if let Ok(out) = std::process::Command::new("git")
        .arg("-C")
        .arg(&mirror.path)
        .args(["fsck", "--no-dangling"])
        .output()
    {
        assert!(
            out.status.success(),
            "git fsck: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn incremental_fetch_brings_one_commit() {
    let r = TestRepo::new();
    r.commit("main", &[put("a/a.spec", &spec("a", ""))]);
    let cache_dir = tempfile::tempdir().expect("tmp");
    let cache = MirrorCache::new(cache_dir.path());
    cache
        .fetch(&r.url(), &[RemoteRef::AllBranches], &FetchAuth::None)
        .await
        .expect("first");
    let next = r.commit("main", &[put("a/a.spec", &spec("a", "# 2"))]);
    let (m, report) = cache
        .fetch(&r.url(), &[RemoteRef::AllBranches], &FetchAuth::None)
        .await
        .expect("second");
    assert_eq!(report.updated, [("refs/heads/main".to_string(), next)]);
    assert_eq!(
        m.open()
            .expect("open")
            .refname_to_id("refs/heads/main")
            .expect("main"),
        next
    );
}

/// A commit only reachable from a Gerrit change ref (a patchset the mirror has not fetched
/// yet) is exported: the export's fallback fetch includes `refs/changes/*`.
#[tokio::test]
async fn export_fetches_a_patchset_the_mirror_lacks() {
    use packetary::model::{CommitSha, RepoId};
    use packetary::queue::source::MirrorSource;
    use packetary::queue::SourceProvider;

    let r = TestRepo::new();
    let base = r.commit("main", &[put("a/a.spec", &spec("a", ""))]);
    let cache_dir = tempfile::tempdir().expect("tmp");
    let cache = MirrorCache::new(cache_dir.path());
    // The mirror exists and has the branch; the change is uploaded after.
    cache
        .fetch(&r.url(), &[RemoteRef::AllBranches], &FetchAuth::None)
        .await
        .expect("fetch");
    let cl = r.commit_on(
        "refs/changes/45/12345/2",
        Some(base),
        &[put("a/a.patch", "only in the patchset")],
    );
    let source = MirrorSource::new(cache, FetchAuth::None);
    let out = tempfile::tempdir().expect("tmp");
    let dest = out.path().join("src");
    let commit = CommitSha::parse(&cl.to_string()).expect("sha");
    let repo = RepoId::parse("gerrit:project").expect("repo id");
    source
        .export(&r.url(), &repo, &commit, &dest)
        .await
        .expect("the patchset is exported");
    assert_eq!(
        std::fs::read_to_string(dest.join("a/a.patch")).expect("exported file"),
        "only in the patchset"
    );
}
