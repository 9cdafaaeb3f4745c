//! One publication at a time per repository directory, across processes: an exclusive
//! flock(2) on its `.lock` file, released when the guard is dropped (or the process dies).

use std::os::fd::AsRawFd;
use std::path::Path;

use super::PublishError;

/// Holds the lock while alive.
pub struct LockGuard {
    _file: std::fs::File,
}

/// Waits for the exclusive lock on `path` (created if missing), off the async threads.
pub async fn exclusive(path: &Path) -> Result<LockGuard, PublishError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(PublishError::io(&path))?;
        loop {
            // SAFETY: the descriptor is open and owned by `file` for the call.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(LockGuard { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(PublishError::Io { path, source: e });
            }
        }
    })
    .await
    .map_err(|e| PublishError::Index(e.to_string()))?
}
