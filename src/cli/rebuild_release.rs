//! `packetary rebuild --release NAME [--target T]`: every source package of the release's
//! latest snapshot, built again from that snapshot (plus the target's own repositories),
//! and each binary package compared with the published one by payload digest.
//!
//! A published SRPM is all that is needed: it is unpacked in a container of the target's
//! image (the host never runs rpm on it), and its build time is the build's
//! `SOURCE_DATE_EPOCH` (rpm was told to use it as the build time).
//!
//! A published SRPM is not trusted (issue 22, M5: a crafted one left a setuid file and a
//! device on the host, and its symlinked spec was read on the host). So the unpack
//! container mounts no host directory (the SRPM is uploaded), unpacks as uid 65534 with no
//! capability, `no-new-privileges`, no network and pids/memory caps, and what it unpacked
//! comes out through the checked tar path of a build's results (`executor::fetch_tree`):
//! regular files only, mode 0644, nothing outside the tree, counted and capped. The spec
//! must be one of those regular files, and the package then goes through
//! `plan::discover::package_for_spec` like any build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use packetary::config::{Config, Repo, RepoLocation, Target};
use packetary::docker::{ContainerGuard, ContainerSpec, Engine, DROP_DEFAULT_CAPS, LABEL_BUILD};
use packetary::executor::{fetch_tree, BuildRequest, Executor, FetchError, Limits, Taken};
use packetary::format::rpm::{rpm_build_origin, rpm_payload_digest};
use packetary::model::{BuildId, Outcome, TargetName};
use packetary::plan;
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
    #[error("unpacking it took longer than {}s", UNPACK_TIMEOUT.as_secs())]
    UnpackTimeout,
    /// More files or bytes than [`UNPACK_LIMITS`].
    #[error("{0}")]
    TooBig(String),
    #[error("its spec {name} is {kind}, not a regular file: refused")]
    SpecNotRegular { name: String, kind: &'static str },
    #[error("it holds {count} spec files, not one")]
    SpecCount { count: usize },
    /// The package checks every build passes (`plan::discover::package_for_spec`).
    #[error("{0}")]
    Package(String),
    /// The build failed; its message.
    #[error("{0}")]
    Failed(String),
}

/// Who unpacks: `nobody`, by number so that no image has to name it. Not root, so a
/// crafted cpio archive can make no device and no root-owned setuid file.
const UNPACK_USER: &str = "65534:65534";
/// Where the SRPM is uploaded (as `UNPACK_SRPM` in `/tmp`) and unpacked, in the container.
const UNPACK_SRPM: &str = "packetary.src.rpm";
const UNPACK_DIR: &str = "/tmp/unpack";
/// Caps on what one SRPM may unpack to; the cpio stream is cut at the byte cap, so the
/// container's disk is bounded too.
const UNPACK_LIMITS: Limits = Limits {
    bytes: 8 << 30,
    entries: 10_000,
};
const UNPACK_TIMEOUT: Duration = Duration::from_secs(600);
/// Output of the unpack kept for the message.
const UNPACK_LOG_BYTES: usize = 16 << 10;

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
    let taken = match unpack(engine, target, &snap_dir.join(srpm), &src).await? {
        Ok(taken) => taken,
        Err(why) => return Ok(Err(why)),
    };
    let top_spec =
        |p: &Path| p.parent() == Some(Path::new("")) && p.extension() == Some("spec".as_ref());
    if let Some((name, kind)) = taken.not_regular.iter().find(|(p, _)| top_spec(p)) {
        return Ok(Err(NoLongerBuilds::SpecNotRegular {
            name: shown(name),
            kind,
        }));
    }
    if !taken.not_regular.is_empty() {
        let left: Vec<String> = taken
            .not_regular
            .iter()
            .map(|(p, k)| format!("{} ({k})", shown(p)))
            .collect();
        println!(
            "{} {srpm}: left out (not regular files): {}",
            target.name,
            left.join(", ")
        );
    }
    let specs: Vec<&String> = taken
        .files
        .iter()
        .filter(|f| top_spec(Path::new(f.as_str())))
        .collect();
    let [spec] = specs.as_slice() else {
        return Ok(Err(NoLongerBuilds::SpecCount { count: specs.len() }));
    };
    let package = match plan::discover::package_for_spec(&src, &src.join(spec.as_str())) {
        Ok(p) => p,
        Err(e) => return Ok(Err(NoLongerBuilds::Package(e.to_string()))),
    };
    let req = BuildRequest {
        deps_cache: packetary::executor::DepsCache::Shared("local:cli".into()),
        id: BuildId::generate(),
        package,
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

/// Unpacks the SRPM at `srpm` in a container of the target's image and takes its regular
/// files out into `dest` (the service's own, empty directory). The container mounts no
/// host directory (the SRPM is uploaded), has no network and no capability, cannot gain
/// privileges, and unpacks as [`UNPACK_USER`]; what it unpacked comes out through the
/// same checked tar path as a build's results ([`fetch_tree`]).
async fn unpack(
    engine: &Engine,
    target: &Target,
    srpm: &Path,
    dest: &Path,
) -> Result<Result<Taken, NoLongerBuilds>, CliError> {
    let spec = ContainerSpec {
        name: format!("packetary-unpack-{}", BuildId::generate()),
        image: target.image.clone(),
        labels: [(LABEL_BUILD.to_string(), "unpack".to_string())]
            .into_iter()
            .collect(),
        env: vec!["HOME=/tmp".into(), "LANG=C.UTF-8".into()],
        network: false,
        pids: Some(64),
        memory_bytes: Some(1 << 30),
        nano_cpus: Some(1_000_000_000),
        cap_add: vec![DROP_DEFAULT_CAPS.into()],
        security_opt: vec!["no-new-privileges".into()],
        user: Some(UNPACK_USER.into()),
        cmd: Some(vec![
            "bash".into(),
            "-c".into(),
            format!(
                "set -o pipefail; mkdir {UNPACK_DIR} && cd {UNPACK_DIR} && \
                 rpm2cpio /tmp/{UNPACK_SRPM} | head -c {} | \
                 cpio -idm --quiet --no-absolute-filenames",
                UNPACK_LIMITS.bytes
            ),
        ]),
        ..Default::default()
    };
    let guard = ContainerGuard::new(engine, spec.name.clone());
    let id = engine.create(&spec).await.map_err(infra)?;
    let tar = one_file_tar(srpm, UNPACK_SRPM)
        .map_err(|e| infra(anyhow!("cannot read {}: {e}", srpm.display())))?;
    engine.upload(&id, "/tmp", tar).await.map_err(infra)?;
    let ran = tokio::time::timeout(UNPACK_TIMEOUT, async {
        let mut stream = engine.start_attached(&id).await?;
        let mut log = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            let chunk = chunk?;
            let room = UNPACK_LOG_BYTES.saturating_sub(log.len());
            log.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok::<_, packetary::docker::InfraError>((engine.exit_code(&stream.exit()).await?, log))
    })
    .await;
    let taken = match ran {
        Err(_) => Ok(Err(NoLongerBuilds::UnpackTimeout)),
        Ok(Err(e)) => Err(infra(e)),
        Ok(Ok((code, log))) if code != 0 => Ok(Err(NoLongerBuilds::Unpack {
            code,
            log: String::from_utf8_lossy(&log)
                .trim()
                .escape_debug()
                .to_string(),
        })),
        Ok(Ok(_)) => {
            match fetch_tree(engine, &id, UNPACK_DIR, dest.to_path_buf(), UNPACK_LIMITS).await {
                Ok(taken) => Ok(Ok(taken)),
                Err(FetchError::TooBig(m)) => Ok(Err(NoLongerBuilds::TooBig(m))),
                Err(e @ FetchError::Infra(_)) => Err(infra(e)),
            }
        }
    };
    guard.remove().await.map_err(infra)?;
    taken
}

/// A name the package chose, printable: control characters escaped, so that a crafted
/// file name cannot forge lines of the report or drive the terminal.
fn shown(path: &Path) -> String {
    path.display().to_string().escape_debug().to_string()
}

/// A tar archive holding the file at `path` as `name` (mode 0444, so that any user of
/// the container reads it), streamed from the disk.
fn one_file_tar(
    path: &Path,
    name: &str,
) -> std::io::Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static>
{
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut h = tar::Header::new_gnu();
    h.set_path(name)?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(len);
    h.set_mode(0o444);
    h.set_cksum();
    // The file's bytes padded to a block, then the two empty blocks that end an archive.
    let tail = vec![0u8; (512 - (len % 512) as usize) % 512 + 1024];
    let head = bytes::Bytes::copy_from_slice(h.as_bytes());
    let body = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file).take(len));
    Ok(futures_util::stream::iter([Ok(head)])
        .chain(body)
        .chain(futures_util::stream::iter([Ok(bytes::Bytes::from(tail))])))
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
