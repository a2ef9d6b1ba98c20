//! Client transport: the WebSocket endpoint at `/connect/`.
//!
//! - this file: the HTTP handshake (device headers or params, admission
//!   against `max_connections`, the connect hook, the 101 answer; the
//!   WebSocket checks themselves are `crate::handshake`'s);
//! - [`driver`]: the task that owns one upgraded socket and runs the QoS state
//!   machines from `rainbow-protocol` for it;
//! - [`socket`]: the WebSocket itself over the raw TCP stream, holding no
//!   buffer while idle;
//! - [`forward`]: the tasks that carry client messages to the backend.
//!
//! The upgrade is done with hyper directly; then the TCP stream is taken back
//! from hyper and framed by `rainbow_protocol::websocket`, so buffers and
//! errors (1009, 1002, 1007) are ours to set.

pub mod driver;
pub mod forward;
pub mod socket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::backend::ConnectDecision;
use crate::handshake::{self, NotWebSocket};
use crate::hub::{Connection, Limits, coarse_now};
use crate::metrics::DisconnectReason;
use crate::state::Gateway;

/// Header (or query parameter) naming the client device.
pub const DEVICE_ID: &str = "X-DEVICEID";
/// Header (or query parameter) naming the client OS.
pub const CLIENT_OS: &str = "X-CLIENT-OS";

/// Longest handshake query string, bytes: its parameters go to the connect
/// hook, and the hook URL must stay a valid URL once they are re-encoded.
pub const MAX_QUERY: usize = 16 * 1024;

/// A connection slot under `max_connections`, released on drop.
pub struct Admission(Arc<Gateway>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

fn admit(gw: &Arc<Gateway>, max: usize) -> Option<Admission> {
    let previous = gw.admitted.fetch_add(1, Ordering::AcqRel);
    let slot = Admission(gw.clone());
    (previous < max).then_some(slot)
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// The device id and OS from headers (`X-DEVICEID`, also the original's
/// `X_deviceid` spelling) or, for browsers, query parameters.
fn device(headers: &HeaderMap, query: &[(String, String)]) -> Option<(String, String)> {
    let find = |name: &str, alt: &str| {
        headers
            .get(name)
            .or_else(|| headers.get(alt))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()))
            .filter(|v| !v.trim().is_empty())
    };
    Some((find(DEVICE_ID, "X_deviceid")?, find(CLIENT_OS, "X_client_os")?))
}

/// `GET /connect/`: checks the handshake, asks the connect hook, upgrades.
pub async fn connect(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let config = gw.config();
    let headers = request.headers();
    let accept = match handshake::upgrade_accept(headers) {
        Ok(accept) => accept,
        Err(why) => {
            gw.metrics.connect("bad_request");
            return match why {
                NotWebSocket::NoUpgrade => {
                    refuse(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade to /connect/\n")
                }
                NotWebSocket::Version => {
                    let mut r = refuse(StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version; use 13\n");
                    r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
                    r
                }
                NotWebSocket::NoKey => refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"),
            };
        }
    };
    if request.uri().query().map_or(0, str::len) > MAX_QUERY {
        gw.metrics.connect("bad_request");
        debug!(%peer, side = "client", "handshake refused: query over {MAX_QUERY} bytes");
        return refuse(StatusCode::URI_TOO_LONG, "query string too long\n");
    }
    let query = handshake::query_pairs(request.uri());
    let Some((device_id, os)) = device(headers, &query) else {
        gw.metrics.connect("bad_request");
        // 401, as the original answered a handshake without device headers.
        return refuse(StatusCode::UNAUTHORIZED, "missing X-DEVICEID or X-CLIENT-OS (header or query parameter)\n");
    };
    let Some(admission) = admit(&gw, gw.connection_limit()) else {
        gw.metrics.connect("over_limit");
        warn!(%peer, max = gw.connection_limit(), "connection refused: gateway at max_connections (or the open-file limit)");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "gateway is at its connection limit; retry later\n");
    };
    let identity = gw.hub.mint_identity();
    let control = match gw.backend.connect(&config, identity, peer, &query, headers).await {
        ConnectDecision::Accept(control) => control,
        ConnectDecision::Deny => {
            gw.metrics.connect("denied");
            debug!(%identity, %peer, %device_id, %os, "connect hook denied the connection");
            return refuse(StatusCode::UNAUTHORIZED, "connection refused by the backend\n");
        }
        ConnectDecision::Unavailable(cause) => {
            gw.metrics.connect("backend_error");
            warn!(%identity, %peer, side = cause.side(), %cause, "connect hook failed; refusing with 503");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "backend unavailable; retry later\n");
        }
    };
    gw.metrics.connect("accepted");
    let cookie = control.cookie.as_deref().filter(|c| !c.is_empty()).map(Arc::from);
    let conn = Arc::new(Connection::new(
        identity,
        peer,
        cookie,
        Limits::new(config.outbox_capacity, config.max_queued_bytes),
        coarse_now(),
    ));
    driver::register(&gw, &conn, &control);
    // From here on the connection's task owns it: whatever happens to this
    // handshake (the client may leave while the cluster subscribes), the
    // task finishes the connection and runs its close hook.
    let (subscribed, ready) = oneshot::channel();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let upgrade = Box::new(Upgrade {
        on_upgrade,
        peer,
        device_id,
        os,
        max_message: config.max_message_size,
        subscribe: control.subscribe,
        subscribed: Some(subscribed),
    });
    gw.tasks.spawn(serve(gw.clone(), conn, admission, upgrade));
    // The hook's channels are active cluster-wide before the client hears
    // it is connected, so a publish right after reaches it.
    let _ = ready.await;
    handshake::switching_protocols(accept)
}

/// What the connection task needs from the handshake, only until the
/// upgrade completes (boxed, so the task does not keep room for it).
struct Upgrade {
    on_upgrade: OnUpgrade,
    peer: SocketAddr,
    device_id: String,
    os: String,
    max_message: usize,
    /// Channels the connect hook joined, to make active in the cluster.
    subscribe: Vec<String>,
    /// Told once they are (or the cluster gave up on them).
    subscribed: Option<oneshot::Sender<()>>,
}

impl Upgrade {
    /// Waits for hyper to hand the connection over and takes its socket;
    /// `None` when that failed (the connection is then finished).
    async fn complete(mut self: Box<Self>, gw: &Gateway, conn: &Connection) -> Option<socket::Socket> {
        // Boxed: needed once, and the task would otherwise keep room for it.
        Box::pin(gw.cluster.subscribe_now(&self.subscribe)).await;
        if let Some(subscribed) = self.subscribed.take() {
            let _ = subscribed.send(());
        }
        let Upgrade { on_upgrade, peer, device_id, os, max_message, .. } = *self;
        let identity = conn.identity();
        let reason = match on_upgrade.await {
            Ok(upgraded) => match socket::Socket::from_upgraded(upgraded, max_message) {
                Some(socket) => {
                    info!(%identity, %peer, %device_id, %os, "connected");
                    return Some(socket);
                }
                None => {
                    warn!(%identity, %peer, "upgraded connection is not a TCP stream; closing");
                    DisconnectReason::Error
                }
            },
            Err(e) => {
                debug!(%identity, %peer, "upgrade failed after the connect hook accepted: {e}");
                DisconnectReason::Client
            }
        };
        // The hook accepted, so the backend must hear that it ended.
        Box::pin(driver::finish(gw, conn, reason)).await;
        None
    }
}

/// The connection's task: the upgrade, then the driver until it ends, then
/// the close hook.
///
/// Not an `async fn`, which would store its arguments twice: this future is
/// the connection's largest allocation (see `driver::drive`).
#[allow(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
fn serve(
    gw: Arc<Gateway>,
    conn: Arc<Connection>,
    admission: Admission,
    upgrade: Box<Upgrade>,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // No await while a `Result` or `Option` holding the socket is in
        // scope: rustc would keep room for a second socket in this future.
        let Some(socket) = upgrade.complete(&gw, &conn).await else { return };
        let reason = driver::drive(&gw, &conn, socket).await;
        // Boxed: the close hook's HTTP request is a large future, and the
        // task would otherwise keep room for it during the connection's life.
        Box::pin(driver::finish(&gw, &conn, reason)).await;
        drop(admission);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection task's future is the largest thing an idle connection
    /// holds. tokio stores it with 112 bytes of its own, rounded up to 128:
    /// up to 272 bytes make a 384-byte task. Measured: 248 bytes in release
    /// builds, 256 in debug builds.
    #[tokio::test]
    async fn the_connection_task_stays_small() {
        let settings = crate::Settings::from_pairs([("security_token", "t")]);
        let gw = Arc::new(Gateway::new(crate::Config::from_settings(&settings).unwrap(), None));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let conn = Arc::new(Connection::new(
            crate::hub::Identity::random(),
            peer,
            None,
            crate::hub::Limits::new(8, 1 << 20),
            coarse_now(),
        ));
        let mut request = Request::new(axum::body::Body::empty());
        let on_upgrade = hyper::upgrade::on(&mut request);
        let (subscribed, _ready) = oneshot::channel();
        let upgrade = Box::new(Upgrade {
            on_upgrade,
            peer,
            device_id: "d".into(),
            os: "o".into(),
            max_message: 1024,
            subscribe: Vec::new(),
            subscribed: Some(subscribed),
        });
        let task = serve(gw.clone(), conn, Admission(gw.clone()), upgrade);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 272, "the connection task's future grew to {size} bytes");
    }

    #[test]
    fn device_from_headers_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(device(&h, &[]), None);
        h.insert("x-deviceid", HeaderValue::from_static("d1"));
        h.insert("X-Client-OS", HeaderValue::from_static("ios"));
        assert_eq!(device(&h, &[]), Some(("d1".into(), "ios".into())));
        let q = vec![("X-DEVICEID".to_string(), "d2".to_string()), ("x-client-os".to_string(), "web".to_string())];
        assert_eq!(device(&HeaderMap::new(), &q), Some(("d2".into(), "web".into())));
        let empty = vec![("X-DEVICEID".to_string(), " ".to_string()), ("X-CLIENT-OS".to_string(), "web".to_string())];
        assert_eq!(device(&HeaderMap::new(), &empty), None);
    }
}
