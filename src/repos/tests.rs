//! The publishing rules and snapshot layout, on RPM files whose headers are written here
//! (the indexing itself, with the real createrepo_c, is in tests/it/repos.rs).

use super::*;

/// An RPM file with a real lead, an empty signature header and a header carrying name,
/// (epoch,) version, release, arch and, for a binary package, a source RPM; `payload`
/// follows the header so that two files can differ in bytes only.
pub(crate) fn fake_rpm(
    dir: &Path,
    name: &str,
    epoch: Option<u32>,
    version: &str,
    release: &str,
    arch: &str,
    payload: &str,
) -> PathBuf {
    fn header(entries: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut store = Vec::new();
        for (tag, ty, data) in entries {
            if *ty == 4 {
                while store.len() % 4 != 0 {
                    store.push(0);
                }
            }
            for w in [*tag, *ty, store.len() as u32, 1] {
                index.extend_from_slice(&w.to_be_bytes());
            }
            store.extend_from_slice(data);
        }
        let mut h = vec![0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0];
        h.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        h.extend_from_slice(&(store.len() as u32).to_be_bytes());
        h.extend(index);
        h.extend(store);
        h
    }
    let s = |v: &str| [v.as_bytes(), &[0]].concat();
    let mut entries = vec![
        (1000, 6, s(name)),
        (1001, 6, s(version)),
        (1002, 6, s(release)),
        (1022, 6, s(if arch == "src" { "x86_64" } else { arch })),
    ];
    if let Some(e) = epoch {
        entries.push((1003, 4, e.to_be_bytes().to_vec()));
    }
    if arch != "src" {
        entries.push((1044, 6, s(&format!("{name}-{version}-{release}.src.rpm"))));
    }
    let mut f = vec![0xed, 0xab, 0xee, 0xdb];
    f.resize(96, 0);
    let sig = header(&[]);
    let pad = (8 - sig.len() % 8) % 8;
    f.extend(sig);
    f.extend(std::iter::repeat_n(0, pad));
    f.extend(header(&entries));
    f.extend_from_slice(payload.as_bytes());
    let suffix = if arch == "src" { "src" } else { arch };
    let p = dir.join(format!(
        "{name}-{version}-{release}.{suffix}.{}.rpm",
        payload.len()
    ));
    std::fs::write(&p, f).expect("write rpm");
    p
}

pub(crate) fn stage_ok(repo: &RepoDir, pkgs: &[PathBuf], policy: Policy) -> Option<SnapshotId> {
    let stage = repo.stage(pkgs, policy).expect("stage")?;
    // What `publish` does after indexing.
    let dir = repo.snapshot_dir(&stage.id);
    std::fs::rename(&stage.tmp, &dir).expect("rename");
    repo.switch_latest(&stage.id).expect("switch");
    Some(stage.id)
}

#[test]
fn reads_identity_from_the_header() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = fake_rpm(tmp.path(), "foo", Some(2), "1.0", "3", "noarch", "x");
    let e = describe(&p).expect("describe");
    assert_eq!(e.nevra(), "foo-2:1.0-3.noarch");
    assert_eq!(e.file, "foo-1.0-3.noarch.rpm");
    let s = fake_rpm(tmp.path(), "foo", None, "1.0", "3", "src", "x");
    assert_eq!(describe(&s).expect("srpm").file, "foo-1.0-3.src.rpm");
    let link = tmp.path().join("link.rpm");
    std::os::unix::fs::symlink(&p, &link).expect("symlink");
    assert!(matches!(describe(&link), Err(PublishError::BadPackage(_))));
}

#[test]
fn release_rules_refuse_downgrades_and_other_bytes_and_skip_the_same_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pk = tmp.path().join("in");
    std::fs::create_dir(&pk).expect("mkdir");
    let repo = RepoDir::new(tmp.path().join("repo"));
    std::fs::create_dir(repo.root()).expect("mkdir");
    let a2 = fake_rpm(&pk, "a", None, "1.10", "1", "noarch", "one");
    let id1 = stage_ok(&repo, std::slice::from_ref(&a2), Policy::Release).expect("first");
    assert_eq!(repo.latest(), Some(id1.clone()));

    // The same bytes again: nothing new.
    assert!(repo
        .stage(std::slice::from_ref(&a2), Policy::Release)
        .expect("same")
        .is_none());
    // Other bytes under the same NEVRA.
    let other = fake_rpm(&pk, "a", None, "1.10", "1", "noarch", "other bytes");
    let e = repo
        .stage(&[other], Policy::Release)
        .err()
        .expect("refused");
    // The fix first (a forge shows the first 140 characters), and no path of this host.
    assert!(
        e.is_refusal()
            && e.to_string()
                .starts_with("raise Release: a-1.10-1.noarch is published with other contents\n"),
        "{e}"
    );
    assert!(!e.to_string().contains(&*pk.to_string_lossy()), "{e}");
    // A downgrade (1.9 < 1.10 for rpm, not for a string comparison).
    let old = fake_rpm(&pk, "a", None, "1.9", "1", "noarch", "old");
    let e = repo.stage(&[old], Policy::Release).err().expect("refused");
    assert!(
        e.to_string().starts_with(
            "raise Version or Release: a-1.9-1.noarch is lower than the published a-1.10-1.noarch\n"
        ),
        "{e}"
    );
    // Refusals publish nothing, not even the acceptable packages given with them.
    let b = fake_rpm(&pk, "b", None, "1", "1", "noarch", "b");
    let old = fake_rpm(&pk, "a", None, "1.9", "1", "noarch", "old");
    assert!(repo.stage(&[b.clone(), old], Policy::Release).is_err());
    assert_eq!(repo.snapshots(), std::slice::from_ref(&id1));

    // An upgrade and a new package make a snapshot holding old and new.
    let a3 = fake_rpm(&pk, "a", Some(0), "1.10", "2", "noarch", "three");
    let id2 = stage_ok(&repo, &[a3, b], Policy::Release).expect("second");
    let files: Vec<String> = repo
        .manifest(&id2)
        .expect("manifest")
        .packages
        .into_iter()
        .map(|e| e.file)
        .collect();
    assert_eq!(
        files,
        [
            "a-1.10-1.noarch.rpm",
            "a-1.10-2.noarch.rpm",
            "b-1-1.noarch.rpm"
        ]
    );
    // Hard links into the pool, the earlier snapshot unchanged.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(repo.snapshot_dir(&id2).join("a-1.10-1.noarch.rpm")).expect("meta");
    assert_eq!(m.nlink(), 3, "pool + two snapshots");
    assert_eq!(repo.manifest(&id1).expect("manifest").packages.len(), 1);
    assert_eq!(repo.latest(), Some(id2));
}

#[test]
fn change_policy_replaces_earlier_builds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pk = tmp.path().join("in");
    std::fs::create_dir(&pk).expect("mkdir");
    let repo = RepoDir::new(tmp.path().join("repo"));
    std::fs::create_dir(repo.root()).expect("mkdir");
    let first = fake_rpm(&pk, "a", None, "2", "1", "noarch", "first");
    stage_ok(&repo, &[first], Policy::Change).expect("first");
    let again = fake_rpm(&pk, "a", None, "1", "1", "noarch", "second push");
    let id = stage_ok(&repo, &[again], Policy::Change).expect("replaced");
    let m = repo.manifest(&id).expect("manifest");
    assert_eq!(m.packages.len(), 1);
    assert_eq!(m.packages[0].file, "a-1-1.noarch.rpm");
}

#[test]
fn prune_keeps_the_newest_the_protected_and_latest_and_frees_the_pool() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pk = tmp.path().join("in");
    std::fs::create_dir(&pk).expect("mkdir");
    let repo = RepoDir::new(tmp.path().join("repo"));
    std::fs::create_dir(repo.root()).expect("mkdir");
    let mut ids = vec![];
    for i in 1..=5 {
        let p = fake_rpm(&pk, &format!("p{i}"), None, "1", "1", "noarch", "x");
        ids.push(stage_ok(&repo, &[p], Policy::Change).expect("snapshot"));
    }
    // Change policy keeps only what the newest builds made: p1 is in every snapshot.
    let protected: BTreeSet<SnapshotId> = [ids[1].clone()].into();
    repo.prune(2, &protected);
    assert_eq!(
        repo.snapshots(),
        [ids[1].clone(), ids[3].clone(), ids[4].clone()]
    );
    assert!(
        std::fs::read_dir(repo.root().join("pool"))
            .expect("pool")
            .count()
            == 5
    );
    repo.prune(1, &BTreeSet::new());
    assert_eq!(repo.snapshots(), [ids[4].clone()]);
    let names: Vec<String> = repo
        .manifest(&ids[4])
        .expect("m")
        .packages
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["p1", "p2", "p3", "p4", "p5"]);

    // Packages no kept snapshot holds leave the pool.
    for v in ["2", "3"] {
        let p = fake_rpm(&pk, "p1", None, v, "1", "noarch", "newer");
        stage_ok(&repo, &[p], Policy::Change).expect("snapshot");
    }
    repo.prune(1, &BTreeSet::new());
    assert_eq!(
        std::fs::read_dir(repo.root().join("pool"))
            .expect("pool")
            .count(),
        5
    );
}

#[test]
fn snapshot_ids_sort_and_reject_other_names() {
    assert!(SnapshotId::parse("latest").is_none());
    assert!(SnapshotId::parse("..").is_none());
    assert!(SnapshotId::parse("12").is_none());
    let a = SnapshotId::parse("000009").expect("id");
    assert_eq!(a.after().as_str(), "000010");
    let named = snapshots_named(&[
        "/d/repos/r/t/000003".into(),
        "file:///d/repos/r/t/000004".into(),
    ]);
    assert_eq!(named[Path::new("/d/repos/r/t")].len(), 2);
}

#[test]
fn a_change_repository_is_keyed_by_forge_path_and_number() {
    use crate::model::ForgeKind;
    let data = Path::new("/srv/p");
    let on = |forge, path| RepoId::new(forge, path).expect("repo");
    let github = change_dir(data, &on(ForgeKind::GitHub, "o/r"), 7, "t").expect("dir");
    let gerrit = change_dir(data, &on(ForgeKind::Gerrit, "o/r"), 7, "t").expect("dir");
    assert_ne!(github, gerrit, "two forges share a change repository");
    assert_eq!(github, Path::new("/srv/p/repos/changes/github/o/r/7/t"));
    let deep = change_dir(data, &on(ForgeKind::Gerrit, "a/b/c"), 12345, "t").expect("dir");
    assert_eq!(deep, Path::new("/srv/p/repos/changes/gerrit/a/b/c/12345/t"));
    assert_eq!(
        change_dir(data, &on(ForgeKind::GitHub, "o/r"), 7, ".."),
        None
    );
}
