//! The checked tar: what a build's results may hold, and what is refused.

use super::*;

/// A tar as Docker makes it of `/out`: GNU headers, entries named `out/...`.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        let mut t = Tar(tar::Builder::new(Vec::new()));
        t.entry("out/", tar::EntryType::Directory, b"", None);
        t
    }

    fn entry(&mut self, path: &str, t: tar::EntryType, data: &[u8], link: Option<&str>) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).expect("link name");
        }
        // Raw names: set_path refuses `..`, and these tests need the hostile ones.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).expect("append");
    }

    fn file(&mut self, path: &str, data: &[u8]) -> &mut Tar {
        self.entry(path, tar::EntryType::Regular, data, None);
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().expect("tar")
    }
}

fn unpack_into(tar: Vec<u8>, limits: Limits) -> (Result<Taken, FetchError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    (unpack(&tar[..], "out", dir.path(), limits), dir)
}

#[test]
fn takes_results_and_reads_the_nevr() {
    let mut t = Tar::new();
    t.file("out/a-1-1.src.rpm", b"srpm")
        .file("out/a-1-1.noarch.rpm", b"rpm")
        .file("out/.nevr", b"a\t(none)\t1\t1\nreq\n")
        .file("out/.packetary/srpm/build.log", b"mock log")
        .file("out/notes.txt", b"x");
    t.entry("out/.packetary/", tar::EntryType::Directory, b"", None);
    let (r, dir) = unpack_into(t.bytes(), LIMITS);
    let taken = r.expect("unpacks");
    assert_eq!(taken.files, ["a-1-1.src.rpm", "a-1-1.noarch.rpm"]);
    assert_eq!(taken.nevr.as_deref(), Some("a\t(none)\t1\t1\nreq\n"));
    assert!(
        taken.refused.is_empty() && taken.ignored.is_empty(),
        "{taken:?}"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a-1-1.noarch.rpm", "a-1-1.src.rpm"]);
    assert_eq!(
        std::fs::read(dir.path().join("a-1-1.noarch.rpm")).expect("rpm"),
        b"rpm"
    );
}

#[test]
fn mock_logs_are_taken_by_name_only() {
    let mut t = Tar::new();
    t.file("out/a-1-1.src.rpm", b"srpm")
        .file("out/.packetary/logs/build/build.log", b"rpmbuild said")
        .file("out/.packetary/logs/srpm/root.log", b"dnf said")
        .file("out/.packetary/logs/build/notes.txt", b"not a Mock log")
        .file("out/.packetary/logs/other/build.log", b"not a phase")
        .file("out/.packetary/logs/build/x/build.log", b"too deep");
    t.entry(
        "out/.packetary/logs/build/state.log",
        tar::EntryType::Symlink,
        b"",
        Some("/etc/shadow"),
    );
    let (r, dir) = unpack_into(t.bytes(), LIMITS);
    let taken = r.expect("unpacks");
    assert_eq!(
        taken.logs,
        [
            PathBuf::from("logs/mock/build/build.log"),
            PathBuf::from("logs/mock/srpm/root.log")
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("logs/mock/build/build.log")).expect("log"),
        "rpmbuild said"
    );
    assert!(!dir.path().join("logs/mock/build/state.log").exists());
    assert!(!dir.path().join("logs/mock/build/notes.txt").exists());
    assert_eq!(
        taken.ignored,
        ["/out/.packetary/logs/build/state.log (a symbolic link)"]
    );
}

#[test]
fn links_and_special_files_are_never_written() {
    let mut t = Tar::new();
    t.file("out/ok-1-1.noarch.rpm", b"rpm");
    t.entry(
        "out/evil-1-1.noarch.rpm",
        tar::EntryType::Symlink,
        b"",
        Some("/etc/shadow"),
    );
    t.entry(
        "out/hard-1-1.noarch.rpm",
        tar::EntryType::Link,
        b"",
        Some("out/ok-1-1.noarch.rpm"),
    );
    t.entry("out/fifo-1-1.noarch.rpm", tar::EntryType::Fifo, b"", None);
    t.entry("out/dev-1-1.noarch.rpm", tar::EntryType::Char, b"", None);
    t.entry(
        "out/.nevr",
        tar::EntryType::Symlink,
        b"",
        Some("/etc/hostname"),
    );
    t.entry("out/logs", tar::EntryType::Symlink, b"", Some("/etc"));
    t.entry(
        "out/logs2/build.log",
        tar::EntryType::Symlink,
        b"",
        Some("/etc/passwd"),
    );
    let (r, dir) = unpack_into(t.bytes(), LIMITS);
    let taken = r.expect("unpacks");
    assert_eq!(taken.files, ["ok-1-1.noarch.rpm"]);
    assert_eq!(taken.nevr, None);
    assert_eq!(
        taken.refused,
        [
            "evil-1-1.noarch.rpm (a symbolic link)",
            "hard-1-1.noarch.rpm (a hard link)",
            "fifo-1-1.noarch.rpm (a FIFO)",
            "dev-1-1.noarch.rpm (a character device)",
            ".nevr (a symbolic link)",
        ]
    );
    assert_eq!(
        taken.ignored,
        [
            "/out/logs (a symbolic link)",
            "/out/logs2/build.log (a symbolic link)"
        ]
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].file_type().expect("type").is_file());
}

#[test]
fn paths_outside_out_are_ignored() {
    let mut t = Tar::new();
    t.file("out/../x-1-1.noarch.rpm", b"up")
        .file("/abs-1-1.noarch.rpm", b"abs")
        .file("other/y-1-1.noarch.rpm", b"elsewhere")
        .file("out/./z-1-1.noarch.rpm", b"z");
    let (r, dir) = unpack_into(t.bytes(), LIMITS);
    let taken = r.expect("unpacks");
    assert_eq!(taken.files, ["z-1-1.noarch.rpm"]);
    assert_eq!(taken.ignored.len(), 3, "{taken:?}");
    assert!(!dir
        .path()
        .parent()
        .expect("parent")
        .join("x-1-1.noarch.rpm")
        .exists());
}

#[test]
fn out_itself_must_be_a_directory() {
    let mut b = Tar(tar::Builder::new(Vec::new()));
    b.entry("out", tar::EntryType::Symlink, b"", Some("/"));
    let (r, _dir) = unpack_into(b.bytes(), LIMITS);
    assert_eq!(r.expect("unpacks").refused, ["/out (a symbolic link)"]);
}

#[test]
fn limits_stop_the_unpacking() {
    let mut t = Tar::new();
    t.file("out/a.rpm", &[0; 600]).file("out/b.rpm", &[0; 600]);
    let tar = t.bytes();
    let small = Limits {
        bytes: 1000,
        entries: 100,
    };
    let (r, _d) = unpack_into(tar.clone(), small);
    assert_eq!(
        r,
        Err(FetchError::TooBig(
            "the build left more than 1000 bytes in /out".into()
        ))
    );
    let few = Limits {
        bytes: 1 << 20,
        entries: 2,
    };
    let (r, _d) = unpack_into(tar, few);
    assert_eq!(
        r,
        Err(FetchError::TooBig(
            "the build left more than 2 entries in /out".into()
        ))
    );
}

#[test]
fn an_earlier_file_or_link_at_the_destination_is_replaced_not_followed() {
    let dir = tempfile::tempdir().expect("tmp");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").expect("write");
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    std::os::unix::fs::symlink(&victim, dest.join("a-1-1.noarch.rpm")).expect("symlink");
    let mut t = Tar::new();
    t.file("out/a-1-1.noarch.rpm", b"new");
    let taken = unpack(&t.bytes()[..], "out", &dest, LIMITS).expect("unpacks");
    assert_eq!(taken.files, ["a-1-1.noarch.rpm"]);
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
    let m = std::fs::symlink_metadata(dest.join("a-1-1.noarch.rpm")).expect("meta");
    assert!(m.file_type().is_file());
}

#[test]
fn open_regular_refuses_links() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("f");
    std::fs::write(&f, "x").expect("write");
    let l = dir.path().join("l");
    std::os::unix::fs::symlink(&f, &l).expect("symlink");
    assert!(open_regular(&f).is_ok());
    assert!(open_regular(&l).is_err());
    assert!(open_regular(dir.path()).is_err());
}

/// `rebuild --release`'s unpacked SRPM: every regular file comes out with a safe mode,
/// links, devices and FIFOs are named and never written, paths out of the tree ignored.
#[test]
fn a_tree_keeps_regular_files_only_with_safe_modes() {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, t: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        if let Some(l) = link {
            h.set_link_name(l).expect("link name");
        }
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    add("unpack/", tar::EntryType::Directory, 0o755, b"", None);
    add(
        "unpack/a.spec",
        tar::EntryType::Regular,
        0o644,
        b"spec",
        None,
    );
    add("unpack/suid", tar::EntryType::Regular, 0o4755, b"x", None);
    add("unpack/d/", tar::EntryType::Directory, 0o777, b"", None);
    add("unpack/d/f.tar", tar::EntryType::Regular, 0o666, b"t", None);
    add(
        "unpack/b.spec",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("/etc/x"),
    );
    add(
        "unpack/hl",
        tar::EntryType::Link,
        0o644,
        b"",
        Some("unpack/a.spec"),
    );
    add("unpack/blk", tar::EntryType::Block, 0o666, b"", None);
    add("unpack/fifo", tar::EntryType::Fifo, 0o666, b"", None);
    add(
        "unpack/../escape",
        tar::EntryType::Regular,
        0o644,
        b"e",
        None,
    );
    add("/abs", tar::EntryType::Regular, 0o644, b"e", None);
    let tar = b.into_inner().expect("tar");
    let dir = tempfile::tempdir().expect("tmp");
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    let taken = unpack_tree(&tar[..], "unpack", &dest, LIMITS).expect("unpacks");
    assert_eq!(taken.files, ["a.spec", "suid", "d/f.tar"]);
    let kinds: Vec<(String, &str)> = taken
        .not_regular
        .iter()
        .map(|(p, k)| (p.display().to_string(), *k))
        .collect();
    assert_eq!(
        kinds,
        [
            ("b.spec".to_string(), "a symbolic link"),
            ("hl".to_string(), "a hard link"),
            ("blk".to_string(), "a block device"),
            ("fifo".to_string(), "a FIFO"),
        ]
    );
    assert_eq!(taken.ignored.len(), 2, "{taken:?}");
    for f in ["a.spec", "suid", "d/f.tar"] {
        let m = std::fs::symlink_metadata(dest.join(f)).expect("meta");
        assert!(m.file_type().is_file());
        assert_eq!(m.mode() & 0o7777, 0o644, "{f}");
    }
    for f in ["b.spec", "hl", "blk", "fifo"] {
        assert!(std::fs::symlink_metadata(dest.join(f)).is_err(), "{f}");
    }
    assert!(!dir.path().join("escape").exists());
}

/// With a change's disk allowance, a file that would pass what is left is not written,
/// and the results already written are removed: nothing of the build stays.
#[test]
fn results_past_the_allowance_are_not_written() {
    let mut t = Tar::new();
    t.file("out/a.src.rpm", &[0; 600])
        .file("out/notes.txt", &[0; 5000])
        .file("out/b.noarch.rpm", &[0; 600]);
    let tar = t.bytes();
    let dir = tempfile::tempdir().expect("tmp");
    // 1400 bytes used of 2600: 1200 left, the two packages fit (the notes are not written).
    let fits = DiskAllowance {
        used: 1400,
        quota: 2600,
    };
    let taken = unpack_within(&tar[..], "out", dir.path(), fits).expect("fits");
    assert_eq!(taken.files, ["a.src.rpm", "b.noarch.rpm"]);
    let dir = tempfile::tempdir().expect("tmp");
    let short = DiskAllowance {
        used: 1401,
        quota: 2600,
    };
    let r = unpack_within(&tar[..], "out", dir.path(), short);
    assert_eq!(r, Err(FetchError::TooBig(short.refusal(None))));
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "a written result stayed"
    );
}

/// The quota's refusal fits a GitHub status (140 characters) even after the executor's
/// "collect phase failed: ", and says the fix.
#[test]
fn the_quota_refusal_fits_a_status() {
    let a = DiskAllowance {
        used: 2 << 30,
        quota: 10 << 30,
    };
    assert_eq!(
        a.refusal(Some((21 << 30) / 2)),
        "change over its disk quota (10.5 GiB of 10 GiB): fix: smaller packages, or an admin raises [server] change_disk_quota"
    );
    let prefixed = format!("collect phase failed: {}", a.refusal(None));
    assert!(prefixed.len() <= 140, "{} long", prefixed.len());
    assert_eq!(size_text(900), "900 bytes");
    assert_eq!(size_text(2 << 30), "2 GiB");
    assert_eq!(size_text(3 << 19), "1.5 MiB");
}

/// Mock's logs come out with the credentials of repository URLs redacted (its root.log
/// quotes the URLs dnf could not reach).
#[test]
fn backend_logs_are_taken_with_urls_redacted() {
    let mut t = Tar::new();
    let log = b"DEBUG util.py:460: - Curl error (7): for http://user:s3cret@127.0.0.1:9/x/repodata/repomd.xml\nnext line\n";
    t.file("out/.packetary/logs/srpm/root.log", log);
    let (r, dir) = unpack_into(t.bytes(), LIMITS);
    r.expect("unpacks");
    let got = std::fs::read_to_string(dir.path().join("logs/mock/srpm/root.log")).expect("log");
    assert_eq!(
        got,
        "DEBUG util.py:460: - Curl error (7): for http://***@127.0.0.1:9/x/repodata/repomd.xml\nnext line\n"
    );
}
