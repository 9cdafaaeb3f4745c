//! Issue 22 (M4): a release's package repositories show the packages of the repositories
//! feeding it, so they, their `.repo` files and their entry in `/repos/` need the page
//! token when a private repository feeds the release (or every repository does and any is
//! private). Through the real router, over repositories laid out on disk as publication
//! leaves them; no Docker.

use crate::serve_common;

use std::path::Path;
use std::sync::Arc;

use packetary::config::Secret;
use packetary::web::access::Access;
use serve_common::tester::QueueTester;
use serve_common::Mode;
use tower::ServiceExt;

const TOKEN: &str = "page-s3cret";

/// A published repository `<release>/t` with a `latest` snapshot.
fn release_repo(root: &Path, release: &str) {
    let dir = root.join("repos").join(release).join("t");
    std::fs::create_dir_all(dir.join("latest/repodata")).expect("mkdir");
    std::fs::write(dir.join(".lock"), "").expect("lock");
    std::fs::write(dir.join("latest/repodata/repomd.xml"), "<repomd/>").expect("repomd");
}

async fn get(router: &axum::Router, uri: &str, token: Option<&str>) -> (u16, String) {
    let mut r = axum::http::Request::get(uri);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let req = r.body(axum::body::Body::empty()).expect("req");
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_release_fed_by_a_private_repository_needs_the_page_token() {
    let t = QueueTester::new(Mode::Succeed).await;
    let root = t.queue().store_dir();
    // `acme` is fed by a pattern covering the private repository (case as GitHub
    // compares it), `every` by all repositories, `gone` is no longer configured.
    for r in ["acme", "every", "gone", "open"] {
        release_repo(&root, r);
    }
    let mut state = serve_common::app_state(t.queue(), &["o/*"]);
    state.access = Arc::new(
        Access::new(vec!["github:Acme/secret".into()], Some(Secret::new(TOKEN))).with_releases([
            ("acme".to_string(), vec!["github:acme/*".to_string()]),
            ("every".to_string(), vec![]),
            ("open".to_string(), vec!["github:other/pkgs".to_string()]),
        ]),
    );
    let router = packetary::web::router(state, 1 << 20);
    for r in ["acme", "every", "gone"] {
        for uri in [
            format!("/repos/{r}/t/latest/repodata/repomd.xml"),
            format!("/repos/{r}/t.repo"),
            format!("/repos/{r}/t/latest/"),
            format!("/repos/{r}/"),
        ] {
            let (status, body) = get(&router, &uri, None).await;
            assert_eq!(status, 401, "{uri} without the token: {body}");
            assert!(
                !body.contains("<repomd/>") && !body.contains("baseurl"),
                "{uri}"
            );
            assert_eq!(get(&router, &uri, Some("wrong")).await.0, 401, "{uri}");
            assert_eq!(get(&router, &uri, Some(TOKEN)).await.0, 200, "{uri}");
        }
    }
    let (status, body) = get(&router, "/repos/open/t/latest/repodata/repomd.xml", None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "<repomd/>"),
        "a public release"
    );
    assert_eq!(get(&router, "/repos/open/t.repo", None).await.0, 200);
    let (_, listed) = get(&router, "/repos/", None).await;
    assert!(listed.contains("open/"), "{listed}");
    for r in ["acme/", "every/", "gone/"] {
        assert!(
            !listed.contains(r),
            "{r} listed without the token: {listed}"
        );
    }
    let (_, listed) = get(&router, "/repos/", Some(TOKEN)).await;
    for r in ["acme/", "every/", "gone/", "open/"] {
        assert!(
            listed.contains(r),
            "{r} not listed with the token: {listed}"
        );
    }
}

#[tokio::test]
async fn without_private_repositories_every_release_is_public() {
    let t = QueueTester::new(Mode::Succeed).await;
    release_repo(&t.queue().store_dir(), "every");
    let mut state = serve_common::app_state(t.queue(), &["o/*"]);
    state.access =
        Arc::new(Access::new(vec![], None).with_releases([("every".to_string(), vec![])]));
    let router = packetary::web::router(state, 1 << 20);
    assert_eq!(get(&router, "/repos/every/t.repo", None).await.0, 200);
    assert!(get(&router, "/repos/", None).await.1.contains("every/"));
}
