//! What an open connection does, beyond idling ([`crate::conn::idle`]):
//!
//! - [`subscribe`]: a fan-out subscriber. It reads Rainbow SEND packets
//!   (binary frames, decoded with `rainbow-protocol`) or plain text frames
//!   (Nchan, Pushpin), times each stamped publication ([`crate::stamp`]) and
//!   answers qos-1 SENDs with an ACK and qos-2 ones with REC, then COM.
//! - [`rpc`]: a client sending qos-1 SENDs, at most `window` outstanding,
//!   in a closed loop or paced at one every `interval`, timing each until
//!   its ACK.
//!
//! Both keep only a few words of state besides the stream, so tens of
//! thousands of them stay cheap; the counting goes to the process's shared
//! [`Counters`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rainbow_protocol::{Packet, Qos, Reply, SendPacket};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::conn::{End, Ws};
use crate::stamp;
use crate::stats::{Counters, SubscriberState};

/// What an rpc client sends.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcPlan {
    /// Requests outstanding per client at most (1 = strictly closed loop).
    pub window: usize,
    /// Message type of the SENDs (the forward hook's `{message_type}`).
    pub message_type: u16,
    /// Payload size, bytes.
    pub payload_size: usize,
    /// A request unanswered this long counts as failed and is forgotten.
    pub timeout: Duration,
    /// Seconds after the start before round trips are measured.
    pub warmup: Duration,
    /// Length of the measuring window.
    pub measure: Duration,
    /// Paced: one request every `interval` (while the window allows);
    /// `None` = closed loop.
    pub interval: Option<Duration>,
}

/// The payload of rpc requests: JSON text of `size` bytes (at least 12).
pub fn rpc_payload(size: usize) -> Bytes {
    // {"rpc":"x..x"} is 10 bytes around the filler.
    let fill = size.clamp(12, stamp::MAX_PAYLOAD) - 10;
    Bytes::from(format!("{{\"rpc\":\"{}\"}}", "x".repeat(fill)))
}

/// How a read ended, in the labels of [`End`].
fn ended(closed: Option<Option<u16>>, error: Option<tungstenite::Error>) -> End {
    match (closed, error) {
        (Some(code), _) => End::Closed(code),
        (None, None | Some(tungstenite::Error::ConnectionClosed)) => End::Eof,
        (None, Some(e)) => End::Error(e.to_string()),
    }
}

/// Sends one packet (and flushes).
async fn send(ws: &mut Ws, packet: Packet) -> Result<(), tungstenite::Error> {
    ws.send(Message::Binary(packet.encode())).await
}

/// A fan-out subscriber: reads until the peer ends the connection.
pub async fn subscribe(ws: &mut Ws, counters: &Counters) -> End {
    let mut state = SubscriberState::default();
    let mut closed = None;
    loop {
        let message = match ws.next().await {
            Some(Ok(m)) => m,
            None => return ended(closed, None),
            Some(Err(e)) => return ended(closed, Some(e)),
        };
        let now = stamp::now_us();
        let payload = match message {
            Message::Binary(bytes) => match Packet::decode(bytes) {
                Ok(Packet::Send(s)) => {
                    let answer = match s.qos {
                        Qos::AtMostOnce => None,
                        Qos::AtLeastOnce => Some(Packet::Ack(Reply { id: s.id, payload: Bytes::new() })),
                        Qos::ExactlyOnce => Some(Packet::Rec(Reply { id: s.id, payload: Bytes::new() })),
                    };
                    if let Some(answer) = answer
                        && let Err(e) = send(ws, answer).await
                    {
                        return ended(closed, Some(e));
                    }
                    if s.dup {
                        counters.duplicate();
                        continue;
                    }
                    s.payload
                }
                Ok(Packet::Rel(id)) => {
                    if let Err(e) = send(ws, Packet::Com(id)).await {
                        return ended(closed, Some(e));
                    }
                    continue;
                }
                Ok(_) | Err(_) => {
                    counters.unparsed();
                    continue;
                }
            },
            Message::Text(text) => Bytes::from(text),
            // Keep reading after a close frame so tungstenite sends its reply.
            Message::Close(frame) => {
                closed = Some(frame.map(|f| u16::from(f.code)));
                continue;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        match stamp::parse(&payload) {
            Some(s) => counters.delivered(&mut state, s, now),
            None => counters.unparsed(),
        }
    }
}

/// The next message id after `id` (1..=65534, wrapping to 1; docs/protocol.md §2).
pub fn next_id(id: u16) -> u16 {
    if id >= 65_534 { 1 } else { id + 1 }
}

/// When a paced client sends next: one interval after `next`, or now if
/// that has already passed (a client that fell behind does not burst).
pub fn next_send(next: Instant, interval: Duration, now: Instant) -> Instant {
    (next + interval).max(now)
}

/// An rpc client: waits for `go`, sends qos-1 SENDs keeping at most `window`
/// outstanding (paced: one per `interval`, the first `phase` after `go`)
/// until the counters say stop, then idles until the peer ends the
/// connection.
pub async fn rpc(
    ws: &mut Ws,
    plan: &RpcPlan,
    mut go: watch::Receiver<Option<Instant>>,
    phase: Duration,
    counters: &Counters,
) -> End {
    let Ok(go_at) = go.wait_for(Option::is_some).await.map(|g| g.unwrap_or_else(Instant::now)) else {
        return End::Eof;
    };
    let payload = rpc_payload(plan.payload_size);
    let window = plan.window.clamp(1, 1024);
    let interval = plan.interval.filter(|d| !d.is_zero());
    let mut due = interval.map(|_| go_at + phase);
    let mut outstanding: VecDeque<(u16, Instant)> = VecDeque::with_capacity(window);
    let mut id = 0u16;
    let mut closed = None;
    loop {
        let stopping = counters.rpc_stop.load(Ordering::Relaxed);
        if !stopping && outstanding.len() < window && due.is_none_or(|d| d <= Instant::now()) {
            // Closed loop: fill the window. Paced: one request.
            let room = if due.is_some() { 1 } else { window - outstanding.len() };
            for _ in 0..room {
                id = next_id(id);
                let packet = Packet::Send(SendPacket {
                    message_type: plan.message_type,
                    qos: Qos::AtLeastOnce,
                    id,
                    dup: false,
                    payload: payload.clone(),
                });
                if let Err(e) = ws.feed(Message::Binary(packet.encode())).await {
                    return ended(closed, Some(e));
                }
                outstanding.push_back((id, Instant::now()));
            }
            if let Err(e) = ws.flush().await {
                return ended(closed, Some(e));
            }
            if let (Some(d), Some(every)) = (due, interval) {
                due = Some(next_send(d, every, Instant::now()));
            }
        }
        let expiry = outstanding.front().map(|&(_, sent)| sent + plan.timeout);
        let send_at = due.filter(|_| !stopping && outstanding.len() < window);
        let wake = match (expiry, send_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let read = match wake {
            Some(at) => match tokio::time::timeout_at(at.into(), ws.next()).await {
                Ok(read) => read,
                Err(_) => {
                    if expiry.is_some_and(|e| e <= Instant::now()) {
                        outstanding.pop_front();
                        counters.rpc_failed();
                    }
                    continue;
                }
            },
            None => ws.next().await,
        };
        match read {
            Some(Ok(Message::Binary(bytes))) => match Packet::decode(bytes) {
                Ok(Packet::Ack(reply)) => match outstanding.iter().position(|&(i, _)| i == reply.id) {
                    Some(at) => {
                        if let Some((_, sent)) = outstanding.remove(at) {
                            counters.round_trip(sent.elapsed());
                        }
                    }
                    None => counters.rpc_failed(),
                },
                _ => counters.rpc_failed(),
            },
            Some(Ok(Message::Close(frame))) => closed = Some(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            None => return ended(closed, None),
            Some(Err(e)) => return ended(closed, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_wrap_and_skip_zero() {
        assert_eq!(next_id(0), 1);
        assert_eq!(next_id(1), 2);
        assert_eq!(next_id(65_533), 65_534);
        assert_eq!(next_id(65_534), 1);
        assert_eq!(next_id(u16::MAX), 1);
    }

    #[test]
    fn paced_clients_skip_missed_slots() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_send(t0, s, t0), t0 + s);
        assert_eq!(next_send(t0, s, t0 + 5 * s), t0 + 5 * s, "late: at once, no burst of the missed ones");
    }

    #[test]
    fn rpc_payload_is_json_of_the_size_asked() {
        for size in [0, 12, 32, 500] {
            let p = rpc_payload(size);
            assert_eq!(p.len(), size.max(12));
            let v: serde_json::Value = serde_json::from_slice(&p).expect("JSON");
            assert!(v["rpc"].is_string());
        }
    }
}
