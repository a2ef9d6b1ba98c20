//! What nodes say to each other over Redis, and the Redis names they use.
//!
//! Every message is a [`rainbow_protocol::envelope`]: a JSON [`Header`] and a
//! raw body (a payload or a reply), published on one of two kinds of Redis
//! channel:
//!
//! - `<prefix>ch:<channel>`: a Rainbow channel. Only nodes with local
//!   subscribers of that channel are subscribed to it. Carries
//!   [`Header::Publish`] and [`Header::Evict`].
//! - `<prefix>node:<tag>`: one node's inbox. Carries calls for connections
//!   that node holds ([`Header::Call`]) and every answer
//!   ([`Header::Answer`], [`Header::Result`]).
//!
//! `<prefix>` is `rainbow:<cluster_name>:`, so clusters sharing a Redis never
//! see each other. Nothing here does IO.

use bytes::Bytes;
use rainbow_protocol::envelope;
use serde::{Deserialize, Serialize};

use crate::ops::{Outcome, Request};

/// Redis names of one cluster.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `rainbow:<cluster_name>:`.
    pub fn new(cluster_name: &str) -> Names {
        Names { prefix: format!("rainbow:{cluster_name}:") }
    }

    /// The Redis channel of a Rainbow channel.
    pub fn channel(&self, channel: &str) -> String {
        format!("{}ch:{channel}", self.prefix)
    }

    /// The Rainbow channel of a Redis channel, if it is one of ours.
    pub fn channel_of<'a>(&self, redis_channel: &'a str) -> Option<&'a str> {
        redis_channel.strip_prefix(&self.prefix)?.strip_prefix("ch:")
    }

    /// A node's inbox channel.
    pub fn inbox(&self, tag: u32) -> String {
        format!("{}node:{tag:08x}", self.prefix)
    }

    /// The sorted set of nodes, scored by when their heartbeat expires (Unix ms).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// A node's info (JSON), expiring with its heartbeat.
    pub fn info(&self, tag: u32) -> String {
        format!("{}info:{tag:08x}", self.prefix)
    }
}

/// The header of a message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Header {
    /// A `/send/` to the channel this was published on; the body is the
    /// payload. qos 1/2 expect an [`Header::Answer`] from every receiving node.
    Publish {
        /// The node that took the call (and collects the answers).
        from: u32,
        /// Its request id.
        id: u64,
        /// Message type.
        message_type: u16,
        /// qos 0, 1 or 2.
        qos: u8,
        /// Time left for the receivers' answers, milliseconds.
        timeout_ms: u64,
    },
    /// Remove every local subscriber of this channel except `keep` (the
    /// cluster-wide part of an occupy). Every receiving node answers.
    Evict {
        /// The node that occupies.
        from: u32,
        /// Its request id.
        id: u64,
        /// The identity that stays.
        keep: String,
    },
    /// One node's answer to a [`Header::Publish`] or [`Header::Evict`]; the
    /// body is its first non-empty reply payload.
    Answer {
        /// The request id.
        id: u64,
        /// Receivers on that node that acknowledged.
        answered: usize,
        /// Whether every receiver there answered or failed before the deadline.
        complete: bool,
    },
    /// A backend request for a connection the receiving node holds; the
    /// body is the payload of a push.
    Call {
        /// The calling node.
        from: u32,
        /// Its request id.
        id: u64,
        /// What to do.
        call: Request,
    },
    /// The outcome of a [`Header::Call`].
    Result {
        /// The request id.
        id: u64,
        /// What the request did there.
        outcome: Outcome,
    },
}

/// A message that did not decode.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The envelope does not split.
    #[error(transparent)]
    Envelope(#[from] envelope::EnvelopeError),
    /// The header is not a known message.
    #[error("bad header: {0}")]
    Header(#[from] serde_json::Error),
}

/// Encodes a message.
pub fn encode(header: &Header, body: &[u8]) -> Vec<u8> {
    // Serializing these plain types into a Vec cannot fail.
    let header = serde_json::to_vec(header).unwrap_or_default();
    envelope::encode(&header, body)
}

/// Decodes a message.
pub fn decode(bytes: &[u8]) -> Result<(Header, Bytes), MessageError> {
    let (header, body) = envelope::decode(bytes)?;
    Ok((serde_json::from_slice(header)?, Bytes::copy_from_slice(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Message;
    use rainbow_protocol::Qos;
    use std::time::Duration;

    #[test]
    fn messages_round_trip() {
        let messages = [
            Header::Publish { from: 7, id: 1, message_type: 3, qos: 1, timeout_ms: 500 },
            Header::Evict { from: 7, id: 2, keep: "ab".into() },
            Header::Answer { id: 1, answered: 4, complete: true },
            Header::Call {
                from: 9,
                id: 3,
                call: Request::Sub { identity: "ab".into(), channel: "room".into(), occupy: true },
            },
            Header::Call {
                from: 9,
                id: 4,
                call: Request::Push {
                    identity: "ab".into(),
                    message: Message {
                        message_type: 1,
                        qos: Qos::ExactlyOnce,
                        timeout: Duration::from_millis(10),
                        payload: Bytes::new(),
                    },
                },
            },
            Header::Result { id: 3, outcome: Outcome::Answered { connections: 2, data: "d".into() } },
        ];
        for header in messages {
            let bytes = encode(&header, b"\xffpayload");
            let (back, body) = decode(&bytes).unwrap();
            assert_eq!(back, header);
            assert_eq!(&body[..], b"\xffpayload");
        }
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(&envelope::encode(b"{\"op\":\"nope\"}", b"")).is_err());
        assert!(decode(&envelope::encode(b"not json", b"")).is_err());
    }

    #[test]
    fn names_are_prefixed_by_cluster() {
        let n = Names::new("prod");
        assert_eq!(n.channel("room"), "rainbow:prod:ch:room");
        assert_eq!(n.channel_of("rainbow:prod:ch:room"), Some("room"));
        assert_eq!(n.channel_of("rainbow:test:ch:room"), None);
        assert_eq!(n.inbox(0xab), "rainbow:prod:node:000000ab");
    }
}
