//! Plain HTTP(S) downloads the service makes itself (a lookaside tarball, a repository's
//! `repomd.xml`): rustls, a few redirects followed, a deadline for the response head and
//! one for the whole body, and a cap on the body's size, so that a slow, trickling,
//! endless or huge answer cannot stall or bloat the caller. Credentials in the URL
//! (`https://user:secret@host/`) are sent as Basic auth to that URL's origin only, never
//! after a redirect to another one, and never appear in an error.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt;

/// What went wrong with a GET, without the URL asked for (the caller names what it was
/// fetching).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no TLS roots: {0}")]
    NoTlsRoots(std::io::Error),
    #[error("bad URL {url}: {error}")]
    BadUrl { url: String, error: String },
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("the body did not arrive within {}s", .0.as_secs())]
    BodyTimeout(Duration),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
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

/// How long a GET may take and how much it may bring.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Until the response head (per request, redirects included).
    pub head: Duration,
    /// For the whole body once the head is in.
    pub body: Duration,
    /// The body's size.
    pub max_bytes: usize,
}

/// A URL's origin, what credentials are scoped to: scheme, host and port (the scheme's
/// default when absent).
fn origin(u: &url::Url) -> (String, Option<String>, Option<u16>) {
    (
        u.scheme().to_string(),
        u.host_str().map(str::to_ascii_lowercase),
        u.port_or_known_default(),
    )
}

/// GETs `url` within `limits`, following up to five redirects.
pub async fn get(url: &str, limits: Limits) -> Result<Vec<u8>, HttpError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(HttpError::NoTlsRoots)?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let bad = |url: &str, error: String| HttpError::BadUrl {
        url: crate::model::redact(url),
        error: crate::model::redact(&error),
    };
    let mut current = url::Url::parse(url).map_err(|e| bad(url, e.to_string()))?;
    // The credentials, for the configured URL's origin only.
    let auth = (!current.username().is_empty()).then(|| {
        let user = percent_decode(current.username());
        let pass = percent_decode(current.password().unwrap_or(""));
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        (origin(&current), format!("Basic {token}"))
    });
    for _ in 0..5 {
        let mut bare = current.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let uri: hyper::Uri = bare
            .as_str()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(bare.as_str(), e.to_string()))?;
        let mut req = hyper::Request::get(uri);
        if let Some((o, header)) = &auth {
            if *o == origin(&current) {
                req = req.header(hyper::header::AUTHORIZATION, header);
            }
        }
        let req = req
            .body(http_body_util::Empty::new())
            .map_err(|e| bad(bare.as_str(), e.to_string()))?;
        let resp = tokio::time::timeout(limits.head, client.request(req))
            .await
            .map_err(|_| HttpError::Timeout(limits.head))?
            .map_err(HttpError::Request)?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or(HttpError::NoLocation(status))?;
            current = bare.join(loc).map_err(HttpError::BadRedirect)?;
            continue;
        }
        if !status.is_success() {
            return Err(HttpError::Status(status));
        }
        return read_body(resp.into_body(), limits).await;
    }
    Err(HttpError::TooManyRedirects)
}

/// The whole body within `limits.body` and `limits.max_bytes`.
async fn read_body(body: hyper::body::Incoming, limits: Limits) -> Result<Vec<u8>, HttpError> {
    let collect = http_body_util::Limited::new(body, limits.max_bytes).collect();
    match tokio::time::timeout(limits.body, collect).await {
        Err(_) => Err(HttpError::BodyTimeout(limits.body)),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(HttpError::TooLarge(limits.max_bytes))
        }
        Ok(Err(e)) => Err(HttpError::Body(e)),
        Ok(Ok(b)) => Ok(b.to_bytes().to_vec()),
    }
}

/// `%XX` escapes of a URL's userinfo decoded (`user%40corp` is `user@corp`).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
