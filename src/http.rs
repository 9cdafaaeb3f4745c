//! Plain HTTP(S) downloads the service makes itself (a lookaside tarball, a repository's
//! `repomd.xml`): rustls, a few redirects followed, a deadline per request and a cap on the
//! body, so that a slow or huge answer cannot stall or bloat the caller.

use std::time::Duration;

use http_body_util::BodyExt;

/// What went wrong with a GET, without the URL asked for (the caller names what it was
/// fetching).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no TLS roots: {0}")]
    NoTlsRoots(std::io::Error),
    #[error("bad URL {url}: {error}")]
    BadUrl {
        url: String,
        error: hyper::http::uri::InvalidUri,
    },
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("{0}")]
    Request(hyper_util::client::legacy::Error),
    #[error("{0} without a Location")]
    NoLocation(hyper::StatusCode),
    #[error("bad redirect: {0}")]
    BadRedirect(url::ParseError),
    #[error("the server answered {0}")]
    Status(hyper::StatusCode),
    #[error("{0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("too many redirects")]
    TooManyRedirects,
}

/// GETs `url`, following up to five redirects.
pub async fn get(url: &str, timeout: Duration, max_bytes: usize) -> Result<Vec<u8>, HttpError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(HttpError::NoTlsRoots)?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut current = url.to_string();
    for _ in 0..5 {
        let uri: hyper::Uri = current.parse().map_err(|error| HttpError::BadUrl {
            url: current.clone(),
            error,
        })?;
        let resp = tokio::time::timeout(timeout, client.get(uri))
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
            .map_err(HttpError::Request)?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or(HttpError::NoLocation(status))?;
            current = url::Url::parse(&current)
                .and_then(|base| base.join(loc))
                .map_err(HttpError::BadRedirect)?
                .to_string();
            continue;
        }
        if !status.is_success() {
            return Err(HttpError::Status(status));
        }
        let body = http_body_util::Limited::new(resp.into_body(), max_bytes)
            .collect()
            .await
            .map_err(HttpError::Body)?;
        return Ok(body.to_bytes().to_vec());
    }
    Err(HttpError::TooManyRedirects)
}
