//! A build's extra repository given by URL only (`BuildRepo { local: None }`), as a
//! runner on another machine gets the service's repositories (issue 20): the dependency
//! phase reaches it over HTTP on Docker's bridge and installs the BuildRequires that only
//! it has. Real Docker, rpm, dnf and createrepo_c; the repository is served by a small
//! HTTP server of the test on all interfaces, behind Basic auth: the URL carries the
//! credentials (issue 22), which reach dnf and the snapshot's read but no log, no
//! `build.json` and no container command line.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use common::*;
use packetary::executor::{BuildRepo, BuildRequest, Executor};
use packetary::model::BuildId;

const T: &str = "bookworm-rpmbuild";

fn target() -> packetary::config::Target {
    packetary::config::Config::parse(
        &format!("[targets.{T}]\nbackend = \"rpmbuild\"\nimage = \"{IMAGE}\"\n"),
        None,
    )
    .expect("config")
    .targets
    .into_values()
    .next()
    .expect("target")
}

fn request(w: &Path, name: &str, extra_repos: Vec<BuildRepo>) -> BuildRequest {
    let package =
        packetary::plan::package_for_spec(&w.join(name), &w.join(format!("{name}/{name}.spec")))
            .expect("pkg");
    BuildRequest {
        deps_cache: packetary::executor::DepsCache::None,
        id: BuildId::generate(),
        package,
        target: target(),
        out_root: w.join("out"),
        extra_repos,
        source_date_epoch: Some(1_700_000_000),
        inputs: None,
    }
}

const SECRET: &str = "s3cret-of-the-repo";

/// Files of one directory over HTTP (no `..`, no hidden names) to `user:SECRET` only,
/// counting the requests let in.
async fn serve_dir(dir: PathBuf) -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/repo/{*path}",
            axum::routing::get(
                |State((dir, hits)): State<(PathBuf, Arc<AtomicUsize>)>,
                 headers: axum::http::HeaderMap,
                 UrlPath(path): UrlPath<String>| async move {
                    use base64::Engine as _;
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("user:{SECRET}"))
                    );
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(expected.as_str())
                    {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    if path.split('/').any(|s| s.is_empty() || s.starts_with('.')) {
                        return Err(StatusCode::NOT_FOUND);
                    }
                    std::fs::read(dir.join(path)).map_err(|_| StatusCode::NOT_FOUND)
                },
            ),
        )
        .with_state((dir, hits.clone()));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_installs_its_build_requires_from_a_repository_it_reaches_by_url() {
    let Some(engine) = docker().await else {
        return;
    };
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let executor = Executor::new(engine);
    let cancel = tokio_util::sync::CancellationToken::new;

    // A library no configured repository has, built and indexed into a repository.
    write(&w.join("urldep/urldep.spec"), &spec("urldep", "", "true"));
    let lib = executor
        .run(request(w, "urldep", vec![]), None, cancel())
        .await;
    assert!(lib.outcome.succeeded(), "{:?}", lib.outcome);
    let repo = w.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    let rpm = "urldep-1.0-1.noarch.rpm";
    std::fs::copy(lib.dir.join(rpm), repo.join(rpm)).expect("copy");
    createrepo(&repo);

    // An application that BuildRequires it, given the repository by URL only.
    let (port, hits) = serve_dir(repo).await;
    let url = format!("http://user:{SECRET}@{}:{port}/repo/", bridge_gateway());
    let shown = format!("http://***@{}:{port}/repo/", bridge_gateway());
    write(
        &w.join("urlapp/urlapp.spec"),
        &spec(
            "urlapp",
            "BuildRequires: urldep",
            "test -f /usr/share/urldep/marker && echo urlapp sees: urldep",
        ),
    );
    let repos = vec![BuildRepo {
        name: "remote".into(),
        url: url.clone(),
        local: None,
    }];
    let report = executor
        .run(request(w, "urlapp", repos), None, cancel())
        .await;
    let logs = |d: &Path| {
        ["root.log", "build.log"]
            .iter()
            .map(|l| std::fs::read_to_string(d.join("logs").join(l)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        report.outcome.succeeded(),
        "{:?}\n{}",
        report.outcome,
        logs(&report.dir)
    );
    assert!(logs(&report.dir).contains("urlapp sees: urldep"));
    assert!(
        hits.load(Ordering::SeqCst) >= 2,
        "repomd.xml and the RPM over HTTP"
    );
    // Recorded by its URL, with the snapshot read over HTTP.
    let p = report.provenance.expect("inputs recorded");
    let r = p
        .repositories
        .iter()
        .find(|r| r.name == "remote")
        .expect("the URL repository is recorded");
    assert_eq!(r.url, shown, "recorded without its credentials");
    assert!(r.snapshot.is_some(), "{r:?}");
    assert!(
        report.repos.contains(&format!("remote={shown}")),
        "{:?}",
        report.repos
    );
    // Nowhere the build leaves something to read: its logs, build.json, its command.
    assert!(
        !report.command.join(" ").contains(SECRET),
        "{:?}",
        report.command
    );
    for f in files_under(&report.dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        assert!(!text.contains(SECRET), "{} has the secret", f.display());
    }
    assert!(containers_of_build(&report.dir).is_empty());
}
