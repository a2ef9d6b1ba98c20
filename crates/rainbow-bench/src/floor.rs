//! `rainbow-bench floor`: the least work a fan-out server can do per
//! delivery, to read what this machine and this load generator allow.
//!
//! It speaks Nchan's shapes, so `fanout --target floor` drives it as it
//! drives nginx + Nchan:
//!
//! - `GET /sub/C` with a WebSocket upgrade: answered 101, and the socket
//!   joins channel C. Nothing is ever read from it again.
//! - `POST /pub/C`: the body is encoded once as a WebSocket text frame and
//!   written with one non-blocking `send(2)` per subscriber of C, the
//!   subscribers split between `--threads` OS threads (default: one per core).
//!   The answer (`200`, after the last write) says how many got it.
//!
//! No task, queue, wake-up or buffer per connection, no protocol, no hooks,
//! no limits: one system call per delivery is all that is left, and every
//! server pays at least that. A socket that cannot take the whole frame at
//! once (a full send buffer) or has failed is dropped and counted, never
//! retried, so the bench sees such a delivery as lost.
//!
//! This is a measuring instrument, not a server to deploy: the figures it
//! gives in `docs/PERFORMANCE.md` bound from below what any fan-out server
//! can reach here, Rainbow included.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use rainbow_protocol::websocket::{self, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head or publication body read, bytes.
const MAX_REQUEST: usize = 1 << 20;

/// What the floor server did, for its summary line.
#[derive(Debug, Default)]
pub struct Counts {
    subscribers: AtomicU64,
    publications: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl Counts {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "floor: {} subscribers, {} publications, {} frames written, {} subscribers dropped",
            l(&self.subscribers),
            l(&self.publications),
            l(&self.delivered),
            l(&self.dropped)
        )
    }
}

/// Subscribers by channel. Plain `std` sockets: they are written by the
/// publishing threads directly and never polled.
type Channels = Mutex<HashMap<String, Vec<std::net::TcpStream>>>;

/// A bound floor server, not yet serving.
pub struct Floor {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    channels: Channels,
    threads: usize,
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
    /// (0 = one per core).
    pub async fn bind(addr: SocketAddr, threads: usize) -> anyhow::Result<Floor> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let shared = Arc::new(Shared { channels: Mutex::default(), threads, counts: Arc::default() });
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

/// A request head, the little of it this server looks at.
struct Head {
    method: String,
    path: String,
    websocket_key: Option<String>,
    content_length: usize,
    /// Bytes of the head, including the blank line.
    len: usize,
}

/// Parses a request head if `buf` holds a whole one.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
    let text = std::str::from_utf8(&buf[..end]).context("request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
    let mut head = Head {
        method: method.to_string(),
        path: path.to_string(),
        websocket_key: None,
        content_length: 0,
        len: end + 4,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.websocket_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().context("bad content-length")?;
        }
    }
    Ok(Some(head))
}

/// Serves one connection: a subscriber's handshake (then hands the socket
/// over), or keep-alive publish calls.
async fn handle(mut stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head = loop {
            if let Some(head) = parse_head(&buf)? {
                break head;
            }
            anyhow::ensure!(buf.len() < MAX_REQUEST, "request head too large");
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let channel = |prefix: &str| head.path.strip_prefix(prefix).map(|c| c.trim_end_matches('/').to_string());
        if let (Some(key), Some(channel)) = (&head.websocket_key, channel("/sub/")) {
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(answer.as_bytes()).await?;
            let socket = stream.into_std()?;
            shared.channels().entry(channel).or_default().push(socket);
            shared.counts.subscribers.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        anyhow::ensure!(head.content_length <= MAX_REQUEST, "publication too large");
        while buf.len() < head.len + head.content_length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body = &buf[head.len..head.len + head.content_length];
        let answer = match (head.method.as_str(), channel("/pub/")) {
            ("POST", Some(channel)) => {
                let mut frame = Vec::with_capacity(body.len() + websocket::MAX_HEADER);
                websocket::encode(OpCode::Text, body, &mut frame);
                let sent = tokio::task::block_in_place(|| publish(shared, &channel, &frame));
                let text = format!("delivered {sent}\n");
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}", text.len())
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
        };
        stream.write_all(answer.as_bytes()).await?;
        buf.drain(..head.len + head.content_length);
    }
}

/// Writes `frame` to every subscriber of `channel` from `shared.threads`
/// threads; drops those that did not take it whole. Returns how many did.
fn publish(shared: &Shared, channel: &str, frame: &[u8]) -> u64 {
    let mut channels = shared.channels();
    let Some(subscribers) = channels.get_mut(channel) else { return 0 };
    let share = subscribers.len().div_ceil(shared.threads.max(1)).max(1);
    let failed: Vec<Vec<usize>> = std::thread::scope(|scope| {
        let writers: Vec<_> = subscribers
            .chunks(share)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for (i, mut socket) in part.iter().enumerate() {
                        if !matches!(socket.write(frame), Ok(k) if k == frame.len()) {
                            failed.push(n * share + i);
                        }
                    }
                    failed
                })
            })
            .collect();
        // A writer thread only calls `write`, which does not panic.
        writers.into_iter().map(|w| w.join().unwrap_or_default()).collect()
    });
    let failed: Vec<usize> = failed.into_iter().flatten().collect();
    let sent = (subscribers.len() - failed.len()) as u64;
    for &i in failed.iter().rev() {
        subscribers.swap_remove(i);
    }
    let counts = &shared.counts;
    counts.publications.fetch_add(1, Ordering::Relaxed);
    counts.delivered.fetch_add(sent, Ordering::Relaxed);
    counts.dropped.fetch_add(failed.len() as u64, Ordering::Relaxed);
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn heads_are_parsed_once_whole() {
        assert!(parse_head(b"GET /sub/a HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let head = parse_head(b"POST /pub/a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str(), head.content_length, head.len),
            ("POST", "/pub/a", 5, 43)
        );
        assert!(parse_head(b"POST /pub/a HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_subscriber_of_the_channel_gets_the_publication_as_a_text_frame() {
        let floor = Floor::bind("127.0.0.1:0".parse().unwrap(), 2).await.unwrap();
        let addr = floor.local_addr().unwrap();
        let counts = floor.counts();
        tokio::spawn(floor.serve(std::future::pending()));
        let mut subscribers = Vec::new();
        for _ in 0..5 {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/sub/room")).await.unwrap();
            subscribers.push(ws);
        }
        let (mut other, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/sub/elsewhere")).await.unwrap();
        let url = crate::http::HttpUrl::resolve(&format!("http://{addr}/pub/room")).await.unwrap();
        let mut publisher = crate::http::Client::new(url);
        let answer = publisher.post(&[], bytes::Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"delivered 5\n"[..]));
        for ws in &mut subscribers {
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("hello".into()));
        }
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(100), other.next()).await;
        assert!(nothing.is_err(), "another channel's subscriber got {nothing:?}");
        // A subscriber that went away is dropped at the next publication.
        drop(subscribers.pop());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for _ in 0..2 {
            publisher.post(&[], bytes::Bytes::from_static(b"again")).await.unwrap();
        }
        assert!(counts.summary().contains("1 subscribers dropped"), "{}", counts.summary());
    }
}
