//! `packetary images`: list the builder images, or build them.

use std::time::Instant;

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::executor::images;

use super::{infra, progress_line, usage, CliError, ImagesCommand};

pub async fn run(config: Config, command: ImagesCommand) -> Result<u8, CliError> {
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
    }
}
