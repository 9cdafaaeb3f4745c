//! GitHub: webhooks in ([`GitHubWebhooks`]), commit statuses out ([`GitHub`]). GitHub's
//! types stay in this module.

mod api;
mod webhook;

pub use api::{retry_after, ApiAuth, ClientError, GitHub};
pub use webhook::{parse_event, sign, signature_valid, GitHubWebhooks};

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
