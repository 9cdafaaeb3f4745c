//! Builder images Packetary knows how to make, and making them.
//!
//! No image registry is needed for the default target: the base is a Debian tree made with
//! mmdebstrap and imported, and the rpmbuild image is a Dockerfile on top of it.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::ImagesConfig;
use crate::docker::{Engine, InfraError};

#[derive(Debug, Clone, Copy)]
pub enum RecipeKind {
    /// `mmdebstrap --variant=minbase SUITE` piped to `docker import`.
    Mmdebstrap,
    /// A Dockerfile and the files it copies, embedded in the binary.
    Dockerfile {
        files: &'static [(&'static str, &'static str)],
        /// Recipe whose image is the `BASE` build argument, built first when missing.
        base: Option<&'static str>,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub name: &'static str,
    pub tag: &'static str,
    pub kind: RecipeKind,
    pub about: &'static str,
}

pub const RECIPES: &[Recipe] = &[
    Recipe {
        name: "debian-base",
        tag: "packetary/debian-base:bookworm",
        kind: RecipeKind::Mmdebstrap,
        about: "minimal Debian made with mmdebstrap (no registry needed)",
    },
    Recipe {
        name: "rpmbuild",
        tag: "packetary/rpmbuild:bookworm",
        kind: RecipeKind::Dockerfile {
            files: &[
                (
                    "Dockerfile",
                    include_str!("../../images/rpmbuild/Dockerfile"),
                ),
                (
                    "virtual-provides.spec",
                    include_str!("../../images/rpmbuild/virtual-provides.spec"),
                ),
                (
                    "macros.packetary-fedora",
                    include_str!("../../images/rpmbuild/macros.packetary-fedora"),
                ),
            ],
            base: Some("debian-base"),
        },
        about: "rpm, dnf, createrepo_c and build-essential on debian-base (rpmbuild backend)",
    },
    Recipe {
        name: "mock-fedora",
        tag: "packetary/mock:fedora",
        kind: RecipeKind::Dockerfile {
            files: &[(
                "Dockerfile",
                include_str!("../../images/mock-fedora/Dockerfile"),
            )],
            base: None,
        },
        about: "Mock on Fedora (needs a registry serving fedora images)",
    },
    Recipe {
        name: "mock-el9",
        tag: "packetary/mock:el9",
        kind: RecipeKind::Dockerfile {
            files: &[(
                "Dockerfile",
                include_str!("../../images/mock-el9/Dockerfile"),
            )],
            base: None,
        },
        about: "Mock on an EL9 rebuild with EPEL (needs a registry)",
    },
];

pub fn recipe_by_name(name: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name || r.tag == name)
}

pub fn recipe_for_image(image: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.tag == image)
}

/// Makes sure `image` exists, building it (and its base) from a recipe when it is missing.
/// Returns the image id.
pub async fn ensure(
    engine: &Engine,
    cfg: &ImagesConfig,
    image: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, InfraError> {
    if let Some(id) = engine.image_id(image).await? {
        return Ok(id);
    }
    let Some(recipe) = recipe_for_image(image) else {
        return Err(InfraError(format!(
            "image {image} is not on the Docker host and Packetary has no recipe for it\n  fix: build or load it on the Docker host, or set the target's `image` to one of: {}",
            RECIPES.iter().map(|r| r.tag).collect::<Vec<_>>().join(", ")
        )));
    };
    progress(&format!(
        "image {image} is missing; building it from recipe `{}`",
        recipe.name
    ));
    build(engine, cfg, recipe, progress).await?;
    engine
        .image_id(image)
        .await?
        .ok_or_else(|| InfraError(format!("image {image} is still missing after building it")))
}

/// Builds a recipe's image, even if present (bases only when missing).
pub async fn build(
    engine: &Engine,
    cfg: &ImagesConfig,
    recipe: &Recipe,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), InfraError> {
    match recipe.kind {
        RecipeKind::Mmdebstrap => build_debian_base(engine, cfg, recipe, progress).await,
        RecipeKind::Dockerfile { files, base } => {
            let mut args = HashMap::new();
            if let Some(base) = base.and_then(recipe_by_name) {
                if engine.image_id(base.tag).await?.is_none() {
                    Box::pin(build(engine, cfg, base, progress)).await?;
                }
                args.insert("BASE".to_string(), base.tag.to_string());
            }
            progress(&format!("building {} ({})", recipe.tag, recipe.name));
            let context = context_tar(files)
                .map_err(|e| InfraError(format!("packing the build context: {e}")))?;
            let mut step = |l: &str| {
                if l.starts_with("Step ") || l.starts_with("Successfully") {
                    progress(&format!("  {l}"));
                }
            };
            engine
                .build_image(recipe.tag, context, &args, &mut step)
                .await
        }
    }
}

async fn build_debian_base(
    engine: &Engine,
    cfg: &ImagesConfig,
    recipe: &Recipe,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), InfraError> {
    let dir = tempdir()?;
    let tarball = dir.join("rootfs.tar");
    progress(&format!(
        "running mmdebstrap {} from {} (about a minute)",
        cfg.debian_suite, cfg.debian_mirror
    ));
    let out = tokio::process::Command::new("mmdebstrap")
        .args(["--variant=minbase", "--quiet"])
        .arg(&cfg.debian_suite)
        .arg(&tarball)
        .arg(&cfg.debian_mirror)
        .output()
        .await
        .map_err(|e| {
            InfraError(format!(
                "cannot run mmdebstrap: {e}\n  fix: install it (`apt-get install mmdebstrap`)"
            ))
        });
    let result = match out {
        Ok(o) if o.status.success() => {
            progress(&format!("importing the tree as {}", recipe.tag));
            let (repo, tag) = recipe.tag.split_once(':').unwrap_or((recipe.tag, "latest"));
            engine.import_rootfs(&tarball, repo, tag).await
        }
        Ok(o) => Err(InfraError(format!(
            "mmdebstrap failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ))),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempdir() -> Result<PathBuf, InfraError> {
    let dir = std::env::temp_dir().join(format!(
        "packetary-image-{}",
        crate::model::BuildId::generate()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| InfraError(format!("create {}: {e}", dir.display())))?;
    Ok(dir)
}

fn context_tar(files: &[(&str, &str)]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes())?;
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_target_image_has_a_recipe() {
        let c = crate::config::Config::load(None).expect("defaults");
        for t in c.targets.values() {
            assert!(
                recipe_for_image(&t.image).is_some(),
                "{} has no recipe",
                t.image
            );
        }
    }

    #[test]
    fn context_holds_the_files() {
        let data =
            context_tar(&[("Dockerfile", "FROM x\n"), ("a.spec", "Name: a\n")]).expect("tar");
        let mut ar = tar::Archive::new(&data[..]);
        let names: Vec<String> = ar
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["Dockerfile", "a.spec"]);
        assert!(recipe_by_name("rpmbuild").is_some());
        assert!(recipe_by_name("packetary/mock:el9").is_some());
    }
}
