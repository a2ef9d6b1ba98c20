//! One hostile connection: attempts of the plan's attacks, one after the
//! other, each until the gateway ends it or its attack time runs out.
//!
//! An attempt opens a TCP connection from its source address and then:
//!
//! - **silent**: reads, sending nothing;
//! - **slowloris**: trickles an endless request head ([`SlowHead`]) while reading;
//! - **stalled-body(-signed)**: writes a `POST /send/` head announcing
//!   `content_length` bytes, then trickles the body, never finishing it,
//!   while reading;
//! - **big-header**: handshakes, writes one frame header announcing
//!   `big_header_len` bytes, then reads;
//! - **dup-flood**, **rel-flood**, **ping-flood**: handshake, then write at
//!   the plan's rate and never read, so everything the gateway writes stays
//!   in the socket. When a write fails (the gateway closed, so its kernel
//!   resets the connection), what it had written is read back to find its
//!   close frame.
//!
//! Whatever the gateway writes goes through a [`Scanner`], which keeps only
//! an HTTP status or a close code. The attempt's [`Outcome`] and its
//! duration go to the process's [`HostileCounters`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::HostilePlan;
use super::wire::{self, Attack, Ending, Outcome, Scanner, SlowHead};
use crate::conn::{self, Failure, Target};
use crate::sign;
use crate::stats::HostileCounters;

/// Bytes read at a time.
const READ_CHUNK: usize = 2048;

/// How long a flood whose write failed reads back what the gateway wrote.
const DRAIN: Duration = Duration::from_secs(2);

/// The most a flood reads back, bytes.
const DRAIN_MAX: u64 = 64 << 20;

/// Pause after an attempt that could not even connect.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Where one hostile connection goes, and who it is.
#[derive(Debug)]
pub struct Origin {
    /// The gateway.
    pub target: Arc<Target>,
    /// The source address to bind.
    pub source: Option<IpAddr>,
    /// Device id of the WebSocket attacks.
    pub device_id: String,
    /// Longest a connect or WebSocket handshake may take.
    pub handshake_timeout: Duration,
    /// The connection's global number (decides its first attack).
    pub index: usize,
    /// When to start the first attempt (spreading the connections' cycles).
    pub start_after: Duration,
}

/// Runs attempts until the task is aborted (at the run's end).
pub async fn cycle(origin: Origin, plan: &HostilePlan, counters: &HostileCounters) {
    let attack_time = Duration::from_secs_f64(plan.attack_secs.max(0.001));
    let pause = Duration::from_secs_f64(plan.pause_secs.max(0.0));
    tokio::time::sleep(origin.start_after).await;
    let mut n = 0usize;
    loop {
        let attack = wire::attack_for(&plan.attacks, origin.index, n);
        counters.started(attack);
        let began = Instant::now();
        let outcome = Box::pin(attempt(attack, &origin, plan, n, began + attack_time, counters)).await;
        let after = began.elapsed();
        counters.ended(attack, &outcome, after);
        n = n.wrapping_add(1);
        let rest = match outcome {
            Outcome::ConnectFailed(_) | Outcome::HandshakeFailed(_) => pause.max(RETRY_PAUSE),
            _ => pause,
        };
        tokio::time::sleep(rest).await;
    }
}

/// A TCP connection from `source`.
async fn connect(target: &Target, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match target.addr() {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target.addr()).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One attempt of `attack`, until `deadline` at the latest.
async fn attempt(
    attack: Attack,
    origin: &Origin,
    plan: &HostilePlan,
    n: usize,
    deadline: Instant,
    counters: &HostileCounters,
) -> Outcome {
    let opened = tokio::time::timeout(origin.handshake_timeout, connect(&origin.target, origin.source)).await;
    let mut stream = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::ConnectFailed(e.kind().to_string()),
        Err(_) => return Outcome::ConnectFailed("timeout".to_string()),
    };
    let mask = wire::mask_for(origin.index, n);
    let host = origin.target.host();
    match attack {
        Attack::Silent => {
            let mut scanner = Scanner::http();
            let ending = trickle(&mut stream, &mut scanner, deadline, Trickle::Nothing, attack, counters).await;
            Outcome::of(&scanner, &ending)
        }
        Attack::Slowloris => {
            let mut scanner = Scanner::http();
            let head = SlowHead::new(host, origin.target.path(), &origin.device_id);
            let every = plan.slowloris_every_secs;
            let rate = if every > 0.0 { 1.0 / every } else { 1.0 };
            let source = Trickle::Head { head, rate };
            let ending = trickle(&mut stream, &mut scanner, deadline, source, attack, counters).await;
            Outcome::of(&scanner, &ending)
        }
        Attack::StalledBody | Attack::StalledBodySigned => {
            let signed = (attack == Attack::StalledBodySigned).then(|| sign::query(&plan.token, &sign::Nonces::new()));
            let head = wire::stalled_body_head(host, &plan.channel, plan.content_length, signed.as_deref());
            let mut scanner = Scanner::http();
            if let Err(ending) = write_counted(&mut stream, &head, deadline, attack, counters).await {
                return Outcome::of(&scanner, &ending);
            }
            let source = Trickle::Body { rate: plan.body_rate, left: plan.content_length.saturating_sub(1) };
            let ending = trickle(&mut stream, &mut scanner, deadline, source, attack, counters).await;
            Outcome::of(&scanner, &ending)
        }
        Attack::BigHeader | Attack::DupFlood | Attack::RelFlood | Attack::PingFlood => {
            let handshake = tokio::time::timeout_at(
                deadline.min(Instant::now() + origin.handshake_timeout).into(),
                conn::upgrade(&mut stream, &origin.target, &origin.device_id),
            )
            .await;
            let tail = match handshake {
                Ok(Ok(tail)) => tail,
                Ok(Err(failure)) => return refused(failure),
                Err(_) => return Outcome::HandshakeFailed("timeout".to_string()),
            };
            let mut scanner = Scanner::frames();
            scanner.feed(&tail);
            let ending = match attack {
                Attack::BigHeader => {
                    let header = wire::big_header(plan.big_header_len, mask);
                    match write_counted(&mut stream, &header, deadline, attack, counters).await {
                        Ok(()) => {
                            trickle(&mut stream, &mut scanner, deadline, Trickle::Nothing, attack, counters).await
                        }
                        Err(ending) => ending,
                    }
                }
                Attack::DupFlood => {
                    let (first, dup) = wire::dup_frames(plan.message_type, 1, plan.dup_payload, mask);
                    match write_counted(&mut stream, &first, deadline, attack, counters).await {
                        Ok(()) => {
                            flood(&mut stream, deadline, plan.dup_rate, Frames::Same(dup), attack, counters).await
                        }
                        Err(ending) => ending,
                    }
                }
                Attack::RelFlood => {
                    let frames = Frames::Rel { next: 0, mask };
                    flood(&mut stream, deadline, plan.rel_rate, frames, attack, counters).await
                }
                _ => {
                    flood(&mut stream, deadline, plan.ping_rate, Frames::Same(wire::ping_frame(mask)), attack, counters)
                        .await
                }
            };
            if matches!(ending, Ending::Failed(_)) && attack.stops_reading() {
                drain(&mut stream, &mut scanner).await;
            }
            Outcome::of(&scanner, &ending)
        }
    }
}

/// The outcome of a WebSocket handshake that failed.
fn refused(failure: Failure) -> Outcome {
    match failure {
        Failure::Http(status) => Outcome::Http(status),
        Failure::Io(e) => match e.kind() {
            io::ErrorKind::UnexpectedEof => Outcome::Eof,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                Outcome::Reset
            }
            kind => Outcome::HandshakeFailed(kind.to_string()),
        },
        other => Outcome::HandshakeFailed(other.label().trim_start_matches("handshake: ").to_string()),
    }
}

/// Writes `bytes` (one frame or write) before `deadline` and counts it once
/// written; otherwise says how the attempt ended.
async fn write_counted(
    stream: &mut TcpStream,
    bytes: &[u8],
    deadline: Instant,
    attack: Attack,
    counters: &HostileCounters,
) -> Result<(), Ending> {
    match tokio::time::timeout_at(deadline.into(), stream.write_all(bytes)).await {
        Ok(Ok(())) => {
            counters.sent(attack, 1, bytes.len() as u64);
            Ok(())
        }
        Ok(Err(e)) => Err(Ending::Failed(e.kind())),
        Err(_) => Err(Ending::Deadline { blocked: true }),
    }
}

/// What a reading attack writes, slowly.
enum Trickle {
    /// Nothing.
    Nothing,
    /// An endless request head, at `rate` bytes per second.
    Head { head: SlowHead, rate: f64 },
    /// Body bytes at `rate` per second, `left` at most.
    Body { rate: f64, left: u64 },
}

impl Trickle {
    fn rate(&self) -> f64 {
        match self {
            Trickle::Nothing => 0.0,
            Trickle::Head { rate, .. } | Trickle::Body { rate, .. } => *rate,
        }
    }

    /// Appends up to `n` bytes to `out`.
    fn take(&mut self, n: u64, out: &mut Vec<u8>) {
        match self {
            Trickle::Nothing => {}
            Trickle::Head { head, .. } => out.extend(head.by_ref().take(usize::try_from(n).unwrap_or(usize::MAX))),
            Trickle::Body { left, .. } => {
                let k = n.min(*left);
                *left -= k;
                out.resize(out.len() + usize::try_from(k).unwrap_or(0), b'x');
            }
        }
    }
}

/// Reads what the gateway writes while trickling `source`, until the
/// gateway answers or ends the connection, or `deadline`.
async fn trickle(
    stream: &mut TcpStream,
    scanner: &mut Scanner,
    deadline: Instant,
    mut source: Trickle,
    attack: Attack,
    counters: &HostileCounters,
) -> Ending {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    let rate = source.rate();
    let (tick, batch) = (wire::tick(rate), wire::max_batch(rate));
    let start = Instant::now();
    let mut credited = 0u64;
    let mut wake = if rate > 0.0 { start } else { deadline };
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) => return Ending::Eof,
                Ok(n) => {
                    scanner.feed(&buf[..n]);
                    if scanner.decided() {
                        return Ending::Answered;
                    }
                }
                Err(e) => return Ending::Failed(e.kind()),
            },
            _ = tokio::time::sleep_until(wake.min(deadline).into()) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ending::Deadline { blocked: false };
                }
                let (k, c) = wire::pace(rate, now - start, credited, batch);
                credited = c;
                out.clear();
                source.take(k, &mut out);
                if !out.is_empty() {
                    match tokio::time::timeout_at(deadline.into(), stream.write_all(&out)).await {
                        Ok(Ok(())) => counters.sent(attack, 1, out.len() as u64),
                        Ok(Err(e)) => return Ending::Failed(e.kind()),
                        Err(_) => return Ending::Deadline { blocked: true },
                    }
                }
                wake = now + tick;
            }
        }
    }
}

/// The frames of a flood.
enum Frames {
    /// The same frame every time (a dup SEND, a ping).
    Same(Vec<u8>),
    /// REL frames for ids 1, 2, ... (wrapping), never used by a SEND.
    Rel { next: u16, mask: [u8; 4] },
}

/// Writes frames at `rate` per second without ever reading, until a write
/// fails or `deadline` (a write still blocked then makes it `blocked`).
async fn flood(
    stream: &mut TcpStream,
    deadline: Instant,
    rate: f64,
    mut frames: Frames,
    attack: Attack,
    counters: &HostileCounters,
) -> Ending {
    let (tick, batch) = (wire::tick(rate), wire::max_batch(rate));
    let start = Instant::now();
    let mut credited = 0u64;
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ending::Deadline { blocked: false };
        }
        let (k, c) = wire::pace(rate, now - start, credited, batch);
        credited = c;
        if k > 0 {
            let written = tokio::time::timeout_at(deadline.into(), async {
                match &mut frames {
                    Frames::Same(frame) => {
                        for _ in 0..k {
                            stream.write_all(frame).await?;
                            counters.sent(attack, 1, frame.len() as u64);
                        }
                    }
                    Frames::Rel { next, mask } => {
                        out.clear();
                        for _ in 0..k {
                            *next = crate::clients::next_id(*next);
                            wire::push_rel(*next, *mask, &mut out);
                        }
                        stream.write_all(&out).await?;
                        counters.sent(attack, k, out.len() as u64);
                    }
                }
                io::Result::Ok(())
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Ending::Failed(e.kind()),
                Err(_) => return Ending::Deadline { blocked: true },
            }
        }
        tokio::time::sleep_until((now + tick).min(deadline).into()).await;
    }
}

/// Reads back what the gateway wrote to a flood that stopped reading, for
/// its close frame: until end of file, an error, a close frame, [`DRAIN`]
/// or [`DRAIN_MAX`] bytes.
async fn drain(stream: &mut TcpStream, scanner: &mut Scanner) {
    let mut buf = vec![0u8; 64 * 1024];
    let until = Instant::now() + DRAIN;
    let mut read = 0u64;
    while read < DRAIN_MAX && scanner.close.is_none() {
        match tokio::time::timeout_at(until.into(), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                scanner.feed(&buf[..n]);
                read += n as u64;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rainbow_protocol::websocket;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    fn plan(attack: Attack) -> HostilePlan {
        HostilePlan { attacks: vec![attack], attack_secs: 2.0, ..HostilePlan::default() }
    }

    /// A server that answers the first request head (or, with `upgrade`, a
    /// WebSocket handshake) by `then`.
    async fn server(upgrade: bool, then: &'static [u8]) -> (Arc<Target>, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let url = format!("ws://{}/connect/", listener.local_addr().expect("addr"));
        let handle = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accepts");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("reads");
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if upgrade {
                let text = String::from_utf8_lossy(&got).to_string();
                let key =
                    text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).expect("a key").trim().to_string();
                let accept = derive_accept_key(key.as_bytes());
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await.expect("writes");
                // Read some of the flood, then close as the gateway would.
                let n = s.read(&mut buf).await.expect("reads");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(then).await.expect("writes");
            s.shutdown().await.expect("shuts down");
            got
        });
        (Arc::new(Target::resolve(&url).await.expect("resolves")), handle)
    }

    fn origin(target: Arc<Target>) -> Origin {
        Origin {
            target,
            source: None,
            device_id: "d-1".into(),
            handshake_timeout: Duration::from_secs(2),
            index: 0,
            start_after: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn an_http_answer_ends_an_http_attack() {
        let (target, server) = server(false, b"HTTP/1.1 408 Request Timeout\r\n\r\n").await;
        let counters = HostileCounters::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let p = plan(Attack::StalledBodySigned);
        let outcome = attempt(Attack::StalledBodySigned, &origin(target), &p, 0, deadline, &counters).await;
        assert_eq!(outcome, Outcome::Http(408));
        let head = String::from_utf8(server.await.expect("server")).expect("ASCII");
        assert!(head.starts_with("POST /send/?channel=hostile&msgtype=1&qos=0&timestamp="), "{head}");
        assert!(head.contains("Content-Length: 1000000\r\n"), "{head}");
        assert!(Instant::now() < deadline);
    }

    #[tokio::test]
    async fn a_flood_finds_the_close_code_after_the_connection_ends() {
        let mut close = Vec::new();
        websocket::encode_close(1008, "slow consumer", &mut close);
        let close: &'static [u8] = close.leak();
        let (target, server) = server(true, close).await;
        let counters = HostileCounters::default();
        let p = plan(Attack::RelFlood);
        let deadline = Instant::now() + Duration::from_secs(10);
        let outcome = attempt(Attack::RelFlood, &origin(target), &p, 0, deadline, &counters).await;
        assert_eq!(outcome, Outcome::Closed(Some(1008)));
        let got = server.await.expect("server");
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("X-DEVICEID: d-1"), "{text}");
        assert!(counters.counts()["rel-flood"].frames > 0);
    }

    #[tokio::test]
    async fn a_silent_connection_stays_open_until_its_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let url = format!("ws://{}/connect/", listener.local_addr().expect("addr"));
        let target = Arc::new(Target::resolve(&url).await.expect("resolves"));
        let counters = HostileCounters::default();
        let p = plan(Attack::Silent);
        let outcome =
            attempt(Attack::Silent, &origin(target), &p, 0, Instant::now() + Duration::from_millis(300), &counters)
                .await;
        assert_eq!(outcome, Outcome::Open { blocked: false });
        drop(listener);
    }
}
