//! The API's operations, whichever way they arrive: the signed HTTP calls in
//! [`super::push`] and the calls workers make over their socket both end here.
//!
//! Each operation returns an [`Answer`]: the JSON body the original's API
//! answers (spec §8) plus a short outcome label for the metrics. Nothing here
//! parses HTTP or checks signatures; the callers do that.

use std::time::Duration;

use bytes::Bytes;
use rainbow_protocol::Qos;
use serde_json::{Value, json};

use crate::hub::{CloseOrder, Delivered, Hub, Identity, SubscribeError};
use crate::state::Gateway;

/// The answer to one API operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The JSON body, `{"status": 0, ...}` or `{"status": 1, "msg": ...}`.
    pub body: Value,
    /// Outcome label for `rainbow_api_calls_total` (`ok`, `timeout`, ...).
    pub outcome: &'static str,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer { body, outcome: "ok" }
    }

    /// `{"status": 1, "msg": msg}` counted under `outcome`.
    pub fn fail(outcome: &'static str, msg: &str) -> Answer {
        Answer { body: json!({"status": 1, "msg": msg}), outcome }
    }
}

/// A message to deliver: to a channel's subscribers or to one connection.
#[derive(Debug, Clone)]
pub struct Message {
    /// Message type.
    pub message_type: u16,
    /// Delivery guarantee towards the clients.
    pub qos: Qos,
    /// Payload.
    pub payload: Bytes,
    /// How long qos 1/2 waits for the receivers' answers.
    pub timeout: Duration,
}

/// Turns a delivery result into the `/send/` answer.
fn send_answer(delivered: Delivered) -> Answer {
    match delivered {
        Delivered::Queued(_) => Answer::ok(json!({"status": 0})),
        Delivered::Answered(agg) if !agg.complete && agg.answered == 0 => Answer::fail("timeout", "timeout"),
        Delivered::Answered(agg) => {
            let data = agg.reply.map(|r| String::from_utf8_lossy(&r).into_owned()).unwrap_or_default();
            Answer::ok(json!({"status": 0, "connections": agg.answered, "data": data}))
        }
    }
}

/// `/send/`: delivers `message` to every subscriber of `channel`.
pub async fn send(gw: &Gateway, channel: &str, message: Message) -> Answer {
    let Message { message_type, qos, payload, timeout } = message;
    send_answer(gw.hub.publish(channel, message_type, qos, payload, timeout).await)
}

/// Delivers `message` to the one connection `identity` (a worker's `push`).
/// `connections` is 0 when there is no such connection.
pub async fn push(gw: &Gateway, identity: &str, message: Message) -> Answer {
    let Message { message_type, qos, payload, timeout } = message;
    let receivers = identity.parse::<Identity>().ok().and_then(|id| gw.hub.get(&id)).into_iter().collect();
    send_answer(Hub::deliver(receivers, message_type, qos, payload, timeout).await)
}

/// `/sub/`: subscribes connection `identity` to `channel`; `occupy` first
/// removes every other subscriber.
pub async fn sub(gw: &Gateway, identity: &str, channel: &str, occupy: bool) -> Answer {
    let Some(conn) = identity.parse::<Identity>().ok().and_then(|id| gw.hub.get(&id)) else {
        return Answer::fail("no_connection", "no such connection");
    };
    let result = if occupy { gw.hub.occupy(&conn, channel) } else { gw.hub.subscribe(&conn, channel) };
    match result {
        Ok(()) => Answer::ok(json!({"status": 0})),
        Err(SubscribeError::InvalidChannel) => Answer::fail("params_error", "params error"),
        Err(e @ SubscribeError::TooMany(_)) => Answer::fail("limit", &e.to_string()),
    }
}

/// `/unsub/`: unsubscribes connection `identity` from `channel`. Unknown
/// identities answer success, as in the original: the subscription is gone
/// either way.
pub async fn unsub(gw: &Gateway, identity: &str, channel: &str) -> Answer {
    if let Some(conn) = identity.parse::<Identity>().ok().and_then(|id| gw.hub.get(&id)) {
        gw.hub.unsubscribe(&conn, channel);
    }
    Answer::ok(json!({"status": 0}))
}

/// Closes connection `identity` with 1000 and `reason` (a worker's `close`).
/// Its close hook runs as for any other close.
pub async fn close(gw: &Gateway, identity: &str, reason: &str) -> Answer {
    let Some(conn) = identity.parse::<Identity>().ok().and_then(|id| gw.hub.get(&id)) else {
        return Answer::fail("no_connection", "no such connection");
    };
    let reason: String = reason.chars().take(100).collect();
    conn.close(CloseOrder::normal(reason));
    Answer::ok(json!({"status": 0}))
}
