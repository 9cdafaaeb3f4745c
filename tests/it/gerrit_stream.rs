//! `gerrit stream-events` over a real OpenSSH server on loopback: its `ForceCommand` prints
//! events (and garbage) and then exits, as a server restart would drop the connection. The
//! stream must read each line, reconnect, and find what happened meanwhile through the
//! stand-in REST API's query, without ingesting anything twice.

use crate::gerrit_common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use gerrit_common::*;
use packetary::config::{GerritSsh, Secret};
use packetary::forge::gerrit::stream::{self, EventSink, StreamConfig};
use packetary::forge::gerrit::{EventContext, GerritApi, GerritApiConfig, Parsed};
use packetary::model::ForgeEvent;
use tokio_util::sync::CancellationToken;

const SSHD: &str = "/usr/sbin/sshd";
const PROJECT: &str = "test/hello";

/// Records what the stream hands over; a delivery seen before is not new work (as ingest).
#[derive(Default)]
struct Sink {
    seen: Mutex<HashSet<String>>,
    accepted: Mutex<Vec<Parsed>>,
}

impl EventSink for Sink {
    fn accept(&self, event: Parsed) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if matches!(event.event, ForgeEvent::Ignored(_)) {
                return false;
            }
            if !self
                .seen
                .lock()
                .expect("lock")
                .insert(event.delivery.clone())
            {
                return false;
            }
            self.accepted.lock().expect("lock").push(event);
            true
        })
    }
}

impl Sink {
    fn changes(&self) -> Vec<(u64, String)> {
        self.accepted
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|p| match &p.event {
                ForgeEvent::Build(t) => Some((t.pr_number.unwrap_or(0), t.head.to_string())),
                _ => None,
            })
            .collect()
    }
}

/// Stops the test's sshd however the test ends (a failed assertion included), so that it
/// neither lingers nor holds the test's output open.
struct Sshd(std::process::Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An sshd of its own on a free loopback port: its own host key and configuration, one
/// authorized key, and `ForceCommand` running `script`. Answers the child and the client's
/// private key.
fn start_sshd(dir: &Path, script: &Path) -> (Sshd, u16, String) {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: install openssh-server (deploy/ensure-host.sh does)"
    );
    for k in ["host_key", "client_key"] {
        run(std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(k)));
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("copy");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let user = whoami();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nForceCommand {s}\n\
             LogLevel ERROR\n",
            d = dir.display(),
            s = script.display()
        ),
    )
    .expect("write");
    if is_root() {
        // Privilege separation wants this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let child = std::process::Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).expect("log"))
        .spawn()
        .map(Sshd)
        .expect("sshd starts");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = std::fs::read_to_string(dir.join("client_key")).expect("key");
    (child, port, key)
}

fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_root() -> bool {
    whoami() == "root"
}

/// The forced command: connection 1 prints garbage, an unknown event, a blank line and
/// change 1's patchset-created, then exits; later connections print change 3's and stay.
fn script(dir: &Path) -> PathBuf {
    let line = |n: u64, c: char| {
        serde_json::to_string(&patchset_created(PROJECT, "main", n, 1, &sha(c), &sha('0')))
            .expect("json")
    };
    let s = dir.join("events.sh");
    std::fs::write(
        &s,
        format!(
            "#!/bin/sh\n\
             n=$(cat {d}/connections 2>/dev/null || echo 0); n=$((n+1)); echo $n > {d}/connections\n\
             echo \"$SSH_ORIGINAL_COMMAND\" >> {d}/commands\n\
             if [ $n -eq 1 ]; then\n\
               echo 'this is not json'\n\
               echo '{{\"type\":\"reviewer-added\",\"eventCreatedOn\":1764100000}}'\n\
               echo ''\n\
               echo '{one}'\n\
               exit 0\n\
             fi\n\
             echo '{three}'\n\
             exec sleep 600\n",
            d = dir.display(),
            one = line(1, 'a'),
            three = line(3, 'c'),
        ),
    )
    .expect("write");
    run(std::process::Command::new("chmod").arg("755").arg(&s));
    s
}

/// The stream's parts for the test's sshd on `port` and the stand-in REST API at `url`.
fn stream_parts(
    d: &Path,
    url: &str,
    port: u16,
    key: &str,
    host_key: Option<&str>,
) -> (Arc<GerritApi>, StreamConfig, EventContext) {
    let api = Arc::new(
        GerritApi::new(GerritApiConfig {
            url: url.to_string(),
            user: USER.into(),
            http_password: Secret::new(PASSWORD),
            label: "Verified".into(),
            success_vote: 1,
            failure_vote: -1,
        })
        .expect("client"),
    );
    let cfg = StreamConfig {
        ssh: GerritSsh {
            user: whoami(),
            host: "127.0.0.1".into(),
            port,
        },
        key: Some(Secret::new(key.to_string())),
        host_key: host_key.map(str::to_string),
        state_dir: d.join("state"),
        program: "ssh".into(),
        projects: Arc::new(vec!["test/*".into()]),
        skip_wip_and_private: true,
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
    };
    let events = EventContext {
        git_url: "file:///srv/git".into(),
        skip_wip_and_private: true,
        user: USER.into(),
    };
    (api, cfg, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reconnects_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (sshd, port, key) = start_sshd(d, &script(d));
    let (url, gerrit) = start().await;
    // Change 1 was seen on the stream; change 2 got a patchset while the stream was down.
    gerrit.add_change(&sha('a'), PROJECT, 1, 1, "main");
    gerrit.add_change(&sha('b'), PROJECT, 2, 1, "main");

    let (api, cfg, events) = stream_parts(d, &url, port, &key, None);
    let sink = Arc::new(Sink::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(stream::run(
        cfg.clone(),
        events,
        api,
        sink.clone(),
        stop.clone(),
    ));

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sink.changes().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "changes: {:?}\nsshd: {}",
            sink.changes(),
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = task.await;
    drop(sshd);

    let changes = sink.changes();
    assert_eq!(
        changes,
        vec![(1, sha('a')), (2, sha('b')), (3, sha('c'))],
        "stream, then catch-up (change 1 again is a duplicate), then the new connection"
    );
    let connections: u32 = std::fs::read_to_string(d.join("connections"))
        .expect("connections")
        .trim()
        .parse()
        .expect("number");
    assert!(connections >= 2, "reconnected: {connections}");
    assert!(std::fs::read_to_string(d.join("commands"))
        .expect("commands")
        .lines()
        .all(|c| c == "gerrit stream-events"));
    let queries = gerrit.queries.lock().expect("lock").clone();
    assert!(
        queries
            .iter()
            .any(|q| q.starts_with("status:open since:\"2025-11-25 ") && q.ends_with(" +0000\"")),
        "the catch-up asks for changes since the last event (a minute early): {queries:?}"
    );
    assert_eq!(stream::last_event(&cfg.state_dir), Some(1764100101));
    let key_mode = std::fs::metadata(cfg.state_dir.join("ssh-key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("key file");
    assert_eq!(key_mode, 0o600);
}

/// Runs the stream against the test's sshd for `secs` with `host_key` pinned; answers what
/// it handed over.
async fn stream_for(
    d: &Path,
    port: u16,
    key: &str,
    host_key: &str,
    secs: u64,
) -> Vec<(u64, String)> {
    let (url, _gerrit) = start().await;
    let (api, cfg, events) = stream_parts(d, &url, port, key, Some(host_key.trim()));
    let sink = Arc::new(Sink::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(stream::run(cfg, events, api, sink.clone(), stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while sink.changes().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = task.await;
    sink.changes()
}

/// Issue 22 (lower): with `gerrit.host_key`, the server's key is pinned, not trusted on
/// first use: a server showing another key gets no session (the stream's command never
/// runs there), and the pinned server's events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_host_key_is_the_only_one_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (sshd, port, key) = start_sshd(d, &script(d));
    // Another key than the server's: an impostor's view of the pin.
    let wrong = std::fs::read_to_string(d.join("client_key.pub")).expect("pub");
    let got = stream_for(d, port, &key, &wrong, 4).await;
    assert!(
        got.is_empty(),
        "events from a server with another key: {got:?}"
    );
    assert!(
        !d.join("connections").exists(),
        "a session was opened on a server whose key is not the pinned one"
    );
    let right = std::fs::read_to_string(d.join("host_key.pub")).expect("pub");
    let got = stream_for(d, port, &key, &right, 30).await;
    drop(sshd);
    assert_eq!(
        got.first(),
        Some(&(1, sha('a'))),
        "the pinned server's events"
    );
}
