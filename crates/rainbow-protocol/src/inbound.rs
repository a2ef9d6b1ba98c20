//! The receiver's half of QoS: what happens to a SEND the peer originates.
//!
//! qos 0 and 1 need no memory here: a qos-1 SEND is processed every time it
//! arrives (at least once) and answered with an ACK. qos 2 is where state
//! lives: [`Inbound`] remembers each qos-2 id from its SEND until the REL, and
//! a SEND with a remembered id is not processed again (exactly once, docs/protocol.md §2).
//! Once the reply is known its encoded REC is remembered too, so a duplicate
//! that arrives after our REC (the REC was lost) gets the same REC again
//! instead of silence: the same bytes, shared, never a new copy, however
//! many duplicates come.
//!
//! The window is bounded, in ids and in the bytes of the remembered RECs.
//! When it is full, ids older than `max_age` (their REL never came) are
//! dropped first; if it is still full the SEND is refused with
//! [`WindowFull`] and the caller closes the connection. The sender's half is
//! [`crate::outbound`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use crate::packet::{Packet, Qos, Reply, SendPacket};

/// Tuning for an [`Inbound`].
#[derive(Clone, Copy, Debug)]
pub struct InboundConfig {
    /// How many qos-2 ids may await their REL at once.
    pub max_unreleased: usize,
    /// How many bytes of remembered RECs they may hold at once (a new qos-2
    /// SEND is refused while they hold more).
    pub max_remembered_bytes: usize,
    /// After this long without a REL an id may be forgotten to make room.
    pub max_age: Duration,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig { max_unreleased: 128, max_remembered_bytes: 16 << 20, max_age: Duration::from_secs(300) }
    }
}

/// The qos-2 window is full of ids whose REL has not come (or of their
/// replies' bytes).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("{0} qos-2 messages await their REL")]
pub struct WindowFull(pub usize);

/// What to do with an incoming SEND.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// New message: process it, then call [`Inbound::answer`] (or
    /// [`Inbound::failed`] if processing failed).
    Process,
    /// A qos-2 duplicate inside the window: do not process it. If the reply is
    /// already known, write this encoded REC again (a shared copy).
    Duplicate(Option<Bytes>),
}

#[derive(Debug)]
struct Pending {
    since: Instant,
    /// The encoded REC, once processing finished.
    rec: Option<Bytes>,
}

/// Receiver-side QoS state for one connection and direction.
#[derive(Debug)]
pub struct Inbound {
    config: InboundConfig,
    unreleased: HashMap<u16, Pending>,
    /// The bytes of the remembered RECs.
    remembered: usize,
}

impl Inbound {
    /// An empty window. Allocates nothing until the first qos-2 SEND.
    pub fn new(config: InboundConfig) -> Self {
        Inbound { config, unreleased: HashMap::new(), remembered: 0 }
    }

    /// Whether qos-2 id `id` awaits its REL (a REL for it is expected).
    pub fn awaits_rel(&self, id: u16) -> bool {
        self.unreleased.contains_key(&id)
    }

    /// Bytes of the RECs remembered for duplicates.
    pub fn remembered_bytes(&self) -> usize {
        self.remembered
    }

    fn forget(&mut self, id: u16) {
        if let Some(Pending { rec: Some(rec), .. }) = self.unreleased.remove(&id) {
            self.remembered -= rec.len();
        }
    }

    /// How many qos-2 ids await their REL.
    pub fn unreleased(&self) -> usize {
        self.unreleased.len()
    }

    /// Classifies an incoming SEND. Any qos-2 SEND whose id is in the window
    /// is a duplicate, whatever its dup bit says: a client that retransmits
    /// without setting dup must not get its message processed twice.
    pub fn on_send(&mut self, now: Instant, send: &SendPacket) -> Result<Disposition, WindowFull> {
        if send.qos != Qos::ExactlyOnce {
            return Ok(Disposition::Process);
        }
        if let Some(pending) = self.unreleased.get(&send.id) {
            return Ok(Disposition::Duplicate(pending.rec.clone()));
        }
        let full = |inb: &Inbound| {
            inb.unreleased.len() >= inb.config.max_unreleased || inb.remembered >= inb.config.max_remembered_bytes
        };
        if full(self) {
            let max_age = self.config.max_age;
            let stale: Vec<u16> = self
                .unreleased
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.since) >= max_age)
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                self.forget(id);
            }
            if full(self) {
                return Err(WindowFull(self.unreleased.len()));
            }
        }
        self.unreleased.insert(send.id, Pending { since: now, rec: None });
        Ok(Disposition::Process)
    }

    /// Processing of `send` produced `reply`: returns the encoded answer to
    /// write (an ACK at qos 1, a REC at qos 2), or `None` at qos 0. A REC is
    /// remembered for duplicates until the REL.
    pub fn answer(&mut self, send_id: u16, qos: Qos, reply: Bytes) -> Option<Bytes> {
        match qos {
            Qos::AtMostOnce => None,
            Qos::AtLeastOnce => Some(Packet::Ack(Reply { id: send_id, payload: reply }).encode()),
            Qos::ExactlyOnce => {
                let rec = Packet::Rec(Reply { id: send_id, payload: reply }).encode();
                if let Some(p) = self.unreleased.get_mut(&send_id) {
                    let old = p.rec.replace(rec.clone()).map_or(0, |r| r.len());
                    self.remembered = self.remembered - old + rec.len();
                }
                Some(rec)
            }
        }
    }

    /// Processing failed: forget a qos-2 id so the sender's retransmission is
    /// processed (docs/protocol.md §4).
    pub fn failed(&mut self, send_id: u16, qos: Qos) {
        if qos == Qos::ExactlyOnce {
            self.forget(send_id);
        }
    }

    /// A REL arrived: forget the id and return the COM to write. Unknown ids
    /// are answered too (our earlier COM may have been lost).
    pub fn on_rel(&mut self, id: u16) -> Packet {
        self.forget(id);
        Packet::Com(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(qos: Qos, id: u16, dup: bool) -> SendPacket {
        SendPacket { message_type: 1, qos, id, dup, payload: Bytes::new() }
    }

    #[test]
    fn qos0_and_qos1_are_always_processed() {
        let now = Instant::now();
        let mut inb = Inbound::new(InboundConfig::default());
        for _ in 0..3 {
            assert_eq!(inb.on_send(now, &send(Qos::AtLeastOnce, 5, true)), Ok(Disposition::Process));
            assert_eq!(inb.on_send(now, &send(Qos::AtMostOnce, 0, false)), Ok(Disposition::Process));
        }
        assert_eq!(inb.unreleased(), 0);
        assert_eq!(
            inb.answer(5, Qos::AtLeastOnce, Bytes::from_static(b"r")),
            Some(Packet::Ack(Reply { id: 5, payload: Bytes::from_static(b"r") }).encode())
        );
        assert_eq!(inb.answer(0, Qos::AtMostOnce, Bytes::new()), None);
    }

    #[test]
    fn qos2_duplicate_before_rel_is_not_processed_again() {
        let now = Instant::now();
        let mut inb = Inbound::new(InboundConfig::default());
        assert_eq!(inb.on_send(now, &send(Qos::ExactlyOnce, 9, false)), Ok(Disposition::Process));
        // Still processing: the duplicate is swallowed.
        assert_eq!(inb.on_send(now, &send(Qos::ExactlyOnce, 9, true)), Ok(Disposition::Duplicate(None)));
        let rec = inb.answer(9, Qos::ExactlyOnce, Bytes::from_static(b"once")).unwrap();
        // Answered: the duplicate gets the same REC again.
        assert_eq!(rec, Packet::Rec(Reply { id: 9, payload: Bytes::from_static(b"once") }).encode());
        let Ok(Disposition::Duplicate(Some(again))) = inb.on_send(now, &send(Qos::ExactlyOnce, 9, true)) else {
            panic!("expected the remembered REC")
        };
        assert_eq!(again, rec);
        assert_eq!(again.as_ptr(), rec.as_ptr(), "the same bytes, not a copy");
        assert!(inb.awaits_rel(9));
        assert_eq!(inb.on_rel(9), Packet::Com(9));
        assert_eq!(inb.remembered_bytes(), 0);
        assert!(!inb.awaits_rel(9));
        // After REL the id is free: a new message with it is processed.
        assert_eq!(inb.on_send(now, &send(Qos::ExactlyOnce, 9, false)), Ok(Disposition::Process));
    }

    #[test]
    fn failed_processing_lets_the_retransmission_through() {
        let now = Instant::now();
        let mut inb = Inbound::new(InboundConfig::default());
        assert_eq!(inb.on_send(now, &send(Qos::ExactlyOnce, 3, false)), Ok(Disposition::Process));
        inb.failed(3, Qos::ExactlyOnce);
        assert_eq!(inb.on_send(now, &send(Qos::ExactlyOnce, 3, true)), Ok(Disposition::Process));
    }

    #[test]
    fn window_is_bounded_and_evicts_only_stale_ids() {
        let t0 = Instant::now();
        let config = InboundConfig { max_unreleased: 2, max_age: Duration::from_secs(60), ..Default::default() };
        let mut inb = Inbound::new(config);
        inb.on_send(t0, &send(Qos::ExactlyOnce, 1, false)).unwrap();
        inb.on_send(t0, &send(Qos::ExactlyOnce, 2, false)).unwrap();
        assert_eq!(inb.on_send(t0, &send(Qos::ExactlyOnce, 3, false)), Err(WindowFull(2)));
        let later = t0 + Duration::from_secs(61);
        assert_eq!(inb.on_send(later, &send(Qos::ExactlyOnce, 3, false)), Ok(Disposition::Process));
        assert_eq!(inb.unreleased(), 1);
    }

    #[test]
    fn remembered_recs_are_bounded_in_bytes() {
        let t0 = Instant::now();
        let config = InboundConfig { max_remembered_bytes: 100, ..Default::default() };
        let mut inb = Inbound::new(config);
        inb.on_send(t0, &send(Qos::ExactlyOnce, 1, false)).unwrap();
        inb.answer(1, Qos::ExactlyOnce, Bytes::from(vec![0u8; 200])).unwrap();
        assert!(inb.remembered_bytes() > 200);
        assert_eq!(inb.on_send(t0, &send(Qos::ExactlyOnce, 2, false)), Err(WindowFull(1)));
        inb.on_rel(1);
        assert_eq!(inb.on_send(t0, &send(Qos::ExactlyOnce, 2, false)), Ok(Disposition::Process));
    }

    #[test]
    fn unknown_rel_is_still_completed() {
        let mut inb = Inbound::new(InboundConfig::default());
        assert_eq!(inb.on_rel(77), Packet::Com(77));
    }
}
