//! [`ClientError`]: every way a client call can fail, each message saying
//! which side failed (us, the network, or the gateway).
//!
//! Connection-level outcomes that are not failures of a call (the server
//! closing, a reconnect) are [`Event`](crate::Event)s, not errors.

use std::sync::Arc;

use rainbow_protocol::DecodeError;
use thiserror::Error;

/// Why a [`Client`](crate::Client) call failed.
///
/// Cheap to clone: one connection failure fails every pending send with the
/// same error.
#[derive(Clone, Debug, Error)]
pub enum ClientError {
    /// The gateway URL (with our query parameters) is not a usable `ws://` URL.
    #[error("invalid gateway URL: {0}")]
    InvalidUrl(String),
    /// A configured header name or value (or the device id / OS sent as a
    /// header) cannot go in an HTTP request.
    #[error("invalid request header: {0}")]
    InvalidHeader(String),
    /// The gateway answered the WebSocket handshake with an HTTP error: 401
    /// means the backend's connect hook denied us, 503 that the backend is
    /// unreachable or the gateway is full.
    #[error("the gateway refused the handshake with HTTP {status}: {body}")]
    Refused {
        /// The HTTP status code of the gateway's answer.
        status: u16,
        /// The body of the gateway's answer (lossy UTF-8, possibly truncated).
        body: String,
    },
    /// We could not reach the gateway or complete the handshake (DNS, TCP,
    /// timeout, a non-WebSocket answer).
    #[error("could not connect to the gateway: {0}")]
    Connect(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The gateway did not answer (ACK/REC) before the request timeout.
    #[error("the gateway did not answer before the deadline")]
    Timeout,
    /// The connection is closed (by the gateway, the network or
    /// [`Client::close`](crate::Client::close)) and will not come back.
    #[error("the connection is closed ({}): {reason}", code.map_or_else(|| "no close code".to_owned(), |c| format!("code {c}")))]
    Closed {
        /// The close code, or `None` if the TCP connection dropped without a
        /// close frame.
        code: Option<u16>,
        /// The close reason, or a description of what happened.
        reason: String,
    },
    /// Too many of our qos 1/2 sends already await an answer
    /// ([`ClientConfig::max_in_flight`](crate::ClientConfig::max_in_flight)).
    #[error("{0} of our messages already await an answer from the gateway")]
    InFlightFull(usize),
    /// The gateway sent bytes that are not a v1 packet; we closed the
    /// connection with code 1002.
    #[error("the gateway sent an invalid packet: {0}")]
    Protocol(#[from] DecodeError),
}

impl ClientError {
    pub(crate) fn connect(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ClientError::Connect(Arc::new(error))
    }

    /// Whether a reconnect loop should give up on this handshake error: a 401
    /// is a refusal by the backend, and bad configuration never heals.
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            ClientError::Refused { status, .. } => *status == 401,
            ClientError::InvalidUrl(_) | ClientError::InvalidHeader(_) => true,
            _ => false,
        }
    }
}
