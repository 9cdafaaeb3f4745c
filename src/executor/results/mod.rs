//! Results out of a build container. The container never sees a directory of the service
//! host: the driver writes into `/out`, local to the container, and once it has ended the
//! executor downloads `/out` through the Engine API as a tar and unpacks it here entry by
//! entry, trusting nothing the container made:
//!
//! - only regular files are written, and only the results: SRPM and RPMs directly in
//!   `/out`, and the backend tool's own logs under `/out/.packetary/logs/<phase>/` (Mock's
//!   `build.log`, `root.log`, ... by name, see [`backend_log`]) into `logs/mock/<phase>/`;
//!   the NEVR file is read into memory, never written;
//! - symbolic links, hard links, devices, FIFOs and anything else are never written nor
//!   followed; named like a result they are *refused* (the build fails), elsewhere
//!   *ignored* (noted in `root.log`);
//! - paths must be relative, inside `/out`, without `..`: anything else is ignored;
//! - every entry counts against [`MAX_RESULT_ENTRIES`] and its bytes against
//!   [`MAX_RESULT_BYTES`], skipped ones too (they cross the wire all the same);
//! - with a [`DiskAllowance`] (what the build's change may still write to this host), the
//!   files written count against it too, checked from each entry's header before a byte
//!   of it is written;
//! - files are created afresh (`O_CREAT|O_EXCL`, which never follows a link) in a
//!   directory only the service writes.
//!
//! [`fetch_tree`] takes a whole directory out the same way (`rebuild --release` unpacks
//! an SRPM in a container with it): every regular file under it, with its relative path,
//! and nothing else; every other entry is named in [`Taken::not_regular`], never written.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::backend::{MOCK_LOGS, NEVR_FILE, OUT_DIR};
use crate::docker::Engine;
use crate::format::Format;

/// Most bytes a build may leave in `/out`, all entries counted.
pub const MAX_RESULT_BYTES: u64 = 32 << 30;
/// Most entries (files, directories, anything) a build may leave in `/out`.
pub const MAX_RESULT_ENTRIES: u64 = 100_000;
/// The NEVR file holds the NEVR and the BuildRequires: a few lines.
const MAX_NEVR_BYTES: u64 = 1 << 20;
/// Notes kept per kind, so that a tree of ten thousand links makes a short log.
const MAX_NOTES: usize = 20;

/// Caps on what a build (or any container) may leave.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bytes: u64,
    pub entries: u64,
}

pub(crate) const LIMITS: Limits = Limits {
    bytes: MAX_RESULT_BYTES,
    entries: MAX_RESULT_ENTRIES,
};

/// What a build may still write to the service's disk: its change's quota (`[server]
/// change_disk_quota`) less what the change's earlier results hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskAllowance {
    pub used: u64,
    pub quota: u64,
}

impl DiskAllowance {
    /// Bytes left before the quota.
    pub fn left(&self) -> u64 {
        self.quota.saturating_sub(self.used)
    }

    /// The build's failure when its change would hold `total` bytes (`None`: more than the
    /// quota, how much more not known): one line that fits a commit status, with the fix.
    pub fn refusal(&self, total: Option<u64>) -> String {
        let size = match total {
            Some(t) => format!("{} of {}", size_text(t), size_text(self.quota)),
            None => format!("more than {}", size_text(self.quota)),
        };
        format!("change over its disk quota ({size}): fix: smaller packages, or an admin raises [server] change_disk_quota")
    }
}

/// A size for people: "2.1 GiB", "512 MiB", "900 bytes".
pub fn size_text(n: u64) -> String {
    let units = [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    match units.iter().find(|(u, _)| n >= *u) {
        Some((u, name)) => {
            let v = format!("{:.1}", n as f64 / *u as f64);
            format!("{} {name}", v.strip_suffix(".0").unwrap_or(&v))
        }
        None => format!("{n} bytes"),
    }
}

/// What came out of a build's `/out` (or of a directory, with [`fetch_tree`]).
#[derive(Debug, Default, PartialEq)]
pub struct Taken {
    /// Result files written into the destination, by name: the SRPM and the RPMs; for
    /// [`fetch_tree`], every regular file, by its path relative to the destination.
    pub files: Vec<String>,
    /// The backend tool's logs written into the destination, by relative path.
    pub logs: Vec<PathBuf>,
    /// The NEVR file's text (first line: the SRPM's NEVR), kept in memory.
    pub nevr: Option<String>,
    /// Entries named like results that were not regular files, as `name (kind)`.
    pub refused: Vec<String>,
    /// Other entries that were not written: special files, paths outside `/out`.
    pub ignored: Vec<String>,
    /// How many ignored entries [`Taken::ignored`] leaves out.
    pub more_ignored: usize,
    /// For [`fetch_tree`]: the entries that were not regular files nor directories (links,
    /// devices, FIFOs), by relative path, with their kind in words. Never written.
    pub not_regular: Vec<(PathBuf, &'static str)>,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// Docker, the archive or the host's disk failed: not the package's doing.
    #[error("{0}")]
    Infra(String),
    /// The build left more than the limits allow.
    #[error("{0}")]
    TooBig(String),
}

/// What [`unpack_into`] keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Select {
    /// A build's results and its backend's logs (the module documentation), within what
    /// its change may still write.
    Results(Option<DiskAllowance>),
    /// Every regular file, by relative path.
    Tree,
}

/// Downloads the container's `/out` and unpacks its results into `dest` (which must exist
/// and be the service's own directory), streaming: no copy of the archive is kept.
/// With `allowance`, no more than it is written.
pub(crate) async fn fetch(
    engine: &Engine,
    container: &str,
    dest: PathBuf,
    allowance: Option<DiskAllowance>,
) -> Result<Taken, FetchError> {
    let select = Select::Results(allowance);
    download(engine, container, OUT_DIR, dest, LIMITS, select).await
}

/// Downloads the directory `dir` of a stopped container and writes every regular file of
/// it into `dest` (which must exist, be empty and be the caller's own directory) under
/// the checks of the module documentation: nothing else is written, no link is followed,
/// every file gets mode 0644. On an error, the files already written are removed again.
pub async fn fetch_tree(
    engine: &Engine,
    container: &str,
    dir: &str,
    dest: PathBuf,
    limits: Limits,
) -> Result<Taken, FetchError> {
    download(engine, container, dir, dest, limits, Select::Tree).await
}

async fn download(
    engine: &Engine,
    container: &str,
    dir: &str,
    dest: PathBuf,
    limits: Limits,
    select: Select,
) -> Result<Taken, FetchError> {
    let stream = engine
        .download(container, dir)
        .map(|c| c.map_err(|e| io::Error::other(e.0)));
    unpack_stream(stream, root_name(dir), dest, limits, select).await
}

/// Unpacks a build's `/out` as a tar archive arriving in `stream` (a Swarm job's upload:
/// `tar -C / -c out`) into `dest` under the same checks as [`fetch`]. A stream that fails
/// or ends before the archive does is an error, never a partial result.
pub(crate) async fn unpack_upload(
    stream: impl futures_util::Stream<Item = io::Result<Bytes>> + Unpin,
    dest: PathBuf,
    allowance: Option<DiskAllowance>,
) -> Result<Taken, FetchError> {
    unpack_stream(
        stream,
        root_name(OUT_DIR),
        dest,
        LIMITS,
        Select::Results(allowance),
    )
    .await
}

async fn unpack_stream(
    mut stream: impl futures_util::Stream<Item = io::Result<Bytes>> + Unpin,
    root: &str,
    dest: PathBuf,
    limits: Limits,
    select: Select,
) -> Result<Taken, FetchError> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let root = root.to_string();
    let unpacking = tokio::task::spawn_blocking(move || {
        unpack_selected(ChannelReader::new(rx), &root, &dest, limits, select)
    });
    while let Some(chunk) = stream.next().await {
        let failed = chunk.is_err();
        // A send fails once the unpacker has stopped (end of archive, or a limit).
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    unpacking
        .await
        .map_err(|e| FetchError::Infra(format!("unpacking the results: {e}")))?
}

fn root_name(dir: &str) -> &str {
    dir.rsplit('/').next().unwrap_or(dir)
}

/// Whether a file directly in `/out` is one of the build's results.
fn is_result(name: &str) -> bool {
    name == NEVR_FILE || Format::of_file(Path::new(name)).is_some()
}

/// Where a log the backend's tool left at `rel` (relative to `/out`) goes, relative to
/// the destination: `.packetary/logs/<srpm|build>/<name>` with `name` one of Mock's logs
/// becomes `logs/mock/<phase>/<name>`. `None` for anything else.
fn backend_log(rel: &Path) -> Option<PathBuf> {
    let under = Path::new(MOCK_LOGS).strip_prefix(OUT_DIR).ok()?;
    let rest = rel
        .strip_prefix(under.strip_prefix("/").unwrap_or(under))
        .ok()?;
    let mut parts = rest.components();
    let (Some(Component::Normal(phase)), Some(Component::Normal(name)), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let phase = phase.to_str().filter(|p| ["srpm", "build"].contains(p))?;
    let name = name
        .to_str()
        .filter(|n| super::backend::MOCK_LOG_NAMES.contains(n))?;
    Some(Path::new("logs/mock").join(phase).join(name))
}

/// What a tar entry is, in words.
fn kind(t: tar::EntryType) -> &'static str {
    match t {
        t if t.is_file() => "a regular file",
        t if t.is_dir() => "a directory",
        t if t.is_symlink() => "a symbolic link",
        t if t.is_hard_link() => "a hard link",
        t if t.is_character_special() => "a character device",
        t if t.is_block_special() => "a block device",
        t if t.is_fifo() => "a FIFO",
        _ => "a special entry",
    }
}

/// `path` relative to the archive's root `root`, when it is inside it and has only plain
/// components; `None` for anything absolute, with `..`, or elsewhere.
fn inside(path: &Path, root: &str) -> Option<PathBuf> {
    let mut parts = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    match parts.next() {
        Some(Component::Normal(first)) if first == root => {}
        _ => return None,
    }
    let mut rel = PathBuf::new();
    for c in parts {
        match c {
            Component::Normal(p) => rel.push(p),
            _ => return None,
        }
    }
    Some(rel)
}

/// Unpacks the results of the tar of a build's `/out` (its entries named `root/...`) into
/// `dest`, checking every entry as described in the module documentation.
/// On an error, the files already written are removed again.
#[cfg(test)]
pub(crate) fn unpack(
    tar: impl Read,
    root: &str,
    dest: &Path,
    limits: Limits,
) -> Result<Taken, FetchError> {
    unpack_selected(tar, root, dest, limits, Select::Results(None))
}

/// [`unpack`] within a change's disk allowance.
#[cfg(test)]
pub(crate) fn unpack_within(
    tar: impl Read,
    root: &str,
    dest: &Path,
    allowance: DiskAllowance,
) -> Result<Taken, FetchError> {
    unpack_selected(tar, root, dest, LIMITS, Select::Results(Some(allowance)))
}

/// [`unpack`] for a whole tree: what [`fetch_tree`] does with the archive.
#[cfg(test)]
pub(crate) fn unpack_tree(
    tar: impl Read,
    root: &str,
    dest: &Path,
    limits: Limits,
) -> Result<Taken, FetchError> {
    unpack_selected(tar, root, dest, limits, Select::Tree)
}

fn unpack_selected(
    tar: impl Read,
    root: &str,
    dest: &Path,
    limits: Limits,
    select: Select,
) -> Result<Taken, FetchError> {
    let mut taken = Taken::default();
    let r = unpack_into(tar, root, dest, limits, select, &mut taken);
    if r.is_err() {
        for f in &taken.files {
            let _ = std::fs::remove_file(dest.join(f));
        }
        for f in &taken.logs {
            let _ = std::fs::remove_file(dest.join(f));
        }
    }
    r.map(|()| taken)
}

fn unpack_into(
    tar: impl Read,
    root: &str,
    dest: &Path,
    limits: Limits,
    select: Select,
    taken: &mut Taken,
) -> Result<(), FetchError> {
    let (who, dir, allowance) = match select {
        Select::Results(a) => ("the build", OUT_DIR.to_string(), a),
        Select::Tree => ("the container", root.to_string(), None),
    };
    // Bytes written to this host so far: checked against the allowance before each file.
    let mut written = 0u64;
    let mut room = |size: u64| match allowance {
        Some(a) if written.saturating_add(size) > a.left() => {
            Err(FetchError::TooBig(a.refusal(None)))
        }
        _ => {
            written = written.saturating_add(size);
            Ok(())
        }
    };
    let infra = |what: &str, e: io::Error| FetchError::Infra(format!("{what}: {e}"));
    let mut seen = std::collections::HashSet::new();
    let mut archive = tar::Archive::new(tar);
    let (mut count, mut bytes) = (0u64, 0u64);
    let entries = archive
        .entries()
        .map_err(|e| infra("read the results archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| infra("read the results archive", e))?;
        count += 1;
        bytes = bytes.saturating_add(entry.size());
        if count > limits.entries {
            return Err(FetchError::TooBig(format!(
                "{who} left more than {} entries in {dir}",
                limits.entries
            )));
        }
        if bytes > limits.bytes {
            return Err(FetchError::TooBig(format!(
                "{who} left more than {} in {dir}",
                human_bytes(limits.bytes)
            )));
        }
        let t = entry.header().entry_type();
        let path = entry
            .path()
            .map_err(|e| infra("read the results archive", e))?
            .into_owned();
        let shown = path.display().to_string();
        let Some(rel) = inside(&path, root) else {
            note(taken, format!("{shown} (outside {dir})"));
            continue;
        };
        if select == Select::Tree {
            take_tree_entry(&mut entry, t, rel, dest, &mut seen, taken)?;
            continue;
        }
        let mut parts = rel.components();
        let (first, rest) = (parts.next(), parts.next());
        match (first, rest) {
            // `/out` itself.
            (None, _) => {
                if !t.is_dir() {
                    taken.refused.push(format!("{OUT_DIR} ({})", kind(t)));
                }
            }
            (Some(Component::Normal(name)), None) if name.to_str().is_some_and(is_result) => {
                let name = name.to_str().unwrap_or_default().to_string();
                if !t.is_file() {
                    taken.refused.push(format!("{name} ({})", kind(t)));
                } else if name == NEVR_FILE {
                    if entry.size() > MAX_NEVR_BYTES {
                        taken.refused.push(format!(
                            "{name} (larger than {})",
                            human_bytes(MAX_NEVR_BYTES)
                        ));
                        continue;
                    }
                    let mut text = String::new();
                    entry
                        .read_to_string(&mut text)
                        .map_err(|e| infra("read the NEVR file", e))?;
                    taken.nevr = Some(text);
                } else if seen.insert(name.clone()) {
                    room(entry.size())?;
                    write_new(&dest.join(&name), &mut entry)
                        .map_err(|e| infra(&format!("write {}", dest.join(&name).display()), e))?;
                    taken.files.push(name);
                }
            }
            _ if t.is_file() && backend_log(&rel).is_some() => {
                let to = backend_log(&rel).unwrap_or_default();
                if taken.logs.contains(&to) {
                    continue;
                }
                room(entry.size())?;
                let path = dest.join(&to);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| infra(&format!("create {}", dir.display()), e))?;
                }
                write_new(&path, &mut Redacted::new(&mut entry))
                    .map_err(|e| infra(&format!("write {}", path.display()), e))?;
                taken.logs.push(to);
            }
            // Anything else the build left (Mock's work files, ...) stays behind.
            _ if t.is_file() || t.is_dir() => {}
            _ => note(taken, format!("{OUT_DIR}/{} ({})", rel.display(), kind(t))),
        }
    }
    Ok(())
}

/// One entry of a [`Select::Tree`] archive, at `rel` below its root: a regular file is
/// written (once), a directory needs nothing, anything else is only named.
fn take_tree_entry(
    entry: &mut impl Read,
    t: tar::EntryType,
    rel: PathBuf,
    dest: &Path,
    seen: &mut std::collections::HashSet<String>,
    taken: &mut Taken,
) -> Result<(), FetchError> {
    let infra = |what: &str, e: io::Error| FetchError::Infra(format!("{what}: {e}"));
    if rel.as_os_str().is_empty() {
        if !t.is_dir() {
            taken.not_regular.push((rel, kind(t)));
        }
    } else if t.is_file() {
        let name = rel.to_string_lossy().into_owned();
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        let path = dest.join(&rel);
        if let Some(dir) = path.parent() {
            // Only plain names below `dest`, and no link is ever written: nothing to follow.
            std::fs::create_dir_all(dir)
                .map_err(|e| infra(&format!("create {}", dir.display()), e))?;
        }
        write_new(&path, entry).map_err(|e| infra(&format!("write {}", path.display()), e))?;
        taken.files.push(name);
    } else if !t.is_dir() {
        taken.not_regular.push((rel, kind(t)));
    }
    Ok(())
}

fn note(taken: &mut Taken, what: String) {
    if taken.ignored.len() < MAX_NOTES {
        taken.ignored.push(what);
    } else {
        taken.more_ignored += 1;
    }
}

/// Writes `data` to a new regular file at `path`: whatever is there (an earlier attempt's
/// file) is removed first, and the file is created with `O_EXCL`, which never follows a
/// link.
fn write_new(path: &Path, data: &mut impl Read) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    io::copy(data, &mut f)?;
    f.flush()
}

/// Opens a regular file without following a symbolic link at `path` itself: the file
/// opened must be the one `lstat` saw, a regular file (same device and inode). For files
/// that came out of a build.
pub(crate) fn open_regular(path: &Path) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        )
    };
    let before = std::fs::symlink_metadata(path)?;
    if !before.file_type().is_file() {
        return Err(not_regular());
    }
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.dev() != before.dev() || meta.ino() != before.ino() {
        return Err(not_regular());
    }
    Ok((f, meta))
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

/// Longest piece of a backend log redacted at once: a line, or a piece of a longer one.
const REDACT_LINE: u64 = 64 << 10;

/// A backend's log read line by line with the credentials of every URL redacted
/// ([`crate::model::redact_bytes`]): Mock's `root.log` quotes the repository URLs dnf
/// failed to reach, credentials included.
struct Redacted<R> {
    inner: io::BufReader<R>,
    out: Vec<u8>,
    at: usize,
}

impl<R: Read> Redacted<R> {
    fn new(inner: R) -> Redacted<R> {
        Redacted {
            inner: io::BufReader::new(inner),
            out: Vec::new(),
            at: 0,
        }
    }
}

impl<R: Read> Read for Redacted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use io::BufRead;
        if self.at == self.out.len() {
            let mut line = Vec::new();
            (&mut self.inner)
                .take(REDACT_LINE)
                .read_until(b'\n', &mut line)?;
            self.out = crate::model::redact_bytes(&line).into_owned();
            self.at = 0;
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A blocking reader over chunks sent from an async task.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    buf: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            buf: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
