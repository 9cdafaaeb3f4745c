//! Fakes for the queue: planners, sources and a runner, and the queue and web state wired
//! with them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use packetary::forge::Forge;
use packetary::model::RepoId;

use super::*;

use packetary::executor::{BuildReport, BuildRequest, Progress as BuildEvent};
use packetary::model::{BuildId, CommitSha, TargetName};
use packetary::model::{Outcome, Trigger};
use packetary::queue::{PlanError, PlannedBuild, Planner, Runner, SourceError, SourceProvider};
use tokio_util::sync::CancellationToken;

/// Plans one package `hello` at `hello/hello.spec` for target `t`.
pub struct FakePlanner;

impl Planner for FakePlanner {
    fn plan<'a>(&'a self, _t: &'a Trigger) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(async {
            Ok(vec![PlannedBuild {
                error: None,
                package: "hello".into(),
                spec_path: "hello/hello.spec".into(),
                target: TargetName::parse("t").expect("name"),
                stage: 0,
                nevr: None,
            }])
        })
    }
}

/// Plans the packages it names at `<p>/<p>.spec` for target `t`; `app` one stage later
/// (it BuildRequires what `lib` builds).
pub struct StagedPlanner(pub &'static [&'static str]);

impl Planner for StagedPlanner {
    fn plan<'a>(&'a self, _t: &'a Trigger) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(async {
            let t = TargetName::parse("t").expect("name");
            Ok(self
                .0
                .iter()
                .map(|p| PlannedBuild {
                    package: (*p).into(),
                    spec_path: format!("{p}/{p}.spec").into(),
                    target: t.clone(),
                    error: None,
                    stage: u32::from(*p == "app"),
                    nevr: None,
                })
                .collect())
        })
    }
}

/// Writes spec files where the fake planners say they are; commit `9999…` is gone.
pub struct FakeSources;

/// The commit [`FakeSources`] cannot find.
pub const GONE_COMMIT: char = '9';

impl SourceProvider for FakeSources {
    fn export<'a>(
        &'a self,
        _url: &'a str,
        _repo: &'a RepoId,
        commit: &'a CommitSha,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            if commit.as_str() == GONE_COMMIT.to_string().repeat(40) {
                return Err(SourceError::Missing(format!(
                    "no commit {commit} in the mirror"
                )));
            }
            for p in ["hello", "lib", "app", "other"] {
                std::fs::create_dir_all(dest.join(p))
                    .map_err(|e| SourceError::Infra(e.to_string()))?;
                std::fs::write(dest.join(format!("{p}/{p}.spec")), format!("Name: {p}\n"))
                    .map_err(|e| SourceError::Infra(e.to_string()))?;
            }
            Ok(())
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Succeed,
    InfraError,
    /// Runs until cancelled.
    Block,
    /// Succeeds after a second.
    Slow,
}

pub struct FakeRunner {
    pub mode: Mutex<Mode>,
    pub runs: Mutex<Vec<BuildId>>,
    /// What `live_log` answers, by build and log name: the runner's logs are not on the
    /// service's disk.
    pub live: Mutex<std::collections::BTreeMap<(BuildId, String), Vec<u8>>>,
}

impl FakeRunner {
    pub fn new(mode: Mode) -> Arc<FakeRunner> {
        Arc::new(FakeRunner {
            mode: Mutex::new(mode),
            runs: Mutex::new(vec![]),
            live: Mutex::new(Default::default()),
        })
    }
}

impl Runner for FakeRunner {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<BuildEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        self.runs.lock().expect("lock").push(req.id.clone());
        let mode = *self.mode.lock().expect("lock");
        Box::pin(async move {
            let mut r = packetary::queue::error_report(&req, "fake infrastructure fault".into());
            r.outcome = match mode {
                Mode::Succeed => Outcome::Succeeded {
                    source: "x.src.rpm".into(),
                    binaries: vec!["x.noarch.rpm".into()],
                },
                Mode::InfraError => Outcome::Error {
                    message: "fake infrastructure fault".into(),
                },
                Mode::Block => {
                    cancel.cancelled().await;
                    Outcome::Cancelled
                }
                Mode::Slow => {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    Outcome::Succeeded {
                        source: "x.src.rpm".into(),
                        binaries: vec!["x.noarch.rpm".into()],
                    }
                }
            };
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn live_log(
        &self,
        id: &BuildId,
        _target: &TargetName,
        name: &str,
        from: Option<u64>,
        limit: usize,
    ) -> BoxFuture<
        'static,
        Result<Option<packetary::executor::LiveLog>, packetary::queue::LiveLogError>,
    > {
        let log = self
            .live
            .lock()
            .expect("lock")
            .get(&(id.clone(), name.to_string()))
            .cloned();
        Box::pin(async move {
            Ok(log.map(|bytes| {
                let size = bytes.len() as u64;
                let offset = from
                    .unwrap_or_else(|| size.saturating_sub(limit as u64))
                    .min(size);
                let end = (offset + limit as u64).min(size);
                packetary::executor::LiveLog {
                    bytes: bytes[offset as usize..end as usize].to_vec(),
                    offset,
                    size,
                }
            }))
        })
    }
}

pub fn target_map() -> std::collections::BTreeMap<TargetName, packetary::config::Target> {
    let c = packetary::config::Config::parse(
        "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"packetary/rpmbuild:bookworm\"\n",
        None,
    )
    .expect("config");
    c.targets
}

pub fn queue_config(data_dir: &Path) -> packetary::queue::QueueConfig {
    packetary::queue::QueueConfig {
        parallel: 1,
        data_dir: data_dir.to_path_buf(),
        public_url: "http://packetary.test".into(),
        repos_url: "http://packetary.test".into(),
        max_attempts: 2,
        retry_backoff: std::time::Duration::from_millis(100),
        shutdown_grace: std::time::Duration::from_secs(1),
        build_forks: false,
        targets: target_map(),
        repos: Default::default(),
        change_disk_quota: None,
    }
}

/// A queue over a fresh store with fakes everywhere; not started.
pub async fn fake_queue(
    dir: &Path,
    forge: Arc<dyn Forge>,
    runner: Arc<dyn Runner>,
) -> packetary::queue::Queue {
    let store = packetary::store::Store::open(&dir.join("data"))
        .await
        .expect("store");
    packetary::queue::Queue::new(
        packetary::queue::Ports {
            store,
            forge,
            planner: Arc::new(FakePlanner),
            sources: Arc::new(FakeSources),
            runner,
            indexing: None,
        },
        queue_config(&dir.join("data")),
        Arc::new(packetary::queue::Metrics::default()),
    )
}

/// A registry with GitHub's webhooks under `secrets`, acting for `allow`. (The web layer
/// only uses the inbound side; reports go through the queue's own forge.)
pub fn github_forges(
    secrets: Vec<packetary::config::Secret>,
    allow: &[&str],
) -> packetary::forge::Forges {
    packetary::forge::Forges::new().with(
        packetary::model::ForgeKind::GitHub,
        Arc::new(packetary::forge::github::GitHubWebhooks::new(
            secrets,
            allow.iter().map(|s| s.to_string()).collect(),
        )),
        arc_forge(),
    )
}

pub fn app_state(queue: &packetary::queue::Queue, allow: &[&str]) -> packetary::web::AppState {
    packetary::web::AppState {
        store: queue.store().clone(),
        queue: queue.clone(),
        forges: github_forges(
            vec![
                packetary::config::Secret::new("an old secret"),
                packetary::config::Secret::new(SECRET),
            ],
            allow,
        ),
        probes: Arc::new(vec![]),
        data_dir: queue.store_dir(),
        access: Arc::new(packetary::web::access::Access::public()),
        runner: queue.runner(),
    }
}
