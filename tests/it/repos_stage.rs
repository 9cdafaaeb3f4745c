//! The repository of what a change's earlier stages built (issue 20): the scheduler makes
//! it under `<data_dir>/repos/stages/<build-id>/`, gives it to the build as a URL under
//! `repos_url` and as the directory, serves it under `/repos/`, as private as the build's
//! repository, and removes it with the build's work directory. No Docker: fakes for the
//! runner and the indexer (the real build over the URL is `build_url_repo`).

use crate::serve_common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use packetary::executor::{BuildRepo, BuildReport, BuildRequest, Progress};
use packetary::model::{BuildId, Outcome, ReportState::Success};
use packetary::queue::{error_report, Indexing, MakeRepoError, PublishInto, Runner};
use packetary::repos::{PublishError, Published};
use serve_common::tester::{QueueTester, AGGREGATE};
use serve_common::{Mode, StagedPlanner};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Makes a "repository" by writing its `repomd.xml`, as createrepo_c would.
struct FakeIndexing;

impl Indexing for FakeIndexing {
    fn make_repo(
        &self,
        _image: String,
        dir: PathBuf,
        packages: Vec<PathBuf>,
    ) -> BoxFuture<'static, Result<(), MakeRepoError>> {
        Box::pin(async move {
            std::fs::create_dir_all(dir.join("repodata")).expect("mkdir");
            let names: Vec<String> = packages
                .iter()
                .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
                .collect();
            std::fs::write(dir.join("repodata/repomd.xml"), names.join("\n")).expect("repomd");
            Ok(())
        })
    }

    fn publish<'a>(
        &'a self,
        _into: PublishInto<'a>,
        _packages: &'a [PathBuf],
    ) -> BoxFuture<'a, Result<Published, PublishError>> {
        panic!("a push to a branch of no release publishes nothing")
    }
}

/// What the stage-1 build was given, and what its stage repository held while it ran.
#[derive(Default)]
struct Seen {
    repos: Vec<BuildRepo>,
    repomd: Option<String>,
}

/// Builds `lib` into one RPM; records `app`'s repositories.
struct StageRunner(Arc<Mutex<Seen>>);

impl Runner for StageRunner {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        let seen = self.0.clone();
        Box::pin(async move {
            let mut r = error_report(&req, String::new());
            std::fs::create_dir_all(&req.out_root).expect("mkdir");
            let rpm = req
                .out_root
                .join(format!("{}-1-1.noarch.rpm", req.package.label()));
            std::fs::write(&rpm, "not really an rpm").expect("rpm");
            if req.package.label() == "app" {
                let mut s = seen.lock().expect("lock");
                s.repos = req.extra_repos.clone();
                s.repomd = req.extra_repos.iter().find_map(|r| {
                    std::fs::read_to_string(r.local.as_ref()?.join("repodata/repomd.xml")).ok()
                });
            }
            r.dir = req.out_root.clone();
            r.outcome = Outcome::Succeeded {
                source: req.out_root.join("x.src.rpm"),
                binaries: vec![rpm],
            };
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_later_stage_gets_its_stage_repository_by_url_and_directory() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let t = QueueTester::builder(Mode::Succeed)
        .planner(StagedPlanner(&["lib", "app"]))
        .runner(StageRunner(seen.clone()))
        .indexing(FakeIndexing)
        .build()
        .await;
    t.start().await;
    t.push('c').await;
    t.wait_status('c', AGGREGATE, Success).await;
    let (change, repomd) = {
        let seen = seen.lock().expect("lock");
        let change = seen
            .repos
            .iter()
            .find(|r| r.name == "change")
            .cloned()
            .unwrap_or_else(|| panic!("no stage repository: {:?}", seen.repos));
        (change, seen.repomd.clone())
    };
    let data = t.queue().store_dir();
    let local = change
        .local
        .clone()
        .expect("a directory for the local executor");
    let stages = data.join("repos").join("stages");
    assert_eq!(local.parent(), Some(stages.as_path()), "{local:?}");
    let id = local
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the build's id");
    assert_eq!(
        change.url,
        format!("http://packetary.test/repos/stages/{id}/"),
        "the URL under repos_url a build anywhere reaches"
    );
    assert_eq!(repomd.as_deref(), Some("lib-1-1.noarch.rpm"));
    // The status is reported once the ledger knows the end; the work directory goes
    // right after, so this waits for it rather than racing it.
    t.wait_until(
        "the stage repository to go with the build's work directory",
        |_| !local.exists(),
    )
    .await;
}

/// A stage repository on disk for a build of `o/r` (the tester's pushes).
async fn stage_repo(t: &QueueTester) -> (BuildId, PathBuf) {
    let id = t.insert_build("app", "app/app.spec").await;
    let dir = packetary::repos::stage_dir(&t.queue().store_dir(), &id);
    std::fs::create_dir_all(dir.join("repodata")).expect("mkdir");
    std::fs::write(dir.join("repodata/repomd.xml"), "<repomd/>").expect("repomd");
    std::fs::write(t.queue().store_dir().join("secret"), "s3cret").expect("secret");
    (id, dir)
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
async fn a_stage_repository_is_served_and_no_path_leads_out_of_it() {
    let t = QueueTester::new(Mode::Succeed).await;
    let (id, dir) = stage_repo(&t).await;
    std::os::unix::fs::symlink(t.queue().store_dir().join("secret"), dir.join("leak.rpm"))
        .expect("link");
    let router = packetary::web::router(serve_common::app_state(t.queue(), &["o/*"]), 1 << 20);
    let (status, body) = get(
        &router,
        &format!("/repos/stages/{id}/repodata/repomd.xml"),
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "<repomd/>"));
    for uri in [
        format!("/repos/stages/{id}/leak.rpm"),
        format!("/repos/stages/{id}/../../secret"),
        format!("/repos/stages/{id}/..%2F..%2F..%2Fsecret"),
        format!("/repos/stages/{id}/.hidden"),
        "/repos/stages/".to_string(),
        "/repos/stages/nobuild/repodata/repomd.xml".to_string(),
    ] {
        let (status, body) = get(&router, &uri, None).await;
        assert_eq!(status, 404, "{uri}: {body}");
        assert!(!body.contains("s3cret"), "{uri}");
    }
}

#[tokio::test]
async fn a_stage_repository_is_as_private_as_its_build_s_repository() {
    let t = QueueTester::new(Mode::Succeed).await;
    let (id, _) = stage_repo(&t).await;
    let mut state = serve_common::app_state(t.queue(), &["o/*"]);
    state.access = Arc::new(packetary::web::access::Access::new(
        vec!["github:o/*".into()],
        Some(packetary::config::Secret::new("page-s3cret")),
    ));
    let router = packetary::web::router(state, 1 << 20);
    let uri = format!("/repos/stages/{id}/repodata/repomd.xml");
    assert_eq!(get(&router, &uri, None).await.0, 401, "without the token");
    assert_eq!(
        get(&router, &uri, Some("wrong")).await.0,
        401,
        "wrong token"
    );
    assert_eq!(get(&router, &uri, Some("page-s3cret")).await.0, 200);
}
