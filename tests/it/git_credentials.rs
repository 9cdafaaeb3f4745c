//! Issue 22: fetch credentials go to the configured URL's origin only. Real libgit2
//! fetches against small local HTTP servers: one that redirects to another origin which
//! answers 401 (libgit2 follows an initial off-site redirect and asks for credentials),
//! and, to show the servers would see them, the configured origin answering 401 itself.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use packetary::git::{FetchAuth, MirrorCache, RemoteRef};

/// A server answering every request with `answer`, keeping each request head it reads.
fn server(answer: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&head).to_ascii_lowercase());
            let _ = s.write_all(answer.as_bytes());
        }
    });
    (port, heads)
}

const UNAUTHORIZED: &str = "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"git\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn token() -> FetchAuth {
    FetchAuth::Token {
        username: "x-access-token".into(),
        token: "ghs_s3cret".into(),
    }
}

#[test]
fn credentials_are_not_offered_to_another_origin_after_a_redirect() {
    let (other, other_heads) = server(UNAUTHORIZED.to_string());
    let (port, heads) = server(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{other}/pkgs.git/info/refs?service=git-upload-pack\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ));
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = MirrorCache::new(tmp.path());
    let mirror = cache.mirror_for(&format!("http://127.0.0.1:{port}/pkgs.git"));
    let e = mirror
        .fetch_blocking(&[RemoteRef::AllBranches], &token())
        .expect_err("the other origin wants credentials");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(
        !heads.lock().expect("lock").is_empty(),
        "the configured origin was asked"
    );
    let other_heads = other_heads.lock().expect("lock").clone();
    assert!(!other_heads.is_empty(), "the redirect was followed: {e}");
    for h in &other_heads {
        assert!(!h.contains("authorization"), "sent to another origin: {h}");
    }
}

#[test]
fn credentials_are_offered_to_the_configured_origin() {
    let (port, heads) = server(UNAUTHORIZED.to_string());
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = MirrorCache::new(tmp.path());
    let mirror = cache.mirror_for(&format!("http://127.0.0.1:{port}/pkgs.git"));
    let _ = mirror.fetch_blocking(&[RemoteRef::AllBranches], &token());
    let heads = heads.lock().expect("lock").clone();
    assert!(
        heads.iter().any(|h| h.contains("authorization: basic")),
        "configured as plain http on this origin: {heads:?}"
    );
}
