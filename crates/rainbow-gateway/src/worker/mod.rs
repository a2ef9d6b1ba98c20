//! Workers (the "maple" design): backend processes that attach to the
//! gateway over a WebSocket and **pull** tasks when they have room, instead
//! of receiving one webhook call per event. Clients stay connected while
//! workers come, go, restart or crash. The contract is
//! `docs/worker-protocol.md`.
//!
//! What lives where:
//! - The frames themselves (codec and types, both directions) are
//!   [`rainbow_protocol::worker`], shared with the `rainbow-worker` SDK.
//! - [`pool`]: the dispatcher: attached workers and their credits, the one
//!   bounded gateway-wide task queue (count and age bounds), requeue at the
//!   front when a worker dies, draining. Synchronous state, tested without
//!   sockets.
//! - [`route`]: the `[workers]` routing keys and the routed connect, forward
//!   and close hooks the transport calls (webhook or worker).
//! - [`session`]: `GET /worker/` (signed handshake) and the task driving one
//!   worker's socket.
//! - [`calls`]: the API calls a worker makes over its socket, run through
//!   [`crate::api::ops`] like the HTTP API.
//! - [`metrics`]: the `rainbow_worker*` metrics.
//!
//! Per-connection order comes from the transport: a connection's messages go
//! through its forward queue one at a time, and a message routed to a worker
//! simply awaits the worker's reply where it would await the HTTP call.

pub mod calls;
pub mod metrics;
pub mod pool;
pub mod route;
pub mod session;

pub use metrics::WorkerMetrics;
pub use pool::{Failure, Pool, WorkerInfo};
