//! The Rainbow gateway: holds client WebSocket connections, forwards their
//! messages to an HTTP backend, and delivers the backend's pushes, speaking
//! the v1 wire contract of the original Rainbow server.
//!
//! Layout, from the outside in:
//! - [`config`]: keys, defaults, INI/TOML/env/CLI layering, validation.
//! - [`server`]: binding, serving, graceful shutdown.
//! - [`api`]: the HTTP endpoints (backend API and operator pages).
//! - [`transport`]: the `/connect/` WebSocket endpoint and the per-connection
//!   driver.
//! - [`hub`]: connections, channels and delivery to them.
//! - [`cluster`]: several nodes as one over Redis.
//! - [`backend`]: the connect, forward and close hooks.
//! - [`worker`]: workers that attach over a WebSocket and pull tasks (routed
//!   instead of the hooks by the `[workers]` keys).
//! - [`signature`], [`metrics`], [`state`]: shared pieces.
//! - [`demo`]: `rainbow demo`, the chat room on an in-process backend.
//!
//! The packet codec and QoS state machines are in `rainbow-protocol`, which
//! does no IO.
#![warn(missing_docs)]

pub mod api;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod signature;
pub mod state;
pub mod transport;
pub mod worker;

pub use config::{Config, ConfigError, Settings};
pub use server::{Server, ServerError};
pub use state::Gateway;

/// Sets up `tracing` output, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
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
