//! [`Api`]: the gateway's HTTP API over the worker's own socket
//! (docs/worker-protocol.md §6): push to a channel or a connection,
//! subscribe, unsubscribe, close. Each call answers the JSON the HTTP API
//! would (`{"status": 0, ...}` or `{"status": 1, "msg": ...}`).
//!
//! Calls made while the worker is reconnecting wait (up to the call timeout)
//! and go out on the next session.

use std::time::Duration;

use bytes::Bytes;
use rainbow_protocol::worker::CallOp;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::error::WorkerError;

/// Calls waiting for a session, at most.
pub(crate) const CALL_QUEUE: usize = 1024;

/// One call on its way to the session task.
#[derive(Debug)]
pub(crate) struct CallRequest {
    pub(crate) op: CallOp,
    /// The call's fields; the session adds `req`.
    pub(crate) fields: Map<String, Value>,
    pub(crate) body: Bytes,
    pub(crate) answer: oneshot::Sender<Result<Value, WorkerError>>,
}

/// A message to deliver to clients: type, payload, qos (default 2, as the
/// HTTP API), and how long qos 1/2 wait for the clients' answers (default
/// 10 s).
#[derive(Debug, Clone)]
pub struct Message {
    message_type: u16,
    payload: Bytes,
    qos: u8,
    timeout: Duration,
}

impl Message {
    /// A qos-2 message of `message_type` with `payload`.
    pub fn new(message_type: u16, payload: impl Into<Bytes>) -> Message {
        Message { message_type, payload: payload.into(), qos: 2, timeout: Duration::from_secs(10) }
    }

    /// The delivery guarantee towards the clients (0, 1, 2).
    pub fn qos(mut self, qos: u8) -> Message {
        self.qos = qos;
        self
    }

    /// How long qos 1/2 wait for the clients' answers.
    pub fn timeout(mut self, timeout: Duration) -> Message {
        self.timeout = timeout;
        self
    }

    fn fields(&self, fields: &mut Map<String, Value>) {
        fields.insert("type".into(), self.message_type.into());
        fields.insert("qos".into(), self.qos.into());
        fields.insert("timeout".into(), self.timeout.as_secs_f64().into());
    }
}

/// A handle for API calls; cheap to clone. Handlers get one with every task.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) tx: mpsc::Sender<CallRequest>,
    pub(crate) timeout: Duration,
}

impl Api {
    async fn call(
        &self,
        op: CallOp,
        fields: Map<String, Value>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Value, WorkerError> {
        let (answer, rx) = oneshot::channel();
        let exchange = async {
            self.tx.send(CallRequest { op, fields, body, answer }).await.map_err(|_| WorkerError::Stopped)?;
            rx.await.unwrap_or(Err(WorkerError::Disconnected))
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(WorkerError::Timeout(timeout)))
    }

    fn delivery_timeout(&self, message: &Message) -> Duration {
        self.timeout.max(message.timeout + Duration::from_secs(5))
    }

    /// Delivers `message` to every connection subscribed to `channel` (like
    /// `POST /send/`): `{"status": 0, "connections": N, "data": "..."}`.
    pub async fn send(&self, channel: &str, message: Message) -> Result<Value, WorkerError> {
        let mut fields = strings([("channel", channel)]);
        message.fields(&mut fields);
        let timeout = self.delivery_timeout(&message);
        self.call(CallOp::Send, fields, message.payload, timeout).await
    }

    /// Delivers `message` to the one connection `identity`; `connections` is
    /// 0 when it is not connected (any more).
    pub async fn push(&self, identity: &str, message: Message) -> Result<Value, WorkerError> {
        let mut fields = strings([("identity", identity)]);
        message.fields(&mut fields);
        let timeout = self.delivery_timeout(&message);
        self.call(CallOp::Push, fields, message.payload, timeout).await
    }

    /// Subscribes connection `identity` to `channel`; with `occupy`, every
    /// other subscriber is removed first (like `POST /sub/`).
    pub async fn sub(&self, identity: &str, channel: &str, occupy: bool) -> Result<Value, WorkerError> {
        let mut fields = strings([("identity", identity), ("channel", channel)]);
        fields.insert("occupy".into(), occupy.into());
        self.call(CallOp::Sub, fields, Bytes::new(), self.timeout).await
    }

    /// Unsubscribes connection `identity` from `channel`.
    pub async fn unsub(&self, identity: &str, channel: &str) -> Result<Value, WorkerError> {
        let fields = strings([("identity", identity), ("channel", channel)]);
        self.call(CallOp::Unsub, fields, Bytes::new(), self.timeout).await
    }

    /// Closes connection `identity` (WebSocket code 1000 with `reason`); its
    /// close task follows.
    pub async fn close(&self, identity: &str, reason: &str) -> Result<Value, WorkerError> {
        let fields = strings([("identity", identity), ("reason", reason)]);
        self.call(CallOp::Close, fields, Bytes::new(), self.timeout).await
    }
}

/// A call's string fields.
fn strings<const N: usize>(pairs: [(&str, &str); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect()
}
