//! The hooks' client for `http://` backends: keep-alive HTTP/1.1
//! connections driven by the task that makes the call.
//!
//! reqwest (which serves `https://` hook URLs) runs every pooled connection
//! in a task of its own: each call is handed to that task and its answer
//! handed back, two wake-ups per call, through a stack of layers. Every
//! client message is a forward call, so plain-HTTP hooks get this leaner
//! path, measured in `docs/PERFORMANCE.md` ("The rpc floor"): idle
//! connections wait in a small pool, and the one a call checks out is driven
//! inside the caller's own future (for a forward, the connection's task, see
//! `transport::forward`), with hyper's HTTP/1 codec.
//!
//! Nothing polls an idle connection, so a backend that closed one is noticed
//! when it is next checked out (it is polled once then, and dropped if
//! closed), or when a request on it fails before any of it was sent; such a
//! call is retried once on a new connection. Idle connections older than
//! [`IDLE_TIMEOUT`] are dropped, and at most `max_idle` wait per backend.
//! Redirects are not followed: a 3xx answer is the caller's to judge.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections older than this are not reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer body read, bytes (for both hook clients).
pub const MAX_BODY: usize = 16 << 20;

/// A call that produced no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The backend could not be reached, or the exchange failed.
    Unreachable(String),
    /// The answer's body is over [`MAX_BODY`].
    TooLarge,
}

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// A connection waiting for its next call.
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    conn: Conn,
    since: Instant,
}

/// A backend's answer.
#[derive(Debug)]
pub struct HookResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// Keep-alive connections to `http://` backends, by `host:port`.
pub struct Client {
    idle: Mutex<HashMap<String, VecDeque<Idle>>>,
    max_idle: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("max_idle", &self.max_idle).finish_non_exhaustive()
    }
}

impl Client {
    /// A pool keeping at most `max_idle` idle connections per backend.
    pub fn new(max_idle: usize) -> Client {
        Client { idle: Mutex::default(), max_idle }
    }

    fn idle(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Idle>>> {
        // Every critical section leaves the map consistent.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `method` with `headers` and `body` to `uri` (an `http://` URL),
    /// and reads the whole answer. The caller bounds the time it may take.
    pub async fn request(
        &self,
        method: Method,
        uri: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<HookResponse, CallError> {
        let authority = uri.authority().ok_or_else(|| CallError::Unreachable(format!("{uri} has no host")))?;
        let key = address(authority);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| CallError::Unreachable(format!("bad host {authority}: {e}")))?;
        let mut reused = self.checkout(&key);
        loop {
            let fresh = reused.is_none();
            let (mut sender, mut conn) = match reused.take() {
                Some(idle) => (idle.sender, idle.conn),
                None => connect(&key).await.map_err(CallError::Unreachable)?,
            };
            let mut request = Request::builder()
                .method(method.clone())
                .uri(target)
                .body(Full::new(body.clone()))
                .map_err(|e| CallError::Unreachable(e.to_string()))?;
            *request.headers_mut() = headers.clone();
            request.headers_mut().insert(header::HOST, host.clone());
            match exchange(&mut sender, &mut conn, request).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        self.put(key, Idle { sender, conn, since: Instant::now() });
                    }
                    return Ok(answer);
                }
                // The reused connection was closed before the request went
                // out: nothing reached the backend, so try a new one.
                Err(Failed::NotSent(_)) if !fresh => continue,
                Err(Failed::NotSent(e) | Failed::Other(e)) => return Err(CallError::Unreachable(e)),
                Err(Failed::TooLarge) => return Err(CallError::TooLarge),
            }
        }
    }

    /// An idle connection to `key` that is still open, if any. A backend
    /// left without idle connections leaves the map, which so holds only
    /// backends with connections to offer.
    fn checkout(&self, key: &str) -> Option<Idle> {
        let mut idle = self.idle();
        let list = idle.get_mut(key)?;
        let mut cx = Context::from_waker(Waker::noop());
        let mut found = None;
        while let Some(mut c) = list.pop_back() {
            if c.since.elapsed() > IDLE_TIMEOUT || c.sender.is_closed() {
                continue;
            }
            // Polling an idle connection reads what arrived while it waited:
            // a close from the backend ends it.
            if Pin::new(&mut c.conn).poll(&mut cx).is_ready() {
                continue;
            }
            found = Some(c);
            break;
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    fn put(&self, key: String, conn: Idle) {
        let mut idle = self.idle();
        let list = idle.entry(key).or_default();
        while list.front().is_some_and(|c| c.since.elapsed() > IDLE_TIMEOUT) {
            list.pop_front();
        }
        if list.len() < self.max_idle {
            list.push_back(conn);
        }
    }
}

/// Where to connect for `authority`: its host and port, 80 if it has none.
fn address(authority: &axum::http::uri::Authority) -> String {
    format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80))
}

/// How an exchange failed.
enum Failed {
    /// Before any of the request was sent.
    NotSent(String),
    /// Otherwise.
    Other(String),
    /// The answer's body is over [`MAX_BODY`].
    TooLarge,
}

async fn connect(authority: &str) -> Result<(SendRequest<Full<Bytes>>, Conn), String> {
    let open = async {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("cannot connect to {authority}: {e}")),
        Err(_) => return Err(format!("cannot connect to {authority}: no answer within {CONNECT_TIMEOUT:?}")),
    };
    http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("HTTP/1 handshake with {authority}: {e}"))
}

/// Sends `request` and reads its answer, driving `conn` meanwhile. Also
/// says whether the connection can serve another call.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    conn: &mut Conn,
    request: Request<Full<Bytes>>,
) -> Result<(HookResponse, bool), Failed> {
    let mut driven = Driven { conn, ended: false };
    let ready = poll_fn(|cx| match sender.poll_ready(cx) {
        Poll::Pending if driven.drive(cx) => Poll::Ready(Err(Failed::NotSent("connection closed".into()))),
        Poll::Pending => Poll::Pending,
        Poll::Ready(r) => Poll::Ready(r.map_err(|e| Failed::NotSent(describe(&e)))),
    });
    ready.await?;
    let response = driven
        .until(sender.send_request(request))
        .await
        .map_err(|e| if e.is_canceled() { Failed::NotSent(describe(&e)) } else { Failed::Other(describe(&e)) })?;
    let (parts, body) = response.into_parts();
    let body = driven
        .until(Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Failed::TooLarge
            } else {
                Failed::Other(format!("reading the answer: {e}"))
            }
        })?
        .to_bytes();
    let reusable = !driven.ended && !sender.is_closed();
    Ok((HookResponse { status: parts.status, headers: parts.headers, body }, reusable))
}

/// A connection polled alongside the futures of one exchange, until it ends.
struct Driven<'a> {
    conn: &'a mut Conn,
    /// The connection is over (closed, or failed).
    ended: bool,
}

impl Driven<'_> {
    /// Polls the connection unless it ended; says whether it has.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended && Pin::new(&mut *self.conn).poll(cx).is_ready() {
            self.ended = true;
        }
        self.ended
    }

    /// Runs `fut` to completion, driving the connection meanwhile. If the
    /// connection ends first, `fut` resolves (with an error) at its next
    /// poll, which the end's wake-up brings.
    async fn until<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            self.drive(cx);
            Poll::Pending
        })
        .await
    }
}

/// An error and its causes, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server answering each request on a connection with `ok N` (N counts
    /// the connection's requests), closing after `per_connection` of them.
    async fn server(per_connection: usize) -> (String, tokio::sync::mpsc::UnboundedReceiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (opened, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                n += 1;
                let _ = opened.send(n);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for served in 1..=per_connection {
                        // Requests here are small: one read holds a whole one.
                        let mut chunk = [0u8; 4096];
                        let Ok(k) = s.read(&mut chunk).await else { return };
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        let body = format!("ok {served}");
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Seen: yes\r\n\r\n", body.len());
                        let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                        buf.clear();
                    }
                    // Closes after the last one.
                });
            }
        });
        (format!("http://{addr}/message/1/?a=b"), rx)
    }

    #[test]
    fn addresses_have_a_port() {
        let a = |s: &str| address(s.parse::<Uri>().unwrap().authority().unwrap());
        assert_eq!(a("http://backend/m/"), "backend:80");
        assert_eq!(a("http://127.0.0.1:9000/m/"), "127.0.0.1:9000");
        assert_eq!(a("http://[::1]:9000/m/"), "[::1]:9000");
    }

    #[tokio::test]
    async fn calls_reuse_a_connection_and_read_the_whole_answer() {
        let (url, mut opened) = server(100).await;
        let pool = Client::new(4);
        let uri: Uri = url.parse().unwrap();
        for n in 1..=3 {
            let answer = pool.request(Method::POST, &uri, HeaderMap::new(), Bytes::from_static(b"x")).await.unwrap();
            assert_eq!((answer.status, &answer.body[..]), (StatusCode::OK, format!("ok {n}").as_bytes()));
            assert_eq!(answer.headers.get("x-seen").unwrap(), "yes");
        }
        assert_eq!(opened.recv().await, Some(1));
        assert!(opened.try_recv().is_err(), "one connection served all three");
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced() {
        let (url, mut opened) = server(1).await;
        let pool = Client::new(4);
        let uri: Uri = url.parse().unwrap();
        for _ in 0..3 {
            let answer = pool.request(Method::GET, &uri, HeaderMap::new(), Bytes::new()).await.unwrap();
            assert_eq!(&answer.body[..], b"ok 1");
            // Let the close arrive, as it would during a pause between calls.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for n in 1..=3 {
            assert_eq!(opened.recv().await, Some(n));
        }
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_an_error_that_names_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let uri: Uri = format!("http://{addr}/m/").parse().unwrap();
        let e = Client::new(1).request(Method::GET, &uri, HeaderMap::new(), Bytes::new()).await.unwrap_err();
        let CallError::Unreachable(e) = e else { panic!("{e:?}") };
        assert!(e.contains(&addr.to_string()) && e.contains("connect"), "{e}");
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_too_large_not_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 4096];
            let _ = s.read(&mut chunk).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&vec![b'x'; MAX_BODY + 1]).await;
        });
        let uri: Uri = format!("http://{addr}/m/").parse().unwrap();
        let e = Client::new(1).request(Method::GET, &uri, HeaderMap::new(), Bytes::new()).await.unwrap_err();
        assert_eq!(e, CallError::TooLarge);
    }
}
