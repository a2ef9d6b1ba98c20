//! Delivery of one backend `/send/` at qos 1/2 to many connections, and the
//! aggregation of their answers (spec §8).
//!
//! A [`Publication`] is shared by every receiver's outbox; each receiver
//! settles it exactly once: answered (ACK/REC with its reply), or failed
//! (connection gone, outbox full, deadline passed). The API handler awaits
//! [`Tracker::wait`] until all have settled or the deadline passes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
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

    fn settle(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// Waits until every receiver settled or `deadline` passes.
    pub async fn wait(&self, deadline: Instant) -> Aggregate {
        let complete = self.pending.load(Ordering::Acquire) == 0
            || tokio::time::timeout_at(deadline.into(), self.done.notified()).await.is_ok();
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

    #[tokio::test]
    async fn stops_at_the_deadline() {
        let t = Tracker::new(2);
        t.answered(Bytes::from_static(b"x"));
        let a = t.wait(Instant::now() + Duration::from_millis(20)).await;
        assert_eq!(a.answered, 1);
        assert!(!a.complete);
    }
}
