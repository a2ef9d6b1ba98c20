//! Binding the listener, serving, and the graceful shutdown.
//!
//! [`Server::bind`] opens the port (trying 1985..2003 when the default 1984
//! is taken and no port was given, as the original did); [`Server::run`]
//! serves until a shutdown future resolves, then stops accepting, closes every
//! client with 1001, and waits for their close hooks and the HTTP requests
//! under way, all of it within `shutdown_timeout` whatever the sockets do.
//! [`run_until_signal`] wires that to SIGTERM and SIGINT for the binaries.
//!
//! - [`listener`]: the sockets until they become WebSockets (timeouts, the
//!   bound on them, shedding when descriptors run out).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod listener;

use axum::Router;
use axum::routing::{get, post};
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::api::{self, execute::Here};
use crate::config::Config;
use crate::hub::coarse_now;
use crate::state::{Gateway, Reloader};
use crate::transport;

/// The whole router: client transport, backend API, worker socket, operator
/// endpoints.
pub fn router(gw: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    // Each path with and without its trailing slash.
    for (path, route) in [
        ("/connect/", get(transport::connect)),
        ("/worker/", get(api::worker::endpoint)),
        ("/send/", post(api::push::send)),
        ("/sub/", post(api::push::sub)),
        ("/unsub/", post(api::push::unsub)),
        ("/hello/", get(api::info::hello)),
        ("/serverinfo/", get(api::info::server_info)),
        ("/updateconfig/", get(api::info::update_config).post(api::info::update_config)),
    ] {
        router = router.route(path, route.clone()).route(path.trim_end_matches('/'), route);
    }
    router
        .route("/metrics", get(api::info::metrics))
        .route("/healthz", get(api::info::healthz))
        .route("/rainbow.js", get(crate::demo::rainbow_js))
        .with_state(gw)
}

/// Ports tried after the default one is taken (docs/protocol.md §9).
const FALLBACK_PORTS: std::ops::RangeInclusive<u16> = 1985..=2003;

/// The server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; choose another http_port or stop the process using it")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// A bound, not yet serving, gateway.
pub struct Server {
    gw: Arc<Gateway>,
    listener: TcpListener,
    extra: Option<axum::Router>,
}

impl Server {
    /// Binds the configured address.
    pub async fn bind(config: Config, reloader: Option<Reloader>) -> Result<Server, ServerError> {
        let addr = SocketAddr::new(config.bind, config.http_port);
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if !config.port_explicit && e.kind() == std::io::ErrorKind::AddrInUse => {
                let mut found = None;
                for port in FALLBACK_PORTS {
                    if let Ok(l) = TcpListener::bind(SocketAddr::new(config.bind, port)).await {
                        warn!(port, "port {} is taken; listening on {port} instead", config.http_port);
                        found = Some(l);
                        break;
                    }
                }
                found.ok_or(ServerError::Bind { addr, source: e })?
            }
            Err(source) => return Err(ServerError::Bind { addr, source }),
        };
        let mut gw = Gateway::new(config, reloader);
        if let Ok(local) = listener.local_addr() {
            gw = gw.listening_on(local.port());
        }
        if let Some(cap) = listener::descriptor_cap() {
            let configured = gw.config().max_connections;
            if cap < configured {
                info!(
                    max_connections = configured,
                    allowed = cap,
                    "connections are capped by the open-file limit (ulimit -n); raise it to hold more"
                );
            }
            gw = gw.with_descriptor_cap(cap);
        }
        Ok(Server { gw: Arc::new(gw), listener, extra: None })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address; fall back to the
        // unspecified one rather than panic.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The shared state (for embedding and tests).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gw.clone()
    }

    /// Adds routes (for example the demo's chat page) next to the gateway's.
    pub fn with_routes(mut self, routes: axum::Router) -> Server {
        self.extra = Some(routes);
        self
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully, in at
    /// most `shutdown_timeout` from then.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let Server { gw, listener, extra } = self;
        info!(addr = %listener.local_addr().map_err(ServerError::Serve)?, "rainbow gateway listening");
        let sweeper = tokio::spawn(sweep(gw.clone()));
        let cluster = gw.cluster.node().cloned().map(|node| tokio::spawn(node.run(Arc::new(Here(gw.clone())))));
        let mut app = router(gw.clone());
        if let Some(extra) = extra {
            app = app.merge(extra);
        }
        let connections = listener::Listener::new(gw.clone(), listener, app).run(shutdown).await;
        let timeout = gw.config().shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        info!(connections = gw.hub.len(), "shutting down: closing clients with 1001");
        gw.begin_shutdown();
        sweeper.abort();
        if let Some(cluster) = cluster {
            cluster.abort();
        }
        if let Some(node) = gw.cluster.node() {
            let _ = tokio::time::timeout_at(deadline, node.leave()).await;
        }
        gw.tasks.close();
        let finished = async {
            connections.wait().await;
            gw.tasks.wait().await;
        };
        if tokio::time::timeout_at(deadline, finished).await.is_err() {
            warn!(
                ?timeout,
                close_hooks = gw.tasks.len(),
                http_connections = connections.len(),
                "shutdown_timeout passed with close hooks or HTTP requests still running; stopping anyway"
            );
        }
        gw.backend.workers().shutdown();
        info!("stopped");
        Ok(())
    }
}

/// The shared liveness sweeper: one pass a second over every connection
/// instead of a timer per connection.
async fn sweep(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let config = gw.config();
        gw.hub.sweep(coarse_now(), config.ping_interval, config.pong_timeout);
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the gateway");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Binds and serves until SIGTERM/SIGINT.
pub async fn run_until_signal(config: Config, reloader: Option<Reloader>) -> Result<(), ServerError> {
    Server::bind(config, reloader).await?.run(shutdown_signal()).await
}
