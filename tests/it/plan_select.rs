//! Change → packages, against real repositories: layouts, push/review/new-branch/force-push,
//! deletions, `.packetary.toml`, bad input, export. No rpm needed here.

use crate::plan_common;

use packetary::git::tree::commit_tree;
use packetary::plan::{self, discover_tree, Layout, Reason};
use plan_common::*;

fn layouts_repo() -> (TestRepo, git2::Oid) {
    let r = TestRepo::new();
    let c = r.commit(
        "main",
        &[
            put("rpms/foo/foo.spec", &spec("foo", "")),
            put("rpms/foo/foo-fix.patch", "patch"),
            put("rpms/foo/files/extra.conf", "conf"),
            put("tree/SPECS/bar.spec", &spec("bar", "")),
            put("tree/SPECS/baz.spec", &spec("baz", "")),
            put("tree/SOURCES/bar-1.0.tar.gz", "tarball"),
            put("many/a.spec", &spec("a", "")),
            put("many/b.spec", &spec("b", "")),
            put("many/README", "readme"),
            put("README.md", "top"),
        ],
    );
    (r, c)
}

#[test]
fn each_layout_is_discovered_from_the_tree() {
    let (r, c) = layouts_repo();
    let tree = commit_tree(&r.repo, c).expect("tree");
    let found = discover_tree(&r.repo, &tree, Default::default()).expect("discover");
    let got: Vec<(String, Layout, String)> = found
        .iter()
        .map(|p| (p.id.to_string(), p.layout, p.source_dir.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("many/a.spec".to_string(), Layout::Specs, "many".to_string()),
            ("many/b.spec".into(), Layout::Specs, "many".into()),
            ("rpms/foo".into(), Layout::Dir, "rpms/foo".into()),
            (
                "tree/SPECS/bar.spec".into(),
                Layout::Rpmbuild,
                "tree/SOURCES".into()
            ),
            (
                "tree/SPECS/baz.spec".into(),
                Layout::Rpmbuild,
                "tree/SOURCES".into()
            ),
        ]
    );

    // dist-git: spec and `sources` at the root.
    let d = TestRepo::new();
    let sha = "a".repeat(128);
    let c = d.commit(
        "main",
        &[
            put("pkg.spec", &spec("pkg", "Source0: pkg-1.0.tar.gz")),
            put("sources", &format!("SHA512 (pkg-1.0.tar.gz) = {sha}\n")),
            put("fix.patch", "p"),
        ],
    );
    let tree = commit_tree(&d.repo, c).expect("tree");
    let found = discover_tree(&d.repo, &tree, Default::default()).expect("discover");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].id.as_str(), found[0].layout),
        (".", Layout::DistGit)
    );
}

#[test]
fn changed_paths_map_to_their_packages() {
    let (r, c1) = layouts_repo();
    let c2 = r.commit(
        "main",
        &[
            put("rpms/foo/files/extra.conf", "conf2"),
            put("tree/SOURCES/bar-1.0.tar.gz", "tarball2"),
            put("many/b.spec", &spec("b", "# edited")),
            put("README.md", "top2"),
        ],
    );
    let plan = select(&r, push(Some(c1), c2));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(
        ids(&plan),
        [
            "many/b.spec",
            "rpms/foo",
            "tree/SPECS/bar.spec",
            "tree/SPECS/baz.spec"
        ]
    );
    let foo = plan
        .packages
        .iter()
        .find(|p| p.id.as_str() == "rpms/foo")
        .expect("foo");
    assert_eq!(
        foo.reasons,
        [Reason::Changed {
            paths: vec!["rpms/foo/files/extra.conf".into()],
            count: 1
        }]
    );
    assert_eq!(foo.targets[0].as_str(), "bookworm-rpmbuild");
    assert!(foo.spec_blob.is_some());
    assert_eq!(plan.changed_paths, 4);

    // A shared file of a many-spec directory concerns all of its specs.
    let c3 = r.commit("main", &[put("many/README", "readme2")]);
    assert_eq!(
        ids(&select(&r, push(Some(c2), c3))),
        ["many/a.spec", "many/b.spec"]
    );
}

#[test]
fn review_uses_the_merge_base_and_the_base_config() {
    let r = TestRepo::new();
    let base = r.commit(
        "main",
        &[
            put("a/a.spec", &spec("a", "")),
            put("b/b.spec", &spec("b", "")),
            put("c/c.spec", &spec("c", "")),
        ],
    );
    r.branch("topic", base);
    let head = r.commit("topic", &[put("a/a.spec", &spec("a", "# topic"))]);
    // main moves on after the fork: its changes are not the review's.
    r.commit("main", &[put("b/b.spec", &spec("b", "# main"))]);
    let plan = select(&r, review("main", head));
    assert_eq!(plan.kind, plan::DiffKind::Review);
    assert_eq!(ids(&plan), ["a"]);
    assert_eq!(
        plan.compared_with.as_ref().map(|c| c.to_string()),
        Some(base.to_string())
    );

    // The review's own .packetary.toml is not used: exclude everything there, still planned.
    let head2 = r.commit(
        "topic",
        &[
            put(".packetary.toml", "exclude = [\"**\"]\n"),
            put("c/c.spec", &spec("c", "# x")),
        ],
    );
    let plan = select(&r, review("main", head2));
    assert_eq!(ids(&plan), ["a", "c"]);
    assert!(
        plan.notices
            .iter()
            .any(|n| n.contains("read from the base")),
        "{:?}",
        plan.notices
    );

    // ...while the base's configuration is.
    let main = r.commit("main", &[put(".packetary.toml", "exclude = [\"c\"]\n")]);
    let plan = select(&r, review("main", head2));
    assert_eq!(ids(&plan), ["a"]);
    assert_eq!(
        plan.config_from.as_ref().map(|c| c.to_string()),
        Some(main.to_string())
    );
}

#[test]
fn new_branch_and_force_push_compare_with_the_fork_point() {
    let r = TestRepo::new();
    let base = r.commit(
        "main",
        &[
            put("a/a.spec", &spec("a", "")),
            put("b/b.spec", &spec("b", "")),
        ],
    );
    r.branch("feature", base);
    r.commit("feature", &[put("a/a.spec", &spec("a", "# 1"))]);
    let tip = r.commit("feature", &[put("a/extra.patch", "p")]);

    // A new branch (before = zeros): everything since it left main.
    let plan = select(
        &r,
        plan::Change::Push {
            before: Some("0".repeat(40)),
            after: tip.to_string(),
        },
    );
    assert_eq!(plan.kind, plan::DiffKind::NewBranch);
    assert_eq!(ids(&plan), ["a"]);
    assert_eq!(plan.changed_paths, 2);

    // A force push whose `before` no longer exists: the same, with a notice.
    let gone = "1234567890abcdef1234567890abcdef12345678";
    let plan = select(
        &r,
        plan::Change::Push {
            before: Some(gone.into()),
            after: tip.to_string(),
        },
    );
    assert_eq!(plan.kind, plan::DiffKind::ForcePush);
    assert_eq!(ids(&plan), ["a"]);
    assert!(
        plan.notices
            .iter()
            .any(|n| n.contains(gone) && n.contains("force-pushed")),
        "{:?}",
        plan.notices
    );

    // A head that does not exist is the plan's error, clearly worded.
    let plan = select(
        &r,
        push(Some(base), git2::Oid::from_str(gone).expect("oid")),
    );
    assert_eq!(plan.errors.len(), 1);
    assert!(
        plan.errors[0].contains(gone) && plan.errors[0].contains("not a commit"),
        "{:?}",
        plan.errors
    );
    assert!(plan.packages.is_empty());
}

#[test]
fn deleted_packages_are_not_built() {
    let r = TestRepo::new();
    let c1 = r.commit(
        "main",
        &[
            put("a/a.spec", &spec("a", "")),
            put("a/a.patch", "p"),
            put("b/b.spec", &spec("b", "")),
        ],
    );
    let c2 = r.commit("main", &[Delete("a"), put("b/b.spec", &spec("b", "# x"))]);
    let plan = select(&r, push(Some(c1), c2));
    assert_eq!(ids(&plan), ["b"]);
    assert_eq!(plan.deleted.len(), 1);
    assert_eq!(plan.deleted[0].id.as_str(), "a");
    // Deleting one file of a package still rebuilds the package.
    let c3 = r.commit(
        "main",
        &[put("a/a.spec", &spec("a", "")), put("a/a.patch", "p")],
    );
    let c4 = r.commit("main", &[Delete("a/a.patch")]);
    let plan = select(&r, push(Some(c3), c4));
    assert_eq!(ids(&plan), ["a"]);
    assert!(plan.deleted.is_empty());
}

#[test]
fn packetary_toml_changes_replan_what_they_affect() {
    let r = TestRepo::new();
    let c1 = r.commit(
        "main",
        &[
            put(".packetary.toml", "exclude = [\"c\"]\n"),
            put("a/a.spec", &spec("a", "")),
            put("b/b.spec", &spec("b", "")),
            put("c/c.spec", &spec("c", "")),
        ],
    );
    // Per-package targets for b, and c no longer excluded: b and c are replanned, a is not.
    let c2 = r.commit(
        "main",
        &[put(
            ".packetary.toml",
            "[[override]]\npackages = [\"b\"]\ntargets = [\"bookworm-rpmbuild\", \"other\"]\n",
        )],
    );
    let plan = select(&r, push(Some(c1), c2));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(ids(&plan), ["b", "c"]);
    let b = &plan.packages[0];
    assert!(
        matches!(&b.reasons[0], Reason::Config { detail } if detail.contains("targets")),
        "{:?}",
        b.reasons
    );
    assert_eq!(b.targets.len(), 2);

    // Changing the default targets replans every package.
    let c3 = r.commit("main", &[put(".packetary.toml", "targets = [\"other\"]\n")]);
    assert_eq!(ids(&select(&r, push(Some(c2), c3))), ["a", "b", "c"]);
}

#[test]
fn export_writes_exactly_the_package_files_of_the_commit() {
    let (r, c1) = layouts_repo();
    let c2 = r.commit(
        "main",
        &[
            put("rpms/foo/foo-fix.patch", "patch v2"),
            PutMode(b"rpms/foo/run.sh", b"#!/bin/sh\n", EXEC),
        ],
    );
    let plan = select(&r, push(Some(c1), c2));
    let foo = plan
        .packages
        .iter()
        .find(|p| p.id.as_str() == "rpms/foo")
        .expect("foo");
    let out = tempfile::tempdir().expect("tmp");
    let src = plan::export_package(&r.repo, c2, foo, out.path()).expect("export");
    assert_eq!(
        src.spec.file_name().and_then(|n| n.to_str()),
        Some("foo.spec")
    );
    let mut files: Vec<String> = walk(out.path());
    files.sort();
    assert_eq!(
        files,
        ["files/extra.conf", "foo-fix.patch", "foo.spec", "run.sh"]
    );
    // Contents are the commit's blobs.
    let tree = commit_tree(&r.repo, c2).expect("tree");
    for f in &files {
        let blob = tree
            .get_path(std::path::Path::new(&format!("rpms/foo/{f}")))
            .expect("in tree")
            .to_object(&r.repo)
            .expect("object")
            .peel_to_blob()
            .expect("blob");
        assert_eq!(
            std::fs::read(out.path().join(f)).expect("read"),
            blob.content(),
            "{f}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.path().join("run.sh"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);

    // rpmbuild tree: the spec and SOURCES side by side.
    let c3 = r.commit("main", &[put("tree/SPECS/bar.spec", &spec("bar", "# z"))]);
    let plan = select(&r, push(Some(c2), c3));
    let bar = &plan.packages[0];
    let out = tempfile::tempdir().expect("tmp");
    plan::export_package(&r.repo, c3, bar, out.path()).expect("export");
    let mut files = walk(out.path());
    files.sort();
    assert_eq!(files, ["bar-1.0.tar.gz", "bar.spec"]);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                go(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).expect("prefix").display().to_string());
            }
        }
    }
    go(dir, dir, &mut out);
    out
}

#[test]
fn dist_git_sources_are_checked_when_planning() {
    let d = TestRepo::new();
    let c1 = d.commit(
        "main",
        &[
            put("pkg.spec", &spec("pkg", "")),
            put(
                "sources",
                &format!("SHA512 (pkg.tar.gz) = {}\n", "a".repeat(128)),
            ),
        ],
    );
    let c2 = d.commit(
        "main",
        &[put(
            "sources",
            "d41d8cd98f00b204e9800998ecf8427e  pkg.tar.gz\n",
        )],
    );
    let plan = select(&d, push(Some(c1), c2));
    assert_eq!(ids(&plan), ["."]);
    let e = plan.packages[0].error.clone().unwrap_or_default();
    assert!(e.contains("sources:1") && e.contains("MD5"), "{e}");
    let c3 = d.commit(
        "main",
        &[put(
            "sources",
            &format!("SHA512 (pkg.tar.gz) = {}\n", "b".repeat(128)),
        )],
    );
    let plan = select(&d, push(Some(c2), c3));
    assert_eq!(plan.packages[0].layout, Layout::DistGit);
    assert!(
        plan.packages[0].error.is_none(),
        "{:?}",
        plan.packages[0].error
    );
}

#[test]
fn a_deleted_spec_among_many_is_a_deletion_only() {
    let (r, _) = layouts_repo();
    let c2 = r.commit("main", &[put("many/c.spec", &spec("c", ""))]);
    // Two specs stay in many/ and one in tree/SPECS/.
    let c3 = r.commit(
        "main",
        &[Delete("many/b.spec"), Delete("tree/SPECS/baz.spec")],
    );
    let plan = select(&r, push(Some(c2), c3));
    assert!(plan.packages.is_empty(), "{:?}", plan.packages);
    let gone: Vec<&str> = plan.deleted.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(gone, ["many/b.spec", "tree/SPECS/baz.spec"]);

    // One spec left: the directory is now a one-spec package, still nothing to build.
    let c4 = r.commit("main", &[Delete("many/c.spec")]);
    let plan = select(&r, push(Some(c3), c4));
    assert!(plan.packages.is_empty(), "{:?}", plan.packages);
    assert_eq!(plan.deleted.len(), 1);
    assert_eq!(plan.deleted[0].id.as_str(), "many/c.spec");

    // A spec added next to others is that spec alone.
    let c5 = r.commit("main", &[put("tree/SPECS/new.spec", &spec("new", ""))]);
    assert_eq!(
        ids(&select(&r, push(Some(c4), c5))),
        ["tree/SPECS/new.spec"]
    );
}

#[tokio::test]
async fn shared_files_without_rpm_rebuild_the_directory_and_say_why() {
    let (r, c1) = layouts_repo();
    let c2 = r.commit(
        "main",
        &[
            put("many/README", "readme2"),
            put("tree/SOURCES/gone.txt", "x"),
        ],
    );
    let c3 = r.commit("main", &[Delete("tree/SOURCES/gone.txt")]);
    let no_targets = std::collections::BTreeMap::new();
    let plan_of = |before, after| {
        plan::plan_change(
            r.path().to_path_buf(),
            "t".into(),
            push(Some(before), after),
            options(),
            &no_targets,
            None,
        )
    };
    let p = plan_of(c1, c2).await.expect("plan");
    assert_eq!(
        ids(&p),
        [
            "many/a.spec",
            "many/b.spec",
            "tree/SPECS/bar.spec",
            "tree/SPECS/baz.spec"
        ]
    );
    let a = &p
        .packages
        .iter()
        .find(|x| x.id.as_str() == "many/a.spec")
        .expect("a");
    assert_eq!(
        a.reasons,
        [Reason::Shared {
            paths: vec!["many/README".into()],
            count: 1,
            dir: "many".into()
        }]
    );
    assert!(!a.shared && p.shared.is_empty());
    // A deleted file that no spec names: nothing to build.
    let p = plan_of(c2, c3).await.expect("plan");
    assert!(p.packages.is_empty(), "{:?}", p.packages);
    assert!(
        p.notices
            .iter()
            .any(|n| n.contains("deleted tree/SOURCES/gone.txt")),
        "{:?}",
        p.notices
    );
}
