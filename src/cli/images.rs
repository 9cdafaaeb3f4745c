//! `packetary images`: list the builder images, build them, or push them to the registry a
//! Swarm's nodes pull from.

use std::time::Instant;

use packetary::config::{Config, ExecutorConfig};
use packetary::docker::{pinned_reference, Engine};
use packetary::executor::images;

use super::{infra, progress_line, usage, CliError, ImagesCommand};

pub async fn run(config: Config, command: ImagesCommand) -> Result<u8, CliError> {
    // Refused before any Docker call: without a registry there is nothing to push to.
    let registry = match (&command, &config.executor) {
        (ImagesCommand::Push { .. }, ExecutorConfig::Swarm(s)) => Some(s.registry.clone()),
        (ImagesCommand::Push { .. }, ExecutorConfig::Local) => {
            return Err(usage(no_registry(&config)))
        }
        _ => None,
    };
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    match command {
        ImagesCommand::List => {
            for r in images::RECIPES {
                let present = engine.image_id(r.tag).await.map_err(infra)?;
                println!(
                    "{:<12} {:<32} {:<8} {}",
                    r.name,
                    r.tag,
                    if present.is_some() {
                        "present"
                    } else {
                        "missing"
                    },
                    r.about
                );
            }
            Ok(0)
        }
        ImagesCommand::Ensure => {
            let mut seen = std::collections::HashSet::new();
            for t in config.targets.values() {
                if !seen.insert(t.image.clone()) {
                    continue;
                }
                if images::recipe_for_image(&t.image).is_none()
                    && engine.image_id(&t.image).await.map_err(infra)?.is_none()
                {
                    progress_line(&format!(
                        "target {} uses {}, which is missing and has no recipe; skipped",
                        t.name, t.image
                    ));
                    continue;
                }
                let id =
                    images::ensure(&engine, &config.images, &t.image, &mut |l| progress_line(l))
                        .await
                        .map_err(infra)?;
                progress_line(&format!("{} is present ({id})", t.image));
            }
            Ok(0)
        }
        ImagesCommand::Build { name } => {
            let recipes: Vec<&images::Recipe> = if name.is_empty() {
                let mut v: Vec<&images::Recipe> = config
                    .targets
                    .values()
                    .filter_map(|t| images::recipe_for_image(&t.image))
                    .collect();
                v.dedup_by_key(|r| r.name);
                v
            } else {
                name.iter()
                    .map(|n| {
                        images::recipe_by_name(n).ok_or_else(|| {
                            usage(anyhow::anyhow!(
                                "no image recipe named `{n}`; known: {}",
                                images::RECIPES
                                    .iter()
                                    .map(|r| r.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            for r in recipes {
                let start = Instant::now();
                images::build(&engine, &config.images, r, &mut |l| progress_line(l))
                    .await
                    .map_err(infra)?;
                progress_line(&format!(
                    "{} ready in {:.1}s",
                    r.tag,
                    start.elapsed().as_secs_f64()
                ));
            }
            Ok(0)
        }
        ImagesCommand::Push { name } => {
            let registry = registry.unwrap_or_default();
            let wanted: Vec<String> = if name.is_empty() {
                let mut seen = std::collections::HashSet::new();
                config
                    .targets
                    .values()
                    .filter(|t| seen.insert(t.image.clone()))
                    .map(|t| t.image.clone())
                    .collect()
            } else {
                name.iter()
                    .map(|n| images::recipe_by_name(n).map_or(n.clone(), |r| r.tag.to_string()))
                    .collect()
            };
            for image in wanted {
                images::ensure(&engine, &config.images, &image, &mut |l| progress_line(l))
                    .await
                    .map_err(infra)?;
                progress_line(&format!("pushing {image} to {registry}"));
                let start = Instant::now();
                let digest = engine
                    .push_to(&image, &registry, &mut |l| progress_line(&format!("  {l}")))
                    .await
                    .map_err(infra)?;
                progress_line(&format!(
                    "{image} pushed in {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
                println!(
                    "{image} -> {}",
                    pinned_reference(&registry, &image, &digest)
                );
            }
            Ok(0)
        }
    }
}

/// Why `images push` is refused on a configuration without a Swarm, naming the file and key.
fn no_registry(config: &Config) -> anyhow::Error {
    let (file, fix) = match &config.source {
        Some(p) => (p.display().to_string(), format!("in {}", p.display())),
        None => (
            "the embedded defaults (no --config)".to_string(),
            "in a file given with --config".to_string(),
        ),
    };
    anyhow::anyhow!(
        "{file}: key `executor.registry` is not set: `packetary images push` pushes to the registry a Swarm's nodes pull from, and this configuration has no [executor] kind = \"swarm\"\n  fix: set [executor] registry (with kind = \"swarm\" and callback_url) {fix}, e.g. registry = \"127.0.0.1:5000\""
    )
}
