//! An image under a recipe's tag that was made from another recipe (an older Packetary's:
//! its `rpmbuild` image had no `iproute2`, which Swarm builds need) is built again when a
//! build asks for it; one made from this recipe is not; and a host that cannot build it
//! again goes on with the image it has, saying so. Real images on the real daemon, with
//! recipes of the test's own under tags no other test uses.

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::executor::images::{ensure_from, Recipe, RecipeKind, LABEL_RECIPE};

use crate::common::{self, docker_out, IMAGE};

const BASE: &str = "packetary/debian-base:bookworm";
const TAG: &str = "packetary-test/recipe:stale";
const BROKEN_TAG: &str = "packetary-test/recipe:unbuildable";

static FIRST: &[Recipe] = &[Recipe {
    name: "test-recipe",
    tag: TAG,
    kind: RecipeKind::Dockerfile {
        files: &[(
            "Dockerfile",
            "FROM packetary/debian-base:bookworm\nLABEL org.packetary.test=first\n",
        )],
        base: None,
    },
    about: "a test's",
}];

static SECOND: &[Recipe] = &[Recipe {
    name: "test-recipe",
    tag: TAG,
    kind: RecipeKind::Dockerfile {
        files: &[(
            "Dockerfile",
            "FROM packetary/debian-base:bookworm\nLABEL org.packetary.test=second\n",
        )],
        base: None,
    },
    about: "a test's",
}];

static BROKEN: &[Recipe] = &[Recipe {
    name: "test-unbuildable",
    tag: BROKEN_TAG,
    kind: RecipeKind::Dockerfile {
        files: &[(
            "Dockerfile",
            "FROM packetary/debian-base:bookworm\nRUN exit 7\n",
        )],
        base: None,
    },
    about: "a test's",
}];

/// Runs `ensure_from` and returns the image id and the progress lines it printed.
async fn ensure(engine: &Engine, image: &str, recipes: &'static [Recipe]) -> (String, String) {
    let cfg = Config::load(None).expect("defaults").images;
    let mut said = String::new();
    let id = ensure_from(engine, &cfg, image, recipes, &mut |l| {
        said.push_str(l);
        said.push('\n');
    })
    .await
    .unwrap_or_else(|e| panic!("ensure {image}: {e}\n{said}"));
    (id, said)
}

async fn test_label(engine: &Engine, image: &str) -> Option<String> {
    engine
        .image_label(image, "org.packetary.test")
        .await
        .expect("inspect")
}

#[tokio::test]
async fn an_image_made_from_another_recipe_is_built_again() {
    let Some(engine) = common::docker().await else {
        return;
    };
    // The base (and the suite's builder image) exist before the test's recipes use them.
    ensure(&engine, IMAGE, packetary::executor::images::RECIPES).await;
    let base_id = engine.image_id(BASE).await.expect("inspect").expect("base");

    // An older Packetary's image: the tag, no recipe label.
    docker_out(&["tag", BASE, TAG]);
    let (id, said) = ensure(&engine, TAG, FIRST).await;
    assert!(said.contains("was made from another recipe"), "{said}");
    assert_ne!(id, base_id, "{said}");
    assert_eq!(test_label(&engine, TAG).await.as_deref(), Some("first"));
    assert_eq!(
        engine
            .image_label(TAG, LABEL_RECIPE)
            .await
            .expect("inspect"),
        FIRST[0].digest()
    );

    // Made from this recipe: used as it is.
    let (again, said) = ensure(&engine, TAG, FIRST).await;
    assert_eq!(again, id);
    assert!(said.is_empty(), "nothing to build, nothing said: {said}");

    // The recipe changed (a newer Packetary): built again.
    let (newer, said) = ensure(&engine, TAG, SECOND).await;
    assert!(said.contains("was made from another recipe"), "{said}");
    assert_ne!(newer, id);
    assert_eq!(test_label(&engine, TAG).await.as_deref(), Some("second"));

    docker_out(&["rmi", "-f", TAG]);
}

#[tokio::test]
async fn an_image_that_cannot_be_built_again_is_used_as_it_is() {
    let Some(engine) = common::docker().await else {
        return;
    };
    ensure(&engine, IMAGE, packetary::executor::images::RECIPES).await;
    let base_id = engine.image_id(BASE).await.expect("inspect").expect("base");
    docker_out(&["tag", BASE, BROKEN_TAG]);
    let (id, said) = ensure(&engine, BROKEN_TAG, BROKEN).await;
    assert_eq!(id, base_id, "the image it had: {said}");
    assert!(
        said.contains("could not build packetary-test/recipe:unbuildable again")
            && said.contains("going on with the image as it is")
            && said.contains("fix: `packetary images build test-unbuildable`"),
        "{said}"
    );
    // Missing, the same recipe is an error: there is nothing to go on with.
    docker_out(&["rmi", BROKEN_TAG]);
    let cfg = Config::load(None).expect("defaults").images;
    let e = ensure_from(&engine, &cfg, BROKEN_TAG, BROKEN, &mut |_| {})
        .await
        .expect_err("nothing to go on with");
    assert!(e.to_string().contains("building image"), "{e}");
}
