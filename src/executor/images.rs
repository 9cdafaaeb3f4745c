//! Builder images Packetary knows how to make, and making them.
//!
//! No image registry is needed for the default target: the base is a Debian tree made with
//! mmdebstrap and imported, and the rpmbuild image is a Dockerfile on top of it.

use std::collections::HashMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

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

/// Label on an image built from a Dockerfile recipe: the recipe's [`Recipe::digest`]. An
/// image under a recipe's tag without it, or with another, was made from another recipe
/// (an older Packetary's: an `rpmbuild` image without the `iproute2` Swarm builds need)
/// and is built again.
pub const LABEL_RECIPE: &str = "org.packetary.recipe";

impl Recipe {
    /// What the image is made from: the Dockerfile recipe's files and its base's name.
    /// `None` for a base made by mmdebstrap, which is made only when missing.
    pub fn digest(&self) -> Option<String> {
        let RecipeKind::Dockerfile { files, base } = self.kind else {
            return None;
        };
        let mut h = Sha256::new();
        h.update(b"packetary-recipe-1\0");
        h.update(base.unwrap_or("").as_bytes());
        for (name, content) in files {
            h.update(b"\0");
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update(content.len().to_le_bytes());
            h.update(content.as_bytes());
        }
        Some(hex::encode(&h.finalize()[..16]))
    }
}

pub fn recipe_by_name(name: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name || r.tag == name)
}

pub fn recipe_for_image(image: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.tag == image)
}

/// Makes sure `image` exists and, when it is a recipe's, that it was made from this
/// recipe, building it (and its base) when it is missing or was made from another.
/// Returns the image id.
pub async fn ensure(
    engine: &Engine,
    cfg: &ImagesConfig,
    image: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, InfraError> {
    ensure_from(engine, cfg, image, RECIPES, progress).await
}

/// [`ensure`] with the recipes in `recipes` (tests bring their own).
pub async fn ensure_from(
    engine: &Engine,
    cfg: &ImagesConfig,
    image: &str,
    recipes: &'static [Recipe],
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, InfraError> {
    let recipe = recipes.iter().find(|r| r.tag == image);
    let present = engine.image_id_and_label(image, LABEL_RECIPE).await?;
    let stale = match (&present, recipe.and_then(Recipe::digest)) {
        (Some((id, label)), Some(digest)) if label.as_deref() != Some(digest.as_str()) => {
            Some((id.clone(), label.clone()))
        }
        (Some((id, _)), _) => return Ok(id.clone()),
        (None, _) => None,
    };
    let Some(recipe) = recipe else {
        return Err(InfraError(format!(
            "image {image} is not on the Docker host and Packetary has no recipe for it\n  fix: build or load it on the Docker host, or set the target's `image` to one of: {}",
            RECIPES.iter().map(|r| r.tag).collect::<Vec<_>>().join(", ")
        )));
    };
    match &stale {
        Some((_, label)) => progress(&format!(
            "image {image} was made from another recipe ({LABEL_RECIPE}={}); building it again from recipe `{}`",
            label.as_deref().unwrap_or("none"),
            recipe.name
        )),
        None => progress(&format!(
            "image {image} is missing; building it from recipe `{}`",
            recipe.name
        )),
    }
    if let Err(e) = build_from(engine, cfg, recipe, recipes, progress).await {
        // An image that builds still beats none: a host that cannot build it again (no
        // registry for a Fedora base) keeps building with the one it has.
        let Some((id, _)) = stale else {
            return Err(e);
        };
        progress(&format!(
            "could not build {image} again ({e}); going on with the image as it is\n  fix: `packetary images build {}` once the cause is fixed",
            recipe.name
        ));
        return Ok(id);
    }
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
    build_from(engine, cfg, recipe, RECIPES, progress).await
}

/// [`build`], its base found in `recipes`.
async fn build_from(
    engine: &Engine,
    cfg: &ImagesConfig,
    recipe: &Recipe,
    recipes: &'static [Recipe],
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), InfraError> {
    match recipe.kind {
        RecipeKind::Mmdebstrap => build_debian_base(engine, cfg, recipe, progress).await,
        RecipeKind::Dockerfile { files, base } => {
            let mut args = HashMap::new();
            if let Some(base) = base.and_then(|b| recipes.iter().find(|r| r.name == b)) {
                if engine.image_id(base.tag).await?.is_none() {
                    Box::pin(build_from(engine, cfg, base, recipes, progress)).await?;
                }
                args.insert("BASE".to_string(), base.tag.to_string());
            }
            progress(&format!("building {} ({})", recipe.tag, recipe.name));
            let context = context_tar(files)
                .map_err(|e| InfraError(format!("packing the build context: {e}")))?;
            let labels = recipe
                .digest()
                .map(|d| (LABEL_RECIPE.to_string(), d))
                .into_iter()
                .collect();
            let mut step = |l: &str| {
                if l.starts_with("Step ") || l.starts_with("Successfully") {
                    progress(&format!("  {l}"));
                }
            };
            engine
                .build_image(recipe.tag, context, &args, &labels, &mut step)
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
    }

    #[test]
    fn a_recipe_s_digest_follows_its_files() {
        const A: &[(&str, &str)] = &[("Dockerfile", "FROM x\n")];
        const B: &[(&str, &str)] = &[("Dockerfile", "FROM x\nRUN true\n")];
        let r = |files, base| Recipe {
            name: "t",
            tag: "t:1",
            kind: RecipeKind::Dockerfile { files, base },
            about: "",
        };
        let a = r(A, None)
            .digest()
            .expect("a Dockerfile recipe has a digest");
        assert_eq!(a.len(), 32);
        assert_eq!(r(A, None).digest().as_deref(), Some(a.as_str()));
        assert_ne!(r(B, None).digest().as_deref(), Some(a.as_str()));
        assert_ne!(
            r(A, Some("debian-base")).digest().as_deref(),
            Some(a.as_str())
        );
        assert!(recipe_by_name("debian-base")
            .and_then(Recipe::digest)
            .is_none());
        assert!(recipe_by_name("packetary/mock:el9").is_some());
    }
}
