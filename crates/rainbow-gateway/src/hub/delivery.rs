//! Delivery of one backend `/send/` at qos 1/2 to many connections, and the
//! aggregation of their answers (docs/protocol.md §8).
//!
//! A [`Publication`] is shared by every receiver's outbox; each receiver
//! settles it exactly once: answered (ACK/REC with its reply), failed
//! (connection gone, outbox full), or expired (the deadline passed with the
//! receiver still silent, which makes the aggregate incomplete, as if the
//! API call's own deadline had come first). The API handler awaits
//! [`Tracker::wait`] until all have settled or the deadline passes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use rainbow_protocol::Qos;
use tokio::sync::Notify;

/// A qos 1/2 message on its way to many receivers.
#[derive(Debug)]
pub struct Publication {
    /// Message type.
    pub message_type: u16,
    /// qos 1 or 2.
    pub qos: Qos,
    /// Payload, shared by all receivers.
    pub payload: Bytes,
    /// When to stop retransmitting and give up.
    pub deadline: Instant,
    /// The aggregation of answers.
    pub tracker: Tracker,
}

/// Counts answers from the receivers of one publication.
#[derive(Debug)]
pub struct Tracker {
    pending: AtomicUsize,
    answered: AtomicUsize,
    /// A receiver was still silent at the deadline.
    expired: AtomicBool,
    reply: Mutex<Option<Bytes>>,
    done: Notify,
}

/// The aggregated result of a publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Receivers that answered.
    pub answered: usize,
    /// The first non-empty reply payload.
    pub reply: Option<Bytes>,
    /// Whether every receiver settled before the deadline.
    pub complete: bool,
}

impl Tracker {
    /// A tracker expecting `receivers` settlements.
    pub fn new(receivers: usize) -> Tracker {
        Tracker {
            pending: AtomicUsize::new(receivers),
            answered: AtomicUsize::new(0),
            expired: AtomicBool::new(false),
            reply: Mutex::new(None),
            done: Notify::new(),
        }
    }

    /// One receiver answered with `payload`.
    pub fn answered(&self, payload: Bytes) {
        if !payload.is_empty() {
            let mut reply = self.reply.lock().unwrap_or_else(|p| p.into_inner());
            if reply.is_none() {
                *reply = Some(payload);
            }
        }
        self.answered.fetch_add(1, Ordering::AcqRel);
        self.settle();
    }

    /// One receiver will never answer.
    pub fn failed(&self) {
        self.settle();
    }

    /// One receiver was still silent when the deadline passed. Whichever
    /// notices the deadline first (this receiver's connection or the
    /// waiting call), the aggregate is the same: not complete.
    pub fn expired(&self) {
        self.expired.store(true, Ordering::Release);
        self.settle();
    }

    fn settle(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// Waits until every receiver settled or `deadline` passes.
    pub async fn wait(&self, deadline: Instant) -> Aggregate {
        let settled = self.pending.load(Ordering::Acquire) == 0
            || tokio::time::timeout_at(deadline.into(), self.done.notified()).await.is_ok();
        let complete = settled && !self.expired.load(Ordering::Acquire);
        Aggregate {
            answered: self.answered.load(Ordering::Acquire),
            reply: self.reply.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn aggregates_answers_and_keeps_the_first_reply() {
        let t = Tracker::new(3);
        t.answered(Bytes::new());
        t.answered(Bytes::from_static(b"first"));
        t.failed();
        let a = t.wait(Instant::now() + Duration::from_secs(1)).await;
        assert_eq!(a, Aggregate { answered: 2, reply: Some(Bytes::from_static(b"first")), complete: true });
    }

    /// Found while writing docs/protocol.md: a silent receiver's connection
    /// giving up at the deadline raced the API call's own timeout, and won
    /// half of the time, answering `connections: 0` instead of `timeout`.
    #[tokio::test]
    async fn a_receiver_silent_until_the_deadline_makes_it_incomplete() {
        let t = Tracker::new(1);
        t.expired();
        let a = t.wait(Instant::now() + Duration::from_secs(1)).await;
        assert_eq!(a, Aggregate { answered: 0, reply: None, complete: false });
    }

    #[tokio::test]
    async fn stops_at_the_deadline() {
        let t = Tracker::new(2);
        t.answered(Bytes::from_static(b"x"));
        let a = t.wait(Instant::now() + Duration::from_millis(20)).await;
        assert_eq!(a.answered, 1);
        assert!(!a.complete);
    }
}
