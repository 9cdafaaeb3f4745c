//! The `packetary` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use packetary::build::{self, images, BuildRequest, Engine, EventKind, Executor, Outcome};
use packetary::config::{Config, Repo};
use packetary::model::BuildId;
use packetary::plan;

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
    /// Build every package under PATH for each target.
    Build(BuildArgs),
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
        Command::Build(args) => cmd_build(config, args).await,
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
    use packetary::forge::github::{Auth, GitHub, WebhookSecrets};
    use packetary::queue::{source, DockerRunner, Metrics, Queue, QueueConfig};
    use std::sync::Arc;

    let gh = config.github.clone().ok_or_else(|| {
        usage(anyhow::anyhow!(
            "the configuration has no [github] table\n  fix: add one with api_url, token (or app_id, private_key, installation_id), webhook_secrets and repositories; see config/packetary.example.toml"
        ))
    })?;
    let secrets = gh
        .webhook_secrets
        .iter()
        .enumerate()
        .map(|(i, s)| s.resolve(&format!("github.webhook_secrets[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let auth = match &gh.auth {
        packetary::config::GithubAuth::Token(t) => {
            Auth::Token(t.resolve("github.token").map_err(usage)?)
        }
        packetary::config::GithubAuth::App {
            app_id,
            private_key,
            installation_id,
        } => Auth::App {
            app_id: *app_id,
            private_key_pem: private_key.resolve("github.private_key").map_err(usage)?,
            installation_id: *installation_id,
        },
    };
    let forge = Arc::new(GitHub::new(&gh.api_url, &auth).map_err(usage)?);
    if gh.repositories.is_empty() {
        tracing::warn!("[github] repositories is empty: every webhook will be refused");
    }
    let data_dir = absolute(&config.server.data_dir).map_err(usage)?;
    let store = packetary::store::Store::open(&data_dir)
        .await
        .map_err(infra)?;
    let engine = Engine::connect(config.docker_host.as_deref())
        .await
        .map_err(infra)?;
    let sources = Arc::new(source::GitCliSource::new(data_dir.join("git")));
    let planner = Arc::new(source::DiscoverPlanner::new(
        sources.clone(),
        data_dir.join("tmp"),
        config.default_targets.clone(),
    ));
    let runner = Arc::new(DockerRunner {
        executor: Executor::new(engine.clone()),
    });
    let metrics = Arc::new(Metrics::default());
    let queue = Queue::new(
        store.clone(),
        forge,
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
            build_forks: gh.build_forks,
            targets: config.targets.clone(),
        },
        metrics,
    );
    let tasks = queue.start().await.map_err(infra)?;
    let state = packetary::web::AppState {
        store: store.clone(),
        queue: queue.clone(),
        secrets: WebhookSecrets(Arc::new(secrets)),
        allowlist: packetary::web::Allowlist(Arc::new(gh.repositories.clone())),
        probes: Arc::new(vec![
            Arc::new(DockerProbe(engine)) as Arc<dyn packetary::web::Probe>
        ]),
        data_dir,
    };
    let listen = args.listen.unwrap_or(config.server.listen);
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
    let mut image_ids = std::collections::HashMap::new();
    for t in &targets {
        if !image_ids.contains_key(&t.image) {
            let id = images::ensure(&engine, &config.images, &t.image, &mut |l| progress_line(l))
                .await
                .map_err(infra)?;
            image_ids.insert(t.image.clone(), id);
        }
    }
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
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<build::Event>();
    let started = Instant::now();
    let printer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let who = format!("{}/{}", ev.package, ev.target);
            let t = started.elapsed().as_secs_f64();
            match ev.kind {
                EventKind::PhaseStarted(p) => eprintln!("[{t:7.1}s] {who}: {p} …"),
                EventKind::PhaseFinished { phase, elapsed, ok } => eprintln!(
                    "[{t:7.1}s] {who}: {phase} {} ({:.1}s)",
                    if ok { "done" } else { "FAILED" },
                    elapsed.as_secs_f64()
                ),
                EventKind::Finished(_) => {}
            }
        }
    });
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                _ = terminated => {},
            }
            eprintln!("packetary: interrupted; stopping builds and removing their containers");
            cancel.cancel();
        })
    };

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
