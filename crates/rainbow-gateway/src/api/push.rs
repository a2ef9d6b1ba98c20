//! The backend's push API over HTTP: `/send/` to a channel, and `/sub/` /
//! `/unsub/` of a connection by identity (spec §8). All signed. This module
//! parses and checks the requests; the operations themselves are in
//! [`super::ops`].
//!
//! `/send/` answers, by qos:
//! - 0: `{"status": 0}` once queued;
//! - 1/2: after every receiver answered or failed, or at the timeout:
//!   `{"status": 0, "connections": N, "data": "<first non-empty reply>"}`
//!   where N counts receivers that answered. When the timeout passes with
//!   receivers still silent and none answered, `{"status": 1, "msg": "timeout"}`.
//!   No subscriber at all: `{"status": 0, "connections": 0, "data": ""}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::Response;
use rainbow_protocol::Qos;
use serde::Deserialize;

use super::ops::{self, Answer, Message};
use super::{failure, param, signed};
use crate::state::Gateway;

/// Longest `timeout` a `/send/` may ask for.
const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(3600);

/// `POST /send/?channel=C&msgtype=T&qos=Q&timeout=S`, body = payload.
pub async fn send(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let call = match signed(&gw, "send", &parts, body).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let q = &call.query;
    let Some(channel) = param(q, "channel").filter(|c| !c.is_empty()) else {
        gw.metrics.api_call("send", "params_error");
        return failure("channel miss");
    };
    let Some(qos) = param(q, "qos").map_or(Some(Qos::ExactlyOnce), |v| v.trim().parse().ok().and_then(Qos::from_u8))
    else {
        gw.metrics.api_call("send", "params_error");
        return failure("qos level error");
    };
    let Ok(message_type) = param(q, "msgtype").map_or(Ok(1), |v| v.trim().parse::<u16>()) else {
        gw.metrics.api_call("send", "params_error");
        return failure("params error");
    };
    let timeout = match param(q, "timeout").map_or(Ok(10.0), |v| v.trim().parse::<f64>()) {
        Ok(t) if t > 0.0 && t <= MAX_SEND_TIMEOUT.as_secs_f64() => Duration::from_secs_f64(t),
        _ => {
            gw.metrics.api_call("send", "params_error");
            return failure("params error");
        }
    };
    let message = Message { message_type, qos, payload: call.body, timeout };
    reply(&gw, "send", ops::send(&gw, channel, message).await)
}

/// Counts `answer` under `endpoint` and turns it into the HTTP response.
fn reply(gw: &Gateway, endpoint: &'static str, answer: Answer) -> Response {
    gw.metrics.api_call(endpoint, answer.outcome);
    super::answer(answer.body)
}

#[derive(Deserialize)]
struct SubBody {
    identity: String,
    channel: String,
    #[serde(default)]
    occupy: Occupy,
}

/// `occupy` as the SDKs send it: a boolean, 0/1, or "true"/"false".
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Occupy {
    #[default]
    Absent,
    Bool(bool),
    Number(i64),
    Text(String),
}

impl Occupy {
    fn is_set(&self) -> bool {
        match self {
            Occupy::Absent => false,
            Occupy::Bool(b) => *b,
            Occupy::Number(n) => *n != 0,
            Occupy::Text(t) => matches!(t.to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
        }
    }
}

fn parse_sub(body: &[u8]) -> Option<SubBody> {
    serde_json::from_slice::<SubBody>(body).ok().filter(|b| !b.channel.is_empty())
}

/// The shared prologue of `/sub/` and `/unsub/`: signature, then the body.
async fn sub_call(gw: &Gateway, endpoint: &'static str, request: Request) -> Result<SubBody, Response> {
    let (parts, body) = request.into_parts();
    let call = signed(gw, endpoint, &parts, body).await?;
    parse_sub(&call.body).ok_or_else(|| {
        gw.metrics.api_call(endpoint, "params_error");
        failure("params error")
    })
}

/// `POST /sub/`, body `{"identity": I, "channel": C, "occupy": bool}`.
pub async fn sub(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    match sub_call(&gw, "sub", request).await {
        Ok(body) => reply(&gw, "sub", ops::sub(&gw, &body.identity, &body.channel, body.occupy.is_set()).await),
        Err(response) => response,
    }
}

/// `POST /unsub/`, body `{"identity": I, "channel": C}`.
pub async fn unsub(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    match sub_call(&gw, "unsub", request).await {
        Ok(body) => reply(&gw, "unsub", ops::unsub(&gw, &body.identity, &body.channel).await),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_bodies_accept_the_sdks_spellings_of_occupy() {
        let b = parse_sub(br#"{"identity":"i","channel":"c"}"#).unwrap();
        assert!(!b.occupy.is_set());
        assert!(parse_sub(br#"{"identity":"i","channel":"c","occupy":true}"#).unwrap().occupy.is_set());
        assert!(parse_sub(br#"{"identity":"i","channel":"c","occupy":1}"#).unwrap().occupy.is_set());
        assert!(parse_sub(br#"{"identity":"i","channel":"c","occupy":"true"}"#).unwrap().occupy.is_set());
        assert!(parse_sub(br#"{"identity":"i","channel":""}"#).is_none());
        assert!(parse_sub(b"not json").is_none());
    }
}
