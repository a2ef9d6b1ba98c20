//! What a worker receives ([`Task`]) and answers ([`Reply`]), as in
//! docs/worker-protocol.md §4.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// What happened on a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A client wants to connect: accept or deny it.
    Connect,
    /// A client sent a message: answer it.
    Message,
    /// A client connection ended.
    Close,
}

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

fn strings(header: &Map<String, Value>, field: &str) -> BTreeMap<String, String> {
    header
        .get(field)
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

impl Task {
    /// Reads a `task` frame.
    pub(crate) fn parse(header: &Map<String, Value>, body: Bytes) -> Result<Task, String> {
        let id = header.get("task").and_then(Value::as_u64).ok_or("task without a task id")?;
        let kind = match header.get("kind").and_then(Value::as_str) {
            Some("connect") => TaskKind::Connect,
            Some("message") => TaskKind::Message,
            Some("close") => TaskKind::Close,
            other => return Err(format!("task of unknown kind {other:?}")),
        };
        let text = |f: &str| header.get(f).and_then(Value::as_str).map(str::to_owned);
        let mut params = BTreeMap::new();
        if let Some(p) = header.get("params").and_then(Value::as_object) {
            for (k, v) in p {
                if let Some(v) = v.as_str() {
                    params.insert(k.clone(), v.to_owned());
                }
            }
        }
        Ok(Task {
            id,
            kind,
            identity: text("identity").unwrap_or_default(),
            key: text("key").unwrap_or_else(|| id.to_string()),
            attempt: header.get("attempt").and_then(Value::as_u64).and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
            message_type: header.get("type").and_then(Value::as_u64).and_then(|t| u16::try_from(t).ok()).unwrap_or(0),
            qos: header.get("qos").and_then(Value::as_u64).and_then(|q| u8::try_from(q).ok()).unwrap_or(0),
            context: text("context"),
            headers: strings(header, "headers"),
            params,
            remote: text("remote"),
            payload: body,
        })
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

    /// The `reply` header for task `task`.
    pub(crate) fn header(&self, task: u64) -> Map<String, Value> {
        let mut h = crate::frame::object(json!({"op": "reply", "task": task}));
        if let Some(accept) = self.accept {
            h.insert("accept".into(), accept.into());
        }
        if let Some(context) = &self.context {
            h.insert("context".into(), context.clone().into());
        }
        if !self.sub.is_empty() {
            h.insert("sub".into(), self.sub.clone().into());
        }
        if !self.unsub.is_empty() {
            h.insert("unsub".into(), self.unsub.clone().into());
        }
        if let Some(error) = &self.error {
            h.insert("error".into(), error.clone().into());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tasks_of_every_kind() {
        let h = crate::frame::object(json!({
            "op": "task", "task": 9, "kind": "connect", "identity": "ab", "key": "n-9", "attempt": 2,
            "headers": {"X-DEVICEID": "d1"}, "params": {"room": "a"}, "remote": "1.2.3.4:5"
        }));
        let t = Task::parse(&h, Bytes::new()).unwrap();
        assert_eq!((t.id, t.kind, t.attempt, t.is_redelivery()), (9, TaskKind::Connect, 2, true));
        assert_eq!(
            (t.header("x-deviceid"), t.param("room"), t.remote.as_deref()),
            (Some("d1"), Some("a"), Some("1.2.3.4:5"))
        );
        let h = crate::frame::object(json!({"task": 1, "kind": "message", "type": 7, "qos": 2, "context": null}));
        let t = Task::parse(&h, Bytes::from_static(b"p")).unwrap();
        assert_eq!((t.message_type, t.qos, t.context, &t.payload[..]), (7, 2, None, &b"p"[..]));
        assert!(Task::parse(&crate::frame::object(json!({"task": 1, "kind": "dance"})), Bytes::new()).is_err());
    }

    #[test]
    fn reply_headers_carry_only_what_is_set() {
        assert_eq!(Value::Object(Reply::new("x").header(3)), json!({"op": "reply", "task": 3}));
        let r = Reply::accept().context("c").subscribe("a").unsubscribe("b");
        assert_eq!(
            Value::Object(r.header(1)),
            json!({"op": "reply", "task": 1, "accept": true, "context": "c", "sub": ["a"], "unsub": ["b"]})
        );
        assert_eq!(Value::Object(Reply::error("no").header(2)), json!({"op": "reply", "task": 2, "error": "no"}));
    }
}
