//! Issue 21: `packetary images push` against a real registry (Debian's `docker-registry`,
//! run by the test on loopback, which Docker reaches over plain HTTP): the digest it prints
//! is the one the daemon and the registry's own API answer, and a missing image, a dead
//! registry or a configuration without one each say the fix.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use packetary::docker::{registry_reference, Engine};

use crate::common::{self, packetary, write, IMAGE};

/// A `docker-registry` child with its storage in a temporary directory; killed on drop.
struct Registry {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one on a free loopback port, or `None` when the test skips: no
    /// `docker-registry` and no `CI` (under `CI` its absence is a failure).
    fn start() -> Option<Registry> {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tmp");
            let addr = free_port();
            let config = dir.path().join("config.yml");
            write(
                &config,
                &format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                    dir.path().join("data").display()
                ),
            );
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) if std::env::var_os("CI").is_some() => panic!(
                    "CI is set but `docker-registry` cannot run ({e}); deploy/ensure-host.sh installs it (apt-get install docker-registry)"
                ),
                Err(e) => {
                    eprintln!("SKIPPED: cannot run `docker-registry` ({e}); install it with apt-get install docker-registry (set CI=1 to make this a failure)");
                    return None;
                }
            };
            let mut r = Registry {
                child,
                addr,
                _dir: dir,
            };
            if r.wait_ready() {
                return Some(r);
            }
            // Another process took the port between our probe and its bind: try another.
        }
        panic!("docker-registry did not start on any of five loopback ports");
    }

    /// Whether it answers `GET /v2/` (false when it exited, e.g. the port was taken).
    fn wait_ready(&mut self) -> bool {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if request(self.addr, "GET", "/v2/", &[]).0 == 200 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// One HTTP/1.1 request; the status and the response's head (lowercase).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// What the registry itself says `name:tag`'s manifest digest is (`Docker-Content-Digest`).
fn registry_digest(addr: SocketAddr, name: &str, tag: &str) -> String {
    let (status, head) = request(
        addr,
        "HEAD",
        &format!("/v2/{name}/manifests/{tag}"),
        &[(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
    );
    assert_eq!(status, 200, "HEAD {name}:{tag}: {head}");
    head.lines()
        .find_map(|l| l.strip_prefix("docker-content-digest:"))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|| panic!("no Docker-Content-Digest in {head}"))
}

fn swarm_config(dir: &Path, registry: &str) -> std::path::PathBuf {
    let path = dir.join("swarm.toml");
    // No targets: the embedded default target (`bookworm-rpmbuild`, IMAGE) stays.
    write(
        &path,
        &format!(
            "[executor]\nkind = \"swarm\"\ncallback_url = \"http://127.0.0.1:8080\"\nregistry = \"{registry}\"\n"
        ),
    );
    path
}

/// The digest of the `IMAGE -> REGISTRY/PATH@sha256:…` line for `image`.
fn printed_digest(stdout: &str, image: &str, registry: &str) -> String {
    let prefix = format!("{image} -> {registry}/packetary/rpmbuild@");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}…` line in:\n{stdout}"));
    let digest = line[prefix.len()..].to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{line}"
    );
    digest
}

/// Untags, when dropped (a failed assertion included), what a test tagged in `registry` on
/// the shared daemon; the image itself stays.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let tag = registry_reference(&self.0, IMAGE);
        // Own runtime on its own thread: the test's may be gone, or be this thread's.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(async {
                    Engine::connect(None)
                        .await
                        .map_err(|e| e.to_string())?
                        .remove_image(&tag)
                        .await
                        .map_err(|e| e.to_string())
                })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not untag: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_prints_the_digest_the_registry_serves() {
    let Some(engine) = common::docker().await else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = registry.host();
    let _untag = Untag(host.clone());
    let w = tempfile::tempdir().expect("tmp");
    let config = swarm_config(w.path(), &host);
    let config_arg = config.to_str().expect("utf-8 path");

    let r = packetary(&["--config", config_arg, "images", "push"], w.path());
    assert_eq!(r.code, 0, "{}", r.all());
    let digest = printed_digest(&r.stdout, IMAGE, &host);
    assert!(r.stderr.contains("pushed in"), "{}", r.all());

    let reference = registry_reference(&host, IMAGE);
    assert_eq!(
        engine
            .distribution_digest(&reference)
            .await
            .expect("the daemon finds the pushed image"),
        digest
    );
    assert_eq!(
        registry_digest(registry.addr, "packetary/rpmbuild", "bookworm"),
        digest
    );

    // Again, by recipe name: nothing new to upload, the same manifest.
    let again = packetary(
        &["--config", config_arg, "images", "push", "rpmbuild"],
        w.path(),
    );
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(printed_digest(&again.stdout, IMAGE, &host), digest);
    assert!(
        again.stderr.contains("0 layer(s) pushed"),
        "{}",
        again.all()
    );
}

#[test]
fn push_without_a_swarm_registry_is_refused_naming_the_key() {
    let w = tempfile::tempdir().expect("tmp");
    let plain = w.path().join("plain.toml");
    write(&plain, "[docker]\n");
    let r = packetary(
        &["--config", plain.to_str().expect("utf-8"), "images", "push"],
        w.path(),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("executor.registry"), "{}", r.all());
    assert!(
        r.stderr.contains(&plain.display().to_string()),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("fix:"), "{}", r.all());
    // Nothing was pushed, nor looked at: no image line.
    assert!(!r.stdout.contains("->"), "{}", r.all());

    let r = packetary(&["images", "push"], w.path());
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("executor.registry") && r.stderr.contains("--config"),
        "{}",
        r.all()
    );
}

#[tokio::test]
async fn digest_of_an_image_never_pushed_says_push() {
    let Some(engine) = common::docker().await else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let e = engine
        .distribution_digest(&format!("{}/packetary/never-pushed:1", registry.host()))
        .await
        .expect_err("the registry has no such image");
    let msg = e.to_string();
    assert!(
        msg.contains("has no image") && msg.contains("fix: run `packetary images push`"),
        "{msg}"
    );
}

#[tokio::test]
async fn push_to_a_registry_that_is_down_is_an_error() {
    let Some(engine) = common::docker().await else {
        return;
    };
    // A port nothing listens on: the daemon's push fails inside its progress stream.
    let dead = free_port().to_string();
    let _untag = Untag(dead.clone());
    let e = engine
        .push_to(IMAGE, &dead, &mut |_| {})
        .await
        .expect_err("nothing listens there");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("pushing {}", registry_reference(&dead, IMAGE)))
            && msg.contains("connection refused")
            && msg.contains("fix:"),
        "{msg}"
    );
}
