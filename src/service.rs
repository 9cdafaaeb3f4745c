//! The composition root: [`Service::from_config`] builds the whole bot from a [`Config`]
//! (secrets, forges, store, Docker engine, git credentials, planner, runner, queue, web
//! routes), and [`Service::serve`] runs it until a shutdown signal. `packetary serve` and
//! the end-to-end tests both start the service through here, so there is one wiring.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, GithubAuth};
use crate::docker::{Engine, InfraError};
use crate::forge::github::{ApiAuth, ClientError, GitHub, GitHubWebhooks};
use crate::forge::{FetchOrigin, Forges};
use crate::git::{Credentials, FetchAuth};
use crate::model::ForgeKind;
use crate::queue::{DockerIndexing, DockerRunner, Metrics, Ports, Queue, QueueConfig, QueueError};
use crate::store::{Store, StoreError};
use crate::web::{AppState, Probe, ProbeError};

/// Why the service could not be built or stopped serving. Configuration mistakes
/// ([`ServiceError::is_configuration`]) name the key and the fix; the others are faults
/// of what the service runs on (database, Docker, network).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A value or a secret of the configuration (the message names the key and the fix).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `[github]`'s API URL or App key is unusable (the message names the key and the fix).
    #[error(transparent)]
    GitHubClient(#[from] ClientError),
    #[error("cannot set up the Gerrit client: {0}")]
    GerritClient(crate::forge::gerrit::NoTlsRoots),
    #[error("key `server.data_dir`: cannot make `{}` absolute\n  fix: give an absolute path", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Docker(#[from] InfraError),
    #[error("cannot start the queue (recovering the builds of the previous run)")]
    Queue(#[source] QueueError),
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
}

impl ServiceError {
    /// Whether the configuration is at fault (the user's to fix), rather than the
    /// infrastructure.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            ServiceError::Config(_) | ServiceError::GitHubClient(_) | ServiceError::DataDir { .. }
        )
    }
}

/// What the service takes from outside its configuration.
#[derive(Clone, Debug, Default)]
pub struct ServiceOptions {
    /// Credentials for git fetches that replace those derived from `[github]` (its token as
    /// the HTTPS password, or installation tokens a GitHub App mints). `None`: derived.
    pub git_auth: Option<FetchAuth>,
}

impl ServiceOptions {
    /// `PACKETARY_GIT_TOKEN` or `PACKETARY_GIT_SSH_KEY`, when set, override the fetch
    /// credentials (see [`git_auth_from_env`]).
    pub fn from_env() -> ServiceOptions {
        ServiceOptions {
            git_auth: match git_auth_from_env() {
                FetchAuth::None => None,
                a => Some(a),
            },
        }
    }
}

/// Fetch credentials from the environment: `PACKETARY_GIT_TOKEN` (HTTPS, user
/// `PACKETARY_GIT_USER` or `x-access-token`), else `PACKETARY_GIT_SSH_KEY` (a key file, user
/// `PACKETARY_GIT_USER` or `git`, passphrase `PACKETARY_GIT_SSH_PASSPHRASE`), else none.
pub fn git_auth_from_env() -> FetchAuth {
    let user = std::env::var("PACKETARY_GIT_USER").ok();
    if let Ok(token) = std::env::var("PACKETARY_GIT_TOKEN") {
        FetchAuth::Token {
            username: user.unwrap_or_else(|| "x-access-token".into()),
            token,
        }
    } else if let Ok(key) = std::env::var("PACKETARY_GIT_SSH_KEY") {
        FetchAuth::SshKey {
            username: user.unwrap_or_else(|| "git".into()),
            private_key: key.into(),
            passphrase: std::env::var("PACKETARY_GIT_SSH_PASSPHRASE").ok(),
        }
    } else {
        FetchAuth::None
    }
}

/// `[github]`'s fetch credentials (its token, or installation tokens its App mints),
/// offered only to the origin GitHub's repositories are fetched from (`git_url`, else the
/// forge's web origin): a Gerrit mirror, or any other host a fetch reaches, gets none.
fn github_credentials(
    auth: &ApiAuth,
    client: Arc<GitHub>,
    git_url: Option<&str>,
    api_url: &str,
) -> Credentials {
    let creds: Credentials = match auth {
        ApiAuth::Token(t) => FetchAuth::Token {
            username: "x-access-token".into(),
            token: t.expose().to_string(),
        }
        .into(),
        ApiAuth::App { .. } => Credentials::Minted(client),
        ApiAuth::Anonymous => FetchAuth::None.into(),
    };
    let origin = match (git_url, FetchOrigin::for_api(api_url)) {
        (Some(g), _) => g.to_string(),
        (None, FetchOrigin::Web(u)) => u.to_string(),
        (None, FetchOrigin::Mapped(g)) => g,
    };
    creds.scoped_to(origin)
}

/// `creds`, after the credentials written into the configured `git_url`s (each for its
/// own origin): the URLs kept with triggers carry none (issue 22), so a fetch gets them
/// from here.
fn with_configured_url_credentials<'a>(
    creds: Credentials,
    git_urls: impl IntoIterator<Item = Option<&'a str>>,
) -> Credentials {
    let mut all: Vec<Credentials> = git_urls
        .into_iter()
        .flatten()
        .filter_map(Credentials::from_url)
        .collect();
    if all.is_empty() {
        return creds;
    }
    all.push(creds);
    Credentials::AnyOf(all)
}

/// Docker must answer for `/healthz` to be healthy.
struct DockerProbe(Engine);

impl Probe for DockerProbe {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(async move { Ok(self.0.ping().await?) })
    }
}

#[derive(Debug, thiserror::Error)]
enum DiskError {
    #[error("cannot read the free space of {}: {source}", dir.display())]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} MiB free on {} (below [server] min_free_disk, {} MiB): free space, or move data_dir", free >> 20, dir.display(), min_free >> 20)]
    Low {
        dir: PathBuf,
        free: u64,
        min_free: u64,
    },
}

/// The data directory needs room: a full disk fails builds, git fetches and every store
/// write, while `SELECT 1` still answers.
struct DiskProbe {
    dir: PathBuf,
    min_free: u64,
}

impl Probe for DiskProbe {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(async move {
            let free = free_bytes(&self.dir).map_err(|source| DiskError::Unreadable {
                dir: self.dir.clone(),
                source,
            })?;
            if free < self.min_free {
                return Err(DiskError::Low {
                    dir: self.dir.clone(),
                    free,
                    min_free: self.min_free,
                }
                .into());
            }
            Ok(())
        })
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes only into the zeroed struct it is given; `c` outlives the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// The bot, wired and not yet running.
pub struct Service {
    config: Config,
    engine: Engine,
    state: AppState,
    /// `gerrit stream-events`, started by `serve` when `[gerrit] ssh` is set.
    gerrit_stream: Option<GerritStream>,
    /// A Swarm executor's routes for its jobs (inputs, results), served beside the pages.
    callback_routes: Option<axum::Router>,
}

type GerritStream = (
    crate::forge::gerrit::stream::StreamConfig,
    crate::forge::gerrit::EventContext,
    Arc<crate::forge::gerrit::GerritApi>,
);

/// The stream's events go to the same `ingest` as webhooks.
struct IngestSink {
    queue: Queue,
    projects: Arc<Vec<String>>,
}

impl crate::forge::gerrit::stream::EventSink for IngestSink {
    fn accept(&self, p: crate::forge::gerrit::Parsed) -> futures_util::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            use crate::queue::ingest::{ingest, Ingested};
            let allows = |r: &crate::model::RepoId| {
                r.forge() == ForgeKind::Gerrit
                    && crate::forge::gerrit::project_allowed(&self.projects, r.path())
            };
            match ingest(&self.queue, &p.delivery, None, &p.name, p.event, &allows).await {
                Ok(Ingested::Accepted) => {
                    tracing::info!(event = %p.name, "gerrit event accepted");
                    self.queue.metrics().webhook(&p.name, "accepted");
                    true
                }
                Ok(Ingested::Forbidden(repo)) => {
                    tracing::debug!(event = %p.name, %repo, "gerrit event of a project not configured");
                    false
                }
                Ok(other) => {
                    tracing::debug!(event = %p.name, "gerrit event not queued: {other:?}");
                    false
                }
                Err(e) => {
                    tracing::error!(event = %p.name, "cannot store a gerrit event: {e}");
                    false
                }
            }
        })
    }
}

impl Service {
    /// Builds everything the service runs from `config`: reads the secrets, makes the
    /// GitHub client and registers GitHub's webhooks and reports when a `[github]` table
    /// exists (without one, `/webhooks/github` is refused with 503 and the fix), opens the
    /// store under `[server] data_dir`, connects to Docker, and wires the planner, runner
    /// and queue. Nothing runs until [`Service::serve`], and nothing listens: the caller
    /// binds `[server] listen` (or any address) and hands the listener to `serve`.
    pub async fn from_config(
        config: Config,
        opts: ServiceOptions,
    ) -> Result<Service, ServiceError> {
        let (github, build_forks) = match &config.github {
            None => {
                tracing::debug!("no [github] table: GitHub webhooks are refused");
                (None, false)
            }
            Some(gh) => {
                let secrets = gh
                    .webhook_secrets
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.resolve(&format!("github.webhook_secrets[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                let auth = match &gh.auth {
                    GithubAuth::Token(t) => ApiAuth::Token(t.resolve("github.token")?),
                    GithubAuth::App {
                        app_id,
                        private_key,
                        installation_id,
                    } => ApiAuth::App {
                        app_id: *app_id,
                        private_key_pem: private_key.resolve("github.private_key")?,
                        installation_id: *installation_id,
                    },
                };
                if gh.repositories.is_empty() {
                    tracing::warn!("[github] repositories is empty: every webhook will be refused");
                }
                let client = Arc::new(GitHub::new(&gh.api_url, &auth)?);
                let origin = match &gh.git_url {
                    Some(g) => FetchOrigin::Mapped(g.clone()),
                    None => FetchOrigin::for_api(&gh.api_url),
                };
                let hooks =
                    GitHubWebhooks::new(secrets, gh.repositories.clone()).fetching_from(origin);
                (Some((auth, client, hooks)), gh.build_forks)
            }
        };
        let data_dir = absolute(&config.server.data_dir)?;
        let gerrit = match &config.gerrit {
            Some(g) => Some(
                crate::forge::gerrit::wire(g, &data_dir).map_err(|e| match e {
                    crate::forge::gerrit::WireError::Config(c) => ServiceError::Config(c),
                    crate::forge::gerrit::WireError::Client(m) => ServiceError::GerritClient(m),
                })?,
            ),
            None => None,
        };
        let store = Store::open(&data_dir).await?;
        let engine = Engine::connect(config.docker_host.as_deref()).await?;

        // One mirror per repository, shared by the planner and the builds' exports. The
        // token of a token-configured GitHub also reads private repositories, and a GitHub
        // App fetches with installation tokens it mints; the options' credentials
        // (PACKETARY_GIT_* for `packetary serve`) override both.
        let git_creds: Credentials = match (opts.git_auth, &github, &config.github) {
            (Some(a), ..) => a.into(),
            (None, Some((auth, client, _)), Some(gh)) => {
                github_credentials(auth, client.clone(), gh.git_url.as_deref(), &gh.api_url)
            }
            (None, ..) => FetchAuth::None.into(),
        };
        let git_creds = with_configured_url_credentials(
            git_creds,
            [
                config.github.as_ref().and_then(|g| g.git_url.as_deref()),
                config.gerrit.as_ref().map(|g| g.git_url.as_str()),
            ],
        );
        let (sources, planner) = crate::queue::planner::git_backed(
            &data_dir,
            store.clone(),
            git_creds,
            engine.clone(),
            config.targets.clone(),
            config.default_targets.clone(),
        );
        let executor =
            crate::executor::executor_from_config(&config.executor, engine.clone(), "service")
                .await
                .map_err(ServiceError::Docker)?;
        let callback_routes = executor.callback_routes();
        let runner = Arc::new(DockerRunner::new(executor));
        let mut forges = Forges::new();
        if let Some((_, client, hooks)) = github {
            forges = forges.with(ForgeKind::GitHub, Arc::new(hooks), client);
        }
        let mut gerrit_stream = None;
        if let Some(g) = gerrit {
            forges = forges.with(ForgeKind::Gerrit, Arc::new(g.hooks), g.api.clone());
            gerrit_stream = g.stream.map(|s| (s, g.events, g.api));
        }
        for r in config
            .releases
            .values()
            .filter(|r| r.repositories.is_empty())
        {
            tracing::warn!(
                release = %r.name,
                "every repository this service acts for publishes into release `{}`, whose packages every build of it installs as root\n  fix: name the repositories that feed it in [releases.{}] repositories = [\"forge:owner/name\", ...]",
                r.name,
                r.name
            );
        }
        // The composition of the queue's stages: each port once, here.
        let ports = Ports {
            store: store.clone(),
            forge: Arc::new(forges.clone()),
            planner,
            sources,
            runner: runner.clone(),
            indexing: Some(Arc::new(DockerIndexing {
                engine: engine.clone(),
                data_dir: data_dir.clone(),
            })),
        };
        let queue = Queue::new(
            ports,
            QueueConfig {
                parallel: config.parallel,
                data_dir: data_dir.clone(),
                public_url: config.server.public_url.clone(),
                repos_url: config.server.repos_url.clone(),
                max_attempts: config.server.max_attempts,
                retry_backoff: config.server.retry_backoff,
                shutdown_grace: config.server.shutdown_grace,
                build_forks,
                targets: config.targets.clone(),
                repos: crate::queue::ReposConfig {
                    releases: config.releases.clone(),
                    change_max_age: config.server.change_repos_max_age,
                },
                change_disk_quota: config.server.change_disk_quota,
            },
            Arc::new(Metrics::default()),
        );
        let page_token = match &config.server.page_token {
            Some(t) => Some(t.resolve("server.page_token")?),
            None => None,
        };
        let access =
            crate::web::access::Access::new(config.server.private_repositories.clone(), page_token)
                .with_releases(
                    config
                        .releases
                        .values()
                        .map(|r| (r.name.as_str().to_string(), r.repositories.clone())),
                );
        let state = AppState {
            store,
            queue,
            forges,
            probes: Arc::new(vec![
                Arc::new(DockerProbe(engine.clone())) as Arc<dyn Probe>,
                Arc::new(DiskProbe {
                    dir: data_dir.clone(),
                    min_free: config.server.min_free_disk,
                }),
            ]),
            data_dir,
            access: Arc::new(access),
            runner,
        };
        Ok(Service {
            config,
            engine,
            state,
            gerrit_stream,
            callback_routes,
        })
    }

    /// The configuration the service was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn queue(&self) -> &Queue {
        &self.state.queue
    }

    /// The forges webhooks come from and reports go to.
    pub fn forges(&self) -> &Forges {
        &self.state.forges
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// `[server] data_dir`, made absolute: database, mirrors, work trees, results.
    pub fn data_dir(&self) -> &Path {
        &self.state.data_dir
    }

    /// The whole HTTP surface: webhooks, pages, `/healthz`, `/metrics`.
    pub fn router(&self) -> axum::Router {
        let web = crate::web::router_with(
            self.state.clone(),
            self.config.server.body_limit,
            self.config.server.body_timeout,
        );
        match &self.callback_routes {
            Some(tasks) => web.merge(tasks.clone()),
            None => web,
        }
    }

    /// Runs the service on `listener` until `shutdown` completes: starts the queue
    /// (recovering the previous run's builds), serves HTTP, and on `shutdown` drains the
    /// queue first while pages and webhooks stay served (new webhooks are stored and built
    /// at the next start; running builds get `[server] shutdown_grace`), then stops the
    /// server and closes the store.
    pub async fn serve<S>(
        self,
        listener: tokio::net::TcpListener,
        shutdown: S,
    ) -> Result<(), ServiceError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let store = self.state.store.clone();
        let queue = self.state.queue.clone();
        let tasks = match queue.start().await {
            Ok(tasks) => tasks,
            Err(e) => {
                store.close().await;
                return Err(ServiceError::Queue(e));
            }
        };
        let stop_stream = CancellationToken::new();
        let mut tasks = tasks;
        if let Some((cfg, events, api)) = self.gerrit_stream.clone() {
            let sink = Arc::new(IngestSink {
                queue: queue.clone(),
                projects: cfg.projects.clone(),
            });
            tasks.push(tokio::spawn(crate::forge::gerrit::stream::run(
                cfg,
                events,
                api,
                sink,
                stop_stream.clone(),
            )));
        }
        if let Ok(local) = listener.local_addr() {
            tracing::info!(
                "listening on http://{local}/ (public URL {})",
                self.config.server.public_url
            );
        }
        let drained = CancellationToken::new();
        let watch = tokio::spawn({
            let queue = queue.clone();
            let drained = drained.clone();
            async move {
                shutdown.await;
                tracing::info!("stopping: draining the queue");
                queue.drain().await;
                drained.cancel();
            }
        });
        let server = &self.config.server;
        let files = crate::web::listener::raise_file_limit();
        // Room for the database, mirrors, build logs and Docker's socket besides connections.
        let max_connections = match files {
            Some(n) => server
                .max_connections
                .min((n as usize).saturating_sub(256).max(16)),
            None => server.max_connections,
        };
        if max_connections < server.max_connections {
            tracing::warn!(
                "[server] max_connections {} lowered to {max_connections}: the open file limit is {}",
                server.max_connections,
                files.unwrap_or_default()
            );
        }
        let limits = crate::web::listener::Limits {
            max_connections,
            header_timeout: server.header_timeout,
        };
        let served = crate::web::listener::serve(
            listener,
            self.router(),
            limits,
            async move { drained.cancelled().await },
            Duration::from_secs(10),
        )
        .await;
        watch.abort();
        stop_stream.cancel();
        for t in tasks {
            t.abort();
        }
        store.close().await;
        tracing::info!("stopped");
        served.map_err(ServiceError::Http)
    }
}

fn absolute(p: &Path) -> Result<PathBuf, ServiceError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|source| ServiceError::DataDir {
            path: p.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22: `[github]`'s token goes to GitHub's git origin only, not to every host a
    /// mirror is fetched from (a Gerrit server's, another forge's).
    #[tokio::test]
    async fn the_github_token_is_offered_to_github_only() {
        let auth = ApiAuth::Token(crate::config::Secret::new("ghp_s3cret"));
        let client = Arc::new(GitHub::new("https://api.github.com", &auth).expect("client"));
        let creds = github_credentials(&auth, client.clone(), None, "https://api.github.com");
        let to = |url: &'static str| {
            let creds = creds.clone();
            async move { creds.for_url(url).await.expect("credentials") }
        };
        assert!(matches!(
            to("https://github.com/acme/pkgs.git").await,
            FetchAuth::Token { .. }
        ));
        for elsewhere in [
            "https://review.example.org/fuel/specs",
            "http://github.com/acme/pkgs.git",
            "ssh://review.example.org:29418/fuel/specs",
        ] {
            let got = creds.for_url(elsewhere).await.expect("credentials");
            assert!(matches!(got, FetchAuth::None), "{elsewhere}: {got:?}");
        }
        // With `git_url`, that origin.
        let mapped = github_credentials(
            &auth,
            client,
            Some("https://git.corp.example/mirror"),
            "https://api.github.com",
        );
        let got = mapped
            .for_url("https://git.corp.example/mirror/acme/pkgs")
            .await
            .expect("credentials");
        assert!(matches!(got, FetchAuth::Token { .. }), "{got:?}");
        let got = mapped
            .for_url("https://github.com/acme/pkgs.git")
            .await
            .expect("credentials");
        assert!(matches!(got, FetchAuth::None), "{got:?}");
    }

    /// A `git_url` with credentials: its URLs are kept without them, and its fetches get
    /// them from the configuration, on its origin only.
    #[tokio::test]
    async fn a_git_url_s_credentials_come_from_the_configuration() {
        let creds = with_configured_url_credentials(
            FetchAuth::None.into(),
            [Some("https://bot:t0ken@git.corp.example/mirror"), None],
        );
        let kept = crate::model::without_userinfo("https://bot:t0ken@git.corp.example/mirror/o/r");
        assert_eq!(kept, "https://git.corp.example/mirror/o/r");
        match creds.for_url(&kept).await.expect("credentials") {
            FetchAuth::Token { username, token } => {
                assert_eq!((username.as_str(), token.as_str()), ("bot", "t0ken"))
            }
            other => panic!("{other:?}"),
        }
        let got = creds
            .for_url("https://github.com/o/r.git")
            .await
            .expect("credentials");
        assert!(matches!(got, FetchAuth::None), "{got:?}");
    }
}
