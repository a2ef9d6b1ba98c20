//! Rainbow's wire protocol, with no IO: the v1 packet codec and the QoS state
//! machines, both directions.
//!
//! - [`packet`]: bytes ⇄ [`Packet`] (docs/protocol.md §2), with typed [`DecodeError`]s.
//! - [`websocket`]: WebSocket framing, server side (RFC 6455 §5).
//! - [`outbound`]: the sender of a SEND: id allocation, retransmission with
//!   DUP, deadlines, the REL/COM tail.
//! - [`inbound`]: the receiver of a SEND: the qos-2 dedup window.
//! - [`envelope`]: header + body framing of the gateway's internal messages
//!   (cluster nodes, workers).
//! - [`signature`]: the docs/protocol.md §7 signatures of hook and API calls
//!   (v1, and v2 binding the request).
//! - [`worker`]: the worker protocol's frames (`docs/worker-protocol.md`),
//!   both directions, shared by the gateway and the `rainbow-worker` SDK.
//!
//! Nothing here touches a socket, a runtime or the clock: callers pass `now`
//! and write the packets they are handed. The gateway and the Rust client are
//! thin drivers around these types, and the unit, property and fuzz tests
//! exercise them directly.
#![warn(missing_docs)]

pub mod envelope;
pub mod inbound;
pub mod outbound;
pub mod packet;
pub mod signature;
pub mod websocket;
pub mod worker;

pub use inbound::{Disposition, Inbound, InboundConfig, WindowFull};
pub use outbound::{Answered, InFlightFull, MAX_MESSAGE_ID, Outbound, OutboundConfig, Timeout};
pub use packet::{Command, DecodeError, Packet, Qos, Reply, SendPacket};
