//! `packetary rebuild --release NAME [--target T]`: every source package of the release's
//! latest snapshot, built again from that snapshot (plus the target's own repositories),
//! and each binary package compared with the published one by payload digest.
//!
//! A published SRPM is all that is needed: it is unpacked in a container of the target's
//! image (no network; the host never runs rpm on it), and its build time is the build's
//! `SOURCE_DATE_EPOCH` (rpm was told to use it as the build time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use packetary::config::{Config, Repo, RepoLocation, Target};
use packetary::docker::ContainerSpec;
use packetary::docker::{Engine, LABEL_BUILD};
use packetary::executor::{BuildRequest, Executor};
use packetary::format::rpm::{rpm_build_origin, rpm_payload_digest};
use packetary::model::{BuildId, Outcome, PackageSource, TargetName};
use packetary::repos::{self, RepoDir};

use super::rebuild_common::{diffoscope, short, RemoveOnDrop};
use super::{infra, progress_line, usage, CliError, EXIT_FAILED};

/// How one source package fared.
#[derive(Default)]
struct Tally {
    identical: usize,
    differ: usize,
    failed: usize,
}

pub(super) async fn run(
    config: &Config,
    release: &str,
    only_target: Option<&str>,
    data_dir: Option<&Path>,
) -> Result<u8, CliError> {
    let Some(rel) = config
        .releases
        .values()
        .find(|r| r.name.as_str() == release)
    else {
        return Err(usage(anyhow!(
            "release {release} is not configured\n  fix: add a [releases.{release}] table, or pass the configuration that has it (--config)"
        )));
    };
    let targets: Vec<&TargetName> = rel
        .targets
        .iter()
        .filter(|t| only_target.is_none_or(|o| t.as_str() == o))
        .collect();
    if targets.is_empty() {
        return Err(usage(anyhow!(
            "release {release} has no target {}\n  fix: pick one of {}",
            only_target.unwrap_or("?"),
            rel.targets
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let data_dir = data_dir.unwrap_or(&config.server.data_dir);
    // Mounted into containers: Docker wants an absolute path.
    let data_dir = &std::path::absolute(data_dir)
        .map_err(|e| usage(anyhow!("{}: {e}", data_dir.display())))?;
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    let executor = Executor::new(engine.clone());
    let work = std::env::temp_dir().join(format!("packetary-rebuild-{}", BuildId::generate()));
    let _cleanup = RemoveOnDrop(work.clone());
    let mut tally = Tally::default();
    for name in targets {
        let Some(target) = config.targets.get(name) else {
            return Err(usage(anyhow!(
                "release {release} names target {name}, which is not configured"
            )));
        };
        let dir = RepoDir::new(repos::release_dir(data_dir, release, name.as_str()));
        let Some(snapshot) = dir.latest() else {
            return Err(usage(anyhow!(
                "release {release} has published nothing for {name} under {}\n  fix: pass the service's data directory (--data-dir)",
                dir.root().display()
            )));
        };
        let snap_dir = dir.snapshot_dir(&snapshot);
        let manifest = dir.manifest(&snapshot).map_err(infra)?;
        progress_line(&format!(
            "rebuilding release {release} for {name} from snapshot {snapshot} ({} packages)",
            manifest.packages.len()
        ));
        // Which published binaries each source package made, from their headers.
        let mut made_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in manifest.packages.iter().filter(|e| e.arch != "src") {
            if let Ok((_, Some(src))) = rpm_build_origin(&snap_dir.join(&e.file)) {
                made_by.entry(src).or_default().push(e.file.clone());
            }
        }
        let mut target = target.clone();
        target.repos.push(Repo {
            name: format!("release-{release}"),
            location: RepoLocation::Dir(snap_dir.clone()),
        });
        for srpm in manifest.packages.iter().filter(|e| e.arch == "src") {
            let published = made_by.remove(&srpm.file).unwrap_or_default();
            let one = work.join(BuildId::generate().as_str());
            let outcome =
                rebuild_one(&engine, &executor, &target, &snap_dir, &srpm.file, &one).await?;
            match outcome {
                Err(why) => {
                    println!("{name} {}: no longer builds: {why}", srpm.file);
                    tally.failed += 1;
                }
                Ok(new_dir) => {
                    if compare(name, &srpm.file, &snap_dir, &published, &new_dir) {
                        tally.identical += 1;
                    } else {
                        tally.differ += 1;
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&one);
        }
    }
    println!(
        "{} identical, {} differ, {} no longer build",
        tally.identical, tally.differ, tally.failed
    );
    Ok(if tally.differ + tally.failed == 0 {
        0
    } else {
        EXIT_FAILED
    })
}

/// Why a published source package no longer builds (the package's doing, not the host's).
#[derive(Debug, thiserror::Error)]
enum NoLongerBuilds {
    #[error("cannot unpack it (exit {code}): {log}")]
    Unpack { code: i64, log: String },
    #[error("it holds {count} spec files, not one")]
    SpecCount { count: usize },
    /// The build failed; its message.
    #[error("{0}")]
    Failed(String),
}

/// Unpacks `srpm` and builds it; `Ok(Err(why))` when the package no longer builds.
async fn rebuild_one(
    engine: &Engine,
    executor: &Executor,
    target: &Target,
    snap_dir: &Path,
    srpm: &str,
    work: &Path,
) -> Result<Result<PathBuf, NoLongerBuilds>, CliError> {
    let (epoch, _) = rpm_build_origin(&snap_dir.join(srpm)).map_err(infra)?;
    let src = work.join("src");
    let out = work.join("out");
    for d in [&src, &out] {
        std::fs::create_dir_all(d)
            .map_err(|e| infra(anyhow!("cannot create {}: {e}", d.display())))?;
    }
    let unpack = ContainerSpec {
        name: format!("packetary-unpack-{}", BuildId::generate()),
        image: target.image.clone(),
        labels: [(LABEL_BUILD.to_string(), "unpack".to_string())]
            .into_iter()
            .collect(),
        mounts: vec![
            (snap_dir.display().to_string(), "/snapshot".into(), true),
            (src.display().to_string(), "/src".into(), false),
        ],
        network: false,
        pids: Some(64),
        ..Default::default()
    };
    let script = "cd /src && rpm2cpio \"/snapshot/$1\" | cpio -idm --quiet --no-absolute-filenames";
    let (code, log) = engine
        .run_once(
            &unpack,
            vec![
                "bash".into(),
                "-c".into(),
                script.into(),
                "unpack".into(),
                srpm.into(),
            ],
        )
        .await
        .map_err(infra)?;
    if code != 0 {
        return Ok(Err(NoLongerBuilds::Unpack {
            code,
            log: String::from_utf8_lossy(&log).trim().to_string(),
        }));
    }
    let specs: Vec<PathBuf> = std::fs::read_dir(&src)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "spec") && p.is_file())
        .collect();
    let [spec] = specs.as_slice() else {
        return Ok(Err(NoLongerBuilds::SpecCount { count: specs.len() }));
    };
    let src = src.canonicalize().map_err(infra)?;
    let req = BuildRequest {
        deps_cache: packetary::executor::DepsCache::Shared("local:cli".into()),
        id: BuildId::generate(),
        package: PackageSource {
            root: src.clone(),
            spec: src.join(spec.file_name().unwrap_or_default()),
            source_dir: src,
        },
        target: target.clone(),
        out_root: out,
        extra_repos: vec![],
        source_date_epoch: Some(epoch),
        inputs: None,
    };
    let report = executor.run(req, None, CancellationToken::new()).await;
    match report.outcome {
        Outcome::Succeeded { .. } => Ok(Ok(report.dir)),
        Outcome::Failed { message, .. } => Ok(Err(NoLongerBuilds::Failed(message))),
        Outcome::Error { message } => Err(infra(anyhow!("the rebuild could not run: {message}"))),
        Outcome::Cancelled => Err(infra(anyhow!("the rebuild was cancelled"))),
    }
}

/// Prints `identical`/`differs` for each binary package the snapshot has from `srpm` and
/// each one the rebuild made; true when all are identical.
fn compare(
    target: &TargetName,
    srpm: &str,
    snap_dir: &Path,
    published: &[String],
    new_dir: &Path,
) -> bool {
    let mut made: Vec<String> = std::fs::read_dir(new_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rpm") && !n.ends_with(".src.rpm"))
        .collect();
    made.sort();
    let mut same = true;
    for file in published {
        let name = Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        let old = snap_dir.join(file);
        let new = new_dir.join(&name);
        if !made.contains(&name) {
            println!("{target} {srpm}: differs {name} (the rebuild did not make it)");
            same = false;
            continue;
        }
        match (rpm_payload_digest(&old), rpm_payload_digest(&new)) {
            (Ok(a), Ok(b)) if a == b => println!("{target} {srpm}: identical {name}"),
            (Ok(a), Ok(b)) => {
                println!(
                    "{target} {srpm}: differs {name} (payload {} → {})",
                    short(&a),
                    short(&b)
                );
                diffoscope(&old, &new);
                same = false;
            }
            (Err(e), _) | (_, Err(e)) => {
                println!("{target} {srpm}: differs {name} ({e})");
                same = false;
            }
        }
    }
    for name in made.iter().filter(|n| {
        !published.iter().any(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == **n)
        })
    }) {
        println!("{target} {srpm}: differs {name} (new in the rebuild, not published)");
        same = false;
    }
    same
}
