//! `packetary publish RELEASE TARGET RPM|DIR...`: packages built elsewhere into a release's
//! repository, under the same rules as the service's publications.

use std::collections::BTreeSet;
use std::path::PathBuf;

use packetary::config::{Config, Release, ReleaseName};
use packetary::docker::Engine;
use packetary::repos::{self, Published, SnapshotId};
use packetary::store::Store;

use super::{absolute, ensure_images, infra, usage, CliError, EXIT_FAILED};

#[derive(clap::Args)]
pub struct PublishArgs {
    /// The release, as configured in `[releases.NAME]`.
    pub release: String,
    /// One of the release's targets.
    pub target: String,
    /// RPM files, or directories whose `*.rpm` files are published.
    #[arg(required = true)]
    pub packages: Vec<PathBuf>,
    /// Where repositories live (`<DATA_DIR>/repos/<release>/<target>/`). Default: [server] data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Looks the release up; an unknown one is a usage error naming the configured ones.
pub fn release<'a>(config: &'a Config, name: &str) -> Result<&'a Release, CliError> {
    ReleaseName::parse(name)
        .ok()
        .and_then(|n| config.releases.get(&n))
        .ok_or_else(|| {
            let known: Vec<&str> = config.releases.keys().map(|r| r.as_str()).collect();
            usage(anyhow::anyhow!(
                "there is no release named `{name}` in {}\n  fix: {}",
                config
                    .source
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the embedded defaults".into()),
                if known.is_empty() {
                    format!("add [releases.{name}] with `branches` and `targets` to the configuration (--config)")
                } else {
                    format!("use one of: {}", known.join(", "))
                }
            ))
        })
}

/// The snapshots builds in the service's store used, which pruning must keep (none when
/// there is no store in the data directory).
pub async fn protected_snapshots(
    data_dir: &std::path::Path,
) -> Result<BTreeSet<SnapshotId>, CliError> {
    if !data_dir.join("packetary.db").is_file() {
        return Ok(BTreeSet::new());
    }
    let store = Store::open(data_dir).await.map_err(infra)?;
    let used = store.snapshot_locations_in_use().await.map_err(infra)?;
    Ok(repos::snapshots_named(&used)
        .into_values()
        .flatten()
        .collect())
}

pub async fn run(config: Config, args: PublishArgs) -> Result<u8, CliError> {
    let target = config
        .select_targets(std::slice::from_ref(&args.target))
        .map_err(usage)?
        .remove(0);
    let release = check_build_publish(&config, &args.release, std::slice::from_ref(&target.name))?;
    let data_dir =
        absolute(args.data_dir.as_ref().unwrap_or(&config.server.data_dir)).map_err(usage)?;
    let mut packages = Vec::new();
    for p in &args.packages {
        let found = repos::packages_in(p).map_err(usage)?;
        if found.is_empty() {
            return Err(usage(anyhow::anyhow!(
                "{} holds no *.rpm file\n  fix: name RPM files or directories that hold them",
                p.display()
            )));
        }
        packages.extend(found);
    }
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    ensure_images(&engine, &config, std::iter::once(&target)).await?;
    let protected = protected_snapshots(&data_dir).await?;
    publish_and_print(
        &engine, &data_dir, &release, &target, &packages, &protected, false,
    )
    .await
}

/// Publishes and prints the outcome; a refusal is exit status 1, a bad file 2, a fault 3.
pub async fn publish_and_print(
    engine: &Engine,
    data_dir: &std::path::Path,
    release: &Release,
    target: &packetary::config::Target,
    packages: &[PathBuf],
    protected: &BTreeSet<SnapshotId>,
    to_stderr: bool,
) -> Result<u8, CliError> {
    let where_ = format!("{}/{}", release.name, target.name);
    // `build --json` keeps stdout for its one JSON document.
    let say = |line: String| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    match repos::publish_release(engine, data_dir, release, target, packages, protected).await {
        Ok(Published::Snapshot { id, added }) => {
            say(format!(
                "published {} package(s) into {where_}, snapshot {id}: {}",
                added.len(),
                added.join(" ")
            ));
            Ok(0)
        }
        Ok(Published::Unchanged { id }) => {
            say(format!(
                "unchanged: every package is already published in {where_} with the same contents{}",
                id.map(|i| format!(" (snapshot {i})")).unwrap_or_default()
            ));
            Ok(0)
        }
        Err(e @ repos::PublishError::Refused(_)) => {
            eprintln!("refused: {where_}: {e}");
            Ok(EXIT_FAILED)
        }
        Err(e @ repos::PublishError::BadPackage(_)) => Err(usage(e)),
        Err(e) => Err(infra(e)),
    }
}

/// `build --publish RELEASE`: checks the release and the targets before any build, so a
/// typo costs nothing.
pub fn check_build_publish(
    config: &Config,
    release_name: &str,
    targets: &[packetary::model::TargetName],
) -> Result<Release, CliError> {
    let r = release(config, release_name)?.clone();
    if let Some(t) = targets.iter().find(|t| !r.targets.contains(t)) {
        return Err(usage(anyhow::anyhow!(
            "release `{release_name}` has no target `{t}` (its targets: {})\n  fix: use one of its targets (--target), or add `{t}` to [releases.{release_name}] targets",
            r.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(r)
}

/// After `build --publish`: each target's succeeded builds (RPMs and SRPM) into the
/// release, one publication per target. Returns the exit status to merge with the builds'.
pub async fn publish_reports(
    config: &Config,
    release: &Release,
    data_dir: Option<&std::path::Path>,
    reports: &[packetary::executor::BuildReport],
    to_stderr: bool,
) -> Result<u8, CliError> {
    use packetary::model::Outcome;
    let data_dir = absolute(data_dir.unwrap_or(&config.server.data_dir)).map_err(usage)?;
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    let protected = protected_snapshots(&data_dir).await?;
    let mut by_target: std::collections::BTreeMap<_, Vec<PathBuf>> = Default::default();
    for r in reports {
        if let Outcome::Succeeded { source, binaries } = &r.outcome {
            let v = by_target.entry(r.target.clone()).or_default();
            v.push(source.clone());
            v.extend(binaries.iter().cloned());
        }
    }
    let mut code = 0;
    for (t, packages) in by_target {
        let Some(target) = config.targets.get(&t) else {
            continue;
        };
        code = code.max(
            publish_and_print(
                &engine, &data_dir, release, target, &packages, &protected, to_stderr,
            )
            .await?,
        );
    }
    Ok(code)
}
