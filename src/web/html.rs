//! What every page shares: its layout, HTML escaping, URL segments, a file sent as a
//! response, and the "not found" answer. Its own module so that the pages, the repository browser and
//! the login page use it without importing each other.

use std::fmt::Write;
use std::path::Path;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{Html, Response};

use super::text;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub fn not_found(what: &str) -> Response {
    text(StatusCode::NOT_FOUND, format!("{what} not found"))
}

pub async fn send_file(path: &Path, content_type: &str, download: bool) -> Response {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(_) => return not_found("file"),
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(l) = len.and_then(|l| l.to_string().parse().ok()) {
        h.insert(header::CONTENT_LENGTH, l);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        "nosniff".parse().expect("static header"),
    );
    if download {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
            .collect();
        if let Ok(v) = format!("attachment; filename=\"{safe}\"").parse() {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    resp
}

/// A page of the service: its title and body in the one layout every page shares.
pub(super) fn page(title: &str, body: &str) -> Html<String> {
    page_with(title, body, "")
}

/// [`page`] with more in its head (a reload, for a build under way).
pub(super) fn page_with(title: &str, body: &str, head: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Packetary</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2rem;max-width:75rem}}\
         table{{border-collapse:collapse}}td,th{{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:left}}\
         code{{font-size:.9em}}.succeeded{{color:#1a7f37}}.failed{{color:#cf222e}}\
         .error,.cancelled,.superseded{{color:#9a6700}}.queued,.running{{color:#0969da}}\
         </style></head><body><p><a href=\"/\">Packetary</a></p>\n{}\n</body></html>\n",
        head,
        escape(title),
        body
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(seg("a b/../c"), "a%20b%2F..%2Fc");
    }
}
