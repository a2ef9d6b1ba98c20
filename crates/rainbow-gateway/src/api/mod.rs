//! What the backend talks to, on the same port as `/connect/`: the signed
//! HTTP API (docs/protocol.md §8), the worker socket, and the operator
//! endpoints.
//!
//! - [`push`]: `/send/`, `/sub/`, `/unsub/` (signed), read into
//!   `ops::Request`s.
//! - [`worker`]: `/worker/`, a worker's socket: tasks out, replies and the
//!   same requests in (docs/worker-protocol.md).
//! - [`execute`]: runs a request, on this node or on the node holding its
//!   connection; shared by both, and by the cluster for calls from other
//!   nodes.
//! - [`info`]: `/hello/`, `/serverinfo/`, `/healthz`, `/metrics` (public) and
//!   `/updateconfig/` (signed).
//!
//! Answers follow the original's convention: JSON with `status` 0 on success
//! and `{"status": 1, "msg": ...}` on failure, with HTTP 200, so existing
//! backends keep working. Errors outside the spec (a body over the size
//! limit, a full replay cache) also use real HTTP status codes.

pub mod execute;
pub mod info;
pub mod push;
pub mod worker;

use axum::body::{Body, Bytes, to_bytes};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use crate::handshake::{self, Refused};
use crate::state::Gateway;

/// `{"status": 1, "msg": msg}` with HTTP 200.
pub fn failure(msg: &str) -> Response {
    Json(json!({"status": 1, "msg": msg})).into_response()
}

/// A JSON answer with HTTP 200.
pub fn answer(value: Value) -> Response {
    Json(value).into_response()
}

/// A signed API call that passed the signature check: its query pairs and
/// body.
pub struct Authenticated {
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// The body (at most `max_message_size`).
    pub body: Bytes,
}

/// Checks the signature and reads the body, in the order that never waits
/// for the body of a call that cannot be right: first what the query alone
/// tells (docs/protocol.md §7.3 step 1), then the body (up to
/// `max_message_size`, within `body_timeout`), then the rest of the check
/// (v2's HMAC over the body, the replay rule). On failure returns the answer
/// to send, already counted under `endpoint`.
pub async fn signed(
    gw: &Gateway,
    endpoint: &'static str,
    parts: &Parts,
    body: Body,
) -> Result<Authenticated, Response> {
    let config = gw.config();
    let query = handshake::query_pairs(&parts.uri);
    let check = handshake::begin_signature(gw, endpoint, &parts.method, &query).map_err(refusal)?;
    let body = match tokio::time::timeout(config.body_timeout, to_bytes(body, config.max_message_size)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            gw.metrics.api_call(endpoint, "too_large");
            let msg =
                json!({"status": 1, "msg": format!("body over max_message_size ({} bytes)", config.max_message_size)});
            return Err((StatusCode::PAYLOAD_TOO_LARGE, Json(msg)).into_response());
        }
        Err(_) => {
            gw.metrics.api_call(endpoint, "body_timeout");
            tracing::debug!(endpoint, side = "client", "request body not received within body_timeout");
            let msg = json!({"status": 1, "msg": "request body not received in time"});
            return Err((StatusCode::REQUEST_TIMEOUT, Json(msg)).into_response());
        }
    };
    check.finish(&parts.method, &parts.uri, &body).map_err(refusal)?;
    Ok(Authenticated { query, body })
}

/// The answer to a refused signature.
fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::Busy => {
            (StatusCode::TOO_MANY_REQUESTS, Json(json!({"status": 1, "msg": "too many requests"}))).into_response()
        }
        Refused::Signature => failure("signature error"),
    }
}
