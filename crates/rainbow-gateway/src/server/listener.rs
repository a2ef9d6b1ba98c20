//! The listener's sockets, from `accept` until each becomes a client
//! WebSocket or closes: HTTP/1 served by hyper with a head timeout, a bound
//! on how many such sockets exist, shedding when file descriptors run out,
//! and a graceful shutdown that always ends.
//!
//! - **Timeouts.** A socket has `head_timeout` to send a complete request
//!   head, counted from its opening or, kept alive, from its previous answer
//!   (hyper's header read timeout, which so is also the keep-alive idle
//!   time). Bodies are timed where they are read (`api::signed`).
//! - **The bound.** At most `max_http_connections` sockets that are not
//!   WebSockets. A new one beyond it closes the oldest socket that is not in
//!   the middle of a request ("evicted"), so sockets that send nothing or
//!   dribble a head can never keep others out; when every one is busy the
//!   new socket is refused ("too_many"). A socket leaves the count when it
//!   upgrades: client WebSockets count against `max_connections` instead.
//! - **File descriptors.** When `accept` fails for lack of descriptors, the
//!   oldest idle socket is closed to make room; if there is none, one spare
//!   descriptor kept for this accepts the waiting socket and closes it at
//!   once ("no_fd"), so the backlog does not hang. Logged at most every few
//!   seconds, with counts.
//! - **Shutdown.** Once told to stop, the loop stops accepting and asks
//!   every HTTP connection to finish its request and close; whoever waits
//!   for them bounds the wait (`Server::run`).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::state::Gateway;

/// Largest request head (request line and headers) read, bytes; a larger
/// one is answered 431.
const MAX_HEAD: usize = 64 * 1024;

/// How often a shedding or descriptor warning may be logged.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// One accepted socket that is not a WebSocket (yet).
#[derive(Debug, Default)]
struct Open {
    /// A request is being served (its head arrived, its answer not yet).
    busy: AtomicBool,
    /// Told to close (evicted).
    evict: Notify,
}

/// The accepted sockets that are not WebSockets, oldest first.
#[derive(Debug, Default)]
struct Sockets {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Open>>>,
    /// Evicted, and their descriptor not yet closed.
    closing: AtomicUsize,
}

impl Sockets {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Open>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn add(&self) -> (u64, Arc<Open>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let open = Arc::new(Open::default());
        self.lock().insert(id, open.clone());
        (id, open)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the oldest socket not serving a request; `false` if all are.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let Some(id) = open.iter().find(|(_, o)| !o.busy.load(Ordering::Acquire)).map(|(id, _)| *id) else {
            return false;
        };
        if let Some(victim) = open.remove(&id) {
            self.closing.fetch_add(1, Ordering::AcqRel);
            victim.evict.notify_one();
        }
        true
    }
}

/// Rate-limits a warning: `Some(n)` (the events since the last one logged)
/// when it is time to log again.
#[derive(Debug)]
struct Every {
    last: Option<Instant>,
    since: u64,
}

impl Every {
    fn tick(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// The accept loop; see the module documentation.
pub struct Listener {
    gw: Arc<Gateway>,
    listener: TcpListener,
    app: Router,
    sockets: Arc<Sockets>,
    /// Serves the HTTP connections; waited for at shutdown.
    pub connections: TaskTracker,
    stopping: watch::Sender<bool>,
    /// Kept open to accept (and close) a socket when descriptors run out.
    spare: Option<std::fs::File>,
    shed_warning: Every,
}

fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (the process's limit) and ENFILE (the system's), on Linux.
    matches!(e.raw_os_error(), Some(24 | 23))
}

impl Listener {
    /// A loop serving `app` on `listener`.
    pub fn new(gw: Arc<Gateway>, listener: TcpListener, app: Router) -> Listener {
        Listener {
            gw,
            listener,
            app,
            sockets: Arc::default(),
            connections: TaskTracker::new(),
            stopping: watch::channel(false).0,
            spare: spare_descriptor(),
            shed_warning: Every { last: None, since: 0 },
        }
    }

    /// Accepts and serves until `stop` resolves; then stops accepting and
    /// asks every HTTP connection to finish and close.
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> TaskTracker {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => self.admit(tcp, peer),
                    Err(e) if out_of_descriptors(&e) => self.out_of_descriptors().await,
                    Err(e) => debug!(side = "client", "accept failed: {e}"),
                },
            }
        }
        drop(self.listener);
        self.stopping.send_replace(true);
        self.connections.close();
        self.connections
    }

    fn shed(&mut self, reason: &'static str) {
        self.gw.metrics.shed(reason);
        if let Some(n) = self.shed_warning.tick(Instant::now()) {
            let open = self.sockets.len();
            warn!(
                side = "client",
                reason,
                shed = n,
                http_connections = open,
                "closing sockets instead of serving them (rainbow_sockets_shed_total): too many HTTP sockets \
                 (max_http_connections) or no file descriptor left; many may be idle or hostile"
            );
        }
    }

    /// No descriptor for the socket waiting in the backlog: make room by
    /// closing the oldest idle socket, or accept it on the spare and close it.
    async fn out_of_descriptors(&mut self) {
        // Sockets evicted already free their descriptors soon: wait for them
        // rather than evict more.
        let evicting = self.sockets.closing.load(Ordering::Acquire) > 0;
        if evicting || self.sockets.evict_oldest_idle() {
            if !evicting {
                self.shed("evicted");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            return;
        }
        self.shed("no_fd");
        drop(self.spare.take());
        if let Ok((tcp, _)) = self.listener.accept().await {
            drop(tcp);
        }
        self.spare = spare_descriptor();
        if self.spare.is_none() {
            // Still none: wait for connections to end rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn admit(&mut self, tcp: TcpStream, peer: SocketAddr) {
        let config = self.gw.config();
        if self.sockets.len() >= config.max_http_connections {
            if self.sockets.evict_oldest_idle() {
                self.shed("evicted");
            } else {
                self.shed("too_many");
                return;
            }
        }
        // Small replies (a REC, a COM) must not wait for the peer's delayed
        // ACK (Nagle), which put a ~40 ms floor under qos-2 request/reply.
        let _ = tcp.set_nodelay(true);
        let (id, open) = self.sockets.add();
        let app = self.app.clone();
        let busy = open.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            busy.busy.store(true, Ordering::Release);
            let serve = hyper::service::Service::call(&TowerToHyperService::new(app.clone()), request);
            let busy = busy.clone();
            async move {
                let answer = serve.await;
                busy.busy.store(false, Ordering::Release);
                answer
            }
        });
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(config.head_timeout).max_buf_size(MAX_HEAD);
        let connection = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
        let sockets = self.sockets.clone();
        let metrics = self.gw.metrics.clone();
        let mut stopping = self.stopping.subscribe();
        metrics.http_connections.inc();
        self.connections.spawn(async move {
            // The connection (and its socket) is dropped when this block ends,
            // before the socket leaves the count.
            let evicted = async move {
                let mut connection = std::pin::pin!(connection);
                let mut asked = false;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(e) = result {
                                debug!(%peer, side = "client", "HTTP connection ended: {e}");
                            }
                            return false;
                        }
                        () = open.evict.notified() => return true,
                        changed = stopping.wait_for(|s| *s), if !asked => {
                            drop(changed);
                            asked = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            .await;
            sockets.remove(id);
            if evicted {
                sockets.closing.fetch_sub(1, Ordering::AcqRel);
            }
            metrics.http_connections.dec();
        });
    }
}

/// The most connections (WebSockets) the open-file limit allows, keeping
/// some descriptors for HTTP sockets, hook calls, Redis and files
/// ([`FD_RESERVE`], or a quarter of a small limit); `None` when the limit is
/// unknown (not Linux) or unlimited.
pub fn descriptor_cap() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft: usize = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(soft - FD_RESERVE.min(soft / 4))
}

/// Descriptors kept out of `max_connections` (at most; see
/// [`descriptor_cap`]).
pub const FD_RESERVE: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_takes_the_oldest_idle_socket() {
        let sockets = Sockets::default();
        let (a, first) = sockets.add();
        let (_, second) = sockets.add();
        let (c, _) = sockets.add();
        first.busy.store(true, Ordering::Release);
        assert!(sockets.evict_oldest_idle());
        assert_eq!(sockets.len(), 2, "the second, the oldest idle one, was evicted");
        assert!(sockets.lock().contains_key(&a) && sockets.lock().contains_key(&c));
        drop(second);
        sockets.lock().get(&c).unwrap().busy.store(true, Ordering::Release);
        assert!(!sockets.evict_oldest_idle(), "all busy");
    }

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_skipped() {
        let mut every = Every { last: None, since: 0 };
        let t0 = Instant::now();
        assert_eq!(every.tick(t0), Some(1));
        assert_eq!(every.tick(t0 + Duration::from_secs(1)), None);
        assert_eq!(every.tick(t0 + Duration::from_secs(2)), None);
        assert_eq!(every.tick(t0 + WARN_EVERY + Duration::from_secs(1)), Some(3));
    }

    #[test]
    fn the_descriptor_cap_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let cap = descriptor_cap();
            assert!(cap.is_some_and(|c| c > 0), "{cap:?}");
        }
    }
}
