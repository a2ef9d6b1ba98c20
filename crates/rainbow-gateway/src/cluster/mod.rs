//! The cluster over Redis: any node's API reaches every connection, and nodes
//! come and go without breaking users (docs/protocol.md §11, replacing the original's UDP
//! discovery and HTTP fan-out).
//!
//! - [`message`]: what nodes say to each other and the Redis names they use.
//! - [`node`]: this node's membership: the Redis connection, heartbeats, the
//!   live-node table, channel subscriptions and request/answer routing.
//!
//! How a call finds its connections:
//! - **Channels.** A node subscribes to a channel's Redis channel only while
//!   it has local subscribers of it, so a `/send/` reaches exactly the nodes
//!   that need it and per-message cost does not grow with the node count. At
//!   qos 1/2 each receiving node answers the node that took the call, which
//!   adds up `connections` and keeps a reply `data`, as one node would.
//! - **Identities.** Every identity starts with its node's tag (see
//!   `hub::identity`), and the table of live nodes is kept by heartbeats with
//!   a TTL (`node_ttl`). A `/sub/`, `/unsub/` or close for an identity goes to
//!   that node's inbox and its answer comes back; no Redis write per
//!   connection, and a dead node's identities answer "no such connection" as
//!   soon as its heartbeat expires.
//!
//! Without `redis_url` the [`Cluster`] is empty and every operation is local.
//! With Redis down, local delivery continues and cluster operations answer
//! `{"status": 1, "msg": "cluster unavailable"}` within `cluster_timeout`;
//! the heartbeat loop reconnects with backoff and resubscribes by itself.
//!
//! The cluster knows the hub (to deliver and evict on this node), the
//! metrics, and through [`Local`] how to run a backend request on this
//! node's connections and describe this node: nothing of the HTTP API or
//! the rest of the gateway. What a request means is `api::execute`.

pub mod message;
pub mod node;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::task::TaskTracker;

pub use node::Node;

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::ops::{Outcome, Request};

/// What the cluster needs from the rest of this node.
pub trait Local: Send + Sync + 'static {
    /// Runs a backend request on this node's own connections (another node
    /// sent it here because this node holds the connection).
    fn run(self: Arc<Self>, request: Request) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

    /// This node's summary for the heartbeat (what `/serverinfo/?cluster=1`
    /// lists), with at most `max_channels` channels named.
    fn summary(&self, max_channels: usize) -> serde_json::Value;
}

/// A cluster operation that could not complete.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// Redis is unreachable or did not answer within `cluster_timeout`. The
    /// operator should check Redis; the node reconnects by itself.
    #[error("cluster unavailable (Redis: {0})")]
    Unavailable(String),
    /// The node holding the connection did not answer in time (overloaded or
    /// just died; its heartbeat will expire within `node_ttl`).
    #[error("node {tag:08x} did not answer within {waited:?}")]
    NodeTimeout {
        /// The node.
        tag: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// No live node holds this identity.
    #[error("no live node {0:08x}")]
    NoSuchNode(u32),
}

/// This node's view of the cluster: empty when the node runs alone.
#[derive(Debug, Default)]
pub struct Cluster {
    node: Option<Arc<Node>>,
}

impl Cluster {
    /// A node that runs alone.
    pub fn alone() -> Cluster {
        Cluster { node: None }
    }

    /// The cluster `config` asks for (alone without `redis_url`), for the
    /// connections of `hub`; the node's tasks are tracked by `tasks`. Connects
    /// lazily: nothing is sent to Redis until [`Node::run`] starts.
    pub fn from_config(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Result<Cluster, ClusterError> {
        match &config.redis_url {
            None => Ok(Cluster::alone()),
            Some(url) => Ok(Cluster { node: Some(Arc::new(Node::new(url, config, hub, metrics, tasks)?)) }),
        }
    }

    /// This node's membership, when clustered.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// Subscribes these channels in Redis before returning, when clustered
    /// and this node just gained their first subscriber, so a publish on
    /// another node right after the handshake reaches the new connection.
    /// Failures are left to the background resync.
    pub async fn subscribe_now(&self, channels: &[String]) {
        let Some(node) = &self.node else { return };
        for channel in channels {
            if let Err(e) = Box::pin(node.ensure_subscribed(channel)).await {
                tracing::debug!("cluster: {channel} will be subscribed at the next resync ({e})");
            }
        }
    }
}
