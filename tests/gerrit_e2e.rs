//! Gerrit end to end: a real git repository with `refs/changes/...` refs, events posted by
//! the webhooks plugin's route, real builds in Docker, and the review requests a stand-in
//! Gerrit REST server receives (label values, messages, basic auth, its 500s and 409s).

mod gerrit_common;
mod serve_common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use gerrit_common::*;
use packetary::config::{Config, GerritConfig, Secret, SecretSource};
use packetary::git::FetchAuth;
use packetary::service::{Service, ServiceError};
use packetary::store::Store;
use serve_common::*;
use tokio_util::sync::CancellationToken;

const PROJECT: &str = "test/hello";

struct Bot {
    addr: std::net::SocketAddr,
    store: Store,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Bot {
    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(60), self.served).await;
    }

    async fn post(&self, query: &str, body: &serde_json::Value) -> u16 {
        let body = serde_json::to_vec(body).expect("json");
        http(
            self.addr,
            "POST",
            &format!("/webhooks/gerrit{query}"),
            &[("content-type", "application/json".into())],
            &body,
        )
        .await
        .0
    }

    async fn event(&self, body: &serde_json::Value) -> u16 {
        self.post(&format!("?token={TOKEN}"), body).await
    }
}

fn gerrit_config(dir: &Path, url: &str) -> GerritConfig {
    GerritConfig {
        url: url.to_string(),
        user: USER.into(),
        http_password: SecretSource::Literal(Secret::new(PASSWORD)),
        ssh: None,
        ssh_key: None,
        git_url: git_url(dir),
        projects: vec!["test/*".into()],
        label: "Verified".into(),
        success_vote: 1,
        failure_vote: -1,
        webhook_token: Some(SecretSource::Literal(Secret::new(TOKEN))),
        skip_wip_and_private: true,
    }
}

async fn start_bot(dir: &Path, gerrit_url: &str) -> Bot {
    let mut config = Config::load(None).expect("defaults");
    config.parallel = 2;
    config.server.data_dir = dir.join("data");
    config.server.public_url = "http://packetary.test".into();
    config.server.max_attempts = 2;
    config.server.retry_backoff = Duration::from_millis(300);
    config.server.shutdown_grace = Duration::from_secs(5);
    config.gerrit = Some(gerrit_config(dir, gerrit_url));
    let service = Service::from_config(
        config,
        packetary::service::ServiceOptions {
            git_auth: Some(FetchAuth::None),
        },
    )
    .await
    .expect("service");
    let store = service.store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let served = tokio::spawn(service.serve(listener, {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    Bot {
        addr,
        store,
        stop,
        served,
    }
}

/// Makes patchset `ps` of change `number`: a commit on top of `main` bumping the package's
/// Release, stored as `refs/changes/NN/<number>/<ps>` only (main does not move). Answers
/// (revision, parent).
fn patchset(repo: &Path, number: u64, ps: u64) -> (String, String) {
    let parent = git(repo, &["rev-parse", "main"]);
    git(repo, &["checkout", "-q", "--detach", "main"]);
    for _ in 0..ps {
        bump_release(repo, "hello-noarch");
    }
    let rev = git(repo, &["rev-parse", "HEAD"]);
    let r = format!("refs/changes/{:02}/{number}/{ps}", number % 100);
    git(repo, &["update-ref", &r, &rev]);
    git(repo, &["checkout", "-q", "main"]);
    (rev, parent)
}

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

fn votes(g: &FakeGerrit, sha: &str) -> Vec<i64> {
    g.accepted(sha)
        .iter()
        .filter_map(|r| r.labels.get("Verified").copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patchset_is_built_and_voted_on() {
    let Some(_engine) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let (rev, parent) = patchset(&repo, 12345, 1);
    let (url, gerrit) = start().await;
    gerrit.add_change(&rev, PROJECT, 12345, 1, "main");
    let bot = start_bot(dir.path(), &url).await;

    let event = patchset_created(PROJECT, "main", 12345, 1, &rev, &parent);
    // A wrong or missing token: 403, nothing stored.
    assert_eq!(bot.post("?token=wrong", &event).await, 403);
    assert_eq!(bot.post("", &event).await, 403);
    assert!(bot.store.triggers().await.expect("triggers").is_empty());

    assert_eq!(bot.event(&event).await, 202);
    gerrit
        .wait("the start message", 120, |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    // Gerrit is down for the next review request (the vote): it is retried.
    gerrit.fail_next.lock().expect("lock").push_back(500);
    gerrit
        .wait("a Verified vote", 300, |r| {
            r.iter()
                .any(|r| r.status == 200 && r.labels.get("Verified") != Some(&0))
        })
        .await;
    let reviews = gerrit.reviews();
    let statuses: Vec<u16> = reviews.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 500, 200], "{reviews:#?}");
    let ok = gerrit.accepted(&rev);
    assert_eq!(votes(&gerrit, &rev), vec![0, 1], "{reviews:#?}");
    for r in &reviews {
        assert_eq!(r.authorization.as_deref(), Some(basic().as_str()));
        assert_eq!(
            r.path,
            format!("/a/changes/test%2Fhello~12345/revisions/{rev}/review")
        );
        assert_eq!(r.tag.as_deref(), Some("autogenerated:packetary"));
    }
    let start = &ok[0].message;
    assert!(
        start.contains("hello-noarch (bookworm-rpmbuild): http://packetary.test/builds/"),
        "{start}"
    );
    let end = &ok[1].message;
    assert!(end.contains("Build succeeded"), "{end}");
    assert!(
        end.contains("hello-noarch (bookworm-rpmbuild): succeeded in "),
        "{end}"
    );
    assert!(end.contains("/logs/build.log"), "{end}");
    // The change's own package repository, for testers.
    assert!(
        end.contains(&format!(
            "(repository: http://packetary.test/repos/changes/{PROJECT}/12345/bookworm-rpmbuild.repo)"
        )),
        "{end}"
    );
    // The change's target branch was the base: only the bumped package was built.
    let trig = bot.store.triggers().await.expect("triggers");
    assert_eq!(trig.len(), 1);
    assert_eq!(trig[0].trigger.ref_name, "refs/changes/45/12345/1");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_patchsets_recheck_and_abandon() {
    let Some(_engine) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = example_repo(dir.path());
    let (rev1, parent) = patchset(&repo, 7, 1);
    let (rev2, _) = patchset(&repo, 7, 2);
    let (url, gerrit) = start().await;
    gerrit.add_change(&rev1, PROJECT, 7, 1, "main");
    gerrit.add_change(&rev2, PROJECT, 7, 2, "main");
    let bot = start_bot(dir.path(), &url).await;

    // Patchset 2 arrives while patchset 1 is being planned or built: 1 gets no vote.
    assert_eq!(
        bot.event(&patchset_created(PROJECT, "main", 7, 1, &rev1, &parent))
            .await,
        202
    );
    assert_eq!(
        bot.event(&patchset_created(PROJECT, "main", 7, 2, &rev2, &parent))
            .await,
        202
    );
    gerrit
        .wait("the vote on patchset 2", 300, |_| {
            votes(&gerrit, &rev2).contains(&1)
        })
        .await;

    // recheck on the old patchset: a message, no build.
    let builds_before = bot.store.recent_builds(100).await.expect("builds").len();
    assert_eq!(
        bot.event(&comment_added(
            PROJECT,
            "main",
            7,
            1,
            &rev1,
            "Patch Set 1:\n\nrecheck"
        ))
        .await,
        202
    );
    gerrit
        .wait("the answer to the old recheck", 60, |_| {
            gerrit
                .accepted(&rev1)
                .iter()
                .any(|r| r.message.contains("not the change's current revision"))
        })
        .await;
    assert!(
        votes(&gerrit, &rev1).iter().all(|v| *v == 0),
        "no vote on a superseded patchset: {:#?}",
        gerrit.reviews()
    );
    // recheck on the current one: built again, voted again.
    assert_eq!(
        bot.event(&comment_added(
            PROJECT,
            "main",
            7,
            2,
            &rev2,
            "Patch Set 2:\n\nrecheck"
        ))
        .await,
        202
    );
    gerrit
        .wait("the vote after recheck", 300, |_| {
            votes(&gerrit, &rev2).iter().filter(|v| **v == 1).count() == 2
        })
        .await;
    let builds = bot.store.recent_builds(100).await.expect("builds");
    assert_eq!(builds.len(), builds_before + 1, "{builds:#?}");
    assert!(builds
        .iter()
        .all(|b| b.commit.as_str() != rev1 || b.state.as_str() != "succeeded"));

    // Patchset 3, then the change is abandoned (Gerrit answers 409 from then on): its
    // builds are cancelled, no vote is cast, and the outbox drops what Gerrit refuses.
    let (rev3, _) = patchset(&repo, 7, 3);
    gerrit.add_change(&rev3, PROJECT, 7, 3, "main");
    assert_eq!(
        bot.event(&patchset_created(PROJECT, "main", 7, 3, &rev3, &parent))
            .await,
        202
    );
    gerrit.closed.lock().expect("lock").insert(7);
    assert_eq!(bot.event(&change_abandoned(PROJECT, "main", 7)).await, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let builds = bot.store.recent_builds(100).await.expect("builds");
        let of3: Vec<_> = builds
            .iter()
            .filter(|b| b.commit.as_str() == rev3)
            .collect();
        let triggers = bot.store.triggers().await.expect("triggers");
        let closed = triggers
            .iter()
            .any(|t| t.trigger.head.as_str() == rev3 && t.state.as_str() == "closed");
        if (of3.iter().all(|b| b.state.as_str() == "cancelled") && (closed || !of3.is_empty()))
            && bot.store.undelivered_reports().await.expect("outbox") == 0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{of3:#?} {triggers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(votes(&gerrit, &rev3).is_empty(), "{:#?}", gerrit.reviews());
    // What Gerrit refused with 409 (a closed change) was dropped at once, not tried again.
    let refused: Vec<String> = gerrit
        .reviews()
        .into_iter()
        .filter(|r| r.status == 409)
        .map(|r| r.message)
        .collect();
    let mut once = refused.clone();
    once.dedup();
    assert_eq!(refused, once, "a 409 was retried: {:#?}", gerrit.reviews());
    bot.stop().await;
}
