//! The hostile clients' bytes and what they read back, without IO: the
//! attacks and their order, the requests and frames they send, the pacing
//! of floods, the scanner that finds an HTTP status or a WebSocket close
//! code in what the gateway wrote, and how an attempt's end is labelled.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use rainbow_protocol::websocket::{self, OpCode};
use rainbow_protocol::{Packet, Qos, SendPacket};
use serde::{Deserialize, Serialize};

use crate::conn::{BENCH_OS, CLIENT_OS, DEVICE_ID};

/// One kind of hostile client (docs/PERFORMANCE.md, "Hostile clients").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// TCP connect, then send nothing.
    Silent,
    /// An HTTP request head to `/connect/`, one byte per interval, never finished.
    Slowloris,
    /// An unsigned `POST /send/` announcing a large body that is sent slowly
    /// and never finished.
    StalledBody,
    /// The same, signed (docs/protocol.md §7) with the gateway's token.
    StalledBodySigned,
    /// A WebSocket client that sends one qos-2 SEND with a large payload,
    /// stops reading, and sends that same SEND again with dup = 1 at a rate.
    DupFlood,
    /// A WebSocket client that stops reading and sends REL packets for ids
    /// it never used, at a rate.
    RelFlood,
    /// A WebSocket client that stops reading and sends pings with 125-byte
    /// payloads, at a rate.
    PingFlood,
    /// A WebSocket client that sends a frame header announcing a large
    /// payload, then nothing.
    BigHeader,
}

impl Attack {
    /// Every attack, in the default order.
    pub const ALL: [Attack; 8] = [
        Attack::Silent,
        Attack::Slowloris,
        Attack::StalledBody,
        Attack::StalledBodySigned,
        Attack::DupFlood,
        Attack::RelFlood,
        Attack::PingFlood,
        Attack::BigHeader,
    ];

    /// How many attacks there are.
    pub const COUNT: usize = Attack::ALL.len();

    /// The attack's name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Silent => "silent",
            Attack::Slowloris => "slowloris",
            Attack::StalledBody => "stalled-body",
            Attack::StalledBodySigned => "stalled-body-signed",
            Attack::DupFlood => "dup-flood",
            Attack::RelFlood => "rel-flood",
            Attack::PingFlood => "ping-flood",
            Attack::BigHeader => "big-header",
        }
    }

    /// Its position in [`Attack::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether it completes a WebSocket handshake before attacking.
    pub fn websocket(self) -> bool {
        matches!(self, Attack::DupFlood | Attack::RelFlood | Attack::PingFlood | Attack::BigHeader)
    }

    /// Whether it leaves its socket's receive side unread (so the gateway's
    /// output to it backs up); the others read what the gateway writes.
    pub fn stops_reading(self) -> bool {
        matches!(self, Attack::DupFlood | Attack::RelFlood | Attack::PingFlood)
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Attack {
    type Err = String;

    fn from_str(s: &str) -> Result<Attack, String> {
        let s = s.trim();
        Attack::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
            format!("unknown attack {s:?}; the attacks are {} (or all)", names.join(", "))
        })
    }
}

/// Parses `--attacks`: `all`, or a comma-separated list of attack names
/// (the order is kept; a name may repeat to weigh it more).
pub fn parse_attacks(s: &str) -> Result<Vec<Attack>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item.eq_ignore_ascii_case("all") {
            out.extend(Attack::ALL);
        } else {
            out.push(item.parse()?);
        }
    }
    if out.is_empty() {
        return Err("name at least one attack (or all)".to_string());
    }
    Ok(out)
}

/// The attack hostile connection `index` runs on its `cycle`-th attempt:
/// connections start at different places in the list, so every attack runs
/// on about the same number of connections at any moment.
pub fn attack_for(attacks: &[Attack], index: usize, cycle: usize) -> Attack {
    if attacks.is_empty() {
        return Attack::Silent;
    }
    attacks[(index % attacks.len() + cycle % attacks.len()) % attacks.len()]
}

/// A masking key for connection `index`'s `cycle`-th attempt (RFC 6455 asks
/// for unpredictable keys; the gateway cannot tell, and the bench reuses a
/// masked frame many times, so any varied key does).
pub fn mask_for(index: usize, cycle: usize) -> [u8; 4] {
    let x = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (cycle as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let bytes = (x >> 16).to_be_bytes();
    [bytes[4], bytes[5], bytes[6], bytes[7]]
}

/// The slowloris request: a WebSocket upgrade to `path` whose head never
/// ends. After the real headers come `X-Slow-N: N` lines without end, so
/// the blank line that would finish the head never comes.
#[derive(Clone, Debug)]
pub struct SlowHead {
    prefix: Vec<u8>,
    sent: usize,
    line: Vec<u8>,
    line_at: usize,
    lines: u64,
}

impl SlowHead {
    /// The head of a `GET path` upgrade to `host` from device `device_id`.
    pub fn new(host: &str, path: &str, device_id: &str) -> SlowHead {
        let prefix = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2xvd2xvcmlzLXNsb3dsb3I=\r\n\
             {DEVICE_ID}: {device_id}\r\n{CLIENT_OS}: {BENCH_OS}\r\n"
        );
        SlowHead { prefix: prefix.into_bytes(), sent: 0, line: Vec::new(), line_at: 0, lines: 0 }
    }
}

impl Iterator for SlowHead {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if let Some(&b) = self.prefix.get(self.sent) {
            self.sent += 1;
            return Some(b);
        }
        if self.line_at >= self.line.len() {
            self.lines += 1;
            self.line = format!("X-Slow-{n}: {n}\r\n", n = self.lines).into_bytes();
            self.line_at = 0;
        }
        let b = self.line[self.line_at];
        self.line_at += 1;
        Some(b)
    }
}

/// The head of the stalled-body attack: a `POST /send/` to a channel
/// announcing `content_length` bytes of body; `signed` is the
/// `timestamp=..&nonce=..&signature=..` query of the signed variant.
pub fn stalled_body_head(host: &str, channel: &str, content_length: u64, signed: Option<&str>) -> Vec<u8> {
    let signed = signed.map(|q| format!("&{q}")).unwrap_or_default();
    format!(
        "POST /send/?channel={channel}&msgtype=1&qos=0{signed} HTTP/1.1\r\nHost: {host}\r\n\
         Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

/// A masked client frame (FIN set) carrying `payload`.
pub fn client_frame(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + websocket::MAX_HEADER);
    websocket::encode_masked(true, opcode, payload, mask, &mut out);
    out
}

/// The qos-2 SEND of the dup-flood (id, type, a `payload_size`-byte JSON
/// payload), as a masked binary frame: the original (dup = 0) and its
/// retransmission (the same packet with dup = 1, docs/protocol.md §2.5).
pub fn dup_frames(message_type: u16, id: u16, payload_size: usize, mask: [u8; 4]) -> (Vec<u8>, Vec<u8>) {
    let payload = filler_json(payload_size);
    let packet = |dup| {
        Packet::Send(SendPacket { message_type, qos: Qos::ExactlyOnce, id, dup, payload: payload.clone() }).encode()
    };
    (client_frame(OpCode::Binary, &packet(false), mask), client_frame(OpCode::Binary, &packet(true), mask))
}

/// JSON text of exactly `size` bytes (at least 10): `{"x":"xx…"}`.
pub fn filler_json(size: usize) -> Bytes {
    let fill = size.max(10) - 8;
    Bytes::from(format!("{{\"x\":\"{}\"}}", "x".repeat(fill)))
}

/// Appends a masked REL frame for `id` (a 3-byte packet in a 9-byte frame).
pub fn push_rel(id: u16, mask: [u8; 4], out: &mut Vec<u8>) {
    websocket::encode_masked(true, OpCode::Binary, &Packet::Rel(id).encode(), mask, out);
}

/// A masked ping with the largest payload a control frame may carry (125 bytes).
pub fn ping_frame(mask: [u8; 4]) -> Vec<u8> {
    client_frame(OpCode::Ping, &[b'p'; websocket::MAX_CONTROL_PAYLOAD], mask)
}

/// The header alone of a masked binary frame announcing `len` payload bytes
/// (14 bytes when `len` needs the 64-bit length).
pub fn big_header(len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0x80 | OpCode::Binary as u8];
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out
}

/// Pacing of a flood or a trickle at `rate` units (frames, bytes) per
/// second: `elapsed` into it, with `credited` units accounted for so far,
/// returns how many to send now and the new `credited`. At most
/// `max_batch` go at once; slots beyond that (a sender that fell behind
/// because its socket was full) are dropped, not caught up in a burst.
pub fn pace(rate: f64, elapsed: Duration, credited: u64, max_batch: u64) -> (u64, u64) {
    if !(rate.is_finite() && rate > 0.0) {
        return (0, credited);
    }
    let target = (rate * elapsed.as_secs_f64()).floor();
    let target = if target >= u64::MAX as f64 { u64::MAX } else { target as u64 };
    let due = target.saturating_sub(credited);
    (due.min(max_batch), credited.max(target))
}

/// The interval between a pacer's wake-ups at `rate` per second: one unit's
/// time, at least 10 ms (so fast floods send in batches) and at most 1 s.
pub fn tick(rate: f64) -> Duration {
    if !(rate.is_finite() && rate > 0.0) {
        return Duration::from_secs(1);
    }
    Duration::from_secs_f64((1.0 / rate).clamp(0.01, 1.0))
}

/// The most units one wake-up sends at `rate`: two ticks' worth, at least one.
pub fn max_batch(rate: f64) -> u64 {
    let per_tick = (rate * tick(rate).as_secs_f64() - 1e-9).ceil();
    if per_tick.is_finite() && per_tick >= 1.0 { (per_tick as u64).saturating_mul(2) } else { 1 }
}

/// What the gateway wrote so far, as far as it tells how it ended the
/// attempt: an HTTP status line (before any upgrade) or a WebSocket close
/// frame. Frames are skipped without being kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanner {
    state: ScanState,
    /// The HTTP status of the response, once its status line arrived.
    pub status: Option<u16>,
    /// A close frame arrived, with its code if it had one.
    pub close: Option<Option<u16>>,
    /// Frames seen (after the upgrade).
    pub frames: u64,
    /// Pings among them.
    pub pings: u64,
    /// Bytes seen in all.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ScanState {
    /// Reading an HTTP status line (at most this many bytes are kept).
    StatusLine(Vec<u8>),
    /// Past the status line: the rest of the HTTP answer is not read.
    HttpDone,
    /// Reading a frame header (the bytes so far).
    Header(Vec<u8>),
    /// Inside a frame's payload: `left` bytes to go; `code` collects the
    /// first two bytes of a close frame's payload.
    Payload { left: u64, close: bool, code: Vec<u8> },
}

/// Longest HTTP status line kept.
const MAX_STATUS_LINE: usize = 256;

impl Scanner {
    /// A scanner of an HTTP answer (the plain HTTP attacks).
    pub fn http() -> Scanner {
        Scanner::with(ScanState::StatusLine(Vec::new()))
    }

    /// A scanner of WebSocket frames from the server (after the 101).
    pub fn frames() -> Scanner {
        Scanner::with(ScanState::Header(Vec::new()))
    }

    fn with(state: ScanState) -> Scanner {
        Scanner { state, status: None, close: None, frames: 0, pings: 0, bytes: 0 }
    }

    /// Whether what arrived decides the outcome (a status or a close frame).
    pub fn decided(&self) -> bool {
        self.status.is_some() || self.close.is_some()
    }

    /// Takes the next bytes the gateway wrote.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        while !bytes.is_empty() {
            match &mut self.state {
                ScanState::HttpDone => return,
                ScanState::StatusLine(line) => {
                    let end = bytes.iter().position(|&b| b == b'\n');
                    let take = end.map_or(bytes.len(), |e| e + 1);
                    let room = MAX_STATUS_LINE.saturating_sub(line.len());
                    line.extend_from_slice(&bytes[..take.min(room)]);
                    bytes = &bytes[take..];
                    if end.is_some() || line.len() >= MAX_STATUS_LINE {
                        self.status = parse_status_line(line);
                        self.state = ScanState::HttpDone;
                    }
                }
                ScanState::Header(head) => {
                    let need = header_len(head).unwrap_or(2);
                    let take = (need - head.len()).min(bytes.len());
                    head.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let need = header_len(head).unwrap_or(2);
                    if head.len() < need {
                        continue;
                    }
                    let opcode = head[0] & 0x0F;
                    let len = match head[1] & 0x7F {
                        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
                        127 => {
                            u64::from_be_bytes([head[2], head[3], head[4], head[5], head[6], head[7], head[8], head[9]])
                        }
                        n => u64::from(n),
                    };
                    self.frames += 1;
                    if opcode == OpCode::Ping as u8 {
                        self.pings += 1;
                    }
                    let close = opcode == OpCode::Close as u8;
                    if close && len == 0 {
                        self.close.get_or_insert(None);
                    }
                    self.state = if len == 0 {
                        ScanState::Header(Vec::new())
                    } else {
                        ScanState::Payload { left: len, close, code: Vec::new() }
                    };
                }
                ScanState::Payload { left, close, code } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len());
                    if *close && code.len() < 2 {
                        let n = (2 - code.len()).min(take);
                        code.extend_from_slice(&bytes[..n]);
                        if code.len() == 2 || (n == take && *left == take as u64) {
                            let value = (code.len() == 2).then(|| u16::from_be_bytes([code[0], code[1]]));
                            self.close.get_or_insert(value);
                        }
                    }
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.state = ScanState::Header(Vec::new());
                    }
                }
            }
        }
    }
}

/// The length of a server frame header whose first bytes are `head`
/// (`None` until its second byte is there).
fn header_len(head: &[u8]) -> Option<usize> {
    let b1 = *head.get(1)?;
    let extended = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    // A server's frames are unmasked; a masked one carries 4 more bytes.
    Some(2 + extended + if b1 & 0x80 != 0 { 4 } else { 0 })
}

/// The status code of an `HTTP/1.x NNN ...` line.
pub fn parse_status_line(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// How an attempt's connection ended, as seen on the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The attack time ran out with the connection still open; `blocked`
    /// when a write was waiting for room in the socket (the gateway had
    /// stopped reading it).
    Deadline {
        /// A write was blocked.
        blocked: bool,
    },
    /// The gateway closed its side (end of file).
    Eof,
    /// A read or write failed with this error kind (reset, broken pipe, ...).
    Failed(std::io::ErrorKind),
    /// A status line or a close frame arrived (see the scanner).
    Answered,
}

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still open when its attack time ran out (closed by the bench).
    Open {
        /// A write was blocked at the end: the gateway no longer read it.
        blocked: bool,
    },
    /// The gateway sent a WebSocket close frame, with this code if any.
    Closed(Option<u16>),
    /// The gateway answered with this HTTP status (the plain HTTP attacks,
    /// or a refused WebSocket handshake).
    Http(u16),
    /// The gateway closed the connection without a close frame or status.
    Eof,
    /// The connection was reset (or a write found it gone).
    Reset,
    /// Another socket error.
    Error(std::io::ErrorKind),
    /// The TCP connect failed (not the gateway ending an attack).
    ConnectFailed(String),
    /// The WebSocket handshake failed other than by an HTTP status.
    HandshakeFailed(String),
}

impl Outcome {
    /// From what the scanner saw and how the socket ended: a close frame or
    /// a status wins over how the bytes stopped.
    pub fn of(scanner: &Scanner, ending: &Ending) -> Outcome {
        if let Some(code) = scanner.close {
            return Outcome::Closed(code);
        }
        if let Some(status) = scanner.status {
            return Outcome::Http(status);
        }
        match ending {
            Ending::Deadline { blocked } => Outcome::Open { blocked: *blocked },
            Ending::Eof | Ending::Answered => Outcome::Eof,
            Ending::Failed(kind) => match kind {
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted => Outcome::Reset,
                other => Outcome::Error(*other),
            },
        }
    }

    /// Whether the gateway ended the attempt (rather than the attack time
    /// running out, or the attack never starting).
    pub fn by_gateway(&self) -> bool {
        matches!(self, Outcome::Closed(_) | Outcome::Http(_) | Outcome::Eof | Outcome::Reset | Outcome::Error(_))
    }

    /// A short label to count outcomes by.
    pub fn label(&self) -> String {
        match self {
            Outcome::Open { blocked: false } => "open".to_string(),
            Outcome::Open { blocked: true } => "open, writes blocked".to_string(),
            Outcome::Closed(Some(code)) => format!("closed {code}"),
            Outcome::Closed(None) => "closed".to_string(),
            Outcome::Http(status) => format!("http {status}"),
            Outcome::Eof => "eof".to_string(),
            Outcome::Reset => "reset".to_string(),
            Outcome::Error(kind) => format!("error: {kind}"),
            Outcome::ConnectFailed(why) => format!("connect: {why}"),
            Outcome::HandshakeFailed(why) => format!("handshake: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn attack_names_round_trip() {
        for a in Attack::ALL {
            assert_eq!(a.name().parse::<Attack>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
            assert_eq!(Attack::ALL[a.index()], a);
            let json = serde_json::to_string(&a).expect("serializes");
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<Attack>(&json).expect("parses"), a);
        }
        assert!("flood".parse::<Attack>().unwrap_err().contains("rel-flood"));
    }

    #[test]
    fn attack_lists() {
        assert_eq!(parse_attacks("all"), Ok(Attack::ALL.to_vec()));
        assert_eq!(parse_attacks("rel-flood, silent"), Ok(vec![Attack::RelFlood, Attack::Silent]));
        assert_eq!(parse_attacks("silent,silent").map(|v| v.len()), Ok(2));
        assert!(parse_attacks("").is_err());
        assert!(parse_attacks("silent,nope").is_err());
    }

    #[test]
    fn connections_cycle_from_different_starts() {
        let list = [Attack::Silent, Attack::RelFlood, Attack::BigHeader];
        let firsts: Vec<Attack> = (0..3).map(|i| attack_for(&list, i, 0)).collect();
        assert_eq!(firsts, list);
        let cycle: Vec<Attack> = (0..4).map(|c| attack_for(&list, 1, c)).collect();
        assert_eq!(cycle, [Attack::RelFlood, Attack::BigHeader, Attack::Silent, Attack::RelFlood]);
        assert_eq!(attack_for(&list, usize::MAX, usize::MAX), attack_for(&list, usize::MAX % 3, usize::MAX % 3));
        assert_eq!(attack_for(&[], 5, 5), Attack::Silent);
        // Which attacks stop reading, which handshake first.
        assert!(Attack::DupFlood.stops_reading() && Attack::DupFlood.websocket());
        assert!(!Attack::BigHeader.stops_reading() && Attack::BigHeader.websocket());
        assert!(!Attack::Slowloris.stops_reading() && !Attack::Slowloris.websocket());
    }

    #[test]
    fn slowloris_head_never_ends() {
        let head: Vec<u8> = SlowHead::new("127.0.0.1:1984", "/connect/", "d-1").take(4000).collect();
        let text = String::from_utf8(head).expect("ASCII");
        assert!(text.starts_with("GET /connect/ HTTP/1.1\r\nHost: 127.0.0.1:1984\r\n"), "{text}");
        assert!(text.contains("X-DEVICEID: d-1\r\n"));
        assert!(text.contains("X-Slow-1: 1\r\nX-Slow-2: 2\r\n"));
        assert!(!text.contains("\r\n\r\n"), "the head must never finish");
    }

    #[test]
    fn stalled_body_heads() {
        let plain = String::from_utf8(stalled_body_head("h:1", "c", 1_000_000, None)).expect("ASCII");
        assert_eq!(
            plain,
            "POST /send/?channel=c&msgtype=1&qos=0 HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n\
             Content-Length: 1000000\r\n\r\n"
        );
        let signed = String::from_utf8(stalled_body_head("h:1", "c", 5, Some("timestamp=1&nonce=2&signature=ab")))
            .expect("ASCII");
        assert!(signed.starts_with("POST /send/?channel=c&msgtype=1&qos=0&timestamp=1&nonce=2&signature=ab HTTP/1.1"));
        assert!(signed.ends_with("Content-Length: 5\r\n\r\n"));
    }

    /// Decodes a client frame the way the gateway does.
    fn decode(frame: &[u8]) -> (OpCode, Vec<u8>) {
        let mut buf = frame.to_vec();
        let mut decoder = websocket::Decoder::new(1 << 20);
        match decoder.decode(&mut buf).expect("valid frame") {
            websocket::Decoded::Frame { consumed, message: Some(m) } => {
                assert_eq!(consumed, frame.len());
                match m {
                    websocket::Message::Data { text: false, payload } => (OpCode::Binary, payload.to_vec()),
                    websocket::Message::Ping(payload) => (OpCode::Ping, payload.to_vec()),
                    other => panic!("unexpected message {other:?}"),
                }
            }
            other => panic!("not one whole message: {other:?}"),
        }
    }

    #[test]
    fn dup_frames_are_the_same_send_with_dup_set() {
        let mask = mask_for(3, 1);
        let (first, dup) = dup_frames(7, 1, 131_072, mask);
        assert_eq!(first.len(), dup.len());
        let (op, a) = decode(&first);
        let (_, b) = decode(&dup);
        assert_eq!(op, OpCode::Binary);
        let (Packet::Send(a), Packet::Send(b)) =
            (Packet::decode(Bytes::from(a)).expect("packet"), Packet::decode(Bytes::from(b)).expect("packet"))
        else {
            panic!("not SENDs")
        };
        assert_eq!((a.qos, a.id, a.message_type, a.dup), (Qos::ExactlyOnce, 1, 7, false));
        assert!(b.dup);
        assert_eq!(SendPacket { dup: false, ..b }, a);
        assert_eq!(a.payload.len(), 131_072);
        assert!(serde_json::from_slice::<serde_json::Value>(&a.payload).is_ok());
    }

    #[test]
    fn rel_ping_and_big_header_frames() {
        let mask = [1, 2, 3, 4];
        let mut out = Vec::new();
        push_rel(9, mask, &mut out);
        assert_eq!(out.len(), 9);
        let (op, p) = decode(&out);
        assert_eq!((op, Packet::decode(Bytes::from(p)).expect("packet")), (OpCode::Binary, Packet::Rel(9)));
        let ping = ping_frame(mask);
        let (op, p) = decode(&ping);
        assert_eq!((op, p.len()), (OpCode::Ping, 125));
        let header = big_header(1 << 20, mask);
        assert_eq!(header.len(), 14);
        let parsed = websocket::FrameHeader::parse(&header).expect("valid").expect("whole");
        assert_eq!((parsed.len, parsed.opcode, parsed.fin, parsed.mask), (1 << 20, OpCode::Binary, true, mask));
        assert_eq!(big_header(200, mask).len(), 8);
        assert_eq!(big_header(5, mask).len(), 6);
    }

    #[test]
    fn pacing_keeps_the_rate_and_never_bursts() {
        let ms = Duration::from_millis;
        assert_eq!(pace(500.0, ms(10), 0, 100), (5, 5));
        assert_eq!(pace(500.0, ms(10), 5, 100), (0, 5));
        // Fallen behind: at most a batch, and the missed slots are dropped.
        assert_eq!(pace(500.0, ms(1000), 5, 10), (10, 500));
        assert_eq!(pace(500.0, ms(1010), 500, 10), (5, 505));
        assert_eq!(pace(1.0, ms(2500), 1, 100), (1, 2));
        assert_eq!(pace(0.0, ms(2500), 3, 100), (0, 3));
        assert_eq!(pace(f64::NAN, ms(2500), 0, 100), (0, 0));
        assert_eq!(pace(1e300, ms(2500), 0, 7).0, 7);
        assert_eq!(tick(5000.0), ms(10));
        assert_eq!(tick(10.0), ms(100));
        assert_eq!(tick(0.2), Duration::from_secs(1));
        assert_eq!((max_batch(5000.0), max_batch(500.0), max_batch(1.0), max_batch(0.0)), (100, 10, 2, 1));
    }

    fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        websocket::encode(opcode, payload, &mut out);
        out
    }

    #[test]
    fn scanner_finds_the_close_code_after_other_frames() {
        let mut bytes = server_frame(OpCode::Binary, &[0x50, 0, 1]);
        bytes.extend(server_frame(OpCode::Binary, &vec![7u8; 70_000]));
        bytes.extend(server_frame(OpCode::Ping, b""));
        websocket::encode_close(1008, "slow consumer", &mut bytes);
        // Byte by byte and in one go give the same result.
        let mut one = Scanner::frames();
        one.feed(&bytes);
        let mut split = Scanner::frames();
        for b in &bytes {
            split.feed(std::slice::from_ref(b));
        }
        for s in [one, split] {
            assert_eq!(s.close, Some(Some(1008)));
            assert_eq!((s.frames, s.pings, s.bytes), (4, 1, bytes.len() as u64));
            assert!(s.decided());
        }
        let mut empty = Scanner::frames();
        empty.feed(&server_frame(OpCode::Close, b""));
        assert_eq!(empty.close, Some(None));
        let mut none = Scanner::frames();
        none.feed(&server_frame(OpCode::Ping, b"x"));
        assert!(!none.decided());
    }

    #[test]
    fn scanner_reads_http_status_lines() {
        let mut s = Scanner::http();
        s.feed(b"HTTP/1.1 40");
        assert_eq!(s.status, None);
        s.feed(b"8 Request Timeout\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(s.status, Some(408));
        let mut junk = Scanner::http();
        junk.feed(b"SSH-2.0-x\r\n");
        assert_eq!(junk.status, None);
        assert_eq!(parse_status_line(b"HTTP/1.0 413 Payload Too Large\r\n"), Some(413));
        assert_eq!(parse_status_line(b"HTTP/1.1 4133 x"), None);
    }

    #[test]
    fn outcomes_and_labels() {
        let nothing = Scanner::http();
        let of = |e: Ending| Outcome::of(&nothing, &e);
        assert_eq!(of(Ending::Deadline { blocked: false }).label(), "open");
        assert_eq!(of(Ending::Deadline { blocked: true }).label(), "open, writes blocked");
        assert_eq!(of(Ending::Eof), Outcome::Eof);
        assert_eq!(of(Ending::Failed(ErrorKind::ConnectionReset)), Outcome::Reset);
        assert_eq!(of(Ending::Failed(ErrorKind::BrokenPipe)).label(), "reset");
        assert_eq!(of(Ending::Failed(ErrorKind::TimedOut)).label(), "error: timed out");
        let mut closed = Scanner::frames();
        closed.feed(&{
            let mut b = Vec::new();
            websocket::encode_close(1002, "malformed", &mut b);
            b
        });
        assert_eq!(Outcome::of(&closed, &Ending::Failed(ErrorKind::ConnectionReset)).label(), "closed 1002");
        let mut status = Scanner::http();
        status.feed(b"HTTP/1.1 413 Payload Too Large\r\n");
        assert_eq!(Outcome::of(&status, &Ending::Eof).label(), "http 413");
        assert!(Outcome::Reset.by_gateway() && Outcome::Http(408).by_gateway());
        assert!(!Outcome::Open { blocked: true }.by_gateway());
        assert!(!Outcome::ConnectFailed("refused".into()).by_gateway());
    }

    #[test]
    fn filler_is_json_of_the_size_asked() {
        for size in [0, 10, 11, 4096] {
            let f = filler_json(size);
            assert_eq!(f.len(), size.max(10));
            assert!(serde_json::from_slice::<serde_json::Value>(&f).is_ok());
        }
        assert_ne!(mask_for(0, 0), mask_for(1, 0));
        assert_ne!(mask_for(1, 0), mask_for(1, 1));
    }
}
