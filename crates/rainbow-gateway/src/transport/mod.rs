//! Client transport: the WebSocket endpoint at `/connect/`.
//!
//! - this file: the HTTP handshake (device headers or params, admission
//!   against `max_connections`, the connect hook, the 101 answer);
//! - [`driver`]: the task that owns one upgraded socket and runs the QoS state
//!   machines from `rainbow-protocol` for it;
//! - [`forward`]: the tasks that carry client messages to the backend.
//!
//! The upgrade is done with hyper directly and the socket wrapped by
//! tokio-tungstenite, so buffer sizes and errors (1009, 1002) are ours to set.

pub mod driver;
pub mod forward;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, info, warn};

use crate::backend::ConnectDecision;
use crate::config::Config;
use crate::hub::{Connection, coarse_now};
use crate::metrics::DisconnectReason;
use crate::state::Gateway;

/// Header (or query parameter) naming the client device.
pub const DEVICE_ID: &str = "X-DEVICEID";
/// Header (or query parameter) naming the client OS.
pub const CLIENT_OS: &str = "X-CLIENT-OS";

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

/// Tungstenite settings: small buffers, since most connections are idle most
/// of the time, and the configured message limit. Tungstenite allocates and
/// zero-fills the whole read buffer on the first read, so its size is resident
/// memory for every connection: 1 KiB instead of 4 KiB measured 7,856 → see
/// docs/PERFORMANCE.md. Larger messages grow the buffer as needed.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(8192)
        .max_write_buffer_size(config.max_message_size.saturating_mul(2).max(1 << 20))
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size))
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
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
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        gw.metrics.connect("bad_request");
        return refuse(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade to /connect/\n");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        gw.metrics.connect("bad_request");
        let mut r = refuse(StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version; use 13\n");
        r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        gw.metrics.connect("bad_request");
        return refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    let Some((device_id, os)) = device(headers, &query) else {
        gw.metrics.connect("bad_request");
        // 401, as the original answered a handshake without device headers.
        return refuse(StatusCode::UNAUTHORIZED, "missing X-DEVICEID or X-CLIENT-OS (header or query parameter)\n");
    };
    let Some(admission) = admit(&gw, config.max_connections) else {
        gw.metrics.connect("over_limit");
        warn!(%peer, max = config.max_connections, "connection refused: gateway at max_connections");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "gateway is at its connection limit; retry later\n");
    };
    let identity = gw.hub.mint_identity();
    let control = match crate::worker::route::connect(&gw, &config, identity, peer, &query, headers).await {
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
    let conn = Arc::new(Connection::new(identity, peer, cookie, config.outbox_capacity, coarse_now()));
    driver::register(&gw, &conn, &control);
    crate::cluster::subscribe_now(&gw, &control.subscribe).await;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let ws_config = websocket_config(&config);
    let task_gw = gw.clone();
    gw.tasks.spawn(async move {
        let gw = task_gw;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config)).await;
                info!(%identity, %peer, %device_id, %os, "connected");
                driver::run(gw, ws, conn, admission).await;
            }
            Err(e) => {
                // The hook accepted, so the backend must hear that it ended.
                debug!(%identity, %peer, "upgrade failed after the connect hook accepted: {e}");
                driver::finish(&gw, &conn, DisconnectReason::Client).await;
                drop(admission);
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "handshake error\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
