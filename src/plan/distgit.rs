//! dist-git: the tarballs a package needs are not in git but listed, with checksums, in
//! its `sources` file, and fetched from a lookaside cache. Each download is verified before
//! it is used; a mismatch is the repository's fault and says so.

use std::path::Path;

use sha2::{Digest, Sha256, Sha512};

/// One line of a `sources` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub filename: String,
    /// `sha512` or `sha256` (lower-case, as lookaside URLs spell it).
    pub hashtype: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LookasideError {
    #[error("sources:{line}: {problem}\n  fix: write `SHA512 (file.tar.gz) = <hex>` (fedpkg new-sources does)")]
    Syntax { line: usize, problem: String },
    #[error("the package has a `sources` file but no lookaside URL is configured\n  fix: set `lookaside = \"https://.../{{name}}/{{filename}}/{{hashtype}}/{{hash}}/{{filename}}\"` in .packetary.toml")]
    NoLookaside,
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{filename}: {hashtype} mismatch: `sources` says {expected}, the lookaside served {actual}\n  fix: upload the right file, or correct `sources`")]
    Mismatch {
        filename: String,
        hashtype: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Parses both forms: `SHA512 (name) = hex` and the older `hex  name`.
pub fn parse_sources(text: &str) -> Result<Vec<SourceFile>, LookasideError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |problem: String| LookasideError::Syntax {
            line: i + 1,
            problem,
        };
        let (hashtype, filename, hash) = if let Some((head, hash)) = line.split_once(") = ") {
            let (ty, name) = head
                .split_once(" (")
                .ok_or_else(|| syntax(format!("cannot read `{line}`")))?;
            (
                ty.to_ascii_lowercase(),
                name.to_string(),
                hash.trim().to_ascii_lowercase(),
            )
        } else {
            let mut it = line.split_whitespace();
            let (Some(hash), Some(name), None) = (it.next(), it.next(), it.next()) else {
                return Err(syntax(format!("cannot read `{line}`")));
            };
            let ty = match hash.len() {
                64 => "sha256",
                128 => "sha512",
                32 => {
                    return Err(syntax(format!(
                        "`{name}` has an MD5 checksum, which is not trusted"
                    )))
                }
                _ => return Err(syntax(format!("`{hash}` is not a checksum"))),
            };
            (ty.to_string(), name.to_string(), hash.to_ascii_lowercase())
        };
        let want = match hashtype.as_str() {
            "sha512" => 128,
            "sha256" => 64,
            other => {
                return Err(syntax(format!(
                    "checksum type `{other}` is not supported; use SHA512 or SHA256"
                )))
            }
        };
        if hash.len() != want || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(syntax(format!("`{hash}` is not a {hashtype} checksum")));
        }
        if filename.is_empty() || filename.contains('/') || filename == "." || filename == ".." {
            return Err(syntax(format!("`{filename}` is not a plain file name")));
        }
        out.push(SourceFile {
            filename,
            hashtype,
            hash,
        });
    }
    Ok(out)
}

/// The download URL for one source, from a template with `{name}`, `{filename}`,
/// `{hashtype}` and `{hash}`.
pub fn lookaside_url(template: &str, package: &str, s: &SourceFile) -> String {
    template
        .replace("{name}", package)
        .replace("{filename}", &s.filename)
        .replace("{hashtype}", &s.hashtype)
        .replace("{hash}", &s.hash)
}

fn digest(hashtype: &str, data: &[u8]) -> String {
    match hashtype {
        "sha256" => hex::encode(Sha256::digest(data)),
        _ => hex::encode(Sha512::digest(data)),
    }
}

/// Downloads every source into `dest` and verifies it; a file already there with the right
/// checksum is kept (sources committed to git next to `sources` are fine too).
pub async fn fetch_sources(
    template: Option<&str>,
    package: &str,
    sources: &[SourceFile],
    dest: &Path,
) -> Result<(), LookasideError> {
    for s in sources {
        let path = dest.join(&s.filename);
        if let Ok(existing) = tokio::fs::read(&path).await {
            if digest(&s.hashtype, &existing) == s.hash {
                continue;
            }
        }
        let template = template.ok_or(LookasideError::NoLookaside)?;
        let url = lookaside_url(template, package, s);
        let data = get(&url).await?;
        let actual = digest(&s.hashtype, &data);
        if actual != s.hash {
            return Err(LookasideError::Mismatch {
                filename: s.filename.clone(),
                hashtype: s.hashtype.clone(),
                expected: s.hash.clone(),
                actual,
            });
        }
        tokio::fs::write(&path, &data)
            .await
            .map_err(|source| LookasideError::Io {
                path: path.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

/// Largest tarball accepted from a lookaside.
const MAX_DOWNLOAD: usize = 4 << 30;

/// GET over http(s) (see [`crate::http::get`]), or a `file://` read.
async fn get(url: &str) -> Result<Vec<u8>, LookasideError> {
    let fail = |message: String| LookasideError::Fetch {
        url: crate::model::redact(url),
        message,
    };
    if let Some(path) = url.strip_prefix("file://") {
        return tokio::fs::read(path).await.map_err(|e| fail(e.to_string()));
    }
    let limits = crate::http::Limits {
        head: std::time::Duration::from_secs(60),
        // A large tarball over a slow link, but not a trickle held forever.
        body: std::time::Duration::from_secs(30 * 60),
        max_bytes: MAX_DOWNLOAD,
    };
    crate::http::get(url, limits)
        .await
        .map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let sha = "a".repeat(128);
        let text = format!(
            "SHA512 (foo-1.0.tar.gz) = {sha}\n{}  bar.tar.xz\n",
            "b".repeat(64)
        );
        let s = parse_sources(&text).expect("parses");
        assert_eq!(s[0].filename, "foo-1.0.tar.gz");
        assert_eq!(s[0].hashtype, "sha512");
        assert_eq!(s[1].hashtype, "sha256");
        assert_eq!(
            lookaside_url(
                "https://l/{name}/{filename}/{hashtype}/{hash}/{filename}",
                "foo",
                &s[0]
            ),
            format!("https://l/foo/foo-1.0.tar.gz/sha512/{sha}/foo-1.0.tar.gz")
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(parse_sources(&format!("{}  x.tgz", "c".repeat(32))).is_err());
        assert!(parse_sources("SHA512 (../x) = ab").is_err());
        assert!(parse_sources("garbage").is_err());
        let e = parse_sources(&format!("MD5 (x) = {}", "c".repeat(32)))
            .expect_err("md5")
            .to_string();
        assert!(e.contains("sources:1"), "{e}");
    }

    #[tokio::test]
    async fn downloads_are_verified() {
        let t = tempfile::tempdir().expect("tmp");
        let store = t.path().join("store");
        std::fs::create_dir_all(&store).expect("mkdir");
        std::fs::write(store.join("x.tar.gz"), b"tarball").expect("write");
        let good = SourceFile {
            filename: "x.tar.gz".into(),
            hashtype: "sha256".into(),
            hash: digest("sha256", b"tarball"),
        };
        let tpl = format!("file://{}/{{filename}}", store.display());
        let dest = t.path().join("dest");
        std::fs::create_dir_all(&dest).expect("mkdir");
        fetch_sources(Some(&tpl), "x", std::slice::from_ref(&good), &dest)
            .await
            .expect("fetched");
        assert_eq!(
            std::fs::read(dest.join("x.tar.gz")).expect("read"),
            b"tarball"
        );
        let bad = SourceFile {
            hash: "0".repeat(64),
            ..good
        };
        let e = fetch_sources(Some(&tpl), "x", &[bad], &t.path().join("store"))
            .await
            .expect_err("mismatch");
        assert!(matches!(e, LookasideError::Mismatch { .. }), "{e}");
    }

    /// A one-shot HTTP server on loopback: a redirect, then the file.
    #[tokio::test]
    async fn downloads_over_http_follow_redirects() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for i in 0..2 {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let reply = if i == 0 {
                    "HTTP/1.1 302 Found\r\nLocation: /real/x.tar.gz\r\nContent-Length: 0\r\n\r\n"
                        .to_string()
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntarball"
                        .to_string()
                };
                s.write_all(reply.as_bytes()).await.expect("write");
            }
        });
        let s = SourceFile {
            filename: "x.tar.gz".into(),
            hashtype: "sha512".into(),
            hash: digest("sha512", b"tarball"),
        };
        let dest = tempfile::tempdir().expect("tmp");
        let tpl =
            format!("http://{addr}/pkgs/{{name}}/{{filename}}/{{hashtype}}/{{hash}}/{{filename}}");
        fetch_sources(Some(&tpl), "x", &[s], dest.path())
            .await
            .expect("downloaded");
        assert_eq!(
            std::fs::read(dest.path().join("x.tar.gz")).expect("read"),
            b"tarball"
        );
        let e = fetch_sources(
            None,
            "x",
            &[SourceFile {
                filename: "y".into(),
                hashtype: "sha256".into(),
                hash: "0".repeat(64),
            }],
            dest.path(),
        )
        .await
        .expect_err("no lookaside");
        assert!(e.to_string().contains("lookaside"), "{e}");
    }
}
