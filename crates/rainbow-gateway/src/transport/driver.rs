//! The task that owns one client's WebSocket.
//!
//! One task per connection, one loop ([`Driver::poll_run`]). Each turn it
//! takes whichever comes first: the connection's wake-up (new outbox items or
//! a close order), the socket (written out, or data to read), the retransmit
//! timer, or items to write. The timer exists only while qos 1/2 messages
//! await answers; liveness pings come from the hub's shared sweeper, not from
//! here.
//!
//! The QoS state lives in the task as plain values (`Outbound` for our SENDs,
//! `Inbound` for the client's, together the [`Exchanges`]), so no lock guards
//! it, and only while qos 1/2 exchanges are under way. What other tasks need to reach (outbox, forward
//! queue, cookie, channels) is in [`Connection`].
//!
//! Idle cost: the task's future is the connection's largest allocation, so
//! it is kept small (see `the_connection_task_stays_small`): the loop is one
//! hand-written poll over state stored once, and what is needed only at the
//! end (the close grace timer, the close hook's HTTP request) is boxed then.
//!
//! Backpressure: while the connection's forward queue is full the task stops
//! reading the socket, so a client that outruns its backend is slowed by TCP
//! rather than buffered without bound. A client that does not read is closed
//! with 1008 once its outbox fills (see `Connection::push`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::poll_fn;
use rainbow_protocol::websocket::{FrameError, Message, OpCode};
use rainbow_protocol::{Disposition, Inbound, InboundConfig, Outbound, OutboundConfig, Packet, Qos, Timeout};
use tokio::time::Sleep;
use tracing::{debug, info, warn};

use super::forward;
use super::socket::{Incoming, Io, Read, Socket};
use crate::backend::Control;
use crate::hub::{CloseOrder, Connection, Outgoing, Publication, coarse_now};
use crate::metrics::DisconnectReason;
use crate::state::Gateway;

/// Queued output above which the driver stops taking items from the outbox
/// until the socket has taken some (the outbox then bounds what waits).
const WRITE_HIGH: usize = 8 * 1024;

/// What a client's ping costs against `max_message_rate`, in messages: at
/// the default 1,000/s, 20 pings a second (bursts of 40).
const PING_COST: f32 = 50.0;

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

/// Drives a registered connection's socket until the connection ends, and
/// says why. The caller then [`finish`]es the connection.
///
/// Not an `async fn`: that would store its arguments twice (as arguments and
/// as the body's locals), and the socket is much of the task's size.
pub fn drive<'a>(
    gw: &'a Arc<Gateway>,
    conn: &'a Arc<Connection>,
    socket: Socket,
) -> impl Future<Output = DisconnectReason> + Send + 'a {
    let mut driver = Driver { socket, timer: None, state: State::new(gw, conn) };
    async move {
        let (reason, flush) = match poll_fn(|cx| driver.poll_run(cx)).await {
            Ending::Ordered(order) => {
                driver.socket.queue_close(order.code, &order.reason);
                (order.why, true)
            }
            Ending::Ended(reason) => (reason, reason == DisconnectReason::Client),
        };
        // A call under way completes (and the next ones are dropped with
        // the queue): the backend may already be acting on it.
        if let Some(drain) = driver.state.exchanges.as_mut().and_then(|q| q.forwarding.take()) {
            gw.tasks.spawn(drain);
        }
        // Our close frame, or the echo of the client's: let it go out to
        // complete the closing handshake. Boxed: the timer is needed only now.
        if flush && driver.socket.queued() > 0 {
            let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, driver.socket.flush())).await;
        }
        if let Some(exchanges) = driver.state.exchanges.as_mut() {
            for publication in exchanges.outbound.drain() {
                publication.tracker.failed();
            }
        }
        reason
    }
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
    info!(identity = %conn.identity(), peer = %conn.peer(), reason = reason.label(), "disconnected");
    gw.backend.close(&gw.config(), conn).await;
}

/// A token bucket: `rate` messages per second, bursts of twice that.
/// (`f32` is precise enough for token counts and keeps it to 24 bytes of
/// every connection's task.)
struct RateLimit {
    rate: f32,
    tokens: f32,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> RateLimit {
        RateLimit { rate: rate as f32, tokens: rate as f32 * 2.0, last: Instant::now() }
    }

    /// Takes `cost` tokens if there are that many.
    fn allow(&mut self, now: Instant, cost: f32) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let refill = now.saturating_duration_since(self.last).as_secs_f32() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * 2.0);
        self.last = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// The exchanges under way: the QoS state machines of both directions and
/// the forward queue's inline drain. Allocated while a message is in flight
/// either way (an idle connection holds none).
struct Exchanges {
    /// Our SENDs to the client.
    outbound: Outbound<Arc<Publication>>,
    /// The client's SENDs.
    inbound: Inbound,
    /// The forward queue's drain, when it runs in this task
    /// (`forward_concurrency` 1, see [`forward`]).
    forwarding: Option<forward::DrainFuture>,
}

impl Exchanges {
    fn new(gw: &Gateway, last_id: u16) -> Box<Exchanges> {
        let config = gw.config();
        let outbound = OutboundConfig {
            retransmit_interval: config.retransmit_interval,
            max_in_flight: config.max_in_flight,
            release_lifetime: config.retransmit_interval * 3,
        };
        Box::new(Exchanges {
            outbound: Outbound::continuing(outbound, last_id),
            inbound: Inbound::new(InboundConfig {
                max_unreleased: config.qos2_window,
                max_remembered_bytes: config.max_queued_bytes,
                ..Default::default()
            }),
            forwarding: None,
        })
    }

    /// Nothing in flight either way: the state can go.
    fn is_idle(&self) -> bool {
        self.outbound.in_flight() == 0 && self.inbound.unreleased() == 0 && self.forwarding.is_none()
    }
}

/// The connection task's state: the socket, the retransmit timer and the
/// rest, apart so that handlers of the socket's messages can borrow `state`
/// while the socket is read.
struct Driver<'a> {
    socket: Socket,
    /// Alive only while qos 1/2 messages are in flight.
    timer: Option<Pin<Box<Sleep>>>,
    state: State<'a>,
}

/// How the loop ended.
enum Ending {
    /// A close was ordered: send it.
    Ordered(CloseOrder),
    /// The connection is over (the client closed, or the socket failed).
    Ended(DisconnectReason),
}

struct State<'a> {
    gw: &'a Arc<Gateway>,
    conn: &'a Arc<Connection>,
    exchanges: Option<Box<Exchanges>>,
    /// The last message id of dropped `Exchanges`, where the next continue.
    last_id: u16,
    rate: RateLimit,
    /// `u32`, not `usize`: this struct is in every connection's task.
    max_pending_forwards: u32,
    forward_concurrency: u32,
    /// The next outbox item is a qos 1/2 SEND and `max_in_flight` is reached.
    stalled: bool,
}

/// What a turn of the loop decided.
enum Turn {
    Continue,
    End(DisconnectReason),
}

impl Driver<'_> {
    /// Runs turns until the connection must end, or nothing is ready.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        loop {
            let state = &mut self.state;
            if let Some(order) = state.conn.close_order() {
                return Poll::Ready(Ending::Ordered(order));
            }
            if state.exchanges.as_ref().is_some_and(|q| q.is_idle()) {
                state.last_id = state.exchanges.take().map_or(0, |q| q.outbound.last_id());
            }
            let deadline = state.exchanges.as_ref().and_then(|q| q.outbound.next_deadline());
            match (deadline, self.timer.as_mut()) {
                (None, _) => self.timer = None,
                (Some(at), Some(t)) => t.as_mut().reset(at.into()),
                (Some(at), None) => self.timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
            }
            let reading = state.may_read();
            let socket = &mut self.socket;
            let turn = if reading && socket.has_backlog() {
                // Frames read before reading paused come first.
                let mut end = None;
                socket.resume(&mut |incoming| state.on_incoming(incoming, &mut end));
                end.map_or(Turn::Continue, Turn::End)
            } else if state.conn.poll_woken(cx).is_ready() {
                // Outbox items or a close order: the next turn sees them.
                Turn::Continue
            } else if let Poll::Ready(io) = socket.poll_io(cx, reading) {
                match io {
                    Ok(Io::Readable) => state.read(socket),
                    Ok(Io::Flushed) => Turn::Continue,
                    Err(e) => Turn::End(socket_error("write", &e)),
                }
            } else if state.poll_forwarding(cx, reading) {
                Turn::Continue
            } else if let Some(timer) = self.timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                state.on_timer();
                Turn::Continue
            } else if socket.queued() < WRITE_HIGH && state.conn.has_outgoing(!state.stalled) {
                state.produce(socket)
            } else {
                return Poll::Pending;
            };
            if let Turn::End(reason) = turn {
                return Poll::Ready(Ending::Ended(reason));
            }
        }
    }
}

impl<'a> State<'a> {
    fn new(gw: &'a Arc<Gateway>, conn: &'a Arc<Connection>) -> State<'a> {
        let config = gw.config();
        State {
            gw,
            conn,
            exchanges: None,
            last_id: 0,
            rate: RateLimit::new(config.max_message_rate),
            max_pending_forwards: u32::try_from(config.max_pending_forwards).unwrap_or(u32::MAX),
            forward_concurrency: u32::try_from(config.forward_concurrency).unwrap_or(u32::MAX),
            stalled: false,
        }
    }

    /// The exchanges' state, allocated if there was none.
    fn exchanges(&mut self) -> &mut Exchanges {
        let (gw, last_id) = (self.gw, self.last_id);
        self.exchanges.get_or_insert_with(|| Exchanges::new(gw, last_id))
    }

    /// Whether to take client messages: not while the forward queue is full
    /// (backpressure). A full queue marks the reader paused, so that the
    /// forward task that makes room wakes this driver.
    fn may_read(&self) -> bool {
        let metrics = &self.gw.metrics;
        self.conn.forward_room(self.max_pending_forwards as usize, || {
            metrics.forward_queue_full.inc();
        })
    }

    /// Polls the inline drain, if any. `true` if the loop must turn again:
    /// the drain is done (its replies are in the outbox), or it took a
    /// message from a full queue, so reading may resume.
    fn poll_forwarding(&mut self, cx: &mut Context<'_>, reading: bool) -> bool {
        let Some(exchanges) = self.exchanges.as_mut() else { return false };
        let Some(drain) = exchanges.forwarding.as_mut() else { return false };
        if drain.as_mut().poll(cx).is_ready() {
            exchanges.forwarding = None;
            return true;
        }
        !reading && self.may_read()
    }

    /// Reads what the socket has and handles the messages in it.
    fn read(&mut self, socket: &mut Socket) -> Turn {
        let mut end = None;
        match socket.read(&mut |incoming| self.on_incoming(incoming, &mut end)) {
            Ok(Read::Open) => end.map_or(Turn::Continue, Turn::End),
            Ok(Read::Eof) => Turn::End(end.unwrap_or(DisconnectReason::Client)),
            Err(e) => Turn::End(socket_error("read", &e)),
        }
    }

    /// Handles one message; `false` stops taking more for now.
    fn on_incoming(&mut self, incoming: Incoming, end: &mut Option<DisconnectReason>) -> bool {
        match self.on_message(incoming) {
            Turn::Continue => self.may_read() && !self.conn.is_closing(),
            Turn::End(reason) => {
                *end = Some(reason);
                false
            }
        }
    }

    /// Takes outbox items into the socket's buffer (up to [`WRITE_HIGH`])
    /// and writes what the socket takes now. While a push waits for a free
    /// `max_in_flight` slot, only answers are taken (see `Outgoing`).
    fn produce(&mut self, socket: &mut Socket) -> Turn {
        while socket.queued() < WRITE_HIGH {
            let Some(item) = self.conn.pop(!self.stalled) else { break };
            self.write_item(item, socket);
        }
        match socket.try_flush() {
            Ok(()) => Turn::Continue,
            Err(e) => Turn::End(socket_error("write", &e)),
        }
    }

    /// Encodes one outbox item into the socket's buffer.
    fn write_item(&mut self, item: Outgoing, socket: &mut Socket) {
        match item {
            Outgoing::Push(frame) => {
                self.gw.metrics.messages_out.0[usize::from(Qos::AtMostOnce.as_u8())].inc();
                socket.queue(OpCode::Binary, &frame);
            }
            Outgoing::Control(frame) => socket.queue(OpCode::Binary, &frame),
            Outgoing::Publish(publication) => {
                let now = Instant::now();
                if publication.deadline <= now {
                    publication.tracker.expired();
                    return;
                }
                let outbound = &mut self.exchanges().outbound;
                if !outbound.has_capacity() {
                    // It keeps its place; answers behind it may still go.
                    self.stalled = true;
                    self.conn.hold(Outgoing::Publish(publication));
                    return;
                }
                let p = &publication;
                let sent = outbound.send(now, p.message_type, p.qos, p.payload.clone(), p.deadline, p.clone());
                match sent {
                    Ok(packet) => {
                        self.gw.metrics.messages_out.0[usize::from(p.qos.as_u8())].inc();
                        socket.queue(OpCode::Binary, &packet.encode());
                    }
                    // has_capacity() was checked just above.
                    Err(_) => publication.tracker.failed(),
                }
            }
            Outgoing::Forwarded { id, qos, reply: Some(reply) } => {
                if let Some(answer) = self.exchanges().inbound.answer(id, qos, reply) {
                    socket.queue(OpCode::Binary, &answer);
                }
            }
            Outgoing::Forwarded { id, qos, reply: None } => self.exchanges().inbound.failed(id, qos),
            Outgoing::Ping => socket.queue(OpCode::Ping, &[]),
        }
    }

    fn on_message(&mut self, incoming: Incoming) -> Turn {
        let message = match incoming {
            Ok(message) => message,
            Err(e @ FrameError::TooBig { .. }) => {
                let order = CloseOrder::new(1009, format!("message too big: {e}"), DisconnectReason::TooBig);
                self.conn.close(order);
                return Turn::Continue;
            }
            Err(e) => {
                self.gw.metrics.protocol_error("websocket");
                debug!(identity = %self.conn.identity(), side = "client", "websocket protocol error: {e}");
                let order = CloseOrder::new(
                    e.close_code(),
                    format!("websocket protocol error: {e}"),
                    DisconnectReason::ProtocolError,
                );
                self.conn.close(order);
                return Turn::Continue;
            }
        };
        self.conn.touch(coarse_now());
        let bytes = match message {
            // Text frames are read as packets too: the original did not
            // distinguish, and some clients send strings.
            Message::Data { payload, .. } => payload,
            // The socket queued the pong. A ping costs PING_COST messages:
            // a client needs one every few seconds at most, and a flood of
            // them costs the gateway a decode and a pong each.
            Message::Ping(_) => {
                self.charge(Instant::now(), PING_COST);
                return Turn::Continue;
            }
            Message::Pong(_) => return Turn::Continue,
            // The socket queued the echo.
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

    /// Counts one more thing the client made the gateway do against
    /// `max_message_rate`; past it, orders the close (1008) and says no.
    fn charge(&mut self, now: Instant, cost: f32) -> bool {
        if self.rate.allow(now, cost) {
            return true;
        }
        warn!(identity = %self.conn.identity(), side = "client", "client exceeded max_message_rate; closing");
        self.conn.close(CloseOrder::new(1008, "message rate limit exceeded".into(), DisconnectReason::RateLimited));
        false
    }

    /// Handles one packet. SENDs count against `max_message_rate`, and so
    /// does anything the gateway did not ask for (an ACK, REC or COM for no
    /// message in flight, a REL for no message awaiting it): answers to the
    /// gateway's own messages are bounded by them and never counted, but a
    /// flood of stray ones is.
    fn on_packet(&mut self, packet: Packet) -> Turn {
        let now = Instant::now();
        let expected = match &packet {
            Packet::Send(_) => false,
            Packet::Ack(reply) | Packet::Rec(reply) => {
                self.exchanges.as_ref().is_some_and(|x| x.outbound.awaits(reply.id))
            }
            Packet::Com(id) => self.exchanges.as_ref().is_some_and(|x| x.outbound.awaits(*id)),
            Packet::Rel(id) => self.exchanges.as_ref().is_some_and(|x| x.inbound.awaits_rel(*id)),
        };
        if !expected && !self.charge(now, 1.0) {
            return Turn::Continue;
        }
        match packet {
            Packet::Send(send) => {
                self.gw.metrics.messages_in.0[usize::from(send.qos.as_u8())].inc();
                match self.exchanges().inbound.on_send(now, &send) {
                    Ok(Disposition::Process) => {
                        let concurrency = self.forward_concurrency as usize;
                        if let Some(drain) = forward::enqueue(self.gw, self.conn, send, concurrency) {
                            self.exchanges().forwarding = Some(drain);
                        }
                    }
                    Ok(Disposition::Duplicate(rec)) => {
                        self.gw.metrics.duplicates.inc();
                        // The remembered REC, shared: a duplicate costs no copy.
                        if let Some(rec) = rec {
                            self.conn.push_reply(Outgoing::Control(rec));
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
                if let Some(answered) = self.exchanges().outbound.on_ack(reply.id, reply.payload) {
                    answered.tag.tracker.answered(answered.payload);
                    self.stalled = false;
                }
            }
            Packet::Rec(reply) => {
                let (answered, rel) = self.exchanges().outbound.on_rec(now, reply.id, reply.payload);
                if let Some(answered) = answered {
                    answered.tag.tracker.answered(answered.payload);
                }
                self.conn.push_reply(Outgoing::Control(rel.encode()));
            }
            Packet::Rel(id) => {
                let com = self.exchanges().inbound.on_rel(id);
                self.conn.push_reply(Outgoing::Control(com.encode()));
            }
            Packet::Com(id) => {
                self.exchanges().outbound.on_com(id);
                self.stalled = false;
            }
        }
        Turn::Continue
    }

    fn on_timer(&mut self) {
        let (gw, conn) = (self.gw, self.conn);
        let Some(exchanges) = self.exchanges.as_mut() else { return };
        exchanges.outbound.on_timeout(Instant::now(), |timeout| match timeout {
            Timeout::Retransmit(packet) => {
                gw.metrics.retransmits.inc();
                conn.push_reply(Outgoing::Control(packet.encode()));
            }
            Timeout::Expired(publication) => publication.tracker.expired(),
        });
        self.stalled = false;
    }
}

fn socket_error(op: &str, e: &std::io::Error) -> DisconnectReason {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    if matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) {
        DisconnectReason::Client
    } else {
        debug!(side = "client", "socket {op} failed: {e}");
        DisconnectReason::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let mut r = RateLimit::new(2);
        let t0 = r.last;
        assert!((0..4).all(|_| r.allow(t0, 1.0)));
        assert!(!r.allow(t0, 1.0));
        assert!(r.allow(t0 + std::time::Duration::from_millis(600), 1.0));
        let mut unlimited = RateLimit::new(0);
        assert!((0..10_000).all(|_| unlimited.allow(t0, PING_COST)));
        let mut pings = RateLimit::new(1000);
        assert_eq!((0..100).filter(|_| pings.allow(t0, PING_COST)).count(), 40, "a burst of 40 pings");
    }

    #[tokio::test]
    async fn the_connection_task_stays_small() {
        let settings = crate::Settings::from_pairs([("security_token", "t")]);
        let gw = Arc::new(Gateway::new(crate::Config::from_settings(&settings).unwrap(), None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let conn = Arc::new(Connection::new(
            crate::hub::Identity::random(),
            peer,
            None,
            crate::hub::Limits::new(8, 1 << 20),
            coarse_now(),
        ));
        let driving = drive(&gw, &conn, Socket::new(stream, 1024));
        // Most of the connection task (see `transport::tests`): 208 bytes
        // in release builds, 216 in debug builds.
        let size = std::mem::size_of_val(&driving);
        assert!(size <= 224, "the driver's future grew to {size} bytes");
    }
}
