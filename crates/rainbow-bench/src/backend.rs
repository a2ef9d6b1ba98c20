//! `rainbow-bench backend`: a minimal, fast backend for the benchmarks.
//!
//! One hyper HTTP/1.1 server (keep-alive, no framework) answering:
//!
//! - `GET /connect/...` (Rainbow's connect hook, docs/protocol.md §3): `{"status":"success"}`,
//!   and when the client's query had `channel=C`, the header
//!   `RAINBOWCLIENTCHANNEL: C` so the gateway subscribes the connection to C
//!   before answering its handshake (docs/protocol.md §5). Fan-out subscribers connect to
//!   `/connect/?channel=C` for exactly this.
//! - `GET /close/...` (close hook, docs/protocol.md §6): `{"status":"success"}`.
//! - `POST` with `Content-Type: application/websocket-events` (Pushpin's
//!   WebSocket-over-HTTP): an `OPEN` event is accepted with the GRIP
//!   extension and a `subscribe` control message for the channel named by the
//!   last path segment, so a WebSocket client of Pushpin at `/C` listens on
//!   channel C; other events get an empty answer.
//! - any other `POST` (Rainbow's forward hook, docs/protocol.md §4, and the direct rpc
//!   baseline): the fixed reply body (`--reply`, default `{"ok":true}`), or
//!   with `--echo` the request's own body (an echo backend: a client's
//!   message comes back as the reply, whatever its size).
//!
//! Signatures are not checked: this backend exists to be cheap, so that what
//! the rpc benchmark measures is the gateway. Counts of answered requests go
//! to stderr at exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

/// Largest request body read, bytes.
const MAX_BODY: usize = 1 << 20;

/// The connect hook's accepting answer.
pub const SUCCESS: &str = r#"{"status":"success"}"#;

/// Header that subscribes a connection to channels (docs/protocol.md §5).
pub const CHANNEL_HEADER: &str = "RAINBOWCLIENTCHANNEL";

/// Content type of Pushpin's WebSocket-over-HTTP requests and answers.
pub const WS_EVENTS: &str = "application/websocket-events";

/// Requests answered, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    connect: AtomicU64,
    close: AtomicU64,
    forward: AtomicU64,
    ws_over_http: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "backend: answered {} connect, {} close, {} forward, {} websocket-over-http, {} other",
            l(&self.connect),
            l(&self.close),
            l(&self.forward),
            l(&self.ws_over_http),
            l(&self.other)
        )
    }
}

/// What the backend answers with.
#[derive(Debug)]
struct Setup {
    reply: Bytes,
    echo: bool,
    counts: Arc<Counts>,
}

/// The value of query parameter `name` in a raw query, if it is plain
/// enough to go into a header (letters, digits, `-_.:`).
pub fn channel_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty() && v.len() <= 256 && v.bytes().all(is_channel_byte)).then(|| v.to_string())
    })
}

fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
}

/// Pushpin's answer to an `OPEN` event: accept, and subscribe to `channel`
/// with a GRIP control message (a `TEXT` event whose content starts `c:`).
pub fn ws_open_answer(channel: &str) -> String {
    let control = format!("c:{{\"type\":\"subscribe\",\"channel\":\"{channel}\"}}");
    format!("OPEN\r\nTEXT {:x}\r\n{control}\r\n", control.len())
}

fn response(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(setup: Arc<Setup>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let method = request.method().clone();
    let ws_events = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(WS_EVENTS));
    let c = &setup.counts;
    if method == Method::GET && path.starts_with("/connect") {
        c.connect.fetch_add(1, Ordering::Relaxed);
        let mut r = response(StatusCode::OK, "application/json", Bytes::from_static(SUCCESS.as_bytes()));
        if let Some(channel) = channel_param(query.as_deref(), "channel")
            && let Ok(v) = channel.parse()
        {
            r.headers_mut().insert(CHANNEL_HEADER, v);
        }
        return Ok(r);
    }
    if method == Method::GET && path.starts_with("/close") {
        c.close.fetch_add(1, Ordering::Relaxed);
        return Ok(response(StatusCode::OK, "application/json", Bytes::from_static(SUCCESS.as_bytes())));
    }
    if method != Method::POST {
        c.other.fetch_add(1, Ordering::Relaxed);
        return Ok(response(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")));
    }
    // Read (and bound) the body so the connection can be reused.
    let body = http_body_util::Limited::new(request.into_body(), MAX_BODY).collect().await.map(|b| b.to_bytes());
    let Ok(body) = body else {
        c.other.fetch_add(1, Ordering::Relaxed);
        return Ok(response(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", Bytes::from_static(b"too large\n")));
    };
    if ws_events {
        c.ws_over_http.fetch_add(1, Ordering::Relaxed);
        let channel = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("bench");
        let channel = if channel.bytes().all(is_channel_byte) { channel } else { "bench" };
        let events = if body.starts_with(b"OPEN") { ws_open_answer(channel) } else { String::new() };
        let mut r = response(StatusCode::OK, WS_EVENTS, Bytes::from(events));
        r.headers_mut().insert("Sec-WebSocket-Extensions", hyper::header::HeaderValue::from_static("grip"));
        return Ok(r);
    }
    c.forward.fetch_add(1, Ordering::Relaxed);
    let reply = if setup.echo { body } else { setup.reply.clone() };
    Ok(response(StatusCode::OK, "application/json", reply))
}

/// The line `rainbow-bench backend` (and `floor`) prints once it listens.
#[derive(Debug, Serialize)]
pub struct Listening {
    /// `"backend"` or `"floor"`.
    pub bench: &'static str,
    /// The address it listens on.
    pub listening: String,
    /// Its process id.
    pub pid: u32,
}

/// A bound backend, not yet serving.
pub struct Backend {
    listener: TcpListener,
    setup: Arc<Setup>,
}

impl Backend {
    /// Binds `addr` (port 0 = a free one).
    pub async fn bind(addr: SocketAddr, reply: Bytes) -> anyhow::Result<Backend> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        Ok(Backend { listener, setup: Arc::new(Setup { reply, echo: false, counts: Arc::default() }) })
    }

    /// Answers forward POSTs with their own body (`true`) or the fixed reply.
    pub fn echo(self, echo: bool) -> Backend {
        let setup = Arc::new(Setup { reply: self.setup.reply.clone(), echo, counts: self.setup.counts.clone() });
        Backend { listener: self.listener, setup }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener.local_addr().context("listening address")
    }

    /// The request counts.
    pub fn counts(&self) -> Arc<Counts> {
        self.setup.counts.clone()
    }

    /// Serves until `stop` resolves.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let (stream, _) = tokio::select! {
                _ = &mut stop => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    // Out of files or similar: wait a little rather than spin.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let setup = self.setup.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(setup.clone(), request));
                // A client that goes away mid-request is not an error here.
                let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_parameter_is_taken_only_when_plain() {
        assert_eq!(channel_param(Some("a=1&channel=bench-1&x=2"), "channel"), Some("bench-1".into()));
        assert_eq!(channel_param(Some("channel="), "channel"), None);
        assert_eq!(channel_param(Some("channel=a%0Db"), "channel"), None);
        assert_eq!(channel_param(None, "channel"), None);
    }

    #[test]
    fn pushpin_open_answer_has_the_right_length() {
        let a = ws_open_answer("room");
        let control = r#"c:{"type":"subscribe","channel":"room"}"#;
        assert_eq!(a, format!("OPEN\r\nTEXT {:x}\r\n{control}\r\n", control.len()));
        assert!(a.contains("TEXT 27\r\n"), "{a}");
    }
}
