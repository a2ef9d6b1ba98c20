//! [`WorkerError`]: everything that can go wrong in the library, each variant
//! saying which side must act.

use std::time::Duration;

use thiserror::Error;

/// An error of the worker library.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum WorkerError {
    /// The configured gateway URL cannot be used.
    #[error("invalid gateway URL {0:?}: expected ws://HOST:PORT/worker/ (or http://HOST:PORT)")]
    InvalidUrl(String),
    /// The gateway refused the handshake: with 401 the security token is
    /// wrong, the clocks differ by more than the signature window, or the
    /// gateway does not take this signature version.
    #[error(
        "the gateway refused the worker handshake with HTTP {status}: {body}{hint}",
        hint = if *status == 401 {
            " (check that the token is the gateway's security_token and this host's clock; \
             a gateway older than v2 signatures needs WorkerConfig::signature_version(SignatureVersion::V1))"
        } else {
            ""
        }
    )]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The answer's body (short).
        body: String,
    },
    /// The gateway could not be reached (it is retried with backoff).
    #[error("cannot reach the gateway: {0}")]
    Connect(String),
    /// The gateway does not speak this library's protocol version, or sent
    /// something this library cannot read.
    #[error("worker protocol error: {0}")]
    Protocol(String),
    /// The session ended before the call was answered; the call may or may
    /// not have run.
    #[error("the session to the gateway ended before the call was answered")]
    Disconnected,
    /// The call was not answered in time.
    #[error("no answer from the gateway within {0:?}")]
    Timeout(Duration),
    /// The worker has stopped; no more calls can be made.
    #[error("the worker has stopped")]
    Stopped,
}
