//! Inputs into a build container, without a shared disk: one tar archive, made on the
//! service host as it is sent and extracted at `/` through the Engine API after the
//! container is created and before it starts. It holds
//!
//! - the spec, at `SPEC_DIR/<name>.spec`;
//! - the source directory, at `SOURCE_DIR` (what `%_sourcedir` names);
//! - the files the backend generates (a Mock configuration), at `OUT_DIR/.packetary/`;
//! - an empty `OUT_DIR`, where the driver leaves its results.
//!
//! Only regular files and directories go in, under relative paths made of plain names. A
//! symbolic link in the package is followed only when it leads to a regular file inside
//! the package's root (it goes in as that file); any other link, and any special file, is
//! left out and named in `root.log`.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::backend::{OUT_DIR, SOURCE_DIR, SPEC_DIR};
use super::results::open_regular;
use crate::docker::{Engine, InfraError};
use crate::model::PackageSource;

/// Directory levels walked below the source directory.
const MAX_DEPTH: usize = 64;
/// Size of the chunks the archive is sent in.
const CHUNK: usize = 256 << 10;

/// Packs the package and the generated `files` and extracts them in the container,
/// streaming. Returns what was left out of the package, one line each, for `root.log`.
pub(crate) async fn upload(
    engine: &Engine,
    container: &str,
    package: &PackageSource,
    spec_name: &str,
    files: &[(String, String)],
) -> Result<Vec<String>, InfraError> {
    let (body, packing) = stream(package, spec_name, files);
    let sent = engine.upload(container, "/", body).await;
    let packed = packing
        .await
        .map_err(|e| InfraError(format!("packing the package's files: {e}")))?;
    match (sent, packed) {
        (Ok(()), Ok(left_out)) => Ok(left_out),
        // The daemon stopped reading: its answer says why.
        (Err(e), Err(p)) if p.kind() == io::ErrorKind::BrokenPipe => Err(e),
        (_, Err(p)) => Err(InfraError(format!("packing the package's files: {p}"))),
        (Err(e), Ok(_)) => Err(e),
    }
}

/// The input archive as a stream of chunks, packed on a blocking thread as it is read (for
/// the daemon's archive API, or a Swarm task's download); the handle answers what was left
/// out. A packing error ends the stream with that error: a truncated archive must not be
/// extracted as if whole.
pub(crate) fn stream(
    package: &PackageSource,
    spec_name: &str,
    files: &[(String, String)],
) -> (
    impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    tokio::task::JoinHandle<io::Result<Vec<String>>>,
) {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let (package, spec_name, files) = (package.clone(), spec_name.to_string(), files.to_vec());
    let packing = tokio::task::spawn_blocking(move || {
        let r = pack(
            ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            },
            &package,
            &spec_name,
            &files,
        );
        if let Err(e) = &r {
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        r
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (body, packing)
}

/// Writes the input archive into `w`. Returns what was left out of the package.
pub(crate) fn pack(
    w: impl Write,
    package: &PackageSource,
    spec_name: &str,
    files: &[(String, String)],
) -> io::Result<Vec<String>> {
    let mut left_out = Vec::new();
    let mut tar = tar::Builder::new(w);
    let top = |d: &str| d.trim_start_matches('/').to_string();
    for d in [SPEC_DIR, SOURCE_DIR, OUT_DIR] {
        dir(&mut tar, Path::new(&top(d)))?;
    }
    let spec_name = plain_name(spec_name)?;
    let (spec, meta) = open_regular(&package.spec)?;
    file(
        &mut tar,
        &Path::new(&top(SPEC_DIR)).join(spec_name),
        spec,
        &meta,
    )?;
    walk(
        &mut tar,
        package,
        &package.source_dir,
        &PathBuf::from(top(SOURCE_DIR)),
        &mut left_out,
    )?;
    if !files.is_empty() {
        let gen = Path::new(&top(OUT_DIR)).join(".packetary");
        dir(&mut tar, &gen)?;
        for (name, content) in files {
            let mut h = header(tar::EntryType::Regular, 0o644, content.len() as u64, 0);
            tar.append_data(&mut h, gen.join(plain_name(name)?), content.as_bytes())?;
        }
    }
    tar.into_inner()?.flush()?;
    Ok(left_out)
}

/// Adds the tree under `host` at `inside`, in name order.
fn walk(
    tar: &mut tar::Builder<impl Write>,
    package: &PackageSource,
    host: &Path,
    inside: &Path,
    left_out: &mut Vec<String>,
) -> io::Result<()> {
    let mut stack = vec![(host.to_path_buf(), inside.to_path_buf(), 0usize)];
    while let Some((host, inside, depth)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&host)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = vec![];
        for e in entries {
            let path = e.path();
            let name = e.file_name();
            let to = inside.join(&name);
            let shown = || {
                path.strip_prefix(&package.root)
                    .unwrap_or(&path)
                    .display()
                    .to_string()
            };
            // `file_type` does not follow a link.
            let ft = e.file_type()?;
            if ft.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    left_out.push(format!("{} (deeper than {MAX_DEPTH} levels)", shown()));
                } else {
                    dir(tar, &to)?;
                    subdirs.push((path, to, depth + 1));
                }
            } else if ft.is_file() {
                let (f, meta) = open_regular(&path)?;
                file(tar, &to, f, &meta)?;
            } else if ft.is_symlink() {
                match linked_file(package, &path) {
                    Some(real) => {
                        let (f, meta) = open_regular(&real)?;
                        file(tar, &to, f, &meta)?;
                    }
                    None => left_out.push(format!(
                        "{} (a symbolic link to something other than a file inside the package)",
                        shown()
                    )),
                }
            } else {
                left_out.push(format!("{} (not a regular file)", shown()));
            }
        }
        // Popped in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Where a link leads, when that is a regular file inside the package's root.
fn linked_file(package: &PackageSource, link: &Path) -> Option<PathBuf> {
    let real = link.canonicalize().ok()?;
    let meta = std::fs::symlink_metadata(&real).ok()?;
    (real.starts_with(&package.root) && meta.file_type().is_file()).then_some(real)
}

fn header(t: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn dir(tar: &mut tar::Builder<impl Write>, path: &Path) -> io::Result<()> {
    check(path)?;
    let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
    tar.append_data(&mut h, path, io::empty())
}

/// A regular file, readable by every user in the container, its mode bits otherwise kept
/// (a script stays executable) and its mtime kept (rpm records it).
fn file(
    tar: &mut tar::Builder<impl Write>,
    path: &Path,
    f: std::fs::File,
    meta: &std::fs::Metadata,
) -> io::Result<()> {
    check(path)?;
    let mode = (meta.permissions().mode() & 0o755) | 0o444;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut h = header(tar::EntryType::Regular, mode, meta.len(), mtime);
    // Exactly the size announced, even if the file grows meanwhile.
    tar.append_data(&mut h, path, f.take(meta.len()))
}

/// A path inside the archive: relative, plain names only.
fn check(path: &Path) -> io::Result<()> {
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    if plain && path.components().next().is_some() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a plain relative path", path.display()),
        ))
    }
}

/// A single file name, nothing else.
fn plain_name(name: &str) -> io::Result<&str> {
    let p = Path::new(name);
    if p.components().count() == 1 && matches!(p.components().next(), Some(Component::Normal(_))) {
        Ok(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ))
    }
}

/// A blocking writer that sends what it is given, in chunks, to an async task.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(root: &Path) -> PackageSource {
        let root = root.canonicalize().expect("canonical");
        PackageSource {
            spec: root.join("pkg/p.spec"),
            source_dir: root.join("pkg"),
            root,
        }
    }

    /// (path, kind, mode, content) of each entry.
    fn list(tar: &[u8]) -> Vec<(String, char, u32, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let path = e.path().expect("path").display().to_string();
                let kind = if e.header().entry_type().is_dir() {
                    'd'
                } else {
                    'f'
                };
                let mode = e.header().mode().expect("mode");
                let mut s = String::new();
                e.read_to_string(&mut s).expect("read");
                (path, kind, mode, s)
            })
            .collect()
    }

    #[test]
    fn spec_sources_generated_files_and_out() {
        let tmp = tempfile::tempdir().expect("tmp");
        let w = tmp.path();
        std::fs::create_dir_all(w.join("pkg/sub")).expect("mkdir");
        std::fs::write(w.join("pkg/p.spec"), "Name: p").expect("write");
        std::fs::write(w.join("pkg/sub/a.patch"), "patch").expect("write");
        std::fs::write(w.join("pkg/run.sh"), "#!/bin/sh").expect("write");
        std::fs::set_permissions(w.join("pkg/run.sh"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::fs::write(w.join("common.txt"), "shared").expect("write");
        std::os::unix::fs::symlink("../common.txt", w.join("pkg/common.txt")).expect("link");
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("secret"), "secret").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), w.join("pkg/leak"))
            .expect("link");
        std::os::unix::fs::symlink("sub", w.join("pkg/dirlink")).expect("link");
        let mut tar = Vec::new();
        let left = pack(
            &mut tar,
            &package(w),
            "p.spec",
            &[("packetary.cfg".into(), "cfg".into())],
        )
        .expect("packs");
        assert_eq!(
            left,
            [
                "pkg/dirlink (a symbolic link to something other than a file inside the package)",
                "pkg/leak (a symbolic link to something other than a file inside the package)",
            ]
        );
        let entries = list(&tar);
        let want: Vec<(String, char, u32, String)> = [
            ("spec", 'd', 0o755, ""),
            ("src", 'd', 0o755, ""),
            ("out", 'd', 0o755, ""),
            ("spec/p.spec", 'f', 0o644, "Name: p"),
            ("src/common.txt", 'f', 0o644, "shared"),
            ("src/p.spec", 'f', 0o644, "Name: p"),
            ("src/run.sh", 'f', 0o744, "#!/bin/sh"),
            ("src/sub", 'd', 0o755, ""),
            ("src/sub/a.patch", 'f', 0o644, "patch"),
            ("out/.packetary", 'd', 0o755, ""),
            ("out/.packetary/packetary.cfg", 'f', 0o644, "cfg"),
        ]
        .into_iter()
        .map(|(p, k, m, c)| (p.to_string(), k, m, c.to_string()))
        .collect();
        assert_eq!(entries, want);
        assert!(!String::from_utf8_lossy(&tar).contains("secret"));
    }

    #[test]
    fn generated_names_must_be_plain() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join("pkg")).expect("mkdir");
        std::fs::write(tmp.path().join("pkg/p.spec"), "x").expect("write");
        for bad in ["../x", "/etc/x", "a/b", ".."] {
            let r = pack(
                Vec::new(),
                &package(tmp.path()),
                "p.spec",
                &[(bad.into(), "x".into())],
            );
            assert!(r.is_err(), "{bad} accepted");
        }
        assert!(pack(Vec::new(), &package(tmp.path()), "../p.spec", &[]).is_err());
    }
}
