//! `rainbow-bench floor`: the least work a server can do per delivery or per
//! round trip, to read what this machine and this load generator allow
//! whatever the server.
//!
//! One server, two jobs, told apart by the WebSocket handshake's path:
//!
//! - [`fanout`]: Nchan's shapes, so `fanout --target floor` drives it as it
//!   drives nginx + Nchan. A WebSocket at `/sub/C` joins channel C;
//!   `POST /pub/C` writes the body as one text frame with one non-blocking
//!   `send(2)` per subscriber, from one OS thread per core.
//! - [`rpc`]: with `--forward URL`, a WebSocket at any other path is a
//!   Rainbow client, so `rpc` drives it as it drives the gateway. Each SEND
//!   becomes one HTTP/1.1 POST on that client's own keep-alive connection to
//!   the backend, answered with an ACK (qos 1) or REC (qos 2), all in the
//!   client's one task.
//!
//! What it leaves out is everything a real server needs: hooks, signatures,
//! QoS state, limits, queues, retransmission, wake-ups between tasks, buffers
//! that survive a call. So its figures in `docs/PERFORMANCE.md` bound from
//! below what any server can reach here, Rainbow included. It is a measuring
//! instrument, not a server to deploy.
//!
//! This module holds the listener and the HTTP request heads; the two jobs
//! are in their files.

pub mod fanout;
pub mod rpc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::http::HttpUrl;

/// Largest request head, message or publication body read, bytes.
const MAX_REQUEST: usize = 1 << 20;

/// What the floor server did, for its summary line.
#[derive(Debug, Default)]
pub struct Counts {
    subscribers: AtomicU64,
    publications: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    round_trips: AtomicU64,
}

impl Counts {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "floor: {} subscribers, {} publications, {} frames written, {} subscribers dropped, {} round trips relayed",
            l(&self.subscribers),
            l(&self.publications),
            l(&self.delivered),
            l(&self.dropped),
            l(&self.round_trips)
        )
    }
}

/// A bound floor server, not yet serving.
pub struct Floor {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// What every connection's handler sees.
struct Shared {
    /// Subscribers by channel. Plain `std` sockets: the publishing threads
    /// write them directly and nothing polls them.
    channels: Mutex<HashMap<String, Vec<std::net::TcpStream>>>,
    /// Threads writing each publication.
    threads: usize,
    /// Where rpc clients' messages go, if anywhere.
    forward: Option<HttpUrl>,
    counts: Arc<Counts>,
}

impl Shared {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, Vec<std::net::TcpStream>>> {
        // Every critical section leaves the map consistent.
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Floor {
    /// Binds `addr` (port 0 = a free one). `threads` write each publication
    /// (0 = one per core); rpc clients' messages go to `forward`.
    pub async fn bind(addr: SocketAddr, threads: usize, forward: Option<&str>) -> anyhow::Result<Floor> {
        let forward = match forward {
            Some(url) => Some(HttpUrl::resolve(url).await?),
            None => None,
        };
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let shared = Arc::new(Shared { channels: Mutex::default(), threads, forward, counts: Arc::default() });
        Ok(Floor { listener, shared })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener.local_addr().context("listening address")
    }

    /// Its counters (shared with the running server).
    pub fn counts(&self) -> Arc<Counts> {
        self.shared.counts.clone()
    }

    /// Serves until `stop` resolves.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) {
        let accept = async {
            loop {
                let Ok((stream, _)) = self.listener.accept().await else {
                    // Out of files or similar: wait a little rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &shared).await {
                        eprintln!("floor: connection failed: {e:#}");
                    }
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = stop => {}
        }
    }
}

/// An HTTP/1.1 message head, the little of it this server looks at. For a
/// response, `method` is the version and `target` the status code.
struct Head {
    method: String,
    target: String,
    websocket_key: Option<String>,
    content_length: Option<usize>,
    /// Bytes of the head, including the blank line.
    len: usize,
}

/// Parses a message head if `buf` holds a whole one.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        anyhow::ensure!(buf.len() < MAX_REQUEST, "message head too large");
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("message head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
    let mut head = Head {
        method: method.to_string(),
        target: target.to_string(),
        websocket_key: None,
        content_length: None,
        len: end + 4,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.websocket_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value.parse().context("bad content-length")?;
            anyhow::ensure!(length <= MAX_REQUEST, "body of {length} bytes is too large");
            head.content_length = Some(length);
        }
    }
    Ok(Some(head))
}

/// Reads from `stream` into `buf` until it holds a whole head and its body;
/// `None` if the peer closed first.
async fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Option<Head>> {
    let head = loop {
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    };
    while buf.len() < head.len + head.content_length.unwrap_or(0) {
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(head))
}

/// Serves one connection: a WebSocket handshake (then a subscriber or an
/// rpc client), or keep-alive publish calls.
async fn handle(mut stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(head) = read_message(&mut stream, &mut buf).await? else { return Ok(()) };
        let body_end = head.len + head.content_length.unwrap_or(0);
        if let Some(key) = &head.websocket_key {
            let channel = head.target.strip_prefix("/sub/").map(|c| c.trim_end_matches('/'));
            if channel.is_none() && shared.forward.is_none() {
                stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await?;
                return Ok(());
            }
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(answer.as_bytes()).await?;
            buf.drain(..body_end);
            return match (channel, &shared.forward) {
                (Some(channel), _) => fanout::subscribe(stream, channel, shared),
                (None, Some(forward)) => rpc::relay(stream, buf, forward, &shared.counts).await,
                (None, None) => Ok(()),
            };
        }
        let answer = match (head.method.as_str(), head.target.strip_prefix("/pub/")) {
            ("POST", Some(channel)) => {
                let body = &buf[head.len..body_end];
                let sent = tokio::task::block_in_place(|| fanout::publish(shared, channel, body));
                let text = format!("delivered {sent}\n");
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}", text.len())
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
        };
        stream.write_all(answer.as_bytes()).await?;
        buf.drain(..body_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_once_whole_and_bounded() {
        assert!(parse_head(b"GET /sub/a HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let head = parse_head(b"POST /pub/a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.target.as_str(), head.content_length, head.len),
            ("POST", "/pub/a", Some(5), 43)
        );
        let response = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap().unwrap();
        assert_eq!((response.target.as_str(), response.content_length), ("200", Some(2)));
        assert!(parse_head(b"POST /pub/a HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"POST /pub/a HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_REQUEST]).is_err(), "a head without end is refused once too long");
    }
}
