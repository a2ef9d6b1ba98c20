//! The Rainbow gateway: holds client WebSocket connections, forwards their
//! messages to the customer's backend, and delivers the backend's pushes,
//! speaking the wire contract of docs/protocol.md.
//!
//! Layout, from the bottom up (each module uses only those above it in this
//! list; `tests/` checks that no two import each other):
//! - [`logging`], [`config`], [`signature`], [`metrics`]: log lines nobody
//!   can forge, keys and their values, request signatures, counters.
//! - [`hub`]: connections, channels and delivery to them.
//! - [`worker`]: the dispatcher of tasks to attached workers.
//! - [`backend`]: the connect, forward and close hooks, answered by webhooks
//!   or workers.
//! - [`ops`]: the backend's requests (send, push, sub, unsub, close), typed
//!   and checked once.
//! - [`cluster`]: several nodes as one over Redis.
//! - [`state`]: the [`Gateway`] that puts those together.
//! - [`handshake`], [`status`]: WebSocket upgrades, query parameters and the
//!   signature check; this node's figures.
//! - [`transport`]: client connections at `/connect/` (what clients send
//!   flows transport → hub → backend).
//! - [`api`]: what the backend talks to: the signed HTTP API, the worker
//!   socket, the operator pages (what it pushes flows api → hub →
//!   transport).
//! - [`server`]: the router, binding, serving, graceful shutdown.
//! - [`demo`]: `rainbow demo`, the chat room on an in-process backend.
//!
//! The packet codec, the QoS state machines and the worker frames are in
//! `rainbow-protocol`, which does no IO.
#![warn(missing_docs)]

pub mod api;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod handshake;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod signature;
pub mod state;
pub mod status;
pub mod transport;
pub mod worker;

pub use config::{Config, ConfigError, Settings};
pub use server::{Server, ServerError};
pub use state::Gateway;

/// Sets up `tracing` output, filtered by `RUST_LOG` (default `info`), with
/// every value escaped (see [`logging`]).
pub fn init_tracing() {
    logging::init();
}

/// Loads the configuration: `file` (if any) < `RAINBOW_*` environment <
/// `cli`. Unknown environment names are logged, not fatal.
pub fn load_config(file: Option<&std::path::Path>, cli: &Settings) -> Result<Config, ConfigError> {
    let base = match file {
        Some(path) => config::file::load(path)?,
        None => Settings::default(),
    };
    let (env, unknown) = Settings::from_env(std::env::vars());
    for name in unknown {
        tracing::warn!(variable = %name, "ignoring unknown RAINBOW_* environment variable");
    }
    Config::from_settings(&base.layer(env).layer(cli.clone()))
}
