//! One benchmark connection: bind, connect, handshake, then stay idle.
//!
//! A connection is a bare `tokio_tungstenite` stream over a `TcpStream` whose
//! socket was bound to a chosen source address before connecting. It is not a
//! `rainbow-client` (that one keeps a task pair, queues and QoS state per
//! connection): at tens of thousands of connections the bench's own memory
//! would dwarf what it measures.
//!
//! The HTTP upgrade is written here rather than by tungstenite's client
//! handshake, because that one hands its 4 KiB handshake read buffer over to
//! the WebSocket as its frame buffer, whatever `read_buffer_size` says. Ours
//! reads the response head into a temporary buffer and then wraps the socket
//! with a fresh [`READ_BUFFER`]-byte frame buffer. An idle connection is a
//! single task awaiting the next frame; tungstenite answers pings by itself
//! while reading.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// An open benchmark connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Read buffer of one connection, bytes. Idle connections receive nothing
/// but pings, so 1 KiB is plenty; bigger frames still arrive (the buffer grows).
pub const READ_BUFFER: usize = 1024;

/// Largest frame or message accepted from the gateway.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Header naming the client device (docs/protocol.md §3).
pub const DEVICE_ID: &str = "X-DEVICEID";
/// Header naming the client OS (docs/protocol.md §3).
pub const CLIENT_OS: &str = "X-CLIENT-OS";
/// The OS every bench connection reports.
pub const BENCH_OS: &str = "rainbow-bench";

/// Largest HTTP response head accepted from the gateway.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// The gateway's WebSocket endpoint, resolved once.
#[derive(Debug)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    /// `Host` header value.
    host: String,
    /// Path and query of the request line.
    path: String,
}

impl Target {
    /// Parses a `ws://HOST:PORT/connect/...` URL and resolves its host.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a valid URL"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => bail!("wss:// is not supported: the bench talks to the gateway directly, use ws://"),
            _ => bail!("{url:?}: expected a ws:// URL such as ws://127.0.0.1:1984/connect/"),
        }
        let host = uri.host().with_context(|| format!("{url:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.to_string());
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".to_string());
        if authority.contains('@') {
            bail!("{url:?}: credentials in the URL are not supported");
        }
        Ok(Target { url: url.to_string(), addr, host: authority, path })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `Host` header value (host and port as given).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Path and query of the request line.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Tungstenite settings of a bench connection: small buffers.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum Failure {
    /// Creating or binding the socket to its source address failed.
    Bind(io::Error),
    /// The TCP connect failed.
    Connect(io::Error),
    /// The whole open took longer than allowed.
    Timeout,
    /// The gateway answered the handshake with this HTTP status.
    Http(u16),
    /// Reading or writing the handshake failed.
    Io(io::Error),
    /// The gateway's answer is not a valid WebSocket upgrade.
    Protocol(&'static str),
}

impl Failure {
    /// A short label to count failures by. Labels come from a small set
    /// (error kinds, statuses), so counting them stays bounded.
    pub fn label(&self) -> String {
        match self {
            Failure::Bind(e) => format!("bind: {}", e.kind()),
            Failure::Connect(e) => format!("connect: {}", e.kind()),
            Failure::Timeout => "timeout".to_string(),
            Failure::Http(status) => format!("http {status}"),
            Failure::Io(e) => format!("handshake: {}", e.kind()),
            Failure::Protocol(what) => format!("handshake: {what}"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Bind(e) => write!(f, "cannot bind the client socket: {e}"),
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Http(status) => write!(f, "the gateway answered the handshake with HTTP {status}"),
            Failure::Io(e) => write!(f, "WebSocket handshake failed: {e}"),
            Failure::Protocol(what) => write!(f, "WebSocket handshake failed: {what}"),
        }
    }
}

/// Opens one connection from `source` (or a kernel-chosen address) with the
/// device headers of docs/protocol.md §3.
pub async fn open(target: &Target, source: Option<IpAddr>, device_id: &str) -> Result<Ws, Failure> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(Failure::Bind)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(Failure::Bind)?;
    }
    let mut stream = socket.connect(target.addr).await.map_err(Failure::Connect)?;
    // Only affects small writes (pongs); failure to set it changes nothing measured.
    let _ = stream.set_nodelay(true);
    let tail = upgrade(&mut stream, target, device_id).await?;
    Ok(if tail.is_empty() {
        WebSocketStream::from_raw_socket(stream, Role::Client, Some(ws_config())).await
    } else {
        WebSocketStream::from_partially_read(stream, tail, Role::Client, Some(ws_config())).await
    })
}

/// The client side of the HTTP/1.1 upgrade (RFC 6455 §4.1) with the device
/// headers, on a connected stream. Returns any bytes that arrived after the
/// response head (the start of the first frame).
pub async fn upgrade(stream: &mut TcpStream, target: &Target, device_id: &str) -> Result<Vec<u8>, Failure> {
    if device_id.bytes().any(|b| b.is_ascii_control()) {
        return Err(Failure::Protocol("device id has control characters"));
    }
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{DEVICE_ID}: {device_id}\r\n\
         {CLIENT_OS}: {BENCH_OS}\r\n\r\n",
        path = target.path,
        host = target.host,
    );
    stream.write_all(request.as_bytes()).await.map_err(Failure::Io)?;
    drop(request);

    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let end = loop {
        let n = stream.read(&mut chunk).await.map_err(Failure::Io)?;
        if n == 0 {
            return Err(Failure::Io(io::Error::from(io::ErrorKind::UnexpectedEof)));
        }
        let searched = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(at) = head[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            break searched + at + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(Failure::Protocol("response head too large"));
        }
    };
    check_response(&head[..end], &derive_accept_key(key.as_bytes()))?;
    Ok(head.split_off(end))
}

/// Checks a response head: status 101 and the right `Sec-WebSocket-Accept`.
fn check_response(head: &[u8], accept: &str) -> Result<(), Failure> {
    let text = std::str::from_utf8(head).map_err(|_| Failure::Protocol("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(Failure::Protocol("not an HTTP/1 response"));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(Failure::Protocol("no status code"))?;
    if status != 101 {
        return Err(Failure::Http(status));
    }
    let header = |name: &str| {
        lines.clone().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(Failure::Protocol("101 without Upgrade: websocket"));
    }
    if header("sec-websocket-accept") != Some(accept) {
        return Err(Failure::Protocol("wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// How an idle connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The gateway closed it with a close frame (code, if any), then the stream ended.
    Closed(Option<u16>),
    /// The stream ended without a close frame.
    Eof,
    /// A read or protocol error.
    Error(String),
}

impl End {
    /// A short label to count ends by.
    pub fn label(&self) -> String {
        match self {
            End::Closed(Some(code)) => format!("closed {code}"),
            End::Closed(None) => "closed".to_string(),
            End::Eof => "eof".to_string(),
            End::Error(e) => format!("error: {}", e.chars().take(60).collect::<String>()),
        }
    }
}

/// Holds a connection open, doing nothing but answering pings (tungstenite
/// does that while reading), until the gateway ends it.
pub async fn idle(ws: &mut Ws) -> End {
    let mut closed = None;
    loop {
        match ws.next().await {
            // Keep reading after a close frame so tungstenite sends its reply.
            Some(Ok(Message::Close(frame))) => closed = Some(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(tungstenite::Error::ConnectionClosed)) | None => return closed.map_or(End::Eof, End::Closed),
            Some(Err(e)) => return closed.map_or_else(|| End::Error(e.to_string()), End::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_ws_urls_only() {
        let t = Target::resolve("ws://127.0.0.1:1999/connect/").await.expect("resolves");
        assert_eq!(t.addr(), "127.0.0.1:1999".parse().expect("addr"));
        let e = Target::resolve("wss://127.0.0.1/connect/").await.unwrap_err().to_string();
        assert!(e.contains("wss"), "{e}");
        assert!(Target::resolve("http://127.0.0.1/").await.is_err());
    }

    #[test]
    fn response_checks() {
        let accept = derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        let ok =
            format!("HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
        assert!(check_response(ok.as_bytes(), &accept).is_ok());
        let refused = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(check_response(refused, &accept), Err(Failure::Http(503))));
        let wrong = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n";
        assert_eq!(
            check_response(wrong.as_bytes(), &accept).map_err(|e| e.label()),
            Err("handshake: wrong Sec-WebSocket-Accept".into())
        );
        assert!(check_response(b"SSH-2.0\r\n\r\n", &accept).is_err());
    }

    #[test]
    fn labels_are_short_and_stable() {
        assert_eq!(Failure::Http(503).label(), "http 503");
        assert_eq!(
            Failure::Connect(io::Error::from(io::ErrorKind::ConnectionRefused)).label(),
            "connect: connection refused"
        );
        assert_eq!(End::Closed(Some(1001)).label(), "closed 1001");
    }
}
