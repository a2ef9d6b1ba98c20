//! The task that owns one client's WebSocket.
//!
//! One task per connection, one loop. Each turn it waits for whichever comes
//! first: the connection's wake-up (new outbox items or a close order), room
//! to write, a frame from the client, or the retransmit timer. The timer
//! exists only while qos 1/2 messages await answers; liveness pings come from
//! the hub's shared sweeper, not from here.
//!
//! The QoS state lives in the task as plain values (`Outbound` for our SENDs,
//! `Inbound` for the client's), so no lock guards it. What other tasks need to
//! reach (outbox, forward queue, cookie, channels) is in [`Connection`].
//!
//! Backpressure: while the connection's forward queue is full the task stops
//! reading the socket, so a client that outruns its backend is slowed by TCP
//! rather than buffered without bound. A client that does not read is closed
//! with 1008 once its outbox fills (see `Connection::push`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::poll_fn;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rainbow_protocol::{Disposition, Inbound, InboundConfig, Outbound, OutboundConfig, Packet, Timeout};
use tokio::time::Sleep;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use super::Admission;
use super::forward;
use crate::backend::Control;
use crate::hub::{CloseOrder, Connection, Outgoing, Publication, coarse_now};
use crate::metrics::DisconnectReason;
use crate::state::Gateway;

type Ws = WebSocketStream<TokioIo<Upgraded>>;
type Sink = SplitSink<Ws, Message>;

/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Makes an accepted connection reachable: registered in the hub with the
/// connect hook's controls applied. Done before the 101 answer, so a `/send/`
/// or `/sub/` issued as soon as the client is connected finds it.
pub fn register(gw: &Gateway, conn: &Arc<Connection>, control: &Control) {
    gw.hub.register(conn.clone());
    control.apply(&gw.hub, conn);
    gw.metrics.connections.inc();
    if gw.is_shutting_down() {
        // Accepted while shutdown began: close it like the others.
        conn.close(CloseOrder::SHUTDOWN);
    }
}

/// Runs a registered connection until it ends, then [`finish`]es it.
pub async fn run(gw: Arc<Gateway>, ws: Ws, conn: Arc<Connection>, admission: Admission) {
    let reason = Driver::new(&gw, &conn).run(ws).await;
    finish(&gw, &conn, reason).await;
    drop(admission);
}

/// Forgets a connection: out of the hub and its channels, undelivered
/// publications settled as failed, then the close hook.
pub async fn finish(gw: &Gateway, conn: &Connection, reason: DisconnectReason) {
    gw.hub.unregister(conn);
    gw.metrics.connections.dec();
    gw.metrics.disconnect(reason);
    for item in conn.finish() {
        if let Outgoing::Publish(p) = item {
            p.tracker.failed();
        }
    }
    conn.forwards().queue.clear();
    info!(identity = %conn.identity(), peer = %conn.peer(), reason = reason.label(), "disconnected");
    crate::worker::route::close(gw, conn).await;
}

/// A token bucket: `rate` messages per second, bursts of twice that.
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> RateLimit {
        RateLimit { rate: rate as f64, tokens: rate as f64 * 2.0, last: Instant::now() }
    }

    fn allow(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * 2.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Driver<'a> {
    gw: &'a Arc<Gateway>,
    conn: &'a Arc<Connection>,
    outbound: Outbound<Arc<Publication>>,
    inbound: Inbound,
    rate: RateLimit,
    max_pending_forwards: usize,
    forward_concurrency: usize,
    /// Written but not yet flushed to the socket.
    unflushed: bool,
    /// The next outbox item is a qos 1/2 SEND and `max_in_flight` is reached.
    stalled: bool,
}

/// What a turn of the loop decided.
enum Turn {
    Continue,
    End(DisconnectReason),
}

impl<'a> Driver<'a> {
    fn new(gw: &'a Arc<Gateway>, conn: &'a Arc<Connection>) -> Driver<'a> {
        let config = gw.config();
        Driver {
            gw,
            conn,
            outbound: Outbound::new(OutboundConfig {
                retransmit_interval: config.retransmit_interval,
                max_in_flight: config.max_in_flight,
                release_lifetime: config.retransmit_interval * 3,
            }),
            inbound: Inbound::new(InboundConfig { max_unreleased: config.qos2_window, ..Default::default() }),
            rate: RateLimit::new(config.max_message_rate),
            max_pending_forwards: config.max_pending_forwards,
            forward_concurrency: config.forward_concurrency,
            unflushed: false,
            stalled: false,
        }
    }

    async fn run(mut self, ws: Ws) -> DisconnectReason {
        let (mut sink, mut source) = ws.split();
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let reason = loop {
            if let Some(order) = self.conn.close_order() {
                close(&mut sink, &order).await;
                break order.why;
            }
            match (self.outbound.next_deadline(), timer.as_mut()) {
                (None, _) => timer = None,
                (Some(at), Some(t)) => t.as_mut().reset(at.into()),
                (Some(at), None) => timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
            }
            let reading = self.conn.forwards().queue.len() < self.max_pending_forwards;
            let writing = !self.stalled && self.conn.has_outgoing();
            let turn = tokio::select! {
                biased;
                _ = self.conn.notified() => Turn::Continue,
                // One branch for the sink: room for the next item while there
                // are items, else a flush of what was written.
                io = poll_fn(|cx| if writing {
                    sink.poll_ready_unpin(cx).map_ok(|()| true)
                } else {
                    sink.poll_flush_unpin(cx).map_ok(|()| false)
                }), if writing || self.unflushed => match io {
                    Ok(true) => self.write_next(&mut sink),
                    Ok(false) => { self.unflushed = false; Turn::Continue }
                    Err(e) => Turn::End(socket_error("write", &e)),
                },
                frame = source.next(), if reading => self.on_frame(frame),
                () = wait(&mut timer), if timer.is_some() => { self.on_timer(); Turn::Continue }
            };
            match turn {
                Turn::Continue => {}
                Turn::End(DisconnectReason::Client) => {
                    // If the client sent a close frame, tungstenite queued the
                    // reply; let it go out to complete the closing handshake.
                    let _ = tokio::time::timeout(CLOSE_GRACE, sink.flush()).await;
                    break DisconnectReason::Client;
                }
                Turn::End(reason) => break reason,
            }
        };
        for publication in self.outbound.drain() {
            publication.tracker.failed();
        }
        reason
    }

    /// Takes one outbox item and hands it to the socket.
    fn write_next(&mut self, sink: &mut Sink) -> Turn {
        let Some(item) = self.conn.pop() else { return Turn::Continue };
        let message = match item {
            Outgoing::Frame(frame) => {
                // Count SENDs (command 1) by the qos bits of byte 0.
                if let Some(&first) = frame.first().filter(|b| **b >> 4 == 1) {
                    self.gw.metrics.messages_out.0[usize::from((first >> 1) & 0b11).min(2)].inc();
                }
                Message::Binary(frame)
            }
            Outgoing::Publish(publication) => {
                let now = Instant::now();
                if publication.deadline <= now {
                    publication.tracker.failed();
                    return Turn::Continue;
                }
                if !self.outbound.has_capacity() {
                    self.stalled = true;
                    self.conn.unpop(Outgoing::Publish(publication));
                    return Turn::Continue;
                }
                let p = &publication;
                let sent = self.outbound.send(now, p.message_type, p.qos, p.payload.clone(), p.deadline, p.clone());
                match sent {
                    Ok(packet) => {
                        self.gw.metrics.messages_out.0[usize::from(p.qos.as_u8())].inc();
                        Message::Binary(packet.encode())
                    }
                    Err(_) => {
                        // has_capacity() was checked just above.
                        publication.tracker.failed();
                        return Turn::Continue;
                    }
                }
            }
            Outgoing::Forwarded { id, qos, reply: Some(reply) } => match self.inbound.answer(id, qos, reply) {
                Some(packet) => Message::Binary(packet.encode()),
                None => return Turn::Continue,
            },
            Outgoing::Forwarded { id, qos, reply: None } => {
                self.inbound.failed(id, qos);
                return Turn::Continue;
            }
            Outgoing::Ping => Message::Ping(Bytes::new()),
        };
        match sink.start_send_unpin(message) {
            Ok(()) => {
                self.unflushed = true;
                Turn::Continue
            }
            Err(WsError::WriteBufferFull(_)) => {
                self.conn.close(CloseOrder::SLOW_CONSUMER);
                Turn::Continue
            }
            Err(e) => Turn::End(socket_error("write", &e)),
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Turn {
        let message = match frame {
            None => return Turn::End(DisconnectReason::Client),
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(e))) => {
                let order = CloseOrder::new(1009, format!("message too big: {e}"), DisconnectReason::TooBig);
                self.conn.close(order);
                return Turn::Continue;
            }
            Some(Err(WsError::Protocol(e))) => {
                self.gw.metrics.protocol_error("websocket");
                debug!(identity = %self.conn.identity(), side = "client", "websocket protocol error: {e}");
                let order =
                    CloseOrder::new(1002, format!("websocket protocol error: {e}"), DisconnectReason::ProtocolError);
                self.conn.close(order);
                return Turn::Continue;
            }
            Some(Err(e)) => return Turn::End(socket_error("read", &e)),
        };
        self.conn.touch(coarse_now());
        let bytes = match message {
            Message::Binary(b) => b,
            // Text frames are read as packets too: the original did not
            // distinguish, and some clients send strings.
            Message::Text(t) => Bytes::from(t),
            // Tungstenite queued the pong; flushing sends it.
            Message::Ping(_) => {
                self.unflushed = true;
                return Turn::Continue;
            }
            Message::Pong(_) | Message::Frame(_) => return Turn::Continue,
            Message::Close(_) => return Turn::End(DisconnectReason::Client),
        };
        match Packet::decode(bytes) {
            Ok(packet) => self.on_packet(packet),
            Err(e) => {
                self.gw.metrics.protocol_error(e.kind());
                debug!(identity = %self.conn.identity(), side = "client", "malformed packet: {e}");
                self.conn.close(CloseOrder::new(
                    1002,
                    format!("malformed packet: {e}"),
                    DisconnectReason::ProtocolError,
                ));
                Turn::Continue
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) -> Turn {
        let now = Instant::now();
        match packet {
            Packet::Send(send) => {
                if !self.rate.allow(now) {
                    let order =
                        CloseOrder::new(1008, "message rate limit exceeded".into(), DisconnectReason::RateLimited);
                    warn!(identity = %self.conn.identity(), side = "client", "client exceeded max_message_rate; closing");
                    self.conn.close(order);
                    return Turn::Continue;
                }
                self.gw.metrics.messages_in.0[usize::from(send.qos.as_u8())].inc();
                match self.inbound.on_send(now, &send) {
                    Ok(Disposition::Process) => {
                        forward::enqueue(self.gw, self.conn, send, self.forward_concurrency);
                    }
                    Ok(Disposition::Duplicate(rec)) => {
                        self.gw.metrics.duplicates.inc();
                        if let Some(rec) = rec {
                            self.conn.push_reply(Outgoing::Frame(rec.encode()));
                        }
                    }
                    Err(full) => {
                        warn!(identity = %self.conn.identity(), side = "client", "{full}; closing");
                        let order = CloseOrder::new(1008, full.to_string(), DisconnectReason::ProtocolError);
                        self.conn.close(order);
                    }
                }
            }
            Packet::Ack(reply) => {
                if let Some(answered) = self.outbound.on_ack(reply.id, reply.payload) {
                    answered.tag.tracker.answered(answered.payload);
                    self.stalled = false;
                }
            }
            Packet::Rec(reply) => {
                let (answered, rel) = self.outbound.on_rec(now, reply.id, reply.payload);
                if let Some(answered) = answered {
                    answered.tag.tracker.answered(answered.payload);
                }
                self.conn.push_reply(Outgoing::Frame(rel.encode()));
            }
            Packet::Rel(id) => {
                let com = self.inbound.on_rel(id);
                self.conn.push_reply(Outgoing::Frame(com.encode()));
            }
            Packet::Com(id) => {
                self.outbound.on_com(id);
                self.stalled = false;
            }
        }
        Turn::Continue
    }

    fn on_timer(&mut self) {
        let (gw, conn) = (self.gw, self.conn);
        self.outbound.on_timeout(Instant::now(), |timeout| match timeout {
            Timeout::Retransmit(packet) => {
                gw.metrics.retransmits.inc();
                conn.push_reply(Outgoing::Frame(packet.encode()));
            }
            Timeout::Expired(publication) => publication.tracker.failed(),
        });
        self.stalled = false;
    }
}

async fn wait(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

fn socket_error(op: &str, e: &WsError) -> DisconnectReason {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => DisconnectReason::Client,
        WsError::Io(io)
            if matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) =>
        {
            DisconnectReason::Client
        }
        other => {
            debug!(side = "client", "socket {op} failed: {other}");
            DisconnectReason::Error
        }
    }
}

/// Sends a close frame and gives it a moment to leave.
async fn close(sink: &mut Sink, order: &CloseOrder) {
    let frame = CloseFrame { code: CloseCode::from(order.code), reason: order.reason.to_string().into() };
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let mut r = RateLimit::new(2);
        let t0 = r.last;
        assert!((0..4).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + std::time::Duration::from_millis(600)));
        let mut unlimited = RateLimit::new(0);
        assert!((0..10_000).all(|_| unlimited.allow(t0)));
    }
}
