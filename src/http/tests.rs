//! Issue 22: against local TCP servers that misbehave for real.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const LIMITS: Limits = Limits {
    head: Duration::from_secs(5),
    body: Duration::from_secs(1),
    max_bytes: 1 << 20,
};

/// Serves each connection with `answer`, after reading the request head; returns the
/// server's address and the heads it read.
async fn server<F, Fut>(
    answer: F,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            tokio::spawn(answer(s));
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_body_trickled_forever_fails_at_the_body_deadline() {
    let (addr, _) = server(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            .await;
        // One byte every 100 ms: every read is quick, the whole never comes.
        loop {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let t0 = Instant::now();
    let e = get(&format!("http://{addr}/repomd.xml"), LIMITS)
        .await
        .expect_err("a trickle must not be waited for");
    assert!(matches!(e, HttpError::BodyTimeout(_)), "{e}");
    assert!(e.to_string().contains("did not arrive within 1s"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn an_endless_body_fails_at_the_size_cap() {
    let (addr, _) = server(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, "y".repeat(64 << 10));
        while s.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let e = get(&format!("http://{addr}/big"), LIMITS)
        .await
        .expect_err("an endless body must be cut");
    assert!(matches!(e, HttpError::TooLarge(_)), "{e}");
    assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
}

#[tokio::test]
async fn credentials_go_to_their_own_origin_only() {
    // Another origin (another port): a redirect target that must not get them.
    let (other, mut other_heads) = server(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    })
    .await;
    let (addr, mut heads) = server(move |mut s| async move {
        let answer = format!(
            "HTTP/1.1 302 Found\r\nlocation: http://{other}/elsewhere\r\ncontent-length: 0\r\n\r\n"
        );
        let _ = s.write_all(answer.as_bytes()).await;
    })
    .await;
    let body = get(&format!("http://user:s3cret@{addr}/repo/"), LIMITS)
        .await
        .expect("followed");
    assert_eq!(body, b"ok");
    let first = heads.recv().await.expect("request").to_ascii_lowercase();
    // base64("user:s3cret")
    assert!(
        first.contains("authorization: basic dxnlcjpzm2nyzxq="),
        "{first}"
    );
    let second = other_heads
        .recv()
        .await
        .expect("redirected")
        .to_ascii_lowercase();
    assert!(!second.contains("authorization"), "{second}");
    assert!(!first.contains("s3cret") && !second.contains("s3cret"));
}

#[tokio::test]
async fn errors_never_carry_the_credentials() {
    let e = get("http://user:s3cret@127.0.0.1:1/x y", LIMITS)
        .await
        .expect_err("refused");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let e = get("http://user:s3cret@[::1/", LIMITS)
        .await
        .expect_err("bad");
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[test]
fn userinfo_escapes_are_decoded() {
    assert_eq!(percent_decode("user%40corp"), "user@corp");
    assert_eq!(percent_decode("a%2"), "a%2");
}
