//! The service's planner over a real repository served as `file://`: which packages a push
//! or a pull request builds, rebuild comments, and what is reported as whose fault. No
//! Docker: the spec oracle is left out, so every package is in one stage.

use crate::serve_common;

use std::path::{Path, PathBuf};

use packetary::git::{FetchAuth, MirrorCache};
use packetary::model::{ChangeKind, Trigger};
use packetary::model::{CommitSha, RepoId};
use packetary::queue::planner::GitPlanner;
use packetary::queue::source::MirrorSource;
use packetary::queue::{PlanError, PlannedBuild, Planner, SourceProvider};
use serve_common::git;

/// `main` with two packages, `alpha` and `beta`, each a directory with a spec and a source.
fn two_packages(root: &Path) -> PathBuf {
    let repo = root.join("origin");
    for name in ["alpha", "beta"] {
        std::fs::create_dir_all(repo.join(name)).expect("mkdir");
        std::fs::write(
            repo.join(name).join(format!("{name}.spec")),
            format!("Name: {name}\nVersion: 1\nRelease: 1\nSource0: {name}.txt\n"),
        )
        .expect("spec");
        std::fs::write(repo.join(name).join(format!("{name}.txt")), "1\n").expect("source");
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "two packages"]);
    repo
}

fn touch(repo: &Path, file: &str, text: &str, message: &str) -> String {
    std::fs::write(repo.join(file), text).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

fn sha(s: &str) -> CommitSha {
    CommitSha::parse(s).expect("sha")
}

fn planner(data: &Path) -> GitPlanner {
    let config = packetary::config::Config::load(None).expect("defaults");
    GitPlanner::new(
        MirrorCache::new(data.join("mirrors")),
        FetchAuth::None,
        None,
        config.targets.clone(),
        config.default_targets.clone(),
    )
}

fn push(repo: &Path, before: Option<&str>, after: &str, branch: &str) -> Trigger {
    Trigger {
        repo: RepoId::github("test/pkgs").expect("repo"),
        clone_url: format!("file://{}", repo.display()),
        kind: ChangeKind::Push,
        ref_name: format!("refs/heads/{branch}"),
        base: before.map(sha),
        head: sha(after),
        pr_number: None,
        base_ref: Some(branch.into()),
        from_fork: false,
        sender: "alice".into(),
        only_package: None,
        only_target: None,
    }
}

fn packages(builds: &[PlannedBuild]) -> Vec<String> {
    builds.iter().map(|b| b.package.clone()).collect()
}

#[tokio::test]
async fn a_push_builds_only_the_package_it_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = two_packages(dir.path());
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let second = touch(&repo, "beta/beta.txt", "2\n", "beta 2");
    let p = planner(dir.path());

    let builds = p
        .plan(&push(&repo, Some(&first), &second, "main"))
        .await
        .expect("plan");
    assert_eq!(packages(&builds), ["beta"]);
    assert_eq!(builds[0].spec_path, PathBuf::from("beta/beta.spec"));
    assert_eq!(builds[0].target.as_str(), "bookworm-rpmbuild");

    // The first push of the branch has nothing to compare with: everything it holds.
    let all = p
        .plan(&push(&repo, None, &first, "main"))
        .await
        .expect("plan");
    assert_eq!(packages(&all), ["alpha", "beta"]);
}

#[tokio::test]
async fn a_new_branch_is_compared_with_its_fork_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = two_packages(dir.path());
    git(&repo, &["checkout", "-q", "-b", "topic"]);
    let head = touch(&repo, "alpha/alpha.txt", "2\n", "alpha 2");
    let p = planner(dir.path());
    let builds = p
        .plan(&push(&repo, None, &head, "topic"))
        .await
        .expect("plan");
    assert_eq!(packages(&builds), ["alpha"]);
}

#[tokio::test]
async fn a_pull_request_is_planned_against_its_merge_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = two_packages(dir.path());
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    let head = touch(&repo, "alpha/alpha.txt", "2\n", "alpha 2");
    // GitHub's pull ref, as the base repository carries it.
    git(&repo, &["update-ref", "refs/pull/9/head", &head]);
    // main moves on after the fork: beta is not the pull request's change.
    git(&repo, &["checkout", "-q", "main"]);
    let base = touch(&repo, "beta/beta.txt", "2\n", "beta 2");
    git(&repo, &["branch", "-q", "-D", "feature"]);

    let t = Trigger {
        kind: ChangeKind::PullRequest,
        ref_name: "refs/pull/9/head".into(),
        base: Some(sha(&base)),
        pr_number: Some(9),
        base_ref: Some("main".into()),
        ..push(&repo, None, &head, "main")
    };
    let p = planner(dir.path());
    assert_eq!(packages(&p.plan(&t).await.expect("plan")), ["alpha"]);

    // The base's configuration rules: a target unknown to the service fails the plan.
    touch(
        &repo,
        ".packetary.toml",
        "targets = [\"fedora-99\"]\n",
        "bad config",
    );
    match p.plan(&t).await {
        Err(PlanError::Invalid(m)) => assert!(m.contains("fedora-99"), "{m}"),
        other => panic!("expected an invalid plan, got {other:?}"),
    }
}

#[tokio::test]
async fn rebuild_comments_narrow_the_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = two_packages(dir.path());
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let p = planner(dir.path());
    let mut t = push(&repo, None, &first, "main");
    t.only_package = Some("alpha".into());
    assert_eq!(packages(&p.plan(&t).await.expect("plan")), ["alpha"]);

    t.only_package = Some("gamma".into());
    match p.plan(&t).await {
        Err(PlanError::Invalid(m)) => assert!(m.contains("gamma") && m.contains("alpha, beta")),
        other => panic!("expected an invalid plan, got {other:?}"),
    }

    t.only_package = None;
    t.only_target = Some("nope".into());
    assert!(matches!(p.plan(&t).await, Err(PlanError::Invalid(_))));
}

#[tokio::test]
async fn a_package_that_cannot_be_built_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = two_packages(dir.path());
    let first = git(&repo, &["rev-parse", "HEAD"]);
    // A file name that is not UTF-8 cannot be exported into a build.
    use std::os::unix::ffi::OsStrExt;
    let bad = repo
        .join("beta")
        .join(std::ffi::OsStr::from_bytes(b"patch-\xff.txt"));
    std::fs::write(bad, "x\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "bad name"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let p = planner(dir.path());
    // The broken package is planned as a failed build that says why; the change still plans.
    let builds = p
        .plan(&push(&repo, Some(&first), &head, "main"))
        .await
        .expect("the change plans");
    let beta: Vec<&PlannedBuild> = builds.iter().filter(|b| b.package == "beta").collect();
    assert!(!beta.is_empty(), "{builds:?}");
    for b in beta {
        let e = b.error.as_deref().expect("beta carries its error");
        assert!(e.contains("UTF-8"), "{e}");
    }
    assert!(builds
        .iter()
        .filter(|b| b.package != "beta")
        .all(|b| b.error.is_none()));
}

#[tokio::test]
async fn an_unreachable_remote_is_retried_and_a_missing_commit_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = two_packages(dir.path());
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let p = planner(dir.path());
    let mut t = push(&repo, None, &first, "main");
    t.clone_url = format!("file://{}/nowhere", dir.path().display());
    assert!(
        matches!(p.plan(&t).await, Err(PlanError::Infra(_))),
        "{:?}",
        p.plan(&t).await
    );

    let t = push(&repo, None, &"e".repeat(40), "main");
    assert!(matches!(p.plan(&t).await, Err(PlanError::Invalid(_))));
}

#[tokio::test]
async fn builds_export_from_the_planners_mirror() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = two_packages(dir.path());
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let data = dir.path().join("data");
    let p = planner(&data);
    let t = push(&repo, None, &first, "main");
    p.plan(&t).await.expect("plan");
    let mirrors = std::fs::read_dir(data.join("mirrors"))
        .expect("mirrors")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "git"))
        .count();
    assert_eq!(mirrors, 1);

    // The source never fetches what the planner already has: the remote is gone now.
    let moved = dir.path().join("moved");
    std::fs::rename(&repo, &moved).expect("rename");
    let src = MirrorSource::new(MirrorCache::new(data.join("mirrors")), FetchAuth::None);
    let dest = dir.path().join("export");
    src.export(&t.clone_url, &t.repo, &t.head, &dest)
        .await
        .expect("export");
    assert!(dest.join("alpha/alpha.spec").is_file());
    assert!(dest.join("beta/beta.txt").is_file());

    // A commit the mirror lacks is fetched, and reported missing if the remote lacks it too.
    std::fs::rename(&moved, &repo).expect("rename back");
    let missing = sha(&"e".repeat(40));
    let err = src
        .export(&t.clone_url, &t.repo, &missing, &dir.path().join("export2"))
        .await
        .expect_err("missing commit");
    assert!(
        matches!(err, packetary::queue::SourceError::Missing(_)),
        "{err}"
    );
}
