//! What the two rebuild commands share: their temporary results removed at the end, short
//! digests in their messages, and diffoscope's summary of what differs.

use std::path::{Path, PathBuf};

/// The rebuild's temporary results, removed at the end.
pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A digest cut to 16 characters, for messages.
pub(super) fn short(d: &str) -> &str {
    d.get(..16).unwrap_or(d)
}

/// A summary of what differs, when diffoscope is installed: its first lines.
pub(super) fn diffoscope(old: &Path, new: &Path) {
    let out = std::process::Command::new("diffoscope")
        .args(["--text", "-", "--max-text-report-size", "20000"])
        .arg(old)
        .arg(new)
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().take(40) {
            println!("  | {line}");
        }
    }
}
