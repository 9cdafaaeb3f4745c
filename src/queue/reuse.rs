//! Build avoidance: a build whose input digest (see [`crate::executor::provenance`]) matches
//! a succeeded build's does not run. Its results directory is made from the earlier one's
//! (files hard-linked, `logs/build.json` written anew with `reused_from`), and it succeeds
//! with "reused from <build>", without a container.

use std::path::{Path, PathBuf};

use crate::executor::provenance::BUILD_JSON_FORMAT;
use crate::executor::{BuildReport, BuildRequest};
use crate::model::{BuildId, Outcome};
use crate::store::{BuildRow, Store};

/// Why the results of an earlier build cannot be reused (the build then runs).
#[derive(Debug, thiserror::Error)]
pub(super) enum ReuseError {
    #[error("no results directory name")]
    NoDirName,
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `build.json` of another format (format 1 had none): read as no record.
    #[error("{path}: format {found}, not {BUILD_JSON_FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the record is of a build that did not succeed")]
    NotSucceeded,
    #[error("the record names no source package")]
    NoSource,
    #[error("the record names no binary package")]
    NoBinary,
    #[error("link into {dest}: {source}")]
    Link {
        dest: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the record: {0}")]
    Encode(serde_json::Error),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The report of `b` made from the results of an earlier build with the same inputs,
/// or `None` when there is none to reuse (the build then runs).
pub(super) async fn reuse(
    store: &Store,
    b: &BuildRow,
    req: &BuildRequest,
    digest: &str,
) -> Option<BuildReport> {
    let found = store
        .succeeded_with_digest(digest, &b.target, &b.repo, b.pr_number)
        .await;
    let (from, dir) = match found {
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
        let leaf = dir.file_name().ok_or(ReuseError::NoDirName)?.to_owned();
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

/// The `format` of a `build.json`, read before the rest (0: format 1, which had none).
#[derive(serde::Deserialize)]
struct Format {
    #[serde(default)]
    format: u32,
}

/// The report a results directory's `logs/build.json` holds, as the executor wrote it;
/// a record of another format is [`ReuseError::Format`].
pub(super) fn read_report(dir: &Path) -> Result<BuildReport, ReuseError> {
    let path = dir.join("logs/build.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ReuseError::Read {
        path: path.clone(),
        source,
    })?;
    let parse = |source| ReuseError::Parse {
        path: path.clone(),
        source,
    };
    let Format { format } = serde_json::from_str(&text).map_err(parse)?;
    if format != BUILD_JSON_FORMAT {
        return Err(ReuseError::Format {
            path,
            found: format,
        });
    }
    serde_json::from_str(&text).map_err(parse)
}

/// Makes `dest` from the results directory `src` of build `from` (hard links, copies
/// across file systems) and returns the report of `id` it stands for: the earlier
/// build's record (its inputs, command, repositories) with its own id, directory and
/// `reused_from`.
fn reuse_results(
    src: &Path,
    dest: &Path,
    id: &BuildId,
    from: &BuildId,
) -> Result<BuildReport, ReuseError> {
    let earlier = read_report(src)?;
    let name_of = |p: &Path| p.file_name().map(|n| n.to_owned());
    let Outcome::Succeeded { source, binaries } = &earlier.outcome else {
        return Err(ReuseError::NotSucceeded);
    };
    let source = name_of(source).ok_or(ReuseError::NoSource)?;
    let binaries: Vec<_> = binaries.iter().filter_map(|b| name_of(b)).collect();
    if binaries.is_empty() {
        return Err(ReuseError::NoBinary);
    }
    let _ = std::fs::remove_dir_all(dest);
    link_tree(src, dest, 0).map_err(|source| ReuseError::Link {
        dest: dest.to_path_buf(),
        source,
    })?;

    let report = BuildReport {
        id: id.clone(),
        dir: dest.to_path_buf(),
        phases: vec![],
        reused_from: Some(from.clone()),
        outcome: Outcome::Succeeded {
            source: dest.join(source),
            binaries: binaries.iter().map(|b| dest.join(b)).collect(),
        },
        ..earlier
    };
    // The record is the new build's own file, not a link to the earlier one's.
    let json = dest.join("logs/build.json");
    let _ = std::fs::remove_file(&json);
    let bytes = serde_json::to_vec_pretty(&report).map_err(ReuseError::Encode)?;
    std::fs::write(&json, bytes).map_err(|source| ReuseError::Write { path: json, source })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::executor::provenance::{Provenance, RepoRecord};
    use crate::model::TargetName;

    fn earlier(dir: &Path) -> BuildReport {
        let inputs = Provenance {
            tree_digest: "sha256:t".into(),
            source_date_epoch: 7,
            backend: Backend::Rpmbuild,
            image: "packetary/rpmbuild:bookworm".into(),
            image_id: Some("sha256:i".into()),
            arch: "x86_64".into(),
            macros: vec!["dist .fc43".into()],
            releasever: None,
            repositories: vec![RepoRecord {
                name: "base".into(),
                url: "https://example.test/base".into(),
                snapshot: Some("sha256:s".into()),
            }],
            spec: "p/p.spec".into(),
            source_dir: "p".into(),
            setup: "sha256:setup".into(),
            input_digest: "sha256:d".into(),
        };
        BuildReport {
            format: BUILD_JSON_FORMAT,
            id: BuildId::parse("b-earlier").unwrap(),
            package: "p".into(),
            spec: "p/p.spec".into(),
            target: TargetName::parse("t").unwrap(),
            backend: Backend::Rpmbuild,
            image: inputs.image.clone(),
            image_id: inputs.image_id.clone(),
            nevr: None,
            dir: dir.to_path_buf(),
            phases: vec![],
            command: vec!["bash".into(), "-c".into(), "driver".into()],
            repos: vec!["base=https://example.test/base".into()],
            provenance: Some(inputs),
            reused_from: None,
            outcome: Outcome::Succeeded {
                source: dir.join("p-1-1.src.rpm"),
                binaries: vec![dir.join("p-1-1.noarch.rpm")],
            },
        }
    }

    fn write(dir: &Path, json: &[u8]) {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(dir.join("logs/build.json"), json).unwrap();
        std::fs::write(dir.join("p-1-1.src.rpm"), "s").unwrap();
        std::fs::write(dir.join("p-1-1.noarch.rpm"), "b").unwrap();
    }

    #[test]
    fn a_reused_build_keeps_the_record_it_was_reused_from() {
        let t = tempfile::tempdir().unwrap();
        let (src, dest) = (t.path().join("a/p-1-1"), t.path().join("b/p-1-1"));
        let e = earlier(&src);
        write(&src, &serde_json::to_vec_pretty(&e).unwrap());
        let id = BuildId::parse("b-new").unwrap();
        let r = reuse_results(&src, &dest, &id, &e.id).unwrap();
        assert_eq!(r.reused_from.as_ref(), Some(&e.id));
        assert_eq!(r.provenance, e.provenance);
        assert_eq!(r.command, e.command);
        assert_eq!(r.dir, dest);
        assert_eq!(
            r.outcome,
            Outcome::Succeeded {
                source: dest.join("p-1-1.src.rpm"),
                binaries: vec![dest.join("p-1-1.noarch.rpm")],
            }
        );
        // What was written is what is returned, read back typed.
        let back = read_report(&dest).unwrap();
        assert_eq!(back.id, id);
        assert_eq!(back.provenance, e.provenance);
        assert!(dest.join("p-1-1.noarch.rpm").is_file());
    }

    #[test]
    fn an_old_or_unsucceeded_record_is_not_reused() {
        let t = tempfile::tempdir().unwrap();
        let (src, dest) = (t.path().join("a/p-1-1"), t.path().join("b/p-1-1"));
        let id = BuildId::parse("b-new").unwrap();
        // Format 1: no `format`, no `provenance`, `commands` per phase.
        write(
            &src,
            br#"{"id": "b-old", "package": "p", "commands": [], "outcome": {"state": "succeeded", "source": "x.src.rpm", "binaries": ["x.rpm"]}}"#,
        );
        let from = BuildId::parse("b-old").unwrap();
        let err = reuse_results(&src, &dest, &id, &from).unwrap_err();
        assert!(
            matches!(err, ReuseError::Format { found: 0, .. }),
            "{err:?}"
        );
        let mut e = earlier(&src);
        e.outcome = Outcome::Cancelled;
        write(&src, &serde_json::to_vec(&e).unwrap());
        let err = reuse_results(&src, &dest, &id, &e.id).unwrap_err();
        assert!(matches!(err, ReuseError::NotSucceeded), "{err:?}");
        e.outcome = Outcome::Succeeded {
            source: src.join("p-1-1.src.rpm"),
            binaries: vec![],
        };
        write(&src, &serde_json::to_vec(&e).unwrap());
        let err = reuse_results(&src, &dest, &id, &e.id).unwrap_err();
        assert!(matches!(err, ReuseError::NoBinary), "{err:?}");
    }
}
