//! Credentials in URLs (`https://user:secret@host/...`, in a target's repositories,
//! `--repo`, clone URLs) are for the one place that fetches with them: everything shown
//! or logged (pages, tracing, build logs, `build.json`) goes through [`redact`] first.

/// What replaces a URL's userinfo.
pub const REDACTED: &str = "***";

/// `text` with the userinfo of every URL in it replaced by `***` (`https://***@host/`):
/// a single URL, or a message quoting URLs (an error from git or HTTP).
pub fn redact(text: &str) -> String {
    String::from_utf8_lossy(&redact_bytes(text.as_bytes())).into_owned()
}

/// [`redact`] over bytes that need not be UTF-8 (a build's log lines: dnf and Mock print
/// the repository URLs they fail to reach). Borrowed when nothing changes.
pub fn redact_bytes(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let find = |hay: &[u8]| hay.windows(3).position(|w| w == b"://");
    if find(text).is_none() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = find(rest) {
        let (head, tail) = rest.split_at(i + 3);
        out.extend_from_slice(head);
        // The authority ends at the path, query or fragment, or where the URL does.
        let end = tail
            .iter()
            .position(|c| {
                matches!(c, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`')
                    || c.is_ascii_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.iter().rposition(|c| *c == b'@') {
            Some(at) => {
                out.extend_from_slice(REDACTED.as_bytes());
                out.extend_from_slice(&authority[at..]);
            }
            None => out.extend_from_slice(authority),
        }
        rest = &tail[end..];
    }
    out.extend_from_slice(rest);
    std::borrow::Cow::Owned(out)
}

/// `url` with no credentials (`https://host/...`), for what is kept, such as a trigger's
/// clone URL in the store: the credentials stay in the configuration, and the fetch gets
/// them from there (`git::Credentials::from_url`). An HTTP(S) URL loses its whole
/// userinfo (a token may be its user name); another keeps a user name without a password
/// (`ssh://gerrit@host`, who to log in as). What `url::Url` cannot read is [`redact`]ed.
pub fn without_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u)
            if u.password().is_some()
                || (!u.username().is_empty() && matches!(u.scheme(), "http" | "https")) =>
        {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => redact(url),
    }
}

/// Whether `url` carries credentials ([`redact`] would change it).
pub fn has_userinfo(url: &str) -> bool {
    redact(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_wherever_a_url_appears() {
        assert_eq!(
            redact("https://user:s3cret@repo.example/f43/"),
            "https://***@repo.example/f43/"
        );
        assert_eq!(redact("http://tok@h:8080"), "http://***@h:8080");
        assert_eq!(
            redact("fetch https://a:s3cret@h/x.git failed; see http://b:p@g?q=1@x"),
            "fetch https://***@h/x.git failed; see http://***@g?q=1@x"
        );
        assert_eq!(redact("fedora=https://u:p@@h/"), "fedora=https://***@h/");
        for same in [
            "https://h/a@b",
            "file:///repos/x",
            "no url",
            "ssh://h/x",
            "",
        ] {
            assert_eq!(redact(same), same);
            assert!(!has_userinfo(same));
        }
        assert!(has_userinfo("https://u:p@h/"));
    }

    #[test]
    fn credentials_are_taken_out_of_a_kept_url() {
        assert_eq!(
            without_userinfo("https://user:s3cret@git.corp/o/r.git"),
            "https://git.corp/o/r.git"
        );
        assert_eq!(without_userinfo("https://h/x"), "https://h/x");
        assert_eq!(without_userinfo("https://t0ken@h/x"), "https://h/x");
        assert_eq!(
            without_userinfo("ssh://gerrit@h:29418/p"),
            "ssh://gerrit@h:29418/p"
        );
        assert_eq!(without_userinfo("ssh://u:pw@h/p"), "ssh://h/p");
        assert_eq!(
            without_userinfo("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
    }

    #[test]
    fn log_bytes_are_redacted_and_left_alone_otherwise() {
        let line = b"  - Curl error (7): for http://user:s3cret@127.0.0.1:9/x/repomd.xml \xff\n";
        assert_eq!(
            &*redact_bytes(line),
            &b"  - Curl error (7): for http://***@127.0.0.1:9/x/repomd.xml \xff\n"[..]
        );
        let plain = b"no url here \xfe\n";
        assert!(matches!(redact_bytes(plain), std::borrow::Cow::Borrowed(_)));
    }
}
