//! The sender's half of QoS: what happens to a SEND we originate.
//!
//! [`Outbound`] allocates message ids (1..=65534, wrapping, skipping ids still
//! in flight), remembers every qos 1/2 SEND until it is answered, retransmits it
//! with `dup = 1` every `retransmit_interval` until its deadline, and drives the
//! qos-2 tail (REC → REL → COM, retransmitting REL until COM arrives).
//!
//! It does no IO and reads no clock: callers pass `now` in and write out the
//! packets it returns. Each SEND carries a caller-chosen tag `T` (a request
//! handle, an aggregation slot...) which comes back when the SEND is answered
//! or given up on. The receiver's half (dedup of qos-2 SENDs) is
//! [`crate::inbound`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use crate::packet::{Packet, Qos, SendPacket};

/// The highest message id; ids wrap from here back to 1 (docs/protocol.md §2).
pub const MAX_MESSAGE_ID: u16 = 65534;

/// Tuning for an [`Outbound`].
#[derive(Clone, Copy, Debug)]
pub struct OutboundConfig {
    /// How long to wait for ACK/REC (or COM) before retransmitting. The
    /// original server used 3 s.
    pub retransmit_interval: Duration,
    /// How many qos 1/2 SENDs may await an answer at once.
    pub max_in_flight: usize,
    /// How long a REL waits for its COM (retransmitted meanwhile) before the id
    /// is released anyway.
    pub release_lifetime: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            retransmit_interval: Duration::from_secs(3),
            max_in_flight: 256,
            release_lifetime: Duration::from_secs(10),
        }
    }
}

/// [`Outbound::send`] found `max_in_flight` SENDs already awaiting answers.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("{0} messages already await an acknowledgement")]
pub struct InFlightFull(pub usize);

/// What a timer tick asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Timeout<T> {
    /// Write this packet again (a SEND with `dup = 1`, or a REL).
    Retransmit(Packet),
    /// The SEND reached its deadline unanswered; its id is free again.
    Expired(T),
}

/// What an answer from the peer resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct Answered<T> {
    /// The tag given to [`Outbound::send`].
    pub tag: T,
    /// The reply payload carried by the ACK or REC.
    pub payload: Bytes,
}

#[derive(Debug)]
enum Stage<T> {
    /// SEND written, waiting for ACK (qos 1) or REC (qos 2).
    AwaitingReply { send: SendPacket, tag: T, deadline: Instant },
    /// REC received and REL written, waiting for COM.
    AwaitingCom { until: Instant },
}

#[derive(Debug)]
struct Entry<T> {
    stage: Stage<T>,
    next_retransmit: Instant,
}

/// Sender-side QoS state for one connection and direction.
#[derive(Debug)]
pub struct Outbound<T> {
    config: OutboundConfig,
    last_id: u16,
    in_flight: HashMap<u16, Entry<T>>,
}

impl<T> Outbound<T> {
    /// An empty state machine. Allocates nothing until the first qos > 0 SEND.
    /// `max_in_flight` is capped below the number of ids so allocation always
    /// finds a free one.
    pub fn new(mut config: OutboundConfig) -> Self {
        config.max_in_flight = config.max_in_flight.clamp(1, usize::from(MAX_MESSAGE_ID) - 1);
        Outbound { config, last_id: 0, in_flight: HashMap::new() }
    }

    /// A sender whose ids continue after `last_id` (from
    /// [`Outbound::last_id`] of an earlier one): a driver that drops its idle
    /// state does not reuse an id soon after a peer may have last seen it.
    pub fn continuing(config: OutboundConfig, last_id: u16) -> Self {
        let mut outbound = Outbound::new(config);
        outbound.last_id = last_id.min(MAX_MESSAGE_ID);
        outbound
    }

    /// The last id allocated (0 before the first).
    pub fn last_id(&self) -> u16 {
        self.last_id
    }

    /// How many ids are in use (awaiting a reply or a COM).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether id `id` is in flight (an answer to it is expected).
    pub fn awaits(&self, id: u16) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// Whether another qos > 0 SEND would be accepted now.
    pub fn has_capacity(&self) -> bool {
        self.in_flight.len() < self.config.max_in_flight
    }

    /// Starts a SEND. qos 0 returns the packet and drops `tag` (nothing will
    /// answer). qos 1/2 allocate an id and remember the SEND until it is
    /// answered or `deadline` passes. When `max_in_flight` SENDs already
    /// await answers, the tag is handed back with the error.
    pub fn send(
        &mut self,
        now: Instant,
        message_type: u16,
        qos: Qos,
        payload: Bytes,
        deadline: Instant,
        tag: T,
    ) -> Result<Packet, (InFlightFull, T)> {
        if qos == Qos::AtMostOnce {
            return Ok(Packet::Send(SendPacket { message_type, qos, id: 0, dup: false, payload }));
        }
        if !self.has_capacity() {
            return Err((InFlightFull(self.in_flight.len()), tag));
        }
        let id = self.allocate_id();
        let send = SendPacket { message_type, qos, id, dup: false, payload };
        let packet = Packet::Send(send.clone());
        let next_retransmit = now + self.config.retransmit_interval;
        self.in_flight.insert(id, Entry { stage: Stage::AwaitingReply { send, tag, deadline }, next_retransmit });
        Ok(packet)
    }

    fn allocate_id(&mut self) -> u16 {
        // Terminates: new() caps max_in_flight below the 65534 ids and send()
        // checks capacity first, so at least one id is free.
        loop {
            self.last_id = if self.last_id >= MAX_MESSAGE_ID { 1 } else { self.last_id + 1 };
            if !self.in_flight.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    /// An ACK arrived. Returns the answered SEND's tag, or `None` for an id we
    /// are not waiting on (a late or duplicate ACK, which is harmless).
    pub fn on_ack(&mut self, id: u16, payload: Bytes) -> Option<Answered<T>> {
        match self.in_flight.get(&id) {
            Some(Entry { stage: Stage::AwaitingReply { send, .. }, .. }) if send.qos == Qos::AtLeastOnce => {}
            _ => return None,
        }
        match self.in_flight.remove(&id) {
            Some(Entry { stage: Stage::AwaitingReply { tag, .. }, .. }) => Some(Answered { tag, payload }),
            _ => None,
        }
    }

    /// A REC arrived. Always returns the REL to write (the peer may be
    /// repeating a REC whose REL was lost), and the answered tag the first time.
    pub fn on_rec(&mut self, now: Instant, id: u16, payload: Bytes) -> (Option<Answered<T>>, Packet) {
        let rel = Packet::Rel(id);
        let Some(entry) = self.in_flight.get_mut(&id) else {
            return (None, rel);
        };
        let answered = match &entry.stage {
            Stage::AwaitingReply { send, .. } if send.qos == Qos::ExactlyOnce => {
                let waiting = Stage::AwaitingCom { until: now + self.config.release_lifetime };
                match std::mem::replace(&mut entry.stage, waiting) {
                    Stage::AwaitingReply { tag, .. } => Some(Answered { tag, payload }),
                    Stage::AwaitingCom { .. } => None,
                }
            }
            // A repeated REC: our REL is being re-sent now, so the next
            // retransmission of it can wait a full interval.
            Stage::AwaitingCom { .. } => None,
            // A REC for a qos-1 SEND is the peer's mistake: leave the entry
            // and its retransmission schedule alone.
            Stage::AwaitingReply { .. } => return (None, rel),
        };
        entry.next_retransmit = now + self.config.retransmit_interval;
        (answered, rel)
    }

    /// A COM arrived: the qos-2 exchange is over and its id is free.
    /// Returns whether a COM was awaited for this id.
    pub fn on_com(&mut self, id: u16) -> bool {
        if let Some(Entry { stage: Stage::AwaitingCom { .. }, .. }) = self.in_flight.get(&id) {
            self.in_flight.remove(&id);
            return true;
        }
        false
    }

    /// The earliest instant at which [`Outbound::on_timeout`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .map(|e| match &e.stage {
                Stage::AwaitingReply { deadline, .. } => e.next_retransmit.min(*deadline),
                Stage::AwaitingCom { until } => e.next_retransmit.min(*until),
            })
            .min()
    }

    /// Runs every timer due at `now`: retransmissions and expiries.
    pub fn on_timeout(&mut self, now: Instant, mut emit: impl FnMut(Timeout<T>)) {
        let interval = self.config.retransmit_interval;
        let mut finished = Vec::new();
        for (&id, entry) in self.in_flight.iter_mut() {
            let over = match &entry.stage {
                Stage::AwaitingReply { deadline, .. } => *deadline <= now,
                Stage::AwaitingCom { until } => *until <= now,
            };
            if over {
                finished.push(id);
            } else if entry.next_retransmit <= now {
                entry.next_retransmit = now + interval;
                emit(Timeout::Retransmit(match &entry.stage {
                    Stage::AwaitingReply { send, .. } => Packet::Send(SendPacket { dup: true, ..send.clone() }),
                    Stage::AwaitingCom { .. } => Packet::Rel(id),
                }));
            }
        }
        for id in finished {
            if let Some(Entry { stage: Stage::AwaitingReply { tag, .. }, .. }) = self.in_flight.remove(&id) {
                emit(Timeout::Expired(tag));
            }
        }
    }

    /// Gives up on everything (the connection is gone) and returns the tags of
    /// SENDs that were never answered.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.in_flight.drain().filter_map(|(_, e)| match e.stage {
            Stage::AwaitingReply { tag, .. } => Some(tag),
            Stage::AwaitingCom { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn id_of(p: &Packet) -> u16 {
        match p {
            Packet::Send(s) => s.id,
            other => panic!("not a send: {other:?}"),
        }
    }

    #[test]
    fn qos0_is_not_tracked() {
        let t0 = Instant::now();
        let mut out = Outbound::new(OutboundConfig::default());
        let p = out.send(t0, 7, Qos::AtMostOnce, Bytes::new(), t0 + secs(10), "a").unwrap();
        assert_eq!(id_of(&p), 0);
        assert_eq!(out.in_flight(), 0);
        assert_eq!(out.next_deadline(), None);
    }

    #[test]
    fn qos1_retransmits_with_dup_until_acked() {
        let t0 = Instant::now();
        let mut out = Outbound::new(OutboundConfig::default());
        let p = out.send(t0, 7, Qos::AtLeastOnce, Bytes::from_static(b"x"), t0 + secs(10), "a").unwrap();
        let id = id_of(&p);
        assert_eq!(id, 1);
        assert_eq!(out.next_deadline(), Some(t0 + secs(3)));

        let mut fired = Vec::new();
        out.on_timeout(t0 + secs(2), |t| fired.push(t));
        assert!(fired.is_empty());
        out.on_timeout(t0 + secs(3), |t| fired.push(t));
        match &fired[..] {
            [Timeout::Retransmit(Packet::Send(s))] => assert!(s.dup && s.id == id && s.payload == "x"),
            other => panic!("{other:?}"),
        }
        let answered = out.on_ack(id, Bytes::from_static(b"reply")).unwrap();
        assert_eq!(answered, Answered { tag: "a", payload: Bytes::from_static(b"reply") });
        assert_eq!(out.in_flight(), 0);
        assert!(out.on_ack(id, Bytes::new()).is_none(), "a second ACK resolves nothing");
    }

    #[test]
    fn unanswered_sends_expire_at_their_deadline() {
        let t0 = Instant::now();
        let mut out = Outbound::new(OutboundConfig::default());
        out.send(t0, 1, Qos::ExactlyOnce, Bytes::new(), t0 + secs(4), 42).unwrap();
        let mut fired = Vec::new();
        out.on_timeout(t0 + secs(3), |t| fired.push(t));
        out.on_timeout(t0 + secs(4), |t| fired.push(t));
        assert!(matches!(fired[0], Timeout::Retransmit(_)));
        assert_eq!(fired[1], Timeout::Expired(42));
        assert_eq!(out.in_flight(), 0);
    }

    #[test]
    fn qos2_runs_rec_rel_com() {
        let t0 = Instant::now();
        let mut out = Outbound::new(OutboundConfig::default());
        let id = id_of(&out.send(t0, 1, Qos::ExactlyOnce, Bytes::new(), t0 + secs(10), "q").unwrap());
        assert!(out.on_ack(id, Bytes::new()).is_none(), "an ACK does not answer a qos-2 SEND");
        let (answered, rel) = out.on_rec(t0, id, Bytes::from_static(b"r"));
        assert_eq!(answered.unwrap().tag, "q");
        assert_eq!(rel, Packet::Rel(id));
        // A repeated REC is answered with REL again but resolves nothing.
        let (again, rel) = out.on_rec(t0, id, Bytes::new());
        assert!(again.is_none());
        assert_eq!(rel, Packet::Rel(id));
        // REL is retransmitted until COM.
        let mut fired = Vec::new();
        out.on_timeout(t0 + secs(3), |t| fired.push(t));
        assert_eq!(fired, vec![Timeout::Retransmit(Packet::Rel(id))]);
        out.on_com(id);
        assert_eq!(out.in_flight(), 0);
    }

    #[test]
    fn rel_without_com_is_released_silently() {
        let t0 = Instant::now();
        let mut out = Outbound::new(OutboundConfig::default());
        let id = id_of(&out.send(t0, 1, Qos::ExactlyOnce, Bytes::new(), t0 + secs(10), ()).unwrap());
        out.on_rec(t0, id, Bytes::new());
        let mut fired = Vec::new();
        out.on_timeout(t0 + secs(11), |t| fired.push(t));
        assert!(fired.is_empty());
        assert_eq!(out.in_flight(), 0);
    }

    #[test]
    fn ids_wrap_to_one_and_skip_ids_in_flight() {
        let t0 = Instant::now();
        let far = t0 + secs(1000);
        let mut out = Outbound::new(OutboundConfig { max_in_flight: 10, ..Default::default() });
        let first = id_of(&out.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), far, ()).unwrap());
        assert_eq!(first, 1);
        for expected in 2..=MAX_MESSAGE_ID {
            let id = id_of(&out.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), far, ()).unwrap());
            assert_eq!(id, expected);
            out.on_ack(id, Bytes::new()).unwrap();
        }
        // Id 1 is still in flight, so the wrap skips it.
        let id = id_of(&out.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), far, ()).unwrap());
        assert_eq!(id, 2);
    }

    #[test]
    fn a_continuing_sender_picks_up_the_id_sequence() {
        let t0 = Instant::now();
        let far = t0 + secs(1000);
        let mut out = Outbound::new(OutboundConfig::default());
        assert_eq!(out.last_id(), 0);
        let id = id_of(&out.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), far, ()).unwrap());
        out.on_ack(id, Bytes::new()).unwrap();
        let mut next = Outbound::continuing(OutboundConfig::default(), out.last_id());
        assert_eq!(id_of(&next.send(t0, 1, Qos::ExactlyOnce, Bytes::new(), far, ()).unwrap()), 2);
        let mut wrapped = Outbound::continuing(OutboundConfig::default(), MAX_MESSAGE_ID);
        assert_eq!(id_of(&wrapped.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), far, ()).unwrap()), 1);
    }

    #[test]
    fn a_rec_for_a_qos1_send_changes_nothing() {
        let t0 = Instant::now();
        let mut out = Outbound::new(OutboundConfig::default());
        let id = id_of(&out.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), t0 + secs(10), "a").unwrap());
        let (answered, _) = out.on_rec(t0 + secs(2), id, Bytes::new());
        assert!(answered.is_none());
        assert_eq!(out.next_deadline(), Some(t0 + secs(3)), "retransmission not postponed");
        assert_eq!(out.on_ack(id, Bytes::new()).unwrap().tag, "a");
    }

    #[test]
    fn in_flight_is_capped_below_the_id_space() {
        let out: Outbound<()> = Outbound::new(OutboundConfig { max_in_flight: usize::MAX, ..Default::default() });
        assert_eq!(out.config.max_in_flight, usize::from(MAX_MESSAGE_ID) - 1);
    }

    #[test]
    fn in_flight_is_bounded() {
        let t0 = Instant::now();
        let mut out = Outbound::new(OutboundConfig { max_in_flight: 2, ..Default::default() });
        for _ in 0..2 {
            out.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), t0 + secs(5), ()).unwrap();
        }
        assert_eq!(out.send(t0, 1, Qos::AtLeastOnce, Bytes::new(), t0 + secs(5), ()), Err((InFlightFull(2), ())));
        assert!(out.send(t0, 1, Qos::AtMostOnce, Bytes::new(), t0, ()).is_ok(), "qos 0 needs no slot");
        assert_eq!(out.drain().count(), 2);
    }
}
