//! The typed request and its one validator.
//!
//! [`Request::parse`] reads the fields through [`Fields`], so the HTTP query
//! of `/send/` ([`Query`]), the JSON body of `/sub/` and `/unsub/`, and a
//! worker frame's header (both a JSON object) are checked by the same rules,
//! in the same order, with the same answers:
//!
//! - `send`: `channel` (missing or empty: `channel miss`), then `qos` (0, 1
//!   or 2, default 2: else `qos level error`), `type` (`msgtype` in a query;
//!   0..=65535, default 1), `timeout` (seconds, (0, 3600], default 10).
//! - `push`: `identity`, then the message fields as for `send`.
//! - `sub`: `identity`, `channel`, `occupy` (true, 1, "true", "1", "yes").
//! - `unsub`: `identity`, `channel`.
//! - `close`: `identity`, `reason` (optional, cut to 100 characters).
//!
//! Numbers may come as JSON numbers or as text (a query has only text), and
//! must be whole where a whole number is meant. Any other bad field answers
//! `params error`.

use std::time::Duration;

use bytes::Bytes;
use rainbow_protocol::Qos;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Problem;

pub use rainbow_protocol::worker::CallOp as Op;

/// Longest `timeout` a delivery may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest close reason kept, in characters.
pub const MAX_REASON: usize = 100;

/// A checked request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Deliver to every subscriber of a channel, on every node.
    Send {
        /// The channel.
        channel: String,
        /// What to deliver.
        #[serde(flatten)]
        message: Message,
    },
    /// Deliver to one connection.
    Push {
        /// The connection.
        identity: String,
        /// What to deliver.
        #[serde(flatten)]
        message: Message,
    },
    /// Subscribe a connection to a channel.
    Sub {
        /// The connection.
        identity: String,
        /// The channel.
        channel: String,
        /// First remove every other subscriber of the channel, on every node.
        occupy: bool,
    },
    /// Unsubscribe a connection from a channel.
    Unsub {
        /// The connection.
        identity: String,
        /// The channel.
        channel: String,
    },
    /// Close a connection with 1000 and a reason; its close hook runs.
    Close {
        /// The connection.
        identity: String,
        /// The close reason.
        reason: String,
    },
}

/// A message to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Message type.
    pub message_type: u16,
    /// Delivery guarantee towards the clients.
    #[serde(with = "qos_level")]
    pub qos: Qos,
    /// How long qos 1/2 waits for the receivers' answers.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// The payload. Not in a serialized request: it travels as the body.
    #[serde(skip)]
    pub payload: Bytes,
}

/// One field as its source gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// Not given (or JSON `null`).
    Absent,
    /// Text.
    Text(&'a str),
    /// A JSON number.
    Number(f64),
    /// A JSON boolean.
    Bool(bool),
    /// Anything else (an array, an object).
    Other,
}

/// Where a request's fields come from.
pub trait Fields {
    /// The field `name`.
    fn field(&self, name: &str) -> Field<'_>;
}

impl Fields for Map<String, Value> {
    fn field(&self, name: &str) -> Field<'_> {
        match self.get(name) {
            None | Some(Value::Null) => Field::Absent,
            Some(Value::String(s)) => Field::Text(s),
            Some(Value::Number(n)) => n.as_f64().map_or(Field::Other, Field::Number),
            Some(Value::Bool(b)) => Field::Bool(*b),
            Some(_) => Field::Other,
        }
    }
}

/// An HTTP query's pairs as fields (the first of a repeated name counts);
/// the message type is spelled `msgtype` there.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a>(pub &'a [(String, String)]);

impl Fields for Query<'_> {
    fn field(&self, name: &str) -> Field<'_> {
        let name = if name == "type" { "msgtype" } else { name };
        self.0.iter().find(|(k, _)| k == name).map_or(Field::Absent, |(_, v)| Field::Text(v))
    }
}

impl Request {
    /// Checks the fields of an `op` request (see the module docs); `payload`
    /// is the message body of a `send` or `push`.
    pub fn parse(op: Op, fields: &dyn Fields, payload: Bytes) -> Result<Request, Problem> {
        Ok(match op {
            Op::Send => {
                let channel = match fields.field("channel") {
                    Field::Text(c) if !c.is_empty() => c.to_owned(),
                    Field::Absent | Field::Text(_) => return Err(Problem::ChannelMiss),
                    _ => return Err(Problem::Params),
                };
                Request::Send { channel, message: message(fields, payload)? }
            }
            Op::Push => Request::Push { identity: required(fields, "identity")?, message: message(fields, payload)? },
            Op::Sub => Request::Sub {
                identity: required(fields, "identity")?,
                channel: required(fields, "channel")?,
                occupy: flag(fields.field("occupy")),
            },
            Op::Unsub => {
                Request::Unsub { identity: required(fields, "identity")?, channel: required(fields, "channel")? }
            }
            Op::Close => {
                let reason = match fields.field("reason") {
                    Field::Absent => String::new(),
                    Field::Text(r) => r.chars().take(MAX_REASON).collect(),
                    _ => return Err(Problem::Params),
                };
                Request::Close { identity: required(fields, "identity")?, reason }
            }
        })
    }

    /// The connection a request is about (all but `send`).
    pub fn identity(&self) -> Option<&str> {
        match self {
            Request::Send { .. } => None,
            Request::Push { identity, .. }
            | Request::Sub { identity, .. }
            | Request::Unsub { identity, .. }
            | Request::Close { identity, .. } => Some(identity),
        }
    }

    /// The request's payload (empty but for `send` and `push`).
    pub fn payload(&self) -> Bytes {
        match self {
            Request::Send { message, .. } | Request::Push { message, .. } => message.payload.clone(),
            _ => Bytes::new(),
        }
    }

    /// Puts back the payload of a request that crossed the cluster without
    /// it.
    pub fn with_payload(mut self, payload: Bytes) -> Request {
        if let Request::Send { message, .. } | Request::Push { message, .. } = &mut self {
            message.payload = payload;
        }
        self
    }
}

fn required(fields: &dyn Fields, name: &str) -> Result<String, Problem> {
    match fields.field(name) {
        Field::Text(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(Problem::Params),
    }
}

/// A number given as a number or as text; `Err` when it is something else.
fn number(field: Field<'_>) -> Result<Option<f64>, ()> {
    match field {
        Field::Absent => Ok(None),
        Field::Number(n) => Ok(Some(n)),
        Field::Text(t) => t.trim().parse::<f64>().map(Some).map_err(|_| ()),
        _ => Err(()),
    }
}

/// A whole number in `range`, or `default` when absent.
fn whole(field: Field<'_>, range: std::ops::RangeInclusive<f64>, default: f64) -> Option<f64> {
    match number(field) {
        Ok(None) => Some(default),
        Ok(Some(n)) if n.fract() == 0.0 && range.contains(&n) => Some(n),
        _ => None,
    }
}

fn message(fields: &dyn Fields, payload: Bytes) -> Result<Message, Problem> {
    let qos =
        whole(fields.field("qos"), 0.0..=2.0, 2.0).and_then(|q| Qos::from_u8(q as u8)).ok_or(Problem::QosLevel)?;
    // Range-checked, so the cast is exact.
    let message_type = whole(fields.field("type"), 0.0..=65535.0, 1.0).ok_or(Problem::Params)? as u16;
    let timeout = match number(fields.field("timeout")) {
        Ok(None) => Duration::from_secs(10),
        Ok(Some(t)) if t > 0.0 && t <= MAX_TIMEOUT.as_secs_f64() => Duration::from_secs_f64(t),
        _ => return Err(Problem::Params),
    };
    Ok(Message { message_type, qos, timeout, payload })
}

/// `occupy` as the SDKs send it: a boolean, 0/1, or "true"/"false".
fn flag(field: Field<'_>) -> bool {
    match field {
        Field::Bool(b) => b,
        Field::Number(n) => n != 0.0,
        Field::Text(t) => matches!(t.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
        Field::Absent | Field::Other => false,
    }
}

/// A qos level as its number.
mod qos_level {
    use rainbow_protocol::Qos;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(qos: &Qos, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(qos.as_u8())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Qos, D::Error> {
        let level = u8::deserialize(d)?;
        Qos::from_u8(level).ok_or_else(|| D::Error::custom(format!("qos {level} is not 0, 1 or 2")))
    }
}

/// A duration as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn parse(op: Op, v: Value) -> Result<Request, Problem> {
        Request::parse(op, &json_fields(v), Bytes::from_static(b"x"))
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn send_defaults_and_errors_in_the_original_order() {
        let Ok(Request::Send { channel, message }) = parse(Op::Send, json!({"channel": "room"})) else { panic!() };
        assert_eq!(channel, "room");
        assert_eq!(
            (message.message_type, message.qos, message.timeout, &message.payload[..]),
            (1, Qos::ExactlyOnce, Duration::from_secs(10), &b"x"[..])
        );
        let Ok(Request::Send { message, .. }) =
            parse(Op::Send, json!({"channel": "r", "type": "7", "qos": 0, "timeout": 0.5}))
        else {
            panic!()
        };
        assert_eq!(
            (message.message_type, message.qos, message.timeout),
            (7, Qos::AtMostOnce, Duration::from_millis(500))
        );
        assert_eq!(parse(Op::Send, json!({})), Err(Problem::ChannelMiss));
        assert_eq!(parse(Op::Send, json!({"channel": ""})), Err(Problem::ChannelMiss));
        assert_eq!(parse(Op::Send, json!({"channel": 5})), Err(Problem::Params));
        assert_eq!(parse(Op::Send, json!({"channel": "r", "qos": 3})), Err(Problem::QosLevel));
        assert_eq!(parse(Op::Send, json!({"channel": "r", "qos": 1.5})), Err(Problem::QosLevel));
        assert_eq!(parse(Op::Send, json!({"channel": "r", "type": 70000})), Err(Problem::Params));
        assert_eq!(parse(Op::Send, json!({"channel": "r", "timeout": 0})), Err(Problem::Params));
        assert_eq!(parse(Op::Send, json!({"channel": "r", "timeout": 3601})), Err(Problem::Params));
        // qos is checked before the type, as the original did.
        assert_eq!(parse(Op::Send, json!({"channel": "r", "qos": 9, "type": -1})), Err(Problem::QosLevel));
    }

    #[test]
    fn a_query_reads_the_same_rules_with_msgtype() {
        let q = query(&[("channel", "news"), ("msgtype", " 1001 "), ("qos", "1"), ("timeout", "2.5")]);
        let Ok(Request::Send { channel, message }) = Request::parse(Op::Send, &Query(&q), Bytes::new()) else {
            panic!()
        };
        assert_eq!((channel.as_str(), message.message_type, message.qos), ("news", 1001, Qos::AtLeastOnce));
        assert_eq!(message.timeout, Duration::from_millis(2500));
        let q = query(&[("channel", "c"), ("qos", "x")]);
        assert_eq!(Request::parse(Op::Send, &Query(&q), Bytes::new()), Err(Problem::QosLevel));
        let q = query(&[("channel", "c"), ("msgtype", "nope")]);
        assert_eq!(Request::parse(Op::Send, &Query(&q), Bytes::new()), Err(Problem::Params));
    }

    #[test]
    fn connection_requests_need_an_identity_and_read_occupy_as_the_sdks_send_it() {
        assert_eq!(parse(Op::Push, json!({})), Err(Problem::Params));
        assert_eq!(parse(Op::Sub, json!({"identity": "i"})), Err(Problem::Params));
        assert_eq!(parse(Op::Sub, json!({"identity": "", "channel": "c"})), Err(Problem::Params));
        assert_eq!(parse(Op::Unsub, json!({"identity": 4, "channel": "c"})), Err(Problem::Params));
        for (occupy, want) in
            [(json!(true), true), (json!(1), true), (json!("true"), true), (json!("yes"), true), (json!(0), false)]
        {
            let Ok(Request::Sub { occupy: got, .. }) =
                parse(Op::Sub, json!({"identity": "i", "channel": "c", "occupy": occupy}))
            else {
                panic!()
            };
            assert_eq!(got, want);
        }
        let Ok(Request::Close { reason, .. }) = parse(Op::Close, json!({"identity": "i"})) else { panic!() };
        assert_eq!(reason, "");
        let Ok(Request::Close { reason, .. }) = parse(Op::Close, json!({"identity": "i", "reason": "é".repeat(200)}))
        else {
            panic!()
        };
        assert_eq!(reason.chars().count(), MAX_REASON);
    }

    #[test]
    fn a_request_crosses_the_cluster_without_its_payload() {
        let push = parse(Op::Push, json!({"identity": "ab", "qos": 1, "type": 3, "timeout": 2})).unwrap();
        let header = serde_json::to_value(&push).unwrap();
        assert_eq!(header, json!({"kind": "push", "identity": "ab", "message_type": 3, "qos": 1, "timeout_ms": 2000}));
        let back: Request = serde_json::from_value(header).unwrap();
        assert_eq!(back.clone().with_payload(push.payload()), push);
        assert!(back.payload().is_empty());
    }
}
