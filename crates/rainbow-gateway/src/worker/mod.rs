//! Workers (the "maple" design): backend processes that attach to the
//! gateway over a WebSocket and **pull** tasks when they have room, instead
//! of receiving one webhook call per event. Clients stay connected while
//! workers come, go, restart or crash. The contract is
//! `docs/worker-protocol.md`.
//!
//! What lives here is the dispatcher, with no IO. The frames themselves
//! (codec and types, both directions) are [`rainbow_protocol::worker`],
//! shared with the `rainbow-worker` SDK.
//! - [`pool`]: attached workers and their credits, the one bounded
//!   gateway-wide task queue (count and age bounds), requeue at the front
//!   when a worker dies, draining. Synchronous state, tested without sockets.
//!
//! Who uses it: `backend::route` submits the connect, message and close tasks
//! (instead of the webhooks, as the `[workers]` keys say), and `api::worker`
//! drives each worker's socket: deliveries out, replies and API calls in.
//!
//! Per-connection order comes from the transport: a connection's messages go
//! through its forward queue one at a time, and a message routed to a worker
//! simply awaits the worker's reply where it would await the HTTP call.

pub mod pool;

pub use pool::{Failure, Pool, WorkerInfo};
