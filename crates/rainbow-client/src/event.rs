//! What the gateway tells us unasked: [`Event`]s, delivered through the
//! bounded [`Events`] stream.
//!
//! The answers to our own sends are not here: they resolve the
//! [`Client::send`](crate::Client::send) futures directly.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use rainbow_protocol::Qos;
use tokio::sync::mpsc;

/// A SEND from the gateway, already answered (ACK or REC) by the time the
/// application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMessage {
    /// The application's message type.
    pub message_type: u16,
    /// The delivery guarantee the gateway asked for.
    pub qos: Qos,
    /// Set when the gateway marks this as a retransmission. A qos-1 message
    /// may be delivered again (at least once); a qos-2 duplicate of a message
    /// still awaiting its REL is never delivered twice.
    pub dup: bool,
    /// The message body, by convention JSON text.
    pub payload: Bytes,
}

/// Something that happened on the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The gateway sent a message (qos 1/2 ones were already answered with the
    /// [`Handler`](crate::Handler)'s reply, or an empty one).
    Message(ServerMessage),
    /// A connection ended. Emitted once per connection, before any reconnect.
    Closed {
        /// The code of the gateway's close frame, or `None` if the TCP
        /// connection dropped without one. When the client closed the
        /// connection itself, this is its own code: 1000 for
        /// [`Client::close`](crate::Client::close), 1002 for an invalid packet
        /// from the gateway, 1008 for a gateway that exceeded
        /// [`ClientConfig::max_unreleased`](crate::ClientConfig::max_unreleased),
        /// 1009 for a message over
        /// [`ClientConfig::max_message_size`](crate::ClientConfig::max_message_size).
        code: Option<u16>,
        /// The close frame's reason, or a description of what happened.
        reason: String,
    },
    /// A new connection replaced one that ended; unanswered sends were
    /// retransmitted on it with `dup = 1`.
    Reconnected,
}

/// Counters shared between the connection task and the handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Messages refused because the event queue was full.
    pub(crate) refused_messages: AtomicU64,
    /// `Closed`/`Reconnected` events lost because the event queue was full.
    pub(crate) dropped_notices: AtomicU64,
}

/// The stream of [`Event`]s of one [`Client`](crate::Client), in arrival order.
///
/// It ends (yields `None`) once the client is finished for good: after
/// [`Client::close`](crate::Client::close), when every `Client` handle is
/// dropped, or when the connection ends and reconnecting is off or gives up.
///
/// # When the application does not drain it
///
/// The queue holds [`ClientConfig::event_capacity`](crate::ClientConfig::event_capacity)
/// events, and the connection task never waits for room (it must keep
/// answering, retransmitting and timing out sends). When the queue is full, a
/// new message from the gateway is *refused* instead of queued:
///
/// - qos 0: it is dropped;
/// - qos 1/2: it is **not answered**, and a qos-2 id is forgotten, so the
///   gateway retransmits it later (with `dup = 1`) and it is delivered then if
///   there is room. Nothing the client acknowledged is ever lost.
///
/// Each refusal is counted in [`Events::refused_messages`]. Two slots are kept
/// for `Closed` and `Reconnected`; if even those are taken the notice is
/// dropped and counted in [`Events::dropped_notices`] (the stream still ends
/// when the client is finished).
///
/// If the `Events` value is dropped, messages keep being answered and are
/// discarded.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
    pub(crate) counters: Arc<Counters>,
}

impl Events {
    /// How many gateway messages were refused (dropped at qos 0, left
    /// unanswered at qos 1/2) because this queue was full.
    pub fn refused_messages(&self) -> u64 {
        self.counters.refused_messages.load(Ordering::Relaxed)
    }

    /// How many `Closed`/`Reconnected` events were dropped because this queue
    /// was full.
    pub fn dropped_notices(&self) -> u64 {
        self.counters.dropped_notices.load(Ordering::Relaxed)
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// How many queue slots only `Closed`/`Reconnected` may use.
pub(crate) const NOTICE_SLOTS: usize = 2;

/// The connection task's end of the event queue; it never waits.
#[derive(Debug)]
pub(crate) struct EventSink {
    tx: mpsc::Sender<Event>,
    counters: Arc<Counters>,
}

/// The result of trying to make room for a message.
pub(crate) enum Room<'a> {
    /// Queue the message through this permit.
    Yes(mpsc::Permit<'a, Event>),
    /// Nobody listens: process the message and discard it.
    NoListener,
    /// The queue is full: refuse the message.
    Full,
}

impl EventSink {
    /// A queue for `capacity` messages plus the notice slots.
    pub(crate) fn new(capacity: usize) -> (EventSink, Events) {
        let (tx, rx) = mpsc::channel(capacity.max(1) + NOTICE_SLOTS);
        let counters = Arc::new(Counters::default());
        (EventSink { tx, counters: counters.clone() }, Events { rx, counters })
    }

    /// Reserves a slot for a message, leaving the notice slots free. The task
    /// is the only sender, so the room seen here cannot shrink before use.
    pub(crate) fn room_for_message(&self) -> Room<'_> {
        if self.tx.is_closed() {
            return Room::NoListener;
        }
        if self.tx.capacity() <= NOTICE_SLOTS {
            self.counters.refused_messages.fetch_add(1, Ordering::Relaxed);
            return Room::Full;
        }
        match self.tx.try_reserve() {
            Ok(permit) => Room::Yes(permit),
            Err(mpsc::error::TrySendError::Closed(())) => Room::NoListener,
            Err(mpsc::error::TrySendError::Full(())) => {
                self.counters.refused_messages.fetch_add(1, Ordering::Relaxed);
                Room::Full
            }
        }
    }

    /// Queues a `Closed` or `Reconnected` notice if there is any room.
    pub(crate) fn notice(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            self.counters.dropped_notices.fetch_add(1, Ordering::Relaxed);
        }
    }
}
