//! Where a forge's repositories may be fetched from. A payload names a clone URL, but the
//! payload is the sender's: fetching whatever it names would send the forge's credentials
//! to any host (seen: a token in clear at an `http://` server). So the URL is derived from
//! configuration, or checked against the forge's own origin, never taken as given.

use crate::model::RepoId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOrigin {
    /// A configured `git_url`: repository `path` is fetched from `<git_url>/<path>`, whatever
    /// the payload says (`file://` allowed here, for tests and local mirrors).
    Mapped(String),
    /// The forge's web origin: a payload's clone URL must have this scheme, host and port,
    /// carry no credentials, and name the repository the event is about.
    Web(url::Url),
}

impl FetchOrigin {
    /// The web origin that goes with a forge's API URL: github.com for api.github.com, the
    /// API's own origin for an Enterprise server or a test server. An API URL that does not
    /// parse (the configuration refuses those) gives github.com, never "anywhere".
    pub fn for_api(api_url: &str) -> FetchOrigin {
        let github = || url::Url::parse("https://github.com").expect("a constant URL");
        let web = match url::Url::parse(api_url) {
            Ok(api) if api.host_str() != Some("api.github.com") => {
                let mut u = api;
                u.set_path("");
                u.set_query(None);
                u.set_fragment(None);
                u
            }
            _ => github(),
        };
        FetchOrigin::Web(web)
    }

    /// The URL to fetch `repo` from, given the clone URL the payload names; an error says why
    /// the payload's URL is refused.
    pub fn clone_url(&self, repo: &RepoId, named: &str) -> Result<String, RefusedUrl> {
        match self {
            FetchOrigin::Mapped(base) => {
                Ok(format!("{}/{}", base.trim_end_matches('/'), repo.path()))
            }
            FetchOrigin::Web(web) => {
                let refuse = |why: Refusal| {
                    Err(RefusedUrl {
                        named: crate::model::redact(named),
                        why,
                        origin: web.origin().ascii_serialization(),
                    })
                };
                let Ok(u) = url::Url::parse(named) else {
                    return refuse(Refusal::NotAUrl);
                };
                if u.origin() != web.origin() {
                    return refuse(Refusal::OtherOrigin);
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return refuse(Refusal::Credentials);
                }
                if u.query().is_some() || u.fragment().is_some() {
                    return refuse(Refusal::QueryOrFragment);
                }
                let path = u.path().trim_start_matches('/');
                let path = path.strip_suffix(".git").unwrap_or(path);
                if !path.eq_ignore_ascii_case(repo.path()) {
                    return refuse(Refusal::OtherRepository(repo.path().to_string()));
                }
                Ok(u.to_string())
            }
        }
    }
}

/// A payload's clone URL that is not fetched, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{named}` is refused: {why}; repositories are fetched only from {origin} (or set `git_url` in the forge's configuration)")]
pub struct RefusedUrl {
    pub named: String,
    pub why: Refusal,
    /// The forge's origin (scheme, host, port).
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a URL")]
    NotAUrl,
    #[error("another scheme, host or port than the forge's")]
    OtherOrigin,
    #[error("it carries credentials")]
    Credentials,
    #[error("it has a query or fragment")]
    QueryOrFragment,
    #[error("it is not the repository {0}")]
    OtherRepository(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> RepoId {
        RepoId::github("acme/pkgs").expect("repo")
    }

    #[test]
    fn github_com_payloads_fetch_from_github_com_only() {
        let o = FetchOrigin::for_api("https://api.github.com");
        assert_eq!(
            o.clone_url(&repo(), "https://github.com/acme/pkgs.git"),
            Ok("https://github.com/acme/pkgs.git".into())
        );
        for (bad, why) in [
            ("http://github.com/acme/pkgs.git", Refusal::OtherOrigin),
            ("https://evil.example/acme/pkgs.git", Refusal::OtherOrigin),
            (
                "https://github.com:8443/acme/pkgs.git",
                Refusal::OtherOrigin,
            ),
            (
                "https://user:pw@github.com/acme/pkgs.git",
                Refusal::Credentials,
            ),
            (
                "https://github.com/other/repo.git",
                Refusal::OtherRepository("acme/pkgs".into()),
            ),
            ("file:///etc", Refusal::OtherOrigin),
            ("ext::sh -c touch% /tmp/pwned", Refusal::OtherOrigin),
            ("not a url", Refusal::NotAUrl),
            (
                "https://github.com/acme/pkgs.git?x=1",
                Refusal::QueryOrFragment,
            ),
        ] {
            let err = o.clone_url(&repo(), bad).expect_err(bad);
            assert_eq!(
                (err.why.clone(), err.origin.as_str()),
                (why, "https://github.com"),
                "{err}"
            );
            assert!(err.to_string().contains("https://github.com"), "{err}");
            // Issue 22: a refused URL's credentials are not repeated in the message.
            assert!(!err.to_string().contains(":pw@"), "{err}");
        }
    }

    #[test]
    fn enterprise_and_test_servers_fetch_from_their_own_origin() {
        let o = FetchOrigin::for_api("http://127.0.0.1:4321/api/v3");
        assert!(o
            .clone_url(&repo(), "http://127.0.0.1:4321/acme/pkgs.git")
            .is_ok());
        assert!(o
            .clone_url(&repo(), "http://127.0.0.1:4322/acme/pkgs.git")
            .is_err());
    }

    #[test]
    fn a_mapping_ignores_the_payload() {
        let o = FetchOrigin::Mapped("file:///srv/git/".into());
        assert_eq!(
            o.clone_url(&repo(), "http://evil.example/x.git"),
            Ok("file:///srv/git/acme/pkgs".into())
        );
    }
}
