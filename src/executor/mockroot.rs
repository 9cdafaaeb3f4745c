//! Warm buildroots for Mock targets. Mock spends most of a small build installing the
//! buildroot (`chroot_setup_cmd`); every build of a target installs the same one until the
//! target's configuration or its repositories change. So the buildroot is initialized once
//! (`mock --init` in a container of the target's image, committed as an image) and every
//! build's container starts from that image, its buildroot ready: Mock finds it initialized
//! (`--no-clean`) and installs only what the package's own BuildRequires add.
//!
//! The image is keyed by the target's image id, the Mock configuration generated for the
//! target's own repositories (a build's extra repositories only add its BuildRequires) and
//! each of those repositories' `repodata/repomd.xml` digest, so a new repository state
//! makes a new buildroot (and the target's older one is removed). The image id and the
//! digests are those of the build's recorded inputs ([`super::provenance`]), read once
//! per build: nothing is looked up or fetched again here. When a repository has no
//! snapshot (its `repomd.xml` could not be read), the build goes without (cold, as Mock
//! alone would), and so it does when the initialization fails: the build then reports the
//! failure with its logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::backend::{self, ContainerRepo, Script};
use super::provenance::Provenance;
use super::run::{infra, Logs, Run, Stop};
use crate::docker::{self, Engine, LABEL_BUILD, LABEL_OWNER, LABEL_TARGET};
use crate::model::Phase;

/// The label every Mock image carries (images/mock-*): `org.packetary.backend=mock`.
pub const LABEL_BACKEND: &str = "org.packetary.backend";
/// Repository of the warm buildroot images; their tag is `<target>-<key>`.
pub const WARM_REPO: &str = "packetary/mockroot";
/// Label naming the target a warm buildroot image belongs to.
pub const LABEL_WARM_TARGET: &str = "org.packetary.mockroot.target";

/// One lock per key, so that concurrent builds of a target make its buildroot once.
fn lock_for(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(key.to_string()).or_default().clone()
}

/// What the build container of a Mock target is made from: the warm buildroot image when
/// there is (or can be made) one on `engine`, else `image`, the target's image as `engine`
/// names it (a Swarm's builds: its registry copy, by digest). Refuses an image that is not
/// a Mock image, naming it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn prepare(
    engine: &Engine,
    owner: &str,
    run: &mut Run,
    image: &str,
    repos: &[ContainerRepo],
    mounts: &[(String, String, bool)],
    network: bool,
    script: &Script,
    logs: &mut Logs,
) -> Result<String, Stop> {
    let target = run.req.target.clone();
    // The inputs are recorded before the phases (`Executor::run`).
    let Some(inputs) = run.provenance.clone() else {
        return Err(infra("the build's inputs were not recorded".into()));
    };
    let Some(image_id) = inputs.image_id.clone() else {
        // Creating the container reports the missing image, as for any backend.
        return Ok(image.to_string());
    };
    let label = engine
        .image_label(image, LABEL_BACKEND)
        .await
        .map_err(Stop::Infra)?;
    if label.as_deref() != Some("mock") {
        return Err(infra(format!(
            "target `{}` uses the mock backend but image {} is not a Mock image (label {LABEL_BACKEND}={})\n  fix: set the target's `image` to a Mock image (packetary/mock:fedora, packetary/mock:el9, or one built with `LABEL {LABEL_BACKEND}=mock`), or its `backend` to \"rpmbuild\"",
            target.name,
            target.image,
            label.as_deref().unwrap_or("(none)")
        )));
    }
    // The buildroot comes from the target's own repositories: a build's extra ones (a
    // change's earlier results) only add its BuildRequires, which Mock installs per build.
    let own = &repos[..target.repos.len().min(repos.len())];
    // Mock's `--init` gets its config on the command line and the image keeps it: a URL
    // with credentials must go into neither, so such a target builds cold.
    if own.iter().any(|r| crate::model::has_userinfo(&r.url)) {
        logs.note("packetary: no warm buildroot for this build (a repository URL carries credentials); Mock installs it")
            .await;
        return Ok(image.to_string());
    }
    let cfg = backend::mock_config(&target, own);
    let key = match key(&image_id, &cfg, &target.repos, &inputs) {
        Ok(k) => k,
        Err(why) => {
            logs.note(&format!(
                "packetary: no warm buildroot for this build ({why}); Mock installs it"
            ))
            .await;
            return Ok(image.to_string());
        }
    };
    let tag = format!("{}-{}", tag_safe(target.name.as_str()), &key[..16]);
    let warm = format!("{WARM_REPO}:{tag}");
    let lock = lock_for(&warm);
    let _held = lock.lock().await;
    if engine.image_id(&warm).await.map_err(Stop::Infra)?.is_some() {
        logs.note(&format!("packetary: warm buildroot {warm}"))
            .await;
        return Ok(warm);
    }
    logs.note(&format!(
        "packetary: making the warm buildroot {warm} (once per target and repository state)"
    ))
    .await;
    let t0 = std::time::Instant::now();
    let spec = docker::ContainerSpec {
        name: format!("packetary-{}-mockroot", run.req.id),
        image: image.to_string(),
        cmd: Some(backend::mock_init_command(&cfg)),
        labels: [
            (LABEL_BUILD.to_string(), run.req.id.to_string()),
            (LABEL_TARGET.to_string(), target.name.to_string()),
            (LABEL_OWNER.to_string(), owner.to_string()),
        ]
        .into_iter()
        .collect(),
        mounts: mounts.to_vec(),
        env: script.env.clone(),
        memory_bytes: target.limits.memory_bytes,
        nano_cpus: target.limits.cpus.map(|c| (c * 1e9) as i64),
        pids: Some(target.limits.pids),
        network,
        cap_add: script.cap_add.clone(),
        security_opt: script.security_opt.clone(),
        user: None,
    };
    let id = engine.create(&spec).await.map_err(Stop::Infra)?;
    // Registered as the build's container: a timeout or cancellation removes it.
    run.set_container(&id);
    let made = async {
        let mut stream = engine.start_attached(&id).await?;
        while let Some(chunk) = stream.next_chunk().await {
            let _ = logs.write(Phase::Prepare, &chunk?).await;
        }
        let code = engine.exit_code(&stream.exit()).await?;
        if code != 0 {
            return Ok(false);
        }
        let labels = [
            (LABEL_WARM_TARGET.to_string(), target.name.to_string()),
            (LABEL_BACKEND.to_string(), "mock".to_string()),
        ]
        .into_iter()
        .collect();
        engine.commit(&id, WARM_REPO, &tag, labels).await?;
        Ok::<bool, docker::InfraError>(true)
    }
    .await;
    run.container = None;
    if let Err(e) = engine.remove(&id).await {
        tracing::warn!(container = %id, "could not remove the buildroot container: {e}");
    }
    match made {
        Ok(true) => {
            logs.note(&format!(
                "packetary: warm buildroot {warm} made in {:.1}s",
                t0.elapsed().as_secs_f64()
            ))
            .await;
            // Buildroots of the target's earlier states are not used again.
            if let Ok(old) = engine
                .images_with_label(&format!("{LABEL_WARM_TARGET}={}", target.name))
                .await
            {
                for o in old.iter().filter(|o| **o != warm) {
                    let _ = engine.remove_image(o).await;
                }
            }
            Ok(warm)
        }
        Ok(false) => {
            logs.note("packetary: making the warm buildroot failed (output above); the build goes on without it")
                .await;
            Ok(image.to_string())
        }
        Err(e) => Err(Stop::Infra(e)),
    }
}

/// A target's repository without a snapshot in the build's record: no warm buildroot.
#[derive(Debug, thiserror::Error)]
#[error("repository `{repo}` has no snapshot: its repodata/repomd.xml could not be read when the build started")]
struct NoSnapshot {
    repo: String,
}

/// The key of a buildroot: image, configuration, and each of the target's repositories'
/// metadata digest, as recorded in the build's inputs (the `sha256:` of its `repomd.xml`,
/// hashed as the digest's bytes: the same key as when this read the files itself).
fn key(
    image_id: &str,
    cfg: &str,
    target_repos: &[crate::config::Repo],
    inputs: &Provenance,
) -> Result<String, NoSnapshot> {
    let mut h = Sha256::new();
    h.update(b"packetary-mockroot-1\0");
    h.update(image_id.as_bytes());
    h.update(b"\0");
    h.update(cfg.as_bytes());
    for r in target_repos {
        let digest = inputs
            .repositories
            .iter()
            .find(|rec| rec.name == r.name)
            .and_then(|rec| rec.snapshot.as_deref())
            .and_then(|s| s.strip_prefix("sha256:"))
            .and_then(|hex| hex::decode(hex).ok())
            .ok_or_else(|| NoSnapshot {
                repo: r.name.clone(),
            })?;
        h.update(b"\0");
        h.update(r.name.as_bytes());
        h.update(b"\0");
        h.update(&digest);
    }
    Ok(hex::encode(h.finalize()))
}

/// A target's name as a Docker tag part: `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
fn tag_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!("t{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_docker_safe() {
        assert_eq!(tag_safe("fedora-43"), "tfedora-43");
        assert_eq!(tag_safe("a/b c"), "ta_b_c");
        assert_eq!(tag_safe(".x"), "t.x");
    }
}
