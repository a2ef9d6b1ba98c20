//! The v1 packet codec: one packet per WebSocket message (docs/protocol.md §2).
//!
//! This module turns bytes into [`Packet`]s and back. It knows nothing about
//! connections, ids in flight or time; the QoS rules live in
//! [`crate::outbound`] and [`crate::inbound`].
//!
//! Layout, big-endian:
//!
//! ```text
//! byte 0   cmd << 4 | dup << 3 | qos << 1      (bit 0 reserved)
//! SEND     u16 message_type, u16 message_id (qos > 0 only), payload
//! ACK/REC  u16 message_id, payload (the reply, may be empty)
//! REL/COM  u16 message_id
//! ```
//!
//! Decoding is strict where the spec is precise (unknown command, qos 3,
//! truncated bodies, message id 0, bytes after a REL/COM id) and lenient where
//! the original server was (the reserved bit and the dup/qos bits of packets
//! other than SEND are ignored), so every packet an original client sends still
//! parses.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Quality of service of a SEND (MQTT-style).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qos {
    /// Fire and forget: nothing comes back.
    AtMostOnce = 0,
    /// SEND → ACK(reply); the sender retransmits until acknowledged.
    AtLeastOnce = 1,
    /// SEND → REC(reply) → REL → COM; the receiver processes the message once.
    ExactlyOnce = 2,
}

impl Qos {
    /// The qos for a numeric level, or `None` for anything but 0, 1 and 2.
    pub fn from_u8(level: u8) -> Option<Qos> {
        match level {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            2 => Some(Qos::ExactlyOnce),
            _ => None,
        }
    }

    /// The numeric level (0, 1 or 2).
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The command nibble of byte 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// A message (1).
    Send = 1,
    /// The answer to a qos-1 SEND (2).
    Ack = 2,
    /// The answer to a qos-2 SEND (3).
    Rec = 3,
    /// qos-2 release, sender → receiver (4).
    Rel = 4,
    /// qos-2 complete, receiver → sender (5).
    Com = 5,
}

impl Command {
    fn from_nibble(nibble: u8) -> Option<Command> {
        match nibble {
            1 => Some(Command::Send),
            2 => Some(Command::Ack),
            3 => Some(Command::Rec),
            4 => Some(Command::Rel),
            5 => Some(Command::Com),
            _ => None,
        }
    }
}

/// A SEND: a typed message with its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendPacket {
    /// The application's message type (the "URL" of the message).
    pub message_type: u16,
    /// Delivery guarantee.
    pub qos: Qos,
    /// Per-connection, per-direction id; `0` (and not encoded) when qos is 0.
    pub id: u16,
    /// Set on retransmissions.
    pub dup: bool,
    /// Opaque bytes, by convention JSON text.
    pub payload: Bytes,
}

/// The body shared by ACK and REC: the id answered and the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The id of the SEND being answered.
    pub id: u16,
    /// The reply payload (may be empty).
    pub payload: Bytes,
}

/// One v1 packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// A message.
    Send(SendPacket),
    /// Answer to a qos-1 SEND.
    Ack(Reply),
    /// Answer to a qos-2 SEND.
    Rec(Reply),
    /// qos-2 release of a message id.
    Rel(u16),
    /// qos-2 completion of a message id.
    Com(u16),
}

/// Why bytes are not a v1 packet. Each variant names what the peer got wrong.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The message had no bytes at all.
    #[error("empty packet")]
    Empty,
    /// The command nibble is 0 (reserved) or above 5.
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    /// The qos bits hold 3, which no packet may use.
    #[error("invalid qos level 3")]
    InvalidQos,
    /// The packet ends before its fixed fields do.
    #[error("{command:?} packet truncated: needs {needed} bytes, got {got}")]
    Truncated {
        /// The command being decoded.
        command: Command,
        /// Bytes the fixed fields need, header included.
        needed: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// A qos > 0 packet carried message id 0, which is never used.
    #[error("{0:?} packet uses message id 0")]
    ZeroMessageId(Command),
    /// A REL or COM carried bytes after its message id.
    #[error("{command:?} packet has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// REL or COM.
        command: Command,
        /// How many bytes followed the id.
        extra: usize,
    },
}

impl DecodeError {
    /// A short, stable label for metrics (`rainbow_protocol_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::UnknownCommand(_) => "unknown_command",
            DecodeError::InvalidQos => "invalid_qos",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::ZeroMessageId(_) => "zero_message_id",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
        }
    }
}

const fn header(command: Command, dup: bool, qos: Qos) -> u8 {
    (command as u8) << 4 | (dup as u8) << 3 | (qos as u8) << 1
}

impl Packet {
    /// The command of this packet.
    pub fn command(&self) -> Command {
        match self {
            Packet::Send(_) => Command::Send,
            Packet::Ack(_) => Command::Ack,
            Packet::Rec(_) => Command::Rec,
            Packet::Rel(_) => Command::Rel,
            Packet::Com(_) => Command::Com,
        }
    }

    /// Parses one packet. The payload is a zero-copy slice of `bytes`.
    pub fn decode(mut bytes: Bytes) -> Result<Packet, DecodeError> {
        let Some(&first) = bytes.first() else {
            return Err(DecodeError::Empty);
        };
        let command = Command::from_nibble(first >> 4).ok_or(DecodeError::UnknownCommand(first >> 4))?;
        let qos = Qos::from_u8((first >> 1) & 0b11).ok_or(DecodeError::InvalidQos)?;
        let dup = first & 0b1000 != 0;
        let got = bytes.len();
        let need = |needed: usize| {
            if got < needed { Err(DecodeError::Truncated { command, needed, got }) } else { Ok(()) }
        };
        let u16_at = |bytes: &Bytes, at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let nonzero = |id: u16| if id == 0 { Err(DecodeError::ZeroMessageId(command)) } else { Ok(id) };

        match command {
            Command::Send => {
                let fixed = if qos == Qos::AtMostOnce { 3 } else { 5 };
                need(fixed)?;
                let message_type = u16_at(&bytes, 1);
                let id = if qos == Qos::AtMostOnce { 0 } else { nonzero(u16_at(&bytes, 3))? };
                let payload = bytes.split_off(fixed);
                Ok(Packet::Send(SendPacket { message_type, qos, id, dup, payload }))
            }
            Command::Ack | Command::Rec => {
                need(3)?;
                let id = nonzero(u16_at(&bytes, 1))?;
                let reply = Reply { id, payload: bytes.split_off(3) };
                Ok(if command == Command::Ack { Packet::Ack(reply) } else { Packet::Rec(reply) })
            }
            Command::Rel | Command::Com => {
                need(3)?;
                if got > 3 {
                    return Err(DecodeError::TrailingBytes { command, extra: got - 3 });
                }
                let id = nonzero(u16_at(&bytes, 1))?;
                Ok(if command == Command::Rel { Packet::Rel(id) } else { Packet::Com(id) })
            }
        }
    }

    /// The exact size [`Packet::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        match self {
            Packet::Send(s) if s.qos == Qos::AtMostOnce => 3 + s.payload.len(),
            Packet::Send(s) => 5 + s.payload.len(),
            Packet::Ack(r) | Packet::Rec(r) => 3 + r.payload.len(),
            Packet::Rel(_) | Packet::Com(_) => 3,
        }
    }

    /// Appends the wire form of this packet to `out`.
    ///
    /// ACK, REC, REL and COM are written with qos and dup bits 0, as the
    /// original server did.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        match self {
            Packet::Send(s) => {
                out.put_u8(header(Command::Send, s.dup, s.qos));
                out.put_u16(s.message_type);
                if s.qos != Qos::AtMostOnce {
                    out.put_u16(s.id);
                }
                out.put_slice(&s.payload);
            }
            Packet::Ack(r) | Packet::Rec(r) => {
                out.put_u8(header(self.command(), false, Qos::AtMostOnce));
                out.put_u16(r.id);
                out.put_slice(&r.payload);
            }
            Packet::Rel(id) | Packet::Com(id) => {
                out.put_u8(header(self.command(), false, Qos::AtMostOnce));
                out.put_u16(*id);
            }
        }
    }

    /// The wire form of this packet.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn send(qos: Qos, id: u16, dup: bool, payload: &'static [u8]) -> Packet {
        Packet::Send(SendPacket { message_type: 0x0102, qos, id, dup, payload: Bytes::from_static(payload) })
    }

    #[test]
    fn encodes_the_documented_layout() {
        assert_eq!(&send(Qos::AtMostOnce, 0, false, b"hi").encode()[..], b"\x10\x01\x02hi");
        assert_eq!(&send(Qos::AtLeastOnce, 7, false, b"").encode()[..], b"\x12\x01\x02\x00\x07");
        assert_eq!(&send(Qos::ExactlyOnce, 0xABCD, true, b"x").encode()[..], b"\x1c\x01\x02\xab\xcdx");
        let ack = Packet::Ack(Reply { id: 1, payload: Bytes::from_static(b"{}") });
        assert_eq!(&ack.encode()[..], b"\x20\x00\x01{}");
        assert_eq!(&Packet::Rec(Reply { id: 2, payload: Bytes::new() }).encode()[..], b"\x30\x00\x02");
        assert_eq!(&Packet::Rel(3).encode()[..], b"\x40\x00\x03");
        assert_eq!(&Packet::Com(65534).encode()[..], b"\x50\xff\xfe");
    }

    #[test]
    fn rejects_malformed_packets_with_a_reason() {
        let err = |b: &'static [u8]| Packet::decode(Bytes::from_static(b)).unwrap_err();
        assert_eq!(err(b""), DecodeError::Empty);
        assert_eq!(err(b"\x00\x00\x01"), DecodeError::UnknownCommand(0));
        assert_eq!(err(b"\x60\x00\x01"), DecodeError::UnknownCommand(6));
        assert_eq!(err(b"\x16\x00\x01\x00\x01"), DecodeError::InvalidQos);
        assert_eq!(err(b"\x10\x00"), DecodeError::Truncated { command: Command::Send, needed: 3, got: 2 });
        assert_eq!(err(b"\x12\x00\x01\x00"), DecodeError::Truncated { command: Command::Send, needed: 5, got: 4 });
        assert_eq!(err(b"\x14\x00\x01\x00\x00"), DecodeError::ZeroMessageId(Command::Send));
        assert_eq!(err(b"\x20\x00\x00"), DecodeError::ZeroMessageId(Command::Ack));
        assert_eq!(err(b"\x40\x00\x01\x00"), DecodeError::TrailingBytes { command: Command::Rel, extra: 1 });
    }

    #[test]
    fn ignores_bits_the_original_ignored() {
        // Reserved bit 0 set, and dup/qos bits on an ACK.
        let p = Packet::decode(Bytes::from_static(b"\x11\x00\x05abc")).unwrap();
        assert_eq!(p, send_type(5, b"abc"));
        let p = Packet::decode(Bytes::from_static(b"\x2d\x00\x09")).unwrap();
        assert_eq!(p, Packet::Ack(Reply { id: 9, payload: Bytes::new() }));
    }

    fn send_type(message_type: u16, payload: &'static [u8]) -> Packet {
        Packet::Send(SendPacket {
            message_type,
            qos: Qos::AtMostOnce,
            id: 0,
            dup: false,
            payload: Bytes::from_static(payload),
        })
    }

    pub(crate) fn arb_packet() -> impl Strategy<Value = Packet> {
        let payload = proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
        let id = 1u16..=u16::MAX;
        let qos = prop_oneof![Just(Qos::AtMostOnce), Just(Qos::AtLeastOnce), Just(Qos::ExactlyOnce)];
        prop_oneof![
            (any::<u16>(), qos, id.clone(), any::<bool>(), payload.clone()).prop_map(|(t, qos, id, dup, payload)| {
                let id = if qos == Qos::AtMostOnce { 0 } else { id };
                Packet::Send(SendPacket { message_type: t, qos, id, dup, payload })
            }),
            (id.clone(), payload.clone()).prop_map(|(id, payload)| Packet::Ack(Reply { id, payload })),
            (id.clone(), payload).prop_map(|(id, payload)| Packet::Rec(Reply { id, payload })),
            id.clone().prop_map(Packet::Rel),
            id.prop_map(Packet::Com),
        ]
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(p in arb_packet()) {
            let wire = p.encode();
            prop_assert_eq!(wire.len(), p.encoded_len());
            prop_assert_eq!(Packet::decode(wire).unwrap(), p);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = Packet::decode(Bytes::from(bytes));
        }

        #[test]
        fn whatever_decodes_reencodes_to_a_packet_that_decodes_the_same(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(p) = Packet::decode(Bytes::from(bytes)) {
                prop_assert_eq!(Packet::decode(p.encode()).unwrap(), p);
            }
        }
    }
}
