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

#[derive(Subcommand)]
enum ImagesCommand {
    /// List the images Packetary can build and whether the Docker host has them.
    List,
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
                images::build(&engine, &config.images, r, true, &mut |l| progress_line(l))
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
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("packetary: interrupted; stopping builds and removing their containers");
                cancel.cancel();
            }
        })
    };

    let executor = Executor::new(engine);
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
