//! Who may see a repository's builds. Build pages, logs and artifacts of a private
//! repository must not be served to anyone who reaches the port: repositories listed in
//! `[server] private_repositories` are shown only to requests that carry the page token
//! (`Authorization: Bearer`, or the cookie `/login` sets); everything else stays public.
//! A release's package repositories are as private as the repositories feeding it.

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use subtle::ConstantTimeEq;

use std::collections::BTreeMap;

use super::AppState;
use crate::config::Secret;
use crate::model::RepoId;

const COOKIE: &str = "packetary_token";

#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `forge:path`, or `forge:prefix/*` for every repository under a prefix.
    private: Vec<String>,
    token: Option<Secret>,
    /// Each release's feeding patterns (`[releases.X] repositories`; empty: every one).
    releases: BTreeMap<String, Vec<String>>,
}

impl Access {
    /// Everything public.
    pub fn public() -> Access {
        Access::default()
    }

    /// `private` repositories, shown only with `token`.
    pub fn new(private: Vec<String>, token: Option<Secret>) -> Access {
        Access {
            private,
            token,
            releases: BTreeMap::new(),
        }
    }

    /// With the releases served under `/repos/<release>/`: name and feeding patterns.
    pub fn with_releases(
        mut self,
        releases: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Access {
        self.releases = releases.into_iter().collect();
        self
    }

    /// Whether the release `name`'s repositories show a private repository's packages:
    /// one of its feeding patterns reaches a private one, or it is fed by every repository
    /// (or is not configured any more) while any repository is private.
    pub fn release_is_private(&self, name: &str) -> bool {
        if self.private.is_empty() {
            return false;
        }
        match self.releases.get(name) {
            Some(feeds) if !feeds.is_empty() => feeds
                .iter()
                .any(|f| self.private.iter().any(|p| RepoId::patterns_overlap(f, p))),
            _ => true,
        }
    }

    /// Whether this request may see the release `name`'s repositories.
    pub fn may_see_release(&self, name: &str, headers: &HeaderMap) -> bool {
        !self.release_is_private(name) || self.authorized(headers)
    }

    /// Whether `repo` matches a private pattern, names compared the way its forge compares
    /// them (GitHub ignores case: `github:acme/*` covers `Acme/pkgs`).
    pub fn is_private(&self, repo: &RepoId) -> bool {
        self.private.iter().any(|p| repo.matches(p))
    }

    /// Whether the request carries the page token.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .next();
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|given| bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())))
    }

    /// Whether this request may see `repo`'s builds.
    pub fn may_see(&self, repo: &RepoId, headers: &HeaderMap) -> bool {
        !self.is_private(repo) || self.authorized(headers)
    }
}

/// Whether `next` is a path on this server to send a browser back to: it starts with one
/// `/`, and has no backslash, whitespace or control character (browsers drop a TAB or a
/// newline, so `/\t/evil.example` would leave for another host).
fn local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
}

/// The answer to a request for a private repository's build without the token.
pub fn refused(path: &str) -> Response {
    let next = if local_path(path) { path } else { "/" };
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Private</title><p>This belongs to a private repository. <a href=\"/login?next={}\">Log in</a> with the page token, or send it as <code>Authorization: Bearer</code>.</p>",
        super::html::escape(&urlencode(next))
    );
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: a form asking for the page token.
pub async fn login_form(Query(q): Query<LoginQuery>) -> Response {
    let next = q.next.unwrap_or_else(|| "/".into());
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Log in</title><form method=post action=/login><input type=hidden name=next value=\"{}\"><label>Page token <input type=password name=token autocomplete=current-password></label> <button>Log in</button></form>",
        super::html::escape(&next)
    ))
    .into_response()
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login`: with the right token, a cookie holding it and a redirect to `next` (a
/// path on this server only).
pub async fn login(State(app): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let Some(token) = &app.access.token else {
        return (StatusCode::NOT_FOUND, "no page token is configured\n").into_response();
    };
    if !bool::from(f.token.as_bytes().ct_eq(token.expose().as_bytes())) {
        tracing::info!("page login refused: wrong token");
        return (StatusCode::UNAUTHORIZED, "wrong token\n").into_response();
    }
    let next = f
        .next
        .filter(|n| local_path(n))
        .unwrap_or_else(|| "/".into());
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
        token.expose()
    );
    let mut resp = (StatusCode::SEE_OTHER, "").into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&next) {
        h.insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_patterns_and_tokens() {
        let a = Access::new(
            vec!["github:acme/*".into(), "gerrit:secret/pkgs".into()],
            Some(Secret::new("s3cret")),
        );
        let repo = |s: &str| RepoId::parse(s).expect("repo");
        assert!(a.is_private(&repo("github:acme/pkgs")));
        assert!(!a.is_private(&repo("github:acmecorp/pkgs")));
        assert!(a.is_private(&repo("gerrit:secret/pkgs")));
        assert!(!a.is_private(&repo("github:other/pkgs")));
        let mut h = HeaderMap::new();
        assert!(!a.authorized(&h));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().expect("h"));
        assert!(!a.authorized(&h));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().expect("h"));
        assert!(a.authorized(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; packetary_token=s3cret".parse().expect("h"),
        );
        assert!(a.may_see(&repo("github:acme/pkgs"), &h));
        assert!(!Access::public().authorized(&h));
    }

    /// Issue 22 (M3): GitHub compares repository names without case, so must the page
    /// token's patterns; Gerrit's project names keep their case.
    #[test]
    fn private_names_compare_as_their_forge_does() {
        let a = Access::new(
            vec!["github:acme/*".into(), "gerrit:Secret/pkgs".into()],
            None,
        );
        let repo = |s: &str| RepoId::parse(s).expect("repo");
        assert!(a.is_private(&repo("github:Acme/pkgs")));
        assert!(a.is_private(&repo("github:ACME/Pkgs")));
        assert!(a.is_private(&repo("gerrit:Secret/pkgs")));
        assert!(!a.is_private(&repo("gerrit:secret/pkgs")));
        let b = Access::new(vec!["github:Acme/Pkgs".into()], None);
        assert!(b.is_private(&repo("github:acme/pkgs")));
    }

    /// Issue 22 (lower): `/login`'s `next` stays on this server.
    #[test]
    fn only_local_paths_are_redirected_to() {
        for ok in ["/", "/builds/x", "/?commit=abc"] {
            assert!(local_path(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil.example",
            "/\n/evil.example",
            "https://evil.example",
            "/ /evil.example",
        ] {
            assert!(!local_path(bad), "{bad:?}");
        }
    }
}
