//! The API's operations, whichever way they arrive: the signed HTTP calls in
//! [`super::push`] and the calls workers make over their socket both end here.
//!
//! Each operation returns an [`Answer`]: the JSON body the original's API
//! answers (spec §8) plus a short outcome label for the metrics. Operations
//! reach the whole cluster: a `/send/` goes through `cluster::Node::publish`,
//! and a call for an identity runs on the node holding it ([`local_call`]
//! there). Nothing here parses HTTP or checks signatures; the callers do that.

use std::time::Duration;

use bytes::Bytes;
use rainbow_protocol::Qos;
use serde_json::{Value, json};

use tracing::{debug, warn};

use crate::cluster::ClusterError;
use crate::cluster::message::Call;
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

/// The answer when Redis failed: what was delivered locally is still
/// reported, with the error.
fn unavailable(local: Delivered) -> Answer {
    let connections = match local {
        Delivered::Queued(n) => n,
        Delivered::Answered(agg) => agg.answered,
    };
    Answer {
        body: json!({"status": 1, "msg": "cluster unavailable", "connections": connections}),
        outcome: "cluster_unavailable",
    }
}

/// The answer for a cluster call that failed.
fn cluster_failure(e: ClusterError) -> Answer {
    match e {
        ClusterError::NoSuchNode(_) => Answer::fail("no_connection", "no such connection"),
        // Redis going away is logged once by the node, not once per call.
        ClusterError::Unavailable(_) => {
            debug!(side = "broker", "cluster call failed: {e}");
            Answer::fail("cluster_unavailable", "cluster unavailable")
        }
        ClusterError::NodeTimeout { .. } => {
            warn!(side = "broker", "cluster call failed: {e}");
            Answer::fail("cluster_unavailable", "cluster unavailable")
        }
    }
}

/// `/send/`: delivers `message` to every subscriber of `channel`, on every
/// node of the cluster.
pub async fn send(gw: &Gateway, channel: &str, message: Message) -> Answer {
    match gw.cluster.node() {
        Some(node) => match node.publish(gw, channel, message).await {
            Ok(delivered) => send_answer(delivered),
            Err((e, local)) => {
                debug!(side = "broker", channel, "/send/ reached this node only: {e}");
                unavailable(local)
            }
        },
        None => {
            let Message { message_type, qos, payload, timeout } = message;
            send_answer(gw.hub.publish(channel, message_type, qos, payload, timeout).await)
        }
    }
}

/// The tag of the other node holding `identity`'s connection, or `None`
/// when it is this node's (or malformed, which this node answers).
fn remote_node(gw: &Gateway, identity: &str) -> Option<u32> {
    let tag = identity.parse::<Identity>().ok()?.node_tag();
    gw.cluster.node().filter(|node| node.tag() != tag).map(|_| tag)
}

/// Runs `call` here if this node holds the connection, else on its node.
async fn routed(gw: &Gateway, identity: &str, call: Call, body: Bytes, wait: Duration) -> Answer {
    let (Some(tag), Some(node)) = (remote_node(gw, identity), gw.cluster.node()) else {
        return local_call(gw, call, body).await;
    };
    match node.call(gw, tag, call, &body, wait).await {
        Ok(body) => {
            let outcome = if body["status"] == json!(0) { "ok" } else { "remote_error" };
            Answer { body, outcome }
        }
        Err(e) => cluster_failure(e),
    }
}

/// Delivers `message` to the one connection `identity` (a worker's `push`).
/// `connections` is 0 when there is no such connection.
pub async fn push(gw: &Gateway, identity: &str, message: Message) -> Answer {
    let wait = message.timeout + gw.config().cluster_timeout;
    let call = Call::Push {
        identity: identity.to_string(),
        message_type: message.message_type,
        qos: message.qos.as_u8(),
        timeout_ms: message.timeout.as_millis().min(u64::MAX as u128) as u64,
    };
    routed(gw, identity, call, message.payload, wait).await
}

/// `/sub/`: subscribes connection `identity` to `channel`; `occupy` first
/// removes every other subscriber, on every node.
pub async fn sub(gw: &Gateway, identity: &str, channel: &str, occupy: bool) -> Answer {
    let call = Call::Sub { identity: identity.to_string(), channel: channel.to_string(), occupy };
    routed(gw, identity, call, Bytes::new(), gw.config().cluster_timeout * 2).await
}

/// `/unsub/`: unsubscribes connection `identity` from `channel`. Unknown
/// identities answer success, as in the original: the subscription is gone
/// either way.
pub async fn unsub(gw: &Gateway, identity: &str, channel: &str) -> Answer {
    let call = Call::Unsub { identity: identity.to_string(), channel: channel.to_string() };
    match routed(gw, identity, call, Bytes::new(), gw.config().cluster_timeout).await {
        Answer { outcome: "no_connection", .. } => Answer::ok(json!({"status": 0})),
        answer => answer,
    }
}

/// Closes connection `identity` with 1000 and `reason` (a worker's `close`).
/// Its close hook runs as for any other close.
pub async fn close(gw: &Gateway, identity: &str, reason: &str) -> Answer {
    let reason: String = reason.chars().take(100).collect();
    let call = Call::Close { identity: identity.to_string(), reason };
    routed(gw, identity, call, Bytes::new(), gw.config().cluster_timeout).await
}

/// Runs a call on this node's own connections (also what other nodes' calls
/// run here).
pub async fn local_call(gw: &Gateway, call: Call, body: Bytes) -> Answer {
    let conn = |identity: &str| identity.parse::<Identity>().ok().and_then(|id| gw.hub.get(&id));
    match call {
        Call::Sub { identity, channel, occupy } => {
            let Some(conn) = conn(&identity) else { return Answer::fail("no_connection", "no such connection") };
            let result = if occupy { gw.hub.occupy(&conn, &channel) } else { gw.hub.subscribe(&conn, &channel) };
            match result {
                Ok(()) => {}
                Err(SubscribeError::InvalidChannel) => return Answer::fail("params_error", "params error"),
                Err(e @ SubscribeError::TooMany(_)) => return Answer::fail("limit", &e.to_string()),
            }
            let Some(node) = gw.cluster.node() else { return Answer::ok(json!({"status": 0})) };
            let synced = node.ensure_subscribed(gw, &channel).await;
            let evicted = if occupy { node.evict(gw, &channel, conn.identity()).await } else { Ok(()) };
            match synced.and(evicted) {
                Ok(()) => Answer::ok(json!({"status": 0})),
                Err(e) => cluster_failure(e),
            }
        }
        Call::Unsub { identity, channel } => {
            if let Some(conn) = conn(&identity) {
                gw.hub.unsubscribe(&conn, &channel);
            }
            Answer::ok(json!({"status": 0}))
        }
        Call::Close { identity, reason } => {
            let Some(conn) = conn(&identity) else { return Answer::fail("no_connection", "no such connection") };
            conn.close(CloseOrder::normal(reason));
            Answer::ok(json!({"status": 0}))
        }
        Call::Push { identity, message_type, qos, timeout_ms } => {
            let Some(qos) = Qos::from_u8(qos) else { return Answer::fail("params_error", "qos level error") };
            let receivers = conn(&identity).into_iter().collect();
            let timeout = Duration::from_millis(timeout_ms.max(1));
            send_answer(Hub::deliver(receivers, message_type, qos, body, timeout).await)
        }
    }
}
