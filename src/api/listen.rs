//! The connection layer of `va serve` (docs/SECURITY.md): HTTP/1.1 over the accepted TCP
//! connections, so that clients that stall cannot starve the ones that speak.
//!
//! - A connection must deliver each request's header within `header_timeout_seconds`
//!   (hyper's header-read timeout; a keep-alive connection waiting for its next request
//!   counts too), else it is closed. The body's own bound is the router's (`read_body`).
//! - At most `max_connections` are open (lowered to what `RLIMIT_NOFILE` leaves after
//!   [`RESERVED_FDS`], so accepting never runs the process out of descriptors), and at most
//!   `max_connections_per_peer` from one address.
//! - A connection over a cap does not wait: the oldest connection (of that peer, or of all)
//!   that is waiting for a request header (its first, or the next on a kept-alive
//!   connection) makes room for it, and is closed. A connection whose request is being
//!   answered (header read, answer not yet written) is never closed for room. So a flood of
//!   stalled connections churns among itself while a client that sends its request at once
//!   is served; with no connection to close, the new one is closed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

use super::config::Config;

/// Descriptors kept free of connections for everything else the server opens (records,
/// locks, logs, the pipes of its runs).
pub const RESERVED_FDS: u64 = 64;

/// The caps and the header timeout of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_per_peer: usize,
}

impl Limits {
    /// The config's limits, `max_connections` lowered to `RLIMIT_NOFILE`'s soft limit less
    /// [`RESERVED_FDS`] (at least 1).
    pub fn of(cfg: &Config) -> Limits {
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Limits {
            header_timeout: Duration::from_secs(cfg.header_timeout_seconds),
            max_connections: fd_cap(cfg.max_connections, nofile),
            max_per_peer: cfg.max_connections_per_peer,
        }
    }
}

/// `max` lowered to what a soft descriptor limit of `nofile` (`None`: unlimited) leaves.
fn fd_cap(max: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => max.min(usize::try_from(n.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(max)),
        None => max,
    }
}

/// One open connection.
struct Conn {
    peer: IpAddr,
    /// A request is being answered: its header was read, its answer is not yet written.
    busy: Arc<AtomicBool>,
    close: Arc<Notify>,
}

/// The open connections by age (ids only grow).
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Table {
    /// Closes the oldest connection matching `which` that waits for a request header; whether
    /// there was one.
    fn close_oldest_waiting(&mut self, which: impl Fn(&Conn) -> bool) -> bool {
        let id = self
            .open
            .iter()
            .find(|(_, c)| which(c) && !c.busy.load(Ordering::Relaxed))
            .map(|(&id, _)| id);
        match id.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Makes room for a connection from `peer` within `limits`; whether there is room.
    fn admit(&mut self, peer: IpAddr, limits: &Limits) -> bool {
        let from_peer = self.open.values().filter(|c| c.peer == peer).count();
        if from_peer >= limits.max_per_peer && !self.close_oldest_waiting(|c| c.peer == peer) {
            return false;
        }
        self.open.len() < limits.max_connections || self.close_oldest_waiting(|_| true)
    }
}

/// Serves `router` on `listener` within `limits` until the future is dropped.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    let table = Arc::new(Mutex::new(Table::default()));
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => accept(stream, addr.ip(), &router, &table, &limits),
            // Out of descriptors (something else holds them): a waiting connection gives one
            // back, else the next try waits a little. Other errors (a connection reset
            // before it was accepted) concern that connection only.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                if !lock(&table).close_oldest_waiting(|_| true) {
                    tracing::warn!(stage = "serve", "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => tracing::debug!(stage = "serve", "accept: {e}"),
        }
    }
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept(
    stream: TcpStream,
    peer: IpAddr,
    router: &Router,
    table: &Arc<Mutex<Table>>,
    limits: &Limits,
) {
    let busy = Arc::new(AtomicBool::new(false));
    let close = Arc::new(Notify::new());
    let id = {
        let mut t = lock(table);
        if !t.admit(peer, limits) {
            tracing::debug!(stage = "serve", %peer, "connection refused: at the cap, all busy");
            return;
        }
        let id = t.next;
        t.next += 1;
        t.open.insert(
            id,
            Conn {
                peer,
                busy: Arc::clone(&busy),
                close: Arc::clone(&close),
            },
        );
        id
    };
    let _ = stream.set_nodelay(true);
    let router = router.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        busy.store(true, Ordering::Relaxed);
        let answer = router.clone().oneshot(req.map(Body::new));
        let busy = Arc::clone(&busy);
        async move {
            let resp = answer.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| Body::new(Answer { body, busy })))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let table = Arc::clone(table);
    tokio::spawn(async move {
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            r = conn => {
                if let Err(e) = r {
                    tracing::debug!(stage = "serve", %peer, "connection ended: {e}");
                }
            }
            () = close.notified() => {
                tracing::debug!(stage = "serve", %peer, "waiting connection closed for room");
            }
        }
        lock(&table).open.remove(&id);
    });
}

/// An answer's body: when it is done (written whole, or dropped with its connection), the
/// connection waits for a header again.
struct Answer {
    body: Body,
    busy: Arc<AtomicBool>,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(table: &mut Table, peer: [u8; 4], busy: bool) -> Arc<Notify> {
        let close = Arc::new(Notify::new());
        let id = table.next;
        table.next += 1;
        table.open.insert(
            id,
            Conn {
                peer: IpAddr::from(peer),
                busy: Arc::new(AtomicBool::new(busy)),
                close: Arc::clone(&close),
            },
        );
        close
    }

    #[test]
    fn the_oldest_waiting_connection_makes_room_and_busy_ones_are_kept() {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            max_connections: 4,
            max_per_peer: 2,
        };
        let mut t = Table::default();
        let a = [127, 0, 0, 1];
        let b = [127, 0, 0, 2];
        conn(&mut t, a, true);
        conn(&mut t, a, false);
        // Peer a is at its cap: its waiting connection (id 1) goes, the busy one stays.
        assert!(t.admit(IpAddr::from(a), &limits));
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), [0]);
        conn(&mut t, a, true);
        // Peer a has two busy connections: no room for a third from a.
        assert!(!t.admit(IpAddr::from(a), &limits));
        conn(&mut t, b, false);
        conn(&mut t, b, false);
        // Four open: a newcomer from c takes the oldest waiting one (b's first, id 3).
        assert!(t.admit(IpAddr::from([10, 0, 0, 3]), &limits));
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), [0, 2, 4]);
    }

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(fd_cap(256, Some(256)), 192);
        assert_eq!(fd_cap(100, Some(1024)), 100);
        assert_eq!(fd_cap(256, Some(10)), 1);
        assert_eq!(fd_cap(256, None), 256);
    }
}
