//! `packetary rebuild BUILD`: builds a recorded build again from its recorded inputs and
//! says, per package, whether the new one has the same payload digest.
//!
//! BUILD is a results directory (`OUT/<target>/<n-v-r>/`, holding `logs/build.json` and
//! the `inputs/` copy of the package's files) or the id of a build of the service, found
//! under `<data_dir>/results/<id>/`. The rebuild uses the recorded `SOURCE_DATE_EPOCH`,
//! image (by tag; a different image id is named as a changed input), arch and
//! repositories, and the configured target's backend and limits.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use packetary::config::{Config, Repo, RepoLocation};
use packetary::docker::Engine;
use packetary::executor::provenance::{self, Provenance, BUILD_JSON_FORMAT, INPUTS_DIR};
use packetary::executor::{BuildRequest, Executor};
use packetary::format::rpm::rpm_payload_digest;
use packetary::model::{BuildId, Outcome};

use super::rebuild_common::{diffoscope, short, RemoveOnDrop};
use super::{infra, progress_line, usage, CliError, EXIT_FAILED, EXIT_INFRA};

#[derive(clap::Args)]
pub struct RebuildArgs {
    /// A results directory (holding logs/build.json) or a build id of the service.
    #[arg(required_unless_present = "release", conflicts_with = "release")]
    pub build: Option<String>,
    /// Rebuild every source package of this release's latest snapshot, from that snapshot.
    #[arg(long)]
    pub release: Option<String>,
    /// With --release: only this target (default: every target of the release).
    #[arg(long, requires = "release")]
    pub target: Option<String>,
    /// The service's data directory, where build ids are looked up. Default: [server] data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the rebuild's results here (default: a temporary directory, removed).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// The part of `build.json` a rebuild reads.
#[derive(Deserialize)]
struct Recorded {
    #[serde(default)]
    format: u32,
    id: String,
    target: String,
    provenance: Option<Provenance>,
    outcome: serde_json::Value,
}

pub async fn run(config: Config, args: RebuildArgs) -> Result<u8, CliError> {
    let build = match (&args.build, &args.release) {
        (Some(b), None) => b.clone(),
        (None, Some(release)) => {
            return super::rebuild_release::run(
                &config,
                release,
                args.target.as_deref(),
                args.data_dir.as_deref(),
            )
            .await
        }
        _ => return Err(usage(anyhow!("give a BUILD or --release NAME, not both"))),
    };
    let dir = find_results(&build, &args, &config)?;
    let json = dir.join("logs/build.json");
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("cannot read {}", json.display()))
        .map_err(usage)?;
    let rec: Recorded = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a build record", json.display()))
        .map_err(usage)?;
    let Some(prov) = rec.provenance.filter(|_| rec.format >= BUILD_JSON_FORMAT) else {
        return Err(usage(anyhow!(
            "{} (format {}) does not record the build's inputs\n  fix: build it again with this packetary (format {BUILD_JSON_FORMAT})",
            json.display(),
            rec.format
        )));
    };
    if rec.outcome.get("state").and_then(|s| s.as_str()) != Some("succeeded") {
        return Err(usage(anyhow!(
            "build {} did not succeed: it has no packages to compare",
            rec.id
        )));
    }
    let recorded_files: Vec<String> = std::iter::once(&rec.outcome["source"])
        .chain(rec.outcome["binaries"].as_array().into_iter().flatten())
        .filter_map(|p| p.as_str())
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();

    let target_name = packetary::model::TargetName::parse(&rec.target).map_err(usage)?;
    let Some(mut target) = config.targets.get(&target_name).cloned() else {
        return Err(usage(anyhow!(
            "build {} was for target {}, which the configuration does not define\n  fix: pass the configuration it was built with (--config)",
            rec.id,
            rec.target
        )));
    };
    if target.backend != prov.backend {
        return Err(usage(anyhow!(
            "target {} uses the {} backend now, the build used {}\n  fix: pass the configuration it was built with (--config)",
            rec.target,
            target.backend.as_str(),
            prov.backend.as_str()
        )));
    }
    target.image = prov.image.clone();
    target.arch = prov.arch.clone();
    target.repos = recorded_repos(&prov)?;

    let inputs = dir.join(INPUTS_DIR);
    if !inputs.is_dir() {
        return Err(usage(anyhow!(
            "{} has no {INPUTS_DIR}/ (the package's files): it was built by an older packetary",
            dir.display()
        )));
    }
    let inputs = inputs.canonicalize().map_err(infra)?;
    let package = provenance::kept_package(&inputs, &prov.spec, &prov.source_dir);
    if !package.spec.starts_with(&inputs) || !package.source_dir.starts_with(&inputs) {
        return Err(usage(anyhow!(
            "{} names a spec outside its inputs",
            json.display()
        )));
    }

    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    let image_id = engine.image_id(&target.image).await.map_err(infra)?;
    let Some(image_id) = image_id else {
        return Err(infra(anyhow!(
            "the recorded image {} is not on the Docker host\n  fix: build or pull it (packetary images build)",
            target.image
        )));
    };

    let mut _tmp = None;
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let t = std::env::temp_dir().join(format!("packetary-rebuild-{}", BuildId::generate()));
            _tmp = Some(RemoveOnDrop(t.clone()));
            t
        }
    };
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create {}", out.display()))
        .map_err(infra)?;
    let out = out.canonicalize().map_err(infra)?;
    progress_line(&format!(
        "rebuilding {} ({}) for {} with SOURCE_DATE_EPOCH={}",
        rec.id,
        prov.spec.display(),
        rec.target,
        prov.source_date_epoch
    ));
    let executor = Executor::new(engine);
    let mut req = BuildRequest {
        deps_cache: packetary::executor::DepsCache::Shared("local:cli".into()),
        id: BuildId::generate(),
        package,
        target,
        out_root: out.clone(),
        extra_repos: vec![],
        source_date_epoch: Some(prov.source_date_epoch),
        inputs: None,
    };
    // The inputs as they are now, with the image id just looked up.
    req.inputs = Some(
        provenance::of_request(&req, Some(image_id))
            .await
            .map_err(infra)?,
    );
    let report = executor.run(req, None, CancellationToken::new()).await;
    if let Some(now) = &report.provenance {
        for d in prov.differences(now) {
            println!("input changed: {d}");
        }
    }
    let new_dir = match &report.outcome {
        Outcome::Succeeded { .. } => report.dir.clone(),
        Outcome::Error { message } => {
            return Err(infra(anyhow!("the rebuild could not run: {message}")));
        }
        Outcome::Failed { message, log, .. } => {
            println!("rebuild failed: {message} (log: {})", log.display());
            return Ok(EXIT_FAILED);
        }
        Outcome::Cancelled => return Ok(EXIT_INFRA),
    };
    Ok(compare(&dir, &new_dir, &recorded_files))
}

/// Prints `identical NAME` or `differs NAME (...)` for each recorded package and each new
/// one; returns the exit status.
pub(super) fn compare(old_dir: &Path, new_dir: &Path, recorded: &[String]) -> u8 {
    let mut new_files: Vec<String> = std::fs::read_dir(new_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rpm"))
        .collect();
    new_files.sort();
    let mut code = 0;
    for name in recorded {
        let old = old_dir.join(name);
        let new = new_dir.join(name);
        if !new.exists() {
            println!("differs {name} (the rebuild did not make it)");
            code = EXIT_FAILED;
            continue;
        }
        match (rpm_payload_digest(&old), rpm_payload_digest(&new)) {
            (Ok(a), Ok(b)) if a == b => println!("identical {name}"),
            (Ok(a), Ok(b)) => {
                println!("differs {name} (payload {} → {})", short(&a), short(&b));
                diffoscope(&old, &new);
                code = EXIT_FAILED;
            }
            (Err(e), _) | (_, Err(e)) => {
                println!("differs {name} ({e})");
                code = EXIT_FAILED;
            }
        }
    }
    for name in new_files.iter().filter(|n| !recorded.contains(n)) {
        println!("differs {name} (new in the rebuild)");
        code = EXIT_FAILED;
    }
    code
}

/// The recorded repositories as the rebuild's (a directory one must still exist).
fn recorded_repos(prov: &Provenance) -> Result<Vec<Repo>, CliError> {
    prov.repositories
        .iter()
        .map(|r| {
            let location = match r.url.strip_prefix("file://") {
                Some(p) => {
                    let p = PathBuf::from(p);
                    if !p.is_dir() {
                        return Err(infra(anyhow!(
                            "input changed: repository {} ({}) is gone; the rebuild cannot see what the build saw",
                            r.name,
                            r.url
                        )));
                    }
                    RepoLocation::Dir(p)
                }
                None => RepoLocation::Url(r.url.clone()),
            };
            Ok(Repo {
                name: r.name.clone(),
                location,
            })
        })
        .collect()
}

/// The results directory BUILD names.
fn find_results(build: &str, args: &RebuildArgs, config: &Config) -> Result<PathBuf, CliError> {
    let p = Path::new(build);
    if p.is_dir() {
        if !p.join("logs/build.json").is_file() {
            return Err(usage(anyhow!(
                "{} holds no logs/build.json\n  fix: pass a results directory OUT/<target>/<name-version-release>/ or a build id",
                p.display()
            )));
        }
        return Ok(p.to_path_buf());
    }
    let id = BuildId::parse(build).map_err(|_| {
        usage(anyhow!(
            "{build} is neither a results directory nor a build id"
        ))
    })?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.server.data_dir.clone());
    let root = data_dir.join("results").join(id.as_str());
    // <root>/<target>/<n-v-r>/logs/build.json; staging directories start with a dot.
    let found: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|t| std::fs::read_dir(t.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|d| {
            !d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && d.join("logs/build.json").is_file()
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(usage(anyhow!(
            "no results of build {id} under {}\n  fix: pass the service's data directory (--data-dir) or a results directory",
            root.display()
        ))),
        _ => Err(usage(anyhow!(
            "build {id} has several results under {}; pass one of them",
            root.display()
        ))),
    }
}
