//! Plain HTTP(S) downloads the service makes itself (a lookaside tarball, a repository's
//! `repomd.xml`): rustls, a few redirects followed, a deadline per request and a cap on the
//! body, so that a slow or huge answer cannot stall or bloat the caller.

use std::time::Duration;

use http_body_util::BodyExt;

/// GETs `url`, following up to five redirects. Errors say what went wrong, without the URL
/// (the caller names what it was fetching).
pub async fn get(url: &str, timeout: Duration, max_bytes: usize) -> Result<Vec<u8>, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut current = url.to_string();
    for _ in 0..5 {
        let uri: hyper::Uri = current
            .parse()
            .map_err(|e| format!("bad URL {current}: {e}"))?;
        let resp = tokio::time::timeout(timeout, client.get(uri))
            .await
            .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("{status} without a Location"))?;
            current = url::Url::parse(&current)
                .and_then(|base| base.join(loc))
                .map_err(|e| format!("bad redirect: {e}"))?
                .to_string();
            continue;
        }
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let body = http_body_util::Limited::new(resp.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        return Ok(body.to_bytes().to_vec());
    }
    Err("too many redirects".into())
}
