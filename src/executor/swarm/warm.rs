//! The image a build's jobs run: the target's by digest, or for a Mock target its warm
//! buildroot, made on the service's own daemon and pushed to the registry once.

use std::time::Instant;

use super::SwarmExecutor;
use crate::config::Backend;
use crate::docker;
use crate::executor::run::{infra, Logs, Run, Stop};

impl SwarmExecutor {
    /// The image the build's jobs run, by digest in the registry: the target's, or for a
    /// Mock target its warm buildroot (made from that image on the service's own daemon,
    /// as the local executor makes it, then pushed once), so that no node installs the
    /// buildroot per build.
    pub(super) async fn job_image(&self, run: &mut Run) -> Result<String, Stop> {
        let target = run.req.target.clone();
        let digest = run
            .provenance
            .as_ref()
            .and_then(|p| p.image_id.clone())
            .ok_or_else(|| infra("the builder image's digest is unknown".into()))?;
        let pinned = docker::pinned_reference(&self.config.registry, &target.image, &digest);
        if target.backend != Backend::Mock {
            return Ok(pinned);
        }
        let (script, repos) = self.script_and_repos(run)?;
        let mut logs = Logs::open(&run.logs_dir(), false, target.limits.log_bytes).await?;
        // The warm buildroot saves time, nothing more: without it the build goes on cold.
        if let Err(e) = self.builder.pull_pinned(&pinned).await {
            logs.note(&format!(
                "packetary: no warm buildroot for this build (the service's daemon cannot pull the target's image: {e}); Mock installs it"
            ))
            .await;
            logs.flush().await?;
            return Ok(pinned);
        }
        let image = crate::executor::mockroot::prepare(
            &self.builder,
            &self.owner,
            run,
            &pinned,
            &repos,
            &[],
            !repos.is_empty(),
            &script,
            &mut logs,
        )
        .await?;
        if image == pinned {
            logs.flush().await?;
            return Ok(pinned);
        }
        let mut pushed = self.pushed.lock().await;
        let warm = match pushed.get(&image) {
            Some(w) => w.clone(),
            None => {
                let t0 = Instant::now();
                match self
                    .builder
                    .push_to(&image, &self.config.registry, &mut |_| {})
                    .await
                {
                    Ok(digest) => {
                        let w = docker::pinned_reference(&self.config.registry, &image, &digest);
                        logs.note(&format!(
                            "packetary: warm buildroot pushed as {w} in {:.1}s",
                            t0.elapsed().as_secs_f64()
                        ))
                        .await;
                        pushed.insert(image, w.clone());
                        w
                    }
                    Err(e) => {
                        logs.note(&format!(
                            "packetary: no warm buildroot for this build (pushing it failed: {e}); Mock installs it"
                        ))
                        .await;
                        pinned
                    }
                }
            }
        };
        drop(pushed);
        logs.flush().await?;
        Ok(warm)
    }
}
