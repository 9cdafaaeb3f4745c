//! The service's pages as a reader gets them, over a queue with fake parts
//! ([`QueueTester`]): private repositories behind the page token, what comes from
//! repositories escaped, a running build's log served live through the runner.

use crate::serve_common;

use serve_common::tester::{sha, QueueTester};
use serve_common::Mode;

#[tokio::test]
async fn pages_of_private_repositories_need_the_page_token() {
    use tower::ServiceExt;
    let t = QueueTester::new(Mode::Succeed).await;
    let id = t
        .insert_build("secret-pkg", "secret-pkg/secret-pkg.spec")
        .await;
    let mut state = serve_common::app_state(t.queue(), &["o/*"]);
    state.access = std::sync::Arc::new(packetary::web::access::Access::new(
        vec!["github:o/*".into()],
        Some(packetary::config::Secret::new("page-s3cret")),
    ));
    let router = packetary::web::router(state, 1 << 20);
    let send = |req: axum::http::Request<axum::body::Body>| {
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.expect("response");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let get = |uri: String, auth: Option<(&'static str, String)>| {
        let mut r = axum::http::Request::get(uri);
        if let Some((k, v)) = auth {
            r = r.header(k, v);
        }
        r.body(axum::body::Body::empty()).expect("req")
    };
    for uri in [
        format!("/builds/{id}"),
        format!("/builds/{id}/logs/build.log"),
        format!("/builds/{id}/artifacts/x.rpm"),
    ] {
        let (status, _, body) = send(get(uri.clone(), None)).await;
        assert_eq!(status, 401, "{uri}: {body}");
        assert!(body.contains("/login?next="), "{body}");
        let (status, _, _) = send(get(
            uri.clone(),
            Some(("authorization", "Bearer wrong".into())),
        ))
        .await;
        assert_eq!(status, 401, "{uri} with a wrong token");
    }
    let (status, _, _) = send(get(
        format!("/builds/{id}"),
        Some(("authorization", "Bearer page-s3cret".into())),
    ))
    .await;
    assert_eq!(status, 200);
    let (_, _, index) = send(get("/".into(), None)).await;
    assert!(
        !index.contains("secret-pkg"),
        "listed without the token: {index}"
    );

    // Logging in sets the cookie, which then shows the private builds.
    let login = |token: &str, next: &str| {
        axum::http::Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(format!("token={token}&next={next}")))
            .expect("req")
    };
    let (status, _, _) = send(login("wrong", "/")).await;
    assert_eq!(status, 401);
    let (status, headers, _) = send(login("page-s3cret", "%2F%2Fevil.example%2F")).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/", "an open redirect");
    let cookie = headers["set-cookie"].to_str().expect("ascii").to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_string();
    let (_, _, index) = send(get("/".into(), Some(("cookie", pair)))).await;
    assert!(index.contains("secret-pkg"), "{index}");
}

#[tokio::test]
async fn pages_escape_what_comes_from_repositories() {
    let t = QueueTester::new(Mode::Succeed).await;
    let evil = "<script>alert(1)</script>";
    let id = t.insert_build(evil, &format!("{evil}/x.spec")).await;
    for uri in [
        "/".to_string(),
        format!("/builds/{id}"),
        format!("/?commit={}", sha('a')),
    ] {
        let page = t.get(&uri).await;
        assert_eq!(page.status, 200, "{uri}");
        let ct = page.content_type.expect("content-type");
        assert!(ct.starts_with("text/html"), "{ct}");
        let html = page.body;
        assert!(!html.contains(evil), "{uri}: unescaped\n{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{uri}\n{html}"
        );
    }
    for uri in [
        "/builds/nope",
        "/builds/..%2F..%2Fetc",
        &format!("/builds/{id}/logs/..%2Fpacketary.db"),
        &format!("/builds/{id}/artifacts/../../packetary.db"),
    ] {
        assert_eq!(t.get(uri).await.status, 404, "{uri}");
    }
}

/// A running build's page and log come from the runner (`Runner::live_log`), not from a
/// directory on the service's disk; only the allow-listed logs are asked for.
#[tokio::test]
async fn a_running_build_s_logs_are_served_live() {
    let t = QueueTester::new(Mode::Succeed).await;
    let id = t.insert_build("hello", "hello/hello.spec").await;
    let running = t.claim().await;
    assert_eq!(running.id, id);
    // What the runner has of the build's log: not on the service's disk (an executor
    // elsewhere keeps its logs elsewhere), asked through `Runner::live_log`.
    t.set_live_log(&id, "build.log", "+ make -j2\ncompiling...\n");
    t.set_live_log(&id, "secret.log", "not a live log's name");

    let log = t.get(&format!("/builds/{id}/logs/build.log")).await;
    assert_eq!(log.status, 200);
    assert_eq!(log.body, "+ make -j2\ncompiling...\n");
    assert_eq!(
        log.refresh.as_deref(),
        Some("5"),
        "a live log reloads itself"
    );
    let page = t.get(&format!("/builds/{id}")).await;
    assert_eq!(page.status, 200);
    let html = page.body;
    assert!(html.contains("Logs (live)"), "{html}");
    assert!(
        html.contains(&format!("/builds/{id}/logs/build.log")),
        "{html}"
    );
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(!html.contains("root.log"), "not written yet: {html}");
    assert!(!html.contains("secret.log"), "{html}");
    let other = t.get(&format!("/builds/{id}/logs/secret.log")).await;
    assert_eq!(
        other.status, 404,
        "only the allow-listed logs are asked for"
    );
    let escape = t
        .get(&format!("/builds/{id}/logs/..%2F..%2F..%2Fpacketary.db"))
        .await;
    assert_eq!(escape.status, 404);
}

/// A change's package repository is as private as its project, whatever the depth of the
/// project's path (Gerrit's `team/secret/specs`, not only GitHub's `owner/repo`).
#[tokio::test]
async fn change_repositories_of_private_projects_need_the_page_token() {
    use tower::ServiceExt;
    let t = QueueTester::new(Mode::Succeed).await;
    let mut state = serve_common::app_state(t.queue(), &["o/*"]);
    state.access = std::sync::Arc::new(packetary::web::access::Access::new(
        vec!["gerrit:team/secret/specs".into()],
        Some(packetary::config::Secret::new("page-s3cret")),
    ));
    let repo = state
        .data_dir
        .join("repos/changes/gerrit/team/secret/specs/5/t1");
    std::fs::create_dir_all(repo.join("000001/repodata")).expect("mkdir");
    std::fs::write(repo.join(".lock"), "").expect("lock");
    std::fs::write(repo.join("000001/repodata/repomd.xml"), "<repomd/>").expect("repomd");
    std::os::unix::fs::symlink("000001", repo.join("latest")).expect("latest");
    let router = packetary::web::router(state, 1 << 20);
    let status = |uri: &str, token: Option<&str>| {
        let router = router.clone();
        let mut r = axum::http::Request::get(uri);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let req = r.body(axum::body::Body::empty()).expect("req");
        async move {
            router
                .oneshot(req)
                .await
                .expect("response")
                .status()
                .as_u16()
        }
    };
    for uri in [
        "/repos/changes/gerrit/team/secret/specs/5/t1/latest/repodata/repomd.xml",
        "/repos/changes/gerrit/team/secret/specs/5/t1.repo",
    ] {
        assert_eq!(status(uri, None).await, 401, "{uri} without the token");
        assert_eq!(status(uri, Some("wrong")).await, 401, "{uri}, wrong token");
        assert_eq!(status(uri, Some("page-s3cret")).await, 200, "{uri}");
    }
}
