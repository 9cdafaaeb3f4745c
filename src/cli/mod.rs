//! The command line: its arguments, exit statuses and the helpers its subcommands share.
//! One file per subcommand; `serve` runs the library's [`packetary::service::Service`].

pub mod build;
pub mod build_git;
pub mod images;
pub mod plan;
pub mod publish;
pub mod rebuild;
mod rebuild_common;
mod rebuild_release;
pub mod serve;
mod staged;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::executor::{images as recipes, Progress, ProgressKind};

/// Exit statuses, as documented in the README.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INFRA: u8 = 3;
pub const EXIT_CANCELLED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "packetary",
    version,
    about = "Builds packages in clean containers, driven by git"
)]
pub struct Cli {
    /// Configuration file (TOML). Default: the embedded defaults.
    #[arg(long, global = true, env = "PACKETARY_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build every package under PATH for each target, or the packages a git change touched (--git).
    Build(BuildArgs),
    /// Show which packages a change touched, for which targets, and in what order they build.
    Plan(PlanArgs),
    /// Run the bot: receive GitHub webhooks, build, and report commit statuses.
    Serve(ServeArgs),
    /// Build a recorded build again from its recorded inputs; compare the packages' payloads.
    Rebuild(rebuild::RebuildArgs),
    /// Publish RPMs built elsewhere into a release's package repository (a new snapshot).
    Publish(publish::PublishArgs),
    /// Builder images: list them, build them, or push them to a Swarm's registry.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Directory holding the package(s).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Build only this spec file (inside PATH).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Target to build for (repeatable). Default: the configuration's default targets.
    #[arg(long = "target", short = 't')]
    pub targets: Vec<String>,
    /// Where results go: OUT/<target>/<name>-<version>-<release>/.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Extra repository for BuildRequires: a directory, file://, http(s):// URL, or NAME=LOCATION.
    #[arg(long = "repo")]
    pub repos: Vec<String>,
    /// Builds to run at once. Default: from the configuration (number of cores).
    #[arg(long, short = 'j')]
    pub parallel: Option<usize>,
    /// Build the packages changed between two commits of a repository (URL or path):
    /// `--git REPO BASE..HEAD` (push) or `BASE...HEAD` (review), in dependency order.
    #[arg(long, num_args = 2, value_names = ["REPO", "RANGE"], conflicts_with = "spec")]
    pub git: Option<Vec<String>>,
    #[command(flatten)]
    pub git_opts: GitOpts,
    /// After the builds, publish what succeeded into this release's repository of each
    /// target (see `packetary publish`).
    #[arg(long, value_name = "RELEASE")]
    pub publish: Option<String>,
    /// Where repositories live, with --publish. Default: [server] data_dir.
    #[arg(long, requires = "publish")]
    pub data_dir: Option<PathBuf>,
    /// End with one JSON document on stdout instead of the table: each build's package,
    /// target, result, duration_ms, cause and paths. Progress stays on stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The repository: a URL (kept as a bare mirror in the cache) or a local path.
    pub repo: String,
    /// `BASE..HEAD`: a push of HEAD over BASE (BASE all zeros: a new branch);
    /// `BASE...HEAD`: a review of HEAD for BASE (compared with their merge-base).
    pub range: String,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub git_opts: GitOpts,
}

#[derive(clap::Args, Clone)]
pub struct GitOpts {
    /// Treat `BASE..HEAD` as a review: compare with the merge-base, read .packetary.toml at BASE.
    #[arg(long)]
    pub review: bool,
    /// The branch a new branch is compared with. Default: the remote's default branch.
    #[arg(long)]
    pub default_branch: Option<String>,
    /// Use the mirror as it is, without fetching.
    #[arg(long)]
    pub offline: bool,
    /// Do not run rpmspec (no Docker): no package names and no build order.
    #[arg(long)]
    pub no_spec: bool,
    /// Extra refs to fetch, e.g. refs/pull/7/head or refs/changes/45/12345/2.
    #[arg(long = "fetch")]
    pub fetch: Vec<String>,
    /// Where mirrors and spec answers are cached. Default: $XDG_CACHE_HOME/packetary.
    #[arg(long, env = "PACKETARY_CACHE")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Default: [server] listen.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
pub enum ImagesCommand {
    /// List the images Packetary can build and whether the Docker host has them.
    List,
    /// Build the images the configured targets use that the Docker host lacks.
    Ensure,
    /// Build an image (default: those the configured targets use). Rebuilds if present.
    Build {
        /// Recipe name or image tag (see `packetary images list`).
        name: Vec<String>,
    },
    /// Push images (default: those the configured targets use) to `[executor] registry`.
    ///
    /// Builds missing ones first, as `ensure` does; prints `IMAGE -> REGISTRY/PATH@sha256:...`
    /// for each.
    Push {
        /// Recipe name or image tag (see `packetary images list`).
        name: Vec<String>,
    },
}

/// A subcommand's failure, with the exit status it maps to.
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

/// Bad usage or configuration: exit status 2.
pub fn usage(e: impl Into<anyhow::Error>) -> CliError {
    CliError {
        code: EXIT_USAGE,
        error: e.into(),
    }
}

/// An infrastructure fault: exit status 3.
pub fn infra(e: impl Into<anyhow::Error>) -> CliError {
    CliError {
        code: EXIT_INFRA,
        error: e.into(),
    }
}

pub fn progress_line(msg: &str) {
    eprintln!("packetary: {msg}");
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
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

/// Makes sure every image the targets use is on the Docker host (building missing ones
/// once, before any build starts); returns image → id for the builds' provenance.
pub async fn ensure_images<'a>(
    engine: &Engine,
    config: &Config,
    targets: impl Iterator<Item = &'a packetary::config::Target>,
) -> Result<HashMap<String, String>, CliError> {
    let mut image_ids = HashMap::new();
    for t in targets {
        if !image_ids.contains_key(&t.image) {
            let id = recipes::ensure(engine, &config.images, &t.image, &mut |l| progress_line(l))
                .await
                .map_err(infra)?;
            image_ids.insert(t.image.clone(), id);
        }
    }
    Ok(image_ids)
}

/// Prints build progress, phase by phase, on the terminal; ends when every sender is gone.
pub fn spawn_progress_printer(
    started: Instant,
) -> (
    tokio::sync::mpsc::UnboundedSender<Progress>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
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
                ProgressKind::Finished(_) | ProgressKind::Container(_) => {}
            }
        }
    });
    (tx, printer)
}

/// Cancels `cancel` on Ctrl-C or SIGTERM, so that builds stop and remove their containers.
pub fn spawn_interrupt_watch(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("packetary: interrupted; stopping builds and removing their containers");
        cancel.cancel();
    })
}

/// The `--repo` arguments, checked.
pub fn extra_repos(args: &BuildArgs) -> Result<Vec<packetary::config::Repo>, CliError> {
    args.repos
        .iter()
        .enumerate()
        .map(|(i, r)| {
            packetary::config::Repo::parse_arg(r, i)
                .map_err(|e| usage(anyhow::anyhow!("--repo {r}: {e}")))
        })
        .collect()
}

pub fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(p))
    }
}
