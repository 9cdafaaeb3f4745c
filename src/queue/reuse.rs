//! Build avoidance: a build whose input digest (see [`crate::executor::provenance`]) matches
//! a succeeded build's does not run. Its results directory is made from the earlier one's
//! (files hard-linked, `logs/build.json` written anew with `reused_from`), and it succeeds
//! with "reused from <build>", without a container.

use std::path::{Path, PathBuf};

use crate::executor::provenance::Provenance;
use crate::executor::{BuildReport, BuildRequest};
use crate::model::{BuildId, Nevr, Outcome};
use crate::store::{BuildRow, Store};

/// The report of `b` made from the results of an earlier build with the same inputs,
/// or `None` when there is none to reuse (the build then runs).
pub(super) async fn reuse(
    store: &Store,
    b: &BuildRow,
    req: &BuildRequest,
    digest: &str,
) -> Option<BuildReport> {
    let (from, dir) = match store.succeeded_with_digest(digest, &b.target).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(build = %b.id, "cannot look for a build to reuse: {e}");
            return None;
        }
    };
    if from == b.id {
        return None;
    }
    let (id, out_root, target) = (
        b.id.clone(),
        req.out_root.clone(),
        req.target.name.as_str().to_string(),
    );
    let from2 = from.clone();
    let made = tokio::task::spawn_blocking(move || {
        let leaf = dir
            .file_name()
            .ok_or("no results directory name")?
            .to_owned();
        let dest = out_root.join(target).join(leaf);
        reuse_results(&dir, &dest, &id, &from2)
    })
    .await;
    match made {
        Ok(Ok(report)) => {
            tracing::info!(build = %b.id, reused = %from, "same inputs as a succeeded build: its results reused");
            Some(report)
        }
        Ok(Err(e)) => {
            tracing::warn!(build = %b.id, from = %from, "cannot reuse the results of {from}: {e}; building");
            None
        }
        Err(e) => {
            tracing::warn!(build = %b.id, "reuse task: {e}");
            None
        }
    }
}

/// Makes `dest` from the results directory `src` of build `from` (hard links, copies
/// across file systems) and returns the report of `id` it stands for.
fn reuse_results(
    src: &Path,
    dest: &Path,
    id: &BuildId,
    from: &BuildId,
) -> Result<BuildReport, String> {
    let json_path = src.join("logs/build.json");
    let text =
        std::fs::read_to_string(&json_path).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let name_of = |p: &serde_json::Value| -> Option<String> {
        Path::new(p.as_str()?)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    let source = name_of(&v["outcome"]["source"]).ok_or("the record names no source package")?;
    let binaries: Vec<String> = v["outcome"]["binaries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(name_of)
        .collect();
    if binaries.is_empty() {
        return Err("the record names no binary package".into());
    }
    let _ = std::fs::remove_dir_all(dest);
    link_tree(src, dest, 0).map_err(|e| format!("link into {}: {e}", dest.display()))?;

    let nevr: Option<Nevr> = serde_json::from_value(v["nevr"].clone()).ok();
    let provenance: Option<Provenance> = serde_json::from_value(v["provenance"].clone()).ok();
    let outcome = Outcome::Succeeded {
        source: dest.join(&source),
        binaries: binaries.iter().map(|b| dest.join(b)).collect(),
    };
    let report = BuildReport {
        format: crate::executor::provenance::BUILD_JSON_FORMAT,
        id: id.clone(),
        package: v["package"].as_str().unwrap_or_default().to_string(),
        spec: PathBuf::from(v["spec"].as_str().unwrap_or_default()),
        target: serde_json::from_value(v["target"].clone()).map_err(|e| e.to_string())?,
        backend: serde_json::from_value(v["backend"].clone()).map_err(|e| e.to_string())?,
        image: v["image"].as_str().unwrap_or_default().to_string(),
        image_id: v["image_id"].as_str().map(str::to_string),
        nevr,
        dir: dest.to_path_buf(),
        phases: vec![],
        command: serde_json::from_value(v["command"].take()).unwrap_or_default(),
        repos: serde_json::from_value(v["repos"].take()).unwrap_or_default(),
        provenance,
        reused_from: Some(from.clone()),
        outcome,
    };
    // The record is the new build's own file, not a link to the earlier one's.
    let json = dest.join("logs/build.json");
    let _ = std::fs::remove_file(&json);
    let bytes = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json, bytes).map_err(|e| format!("{}: {e}", json.display()))?;
    Ok(report)
}

/// Hard-links (or copies) every regular file under `src` to the same name under `dest`;
/// links and special files are left out (a results directory holds none).
fn link_tree(src: &Path, dest: &Path, depth: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let ft = e.file_type()?;
        let to = dest.join(e.file_name());
        if ft.is_dir() && depth < 64 {
            link_tree(&e.path(), &to, depth + 1)?;
        } else if ft.is_file() && std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}
