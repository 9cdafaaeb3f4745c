//! Credentials in URLs (`https://user:secret@host/...`, in a target's repositories,
//! `--repo`, clone URLs) are for the one place that fetches with them: everything shown
//! or logged (pages, tracing, build logs, `build.json`) goes through [`redact`] first.

/// What replaces a URL's userinfo.
pub const REDACTED: &str = "***";

/// `text` with the userinfo of every URL in it replaced by `***` (`https://***@host/`):
/// a single URL, or a message quoting URLs (an error from git or HTTP).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the path, query or fragment, or where the URL does.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
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
}
