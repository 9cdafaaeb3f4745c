//! The `packetary` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use packetary::build::{self, images, BuildRequest, Engine, Executor, ProgressKind};
use packetary::config::{Config, Repo};
use packetary::git::{FetchAuth, GitError, MirrorCache, RemoteRef};
use packetary::model::Outcome;
use packetary::model::{BuildId, TargetName};
use packetary::plan;
use packetary::spec::{SpecCache, SpecOracle};
use std::collections::HashMap;

/// Exit statuses, as documented in the README.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INFRA: u8 = 3;
const EXIT_CANCELLED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "packetary",
    version,
    about = "Builds packages in clean containers, driven by git"
)]
struct Cli {
    /// Configuration file (TOML). Default: the embedded defaults.
    #[arg(long, global = true, env = "PACKETARY_CONFIG")]
    config: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build every package under PATH for each target, or the packages a git change touched (--git).
    Build(BuildArgs),
    /// Show which packages a change touched, for which targets, and in what order they build.
    Plan(PlanArgs),
    /// Run the bot: receive GitHub webhooks, build, and report commit statuses.
    Serve(ServeArgs),
    /// Builder images: list them, or build them.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Directory holding the package(s).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Build only this spec file (inside PATH).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Target to build for (repeatable). Default: the configuration's default targets.
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
    /// Where results go: OUT/<target>/<name>-<version>-<release>/.
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
    /// Extra repository for BuildRequires: a directory, file://, http(s):// URL, or NAME=LOCATION.
    #[arg(long = "repo")]
    repos: Vec<String>,
    /// Builds to run at once. Default: from the configuration (number of cores).
    #[arg(long, short = 'j')]
    parallel: Option<usize>,
    /// Build the packages changed between two commits of a repository (URL or path):
    /// `--git REPO BASE..HEAD` (push) or `BASE...HEAD` (review), in dependency order.
    #[arg(long, num_args = 2, value_names = ["REPO", "RANGE"], conflicts_with = "spec")]
    git: Option<Vec<String>>,
    #[command(flatten)]
    git_opts: GitOpts,
}

#[derive(clap::Args)]
struct PlanArgs {
    /// The repository: a URL (kept as a bare mirror in the cache) or a local path.
    repo: String,
    /// `BASE..HEAD`: a push of HEAD over BASE (BASE all zeros: a new branch);
    /// `BASE...HEAD`: a review of HEAD for BASE (compared with their merge-base).
    range: String,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    git_opts: GitOpts,
}

#[derive(clap::Args, Clone)]
struct GitOpts {
    /// Treat `BASE..HEAD` as a review: compare with the merge-base, read .packetary.toml at BASE.
    #[arg(long)]
    review: bool,
    /// The branch a new branch is compared with. Default: the remote's default branch.
    #[arg(long)]
    default_branch: Option<String>,
    /// Use the mirror as it is, without fetching.
    #[arg(long)]
    offline: bool,
    /// Do not run rpmspec (no Docker): no package names and no build order.
    #[arg(long)]
    no_spec: bool,
    /// Extra refs to fetch, e.g. refs/pull/7/head or refs/changes/45/12345/2.
    #[arg(long = "fetch")]
    fetch: Vec<String>,
    /// Where mirrors and spec answers are cached. Default: $XDG_CACHE_HOME/packetary.
    #[arg(long, env = "PACKETARY_CACHE")]
    cache_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on. Default: [server] listen.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// List the images Packetary can build and whether the Docker host has them.
    List,
    /// Build the images the configured targets use that the Docker host lacks.
    Ensure,
    /// Build an image (default: those the configured targets use). Rebuilds if present.
    Build {
        /// Recipe name or image tag (see `packetary images list`).
        name: Vec<String>,
    },
}

/// A failure with the exit status it maps to.
struct Exit(u8, anyhow::Error);

fn usage(e: impl Into<anyhow::Error>) -> Exit {
    Exit(EXIT_USAGE, e.into())
}

fn infra(e: impl Into<anyhow::Error>) -> Exit {
    Exit(EXIT_INFRA, e.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 if matches!(cli.command, Command::Serve(_)) => "info",
        0 => "warn",
        1 => "info,packetary=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PACKETARY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INFRA);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Exit(code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Exit> {
    let config = Config::load(cli.config.as_deref()).map_err(usage)?;
    match cli.command {
        Command::Build(args) if args.git.is_some() => cmd_build_git(config, args).await,
        Command::Build(args) => cmd_build(config, args).await,
        Command::Plan(args) => cmd_plan(config, args).await,
        Command::Images { command } => cmd_images(config, command).await,
        Command::Serve(args) => cmd_serve(config, args).await,
    }
}

/// Docker must answer for `/healthz` to be healthy.
struct DockerProbe(Engine);

impl packetary::web::Probe for DockerProbe {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

async fn cmd_serve(config: Config, args: ServeArgs) -> Result<u8, Exit> {
    use packetary::forge::github::{ApiAuth, GitHub, GitHubWebhooks};
    use packetary::forge::Forges;
    use packetary::model::ForgeKind;
    use packetary::queue::{DockerRunner, Metrics, Queue, QueueConfig};
    use std::sync::Arc;

    let mut config = config;
    if let Some(listen) = args.listen {
        // A defaulted public URL follows the address actually listened on.
        if config.server.public_url == format!("http://{}", config.server.listen) {
            config.server.public_url = format!("http://{listen}");
        }
        config.server.listen = listen;
    }
    // Without a [github] table the service still runs (pages, health, metrics) and
    // refuses webhooks with 503 and the fix, so that a fresh machine can start it as is.
    let (api_url, secrets, auth, repositories, build_forks) = match &config.github {
        None => {
            eprintln!("packetary: no [github] table in the configuration: webhooks are refused (503) until one is added; see config/packetary.example.toml");
            (
                "https://api.github.com".to_string(),
                vec![],
                ApiAuth::Anonymous,
                vec![],
                false,
            )
        }
        Some(gh) => {
            let secrets = gh
                .webhook_secrets
                .iter()
                .enumerate()
                .map(|(i, s)| s.resolve(&format!("github.webhook_secrets[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(usage)?;
            let auth = match &gh.auth {
                packetary::config::GithubAuth::Token(t) => {
                    ApiAuth::Token(t.resolve("github.token").map_err(usage)?)
                }
                packetary::config::GithubAuth::App {
                    app_id,
                    private_key,
                    installation_id,
                } => ApiAuth::App {
                    app_id: *app_id,
                    private_key_pem: private_key.resolve("github.private_key").map_err(usage)?,
                    installation_id: *installation_id,
                },
            };
            if gh.repositories.is_empty() {
                tracing::warn!("[github] repositories is empty: every webhook will be refused");
            }
            (
                gh.api_url.clone(),
                secrets,
                auth,
                gh.repositories.clone(),
                gh.build_forks,
            )
        }
    };
    let forge = Arc::new(GitHub::new(&api_url, &auth).map_err(usage)?);
    let data_dir = absolute(&config.server.data_dir).map_err(usage)?;
    let store = packetary::store::Store::open(&data_dir)
        .await
        .map_err(infra)?;
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    // One mirror per repository, shared by the planner and the builds' exports. The token
    // of a token-configured GitHub also reads private repositories, and a GitHub App
    // fetches with installation tokens it mints; PACKETARY_GIT_* (as for `packetary plan`)
    // override both.
    let env_auth = git_auth();
    let git_creds: packetary::git::Credentials = match (&auth, env_auth) {
        (
            _,
            a
            @ (packetary::git::FetchAuth::Token { .. } | packetary::git::FetchAuth::SshKey { .. }),
        ) => a.into(),
        (ApiAuth::Token(t), _) => packetary::git::FetchAuth::Token {
            username: "x-access-token".into(),
            token: t.expose().to_string(),
        }
        .into(),
        (ApiAuth::App { .. }, _) => packetary::git::Credentials::Minted(forge.clone()),
        (ApiAuth::Anonymous, a) => a.into(),
    };
    let (sources, planner) = packetary::queue::planner::git_backed(
        &data_dir,
        git_creds,
        engine.clone(),
        config.targets.clone(),
        config.default_targets.clone(),
    );
    let runner = Arc::new(DockerRunner {
        executor: Executor::new(engine.clone()),
    });
    let metrics = Arc::new(Metrics::default());
    let forges = Forges::new().with(
        ForgeKind::GitHub,
        Arc::new(GitHubWebhooks::new(secrets, repositories)),
        forge,
    );
    let queue = Queue::new(
        store.clone(),
        Arc::new(forges.clone()),
        planner,
        sources,
        runner,
        QueueConfig {
            parallel: config.parallel,
            data_dir: data_dir.clone(),
            public_url: config.server.public_url.clone(),
            max_attempts: config.server.max_attempts,
            retry_backoff: config.server.retry_backoff,
            shutdown_grace: config.server.shutdown_grace,
            build_forks,
            targets: config.targets.clone(),
        },
        metrics,
    );
    let tasks = queue.start().await.map_err(infra)?;
    let state = packetary::web::AppState {
        store: store.clone(),
        queue: queue.clone(),
        forges,
        probes: Arc::new(vec![
            Arc::new(DockerProbe(engine)) as Arc<dyn packetary::web::Probe>
        ]),
        data_dir,
    };
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(infra)?;
    let local = listener.local_addr().map_err(infra)?;
    tracing::info!(
        "listening on http://{local}/ (public URL {})",
        config.server.public_url
    );
    eprintln!("packetary: listening on http://{local}/");

    // On SIGTERM or Ctrl-C the queue drains first, while pages and webhooks stay served
    // (new webhooks are stored and built at the next start); then the server stops.
    let drained = CancellationToken::new();
    {
        let queue = queue.clone();
        let drained = drained.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: draining the queue");
            queue.drain().await;
            drained.cancel();
        });
    }
    let app = packetary::web::router(state, config.server.body_limit);
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let drained = drained.clone();
        async move { drained.cancelled().await }
    });
    server
        .await
        .context("the HTTP server failed")
        .map_err(infra)?;
    for t in tasks {
        t.abort();
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(0)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn progress_line(msg: &str) {
    eprintln!("packetary: {msg}");
}

async fn cmd_images(config: Config, command: ImagesCommand) -> Result<u8, Exit> {
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    match command {
        ImagesCommand::List => {
            for r in images::RECIPES {
                let present = engine.image_id(r.tag).await.map_err(infra)?;
                println!(
                    "{:<12} {:<32} {:<8} {}",
                    r.name,
                    r.tag,
                    if present.is_some() {
                        "present"
                    } else {
                        "missing"
                    },
                    r.about
                );
            }
            Ok(0)
        }
        ImagesCommand::Ensure => {
            let mut seen = std::collections::HashSet::new();
            for t in config.targets.values() {
                if !seen.insert(t.image.clone()) {
                    continue;
                }
                if images::recipe_for_image(&t.image).is_none()
                    && engine.image_id(&t.image).await.map_err(infra)?.is_none()
                {
                    progress_line(&format!(
                        "target {} uses {}, which is missing and has no recipe; skipped",
                        t.name, t.image
                    ));
                    continue;
                }
                let id =
                    images::ensure(&engine, &config.images, &t.image, &mut |l| progress_line(l))
                        .await
                        .map_err(infra)?;
                progress_line(&format!("{} is present ({id})", t.image));
            }
            Ok(0)
        }
        ImagesCommand::Build { name } => {
            let recipes: Vec<&images::Recipe> = if name.is_empty() {
                let mut v: Vec<&images::Recipe> = config
                    .targets
                    .values()
                    .filter_map(|t| images::recipe_for_image(&t.image))
                    .collect();
                v.dedup_by_key(|r| r.name);
                v
            } else {
                name.iter()
                    .map(|n| {
                        images::recipe_by_name(n).ok_or_else(|| {
                            usage(anyhow::anyhow!(
                                "no image recipe named `{n}`; known: {}",
                                images::RECIPES
                                    .iter()
                                    .map(|r| r.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            for r in recipes {
                let start = Instant::now();
                images::build(&engine, &config.images, r, &mut |l| progress_line(l))
                    .await
                    .map_err(infra)?;
                progress_line(&format!(
                    "{} ready in {:.1}s",
                    r.tag,
                    start.elapsed().as_secs_f64()
                ));
            }
            Ok(0)
        }
    }
}

async fn cmd_build(config: Config, args: BuildArgs) -> Result<u8, Exit> {
    let targets = config.select_targets(&args.targets).map_err(usage)?;
    let out = args.out.clone().unwrap_or_else(|| config.out_dir.clone());
    let out = absolute(&out).map_err(usage)?;
    let root = &args.path;
    if !root.is_dir() {
        return Err(usage(anyhow::anyhow!(
            "{} is not a directory\n  fix: pass the directory that holds the package(s)",
            root.display()
        )));
    }
    let packages = match &args.spec {
        Some(spec) => {
            let spec = if spec.is_absolute() || spec.exists() {
                spec.clone()
            } else {
                root.join(spec)
            };
            vec![plan::package_for_spec(root, &spec).map_err(usage)?]
        }
        None => plan::discover(root, std::slice::from_ref(&out)).map_err(usage)?,
    };
    let extra_repos: Vec<Repo> = args
        .repos
        .iter()
        .enumerate()
        .map(|(i, r)| Repo::parse_arg(r, i).map_err(|e| usage(anyhow::anyhow!("--repo {r}: {e}"))))
        .collect::<Result<_, _>>()?;
    let parallel = args.parallel.unwrap_or(config.parallel).max(1);

    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    let image_ids = ensure_images(&engine, &config, targets.iter()).await?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))
        .map_err(infra)?;

    let requests: Vec<BuildRequest> = packages
        .iter()
        .flat_map(|p| {
            targets.iter().map(|t| BuildRequest {
                id: BuildId::generate(),
                package: p.clone(),
                target: t.clone(),
                out_root: out.clone(),
                extra_repos: extra_repos.clone(),
            })
        })
        .collect();
    progress_line(&format!(
        "building {} package(s) × {} target(s) = {} build(s), {} at a time, into {}",
        packages.len(),
        targets.len(),
        requests.len(),
        parallel,
        out.display()
    ));

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (tx, printer) = spawn_progress_printer(started);
    let ctrl_c = spawn_interrupt_watch(cancel.clone());

    let executor = Executor::new(engine);
    match executor.reap_orphans().await {
        Ok(0) => {}
        Ok(n) => progress_line(&format!(
            "removed {n} build container(s) left by killed runs"
        )),
        Err(e) => tracing::warn!("could not look for leftover containers: {e}"),
    }
    let reports: Vec<build::BuildReport> = futures_util::stream::iter(requests)
        .map(|req| {
            let image_id = image_ids.get(&req.target.image).cloned();
            executor.run(req, image_id, Some(tx.clone()), cancel.clone())
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    drop(tx);
    let _ = printer.await;
    ctrl_c.abort();

    Ok(summarize(&reports, started))
}

/// Makes sure every image the targets use is on the Docker host (building missing ones
/// once, before any build starts); returns image → id for the builds' provenance.
async fn ensure_images<'a>(
    engine: &Engine,
    config: &Config,
    targets: impl Iterator<Item = &'a packetary::config::Target>,
) -> Result<std::collections::HashMap<String, String>, Exit> {
    let mut image_ids = std::collections::HashMap::new();
    for t in targets {
        if !image_ids.contains_key(&t.image) {
            let id = images::ensure(engine, &config.images, &t.image, &mut |l| progress_line(l))
                .await
                .map_err(infra)?;
            image_ids.insert(t.image.clone(), id);
        }
    }
    Ok(image_ids)
}

/// Prints build progress, phase by phase, on the terminal; ends when every sender is gone.
fn spawn_progress_printer(
    started: Instant,
) -> (
    tokio::sync::mpsc::UnboundedSender<build::Progress>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<build::Progress>();
    let printer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let who = format!("{}/{}", ev.package, ev.target);
            let t = started.elapsed().as_secs_f64();
            match ev.kind {
                ProgressKind::PhaseStarted(p) => eprintln!("[{t:7.1}s] {who}: {p} …"),
                ProgressKind::PhaseFinished { phase, elapsed, ok } => eprintln!(
                    "[{t:7.1}s] {who}: {phase} {} ({:.1}s)",
                    if ok { "done" } else { "FAILED" },
                    elapsed.as_secs_f64()
                ),
                ProgressKind::Finished(_) => {}
            }
        }
    });
    (tx, printer)
}

/// Cancels `cancel` on Ctrl-C or SIGTERM, so that builds stop and remove their containers.
fn spawn_interrupt_watch(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("packetary: interrupted; stopping builds and removing their containers");
        cancel.cancel();
    })
}

fn summarize(reports: &[build::BuildReport], started: Instant) -> u8 {
    let mut code = 0u8;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for r in reports {
        let name = r
            .nevr
            .as_ref()
            .map(|n| n.nvr())
            .unwrap_or_else(|| r.package.clone());
        match &r.outcome {
            Outcome::Succeeded { rpms, .. } => {
                let _ = writeln!(
                    out,
                    "ok      {}/{} → {} ({} rpm)",
                    r.target,
                    name,
                    r.dir.display(),
                    rpms.len()
                );
            }
            Outcome::Failed { message, log, .. } => {
                code = code.max(EXIT_FAILED);
                let _ = writeln!(out, "FAILED  {}/{}: {message}", r.target, name);
                eprintln!(
                    "--- last lines of {} ---\n{}\n--- end of {} ---",
                    log.display(),
                    build::tail(log, 25),
                    log.display()
                );
            }
            Outcome::Error { message } => {
                code = code.max(EXIT_INFRA);
                let _ = writeln!(out, "ERROR   {}/{}: {message}", r.target, name);
            }
            Outcome::Cancelled => {
                code = EXIT_CANCELLED;
                let _ = writeln!(out, "CANCELLED {}/{}", r.target, name);
            }
        }
    }
    let ok = reports.iter().filter(|r| r.outcome.succeeded()).count();
    let _ = writeln!(
        out,
        "{ok} of {} build(s) succeeded in {:.1}s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    code
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(p))
    }
}

// ---- plan, and build --git ---------------------------------------------------------------

/// Where mirrors and spec answers live between runs.
fn cache_dir(opts: &GitOpts) -> PathBuf {
    opts.cache_dir
        .clone()
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("packetary")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/packetary")))
        .unwrap_or_else(|| PathBuf::from(".packetary-cache"))
}

/// `BASE..HEAD` is a push, `BASE...HEAD` (or `--review`) a review.
fn parse_range(range: &str, review: bool) -> Result<plan::Change, Exit> {
    let (base, head, three) = if let Some((b, h)) = range.split_once("...") {
        (b, h, true)
    } else if let Some((b, h)) = range.split_once("..") {
        (b, h, false)
    } else {
        return Err(usage(anyhow::anyhow!(
            "`{range}` is not a range\n  fix: write BASE..HEAD (a push of HEAD over BASE) or BASE...HEAD (a review of HEAD for BASE)"
        )));
    };
    if head.is_empty() || (three || review) && base.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "`{range}`: both ends of the range are needed"
        )));
    }
    Ok(if three || review {
        plan::Change::Review {
            base: base.to_string(),
            head: head.to_string(),
        }
    } else {
        plan::Change::Push {
            before: (!base.is_empty()).then(|| base.to_string()),
            after: head.to_string(),
        }
    })
}

/// Credentials from the environment: a token for HTTPS, or an SSH key.
fn git_auth() -> FetchAuth {
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

/// The repository to plan in: a local path as it is, or the mirror of a URL, fetched
/// first with every branch plus the refs the range names.
async fn open_source(
    repo: &str,
    change: &plan::Change,
    opts: &GitOpts,
) -> Result<(PathBuf, Option<String>), Exit> {
    let local = Path::new(repo);
    if !repo.contains("://") && local.exists() {
        return Ok((absolute(local).map_err(usage)?, None));
    }
    if !repo.contains("://") && !repo.contains('@') {
        return Err(usage(anyhow::anyhow!(
            "`{repo}` is neither a directory nor a git URL\n  fix: pass a path to a repository, or an https://, ssh:// or file:// URL"
        )));
    }
    let cache = MirrorCache::new(cache_dir(opts).join("mirrors"));
    if opts.offline {
        let m = cache.mirror_for(repo);
        if !m.path.join("HEAD").exists() {
            return Err(usage(anyhow::anyhow!(
                "there is no mirror of {repo} yet\n  fix: run once without --offline"
            )));
        }
        return Ok((m.path, None));
    }
    let mut refs = vec![RemoteRef::AllBranches];
    let revs: Vec<&str> = match change {
        plan::Change::Push { before, after } => before
            .iter()
            .map(String::as_str)
            .chain([after.as_str()])
            .collect(),
        plan::Change::Review { base, head } => vec![base, head],
    };
    for rev in revs
        .into_iter()
        .chain(opts.fetch.iter().map(String::as_str))
    {
        if rev.starts_with("refs/") || rev.starts_with("pull/") {
            match RemoteRef::parse(rev) {
                Some(RemoteRef::Branch(_)) => {}
                Some(r) => refs.push(r),
                None => return Err(usage(anyhow::anyhow!("`{rev}` is not a valid ref name"))),
            }
        }
    }
    let started = Instant::now();
    match cache.fetch(repo, &refs, &git_auth()).await {
        Ok((m, report)) => {
            tracing::info!(
                "fetched {repo} in {:.2}s ({} refs updated)",
                started.elapsed().as_secs_f64(),
                report.updated.len()
            );
            Ok((m.path, report.default_branch))
        }
        Err(e @ GitError::MissingRef { .. }) => Err(usage(e)),
        Err(e) => Err(infra(e)),
    }
}

async fn make_plan(
    config: &Config,
    repo: &str,
    range: &str,
    opts: &GitOpts,
    engine: Option<Engine>,
) -> Result<(plan::Plan, PathBuf), Exit> {
    let change = parse_range(range, opts.review)?;
    let (path, remote_default) = open_source(repo, &change, opts).await?;
    let options = plan::PlanOptions {
        default_branch: opts.default_branch.clone().or(remote_default),
        default_targets: config
            .default_targets
            .iter()
            .map(|t| t.to_string())
            .collect(),
        known_targets: config.targets.keys().map(|t| t.to_string()).collect(),
    };
    let cache = SpecCache::new(cache_dir(opts).join("specs"));
    let oracle = (!opts.no_spec).then(|| match engine {
        Some(e) => SpecOracle::with_engine(cache.clone(), e),
        None => SpecOracle::new(cache.clone(), config.docker_host.clone()),
    });
    let plan = plan::plan_change(
        path.clone(),
        repo.to_string(),
        change,
        options,
        &config.targets,
        oracle.as_ref(),
    )
    .await
    .map_err(infra)?;
    Ok((plan, path))
}

fn write_plan(plan: &plan::Plan, out: &mut dyn Write) -> std::io::Result<()> {
    let short = |c: &Option<packetary::model::CommitSha>| {
        c.as_ref()
            .map(|c| c.short().to_string())
            .unwrap_or_else(|| "-".into())
    };
    writeln!(
        out,
        "plan for {} ({:?}): {} compared with {}, {} path(s) changed, .packetary.toml from {}",
        plan.repo,
        plan.kind,
        short(&plan.head),
        plan.compared_with
            .as_ref()
            .map(|c| c.short().to_string())
            .unwrap_or_else(|| "nothing (every package)".into()),
        plan.changed_paths,
        short(&plan.config_from),
    )?;
    for n in &plan.notices {
        writeln!(out, "  note: {n}")?;
    }
    for e in &plan.errors {
        writeln!(out, "  ERROR: {e}")?;
    }
    let mut stage = usize::MAX;
    for p in &plan.packages {
        if p.error.is_none() && p.stage != stage {
            stage = p.stage;
            writeln!(out, "stage {stage}:")?;
        }
        let why: Vec<String> = p
            .reasons
            .iter()
            .map(|r| match r {
                plan::Reason::Changed { paths, count } if *count > paths.len() => {
                    format!(
                        "changed {} (+{} more)",
                        paths.join(", "),
                        count - paths.len()
                    )
                }
                plan::Reason::Changed { paths, .. } => format!("changed {}", paths.join(", ")),
                plan::Reason::Config { detail } => detail.clone(),
            })
            .collect();
        let targets: Vec<&str> = p.targets.iter().map(|t| t.as_str()).collect();
        match &p.error {
            None => {
                writeln!(
                    out,
                    "  {:<32} {:<24} [{}] {:?}; {}",
                    p.id.as_str(),
                    p.nevr
                        .as_ref()
                        .map(|n| n.nvr())
                        .unwrap_or_else(|| "?".into()),
                    targets.join(", "),
                    p.layout,
                    why.join("; ")
                )?;
                if !p.depends_on.is_empty() {
                    let d: Vec<&str> = p.depends_on.iter().map(|d| d.as_str()).collect();
                    writeln!(out, "  {:<32} after {}", "", d.join(", "))?;
                }
            }
            Some(e) => writeln!(out, "  ERROR {}: {}", p.id, e.replace('\n', "\n        "))?,
        }
    }
    for d in &plan.deleted {
        writeln!(out, "  deleted {} (not built)", d.id)?;
    }
    if plan.packages.is_empty() && plan.errors.is_empty() {
        writeln!(out, "  nothing to build")?;
    }
    Ok(())
}

fn plan_exit_code(plan: &plan::Plan) -> u8 {
    if !plan.errors.is_empty() {
        EXIT_USAGE
    } else if plan.has_errors() {
        EXIT_FAILED
    } else {
        0
    }
}

async fn cmd_plan(config: Config, args: PlanArgs) -> Result<u8, Exit> {
    let (plan, _) = make_plan(&config, &args.repo, &args.range, &args.git_opts, None).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &plan).map_err(infra)?;
        let _ = writeln!(out);
    } else {
        write_plan(&plan, &mut out).map_err(infra)?;
    }
    Ok(plan_exit_code(&plan))
}

/// `build --git REPO RANGE`: plan, export each package at HEAD, build stage by stage. A
/// package that needs another of the plan gets a local repository of what was built.
async fn cmd_build_git(config: Config, args: BuildArgs) -> Result<u8, Exit> {
    let git = args.git.clone().unwrap_or_default();
    let [repo, range] = git.as_slice() else {
        return Err(usage(anyhow::anyhow!("--git needs REPO and RANGE")));
    };
    let out =
        absolute(&args.out.clone().unwrap_or_else(|| config.out_dir.clone())).map_err(usage)?;
    let extra_repos: Vec<Repo> = args
        .repos
        .iter()
        .enumerate()
        .map(|(i, r)| Repo::parse_arg(r, i).map_err(|e| usage(anyhow::anyhow!("--repo {r}: {e}"))))
        .collect::<Result<_, _>>()?;
    let only: Vec<TargetName> = config
        .select_targets(&args.targets)
        .map_err(usage)?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let parallel = args.parallel.unwrap_or(config.parallel).max(1);
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    let (plan, repo_path) =
        make_plan(&config, repo, range, &args.git_opts, Some(engine.clone())).await?;
    let mut err = std::io::stderr();
    let _ = write_plan(&plan, &mut err);
    if !plan.errors.is_empty() {
        return Ok(EXIT_USAGE);
    }
    let head = plan
        .head
        .clone()
        .ok_or_else(|| infra(anyhow::anyhow!("the plan has no head commit")))?;
    let explicit_targets = !args.targets.is_empty();
    let packages: Vec<plan::PlannedPackage> = plan
        .buildable()
        .cloned()
        .map(|mut p| {
            if explicit_targets {
                p.targets.retain(|t| only.contains(t));
            }
            p
        })
        .collect();

    let image_ids = ensure_images(
        &engine,
        &config,
        packages
            .iter()
            .flat_map(|p| &p.targets)
            .filter_map(|t| config.targets.get(t)),
    )
    .await?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))
        .map_err(infra)?;

    // Export every package at HEAD, straight from the object database.
    let work = plan::TempDir::new("packetary-git").map_err(infra)?;
    let to_export: Vec<(usize, plan::PlannedPackage)> =
        packages.iter().cloned().enumerate().collect();
    let src_root = work.path().join("src");
    let exported: Vec<Result<plan::PackageSource, String>> = packetary::git::blocking(move || {
        let r = git2::Repository::open(&repo_path).map_err(|e| GitError::Repo {
            path: repo_path.clone(),
            message: e.message().to_string(),
        })?;
        let oid = git2::Oid::from_str(head.as_str()).map_err(|e| GitError::Repo {
            path: repo_path.clone(),
            message: e.message().to_string(),
        })?;
        Ok(to_export
            .iter()
            .map(|(i, p)| {
                plan::export_package(&r, oid, p, &src_root.join(i.to_string()))
                    .map_err(|e| e.to_string())
            })
            .collect())
    })
    .await
    .map_err(infra)?;
    let mut sources: HashMap<plan::PackageId, Result<plan::PackageSource, String>> = HashMap::new();
    for (p, e) in packages.iter().zip(exported) {
        let e = match e {
            Ok(src) => {
                match plan::fetch_lookaside(p, &src.source_dir, plan.lookaside.as_deref()).await {
                    Ok(()) => Ok(src),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        sources.insert(p.id.clone(), e);
    }

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (tx, printer) = spawn_progress_printer(started);
    let ctrl_c = spawn_interrupt_watch(cancel.clone());

    let executor = Executor::new(engine.clone());
    let mut reports = Vec::new();
    let mut not_built: Vec<(plan::PackageId, String)> = Vec::new();
    let mut failed: std::collections::HashSet<plan::PackageId> = Default::default();
    let mut local_repo_ready: HashMap<TargetName, PathBuf> = HashMap::new();
    let max_stage = packages.iter().map(|p| p.stage).max().unwrap_or(0);
    for stage in 0..=max_stage {
        let mut requests = Vec::new();
        for p in packages.iter().filter(|p| p.stage == stage) {
            let src = match &sources[&p.id] {
                Ok(s) => s.clone(),
                Err(e) => {
                    failed.insert(p.id.clone());
                    not_built.push((p.id.clone(), e.clone()));
                    continue;
                }
            };
            if let Some(d) = p.depends_on.iter().find(|d| failed.contains(*d)) {
                failed.insert(p.id.clone());
                not_built.push((
                    p.id.clone(),
                    format!("not built: it needs {d}, which did not build"),
                ));
                continue;
            }
            for t in &p.targets {
                let target = config.targets[t].clone();
                let mut extra = extra_repos.clone();
                if !p.depends_on.is_empty() {
                    if let Some(dir) = local_repo_ready.get(t) {
                        extra.push(
                            Repo::new("packetary-plan", &dir.display().to_string())
                                .map_err(|e| infra(anyhow::anyhow!(e)))?,
                        );
                    }
                }
                requests.push((
                    p.id.clone(),
                    BuildRequest {
                        id: BuildId::generate(),
                        package: src.clone(),
                        target,
                        out_root: out.clone(),
                        extra_repos: extra,
                    },
                ));
            }
        }
        if requests.is_empty() {
            continue;
        }
        progress_line(&format!(
            "stage {stage}: {} build(s), {parallel} at a time",
            requests.len()
        ));
        let done: Vec<(plan::PackageId, build::BuildReport)> = futures_util::stream::iter(requests)
            .map(|(id, req)| {
                let image_id = image_ids.get(&req.target.image).cloned();
                let fut = executor.run(req, image_id, Some(tx.clone()), cancel.clone());
                async move { (id, fut.await) }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut new_rpms: HashMap<TargetName, Vec<PathBuf>> = HashMap::new();
        for (id, r) in &done {
            match &r.outcome {
                Outcome::Succeeded { rpms, .. } => new_rpms
                    .entry(r.target.clone())
                    .or_default()
                    .extend(rpms.iter().cloned()),
                _ => {
                    failed.insert(id.clone());
                }
            }
        }
        if stage < max_stage {
            for (t, rpms) in new_rpms {
                let dir = work.path().join(format!("repo-{t}"));
                packetary::build::local_repo(&engine, &config.targets[&t].image, &dir, &rpms)
                    .await
                    .map_err(infra)?;
                local_repo_ready.insert(t, dir);
            }
        }
        reports.extend(done.into_iter().map(|(_, r)| r));
    }
    drop(tx);
    let _ = printer.await;
    ctrl_c.abort();
    let mut code = summarize(&reports, started);
    for (id, why) in &not_built {
        println!("NOT BUILT {id}: {why}");
        code = code.max(EXIT_FAILED);
    }
    if plan.has_errors() {
        code = code.max(EXIT_FAILED);
    }
    Ok(code)
}
