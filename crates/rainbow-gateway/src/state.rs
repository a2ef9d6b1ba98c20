//! The gateway's shared state: one [`Gateway`] per process, handed to every
//! HTTP handler and connection task.
//!
//! It puts the parts together: the live configuration (swappable by
//! `/updateconfig/`), the hub, the cluster, the backend (webhooks and
//! workers), metrics, the signature verifier, the global forward slots and
//! the tracker of spawned tasks. Behaviour lives in the modules that use it;
//! the parts below it (`hub`, `backend`, `worker`, `cluster`, `config`) never
//! see the whole of it.

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
    /// The port the configuration asked for at start (the live
    /// configuration has the port actually bound).
    configured_port: u16,
    /// The most connections the open-file limit allows (see
    /// [`Gateway::connection_limit`]).
    descriptor_cap: usize,
    /// Connections and channels.
    pub hub: Arc<Hub>,
    /// The cluster (empty when this node runs alone).
    pub cluster: Cluster,
    /// The hooks: webhooks and attached workers.
    pub backend: Backend,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// API signature checks.
    pub verifier: Verifier,
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
        let hub = Arc::new(Hub::new(config.max_channels_per_connection));
        let metrics = Arc::new(Metrics::new());
        let tasks = TaskTracker::new();
        let cluster = Cluster::from_config(&config, hub.clone(), metrics.clone(), tasks.clone()).unwrap_or_else(|e| {
            // The URL was validated with the config; if redis-rs still
            // refuses it, run alone and say so loudly rather than not start.
            tracing::error!(side = "config", "cannot set up the cluster ({e}); this node runs alone");
            Cluster::alone()
        });
        Gateway {
            configured_port: config.http_port,
            descriptor_cap: usize::MAX,
            cluster,
            backend: Backend::new(config.max_inflight_forwards, metrics.clone(), hub.node_tag()),
            hub,
            metrics,
            verifier: Verifier::new(config.signature_window, config.replay_cache_size),
            forward_slots: Semaphore::new(config.max_inflight_forwards),
            admitted: AtomicUsize::new(0),
            tasks,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            config: RwLock::new(Arc::new(config)),
            reloader,
        }
    }

    /// Records the port the listener is bound to (another one than the
    /// configured port when that was taken, or when it was 0): the live
    /// configuration reports it from now on, reloads included.
    pub fn listening_on(self, port: u16) -> Gateway {
        let mut config = (*self.config()).clone();
        config.http_port = port;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        self
    }

    /// The live configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Caps connections at what the process's open-file limit allows.
    pub fn with_descriptor_cap(mut self, cap: usize) -> Gateway {
        self.descriptor_cap = cap;
        self
    }

    /// How many client connections may be held now: `max_connections`,
    /// never more than the open-file limit allows.
    pub fn connection_limit(&self) -> usize {
        self.config().max_connections.min(self.descriptor_cap)
    }

    /// Re-reads the configuration and swaps it in. Keys read only at start
    /// (the listen address, limits sized at start, the cluster's keys) are
    /// reported back as needing a restart, and their old values stay in
    /// force.
    pub fn reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let reloader = self.reloader.as_ref().ok_or(ReloadError::NoSource)?;
        let mut new = reloader().map_err(ReloadError::Config)?;
        let old = self.config();
        let changed = [
            ("http_port", new.http_port != self.configured_port),
            ("bind", new.bind != old.bind),
            ("max_inflight_forwards", new.max_inflight_forwards != old.max_inflight_forwards),
            ("max_channels_per_connection", new.max_channels_per_connection != old.max_channels_per_connection),
            ("redis_url", new.redis_url != old.redis_url),
            ("cluster_name", new.cluster_name != old.cluster_name),
            ("node_ttl", new.node_ttl != old.node_ttl),
            ("cluster_timeout", new.cluster_timeout != old.cluster_timeout),
            ("signature_window", new.signature_window != old.signature_window),
            ("replay_cache_size", new.replay_cache_size != old.replay_cache_size),
        ];
        // What is in force stays visible in the live configuration.
        new.http_port = old.http_port;
        new.bind = old.bind;
        new.max_inflight_forwards = old.max_inflight_forwards;
        new.max_channels_per_connection = old.max_channels_per_connection;
        new.redis_url = old.redis_url.clone();
        new.cluster_name = old.cluster_name.clone();
        new.node_ttl = old.node_ttl;
        new.cluster_timeout = old.cluster_timeout;
        new.signature_window = old.signature_window;
        new.replay_cache_size = old.replay_cache_size;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(changed.into_iter().filter(|(_, changed)| *changed).map(|(key, _)| key).collect())
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
