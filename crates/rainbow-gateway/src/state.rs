//! The gateway's shared state: one [`Gateway`] per process, handed to every
//! HTTP handler and connection task.
//!
//! It holds the live configuration (swappable by `/updateconfig/`), the hub,
//! the backend client, metrics, the signature verifier, the global forward
//! slots and the tracker of spawned tasks. Behaviour lives in the modules
//! that use it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError};
use crate::hub::{CloseOrder, Hub};
use crate::metrics::Metrics;
use crate::signature::Verifier;

/// Rebuilds the configuration from its sources (file, environment, flags).
pub type Reloader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Everything the handlers and tasks share.
pub struct Gateway {
    config: RwLock<Arc<Config>>,
    reloader: Option<Reloader>,
    /// Connections and channels.
    pub hub: Hub,
    /// The cluster (empty when this node runs alone).
    pub cluster: Cluster,
    /// Hook client.
    pub backend: Backend,
    /// Metrics.
    pub metrics: Metrics,
    /// API signature checks.
    pub verifier: Verifier,
    /// Attached workers and the task queue.
    pub workers: crate::worker::Pool,
    /// Gateway-wide forward slots (`max_inflight_forwards`).
    pub forward_slots: Semaphore,
    /// Connections admitted (handshaking or open), for `max_connections`.
    pub admitted: AtomicUsize,
    /// Every connection and forward task, for graceful shutdown.
    pub tasks: TaskTracker,
    /// When the gateway started.
    pub started: Instant,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("connections", &self.hub.len()).finish_non_exhaustive()
    }
}

impl Gateway {
    /// State for `config`; `reloader` serves `/updateconfig/`.
    pub fn new(config: Config, reloader: Option<Reloader>) -> Gateway {
        let hub = Hub::new(config.max_channels_per_connection);
        let cluster = Cluster::from_config(&config, hub.node_tag()).unwrap_or_else(|e| {
            // The URL was validated with the config; if redis-rs still refuses
            // it, run alone and say so loudly rather than not start.
            tracing::error!(side = "config", "cannot set up the cluster ({e}); this node runs alone");
            Cluster::alone()
        });
        let metrics = Metrics::new();
        Gateway {
            hub,
            cluster,
            backend: Backend::new(config.max_inflight_forwards),
            workers: crate::worker::Pool::new(metrics.workers.clone()),
            metrics,
            verifier: Verifier::new(config.signature_window, config.replay_cache_size),
            forward_slots: Semaphore::new(config.max_inflight_forwards),
            admitted: AtomicUsize::new(0),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            config: RwLock::new(Arc::new(config)),
            reloader,
        }
    }

    /// The live configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the configuration and swaps it in. Keys read only at start
    /// (port, bind, limits sized at start) are reported back as needing a
    /// restart.
    pub fn reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let reloader = self.reloader.as_ref().ok_or(ReloadError::NoSource)?;
        let new = reloader().map_err(ReloadError::Config)?;
        let old = self.config();
        let mut restart = Vec::new();
        if new.http_port != old.http_port && new.port_explicit {
            restart.push("http_port");
        }
        if new.bind != old.bind {
            restart.push("bind");
        }
        if new.max_inflight_forwards != old.max_inflight_forwards {
            restart.push("max_inflight_forwards");
        }
        if new.max_channels_per_connection != old.max_channels_per_connection {
            restart.push("max_channels_per_connection");
        }
        if new.redis_url != old.redis_url || new.cluster_name != old.cluster_name {
            restart.push("redis_url/cluster_name");
        }
        if new.signature_window != old.signature_window || new.replay_cache_size != old.replay_cache_size {
            restart.push("signature_window/replay_cache_size");
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(restart)
    }

    /// Starts shutting down: new connections are refused and every open one
    /// is told to close with 1001.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.hub.close_all(CloseOrder::SHUTDOWN);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// `/updateconfig/` could not reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started without a config file to re-read.
    #[error("this gateway was not started from a config file")]
    NoSource,
    /// The new configuration is invalid; the old one stays in force.
    #[error("{0}; the previous configuration stays in force")]
    Config(ConfigError),
}

/// Shared handle type.
pub type SharedGateway = Arc<Gateway>;
