//! The customer's backend as the gateway reaches it: the connect, forward
//! and close hooks (docs/protocol.md §3, §4, §6), answered by webhooks or by
//! attached workers.
//!
//! - [`route`]: which of the two answers an event (the `[workers]` keys),
//!   and the three entry points the transport calls: [`Backend::connect`],
//!   [`Backend::forward`], [`Backend::close`].
//! - [`webhook`]: the hooks as signed HTTP calls (§7), over two clients:
//!   [`http1`], the lean keep-alive client for `http://` URLs, and reqwest
//!   for `https://` ones.
//! - [`control`]: what an answer may ask of the connection (context,
//!   channels; §5), checked and applied through the hub.
//!
//! Workers themselves (their queue and credits) are `crate::worker`; this
//! module only submits tasks to its pool. It decides nothing about the
//! connection: it returns typed outcomes ([`ConnectDecision`],
//! [`HookError`]) and the transport acts on them. Every failure says which
//! side failed, so logs can say what to fix.

pub mod control;
pub mod http1;
pub mod route;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

pub use control::Control;

use crate::metrics::Metrics;
use crate::worker::Pool;

/// Header carrying the connection identity to the backend.
pub const IDENTITY_HEADER: &str = "RAINBOWCLIENTIDENTITY";
/// Header carrying the connection context (cookie), both ways.
pub const COOKIE_HEADER: &str = "RAINBOWCLIENTCOOKIE";

/// The backend: its webhooks and its attached workers.
#[derive(Debug)]
pub struct Backend {
    webhooks: webhook::Webhooks,
    workers: Pool,
    metrics: Arc<Metrics>,
}

impl Backend {
    /// A backend with no worker attached yet, for the node tagged
    /// `node_tag`. `max_idle` bounds the pooled keep-alive connections per
    /// webhook host.
    pub fn new(max_idle: usize, metrics: Arc<Metrics>, node_tag: u32) -> Backend {
        let workers = Pool::new(metrics.workers.clone(), node_tag);
        Backend { webhooks: webhook::Webhooks::new(max_idle), workers, metrics }
    }

    /// The attached workers and their task queue.
    pub fn workers(&self) -> &Pool {
        &self.workers
    }
}

/// What the connect hook decided.
#[derive(Debug)]
pub enum ConnectDecision {
    /// Accept, applying these controls.
    Accept(Control),
    /// The backend said no (HTTP 401 to the client).
    Deny,
    /// The backend could not be asked (HTTP 503 to the client).
    Unavailable(HookError),
}

/// A hook call that did not produce an answer.
#[derive(Debug, Error)]
pub enum HookError {
    /// The backend did not answer within the hook's timeout.
    #[error("backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend could not be reached (connection refused, DNS, reset...).
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// The backend answered with an error status.
    #[error("backend answered HTTP {0}")]
    Status(u16),
    /// No forward_url is configured, so client messages have nowhere to go.
    #[error("no forward_url configured")]
    NoForwardUrl,
    /// The configured URL is not usable after substitution.
    #[error("config: bad hook URL {0:?}")]
    BadUrl(String),
    /// The event was routed to workers, and no worker answered it.
    #[error("{0}")]
    Worker(crate::worker::Failure),
    /// The backend (a webhook or a worker) answered, but the answer is
    /// unusable (for example a context no header can carry).
    #[error("the backend's answer is unusable: {0}")]
    BadAnswer(String),
}

impl HookError {
    /// Which side must act: `config` for a bad or missing URL, else `backend`.
    pub fn side(&self) -> &'static str {
        match self {
            HookError::NoForwardUrl | HookError::BadUrl(_) => "config",
            HookError::Worker(_) => "worker",
            _ => "backend",
        }
    }

    /// A short label for the forwards metric.
    pub fn label(&self) -> &'static str {
        match self {
            HookError::Timeout(_) => "timeout",
            HookError::Unreachable(_) => "unreachable",
            HookError::Status(_) => "http_error",
            HookError::NoForwardUrl => "no_forward_url",
            HookError::BadUrl(_) => "bad_url",
            HookError::Worker(f) => f.label(),
            HookError::BadAnswer(_) => "bad_answer",
        }
    }
}

/// Request headers a client sent that must not reach the backend: hop-by-hop
/// and handshake headers (docs/protocol.md §3), and any `RAINBOW*` header, which only the
/// gateway may set (a client must not forge an identity or a context).
pub(crate) fn is_withheld(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "upgrade" | "connection" | "origin" | "host" | "content-length" | "transfer-encoding" | "te"
    ) || name.starts_with("sec-websocket-")
        || name.starts_with("rainbow")
}
