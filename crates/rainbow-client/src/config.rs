//! How a [`Client`](crate::Client) connects and behaves: [`ClientConfig`] and
//! its parts ([`DeviceIn`], [`ReconnectPolicy`], [`Handler`]).
//!
//! Everything here is plain data with builder-style setters; nothing here
//! opens a socket or validates the URL and headers (that happens in
//! [`Client::connect`](crate::Client::connect), which reports problems as
//! [`ClientError`](crate::ClientError)s).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::event::ServerMessage;

/// Computes the reply payload for a qos 1/2 message from the gateway.
///
/// The returned bytes go back in the ACK (qos 1) or REC (qos 2); `None` sends an
/// empty reply. The handler runs on the connection's task, before the message
/// is queued as an [`Event`](crate::Event), so it must be quick and must not
/// block. It is not called for qos-0 messages, which get no reply.
pub type Handler = Arc<dyn Fn(&ServerMessage) -> Option<Bytes> + Send + Sync>;

/// Where the device id and OS go in the handshake request (docs/protocol.md §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceIn {
    /// As the `X-DEVICEID` and `X-CLIENT-OS` request headers (native apps).
    #[default]
    Headers,
    /// As the `X-DEVICEID` and `X-CLIENT-OS` query parameters (browsers, which
    /// cannot set headers on a WebSocket handshake).
    Query,
}

/// Reconnection after an unexpected close: exponential backoff with jitter.
///
/// Before attempt `n` (0-based) the client waits a random delay between half
/// and all of `min(max_delay, min_delay * 2^n)`. A handshake refused with 401
/// is never retried; 503 and network errors are, until `max_attempts`
/// consecutive attempts have failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// The base delay before the first attempt.
    pub min_delay: Duration,
    /// The cap on any delay.
    pub max_delay: Duration,
    /// How many consecutive attempts to make before giving up; `None` retries
    /// forever.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    /// 100 ms doubling up to 30 s, retrying forever.
    fn default() -> Self {
        ReconnectPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The randomized delay to wait before attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let ceiling = self.min_delay.saturating_mul(factor).min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        // "Equal jitter": at least half the ceiling, so delays still grow.
        Duration::from_nanos(rand::random_range(nanos / 2..=nanos))
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
///
/// ```
/// use std::time::Duration;
/// use rainbow_client::{ClientConfig, DeviceIn, ReconnectPolicy};
///
/// let config = ClientConfig::new("ws://127.0.0.1:1984/connect/")
///     .device_id("abc123")
///     .os("ios")
///     .device_in(DeviceIn::Query)
///     .query("app", "demo")
///     .request_timeout(Duration::from_secs(5))
///     .reconnect(ReconnectPolicy::default());
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) url: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) device_id: String,
    pub(crate) os: String,
    pub(crate) device_in: DeviceIn,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retransmit_interval: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) max_unreleased: usize,
    pub(crate) event_capacity: usize,
    pub(crate) max_message_size: usize,
    pub(crate) reconnect: Option<ReconnectPolicy>,
    pub(crate) handler: Option<Handler>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("query", &self.query)
            .field("device_id", &self.device_id)
            .field("os", &self.os)
            .field("device_in", &self.device_in)
            .field("headers", &self.headers)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retransmit_interval", &self.retransmit_interval)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_unreleased", &self.max_unreleased)
            .field("event_capacity", &self.event_capacity)
            .field("max_message_size", &self.max_message_size)
            .field("reconnect", &self.reconnect)
            .field("handler", &self.handler.as_ref().map(|_| "Fn(&ServerMessage)"))
            .finish()
    }
}

/// A random 32-hex-digit device id.
pub(crate) fn random_device_id() -> String {
    rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect()
}

impl ClientConfig {
    /// A config for the gateway at `url` (`ws://HOST:PORT/connect/`, optionally
    /// with query parameters), with a random hex device id, os `rainbow-rust`,
    /// device parameters in headers, a 10 s request timeout, a 3 s
    /// retransmit interval and no reconnection.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            query: Vec::new(),
            device_id: random_device_id(),
            os: "rainbow-rust".to_owned(),
            device_in: DeviceIn::Headers,
            headers: Vec::new(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            retransmit_interval: Duration::from_secs(3),
            max_in_flight: 256,
            max_unreleased: 128,
            event_capacity: 256,
            max_message_size: 1 << 20,
            reconnect: None,
            handler: None,
        }
    }

    /// The device id sent as `X-DEVICEID`.
    pub fn device_id(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = device_id.into();
        self
    }

    /// The OS sent as `X-CLIENT-OS`.
    pub fn os(mut self, os: impl Into<String>) -> Self {
        self.os = os.into();
        self
    }

    /// Whether the device id and OS travel as headers (default) or query
    /// parameters.
    pub fn device_in(mut self, device_in: DeviceIn) -> Self {
        self.device_in = device_in;
        self
    }

    /// Appends a query parameter to the handshake URL (percent-encoded here).
    /// The gateway passes query parameters on to the connect hook.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Adds a handshake request header. The gateway passes headers on to the
    /// connect hook (docs/protocol.md §3).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How long [`Client::send`](crate::Client::send) waits for the ACK/REC
    /// (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a TCP connect plus WebSocket handshake may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for an ACK/REC (or COM) before retransmitting with
    /// `dup = 1` (default 3 s, as the original server).
    pub fn retransmit_interval(mut self, interval: Duration) -> Self {
        self.retransmit_interval = interval;
        self
    }

    /// How many of our qos 1/2 sends may await an answer at once (default
    /// 256); beyond that `send` fails with
    /// [`ClientError::InFlightFull`](crate::ClientError::InFlightFull).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// How many of the gateway's qos-2 messages may await their REL (default
    /// 128); a gateway that exceeds it is disconnected with close code 1008.
    pub fn max_unreleased(mut self, max: usize) -> Self {
        self.max_unreleased = max;
        self
    }

    /// How many events may wait in [`Events`](crate::Events) (default 256).
    /// See [`Events`](crate::Events) for what happens when it is full.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// The largest WebSocket message (and frame) accepted from the gateway
    /// (default 1 MiB). A larger one ends the connection.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Reconnects after unexpected closes, following `policy`. Off by default.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Sets the [`Handler`] that computes replies to the gateway's qos 1/2
    /// messages. Without one, they are answered with an empty reply.
    pub fn handler(mut self, handler: impl Fn(&ServerMessage) -> Option<Bytes> + Send + Sync + 'static) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = ReconnectPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: None,
        };
        for _ in 0..50 {
            let d0 = policy.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100), "{d0:?}");
            let d2 = policy.delay(2);
            assert!(d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400), "{d2:?}");
            let big = policy.delay(u32::MAX);
            assert!(big >= Duration::from_millis(500) && big <= Duration::from_secs(1), "{big:?}");
        }
    }

    #[test]
    fn zero_delays_do_not_panic() {
        let policy = ReconnectPolicy { min_delay: Duration::ZERO, max_delay: Duration::ZERO, max_attempts: Some(1) };
        assert_eq!(policy.delay(3), Duration::ZERO);
    }

    #[test]
    fn random_device_ids_are_hex() {
        let id = random_device_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, random_device_id());
    }
}
