//! Package files: their identity and digest, copied into the content pool durably.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Entry, PublishError};
use crate::format::rpm::{rpm_identity, HeaderError, RpmIdentity};
use crate::model::BuildId;

/// Reads a package file's identity and digest; a link or a non-RPM is refused.
pub fn describe(path: &Path) -> Result<Entry, PublishError> {
    let meta = std::fs::symlink_metadata(path).map_err(PublishError::io(path))?;
    if !meta.is_file() {
        return Err(PublishError::BadPackage(format!(
            "{} is not a regular file (links are not followed)",
            path.display()
        )));
    }
    let RpmIdentity {
        name,
        epoch,
        version,
        release,
        arch,
        ..
    } = rpm_identity(path).map_err(|e| match e {
        HeaderError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            PublishError::BadPackage(format!(
                "{} is not an RPM package: it ends before its header",
                path.display()
            ))
        }
        e => PublishError::BadPackage(e.to_string()),
    })?;
    let safe = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+~^-".contains(c))
    };
    if ![&name, &version, &release, &arch].iter().all(|s| safe(s)) {
        return Err(PublishError::BadPackage(format!(
            "{}: the header's name, version, release or architecture has characters a file name cannot have",
            path.display()
        )));
    }
    let file = format!("{name}-{version}-{release}.{arch}.rpm");
    Ok(Entry {
        file,
        name,
        epoch,
        version,
        release,
        arch,
        sha256: sha256_file(path)?,
    })
}

pub(super) fn sha256_file(path: &Path) -> Result<String, PublishError> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(PublishError::io(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(PublishError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies `from` (opened without following a link) to a new file `to`, through a
/// temporary name, so that the pool never holds a partial package under its name (the
/// caller flushes the file system once after a batch).
pub(super) fn copy_into(from: &Path, to: &Path) -> Result<(), PublishError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(PublishError::io(from))?;
    let tmp = to.with_extension(format!("tmp-{}", BuildId::generate()));
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(PublishError::io(&tmp))?;
    let r = std::io::copy(&mut src, &mut dst).and_then(|_| std::fs::rename(&tmp, to));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(PublishError::io(to))
}

/// The RPM files a `publish` argument names: a file, or the `*.rpm` files directly in a
/// directory (regular files only, sorted).
pub fn packages_in(arg: &Path) -> Result<Vec<PathBuf>, PublishError> {
    let meta = std::fs::symlink_metadata(arg).map_err(PublishError::io(arg))?;
    if meta.is_file() {
        return Ok(vec![arg.to_path_buf()]);
    }
    if !meta.is_dir() {
        return Err(PublishError::BadPackage(format!(
            "{} is neither an RPM file nor a directory of them",
            arg.display()
        )));
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(arg)
        .map_err(PublishError::io(arg))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rpm"))
        .collect();
    v.sort();
    Ok(v)
}

/// Flushes the file system holding `dir` (syncfs(2)).
pub(super) fn sync_fs(dir: &Path) -> Result<(), PublishError> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir).map_err(PublishError::io(dir))?;
    // SAFETY: the descriptor is open and owned by `d` for the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(PublishError::io(dir)(std::io::Error::last_os_error()));
    }
    Ok(())
}
