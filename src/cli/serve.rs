//! `packetary serve`: the bot, built by [`Service::from_config`], until SIGTERM or Ctrl-C.

use anyhow::Context;

use packetary::config::Config;
use packetary::service::{Service, ServiceError, ServiceOptions};

use super::{infra, usage, wait_for_signal, CliError, ServeArgs};

fn service_error(e: ServiceError) -> CliError {
    if e.is_configuration() {
        usage(e)
    } else {
        infra(e)
    }
}

pub async fn run(mut config: Config, args: ServeArgs) -> Result<u8, CliError> {
    if let Some(listen) = args.listen {
        // A defaulted public URL follows the address actually listened on.
        let defaulted = format!("http://{}", config.server.listen);
        if config.server.public_url == defaulted {
            config.server.public_url = format!("http://{listen}");
        }
        if config.server.repos_url == defaulted {
            config.server.repos_url = format!("http://{listen}");
        }
        config.server.listen = listen;
    }
    // Without a [github] table the service still runs (pages, health, metrics) and
    // refuses webhooks with 503 and the fix, so that a fresh machine can start it as is.
    if config.github.is_none() {
        eprintln!("packetary: no [github] table in the configuration: webhooks are refused (503) until one is added; see config/packetary.example.toml");
    }
    let service = Service::from_config(config, ServiceOptions::from_env())
        .await
        .map_err(service_error)?;
    let listen = service.config().server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(infra)?;
    let local = listener.local_addr().map_err(infra)?;
    eprintln!("packetary: listening on http://{local}/");
    // On SIGTERM or Ctrl-C the queue drains first, while pages and webhooks stay served
    // (new webhooks are stored and built at the next start); then the server stops.
    service
        .serve(listener, wait_for_signal())
        .await
        .map_err(service_error)?;
    Ok(0)
}
