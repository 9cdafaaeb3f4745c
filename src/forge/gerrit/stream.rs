//! `gerrit stream-events` over SSH: one long-lived connection per server, run by the system
//! `ssh` client as a child process (see DESIGN.md for why), read line by line; each line is
//! parsed into a [`ForgeEvent`] and handed to [`ingest`], like a webhook. When the
//! connection drops, it is made again after a backoff (1 s doubling to 60 s, back to 1 s
//! once an event arrived); after a reconnect the changes updated while disconnected are
//! asked from the REST API (`/a/changes/?q=since:...`) and their current patchsets are
//! ingested under the same delivery ids as their `patchset-created` events, so that nothing
//! is missed and nothing already seen is built twice.
//!
//! The time of the last event seen is kept in `<state_dir>/last-event`, so that a restart
//! catches up too. The key is written to a 0600 file in `<state_dir>`. With
//! `gerrit.host_key` the server's key is pinned: `<state_dir>/pinned_host` holds it alone
//! and ssh accepts no other (`StrictHostKeyChecking=yes`). Without, host keys are kept in
//! `<state_dir>/known_hosts` (`accept-new`: the first key seen is trusted and a changed one
//! refused).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use super::api::GerritApi;
use super::events::{EventContext, Parsed};
use crate::config::{GerritSsh, Secret};
use crate::forge::gerrit::project_allowed;
use crate::git::RemoteRef;
use crate::model::{ChangeKind, CommitSha, ForgeEvent, ForgeKind, RepoId, Trigger};

/// Where the stream's events go: the service hands them to `queue::ingest`, as the webhook
/// route does (the forge module does not know the queue).
pub trait EventSink: Send + Sync {
    /// Stores the event; answers whether it was new work (not a duplicate, not ignored).
    fn accept(&self, event: Parsed) -> BoxFuture<'_, bool>;
}

/// How to reach the stream.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub ssh: GerritSsh,
    pub key: Option<Secret>,
    /// The pinned host key (`gerrit.host_key`): the only one accepted.
    pub host_key: Option<String>,
    /// Holds the key file, `known_hosts` and `last-event`.
    pub state_dir: PathBuf,
    /// The `ssh` program (`ssh` from PATH in production).
    pub program: PathBuf,
    pub projects: Arc<Vec<String>>,
    pub skip_wip_and_private: bool,
    /// First wait after a dropped connection (doubles up to `max_backoff`).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot start ssh: {0}")]
    Spawn(std::io::Error),
    #[error("reading the stream: {0}")]
    Read(std::io::Error),
    #[error("the state directory {}: {source}", dir.display())]
    State {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the stream until `stop` is cancelled.
pub async fn run(
    cfg: StreamConfig,
    events: EventContext,
    api: Arc<GerritApi>,
    sink: Arc<dyn EventSink>,
    stop: CancellationToken,
) {
    let queue = &*sink;
    let mut backoff = cfg.min_backoff;
    let mut connected_before = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        // Catch up on what happened while nobody listened: at start (since the last event
        // of the previous run) and after every dropped connection.
        if let Some(since) = last_event(&cfg.state_dir) {
            match catch_up(&cfg, &events, &api, queue, since).await {
                Ok(n) => tracing::info!(
                    host = %cfg.ssh.host,
                    "gerrit catch-up: {n} change(s) updated since the last event were ingested"
                ),
                Err(e) => tracing::warn!(host = %cfg.ssh.host, "gerrit catch-up failed: {e}"),
            }
        } else if connected_before {
            tracing::debug!("gerrit catch-up skipped: no event seen yet");
        }
        let got_events = tokio::select! {
            r = connect_once(&cfg, &events, &api, queue) => match r {
                Ok(n) => {
                    tracing::warn!(host = %cfg.ssh.host, "gerrit stream-events ended after {n} event(s); reconnecting");
                    n > 0
                }
                Err(e) => {
                    tracing::warn!(host = %cfg.ssh.host, "gerrit stream-events: {e}; reconnecting");
                    false
                }
            },
            _ = stop.cancelled() => return,
        };
        connected_before = true;
        if got_events {
            backoff = cfg.min_backoff;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

/// Writes the key where ssh reads it: a 0600 file, created anew (never through a link).
fn key_file(cfg: &StreamConfig) -> Result<Option<PathBuf>, StreamError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(key) = &cfg.key else {
        return Ok(None);
    };
    let state = |source| StreamError::State {
        dir: cfg.state_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&cfg.state_dir).map_err(state)?;
    let path = cfg.state_dir.join("ssh-key");
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(state)?;
    let mut text = key.expose().to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    f.write_all(text.as_bytes()).map_err(state)?;
    Ok(Some(path))
}

/// The `known_hosts` file of a pinned host key.
const PINNED_HOSTS: &str = "pinned_host";

/// Writes the pinned host key, alone, as ssh looks it up for the server's host and port.
fn pin_host_key(cfg: &StreamConfig) -> Result<(), StreamError> {
    let Some(k) = &cfg.host_key else {
        return Ok(());
    };
    let state = |source| StreamError::State {
        dir: cfg.state_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&cfg.state_dir).map_err(state)?;
    let host = if cfg.ssh.port == 22 {
        cfg.ssh.host.clone()
    } else {
        format!("[{}]:{}", cfg.ssh.host, cfg.ssh.port)
    };
    std::fs::write(cfg.state_dir.join(PINNED_HOSTS), format!("{host} {k}\n")).map_err(state)
}

/// The ssh command line: batch mode (never a prompt), keep-alives so that a dead peer is
/// noticed, the state directory's known_hosts, the key, and `gerrit stream-events`.
pub fn ssh_command(cfg: &StreamConfig, key: Option<&Path>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&cfg.program);
    c.arg("-T")
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "ServerAliveInterval=15"])
        .args(["-o", "ServerAliveCountMax=3"])
        .args(["-o", "ConnectTimeout=20"])
        .args([
            "-o",
            if cfg.host_key.is_some() {
                "StrictHostKeyChecking=yes"
            } else {
                "StrictHostKeyChecking=accept-new"
            },
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            cfg.state_dir
                .join(if cfg.host_key.is_some() {
                    PINNED_HOSTS
                } else {
                    "known_hosts"
                })
                .display()
        ))
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-F", "/dev/null"]);
    if let Some(k) = key {
        c.arg("-i").arg(k);
    }
    c.arg("-p")
        .arg(cfg.ssh.port.to_string())
        .arg("-l")
        .arg(&cfg.ssh.user)
        .arg("--")
        .arg(&cfg.ssh.host)
        .arg("gerrit stream-events");
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// One connection: reads events until it ends; answers how many were read.
async fn connect_once(
    cfg: &StreamConfig,
    events: &EventContext,
    api: &GerritApi,
    queue: &dyn EventSink,
) -> Result<u64, StreamError> {
    let key = key_file(cfg)?;
    pin_host_key(cfg)?;
    let mut child = ssh_command(cfg, key.as_deref())
        .spawn()
        .map_err(StreamError::Spawn)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| StreamError::Spawn(std::io::Error::other("ssh has no standard output")))?;
    if let Some(err) = child.stderr.take() {
        let host = cfg.ssh.host.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::info!(%host, "ssh: {}", l.chars().take(500).collect::<String>());
            }
        });
    }
    tracing::info!(host = %cfg.ssh.host, port = cfg.ssh.port, "gerrit stream-events connecting");
    // Lines are bounded: one larger than Gerrit ever sends is dropped, not buffered.
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut n = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = read_line_capped(&mut reader, &mut buf, MAX_LINE)
            .await
            .map_err(StreamError::Read)?;
        match read {
            Line::Eof => break,
            Line::TooLong => {
                tracing::debug!("gerrit stream: a line longer than {MAX_LINE} bytes ignored");
                continue;
            }
            Line::Ok => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        n += 1;
        handle_line(cfg, events, api, queue, &buf).await;
    }
    let _ = child.wait().await;
    Ok(n)
}

const MAX_LINE: usize = 4 << 20;

enum Line {
    Ok,
    Eof,
    TooLong,
}

async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                Line::Eof
            } else if too_long {
                Line::TooLong
            } else {
                Line::Ok
            });
        }
        let (chunk, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(avail.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Ok });
        }
    }
}

/// One event line: parsed, handed to the sink, its time remembered. Garbage and unknown
/// types are logged at debug level and skipped.
async fn handle_line(
    cfg: &StreamConfig,
    events: &EventContext,
    api: &GerritApi,
    sink: &dyn EventSink,
    line: &[u8],
) {
    let parsed = match events.parse(line) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("gerrit stream: line ignored: {e}");
            return;
        }
    };
    let created_on = parsed.created_on;
    remember_change(api, &parsed.event);
    sink.accept(parsed).await;
    if let Some(t) = created_on {
        remember_event(&cfg.state_dir, t);
    }
}

/// A patchset's event names its change: the API remembers it, so that the reports on the
/// commit need no `?q=commit:` query to find the change to vote on.
fn remember_change(api: &GerritApi, event: &ForgeEvent) {
    if let ForgeEvent::Build(Trigger {
        repo,
        head,
        pr_number: Some(change),
        ..
    }) = event
    {
        api.remember(repo, head, *change);
    }
}

fn remember_event(dir: &Path, created_on: i64) {
    if last_event(dir).is_some_and(|t| t >= created_on) {
        return;
    }
    let tmp = dir.join("last-event.tmp");
    let ok = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, created_on.to_string()))
        .and_then(|_| std::fs::rename(&tmp, dir.join("last-event")));
    if let Err(e) = ok {
        tracing::warn!(
            "cannot record the time of the last gerrit event in {}: {e}",
            dir.display()
        );
    }
}

/// The time (epoch seconds) of the last event seen, by this run or an earlier one.
pub fn last_event(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join("last-event"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Gerrit's `since:` operand for an epoch time, a minute early (clocks and the event's own
/// second), in UTC.
pub fn since_operand(epoch: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch - 60)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    format!(
        "since:\"{} +0000\"",
        t.format(&f)
            .unwrap_or_else(|_| "1970-01-01 00:00:00".into())
    )
}

/// Ingests the current patchset of each open change updated since `since`, under the id
/// its `patchset-created` event has.
async fn catch_up(
    cfg: &StreamConfig,
    events: &EventContext,
    api: &GerritApi,
    sink: &dyn EventSink,
    since: i64,
) -> Result<usize, crate::forge::DeliveryError> {
    let query = format!("status:open {}", since_operand(since));
    let changes = api.changes_updated_since(&query, 500).await?;
    let mut n = 0;
    for c in changes {
        if !project_allowed(&cfg.projects, &c.project) {
            continue;
        }
        if cfg.skip_wip_and_private && (c.wip || c.private) {
            continue;
        }
        let (Some(rev), Some(ps)) = (c.current_revision.as_deref(), c.current_patchset) else {
            continue;
        };
        let (Ok(repo), Ok(head)) = (
            RepoId::new(ForgeKind::Gerrit, &c.project),
            CommitSha::parse(rev),
        ) else {
            continue;
        };
        let Ok(patchset) = u32::try_from(ps) else {
            continue;
        };
        let delivery = super::events::patchset_delivery(&repo, c.number, ps, &head);
        let trigger = Trigger {
            clone_url: format!("{}/{}", events.git_url.trim_end_matches('/'), repo.path()),
            repo,
            kind: ChangeKind::PullRequest,
            ref_name: RemoteRef::GerritChange {
                change: c.number,
                patchset,
            }
            .refname(),
            base: None,
            head,
            pr_number: Some(c.number),
            base_ref: Some(format!("refs/heads/{}", c.branch)),
            from_fork: false,
            sender: "gerrit catch-up".into(),
            only_package: None,
            only_target: None,
        };
        let parsed = Parsed {
            name: "patchset-created".into(),
            delivery,
            event: ForgeEvent::Build(trigger),
            created_on: None,
        };
        remember_change(api, &parsed.event);
        if sink.accept(parsed).await {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_utc_and_a_minute_early() {
        assert_eq!(since_operand(86_460), "since:\"1970-01-02 00:00:00 +0000\"");
    }

    #[tokio::test]
    async fn lines_are_capped() {
        let data = b"short\nxxxxxxxxxxxxxxxxxxxx\nlast".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).await,
            Ok(Line::Ok)
        ));
        assert_eq!(buf, b"short");
        buf.clear();
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).await,
            Ok(Line::TooLong)
        ));
        buf.clear();
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).await,
            Ok(Line::Ok)
        ));
        assert_eq!(buf, b"last");
        buf.clear();
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 10).await,
            Ok(Line::Eof)
        ));
    }

    struct Accept;

    impl EventSink for Accept {
        fn accept(&self, _event: Parsed) -> BoxFuture<'_, bool> {
            Box::pin(async { true })
        }
    }

    /// A patchset event names its change: the report on its commit needs no
    /// `?q=commit:` query (the API here points at a port nobody answers on).
    #[tokio::test]
    async fn a_patchset_event_spares_the_change_query() {
        let api = GerritApi::new(super::super::GerritApiConfig {
            url: "http://127.0.0.1:9".into(),
            user: "packetary".into(),
            http_password: Secret::new("pw"),
            label: "Verified".into(),
            success_vote: 1,
            failure_vote: -1,
        })
        .expect("client");
        let events = EventContext {
            git_url: "ssh://gerrit.test:29418".into(),
            skip_wip_and_private: false,
            user: "packetary".into(),
        };
        let state = tempfile::tempdir().expect("tmp");
        let cfg = StreamConfig {
            ssh: GerritSsh {
                user: "packetary".into(),
                host: "gerrit.test".into(),
                port: 29418,
            },
            key: None,
            host_key: None,
            state_dir: state.path().to_path_buf(),
            program: "ssh".into(),
            projects: Arc::new(vec!["test/hello".into()]),
            skip_wip_and_private: false,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
        };
        let rev = "a".repeat(40);
        let line = serde_json::json!({
            "type": "patchset-created",
            "uploader": {"name": "J", "email": "j@example.org", "username": "j"},
            "patchSet": {
                "number": 2, "revision": rev, "parents": ["b".repeat(40)],
                "ref": "refs/changes/45/12345/2", "uploader": {"username": "j"},
                "createdOn": 1764100100, "kind": "REWORK"
            },
            "change": {
                "project": "test/hello", "branch": "main", "id": "I1", "number": 12345,
                "subject": "s", "owner": {"username": "j"}, "url": "http://gerrit.test/12345",
                "status": "NEW", "wip": false, "private": false
            },
            "project": "test/hello",
            "refName": "refs/heads/main",
            "eventCreatedOn": 1764100101
        })
        .to_string();
        handle_line(&cfg, &events, &api, &Accept, line.as_bytes()).await;
        let repo = RepoId::new(ForgeKind::Gerrit, "test/hello").expect("repo");
        let sha = CommitSha::parse(&rev).expect("sha");
        assert_eq!(
            api.change_of(&repo, &sha)
                .await
                .expect("known without a query"),
            "test%2Fhello~12345"
        );
    }
}
