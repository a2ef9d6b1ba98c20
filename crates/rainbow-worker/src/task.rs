//! What a worker receives ([`Task`]) and answers ([`Reply`]), as in
//! docs/worker-protocol.md §4: the application's view of the protocol's
//! typed `task` and `reply` frames ([`rainbow_protocol::worker`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use rainbow_protocol::worker::{self as frame, ReplyFields, TaskEvent};

pub use rainbow_protocol::worker::TaskKind;

/// One task from the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The task id (the library answers with it).
    pub id: u64,
    /// What happened.
    pub kind: TaskKind,
    /// The client connection's identity (64 hex).
    pub identity: String,
    /// Stays the same when the task is delivered again after a worker died:
    /// make handling idempotent by it (see [`crate::DedupStore`]).
    pub key: String,
    /// 1 on first delivery, more on redelivery.
    pub attempt: u32,
    /// Messages: the message type.
    pub message_type: u16,
    /// Messages: the client's qos (0, 1, 2).
    pub qos: u8,
    /// Messages and close: the connection's context (cookie).
    pub context: Option<String>,
    /// Connect: the client's request headers (names lower-case).
    pub headers: BTreeMap<String, String>,
    /// Connect: the query parameters of the client's handshake.
    pub params: BTreeMap<String, String>,
    /// Connect: the client's address, `ip:port`.
    pub remote: Option<String>,
    /// Messages: the client's payload.
    pub payload: Bytes,
}

impl Task {
    /// The application's view of a `task` frame.
    pub(crate) fn from_frame(frame: frame::Task) -> Task {
        let frame::Task { task: id, key, attempt, identity, event, body } = frame;
        let mut t = Task {
            id,
            kind: event.kind(),
            identity,
            key,
            attempt,
            message_type: 0,
            qos: 0,
            context: None,
            headers: BTreeMap::new(),
            params: BTreeMap::new(),
            remote: None,
            payload: body,
        };
        match event {
            TaskEvent::Connect { headers, params, remote } => {
                // Names are lower-case on the wire already; this keeps
                // `header` case-insensitive whatever a gateway sends.
                t.headers = headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
                t.params = params;
                t.remote = Some(remote);
            }
            TaskEvent::Message { message_type, qos, context } => {
                t.message_type = message_type;
                t.qos = qos.as_u8();
                t.context = context;
            }
            TaskEvent::Close { context } => t.context = context,
        }
        t
    }

    /// Whether this is a redelivery (a worker holding it died).
    pub fn is_redelivery(&self) -> bool {
        self.attempt > 1
    }

    /// A request header of a connect task (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// A query parameter of a connect task.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// The answer to a task: a payload plus the controls a webhook would return
/// as headers.
///
/// ```
/// use rainbow_worker::Reply;
/// let reply = Reply::new("pong").context("eyJ1IjoxfQ==").subscribe("room");
/// let welcome = Reply::accept().subscribe("lobby");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The reply payload (the client's ACK/REC carries it).
    pub payload: Bytes,
    /// Connect: accept or refuse the client.
    pub accept: Option<bool>,
    /// New connection context (cookie); empty clears it.
    pub context: Option<String>,
    /// Channels to subscribe the connection to.
    pub sub: Vec<String>,
    /// Channels to unsubscribe it from (applied first).
    pub unsub: Vec<String>,
    /// The task failed: the gateway treats it as a failed webhook.
    pub error: Option<String>,
}

impl Reply {
    /// A reply carrying `payload`.
    pub fn new(payload: impl Into<Bytes>) -> Reply {
        Reply { payload: payload.into(), ..Reply::default() }
    }

    /// An empty reply (acknowledges a close, answers with no payload).
    pub fn empty() -> Reply {
        Reply::default()
    }

    /// Accepts a connecting client.
    pub fn accept() -> Reply {
        Reply { accept: Some(true), ..Reply::default() }
    }

    /// Refuses a connecting client (it gets HTTP 401).
    pub fn deny() -> Reply {
        Reply { accept: Some(false), ..Reply::default() }
    }

    /// The task failed: a connect gets 503, a qos 1/2 message no answer (the
    /// client retransmits).
    pub fn error(message: impl Into<String>) -> Reply {
        Reply { error: Some(message.into()), ..Reply::default() }
    }

    /// Sets the connection's context (cookie).
    pub fn context(mut self, context: impl Into<String>) -> Reply {
        self.context = Some(context.into());
        self
    }

    /// Subscribes the connection to `channel`.
    pub fn subscribe(mut self, channel: impl Into<String>) -> Reply {
        self.sub.push(channel.into());
        self
    }

    /// Unsubscribes the connection from `channel`.
    pub fn unsubscribe(mut self, channel: impl Into<String>) -> Reply {
        self.unsub.push(channel.into());
        self
    }

    /// The `reply` frame's fields.
    pub(crate) fn into_fields(self) -> ReplyFields {
        let Reply { payload, accept, context, sub, unsub, error } = self;
        ReplyFields { accept, context, sub, unsub, error, body: payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rainbow_protocol::Qos;
    use rainbow_protocol::worker::{FromWorker, ToWorker};
    use serde_json::{Value, json};

    fn task(event: TaskEvent, body: &'static [u8]) -> Task {
        let frame = frame::Task {
            task: 9,
            key: "n-9".into(),
            attempt: 2,
            identity: "ab".into(),
            event,
            body: Bytes::from_static(body),
        };
        // Through the wire and back, as the worker gets it.
        let Ok(ToWorker::Task(frame)) = ToWorker::decode(ToWorker::Task(frame).encode()) else { panic!() };
        Task::from_frame(frame)
    }

    #[test]
    fn reads_tasks_of_every_kind() {
        let t = task(
            TaskEvent::Connect {
                headers: [("X-DEVICEID".to_owned(), "d1".to_owned())].into(),
                params: [("room".to_owned(), "a".to_owned())].into(),
                remote: "1.2.3.4:5".into(),
            },
            b"",
        );
        assert_eq!(
            (t.id, t.kind, t.attempt, t.is_redelivery(), t.key.as_str()),
            (9, TaskKind::Connect, 2, true, "n-9")
        );
        assert_eq!(
            (t.header("x-deviceid"), t.param("room"), t.remote.as_deref()),
            (Some("d1"), Some("a"), Some("1.2.3.4:5"))
        );
        let t = task(TaskEvent::Message { message_type: 7, qos: Qos::ExactlyOnce, context: None }, b"p");
        assert_eq!(
            (t.kind, t.message_type, t.qos, t.context, &t.payload[..]),
            (TaskKind::Message, 7, 2, None, &b"p"[..])
        );
        let t = task(TaskEvent::Close { context: Some("c".into()) }, b"");
        assert_eq!((t.kind, t.context.as_deref(), t.remote), (TaskKind::Close, Some("c"), None));
    }

    fn header(reply: Reply, task: u64) -> Value {
        Value::Object(FromWorker::Reply { task, reply: reply.into_fields() }.header())
    }

    #[test]
    fn reply_headers_carry_only_what_is_set() {
        assert_eq!(header(Reply::new("x"), 3), json!({"op": "reply", "task": 3}));
        let r = Reply::accept().context("c").subscribe("a").unsubscribe("b");
        assert_eq!(
            header(r, 1),
            json!({"op": "reply", "task": 1, "accept": true, "context": "c", "sub": ["a"], "unsub": ["b"]})
        );
        assert_eq!(header(Reply::error("no"), 2), json!({"op": "reply", "task": 2, "error": "no"}));
        assert_eq!(&Reply::new("x").into_fields().body[..], b"x");
    }
}
