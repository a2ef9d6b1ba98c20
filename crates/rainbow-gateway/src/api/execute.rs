//! Runs the backend's requests (`ops::Request`), whichever way they came:
//! the signed HTTP API ([`super::push`]), a worker's socket
//! ([`super::worker`]), or another node of the cluster, which sends a
//! request here when this node holds its connection ([`Here`]).
//!
//! A `send` reaches every node through `cluster::Node::publish`; a request
//! for one connection runs on the node whose tag starts the identity
//! ([`local`] there). Nothing here parses HTTP or checks signatures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::cluster::{self, ClusterError};
use crate::hub::{CloseOrder, Delivered, Hub, Identity, SubscribeError};
use crate::ops::{Message, Outcome, Request};
use crate::state::Gateway;

/// Runs `request`: a `send` on every node, any other on the node holding
/// its connection.
pub async fn run(gw: &Gateway, request: Request) -> Outcome {
    match request {
        Request::Send { channel, message } => send(gw, &channel, message).await,
        // The subscription is gone either way: an unknown identity answers
        // success, as in the original.
        request @ Request::Unsub { .. } => match routed(gw, request).await {
            Outcome::NoConnection => Outcome::Done,
            outcome => outcome,
        },
        request => routed(gw, request).await,
    }
}

/// Delivers `message` to every subscriber of `channel`, on every node.
async fn send(gw: &Gateway, channel: &str, message: Message) -> Outcome {
    let Some(node) = gw.cluster.node() else {
        let Message { message_type, qos, payload, timeout } = message;
        return Outcome::delivered(gw.hub.publish(channel, message_type, qos, payload, timeout).await);
    };
    match node.publish(channel, message).await {
        Ok(delivered) => Outcome::delivered(delivered),
        Err((e, local)) => {
            debug!(side = "broker", channel, "/send/ reached this node only: {e}");
            let connections = match local {
                Delivered::Queued(n) => n,
                Delivered::Answered(agg) => agg.answered,
            };
            Outcome::ClusterUnavailable { connections: Some(connections) }
        }
    }
}

/// Runs a request for one connection here if this node holds it (or the
/// identity is malformed, which this node answers), else on its node.
async fn routed(gw: &Gateway, request: Request) -> Outcome {
    let tag = request.identity().and_then(|i| i.parse::<Identity>().ok()).map(|i| i.node_tag());
    let node = match (tag, gw.cluster.node()) {
        (Some(tag), Some(node)) if tag != node.tag() => node,
        _ => return local(gw, request).await,
    };
    // How long the other node may take: a push waits for its receiver.
    let wait = match &request {
        Request::Push { message, .. } => message.timeout + node.timeout(),
        Request::Sub { .. } => node.timeout() * 2,
        _ => node.timeout(),
    };
    match node.call(tag.unwrap_or_default(), request, wait).await {
        Ok(outcome) => outcome,
        Err(e) => cluster_failure(e),
    }
}

/// The outcome of a cluster call that failed.
fn cluster_failure(e: ClusterError) -> Outcome {
    match e {
        ClusterError::NoSuchNode(_) => Outcome::NoConnection,
        // Redis going away is logged once by the node, not once per call.
        ClusterError::Unavailable(_) => {
            debug!(side = "broker", "cluster call failed: {e}");
            Outcome::ClusterUnavailable { connections: None }
        }
        ClusterError::NodeTimeout { .. } => {
            warn!(side = "broker", "cluster call failed: {e}");
            Outcome::ClusterUnavailable { connections: None }
        }
    }
}

/// Runs a request on this node's own connections.
pub async fn local(gw: &Gateway, request: Request) -> Outcome {
    let conn = |identity: &str| identity.parse::<Identity>().ok().and_then(|id| gw.hub.get(&id));
    match request {
        Request::Send { channel, message } => send(gw, &channel, message).await,
        Request::Sub { identity, channel, occupy } => {
            let Some(conn) = conn(&identity) else { return Outcome::NoConnection };
            let result = if occupy { gw.hub.occupy(&conn, &channel) } else { gw.hub.subscribe(&conn, &channel) };
            match result {
                Ok(()) => {}
                Err(SubscribeError::InvalidChannel) => return Outcome::Invalid(crate::ops::Problem::Params),
                Err(SubscribeError::Gone) => return Outcome::NoConnection,
                Err(e @ SubscribeError::TooMany(_)) => return Outcome::Limit { msg: e.to_string() },
            }
            let Some(node) = gw.cluster.node() else { return Outcome::Done };
            let synced = node.ensure_subscribed(&channel).await;
            let evicted = if occupy { node.evict(&channel, conn.identity()).await } else { Ok(()) };
            match synced.and(evicted) {
                Ok(()) => Outcome::Done,
                Err(e) => cluster_failure(e),
            }
        }
        Request::Unsub { identity, channel } => {
            if let Some(conn) = conn(&identity) {
                gw.hub.unsubscribe(&conn, &channel);
            }
            Outcome::Done
        }
        Request::Close { identity, reason } => {
            let Some(conn) = conn(&identity) else { return Outcome::NoConnection };
            conn.close(CloseOrder::normal(reason));
            Outcome::Done
        }
        Request::Push { identity, message } => {
            let receivers = conn(&identity).into_iter().collect();
            let Message { message_type, qos, payload, timeout } = message;
            let timeout = timeout.max(Duration::from_millis(1));
            Outcome::delivered(Hub::deliver(receivers, message_type, qos, payload, timeout).await)
        }
    }
}

/// This node as the cluster sees it: it runs other nodes' requests for the
/// connections it holds, and describes itself in heartbeats.
pub struct Here(pub Arc<Gateway>);

impl cluster::Local for Here {
    fn run(self: Arc<Self>, request: Request) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        Box::pin(async move { local(&self.0, request).await })
    }

    fn summary(&self, max_channels: usize) -> serde_json::Value {
        crate::status::node_summary(&self.0, max_channels)
    }
}
