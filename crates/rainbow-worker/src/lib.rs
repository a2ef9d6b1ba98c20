//! A Rust worker for the Rainbow gateway (docs/worker-protocol.md).
//!
//! A worker attaches to the gateway over one WebSocket and **pulls** tasks:
//! client connects (accept or deny), client messages (reply with a payload
//! and controls), client closes. It says how many tasks it can take at once
//! (credits) and never gets more; it can be restarted at any moment while
//! clients stay connected: [`Handle::drain`] (or SIGTERM/SIGHUP with
//! [`Worker::run_until_signal`]) finishes what it holds, and the tasks of a
//! worker that dies are delivered again to the next one. Handlers also get an
//! [`Api`] to do what the HTTP API does: push to channels or connections,
//! subscribe, unsubscribe, close.
//!
//! ```no_run
//! use rainbow_worker::{Reply, Worker, WorkerConfig};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), rainbow_worker::WorkerError> {
//!     let config = WorkerConfig::new("ws://127.0.0.1:1984/worker/", "qwe123").name("echo").credits(64);
//!     Worker::new(config)
//!         .on_any_message(|task, _api| async move { Reply::new(task.payload) })
//!         .run_until_signal()
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! Modules:
//! - [`config`]: [`WorkerConfig`] and the signed handshake URL.
//! - [`task`]: [`Task`] and [`Reply`].
//! - [`api`]: [`Api`], the gateway's API over the worker's socket.
//! - [`dedup`]: [`DedupStore`] and two stores, for exactly-once handling
//!   across worker crashes (by task key).
//! - [`worker`]: [`Worker`], [`Handle`], the session and reconnect loop.
//! - [`error`]: the error type, [`WorkerError`].
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod dedup;
pub mod error;
pub mod task;
pub mod worker;

pub use api::{Api, Message};
pub use config::{SignatureVersion, WorkerConfig};
pub use dedup::{DedupStore, FileDedup, MemoryDedup, Record};
pub use error::WorkerError;
pub use task::{Reply, Task, TaskKind};
pub use worker::{Handle, StopSignal, Worker};
