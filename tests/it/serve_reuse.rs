//! Build avoidance, end to end: a change built once, then delivered again as a new commit
//! (rebased onto an unrelated commit, the package's files unchanged) succeeds with the
//! first build's results, "reused from <build>", and no container is created for it
//! (counted through the Engine API: Docker's events for the build's label).

use crate::common;
use crate::serve_common;

use std::path::Path;
use std::time::Duration;

use packetary::config::{Config, GithubAuth, GithubConfig, Secret, SecretSource};
use packetary::model::CommitSha;
use serve_common::*;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONTEXT: &str = "packetary/bookworm-rpmbuild/hello-noarch";

fn bot_config(dir: &Path, github: &MockServer) -> Config {
    let mut config = Config::load(None).expect("defaults");
    config.parallel = 2;
    config.server.data_dir = dir.join("data");
    config.server.public_url = "http://packetary.test".into();
    config.server.shutdown_grace = Duration::from_secs(5);
    config.github = Some(GithubConfig {
        api_url: github.uri(),
        git_url: Some(git_url(dir)),
        auth: GithubAuth::Token(SecretSource::Literal(Secret::new("ghp_reuse"))),
        webhook_secrets: vec![SecretSource::Literal(Secret::new(SECRET))],
        repositories: vec!["test/*".into()],
        build_forks: false,
    });
    config
}

/// Containers Docker created for `build` since `since` (unix seconds), from its events.
fn containers_created(build: &str, since: u64) -> usize {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 1;
    let out = std::process::Command::new("docker")
        .args(["events", "--since", &since.to_string(), "--until"])
        .arg(until.to_string())
        .args(["--filter", "type=container", "--filter", "event=create"])
        .args(["--filter", &format!("label=org.packetary.build-id={build}")])
        .args(["--format", "{{.Actor.ID}}"])
        .output()
        .expect("docker events");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebased_change_reuses_the_result_without_a_container() {
    let Some(_engine) = common::docker().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    // The change: a branch bumping the package's release.
    git(&repo, &["checkout", "-q", "-b", "b1"]);
    let spec = repo.join("hello-noarch/hello-noarch.spec");
    let text = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, format!("{text}\n# changed\n")).expect("write");
    let a = "2026-01-02T03:04:05Z";
    git_at(&repo, a, &["commit", "-q", "-am", "hello-noarch: change"]);
    let head1 = git(&repo, &["rev-parse", "HEAD"]);

    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("^/repos/test/hello/statuses/[0-9a-f]{40}$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .mount(&github)
        .await;
    let bot = Bot::start(bot_config(dir.path(), &github)).await;
    let (addr, store) = (bot.addr, bot.store.clone());

    let url = format!("file://{}", repo.display());
    let t0 = now_secs();
    let body = push_payload("test/hello", &url, "b1", &"0".repeat(40), &head1);
    assert_eq!(post_webhook(addr, "push", "reuse-1", &body).await, 202);
    let all = wait_final(&github, &head1, Duration::from_secs(180)).await;
    let last = |all: &[(String, String, String, String, String)]| {
        all.iter()
            .rfind(|s| s.1 == CONTEXT)
            .cloned()
            .unwrap_or_else(|| panic!("no status for {CONTEXT}: {all:#?}"))
    };
    let first = last(&all);
    assert_eq!(first.2, "success", "{all:#?}");
    assert!(first.3.starts_with("built "), "{all:#?}");
    let sha1 = CommitSha::parse(&head1).expect("sha");
    let b1 = store
        .latest_builds_of_commit(
            &packetary::model::RepoId::new(packetary::model::ForgeKind::GitHub, "test/hello")
                .expect("repo"),
            &sha1,
        )
        .await
        .expect("builds");
    assert_eq!(b1.len(), 1, "{b1:?}");
    let b1_id = b1[0].id.to_string();
    // The digest the scheduler stored (the key of reuse) is the one its build.json records.
    let record1: packetary::executor::BuildReport = serde_json::from_str(
        &std::fs::read_to_string(
            b1[0]
                .result_dir
                .as_ref()
                .expect("a results directory")
                .join("logs/build.json"),
        )
        .expect("build.json"),
    )
    .expect("a typed record");
    let digest1 = record1.provenance.expect("provenance").input_digest;
    let keyed = store
        .succeeded_with_digest(&digest1, &b1[0].target, &b1[0].repo, b1[0].pr_number)
        .await
        .expect("store");
    assert_eq!(keyed.map(|k| k.0.to_string()), Some(b1_id.clone()));
    // The way of counting sees the first build's container.
    assert!(
        containers_created(&b1_id, t0) >= 1,
        "no container seen for {b1_id}"
    );

    // main moves on (an unrelated file); the change is rebased onto it: a new commit
    // whose package files are those of the first.
    git(&repo, &["checkout", "-q", "main"]);
    std::fs::write(repo.join("README"), "unrelated\n").expect("write");
    git(&repo, &["add", "README"]);
    git_at(
        &repo,
        "2026-02-01T00:00:00Z",
        &["commit", "-q", "-m", "readme"],
    );
    git(&repo, &["checkout", "-q", "-b", "b2"]);
    git_at(&repo, "2026-03-01T00:00:00Z", &["cherry-pick", &head1]);
    let head2 = git(&repo, &["rev-parse", "HEAD"]);
    assert_ne!(head1, head2);

    let t1 = now_secs();
    let body = push_payload("test/hello", &url, "b2", &"0".repeat(40), &head2);
    assert_eq!(post_webhook(addr, "push", "reuse-2", &body).await, 202);
    let all = wait_final(&github, &head2, Duration::from_secs(60)).await;
    let second = last(&all);
    assert_eq!(second.2, "success", "{all:#?}");
    assert_eq!(second.3, format!("reused from {b1_id}"), "{all:#?}");
    let sha2 = CommitSha::parse(&head2).expect("sha");
    let b2 = store
        .latest_builds_of_commit(
            &packetary::model::RepoId::new(packetary::model::ForgeKind::GitHub, "test/hello")
                .expect("repo"),
            &sha2,
        )
        .await
        .expect("builds");
    assert_eq!(b2.len(), 1, "{b2:?}");
    assert_eq!(
        containers_created(b2[0].id.as_str(), t1),
        0,
        "a container was created for the reused build"
    );
    // Its results are there, under its own id, with its own record.
    let dir2 = b2[0].result_dir.clone().expect("a results directory");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir2.join("logs/build.json")).expect("build.json"),
    )
    .expect("json");
    assert_eq!(json["id"], b2[0].id.as_str());
    assert_eq!(json["reused_from"], b1_id.as_str());
    assert_eq!(json["provenance"]["input_digest"], digest1.as_str());
    assert!(dir2.join("hello-noarch-1.0-1.noarch.rpm").is_file());

    bot.stop().await.expect("stopped");

    // The service's build, by id: rebuilt from its recorded inputs, identical.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_packetary"))
        .args(["rebuild", &b1_id, "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("PACKETARY_CONFIG")
        .output()
        .expect("packetary rebuild");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("identical hello-noarch-1.0-1.noarch.rpm"),
        "{stdout}"
    );
}
