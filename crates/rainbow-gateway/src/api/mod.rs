//! The HTTP surface on the same port as `/connect/`: the backend API (spec §8)
//! and the operator endpoints.
//!
//! - [`push`]: `/send/`, `/sub/`, `/unsub/` (signed), parsed and checked.
//! - [`ops`]: what those calls do, shared with the worker endpoint.
//! - [`info`]: `/hello/`, `/serverinfo/`, `/healthz`, `/metrics` (public) and
//!   `/updateconfig/` (signed).
//! - `/rainbow.js`: the browser client, embedded at build time (see `demo`).
//!
//! Answers follow the original's convention: JSON with `status` 0 on success
//! and `{"status": 1, "msg": ...}` on failure, with HTTP 200, so existing
//! backends keep working. Errors outside the spec (a body over the size
//! limit, a full replay cache) also use real HTTP status codes.

pub mod info;
pub mod ops;
pub mod push;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{Method, StatusCode, request::Parts};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tracing::warn;

use crate::signature::{RequestId, SignatureError, unix_now};
use crate::state::Gateway;
use crate::transport;

/// The whole router: client transport, backend API, operator endpoints.
pub fn router(gw: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    // Each path with and without its trailing slash.
    for (path, route) in [
        ("/connect/", get(transport::connect)),
        ("/worker/", get(crate::worker::session::endpoint)),
        ("/send/", post(push::send)),
        ("/sub/", post(push::sub)),
        ("/unsub/", post(push::unsub)),
        ("/hello/", get(info::hello)),
        ("/serverinfo/", get(info::server_info)),
        ("/updateconfig/", get(info::update_config).post(info::update_config)),
    ] {
        router = router.route(path, route.clone()).route(path.trim_end_matches('/'), route);
    }
    router
        .route("/metrics", get(info::metrics))
        .route("/healthz", get(info::healthz))
        .route("/rainbow.js", get(crate::demo::rainbow_js))
        .with_state(gw)
}

/// `{"status": 1, "msg": msg}` with HTTP 200.
pub fn failure(msg: &str) -> Response {
    Json(json!({"status": 1, "msg": msg})).into_response()
}

/// A JSON answer with HTTP 200.
pub fn answer(value: Value) -> Response {
    Json(value).into_response()
}

/// The decoded query pairs of a request URI (empty without a query).
pub fn query_pairs(uri: &axum::http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// The first value of a query parameter.
pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A signed API call: its query pairs and body, after the signature check.
pub struct Signed {
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// The body (at most `max_message_size`).
    pub body: Bytes,
}

/// Reads the body and checks the signature. On failure returns the answer
/// to send, already counted under `endpoint`.
pub async fn signed(gw: &Gateway, endpoint: &'static str, parts: &Parts, body: Body) -> Result<Signed, Response> {
    let config = gw.config();
    let body = match to_bytes(body, config.max_message_size).await {
        Ok(body) => body,
        Err(_) => {
            gw.metrics.api_call(endpoint, "too_large");
            let msg =
                json!({"status": 1, "msg": format!("body over max_message_size ({} bytes)", config.max_message_size)});
            return Err((StatusCode::PAYLOAD_TOO_LARGE, Json(msg)).into_response());
        }
    };
    let query = query_pairs(&parts.uri);
    let request = RequestId {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        body: &body,
    };
    let params = (param(&query, "timestamp"), param(&query, "nonce"), param(&query, "signature"));
    match gw.verifier.verify(&config.security_token, params, request, unix_now()) {
        Ok(()) => Ok(Signed { query, body }),
        Err(SignatureError::Busy) => {
            gw.metrics.api_call(endpoint, "busy");
            warn!(endpoint, side = "backend", "signed call refused: {}", SignatureError::Busy);
            Err((StatusCode::TOO_MANY_REQUESTS, Json(json!({"status": 1, "msg": "too many requests"}))).into_response())
        }
        Err(e) => {
            gw.metrics.api_call(endpoint, "signature_error");
            warn!(endpoint, side = "backend", method = %Method::as_str(&parts.method), "signature error: {e}");
            Err(failure("signature error"))
        }
    }
}
