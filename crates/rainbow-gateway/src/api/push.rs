//! The backend's push API over HTTP (docs/protocol.md §8): `/send/` to a
//! channel, and `/sub/` / `/unsub/` of a connection by identity. All signed.
//! Each endpoint reads its request with `ops::Request::parse` (the query of
//! `/send/`, the JSON body of the others) and runs it with
//! [`super::execute::run`].
//!
//! `/send/` answers, by qos:
//! - 0: `{"status": 0}` once queued;
//! - 1/2: after every receiver answered or failed, or at the timeout:
//!   `{"status": 0, "connections": N, "data": "<first non-empty reply>"}`
//!   where N counts receivers that answered. When the timeout passes with
//!   receivers still silent and none answered, `{"status": 1, "msg": "timeout"}`.
//!   No subscriber at all: `{"status": 0, "connections": 0, "data": ""}`.

use std::sync::Arc;

use axum::extract::{Request as HttpRequest, State};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::{execute, signed};
use crate::ops::{Op, Outcome, Problem, Query, Request};
use crate::state::Gateway;

/// `POST /send/?channel=C&msgtype=T&qos=Q&timeout=S`, body = payload.
pub async fn send(State(gw): State<Arc<Gateway>>, request: HttpRequest) -> Response {
    let (parts, body) = request.into_parts();
    let call = match signed(&gw, "send", &parts, body).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    // Read again strictly: a channel that is not UTF-8 is refused, not
    // merged with others by the replacement character.
    let request = match crate::handshake::strict_query_pairs(&parts.uri) {
        Ok(query) => Request::parse(Op::Send, &Query(&query), call.body),
        Err(_) => Err(Problem::Params),
    };
    run(&gw, "send", request).await
}

/// `POST /sub/`, body `{"identity": I, "channel": C, "occupy": bool}`.
pub async fn sub(State(gw): State<Arc<Gateway>>, request: HttpRequest) -> Response {
    json_call(&gw, "sub", Op::Sub, request).await
}

/// `POST /unsub/`, body `{"identity": I, "channel": C}`.
pub async fn unsub(State(gw): State<Arc<Gateway>>, request: HttpRequest) -> Response {
    json_call(&gw, "unsub", Op::Unsub, request).await
}

/// A call whose fields are a JSON object in the body.
async fn json_call(gw: &Gateway, endpoint: &'static str, op: Op, request: HttpRequest) -> Response {
    let (parts, body) = request.into_parts();
    let call = match signed(gw, endpoint, &parts, body).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let request = match serde_json::from_slice::<Map<String, Value>>(&call.body) {
        Ok(fields) => Request::parse(op, &fields, Bytes::new()),
        Err(_) => Err(Problem::Params),
    };
    run(gw, endpoint, request).await
}

/// Runs a parsed request, counts its outcome under `endpoint` and answers.
async fn run(gw: &Gateway, endpoint: &'static str, request: Result<Request, Problem>) -> Response {
    let outcome = match request {
        Ok(request) => execute::run(gw, request).await,
        Err(problem) => Outcome::Invalid(problem),
    };
    gw.metrics.api_call(endpoint, outcome.label());
    super::answer(outcome.body())
}
