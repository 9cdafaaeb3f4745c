//! Whom fetch credentials may go to (issue 22): libgit2 asks for credentials whenever a
//! server answers 401, including a server a redirect led to, and over plain http. A
//! token or key is offered only to the origin (scheme, host, port) of the URL configured
//! for the fetch, so a redirect to another host or from https down to http gets nothing,
//! and plain http only when the configured URL is itself plain http on that origin.

/// `url`'s origin: scheme, lower-cased host, port (the scheme's default when absent);
/// scp-like `user@host:path` is `ssh` on port 22. `None`: not a URL a remote is at.
fn origin(url: &str) -> Option<(String, String, u16)> {
    if let Ok(u) = url::Url::parse(url) {
        let host = u.host_str().filter(|h| !h.is_empty())?.to_ascii_lowercase();
        let port = u.port_or_known_default().or(match u.scheme() {
            "ssh" | "git+ssh" | "ssh+git" => Some(22),
            "git" => Some(9418),
            _ => None,
        })?;
        let scheme = match u.scheme() {
            "git+ssh" | "ssh+git" => "ssh",
            s => s,
        };
        return Some((scheme.to_string(), host, port));
    }
    // scp-like: `[user@]host:path`, no `/` before the `:`.
    let (authority, _) = url.split_once(':')?;
    if authority.contains('/') {
        return None;
    }
    let host = authority.rsplit('@').next()?.to_ascii_lowercase();
    (!host.is_empty()).then(|| ("ssh".to_string(), host, 22))
}

/// Whether libgit2 asking for credentials for `asked` may get those configured for a
/// fetch of `configured`: the same origin, so plain http only where `configured` is
/// plain http on it. Unreadable URLs get nothing.
pub fn may_send_credentials(configured: &str, asked: &str) -> bool {
    match (origin(configured), origin(asked)) {
        (Some(c), Some(a)) => c == a,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_on_the_configured_origin() {
        let ok = may_send_credentials;
        let gh = "https://github.com/acme/pkgs.git";
        assert!(ok(gh, "https://github.com/acme/pkgs.git/info/refs"));
        assert!(ok(gh, "https://GitHub.com:443/other/repo"));
        assert!(!ok(gh, "https://evil.example/acme/pkgs.git"));
        assert!(
            !ok(gh, "http://github.com/acme/pkgs.git"),
            "down to plain http"
        );
        assert!(
            !ok(gh, "https://github.com:8443/acme/pkgs.git"),
            "another port"
        );
        let plain = "http://git.internal:8080/pkgs.git";
        assert!(ok(plain, "http://git.internal:8080/pkgs.git/info/refs"));
        assert!(!ok(plain, "http://git.internal/pkgs.git"));
        assert!(!ok(plain, "https://git.internal:8080/pkgs.git"));
        let ssh = "ssh://gerrit@review.example:29418/fuel";
        assert!(ok(ssh, "ssh://review.example:29418/fuel"));
        assert!(!ok(ssh, "ssh://review.example/fuel"));
        assert!(ok(
            "git@github.com:acme/pkgs.git",
            "ssh://git@github.com/acme/pkgs.git"
        ));
        assert!(!ok(
            "git@github.com:acme/pkgs.git",
            "git@evil.example:acme/pkgs.git"
        ));
        assert!(!ok(gh, ""));
        assert!(!ok("/local/path", "/local/path"));
    }
}
