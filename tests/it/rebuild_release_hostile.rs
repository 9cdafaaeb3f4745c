//! Issue 22, M5: `rebuild --release` unpacks published SRPMs it cannot trust. Crafted for
//! real (rpmbuild's header, our own cpio payload): a setuid file, a block device, a FIFO
//! and a spec that is a symbolic link to a file of the host. None of them may appear on
//! the host, the host file's contents never show, the symlinked spec is refused by name,
//! and the other packages still build.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::common;

use common::*;

const T: &str = "bookworm-rpmbuild";
const IMAGE: &str = "packetary/rpmbuild:bookworm";
const SECRET: &str = "PACKETARY-HOST-SECRET-first-line-m5";
const NAMES: [&str; 4] = ["suid", "dev", "fifo", "link"];

/// Makes `<name>-1-1.src.rpm` for each of [`NAMES`] in `dir/pub`: rpmbuild's SRPM of a
/// trivial spec with its payload replaced by a cpio archive made as root in a container
/// (so that it can hold a device), its payload size set to match (rpm2cpio checks it).
fn craft(dir: &Path, secret: &Path) {
    let script = r#"set -eu
cd /w
for n in suid dev fifo link; do
  printf 'Name: %s\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n%%description\nt\n%%install\nmkdir -p %%{buildroot}/usr/share/%s\necho %s > %%{buildroot}/usr/share/%s/f\n%%files\n/usr/share/%s/f\n' $n $n $n $n $n > $n.spec
  rpmbuild -bs --define "_topdir /w/top" --define "_sourcedir /w" --define "_srcrpmdir /w/base" \
    --define "_source_payload w9.gzdio" $n.spec >/dev/null
  mkdir -p tree/$n && cp $n.spec tree/$n/
done
printf '#!/bin/sh\necho hi\n' > tree/suid/tool && chmod 4755 tree/suid/tool
mknod tree/dev/blk b 7 0 && chmod 666 tree/dev/blk
mkfifo tree/fifo/pipe && chmod 666 tree/fifo/pipe
rm tree/link/link.spec && ln -s "$SECRET" tree/link/link.spec
for n in suid dev fifo link; do
  (cd tree/$n && find . -mindepth 1 | cpio -o -H newc --quiet) > cpio-$n
  wc -c < cpio-$n > size-$n
  gzip -9 -c cpio-$n > payload-$n
done
chmod -R a+rwX /w
"#;
    let w = dir.join("craft");
    std::fs::create_dir_all(&w).expect("mkdir");
    let out = Command::new("docker")
        .args(["run", "--rm", "-v"])
        .arg(format!("{}:/w", w.display()))
        .arg("-e")
        .arg(format!("SECRET={}", secret.display()))
        .args([IMAGE, "bash", "-c", script])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "crafting failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let publish = dir.join("pub");
    std::fs::create_dir_all(&publish).expect("mkdir");
    for n in NAMES {
        let base = std::fs::read(w.join(format!("base/{n}-1-1.src.rpm"))).expect("base srpm");
        let size: u32 = std::fs::read_to_string(w.join(format!("size-{n}")))
            .expect("size")
            .trim()
            .parse()
            .expect("number");
        let payload = std::fs::read(w.join(format!("payload-{n}"))).expect("payload");
        std::fs::write(
            publish.join(format!("{n}-1-1.src.rpm")),
            with_payload(base, size, &payload),
        )
        .expect("write srpm");
    }
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// `srpm` with its payload replaced: lead (96 bytes), signature header (padded to 8,
/// its PAYLOADSIZE tag 1007 set to `size`), header, then `payload`.
fn with_payload(mut srpm: Vec<u8>, size: u32, payload: &[u8]) -> Vec<u8> {
    let sig = 96;
    let (il, dl) = (be32(&srpm, sig + 8), be32(&srpm, sig + 12));
    let store = sig + 16 + 16 * il;
    for i in 0..il {
        let e = sig + 16 + 16 * i;
        if be32(&srpm, e) == 1007 {
            let at = store + be32(&srpm, e + 8);
            srpm[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
    }
    let hdr = (store + dl).div_ceil(8) * 8;
    let (il, dl) = (be32(&srpm, hdr + 8), be32(&srpm, hdr + 12));
    srpm.truncate(hdr + 16 + 16 * il + dl);
    srpm.extend_from_slice(payload);
    srpm
}

/// Everything under `root` that is not a regular file or directory, or carries a
/// setuid/setgid/sticky bit, as `path (why)`.
fn hostile_entries(root: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = m.file_type();
        let why = if ft.is_symlink() {
            Some("symlink")
        } else if ft.is_block_device() || ft.is_char_device() {
            Some("device")
        } else if ft.is_fifo() || ft.is_socket() {
            Some("fifo/socket")
        } else if ft.is_file() && m.mode() & 0o7000 != 0 {
            Some("setuid/setgid")
        } else {
            None
        };
        if let Some(why) = why {
            found.push(format!("{} ({why})", p.display()));
        }
        if ft.is_dir() {
            hostile_entries(&p, found);
        }
    }
}

#[test]
fn crafted_srpms_leave_nothing_hostile_on_the_host() {
    if !docker_available() {
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let root = t.path().to_path_buf();
    let secret = root.join("secret.txt");
    write(&secret, &format!("{SECRET}\nsecond line\n"));
    craft(&root, &secret);
    let cfg = root.join("packetary.toml");
    write(
        &cfg,
        &format!("[releases.stable]\nbranches = [\"main\"]\ntargets = [\"{T}\"]\n"),
    );
    let cfg = cfg.to_str().expect("utf-8");
    let published = packetary(
        &[
            "--config",
            cfg,
            "publish",
            "stable",
            T,
            "pub",
            "--data-dir",
            "data",
        ],
        &root,
    );
    assert_eq!(published.code, 0, "{}", published.all());

    // The rebuild's work directory is under TMPDIR: watched while it runs.
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let (stop, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let watcher = {
        let (stop, seen, tmp) = (stop.clone(), seen.clone(), tmp.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut found = Vec::new();
                hostile_entries(&tmp, &mut found);
                let mut seen = seen.lock().expect("lock");
                for f in found {
                    if !seen.contains(&f) {
                        seen.push(f);
                    }
                }
                drop(seen);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let out = Command::new(bin())
        .args(["--config", cfg, "rebuild", "--release", "stable"])
        .args(["--data-dir", "data"])
        .current_dir(&root)
        .env_remove("PACKETARY_CONFIG")
        .env("TMPDIR", &tmp)
        .output()
        .expect("run packetary");
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("{}", r.all());
    let seen: Vec<String> = seen.lock().expect("lock").clone();
    assert!(seen.is_empty(), "on the host: {seen:?}\n{}", r.all());
    assert!(
        !r.all().contains(SECRET),
        "the host file showed: {}",
        r.all()
    );

    let line = |name: &str| -> String {
        r.stdout
            .lines()
            .filter(|l| l.contains(&format!("{name}-1-1.src.rpm")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        line("link").contains(
            "no longer builds: its spec link.spec is a symbolic link, not a regular file"
        ),
        "{}",
        r.all()
    );
    assert!(
        line("dev").contains("no longer builds: cannot unpack it"),
        "{}",
        r.all()
    );
    assert!(line("fifo").contains("pipe (a FIFO)"), "{}", r.all());
    // The setuid file came out as a plain file and the package built from it.
    for built in ["suid", "fifo"] {
        assert!(
            line(built).contains(&format!("{built}-1-1.noarch.rpm (new in the rebuild")),
            "{built}: {}",
            r.all()
        );
    }
    assert_eq!(r.code, 1, "{}", r.all());
}
