//! The HTTP listener. `axum::serve` has no header timeout and no connection cap: 1,100 idle
//! connections exhausted the default file limit and took webhooks and `/healthz` down. Here
//! every connection has a header read timeout (which also ends idle keep-alive connections),
//! and past `max_connections` the connection idle the longest is closed to make room for the
//! new one, so a flood of idle or slow connections cannot lock out a forge's delivery or a
//! health check. Only when every connection is in the middle of a request is a newcomer shed
//! with a canned 503.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How the listener protects itself.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; the file limit is raised to fit (see [`raise_file_limit`]).
    pub max_connections: usize,
    /// A request's headers must arrive within this, and an idle keep-alive connection is
    /// closed after it.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// One open connection as the accept loop sees it.
struct Conn {
    /// Requests being answered (their response bodies not yet sent).
    in_flight: usize,
    /// When the last request ended (or the connection opened): the eviction order.
    idle_since: Instant,
    close: CancellationToken,
}

#[derive(Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Conn>,
}

type Shared = Arc<Mutex<Table>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Table> {
    // A panic elsewhere cannot leave the table half-updated: every update is one statement.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a request in flight on its connection until dropped (with the response body).
struct InFlight {
    table: Shared,
    id: u64,
}

impl InFlight {
    fn start(table: &Shared, id: u64) -> InFlight {
        if let Some(c) = lock(table).conns.get_mut(&id) {
            c.in_flight += 1;
        }
        InFlight {
            table: table.clone(),
            id,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.table).conns.get_mut(&self.id) {
            c.in_flight = c.in_flight.saturating_sub(1);
            c.idle_since = Instant::now();
        }
    }
}

/// A response body that keeps its request counted until it is sent: a log being
/// downloaded is not an idle connection.
struct Counted {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the accept loop does with a new connection when the table is full.
enum Room {
    Free,
    /// This connection, idle the longest, was told to close.
    Evicted(u64),
    /// Every connection is answering a request.
    Full,
}

fn make_room(table: &Shared, max: usize) -> Room {
    let t = lock(table);
    // Connections already told to close are leaving: they end at their next poll.
    let staying = t.conns.values().filter(|c| !c.close.is_cancelled()).count();
    if staying < max {
        return Room::Free;
    }
    let oldest = t
        .conns
        .iter()
        .filter(|(_, c)| c.in_flight == 0 && !c.close.is_cancelled())
        .min_by_key(|(_, c)| c.idle_since);
    match oldest {
        Some((id, c)) => {
            c.close.cancel();
            Room::Evicted(*id)
        }
        None => Room::Full,
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections
/// finish their requests (at most `grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> std::io::Result<()> {
    let table: Shared = Arc::default();
    let stop = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin, and keep serving the others.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match make_room(&table, limits.max_connections) {
            Room::Free => {}
            Room::Evicted(id) => {
                tracing::debug!(conn = id, %peer, "connection limit reached: closing the connection idle the longest");
            }
            Room::Full => {
                tracing::warn!(%peer, "connection limit reached and every connection is busy: shedding");
                tasks.spawn(shed(stream));
                continue;
            }
        }
        let close = stop.child_token();
        let id = {
            let mut t = lock(&table);
            t.next += 1;
            let id = t.next;
            t.conns.insert(
                id,
                Conn {
                    in_flight: 0,
                    idle_since: Instant::now(),
                    close: close.clone(),
                },
            );
            id
        };
        tasks.spawn(connection(
            stream,
            router.clone(),
            table.clone(),
            id,
            close,
            limits,
        ));
    }
    drop(listener);
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            "{} connection(s) still open after {grace:?}: closing them",
            tasks.len()
        );
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    router: Router,
    table: Shared,
    id: u64,
    close: CancellationToken,
    limits: Limits,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn({
        let table = table.clone();
        move |req: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&table, id);
            let router = router.clone();
            async move {
                let resp = match router.oneshot(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, std::convert::Infallible>(resp.map(|inner| Counted {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(conn = id, "connection ended: {e}");
            }
        }
        _ = close.cancelled() => {
            // Between requests (or in the middle of a trickled request head: hyper's graceful
            // shutdown would wait for that head) the connection is dropped at once; a request
            // being answered is finished first.
            let busy = lock(&table).conns.get(&id).is_some_and(|c| c.in_flight > 0);
            if busy {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
    lock(&table).conns.remove(&id);
}

/// Answers a connection that cannot be served now, without reading its request.
async fn shed(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 37\r\n\r\nevery connection is busy: retry soon\n";
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(BUSY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Raises the soft limit of open files to the hard limit and returns the new soft limit:
/// the default 1,024 is what a connection flood exhausted.
pub fn raise_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_connection_idle_the_longest_never_a_busy_one() {
        let table: Shared = Arc::default();
        let now = Instant::now();
        let mut tokens = vec![];
        for (id, busy, idle_for) in [(1, 1, 50), (2, 0, 10), (3, 0, 30)] {
            let close = CancellationToken::new();
            tokens.push(close.clone());
            lock(&table).conns.insert(
                id,
                Conn {
                    in_flight: busy,
                    idle_since: now - Duration::from_secs(idle_for),
                    close,
                },
            );
        }
        assert!(matches!(make_room(&table, 4), Room::Free));
        assert!(matches!(make_room(&table, 3), Room::Evicted(3)));
        assert!(tokens[2].is_cancelled());
        // One is leaving: room for one more without closing another.
        assert!(matches!(make_room(&table, 3), Room::Free));
        assert!(matches!(make_room(&table, 2), Room::Evicted(2)));
        assert!(matches!(make_room(&table, 1), Room::Full));
        assert!(
            !tokens[0].is_cancelled(),
            "a busy connection is never evicted"
        );
    }
}
