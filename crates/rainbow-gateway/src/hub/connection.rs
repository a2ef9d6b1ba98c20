//! The state one client connection shares with the rest of the gateway.
//!
//! A [`Connection`] is what the hub, the API and forward tasks hold: the
//! identity, the context (cookie), the channel list, the outbox of things to
//! write to the client, the forward queue of its messages waiting for the
//! backend, and liveness stamps. It owns no socket: the WebSocket driver in
//! `transport` owns that, and is woken through [`Connection::poll_woken`]
//! whenever the outbox changes or the connection is told to close.
//!
//! Both queues are bounded, in items and in bytes ([`Limits`]), whatever the
//! client does: a push that finds the outbox full, or an answer that finds
//! it over its bytes (a client sending requests without reading their
//! answers), closes the connection with 1008; a full forward queue stops the
//! driver reading the socket (backpressure). Every item counts its payload
//! plus [`ITEM_OVERHEAD`], so a flood of tiny answers is bounded too.
//!
//! Idle cost is the point of this layout: every queue is an empty `VecDeque`
//! (no allocation) until used, no timer exists per connection, the mutable
//! parts share one lock, and rarely used parts (a close order) are boxed.
//! The whole struct is one allocation per connection (280 bytes with the
//! `Arc` counts; see `a_connection_stays_small`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use rainbow_protocol::{Qos, SendPacket};

use super::delivery::Publication;
use super::identity::Identity;
use crate::metrics::DisconnectReason;

/// Something to write to the client.
///
/// Two kinds share the outbox, in order: **pushes**, the backend's messages
/// ([`Outgoing::Push`], [`Outgoing::Publish`]), and **answers**, everything
/// the protocol owes the client (the answer to its own message, REL, COM,
/// retransmissions, pings). While a qos 1/2 push waits for a free
/// `max_in_flight` slot, pushes behind it wait too (their order holds), but
/// answers are taken past them: a client is never kept waiting for the reply
/// to its own message by pushes it has not acknowledged yet.
#[derive(Debug)]
pub enum Outgoing {
    /// A qos-0 push, encoded (it needs no QoS state).
    Push(Bytes),
    /// A qos 1/2 push: the driver allocates its id and tracks the answer.
    Publish(Arc<Publication>),
    /// A forward finished: answer the client's SEND (`reply: None` = failed).
    Forwarded {
        /// The client's message id.
        id: u16,
        /// The client's qos.
        qos: Qos,
        /// The backend's reply, or `None` when forwarding failed.
        reply: Option<Bytes>,
    },
    /// An encoded protocol answer: REL, COM, a repeated REC, a retransmitted
    /// SEND.
    Control(Bytes),
    /// A liveness ping.
    Ping,
}

impl Outgoing {
    /// Whether this is one of the backend's pushes (see [`Outgoing`]).
    pub fn is_push(&self) -> bool {
        matches!(self, Outgoing::Push(_) | Outgoing::Publish(_))
    }
}

/// Why and how the gateway ends a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseOrder {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason (short, sent to the client; at most 123 bytes).
    pub reason: Cow<'static, str>,
    /// For metrics.
    pub why: DisconnectReason,
}

impl CloseOrder {
    /// An order with a reason made at run time, cut to the 123 bytes a close
    /// frame can carry.
    pub fn new(code: u16, reason: String, why: DisconnectReason) -> CloseOrder {
        let mut reason = reason;
        if reason.len() > 123 {
            let mut cut = 123;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        CloseOrder { code, reason: Cow::Owned(reason), why }
    }

    /// Close 1008 "slow consumer".
    pub const SLOW_CONSUMER: CloseOrder =
        CloseOrder { code: 1008, reason: Cow::Borrowed("slow consumer"), why: DisconnectReason::SlowConsumer };
    /// Close 1008 "slow consumer: answers not read": the client kept sending
    /// requests (or duplicates) without reading what they were answered.
    pub const UNREAD_ANSWERS: CloseOrder = CloseOrder {
        code: 1008,
        reason: Cow::Borrowed("slow consumer: answers not read"),
        why: DisconnectReason::SlowConsumer,
    };
    /// Close 1000 with `reason`, ordered by the backend.
    pub fn normal(reason: String) -> CloseOrder {
        CloseOrder::new(1000, reason, DisconnectReason::Backend)
    }
    /// Close 1001 "server shutting down".
    pub const SHUTDOWN: CloseOrder =
        CloseOrder { code: 1001, reason: Cow::Borrowed("server shutting down"), why: DisconnectReason::Shutdown };
    /// Close 1001 "ping timeout".
    pub const PING_TIMEOUT: CloseOrder =
        CloseOrder { code: 1001, reason: Cow::Borrowed("ping timeout"), why: DisconnectReason::PingTimeout };
}

/// What one queued item costs beyond its payload, as the byte bounds count
/// it (the queue slot and the bookkeeping around it).
pub const ITEM_OVERHEAD: usize = 64;

/// The bounds of one connection's queues (from `outbox_capacity`,
/// `max_queued_bytes` and `max_pending_forwards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pushes waiting in the outbox.
    pub pushes: u32,
    /// Bytes waiting in the outbox (pushes and answers), and bytes waiting
    /// in the forward queue, each.
    pub bytes: u32,
}

impl Limits {
    /// Limits from configuration values (saturated to `u32`).
    pub fn new(pushes: usize, bytes: usize) -> Limits {
        Limits { pushes: u32::try_from(pushes).unwrap_or(u32::MAX), bytes: u32::try_from(bytes).unwrap_or(u32::MAX) }
    }
}

/// The outbox refused an item.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue was full: the connection is now closing as a slow consumer.
    Full,
    /// The connection is closing or closed.
    Closed,
}

/// What a drain takes from the forward queue next.
#[derive(Debug)]
pub enum NextForward {
    /// A message to forward; `wake_reader` when the driver had stopped
    /// reading for lack of room and must be told there is some now.
    Message {
        /// The message.
        send: SendPacket,
        /// Wake the driver (see [`NextForward::Message`]).
        wake_reader: bool,
    },
    /// Nothing left: this drain has ended (and was counted out).
    Done,
}

/// The connection's mutable state, under one lock: the context, the outbox
/// and the forward queue.
#[derive(Debug, Default)]
struct Inner {
    cookie: Option<Arc<str>>,
    /// To the client, in order (see [`Outgoing`]).
    outbox: VecDeque<Outgoing>,
    /// How many of `outbox` are pushes: only those count against
    /// `Limits::pushes`.
    pushes: u32,
    /// What `outbox` holds, as [`cost`] counts it.
    outbox_bytes: u32,
    /// Boxed: rare, and 32 bytes inline.
    close: Option<Box<CloseOrder>>,
    /// The driver has exited; nothing will be written any more.
    finished: bool,
    /// Client messages not yet picked up by a drain (`transport::forward`).
    forwards: VecDeque<SendPacket>,
    /// What `forwards` holds, as [`cost`] counts it.
    forward_bytes: u32,
    /// Drains running for this connection.
    drains: u16,
    /// The driver found the forward queue full and stopped reading the
    /// socket: the drain that next takes a message must wake it. Without this
    /// flag every message taken would wake the driver, for nothing but in the
    /// rare case of backpressure.
    reader_paused: bool,
    /// Someone waits in [`Connection::forwards_done`] for the last drain to
    /// end.
    done_waited: bool,
}

/// What an item costs against the byte bounds.
fn cost(payload: usize) -> u32 {
    u32::try_from(payload.saturating_add(ITEM_OVERHEAD)).unwrap_or(u32::MAX)
}

impl Outgoing {
    /// Its cost against the outbox's byte bound.
    fn cost(&self) -> u32 {
        cost(match self {
            Outgoing::Push(frame) | Outgoing::Control(frame) => frame.len(),
            Outgoing::Publish(p) => p.payload.len(),
            Outgoing::Forwarded { reply, .. } => reply.as_ref().map_or(0, Bytes::len),
            Outgoing::Ping => 0,
        })
    }
}

/// One client connection, as shared with the hub and the API.
#[derive(Debug)]
pub struct Connection {
    identity: Identity,
    peer: SocketAddr,
    limits: Limits,
    inner: Mutex<Inner>,
    channels: Mutex<Vec<Arc<str>>>,
    /// The driver's waker, and whether it was woken since it last looked:
    /// one waiter only, so no waiter list (and no wait future in the driver).
    waker: AtomicWaker,
    woken: AtomicBool,
    /// Coarse clock second of the last frame from the client.
    last_seen: AtomicU32,
    /// Coarse clock second a ping was sent, 0 when none is outstanding.
    ping_sent: AtomicU32,
    /// The hub let go of this connection: it can never be subscribed again.
    /// Written under the hub's channel lock.
    gone: AtomicBool,
    /// The driver stopped reading (the forward queue is full): the client's
    /// pongs cannot be seen, so liveness is not judged meanwhile. Mirrors
    /// `Inner::reader_paused`, for the sweep, which takes no lock.
    reading_paused: AtomicBool,
}

/// Locks a mutex, recovering from poisoning: every critical section here
/// leaves the data consistent, so a panic elsewhere must not wedge the
/// connection.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    /// A new connection whose queues are bounded by `limits`.
    pub fn new(identity: Identity, peer: SocketAddr, cookie: Option<Arc<str>>, limits: Limits, now: u32) -> Connection {
        Connection {
            identity,
            peer,
            limits,
            inner: Mutex::new(Inner { cookie, ..Inner::default() }),
            channels: Mutex::new(Vec::new()),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            last_seen: AtomicU32::new(now),
            ping_sent: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            reading_paused: AtomicBool::new(false),
        }
    }

    /// The identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The identity, by reference (for the hub's identity map).
    pub(super) fn identity_ref(&self) -> &Identity {
        &self.identity
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The current context (cookie), if any.
    pub fn cookie(&self) -> Option<Arc<str>> {
        lock(&self.inner).cookie.clone()
    }

    /// Replaces the context; an empty value clears it.
    pub fn set_cookie(&self, cookie: &str) {
        lock(&self.inner).cookie = if cookie.is_empty() { None } else { Some(Arc::from(cookie)) };
    }

    /// Whether the hub has let go of this connection (see [`super::Hub::unregister`]).
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Marks the connection let go of; only the hub calls this, under its
    /// channel lock.
    pub(super) fn set_gone(&self) {
        self.gone.store(true, Ordering::Release);
    }

    /// The channels this connection is subscribed to. Only the hub mutates
    /// this list, under its channel lock.
    pub(super) fn channels(&self) -> MutexGuard<'_, Vec<Arc<str>>> {
        lock(&self.channels)
    }

    /// How many channels this connection is subscribed to.
    pub fn channel_count(&self) -> usize {
        lock(&self.channels).len()
    }

    /// Queues a push for the client. A full outbox (in pushes or bytes)
    /// orders a close with 1008 "slow consumer": the client is not reading,
    /// and holding more for it would only grow memory.
    pub fn push(&self, item: Outgoing) -> Result<(), PushError> {
        debug_assert!(item.is_push());
        let cost = item.cost();
        let mut inner = lock(&self.inner);
        if inner.close.is_some() || inner.finished {
            return Err(PushError::Closed);
        }
        if inner.pushes >= self.limits.pushes || inner.outbox_bytes.saturating_add(cost) > self.limits.bytes {
            inner.close = Some(Box::new(CloseOrder::SLOW_CONSUMER));
            drop(inner);
            self.wake();
            return Err(PushError::Full);
        }
        inner.pushes += 1;
        inner.outbox_bytes += cost;
        inner.outbox.push_back(item);
        drop(inner);
        self.wake();
        Ok(())
    }

    /// Queues an answer (see [`Outgoing`]). Answers are never refused for
    /// lack of room alone, but one that would take the outbox over its bytes
    /// closes the connection with 1008: the client sends requests without
    /// reading their answers.
    pub fn push_reply(&self, item: Outgoing) {
        if self.queue_reply(item) {
            self.wake();
        }
    }

    /// As [`Connection::push_reply`], without waking the driver: for code the
    /// driver itself runs, which looks at the outbox before it sleeps.
    pub fn push_reply_quietly(&self, item: Outgoing) {
        self.queue_reply(item);
    }

    fn queue_reply(&self, item: Outgoing) -> bool {
        debug_assert!(!item.is_push());
        let cost = item.cost();
        let mut inner = lock(&self.inner);
        if inner.finished {
            return false;
        }
        if inner.outbox_bytes.saturating_add(cost) > self.limits.bytes {
            if inner.close.is_none() {
                inner.close = Some(Box::new(CloseOrder::UNREAD_ANSWERS));
            }
            return true;
        }
        inner.outbox_bytes += cost;
        inner.outbox.push_back(item);
        true
    }

    /// Orders the connection closed. The first order wins.
    pub fn close(&self, order: CloseOrder) {
        let mut inner = lock(&self.inner);
        if inner.close.is_none() && !inner.finished {
            inner.close = Some(Box::new(order));
        }
        drop(inner);
        self.wake();
    }

    /// The pending close order, if any.
    pub fn close_order(&self) -> Option<CloseOrder> {
        lock(&self.inner).close.as_deref().cloned()
    }

    /// Whether a close was ordered or the connection has finished.
    pub fn is_closing(&self) -> bool {
        let inner = lock(&self.inner);
        inner.close.is_some() || inner.finished
    }

    /// Takes the next item to write: the oldest, or, when `pushes` is false
    /// (a push waits for a free `max_in_flight` slot), the oldest answer.
    pub fn pop(&self, pushes: bool) -> Option<Outgoing> {
        let mut inner = lock(&self.inner);
        let item = if pushes {
            inner.outbox.pop_front()?
        } else {
            // Only while a push waits: at most `outbox_capacity` pushes to pass.
            let at = inner.outbox.iter().position(|item| !item.is_push())?;
            inner.outbox.remove(at)?
        };
        if item.is_push() {
            inner.pushes -= 1;
        }
        inner.outbox_bytes = inner.outbox_bytes.saturating_sub(item.cost());
        Some(item)
    }

    /// Puts a push back at the front: it waits for a free slot, and keeps
    /// its place before the pushes that came after it.
    pub fn hold(&self, item: Outgoing) {
        let mut inner = lock(&self.inner);
        inner.pushes += 1;
        inner.outbox_bytes = inner.outbox_bytes.saturating_add(item.cost());
        inner.outbox.push_front(item);
    }

    /// Whether anything waits to be written ([`Connection::pop`]'s `pushes`).
    pub fn has_outgoing(&self, pushes: bool) -> bool {
        let inner = lock(&self.inner);
        if pushes { !inner.outbox.is_empty() } else { inner.outbox.iter().any(|item| !item.is_push()) }
    }

    /// Marks the connection finished and returns what was never written; the
    /// messages not yet forwarded are dropped.
    pub fn finish(&self) -> VecDeque<Outgoing> {
        let mut inner = lock(&self.inner);
        inner.finished = true;
        inner.pushes = 0;
        inner.outbox_bytes = 0;
        inner.forwards.clear();
        inner.forward_bytes = 0;
        std::mem::take(&mut inner.outbox)
    }

    /// Ready when the outbox changed or a close was ordered since the last
    /// time it was ready. A wake-up sent while nobody waited is kept, so none
    /// is lost. Only the connection's driver may poll it (one waker).
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Resolves as [`Connection::poll_woken`] does.
    async fn woken(&self) {
        std::future::poll_fn(|cx| self.poll_woken(cx)).await
    }

    /// Wakes the driver (for example when the forward queue drained).
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Queues a client message for forwarding. Returns whether a new drain
    /// must start (fewer than `concurrency` run); it is then counted in.
    pub fn queue_forward(&self, send: SendPacket, concurrency: usize) -> bool {
        let mut inner = lock(&self.inner);
        inner.forward_bytes = inner.forward_bytes.saturating_add(cost(send.payload.len()));
        inner.forwards.push_back(send);
        let start = usize::from(inner.drains) < concurrency;
        if start {
            inner.drains += 1;
        }
        start
    }

    /// The next message for a drain, or [`NextForward::Done`] (the drain is
    /// then counted out, and a waiter of [`Connection::forwards_done`] woken
    /// once none is left).
    pub fn next_forward(&self) -> NextForward {
        let mut inner = lock(&self.inner);
        if let Some(send) = inner.forwards.pop_front() {
            inner.forward_bytes = inner.forward_bytes.saturating_sub(cost(send.payload.len()));
            let wake_reader = std::mem::take(&mut inner.reader_paused);
            if wake_reader {
                self.reading_paused.store(false, Ordering::Relaxed);
            }
            return NextForward::Message { send, wake_reader };
        }
        inner.drains -= 1;
        let wake = inner.drains == 0 && std::mem::take(&mut inner.done_waited);
        drop(inner);
        if wake {
            self.wake();
        }
        NextForward::Done
    }

    /// Whether the forward queue has room for another message: fewer than
    /// `max` wait, and less than the byte bound. When it has not, the reader
    /// counts as paused, so that the drain that makes room wakes the driver;
    /// `paused` is called the first time.
    pub fn forward_room(&self, max: usize, paused: impl FnOnce()) -> bool {
        let mut inner = lock(&self.inner);
        let room = inner.forwards.len() < max && inner.forward_bytes < self.limits.bytes;
        if !room && !inner.reader_paused {
            inner.reader_paused = true;
            self.reading_paused.store(true, Ordering::Relaxed);
            paused();
        }
        room
    }

    /// Resolves when no drain of this connection runs any more. Only the
    /// connection's own task may wait (it shares the driver's wake-up, and
    /// the driver has ended by then).
    pub async fn forwards_done(&self) {
        loop {
            {
                let mut inner = lock(&self.inner);
                if inner.drains == 0 {
                    return;
                }
                inner.done_waited = true;
            }
            self.woken().await;
        }
    }

    /// Records client activity at coarse second `now`.
    pub fn touch(&self, now: u32) {
        self.last_seen.store(now, Ordering::Relaxed);
        self.ping_sent.store(0, Ordering::Relaxed);
    }

    /// Liveness check at coarse second `now`: pings a connection idle for
    /// `ping_after` seconds, and closes one whose ping is older than
    /// `pong_within` seconds. Run by the hub's sweeper, not by a timer per
    /// connection.
    pub fn check_liveness(&self, now: u32, ping_after: u32, pong_within: u32) {
        if self.reading_paused.load(Ordering::Relaxed) {
            // Our own backpressure: the client may be answering pings we do
            // not read. It counts as active until reading resumes.
            self.touch(now);
            return;
        }
        let ping_sent = self.ping_sent.load(Ordering::Relaxed);
        if ping_sent != 0 {
            if now.saturating_sub(ping_sent) >= pong_within {
                self.close(CloseOrder::PING_TIMEOUT);
            }
        } else if now.saturating_sub(self.last_seen.load(Ordering::Relaxed)) >= ping_after {
            self.ping_sent.store(now.max(1), Ordering::Relaxed);
            self.push_reply(Outgoing::Ping);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of these per connection: 264 bytes, plus 16 of `Arc` counts.
    #[test]
    fn a_connection_stays_small() {
        assert!(std::mem::size_of::<Connection>() <= 264, "{}", std::mem::size_of::<Connection>());
    }
}
