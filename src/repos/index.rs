//! Indexing a staged snapshot: createrepo_c `--update` in the target's image.

use super::rules::Stage;
use super::{PublishError, RepoDir};
use crate::docker::{tool_container, Engine, InfraError, LABEL_BUILD, TOOL_TIMEOUT};
use crate::model::BuildId;

/// Runs createrepo_c in a confined tool container (`docker::tool_container`): no network,
/// no capabilities, bounded memory, pids and time, as the service's own user.
#[derive(Clone)]
pub struct Indexer {
    pub engine: Engine,
    pub image: String,
}

impl RepoDir {
    /// createrepo_c over the staged snapshot, updating from the previous one's metadata.
    pub(super) async fn index(&self, indexer: &Indexer, stage: &Stage) -> Result<(), PublishError> {
        let cache = self.root.join(".cache");
        std::fs::create_dir_all(&cache).map_err(PublishError::io(&cache))?;
        let mut mounts = vec![
            (stage.tmp.display().to_string(), "/repo".to_string(), false),
            (cache.display().to_string(), "/cache".to_string(), false),
        ];
        let mut cmd: Vec<String> = Vec::new();
        cmd.extend(
            [
                "createrepo_c",
                "--quiet",
                "--no-database",
                "--workers",
                "2",
                "--cachedir",
                "/cache",
            ]
            .map(String::from),
        );
        if let Some(prev) = &stage.previous {
            let prev_dir = self.snapshot_dir(prev);
            if prev_dir.join("repodata").join("repomd.xml").is_file() {
                mounts.push((prev_dir.display().to_string(), "/prev".to_string(), true));
                cmd.extend(["--update", "--update-md-path", "/prev"].map(String::from));
            }
        }
        cmd.push("/repo".into());
        let (spec, cmd) = tool_container(
            format!("packetary-publish-{}", BuildId::generate()),
            &indexer.image,
            [(LABEL_BUILD.to_string(), "publish".to_string())]
                .into_iter()
                .collect(),
            mounts,
            cmd,
        );
        let (code, out) = indexer
            .engine
            .run_once_within(&spec, cmd, TOOL_TIMEOUT)
            .await
            .map_err(|InfraError(e)| PublishError::Index(e))?;
        if code != 0 {
            return Err(PublishError::Index(format!(
                "createrepo_c failed in {} (exit {code}): {}",
                indexer.image,
                String::from_utf8_lossy(&out).trim()
            )));
        }
        Ok(())
    }
}
