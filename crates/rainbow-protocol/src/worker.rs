//! The worker protocol's frames (`docs/worker-protocol.md`), both directions,
//! typed once for the gateway and the Rust worker SDK. Pure: bytes in, typed
//! frames out and back, no IO.
//!
//! A frame is one binary WebSocket message: a `u32` big-endian header length,
//! that many bytes of a UTF-8 JSON object with an `op` string, then the body
//! (raw bytes, the rest of the message). [`split`] and [`encode`] handle that
//! envelope (through [`crate::envelope`]); on top of it:
//!
//! - [`FromWorker`]: what a worker sends (`hello`, `credit`, `drain`,
//!   `reply`, and the API calls `send`, `push`, `sub`, `unsub`, `close`).
//!   The gateway parses it, the SDK encodes it.
//! - [`ToWorker`]: what the gateway sends (`welcome`, `task`, `result`,
//!   `drained`). The gateway encodes it, the SDK parses it.
//!
//! Parsing checks every field it types and ignores unknown ones (§2); a
//! malformed frame is a [`FrameError`] naming the problem (the gateway closes
//! the worker with 1002 and that reason), never a panic. An API call keeps its
//! fields as a JSON map: the gateway checks them when it runs the call, so a
//! bad field answers like the HTTP API (`params error`) rather than closing.
//!
//! Encoding builds the header as a [`serde_json::Map`] (keys sorted), so the
//! bytes are the same as those the gateway and the SDK wrote before this
//! module existed.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::envelope::{self, EnvelopeError};
use crate::packet::Qos;

/// The protocol version this crate writes (`welcome`, `hello`).
pub const VERSION: u64 = 1;

/// The protocol versions a `hello` may name.
pub const VERSIONS: &[u64] = &[VERSION];

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
    /// An `op` this direction of the protocol does not have.
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

impl RawFrame {
    /// The header's `op`, if it is a string.
    pub fn op(&self) -> Option<&str> {
        self.header.get("op").and_then(Value::as_str)
    }

    /// Joins the header and the body into one frame again.
    pub fn encode(&self) -> Bytes {
        encode(&self.header, &self.body)
    }
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
        Ok(other) => return Err(FrameError::NotObject(format!("a JSON {}", json_kind(&other)))),
        Err(e) => return Err(FrameError::NotObject(e.to_string())),
    };
    Ok(RawFrame { header, body: frame.slice(end..) })
}

fn json_kind(v: &Value) -> &'static str {
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
    // Serializing a map of JSON values cannot fail (keys are strings, and a
    // `Value` holds no non-finite number); the fallback is never taken.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Every operation.
    pub const ALL: [CallOp; 5] = [CallOp::Send, CallOp::Push, CallOp::Sub, CallOp::Unsub, CallOp::Close];

    /// The op's name on the wire, also its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            CallOp::Send => "send",
            CallOp::Push => "push",
            CallOp::Sub => "sub",
            CallOp::Unsub => "unsub",
            CallOp::Close => "close",
        }
    }

    /// The operation called `name` on the wire.
    pub fn from_name(name: &str) -> Option<CallOp> {
        CallOp::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// What happened on a client connection: the kind of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A client wants to connect: accept or deny it.
    Connect,
    /// A client sent a message: answer it.
    Message,
    /// A client connection ended.
    Close,
}

impl TaskKind {
    /// Every kind.
    pub const ALL: [TaskKind; 3] = [TaskKind::Connect, TaskKind::Message, TaskKind::Close];

    /// The kind's name on the wire, also a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Connect => "connect",
            TaskKind::Message => "message",
            TaskKind::Close => "close",
        }
    }

    /// The kind called `name` on the wire.
    pub fn from_name(name: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// A task's fields that depend on its kind (docs/worker-protocol.md §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// The client wants to connect.
    Connect {
        /// The client's request headers (names lower-case, a repeated
        /// header joined with `", "`); open-ended.
        headers: BTreeMap<String, String>,
        /// The query parameters of the client's handshake; open-ended.
        params: BTreeMap<String, String>,
        /// The client's address, `ip:port`.
        remote: String,
    },
    /// The client sent a message (the payload is the task's body).
    Message {
        /// The message type.
        message_type: u16,
        /// The client's qos.
        qos: Qos,
        /// The connection's context (cookie), `None` while it has none.
        context: Option<String>,
    },
    /// The connection ended.
    Close {
        /// The connection's context (cookie), `None` while it has none.
        context: Option<String>,
    },
}

impl TaskEvent {
    /// The task's kind.
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskEvent::Connect { .. } => TaskKind::Connect,
            TaskEvent::Message { .. } => TaskKind::Message,
            TaskEvent::Close { .. } => TaskKind::Close,
        }
    }
}

/// A `task` frame: one delivery of a task to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task id, used in the reply; kept on redelivery.
    pub task: u64,
    /// Stays the same when the task is delivered again (§5).
    pub key: String,
    /// 1 on first delivery, more on redelivery after a worker died.
    pub attempt: u32,
    /// The client connection's identity (64 hex).
    pub identity: String,
    /// The kind and its fields.
    pub event: TaskEvent,
    /// The client's payload (messages), else empty.
    pub body: Bytes,
}

impl Task {
    /// The task's kind.
    pub fn kind(&self) -> TaskKind {
        self.event.kind()
    }

    fn header(&self) -> Map<String, Value> {
        let mut h = op_header("task");
        h.insert("task".into(), self.task.into());
        h.insert("kind".into(), self.kind().name().into());
        h.insert("key".into(), self.key.as_str().into());
        h.insert("attempt".into(), self.attempt.into());
        h.insert("identity".into(), self.identity.as_str().into());
        let context = |c: &Option<String>| c.as_deref().map_or(Value::Null, Value::from);
        match &self.event {
            TaskEvent::Connect { headers, params, remote } => {
                h.insert("headers".into(), string_map(headers));
                h.insert("params".into(), string_map(params));
                h.insert("remote".into(), remote.as_str().into());
            }
            TaskEvent::Message { message_type, qos, context: c } => {
                h.insert("type".into(), (*message_type).into());
                h.insert("qos".into(), qos.as_u8().into());
                h.insert("context".into(), context(c));
            }
            TaskEvent::Close { context: c } => {
                h.insert("context".into(), context(c));
            }
        }
        h
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
}

fn op_header(op: &str) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("op".into(), op.into());
    h
}

/// A frame a worker sends (docs/worker-protocol.md §3 to §6).
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// Opens the session with the initial window; encoded with [`VERSION`],
    /// parsed only if it names one of [`VERSIONS`].
    Hello {
        /// The announced window, `0..=MAX_CREDITS`.
        credits: u32,
    },
    /// Changes the window.
    Credit {
        /// The new window, `0..=MAX_CREDITS`.
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
        /// The header's other fields (without `op` and `req`, which are
        /// written from `op` and `req` when encoding).
        fields: Map<String, Value>,
        /// The payload (`send`, `push`).
        body: Bytes,
    },
}

/// Reads typed fields of one header, naming its op in errors.
struct Fields<'a> {
    op: &'static str,
    header: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn bad(&self, field: &'static str, problem: &'static str) -> FrameError {
        FrameError::BadField { op: self.op, field, problem }
    }

    fn whole(&self, field: &'static str, problem: &'static str) -> Result<u64, FrameError> {
        self.header.get(field).and_then(Value::as_u64).ok_or_else(|| self.bad(field, problem))
    }

    fn credits(&self) -> Result<u32, FrameError> {
        let n = self.header.get("credits").ok_or_else(|| self.bad("credits", "is missing"))?;
        let n = n.as_u64().ok_or_else(|| self.bad("credits", "must be a whole number"))?;
        u32::try_from(n).ok().filter(|n| *n <= MAX_CREDITS).ok_or_else(|| self.bad("credits", "must be 0..=10000"))
    }

    fn string(&self, field: &'static str) -> Result<String, FrameError> {
        self.header
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.bad(field, "must be a string"))
    }

    /// Absent or `null` is `None`.
    fn optional_string(&self, field: &'static str) -> Result<Option<String>, FrameError> {
        match self.header.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(field, "must be a string")),
        }
    }

    /// Absent or `null` is empty.
    fn string_list(&self, field: &'static str) -> Result<Vec<String>, FrameError> {
        let bad = || self.bad(field, "must be a list of strings");
        match self.header.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(bad)).collect(),
            Some(_) => Err(bad()),
        }
    }

    /// Absent or `null` is empty.
    fn string_map(&self, field: &'static str) -> Result<BTreeMap<String, String>, FrameError> {
        let bad = || self.bad(field, "must be an object of strings");
        match self.header.get(field) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(items)) => {
                items.iter().map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(bad)?.to_owned()))).collect()
            }
            Some(_) => Err(bad()),
        }
    }
}

fn op_of(header: &Map<String, Value>) -> Result<&str, FrameError> {
    header.get("op").and_then(Value::as_str).ok_or(FrameError::NoOp)
}

fn unknown_op(op: &str) -> FrameError {
    FrameError::UnknownOp(op.chars().take(64).collect())
}

impl FromWorker {
    /// Reads a worker's frame.
    pub fn parse(frame: RawFrame) -> Result<FromWorker, FrameError> {
        let RawFrame { mut header, body } = frame;
        let op = op_of(&header)?;
        let Some(call) = CallOp::from_name(op) else {
            return FromWorker::parse_session(op, &header, body);
        };
        let req =
            Fields { op: call.name(), header: &header }.whole("req", "must be the request number (a whole number)")?;
        header.remove("op");
        header.remove("req");
        Ok(FromWorker::Call { req, op: call, fields: header, body })
    }

    /// The frames that are not API calls.
    fn parse_session(op: &str, header: &Map<String, Value>, body: Bytes) -> Result<FromWorker, FrameError> {
        match op {
            "hello" => {
                let f = Fields { op: "hello", header };
                let version = f.whole("version", "must be a whole number")?;
                if !VERSIONS.contains(&version) {
                    return Err(FrameError::Version(version));
                }
                Ok(FromWorker::Hello { credits: f.credits()? })
            }
            "credit" => Ok(FromWorker::Credit { credits: Fields { op: "credit", header }.credits()? }),
            "drain" => Ok(FromWorker::Drain),
            "reply" => {
                let f = Fields { op: "reply", header };
                let task = f.whole("task", "must be the task id (a whole number)")?;
                let accept = match header.get("accept") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => return Err(f.bad("accept", "must be a boolean")),
                };
                let reply = ReplyFields {
                    accept,
                    context: f.optional_string("context")?,
                    sub: f.string_list("sub")?,
                    unsub: f.string_list("unsub")?,
                    error: f.optional_string("error")?,
                    body,
                };
                Ok(FromWorker::Reply { task, reply })
            }
            other => Err(unknown_op(other)),
        }
    }

    /// Splits and reads a worker's frame.
    pub fn decode(frame: Bytes) -> Result<FromWorker, FrameError> {
        FromWorker::parse(split(frame)?)
    }

    /// The frame's header.
    pub fn header(&self) -> Map<String, Value> {
        match self {
            FromWorker::Hello { credits } => {
                let mut h = op_header("hello");
                h.insert("version".into(), VERSION.into());
                h.insert("credits".into(), (*credits).into());
                h
            }
            FromWorker::Credit { credits } => {
                let mut h = op_header("credit");
                h.insert("credits".into(), (*credits).into());
                h
            }
            FromWorker::Drain => op_header("drain"),
            FromWorker::Reply { task, reply } => {
                let mut h = op_header("reply");
                h.insert("task".into(), (*task).into());
                if let Some(accept) = reply.accept {
                    h.insert("accept".into(), accept.into());
                }
                if let Some(context) = &reply.context {
                    h.insert("context".into(), context.as_str().into());
                }
                if !reply.sub.is_empty() {
                    h.insert("sub".into(), reply.sub.clone().into());
                }
                if !reply.unsub.is_empty() {
                    h.insert("unsub".into(), reply.unsub.clone().into());
                }
                if let Some(error) = &reply.error {
                    h.insert("error".into(), error.as_str().into());
                }
                h
            }
            FromWorker::Call { req, op, fields, .. } => {
                let mut h = fields.clone();
                h.insert("op".into(), op.name().into());
                h.insert("req".into(), (*req).into());
                h
            }
        }
    }

    /// The frame's body (empty but for replies and calls).
    pub fn body(&self) -> &[u8] {
        match self {
            FromWorker::Reply { reply, .. } => &reply.body,
            FromWorker::Call { body, .. } => body,
            FromWorker::Hello { .. } | FromWorker::Credit { .. } | FromWorker::Drain => &[],
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Bytes {
        encode(&self.header(), self.body())
    }
}

/// A frame the gateway sends (docs/worker-protocol.md §3 to §6).
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    /// The first frame of a session.
    Welcome {
        /// The protocol version the gateway speaks ([`VERSION`] when this
        /// crate encodes it).
        version: u64,
        /// The gateway node's tag, 8 hex digits (random, new at each start;
        /// the `node` of `/serverinfo/`).
        node: String,
        /// Numbers this session on that node.
        worker: u64,
    },
    /// A task to handle.
    Task(Task),
    /// The answer to API call `req`.
    Result {
        /// The call's request number.
        req: u64,
        /// The HTTP API's JSON answer (`status`, `msg`, `connections`,
        /// `data`, ...), without `op` and `req`; open-ended.
        answer: Map<String, Value>,
    },
    /// The draining worker holds no task any more and may close.
    Drained,
}

impl ToWorker {
    /// A `welcome` of this crate's [`VERSION`].
    pub fn welcome(node: impl Into<String>, worker: u64) -> ToWorker {
        ToWorker::Welcome { version: VERSION, node: node.into(), worker }
    }

    /// The `result` of call `req` from the HTTP API's JSON `answer`: its
    /// fields but `op` and `req` (an answer that is not an object has none).
    pub fn result(req: u64, answer: Value) -> ToWorker {
        let answer = match answer {
            Value::Object(mut fields) => {
                fields.remove("op");
                fields.remove("req");
                fields
            }
            _ => Map::new(),
        };
        ToWorker::Result { req, answer }
    }

    /// Reads a gateway's frame.
    pub fn parse(frame: RawFrame) -> Result<ToWorker, FrameError> {
        let RawFrame { mut header, body } = frame;
        match op_of(&header)? {
            "welcome" => {
                let f = Fields { op: "welcome", header: &header };
                Ok(ToWorker::Welcome {
                    version: f.whole("version", "must be a whole number")?,
                    node: f.string("node")?,
                    worker: f.whole("worker", "must be the worker id (a whole number)")?,
                })
            }
            "task" => parse_task(&header, body).map(ToWorker::Task),
            "result" => {
                let req = Fields { op: "result", header: &header }
                    .whole("req", "must be the request number (a whole number)")?;
                header.remove("op");
                header.remove("req");
                Ok(ToWorker::Result { req, answer: header })
            }
            "drained" => Ok(ToWorker::Drained),
            other => Err(unknown_op(other)),
        }
    }

    /// Splits and reads a gateway's frame.
    pub fn decode(frame: Bytes) -> Result<ToWorker, FrameError> {
        ToWorker::parse(split(frame)?)
    }

    /// The frame's header.
    pub fn header(&self) -> Map<String, Value> {
        match self {
            ToWorker::Welcome { version, node, worker } => {
                let mut h = op_header("welcome");
                h.insert("version".into(), (*version).into());
                h.insert("node".into(), node.as_str().into());
                h.insert("worker".into(), (*worker).into());
                h
            }
            ToWorker::Task(task) => task.header(),
            ToWorker::Result { req, answer } => {
                let mut h = answer.clone();
                h.insert("op".into(), "result".into());
                h.insert("req".into(), (*req).into());
                h
            }
            ToWorker::Drained => op_header("drained"),
        }
    }

    /// The frame's body (empty but for tasks).
    pub fn body(&self) -> &[u8] {
        match self {
            ToWorker::Task(task) => &task.body,
            ToWorker::Welcome { .. } | ToWorker::Result { .. } | ToWorker::Drained => &[],
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Bytes {
        encode(&self.header(), self.body())
    }
}

fn parse_task(header: &Map<String, Value>, body: Bytes) -> Result<Task, FrameError> {
    let f = Fields { op: "task", header };
    let task = f.whole("task", "must be the task id (a whole number)")?;
    let kind = header
        .get("kind")
        .and_then(Value::as_str)
        .and_then(TaskKind::from_name)
        .ok_or_else(|| f.bad("kind", "must be connect, message or close"))?;
    let key = f.string("key")?;
    let attempt = u32::try_from(f.whole("attempt", "must be a whole number")?)
        .map_err(|_| f.bad("attempt", "must be 0..=4294967295"))?;
    let identity = f.string("identity")?;
    let event = match kind {
        TaskKind::Connect => TaskEvent::Connect {
            headers: f.string_map("headers")?,
            params: f.string_map("params")?,
            remote: f.string("remote")?,
        },
        TaskKind::Message => TaskEvent::Message {
            message_type: u16::try_from(f.whole("type", "must be 0..=65535")?)
                .map_err(|_| f.bad("type", "must be 0..=65535"))?,
            qos: u8::try_from(f.whole("qos", "must be 0, 1 or 2")?)
                .ok()
                .and_then(Qos::from_u8)
                .ok_or_else(|| f.bad("qos", "must be 0, 1 or 2"))?,
            context: f.optional_string("context")?,
        },
        TaskKind::Close => TaskEvent::Close { context: f.optional_string("context")? },
    };
    Ok(Task { task, key, attempt, identity, event, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn frame(header: Value, body: &[u8]) -> Bytes {
        encode(&object(header), body)
    }

    fn parse(header: Value, body: &[u8]) -> Result<FromWorker, FrameError> {
        FromWorker::decode(frame(header, body))
    }

    fn parse_to(header: Value, body: &[u8]) -> Result<ToWorker, FrameError> {
        ToWorker::decode(frame(header, body))
    }

    /// The header's JSON text, as it goes on the wire.
    fn header_text(frame: &Bytes) -> &str {
        let (header, _) = envelope::decode(frame).unwrap();
        std::str::from_utf8(header).unwrap()
    }

    fn message_task() -> Task {
        Task {
            task: 3,
            key: "n-3".into(),
            attempt: 2,
            identity: "abc".into(),
            event: TaskEvent::Message { message_type: 7, qos: Qos::AtLeastOnce, context: None },
            body: Bytes::from_static(b"pay"),
        }
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
        assert_eq!(raw.op(), None);
        assert_eq!(&raw.body[..], b"body");
        assert_eq!(ToWorker::decode(Bytes::from_static(b"\0")), Err(FrameError::Short(1)));
        assert_eq!(FromWorker::decode(Bytes::from_static(b"\0\0\0\x02{}")), Err(FrameError::NoOp));
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
        assert!(matches!(
            parse(json!({"op": "hello", "version": 1}), b""),
            Err(FrameError::BadField { field: "credits", problem: "is missing", .. })
        ));
        assert!(matches!(parse(json!({"op": "hello", "credits": 1}), b""), Err(FrameError::BadField { .. })));
        assert_eq!(parse(json!({"op": "credit", "credits": 0}), b""), Ok(FromWorker::Credit { credits: 0 }));
        assert_eq!(parse(json!({"op": "drain", "extra": [1, 2]}), b""), Ok(FromWorker::Drain));
        assert_eq!(parse(json!({"op": "dance"}), b""), Err(FrameError::UnknownOp("dance".into())));
        assert_eq!(parse(json!({"op": 3}), b""), Err(FrameError::NoOp));
        assert_eq!(parse(json!({}), b""), Err(FrameError::NoOp));
        let long = "x".repeat(100);
        assert_eq!(parse(json!({"op": long}), b""), Err(FrameError::UnknownOp("x".repeat(64))));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = parse(json!({"op": "reply", "task": 1, "sub": "room"}), b"").unwrap_err();
        assert_eq!(e.to_string(), "reply: `sub` must be a list of strings");
        let e = parse(json!({"op": "hello", "version": 3, "credits": 1}), b"").unwrap_err();
        assert_eq!(e.to_string(), "unsupported protocol version 3; this gateway speaks version 1");
        assert_eq!(FrameError::Short(2).to_string(), "frame of 2 bytes is shorter than its 4-byte header length");
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
            json!({"op": "reply", "task": -1}),
            json!({"op": "reply", "task": 1, "accept": "yes"}),
            json!({"op": "reply", "task": 1, "sub": "room"}),
            json!({"op": "reply", "task": 1, "unsub": [1]}),
            json!({"op": "reply", "task": 1, "context": 5}),
            json!({"op": "reply", "task": 1, "error": false}),
        ] {
            assert!(matches!(parse(bad.clone(), b""), Err(FrameError::BadField { .. })), "{bad}");
        }
    }

    #[test]
    fn calls_need_a_req_and_keep_their_other_fields() {
        let got = parse(json!({"op": "send", "req": 3, "channel": "room", "type": "7"}), b"hi").unwrap();
        let FromWorker::Call { req, op, fields, body } = got else { panic!() };
        assert_eq!((req, op, &body[..]), (3, CallOp::Send, &b"hi"[..]));
        assert_eq!(Value::Object(fields), json!({"channel": "room", "type": "7"}));
        for op in CallOp::ALL {
            assert_eq!(CallOp::from_name(op.name()), Some(op));
            let got = parse(json!({"op": op.name(), "req": 1}), b"");
            assert!(matches!(got, Ok(FromWorker::Call { op: o, .. }) if o == op), "{got:?}");
            assert!(matches!(
                parse(json!({"op": op.name(), "identity": "x"}), b""),
                Err(FrameError::BadField { field: "req", .. })
            ));
        }
        assert!(matches!(parse(json!({"op": "sub", "req": 1.5}), b""), Err(FrameError::BadField { .. })));
        assert_eq!(CallOp::from_name("publish"), None);
    }

    #[test]
    fn worker_frames_encode_as_the_sdk_wrote_them() {
        let text = |f: FromWorker| header_text(&f.encode()).to_owned();
        assert_eq!(text(FromWorker::Hello { credits: 8 }), r#"{"credits":8,"op":"hello","version":1}"#);
        assert_eq!(text(FromWorker::Credit { credits: 0 }), r#"{"credits":0,"op":"credit"}"#);
        assert_eq!(text(FromWorker::Drain), r#"{"op":"drain"}"#);
        assert_eq!(text(FromWorker::Reply { task: 3, reply: ReplyFields::default() }), r#"{"op":"reply","task":3}"#);
        let reply = ReplyFields {
            accept: Some(true),
            context: Some("c".into()),
            sub: vec!["a".into()],
            unsub: vec!["b".into()],
            error: Some("no".into()),
            body: Bytes::from_static(b"x"),
        };
        let frame = FromWorker::Reply { task: 1, reply }.encode();
        assert_eq!(
            header_text(&frame),
            r#"{"accept":true,"context":"c","error":"no","op":"reply","sub":["a"],"task":1,"unsub":["b"]}"#
        );
        assert_eq!(&frame[frame.len() - 1..], b"x");
        let fields = object(json!({"channel": "room", "type": 1, "qos": 2, "timeout": 10.0, "req": 99, "op": "push"}));
        let call = FromWorker::Call { req: 4, op: CallOp::Send, fields, body: Bytes::from_static(b"hi") };
        assert_eq!(
            header_text(&call.encode()),
            r#"{"channel":"room","op":"send","qos":2,"req":4,"timeout":10.0,"type":1}"#
        );
    }

    #[test]
    fn gateway_frames_encode_as_the_gateway_wrote_them() {
        let text = |f: ToWorker| header_text(&f.encode()).to_owned();
        assert_eq!(text(ToWorker::welcome("n1", 4)), r#"{"node":"n1","op":"welcome","version":1,"worker":4}"#);
        assert_eq!(text(ToWorker::Drained), r#"{"op":"drained"}"#);
        let result = ToWorker::result(9, json!({"status": 0, "connections": 2, "req": 1, "op": "x"}));
        assert_eq!(text(result), r#"{"connections":2,"op":"result","req":9,"status":0}"#);
        assert_eq!(text(ToWorker::result(1, json!("not an object"))), r#"{"op":"result","req":1}"#);
        let frame = ToWorker::Task(message_task()).encode();
        assert_eq!(
            header_text(&frame),
            r#"{"attempt":2,"context":null,"identity":"abc","key":"n-3","kind":"message","op":"task","qos":1,"task":3,"type":7}"#
        );
        assert_eq!(&frame[frame.len() - 3..], b"pay");
        let connect = Task {
            task: 1,
            key: "k".into(),
            attempt: 1,
            identity: "id".into(),
            event: TaskEvent::Connect {
                headers: [("x-a".to_owned(), "1, 2".to_owned())].into(),
                params: [("room".to_owned(), "a".to_owned())].into(),
                remote: "1.2.3.4:5".into(),
            },
            body: Bytes::new(),
        };
        assert_eq!(
            text(ToWorker::Task(connect)),
            r#"{"attempt":1,"headers":{"x-a":"1, 2"},"identity":"id","key":"k","kind":"connect","op":"task","params":{"room":"a"},"remote":"1.2.3.4:5","task":1}"#
        );
        let close =
            Task { event: TaskEvent::Close { context: Some("c".into()) }, body: Bytes::new(), ..message_task() };
        assert_eq!(
            text(ToWorker::Task(close)),
            r#"{"attempt":2,"context":"c","identity":"abc","key":"n-3","kind":"close","op":"task","task":3}"#
        );
    }

    #[test]
    fn tasks_of_every_kind_parse() {
        let got = parse_to(
            json!({
                "op": "task", "task": 9, "kind": "connect", "identity": "ab", "key": "n-9", "attempt": 2,
                "headers": {"x-deviceid": "d1"}, "params": {"room": "a"}, "remote": "1.2.3.4:5", "future": 1
            }),
            b"",
        );
        let Ok(ToWorker::Task(t)) = got else { panic!("{got:?}") };
        assert_eq!(
            (t.task, t.kind(), t.key.as_str(), t.attempt, t.identity.as_str()),
            (9, TaskKind::Connect, "n-9", 2, "ab")
        );
        let TaskEvent::Connect { headers, params, remote } = t.event else { panic!() };
        assert_eq!(
            (headers["x-deviceid"].as_str(), params["room"].as_str(), remote.as_str()),
            ("d1", "a", "1.2.3.4:5")
        );
        let base = json!({"op": "task", "task": 1, "key": "k", "attempt": 1, "identity": "i"});
        let with = |extra: Value| {
            let mut h = object(base.clone());
            h.extend(object(extra));
            Value::Object(h)
        };
        let got = parse_to(with(json!({"kind": "message", "type": 7, "qos": 2, "context": null})), b"p");
        let Ok(ToWorker::Task(t)) = got else { panic!("{got:?}") };
        assert_eq!(t.event, TaskEvent::Message { message_type: 7, qos: Qos::ExactlyOnce, context: None });
        assert_eq!(&t.body[..], b"p");
        let got = parse_to(with(json!({"kind": "close"})), b"");
        assert!(matches!(got, Ok(ToWorker::Task(Task { event: TaskEvent::Close { context: None }, .. }))), "{got:?}");
        let got = parse_to(with(json!({"kind": "connect", "remote": "r"})), b"");
        let Ok(ToWorker::Task(Task { event: TaskEvent::Connect { headers, params, .. }, .. })) = got else { panic!() };
        assert!(headers.is_empty() && params.is_empty());
        for (extra, field) in [
            (json!({"kind": "dance"}), "kind"),
            (json!({"kind": 1}), "kind"),
            (json!({"kind": "close", "key": 5}), "key"),
            (json!({"kind": "close", "attempt": 4_294_967_296_u64}), "attempt"),
            (json!({"kind": "close", "identity": null}), "identity"),
            (json!({"kind": "close", "context": []}), "context"),
            (json!({"kind": "message", "type": 65_536, "qos": 0}), "type"),
            (json!({"kind": "message", "type": 1, "qos": 3}), "qos"),
            (json!({"kind": "message", "type": 1}), "qos"),
            (json!({"kind": "connect", "remote": "r", "headers": {"a": 1}}), "headers"),
            (json!({"kind": "connect", "remote": "r", "params": []}), "params"),
            (json!({"kind": "connect"}), "remote"),
            (json!({"kind": "close", "task": "1"}), "task"),
        ] {
            let got = parse_to(with(extra.clone()), b"");
            assert!(
                matches!(got, Err(FrameError::BadField { op: "task", field: f, .. }) if f == field),
                "{extra}: {got:?}"
            );
        }
    }

    #[test]
    fn welcome_result_drained_parse() {
        assert_eq!(
            parse_to(json!({"op": "welcome", "version": 2, "node": "n", "worker": 1}), b""),
            Ok(ToWorker::Welcome { version: 2, node: "n".into(), worker: 1 })
        );
        assert!(matches!(
            parse_to(json!({"op": "welcome", "version": 1, "worker": 1}), b""),
            Err(FrameError::BadField { field: "node", .. })
        ));
        let got = parse_to(json!({"op": "result", "req": 5, "status": 1, "msg": "params error"}), b"");
        assert_eq!(got, Ok(ToWorker::Result { req: 5, answer: object(json!({"status": 1, "msg": "params error"})) }));
        assert!(matches!(parse_to(json!({"op": "result"}), b""), Err(FrameError::BadField { field: "req", .. })));
        assert_eq!(parse_to(json!({"op": "drained"}), b""), Ok(ToWorker::Drained));
    }

    #[test]
    fn each_direction_refuses_the_others_ops() {
        for op in ["welcome", "task", "result", "drained"] {
            assert_eq!(parse(json!({"op": op, "req": 1}), b""), Err(FrameError::UnknownOp(op.into())));
        }
        for op in ["hello", "credit", "drain", "reply", "send", "push", "sub", "unsub", "close"] {
            assert_eq!(parse_to(json!({"op": op}), b""), Err(FrameError::UnknownOp(op.into())));
        }
        for kind in TaskKind::ALL {
            assert_eq!(TaskKind::from_name(kind.name()), Some(kind));
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            // Eighths parse back exactly; serde_json's default float parsing
            // is not exact for every `f64` (its `float_roundtrip` feature is).
            (-1_000_000i32..1_000_000).prop_map(|n| json!(f64::from(n) / 8.0)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A map of JSON values whose keys are never `op` or `req`.
    fn fields() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map(".{0,8}", json_value(), 0..5)
            .prop_map(|m| m.into_iter().filter(|(k, _)| k != "op" && k != "req").collect())
    }

    fn body() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from)
    }

    fn strings() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(".{0,8}", 0..3)
    }

    fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(".{0,8}", ".{0,8}", 0..4)
    }

    fn from_worker() -> impl Strategy<Value = FromWorker> {
        let reply = (
            any::<u64>(),
            any::<Option<bool>>(),
            prop::option::of(".{0,8}"),
            strings(),
            strings(),
            prop::option::of(".{0,8}"),
            body(),
        )
            .prop_map(|(task, accept, context, sub, unsub, error, body)| FromWorker::Reply {
                task,
                reply: ReplyFields { accept, context, sub, unsub, error, body },
            });
        let call = (any::<u64>(), prop::sample::select(CallOp::ALL.to_vec()), fields(), body())
            .prop_map(|(req, op, fields, body)| FromWorker::Call { req, op, fields, body });
        prop_oneof![
            (0..=MAX_CREDITS).prop_map(|credits| FromWorker::Hello { credits }),
            (0..=MAX_CREDITS).prop_map(|credits| FromWorker::Credit { credits }),
            Just(FromWorker::Drain),
            reply,
            call,
        ]
    }

    fn qos() -> impl Strategy<Value = Qos> {
        prop::sample::select(vec![Qos::AtMostOnce, Qos::AtLeastOnce, Qos::ExactlyOnce])
    }

    fn task_event() -> impl Strategy<Value = TaskEvent> {
        prop_oneof![
            (string_map(), string_map(), ".{0,21}").prop_map(|(headers, params, remote)| TaskEvent::Connect {
                headers,
                params,
                remote
            }),
            (any::<u16>(), qos(), prop::option::of(".{0,8}"))
                .prop_map(|(message_type, qos, context)| TaskEvent::Message { message_type, qos, context }),
            prop::option::of(".{0,8}").prop_map(|context| TaskEvent::Close { context }),
        ]
    }

    fn to_worker() -> impl Strategy<Value = ToWorker> {
        let task = (any::<u64>(), ".{0,12}", any::<u32>(), "[0-9a-f]{0,64}", task_event(), body()).prop_map(
            |(task, key, attempt, identity, event, body)| {
                ToWorker::Task(Task { task, key, attempt, identity, event, body })
            },
        );
        prop_oneof![
            (any::<u64>(), ".{0,12}", any::<u64>()).prop_map(|(version, node, worker)| ToWorker::Welcome {
                version,
                node,
                worker
            }),
            task,
            (any::<u64>(), fields()).prop_map(|(req, answer)| ToWorker::Result { req, answer }),
            Just(ToWorker::Drained),
        ]
    }

    /// Known ops (both directions, and one unknown) with known field names
    /// holding any JSON: reaches every field check.
    fn plausible_header() -> impl Strategy<Value = Map<String, Value>> {
        let ops = vec![
            "hello", "credit", "drain", "reply", "send", "push", "sub", "unsub", "close", "welcome", "task", "result",
            "drained", "dance",
        ];
        let names = vec![
            "version", "credits", "task", "accept", "context", "sub", "unsub", "error", "req", "node", "worker",
            "kind", "key", "attempt", "identity", "headers", "params", "remote", "type", "qos", "status",
        ];
        let value = prop_oneof![
            json_value(),
            (0u64..12).prop_map(Value::from),
            prop::sample::select(vec!["connect", "message", "close"]).prop_map(Value::from),
            strings().prop_map(Value::from),
        ];
        (prop::sample::select(ops), prop::collection::btree_map(prop::sample::select(names), value, 0..10)).prop_map(
            |(op, fields)| {
                let mut header: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                header.insert("op".into(), op.into());
                header
            },
        )
    }

    /// The header length a frame announces.
    fn header_len(frame: &Bytes) -> usize {
        let (header, _) = envelope::decode(frame).unwrap();
        header.len()
    }

    proptest! {
        #[test]
        fn split_never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(raw) = split(Bytes::from(data)) {
                let _ = FromWorker::parse(raw.clone());
                let _ = ToWorker::parse(raw);
            }
        }

        #[test]
        fn junk_headers_are_errors_not_panics(
            junk in prop::collection::vec(any::<u8>(), 0..64),
            body in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let frame = Bytes::from(envelope::encode(&junk, &body));
            let _ = FromWorker::decode(frame.clone());
            let _ = ToWorker::decode(frame);
        }

        #[test]
        fn encode_then_split_round_trips(
            header in prop::collection::btree_map(".{0,8}", json_value(), 0..6),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let header: Map<String, Value> = header.into_iter().collect();
            let raw = split(encode(&header, &body)).unwrap();
            prop_assert_eq!(&raw.header, &header);
            prop_assert_eq!(&raw.body[..], &body[..]);
            prop_assert_eq!(split(raw.encode()).unwrap(), raw);
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

        #[test]
        fn every_worker_frame_round_trips(frame in from_worker()) {
            let bytes = frame.encode();
            prop_assert_eq!(FromWorker::decode(bytes.clone()), Ok(frame));
            // A gateway frame parser never takes it for one of its own.
            prop_assert!(matches!(ToWorker::decode(bytes), Err(FrameError::UnknownOp(_))));
        }

        #[test]
        fn every_gateway_frame_round_trips(frame in to_worker()) {
            let bytes = frame.encode();
            prop_assert_eq!(ToWorker::decode(bytes.clone()), Ok(frame));
            prop_assert!(matches!(FromWorker::decode(bytes), Err(FrameError::UnknownOp(_))));
        }

        #[test]
        fn a_typed_frame_cut_in_its_header_is_an_error(
            frame in prop_oneof![from_worker().prop_map(|f| f.encode()), to_worker().prop_map(|f| f.encode())],
            cut in any::<prop::sample::Index>(),
        ) {
            let end = envelope::PREFIX_LEN + header_len(&frame);
            let cut = frame.slice(..cut.index(end));
            prop_assert!(FromWorker::decode(cut.clone()).is_err());
            prop_assert!(ToWorker::decode(cut).is_err());
        }

        #[test]
        fn whatever_parses_encodes_to_the_same_frame(header in plausible_header(), body in body()) {
            let raw = RawFrame { header, body };
            if let Ok(frame) = FromWorker::parse(raw.clone()) {
                prop_assert_eq!(FromWorker::decode(frame.encode()), Ok(frame));
            }
            if let Ok(frame) = ToWorker::parse(raw) {
                prop_assert_eq!(ToWorker::decode(frame.encode()), Ok(frame));
            }
        }
    }
}
