//! [`Client`]: the cheap, clonable handle applications call.
//!
//! It only queues requests for the connection task and waits for their
//! answers; the WebSocket, the QoS state machines and reconnection live in
//! [`crate::connection`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rainbow_protocol::Qos;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::ClientConfig;
use crate::connection::{CLOSE_WAIT, Request, Shared, Task};
use crate::error::ClientError;
use crate::event::{EventSink, Events};
use crate::handshake;

/// Roughly a century: what "no deadline" means if `now + timeout` overflows.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A connection to a Rainbow gateway. Clones share the connection.
///
/// The connection lives until [`Client::close`], until it ends and is not
/// (or can no longer be) re-established, or until every clone is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Request>,
    /// Set to `true` by `close`; dropping it (with the last handle) also
    /// stops the task.
    shutdown: watch::Sender<bool>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

impl Client {
    /// Connects to the gateway and starts the connection task.
    ///
    /// The first handshake is not retried, even with a reconnect policy: a
    /// refusal or an unreachable gateway is reported here. Must be called
    /// within a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let ws = handshake::connect(&config).await?;
        let (commands_tx, commands_rx) = mpsc::channel(config.max_in_flight.max(1));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (sink, events) = EventSink::new(config.event_capacity);
        let shared = Arc::new(Shared::default());
        let request_timeout = config.request_timeout;
        let task = Task { config, commands: commands_rx, shutdown: shutdown_rx, events: sink, shared: shared.clone() };
        tokio::spawn(task.run(ws));
        let inner = Inner { commands: commands_tx, shutdown: shutdown_tx, shared, request_timeout };
        Ok((Client { inner: Arc::new(inner) }, events))
    }

    /// Sends a message and waits for its answer, within the configured
    /// request timeout.
    ///
    /// qos 0 resolves with an empty `Bytes` once the packet is written; qos 1
    /// and 2 resolve with the reply payload of the ACK or REC (retransmitting
    /// with `dup = 1` meanwhile). v1 replies carry no message type: the reply
    /// belongs to `message_type`.
    pub async fn send(&self, message_type: u16, payload: impl Into<Bytes>, qos: Qos) -> Result<Bytes, ClientError> {
        self.send_with_timeout(message_type, payload, qos, self.inner.request_timeout).await
    }

    /// [`Client::send`] with its own timeout.
    pub async fn send_with_timeout(
        &self,
        message_type: u16,
        payload: impl Into<Bytes>,
        qos: Qos,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let now = Instant::now();
        let deadline = now.checked_add(timeout).or_else(|| now.checked_add(FAR_FUTURE)).unwrap_or(now);
        let (reply, answer) = oneshot::channel();
        let request = Request { message_type, qos, payload: payload.into(), deadline, reply };
        let exchange = async {
            if self.inner.commands.send(request).await.is_err() {
                return Err(self.ended());
            }
            answer.await.unwrap_or_else(|_| Err(self.ended()))
        };
        // The task expires the request at the same deadline; this also covers
        // time spent queued or reconnecting.
        tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), exchange)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    /// Closes the connection normally (code 1000) and waits briefly for the
    /// connection task to finish. Pending sends fail with
    /// [`ClientError::Closed`]; [`Events`] ends after a final `Closed`.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        // The task drops its receiver when it ends.
        let _ = tokio::time::timeout(CLOSE_WAIT * 2, self.inner.commands.closed()).await;
    }

    /// Whether the connection task has ended: every later send fails.
    pub fn is_closed(&self) -> bool {
        self.inner.commands.is_closed()
    }

    /// Why the task ended (or a generic `Closed` if that was not recorded).
    fn ended(&self) -> ClientError {
        self.inner
            .shared
            .ended
            .get()
            .cloned()
            .unwrap_or_else(|| ClientError::Closed { code: None, reason: "the connection task ended".to_owned() })
    }
}
