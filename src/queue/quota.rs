//! A change's disk quota (issue 22, `[server] change_disk_quota`): the results of a pull
//! request's or Gerrit change's builds (packages, logs, the copy of its inputs), all its
//! commits counted, may hold at most so many bytes of the service's disk. Pushes, made by
//! people who may write the repository, are not counted.
//!
//! Checked three times: a build of a change already at its quota fails before anything
//! is exported for it; a running build's results are taken out of its container only
//! while they fit in what is left ([`DiskAllowance`], when the runner can); and once a
//! build has ended, its results directory is measured and charged to its change in one
//! transaction — a succeeded build that does not fit fails, its packages and inputs
//! removed (its logs kept and charged), nothing published.

use std::path::{Path, PathBuf};

use super::{results_root, QueueError};
use crate::executor::{BuildReport, DiskAllowance};
use crate::model::{Failure, Outcome, Phase};
use crate::store::{BuildRow, Store, StoreError};

/// The quota and what it needs: the store (what each build's results hold) and where
/// results live.
pub(super) struct Quota {
    pub store: Store,
    pub data_dir: PathBuf,
    /// `None`: no quota (results are still measured and recorded).
    pub bytes: Option<u64>,
}

impl Quota {
    /// What `b` may still write: `None` when no quota applies (none set, or a push).
    pub async fn allowance(&self, b: &BuildRow) -> Result<Option<DiskAllowance>, StoreError> {
        let Some(quota) = self.bytes else {
            return Ok(None);
        };
        Ok(self
            .store
            .change_disk_use(b)
            .await?
            .map(|used| DiskAllowance { used, quota }))
    }

    /// The failure of a build whose change is already at its quota, before it runs.
    pub fn full(allowance: Option<DiskAllowance>) -> Option<Outcome> {
        let a = allowance.filter(|a| a.left() == 0)?;
        Some(Outcome::Failed {
            phase: Phase::Prepare,
            failure: Failure::Exit { code: 0 },
            message: a.refusal(Some(a.used)),
            log: PathBuf::new(),
        })
    }

    /// Charges what `r`'s results hold to `b`'s change. A succeeded build that would take
    /// its change over the quota is turned into a failed one: its results directory keeps
    /// only its logs (and a `build.json` saying why), and what is left is charged.
    pub async fn charge(
        &self,
        b: &BuildRow,
        mut r: BuildReport,
    ) -> Result<BuildReport, QueueError> {
        if b.pr_number.is_none() {
            return Ok(r);
        }
        let root = results_root(&self.data_dir, &b.id);
        let bytes = measure(&root).await;
        let (others, charged) = self.store.charge_results(b, bytes, self.bytes).await?;
        if charged {
            return Ok(r);
        }
        if r.outcome.succeeded() {
            let quota = self.bytes.unwrap_or(u64::MAX);
            let message = DiskAllowance {
                used: others,
                quota,
            }
            .refusal(Some(others.saturating_add(bytes)));
            tracing::warn!(build = %b.id, "{message}");
            r.outcome = Outcome::Failed {
                phase: Phase::Collect,
                failure: Failure::Exit { code: 0 },
                message,
                log: r.dir.join("logs").join(Phase::Collect.log_name()),
            };
            let (dir, report) = (r.dir.clone(), r.clone());
            let _ = tokio::task::spawn_blocking(move || keep_only_logs(&dir, &report)).await;
        }
        // A build that failed anyway keeps its own failure; its results count all the same.
        self.store
            .set_result_bytes(&b.id, measure(&root).await)
            .await?;
        Ok(r)
    }
}

/// Bytes of the regular files under `dir` that are theirs alone: a file with other hard
/// links (results reused from an earlier build) takes no more room, and was charged to
/// the build that wrote it. Links are not followed.
async fn measure(dir: &Path) -> u64 {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::MetadataExt;
        let (mut total, mut todo) = (0u64, vec![dir]);
        while let Some(d) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if m.is_dir() {
                    todo.push(e.path());
                } else if m.is_file() && m.nlink() == 1 {
                    total = total.saturating_add(m.len());
                }
            }
        }
        total
    })
    .await
    .unwrap_or(0)
}

/// Removes everything in a results directory but its `logs/`, and writes `report` (the
/// build's failure) as its `build.json`.
fn keep_only_logs(dir: &Path, report: &BuildReport) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name() == "logs" {
                continue;
            }
            let p = e.path();
            let _ = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
    if let Ok(json) = serde_json::to_vec_pretty(report) {
        let _ = std::fs::write(dir.join("logs").join("build.json"), json);
    }
}
