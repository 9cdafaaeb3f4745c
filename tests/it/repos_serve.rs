//! Package repositories in the service: a pull request's packages in the change's
//! repository, served over HTTP with a `.repo` file that dnf in a fresh container installs
//! from; a merge publishing into a release snapshot that later changes build against; a
//! refused downgrade as the build's result. Real git, real Docker, real createrepo_c and
//! dnf; a mock GitHub for statuses.

use crate::common;
use crate::serve_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use packetary::config::{
    Config, GithubAuth, GithubConfig, Release, ReleaseName, Secret, SecretSource,
};
use packetary::model::TargetName;
use serde_json::Value;
use serve_common::*;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TARGET: &str = "bookworm-rpmbuild";
const IMAGE: &str = "packetary/rpmbuild:bookworm";

/// The service on all interfaces (so that a container reaches it through the bridge),
/// its public URL on the bridge's gateway, with `releases`.
async fn start_bot(dir: &Path, github: &MockServer, releases: &[(&str, &str)]) -> Bot {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = Config::load(None).expect("defaults");
    config.parallel = 2;
    config.server.data_dir = dir.join("data");
    config.server.public_url = format!("http://{}:{port}", common::bridge_gateway());
    // Where build containers reach the service: the bridge's gateway too.
    config.server.repos_url = config.server.public_url.clone();
    config.server.max_attempts = 1;
    config.server.shutdown_grace = Duration::from_secs(5);
    config.github = Some(GithubConfig {
        api_url: github.uri(),
        git_url: Some(git_url(dir)),
        auth: GithubAuth::Token(SecretSource::Literal(Secret::new("ghp_repos"))),
        webhook_secrets: vec![SecretSource::Literal(Secret::new(SECRET))],
        repositories: vec!["test/*".into()],
        build_forks: false,
    });
    for (name, branch) in releases {
        let n = ReleaseName::parse(name).expect("name");
        config.releases.insert(
            n.clone(),
            Release {
                name: n,
                branches: vec![branch.to_string()],
                targets: vec![TargetName::parse(TARGET).expect("target")],
                keep_snapshots: 10,
                repositories: vec![],
            },
        );
    }
    Bot::start_on(config, listener).await
}

async fn mock_github() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("^/repos/test/pkgs/statuses/[0-9a-f]{40}$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .mount(&server)
        .await;
    server
}

/// A library with a `-devel` subpackage.
fn lib_spec(release: &str) -> String {
    format!(
        "Name: libgreet\nVersion: 1.0\nRelease: {release}\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
%description\nt\n%package devel\nSummary: t\nRequires: libgreet = %{{version}}-%{{release}}\n%description devel\nt\n\
%install\nmkdir -p %{{buildroot}}/usr/share/libgreet %{{buildroot}}/usr/include\necho lib > %{{buildroot}}/usr/share/libgreet/lib\necho '#define GREET 1' > %{{buildroot}}/usr/include/greet.h\n\
%files\n/usr/share/libgreet/lib\n%files devel\n/usr/include/greet.h\n"
    )
}

/// An application built against libgreet-devel (its build reads the header) that needs
/// libgreet to run.
fn app_spec() -> String {
    "Name: app\nVersion: 1.0\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
BuildRequires: libgreet-devel\nRequires: libgreet\n%description\nt\n\
%build\ngrep -q GREET /usr/include/greet.h\n\
%install\nmkdir -p %{buildroot}/usr/share/app\necho app > %{buildroot}/usr/share/app/marker\n\
%files\n/usr/share/app/marker\n"
        .to_string()
}

fn write_spec(repo: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(repo.join(name)).expect("mkdir");
    std::fs::write(repo.join(name).join(format!("{name}.spec")), text).expect("spec");
}

fn pr_payload(url: &str, number: u64, action: &str, base: &str, head: &str) -> Vec<u8> {
    let mut p: Value = fixture(if action == "closed" {
        "pull_request-closed.json"
    } else {
        "pull_request-opened.json"
    });
    p["action"] = Value::from(action);
    p["number"] = Value::from(number);
    p["pull_request"]["number"] = Value::from(number);
    p["repository"]["full_name"] = Value::from("test/pkgs");
    p["repository"]["clone_url"] = Value::from(url);
    p["pull_request"]["head"]["sha"] = Value::from(head);
    p["pull_request"]["head"]["ref"] = Value::from("feature");
    p["pull_request"]["head"]["repo"]["full_name"] = Value::from("test/pkgs");
    p["pull_request"]["base"]["sha"] = Value::from(base);
    p["pull_request"]["base"]["ref"] = Value::from("main");
    serde_json::to_vec(&p).expect("json")
}

/// The last state and description of each context for `sha`.
fn last_states(
    all: &[(String, String, String, String, String)],
) -> BTreeMap<String, (String, String)> {
    let mut m = BTreeMap::new();
    for s in all {
        m.insert(s.1.clone(), (s.2.clone(), s.3.clone()));
    }
    m
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rpm"))
        .collect();
    v.sort();
    v
}

fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).expect("prefix").to_path_buf(),
                    std::fs::read(&p).expect("read"),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_repository_holds_both_packages_and_dnf_installs_from_its_repo_file() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("git/test/pkgs");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "packages\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "start"]);
    let base = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    write_spec(&repo, "libgreet", &lib_spec("1"));
    write_spec(&repo, "app", &app_spec());
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "libgreet and app"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["update-ref", "refs/pull/7/head", &head]);

    let github = mock_github().await;
    let bot = start_bot(dir.path(), &github, &[]).await;
    let url = format!("file://{}", repo.display());
    assert_eq!(
        post_webhook(
            bot.addr,
            "pull_request",
            "pr-7",
            &pr_payload(&url, 7, "opened", &base, &head)
        )
        .await,
        202
    );
    let all = wait_final(&github, &head, Duration::from_secs(300)).await;
    let last = last_states(&all);
    for c in [
        "packetary/bookworm-rpmbuild/libgreet",
        "packetary/bookworm-rpmbuild/app",
    ] {
        assert_eq!(last[c].0, "success", "{c}: {all:#?}");
        assert!(
            last[c]
                .1
                .contains("published into changes/github/test/pkgs/7/bookworm-rpmbuild"),
            "{c}: {all:#?}"
        );
    }
    let builds = bot.store.recent_builds(10).await.expect("builds");
    let lib = builds
        .iter()
        .find(|b| b.package == "libgreet")
        .expect("lib");
    let app = builds.iter().find(|b| b.package == "app").expect("app");
    assert_eq!(
        (lib.stage, app.stage),
        (0, 1),
        "built in order: {builds:#?}"
    );

    let change = dir
        .path()
        .join("data")
        .join("repos/changes/github/test/pkgs/7")
        .join(TARGET);
    assert_eq!(
        files(&change.join("latest")),
        [
            "app-1.0-1.noarch.rpm",
            "app-1.0-1.src.rpm",
            "libgreet-1.0-1.noarch.rpm",
            "libgreet-1.0-1.src.rpm",
            "libgreet-devel-1.0-1.noarch.rpm"
        ]
    );

    // The build page and the commit's page (the aggregate status's link) link to it.
    let link = format!("/repos/changes/github/test/pkgs/7/{TARGET}.repo");
    for page in [format!("/builds/{}", app.id), format!("/?commit={head}")] {
        let (code, body) = http(bot.addr, "GET", &page, &[], b"").await;
        assert_eq!(code, 200, "{page}");
        assert!(String::from_utf8_lossy(&body).contains(&link), "{page}");
    }
    let aggregate = &last["packetary"];
    assert!(
        all.iter()
            .any(|s| s.1 == "packetary" && s.4.ends_with(&format!("/?commit={head}"))),
        "{aggregate:?}"
    );

    // The .repo file, served; its baseurl is the service's public URL.
    let (code, body) = http(
        bot.addr,
        "GET",
        &format!("/repos/changes/github/test/pkgs/7/{TARGET}.repo"),
        &[],
        b"",
    )
    .await;
    let repo_file = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 200, "{repo_file}");
    assert!(
        repo_file.contains(&format!(
            "/repos/changes/github/test/pkgs/7/{TARGET}/latest/\n"
        )),
        "{repo_file}"
    );
    let repo_path = dir.path().join("packetary.repo");
    std::fs::write(&repo_path, &repo_file).expect("write");
    // A fresh container of the target's image installs app (and libgreet, which it
    // requires) over HTTP from the served repository.
    let out = Command::new("docker")
        .args(["run", "--rm", "-v"])
        .arg(format!(
            "{}:/etc/yum.repos.d/packetary.repo:ro",
            repo_path.display()
        ))
        .args([
            IMAGE,
            "sh",
            "-c",
            "dnf -y -q --releasever=1 install app >/dev/null && cat /usr/share/app/marker /usr/share/libgreet/lib",
        ])
        .output()
        .expect("docker run dnf");
    assert!(
        out.status.success(),
        "dnf install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app\nlib\n");

    // Only snapshots are served: not the pool, the lock, other names or links out.
    let snap = std::fs::read_link(change.join("latest")).expect("latest");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "secret").expect("write");
    std::os::unix::fs::symlink(&secret, change.join(&snap).join("evil.rpm")).expect("symlink");
    let base_url = format!("/repos/changes/github/test/pkgs/7/{TARGET}");
    for (path, want) in [
        (format!("{base_url}/latest/repodata/repomd.xml"), 200),
        (format!("{base_url}/latest/app-1.0-1.noarch.rpm"), 200),
        (format!("{base_url}/pool/"), 404),
        (format!("{base_url}/.lock"), 404),
        (format!("{base_url}/latest/evil.rpm"), 404),
        (
            format!("{base_url}/latest/../../../../../../packetary.db"),
            404,
        ),
        ("/repos/%2e%2e/packetary.db".to_string(), 404),
        ("/repos/changes/github/test/pkgs/8/x.repo".to_string(), 404),
        ("/repos/changes/".to_string(), 404),
        ("/repos/changes/github/test/".to_string(), 404),
        ("/repos/changes/github/".to_string(), 404),
        // The old layout, without the forge, is no repository.
        (format!("/repos/changes/test/pkgs/7/{TARGET}.repo"), 404),
        (format!("{base_url}/latest/"), 200),
    ] {
        let (code, body) = http(bot.addr, "GET", &path, &[], b"").await;
        assert_eq!(code, want, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(!String::from_utf8_lossy(&body).contains("secret"), "{path}");
    }

    // Closing the pull request removes its repositories.
    assert_eq!(
        post_webhook(
            bot.addr,
            "pull_request",
            "pr-7-closed",
            &pr_payload(&url, 7, "closed", &base, &head)
        )
        .await,
        202
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir
        .path()
        .join("data")
        .join("repos/changes/github/test/pkgs/7")
        .exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the change's repositories stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bot.stop().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_publishes_a_release_snapshot_that_later_changes_build_against() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("git/test/pkgs");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    write_spec(&repo, "libgreet", &lib_spec("1"));
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "libgreet"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);

    let github = mock_github().await;
    let bot = start_bot(dir.path(), &github, &[("stable", "main")]).await;
    let url = format!("file://{}", repo.display());
    let zero = "0".repeat(40);
    let addr = bot.addr;
    let push = |delivery: &'static str, before: String, after: String| {
        let body = push_payload("test/pkgs", &url, "main", &before, &after);
        async move { post_webhook(addr, "push", delivery, &body).await }
    };
    assert_eq!(push("push-1", zero.clone(), first.clone()).await, 202);
    let all = wait_final(&github, &first, Duration::from_secs(240)).await;
    let lib_ctx = "packetary/bookworm-rpmbuild/libgreet";
    assert_eq!(last_states(&all)[lib_ctx].0, "success", "{all:#?}");
    let release = dir.path().join("data").join("repos/stable").join(TARGET);
    assert_eq!(
        std::fs::read_link(release.join("latest")).expect("latest"),
        Path::new("000001")
    );
    let snapshot1 = tree(&release.join("000001"));
    assert!(snapshot1.contains_key(Path::new("libgreet-devel-1.0-1.noarch.rpm")));

    // A pull request adding app, which needs libgreet-devel: only the release has it.
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    write_spec(&repo, "app", &app_spec());
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "app"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["update-ref", "refs/pull/9/head", &head]);
    assert_eq!(
        post_webhook(
            bot.addr,
            "pull_request",
            "pr-9",
            &pr_payload(&url, 9, "opened", &first, &head)
        )
        .await,
        202
    );
    let all = wait_final(&github, &head, Duration::from_secs(240)).await;
    assert_eq!(
        last_states(&all)["packetary/bookworm-rpmbuild/app"].0,
        "success",
        "{all:#?}"
    );
    let builds = bot.store.recent_builds(10).await.expect("builds");
    let app = builds.iter().find(|b| b.package == "app").expect("app");
    let build_json = std::fs::read_to_string(
        app.result_dir
            .as_ref()
            .expect("result")
            .join("logs/build.json"),
    )
    .expect("build.json");
    // The snapshot id is part of the repository's recorded location: its URL under
    // `repos_url`, which a build anywhere reaches (this one mounted the directory).
    assert!(
        build_json.contains(&format!(
            "release-stable=http://{}:{}/repos/stable/{TARGET}/000001/",
            common::bridge_gateway(),
            bot.addr.port()
        )),
        "{build_json}"
    );
    let path = format!("/repos/stable/{TARGET}/000001/repodata/repomd.xml");
    assert_eq!(
        http(bot.addr, "GET", &path, &[], b"").await.0,
        200,
        "{path}"
    );
    let used = bot.store.snapshot_locations_in_use().await.expect("store");
    assert!(used.iter().any(|l| l.ends_with("/000001")), "{used:?}");

    // The merge: app is published into a new snapshot; the first stays as it was.
    git(&repo, &["checkout", "-q", "main"]);
    git(
        &repo,
        &["merge", "-q", "--no-ff", "-m", "merge app", "feature"],
    );
    let merged = git(&repo, &["rev-parse", "HEAD"]);
    assert_eq!(push("push-2", first.clone(), merged.clone()).await, 202);
    let all = wait_final(&github, &merged, Duration::from_secs(240)).await;
    let app_states: Vec<_> = all
        .iter()
        .filter(|s| s.1 == "packetary/bookworm-rpmbuild/app")
        .collect();
    assert!(
        app_states
            .last()
            .is_some_and(|s| s.2 == "success" && s.3.contains("published into stable/")),
        "{all:#?}"
    );
    assert_eq!(
        std::fs::read_link(release.join("latest")).expect("latest"),
        Path::new("000002")
    );
    let names = files(&release.join("000002"));
    assert!(
        names.contains(&"app-1.0-1.noarch.rpm".to_string())
            && names.contains(&"libgreet-1.0-1.noarch.rpm".to_string()),
        "{names:?}"
    );
    assert_eq!(
        tree(&release.join("000001")),
        snapshot1,
        "snapshot 1 changed"
    );
    let (code, body) = http(
        bot.addr,
        "GET",
        &format!("/repos/stable/{TARGET}/000001/repodata/repomd.xml"),
        &[],
        b"",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body, snapshot1[Path::new("repodata/repomd.xml")]);
    // A client that read the old repomd.xml just before `latest` moved still gets the
    // metadata files it names (named by checksum, so the same in any snapshot).
    let old_primary = snapshot1
        .keys()
        .find(|p| p.to_string_lossy().ends_with("-primary.xml.gz"))
        .expect("primary")
        .clone();
    assert!(!release.join("000002").join(&old_primary).exists());
    let (code, body) = http(
        bot.addr,
        "GET",
        &format!("/repos/stable/{TARGET}/latest/{}", old_primary.display()),
        &[],
        b"",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body, snapshot1[&old_primary]);
    let (code, body) = http(
        bot.addr,
        "GET",
        &format!("/repos/stable/{TARGET}.repo"),
        &[],
        b"",
    )
    .await;
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains(&format!("/repos/stable/{TARGET}/latest/")));

    // Issue 23: a pull request that changes libgreet but not its Release is red before
    // the merge, with the fix first in the status, and no container ran for it.
    git(&repo, &["checkout", "-q", "-b", "unbumped"]);
    write_spec(
        &repo,
        "libgreet",
        &lib_spec("1").replace("echo lib >", "echo lib2 >"),
    );
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-am",
            "libgreet: new contents, same release",
        ],
    );
    let unbumped = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["update-ref", "refs/pull/10/head", &unbumped]);
    assert_eq!(
        post_webhook(
            bot.addr,
            "pull_request",
            "pr-10",
            &pr_payload(&url, 10, "opened", &merged, &unbumped)
        )
        .await,
        202
    );
    let all = wait_final(&github, &unbumped, Duration::from_secs(240)).await;
    let (state, description) = last_states(&all)[lib_ctx].clone();
    assert_eq!(state, "failure", "{all:#?}");
    assert!(
        description.starts_with("raise Release: libgreet-1.0-1.src is published already"),
        "{description}"
    );
    let not_started = |commit: &str, builds: &[packetary::store::BuildRow]| {
        let b = builds
            .iter()
            .find(|b| b.package == "libgreet" && b.commit.as_str() == commit)
            .expect("libgreet's build");
        assert_eq!(b.phase.as_deref(), Some("publish"), "{b:?}");
        assert!(
            b.started_at.is_none() && b.result_dir.is_none(),
            "it ran: {b:?}"
        );
    };
    not_started(
        &unbumped,
        &bot.store.recent_builds(20).await.expect("builds"),
    );
    git(&repo, &["checkout", "-q", "main"]);

    // A downgrade pushed to the release branch: refused before it starts, the build failed.
    write_spec(&repo, "libgreet", &lib_spec("0"));
    git(&repo, &["commit", "-q", "-am", "libgreet: lower release"]);
    let down = git(&repo, &["rev-parse", "HEAD"]);
    assert_eq!(push("push-3", merged.clone(), down.clone()).await, 202);
    let all = wait_final(&github, &down, Duration::from_secs(240)).await;
    let (state, description) = last_states(&all)[lib_ctx].clone();
    assert_eq!(state, "failure", "{all:#?}");
    assert!(
        description.starts_with(
            "raise Version or Release: libgreet-1.0-0.src is lower than the published libgreet-1.0-1.src"
        ),
        "{description}"
    );
    not_started(&down, &bot.store.recent_builds(20).await.expect("builds"));
    assert!(!release.join("000003").exists());
    // A build whose packages were refused teaches later plans nothing: the Provides
    // learned for libgreet are still those of its published 1.0-1.
    let learned = bot
        .store
        .learned_provides(
            &packetary::model::RepoId::github("test/pkgs").expect("repo"),
            &TargetName::parse(TARGET).expect("target"),
        )
        .await
        .expect("learned");
    let lib = learned.get("libgreet").cloned().unwrap_or_default();
    assert!(
        lib.iter().any(|p| p.ends_with("1.0-1")) && !lib.iter().any(|p| p.ends_with("1.0-0")),
        "Provides learned from a refused build: {lib:?}"
    );
    bot.stop().await.expect("stopped");
}
