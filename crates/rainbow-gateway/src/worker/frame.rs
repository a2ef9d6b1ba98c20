//! The worker frame codec (docs/worker-protocol.md §2, §3, §4): pure functions
//! from bytes to typed messages and back, no IO.
//!
//! A frame is one binary WebSocket message: a `u32` big-endian header length,
//! that many bytes of a UTF-8 JSON object with an `op` string, then the body
//! (raw bytes, the rest of the message). [`split`] and [`encode`] handle that
//! envelope; [`FromWorker::parse`] turns a split frame into what a worker may
//! send, and the `*_header` functions build what the gateway sends.
//!
//! Nothing here panics on input: every malformed frame is a [`FrameError`]
//! naming the problem, which the session turns into a close with 1002.

use bytes::Bytes;
use rainbow_protocol::envelope::{self, EnvelopeError};
use serde_json::{Map, Value, json};
use thiserror::Error;

/// The protocol versions this gateway speaks.
pub const VERSIONS: &[u64] = &[1];

/// Largest window a worker may announce.
pub const MAX_CREDITS: u32 = 10_000;

/// A frame that does not follow the protocol.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than the 4 bytes of the header length.
    #[error("frame of {0} bytes is shorter than its 4-byte header length")]
    Short(usize),
    /// The header length runs past the end of the message.
    #[error("header length {len} runs past the end of the {frame}-byte frame")]
    HeaderOverrun {
        /// The announced header length.
        len: u64,
        /// The frame's length.
        frame: usize,
    },
    /// The header is not a JSON object.
    #[error("header is not a JSON object: {0}")]
    NotObject(String),
    /// The header has no `op` string.
    #[error("header has no \"op\" string")]
    NoOp,
    /// An `op` this gateway does not know.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    /// A field is missing or has the wrong type or range.
    #[error("{op}: `{field}` {problem}")]
    BadField {
        /// The frame's op.
        op: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The `hello` names a version this gateway does not speak.
    #[error("unsupported protocol version {0}; this gateway speaks version 1")]
    Version(u64),
}

/// A frame split into its header object and body.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    /// The JSON header (an object).
    pub header: Map<String, Value>,
    /// Everything after the header.
    pub body: Bytes,
}

/// Splits a frame into header and body.
pub fn split(frame: Bytes) -> Result<RawFrame, FrameError> {
    let header = match envelope::decode(&frame) {
        Ok((header, _)) => header,
        Err(EnvelopeError::Short) => return Err(FrameError::Short(frame.len())),
        Err(EnvelopeError::HeaderOverrun { header, .. }) => {
            return Err(FrameError::HeaderOverrun { len: header as u64, frame: frame.len() });
        }
    };
    let end = envelope::PREFIX_LEN + header.len();
    let header = match serde_json::from_slice::<Value>(header) {
        Ok(Value::Object(map)) => map,
        Ok(other) => return Err(FrameError::NotObject(format!("a JSON {}", kind(&other)))),
        Err(e) => return Err(FrameError::NotObject(e.to_string())),
    };
    Ok(RawFrame { header, body: frame.slice(end..) })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Encodes a header object and a body into one frame.
pub fn encode(header: &Map<String, Value>, body: &[u8]) -> Bytes {
    // Serializing a map of JSON values cannot fail (keys are strings).
    let json = serde_json::to_vec(header).unwrap_or_else(|_| b"{}".to_vec());
    Bytes::from(envelope::encode(&json, body))
}

/// What a reply asks for (docs/worker-protocol.md §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyFields {
    /// Connect only: accept (`true`) or refuse (`false`) the client.
    pub accept: Option<bool>,
    /// New context (cookie) of the connection; empty clears it.
    pub context: Option<String>,
    /// Channels to subscribe to.
    pub sub: Vec<String>,
    /// Channels to unsubscribe from (applied before `sub`).
    pub unsub: Vec<String>,
    /// The worker could not handle the task.
    pub error: Option<String>,
    /// The reply payload.
    pub body: Bytes,
}

/// An API operation a worker can call (docs/worker-protocol.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOp {
    /// Deliver to a channel.
    Send,
    /// Deliver to one connection.
    Push,
    /// Subscribe a connection.
    Sub,
    /// Unsubscribe a connection.
    Unsub,
    /// Close a connection.
    Close,
}

impl CallOp {
    /// The op's name, also its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            CallOp::Send => "send",
            CallOp::Push => "push",
            CallOp::Sub => "sub",
            CallOp::Unsub => "unsub",
            CallOp::Close => "close",
        }
    }
}

/// A frame a worker sent.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// Opens the session: the version spoken and the initial window.
    Hello {
        /// The announced window.
        credits: u32,
    },
    /// Changes the window.
    Credit {
        /// The new window.
        credits: u32,
    },
    /// No new tasks, please; tell me when I hold none.
    Drain,
    /// Answers a task.
    Reply {
        /// The task id.
        task: u64,
        /// What the reply asks for.
        reply: ReplyFields,
    },
    /// An API call. Its fields are checked when it runs, so a bad field
    /// answers like the HTTP API (`params error`) instead of closing.
    Call {
        /// The worker's request number, echoed in the result.
        req: u64,
        /// Which operation.
        op: CallOp,
        /// The header, for the operation's fields.
        fields: Map<String, Value>,
        /// The payload (`send`, `push`).
        body: Bytes,
    },
}

fn credits(op: &'static str, header: &Map<String, Value>) -> Result<u32, FrameError> {
    let bad = |problem| FrameError::BadField { op, field: "credits", problem };
    let n = header.get("credits").ok_or(bad("is missing"))?.as_u64().ok_or(bad("must be a whole number"))?;
    u32::try_from(n).ok().filter(|n| *n <= MAX_CREDITS).ok_or(bad("must be 0..=10000"))
}

fn channels(header: &Map<String, Value>, field: &'static str) -> Result<Vec<String>, FrameError> {
    let bad = |problem| FrameError::BadField { op: "reply", field, problem };
    match header.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map(str::to_owned).ok_or(bad("must be a list of strings"))).collect()
        }
        Some(_) => Err(bad("must be a list of strings")),
    }
}

fn optional_string(
    header: &Map<String, Value>,
    op: &'static str,
    field: &'static str,
) -> Result<Option<String>, FrameError> {
    match header.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FrameError::BadField { op, field, problem: "must be a string" }),
    }
}

impl FromWorker {
    /// Reads a worker's frame.
    pub fn parse(frame: RawFrame) -> Result<FromWorker, FrameError> {
        let RawFrame { header, body } = frame;
        let op = header.get("op").and_then(Value::as_str).ok_or(FrameError::NoOp)?;
        let call = match op {
            "hello" => {
                let version = header.get("version").and_then(Value::as_u64).ok_or(FrameError::BadField {
                    op: "hello",
                    field: "version",
                    problem: "must be a whole number",
                })?;
                if !VERSIONS.contains(&version) {
                    return Err(FrameError::Version(version));
                }
                return Ok(FromWorker::Hello { credits: credits("hello", &header)? });
            }
            "credit" => return Ok(FromWorker::Credit { credits: credits("credit", &header)? }),
            "drain" => return Ok(FromWorker::Drain),
            "reply" => {
                let task = header.get("task").and_then(Value::as_u64).ok_or(FrameError::BadField {
                    op: "reply",
                    field: "task",
                    problem: "must be the task id (a whole number)",
                })?;
                let accept = match header.get("accept") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => {
                        return Err(FrameError::BadField {
                            op: "reply",
                            field: "accept",
                            problem: "must be a boolean",
                        });
                    }
                };
                let reply = ReplyFields {
                    accept,
                    context: optional_string(&header, "reply", "context")?,
                    sub: channels(&header, "sub")?,
                    unsub: channels(&header, "unsub")?,
                    error: optional_string(&header, "reply", "error")?,
                    body,
                };
                return Ok(FromWorker::Reply { task, reply });
            }
            "send" => CallOp::Send,
            "push" => CallOp::Push,
            "sub" => CallOp::Sub,
            "unsub" => CallOp::Unsub,
            "close" => CallOp::Close,
            other => return Err(FrameError::UnknownOp(other.chars().take(64).collect())),
        };
        let req = header.get("req").and_then(Value::as_u64).ok_or(FrameError::BadField {
            op: call.name(),
            field: "req",
            problem: "must be the request number (a whole number)",
        })?;
        Ok(FromWorker::Call { req, op: call, fields: header, body })
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `welcome`: the first frame of a session.
pub fn welcome_header(node: &str, worker: u64) -> Map<String, Value> {
    object(json!({"op": "welcome", "version": 1, "node": node, "worker": worker}))
}

/// `drained`: the draining worker holds no task any more.
pub fn drained_header() -> Map<String, Value> {
    object(json!({"op": "drained"}))
}

/// `result`: the answer to call `req`; `answer` is the HTTP API's JSON
/// answer, whose fields are copied next to `op` and `req`.
pub fn result_header(req: u64, answer: &Value) -> Map<String, Value> {
    let mut header = object(json!({"op": "result", "req": req}));
    if let Value::Object(fields) = answer {
        for (k, v) in fields {
            if k != "op" && k != "req" {
                header.insert(k.clone(), v.clone());
            }
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(header: Value, body: &[u8]) -> Bytes {
        encode(&object(header), body)
    }

    fn parse(header: Value, body: &[u8]) -> Result<FromWorker, FrameError> {
        FromWorker::parse(split(frame(header, body))?)
    }

    #[test]
    fn envelope_errors_are_named() {
        assert_eq!(split(Bytes::from_static(b"\0\0")), Err(FrameError::Short(2)));
        assert_eq!(split(Bytes::from_static(b"\0\0\0\x09{}")), Err(FrameError::HeaderOverrun { len: 9, frame: 6 }));
        assert_eq!(
            split(Bytes::from_static(b"\xff\xff\xff\xff")),
            Err(FrameError::HeaderOverrun { len: u64::from(u32::MAX), frame: 4 })
        );
        assert!(matches!(split(Bytes::from_static(b"\0\0\0\x02[]")), Err(FrameError::NotObject(_))));
        assert!(matches!(split(Bytes::from_static(b"\0\0\0\x02{x")), Err(FrameError::NotObject(_))));
        assert!(matches!(split(Bytes::from_static(b"\0\0\0\0")), Err(FrameError::NotObject(_))));
        let raw = split(Bytes::from_static(b"\0\0\0\x02{}body")).unwrap();
        assert!(raw.header.is_empty());
        assert_eq!(&raw.body[..], b"body");
    }

    #[test]
    fn hello_credit_drain() {
        assert_eq!(
            parse(json!({"op": "hello", "version": 1, "credits": 4}), b""),
            Ok(FromWorker::Hello { credits: 4 })
        );
        assert_eq!(parse(json!({"op": "hello", "version": 2, "credits": 4}), b""), Err(FrameError::Version(2)));
        assert!(matches!(
            parse(json!({"op": "hello", "version": 1, "credits": 10_001}), b""),
            Err(FrameError::BadField { field: "credits", .. })
        ));
        assert!(matches!(
            parse(json!({"op": "hello", "version": 1, "credits": -1}), b""),
            Err(FrameError::BadField { field: "credits", .. })
        ));
        assert!(matches!(parse(json!({"op": "hello", "credits": 1}), b""), Err(FrameError::BadField { .. })));
        assert_eq!(parse(json!({"op": "credit", "credits": 0}), b""), Ok(FromWorker::Credit { credits: 0 }));
        assert_eq!(parse(json!({"op": "drain", "extra": [1, 2]}), b""), Ok(FromWorker::Drain));
        assert_eq!(parse(json!({"op": "dance"}), b""), Err(FrameError::UnknownOp("dance".into())));
        assert_eq!(parse(json!({"op": 3}), b""), Err(FrameError::NoOp));
        assert_eq!(parse(json!({}), b""), Err(FrameError::NoOp));
    }

    #[test]
    fn replies() {
        let got = parse(
            json!({"op": "reply", "task": 7, "context": "c", "sub": ["a", "b"], "unsub": ["z"], "future": true}),
            b"payload",
        );
        let want = ReplyFields {
            context: Some("c".into()),
            sub: vec!["a".into(), "b".into()],
            unsub: vec!["z".into()],
            body: Bytes::from_static(b"payload"),
            ..Default::default()
        };
        assert_eq!(got, Ok(FromWorker::Reply { task: 7, reply: want }));
        let got = parse(json!({"op": "reply", "task": 1, "accept": false, "context": null, "error": "boom"}), b"");
        let Ok(FromWorker::Reply { reply, .. }) = got else { panic!("{got:?}") };
        assert_eq!((reply.accept, reply.context, reply.error.as_deref()), (Some(false), None, Some("boom")));
        for bad in [
            json!({"op": "reply"}),
            json!({"op": "reply", "task": "1"}),
            json!({"op": "reply", "task": 1, "accept": "yes"}),
            json!({"op": "reply", "task": 1, "sub": "room"}),
            json!({"op": "reply", "task": 1, "unsub": [1]}),
            json!({"op": "reply", "task": 1, "context": 5}),
        ] {
            assert!(matches!(parse(bad.clone(), b""), Err(FrameError::BadField { .. })), "{bad}");
        }
    }

    #[test]
    fn calls_need_a_req_and_keep_their_fields() {
        let got = parse(json!({"op": "send", "req": 3, "channel": "room"}), b"hi").unwrap();
        let FromWorker::Call { req, op, fields, body } = got else { panic!() };
        assert_eq!((req, op, &body[..]), (3, CallOp::Send, &b"hi"[..]));
        assert_eq!(fields["channel"], "room");
        assert!(matches!(
            parse(json!({"op": "close", "identity": "x"}), b""),
            Err(FrameError::BadField { field: "req", .. })
        ));
    }

    #[test]
    fn gateway_headers() {
        let raw = split(encode(&welcome_header("n1", 4), b"")).unwrap();
        assert_eq!(Value::Object(raw.header), json!({"op": "welcome", "version": 1, "node": "n1", "worker": 4}));
        let h = result_header(9, &json!({"status": 0, "connections": 2, "req": 1, "op": "x"}));
        assert_eq!(Value::Object(h), json!({"op": "result", "req": 9, "status": 0, "connections": 2}));
        assert_eq!(Value::Object(drained_header()), json!({"op": "drained"}));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn split_never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(raw) = split(Bytes::from(data)) {
                let _ = FromWorker::parse(raw);
            }
        }

        #[test]
        fn encode_then_split_round_trips(
            header in prop::collection::btree_map(".{0,8}", json_value(), 0..6),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let header: Map<String, Value> = header.into_iter().collect();
            let raw = split(encode(&header, &body)).unwrap();
            prop_assert_eq!(raw.header, header);
            prop_assert_eq!(&raw.body[..], &body[..]);
        }

        #[test]
        fn a_truncated_frame_is_an_error_not_a_panic(
            header in prop::collection::btree_map("[a-z]{1,8}", json_value(), 1..6),
            cut in 0usize..64,
        ) {
            let header: Map<String, Value> = header.into_iter().collect();
            let full = encode(&header, b"");
            let cut = cut.min(full.len().saturating_sub(1));
            prop_assert!(split(full.slice(..cut)).is_err());
        }
    }
}
