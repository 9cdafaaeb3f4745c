//! The `packetary` command line: parses the arguments, sets up logging and the runtime, and
//! hands the subcommand to its module under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{usage, Cli, CliError, Command, EXIT_INFRA};
use packetary::config::Config;

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
        Err(CliError { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let config = Config::load(cli.config.as_deref()).map_err(usage)?;
    match cli.command {
        Command::Build(args) if args.git.is_some() => cli::build_git::run(config, args).await,
        Command::Build(args) => cli::build::run(config, args).await,
        Command::Plan(args) => cli::plan::run(config, args).await,
        Command::Publish(args) => cli::publish::run(config, args).await,
        Command::Images { command } => cli::images::run(config, command).await,
        Command::Serve(args) => cli::serve::run(config, args).await,
        Command::Rebuild(args) => cli::rebuild::run(config, args).await,
    }
}
