//! This node's membership in the cluster.
//!
//! One multiplexed RESP3 connection to Redis (redis-rs's connection manager)
//! carries commands, `PUBLISH`es and the pushes of our subscriptions. Three
//! loops run in [`Node::run`]:
//!
//! - **heartbeat**: every third of `node_ttl`, write this node's info with a
//!   TTL, refresh its score in the node set, drop expired nodes and read the
//!   live ones. A failure marks Redis down (cluster operations then fail fast)
//!   and retries with backoff; the first success after that resubscribes
//!   everything, since a new connection or a restarted Redis has no
//!   subscriptions.
//! - **pushes**: messages from Redis, through a bounded queue: publications
//!   on channels we have subscribers for, calls for our connections, and
//!   answers to our own requests.
//! - **subscriptions**: when a channel gains its first or loses its last
//!   local subscriber the hub says so, and this loop subscribes or
//!   unsubscribes its Redis channel.
//!
//! Requests wait for answers in `pending`, keyed by a request id, each with a
//! small bounded queue; an answer for an id no longer waiting is dropped.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rainbow_protocol::Qos;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value as RedisValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use tokio_util::task::TaskTracker;

use super::message::{self, Header, Names};
use super::{ClusterError, Local};
use crate::config::Config;
use crate::hub::{Aggregate, Delivered, Hub, Identity};
use crate::metrics::Metrics;
use crate::ops::{Message, Outcome, Request};

/// Bound of the queue of messages received from Redis; beyond it messages
/// are dropped and counted (`rainbow_cluster_messages_total{kind="dropped"}`).
const PUSH_QUEUE: usize = 65_536;
/// Requests of this node waiting for answers at once; beyond it calls fail.
const MAX_PENDING: usize = 65_536;
/// Channels per SUBSCRIBE/UNSUBSCRIBE command.
const SUBSCRIBE_BATCH: usize = 512;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Channels listed in a node's info (the count is always exact).
const MAX_LISTED_CHANNELS: usize = 1000;

/// An answer to one of our requests.
#[derive(Debug)]
enum Reply {
    /// A node's part of a publish or evict.
    Answer { answered: usize, complete: bool, reply: Bytes },
    /// A call's outcome.
    Result(Outcome),
}

/// This node, as the cluster sees it.
pub struct Node {
    tag: u32,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Where the node's own tasks (answering other nodes) are tracked, for
    /// the graceful shutdown.
    tasks: TaskTracker,
    names: Names,
    redis: ConnectionManager,
    timeout: Duration,
    ttl: Duration,
    up: AtomicBool,
    resync: AtomicBool,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    /// Rainbow channels subscribed in Redis; also serializes (un)subscribing.
    subscribed: tokio::sync::Mutex<HashSet<Arc<str>>>,
    /// Live node tags at the last heartbeat (for the join/leave log).
    live: RwLock<HashSet<u32>>,
    pushes: Mutex<Option<mpsc::Receiver<PushInfo>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("tag", &format_args!("{:08x}", self.tag)).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn bytes_of(value: &RedisValue) -> Option<&[u8]> {
    match value {
        RedisValue::BulkString(b) => Some(b),
        RedisValue::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Removes a pending request when its waiter goes away, answered or not.
struct PendingGuard<'a> {
    node: &'a Node,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.node.pending).remove(&self.id);
    }
}

impl Node {
    /// A node of the cluster at `url`, holding `hub`'s connections (its tag
    /// is the hub's). Connects lazily. `node_ttl` and `cluster_timeout` are
    /// read here, once.
    pub fn new(
        url: &reqwest::Url,
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Result<Node, ClusterError> {
        let tag = hub.node_tag();
        let unavailable = |e: redis::RedisError| ClusterError::Unavailable(e.to_string());
        let info = url.as_str().into_connection_info().map_err(unavailable)?;
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let push_sender = move |push: PushInfo| {
            if tx.try_send(push).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            // Never report failure: the connection would stop delivering.
            Ok::<(), redis::aio::SendError>(())
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(push_sender)
            .set_connection_timeout(Some(config.cluster_timeout))
            .set_response_timeout(Some(config.cluster_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config).map_err(unavailable)?;
        Ok(Node {
            tag,
            hub,
            metrics,
            tasks,
            names: Names::new(&config.cluster_name),
            redis,
            timeout: config.cluster_timeout,
            ttl: config.node_ttl,
            up: AtomicBool::new(false),
            resync: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            subscribed: tokio::sync::Mutex::new(HashSet::new()),
            live: RwLock::new(HashSet::new()),
            pushes: Mutex::new(Some(rx)),
        })
    }

    /// This node's tag.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// How long a cluster operation waits for Redis (`cluster_timeout`, as
    /// read at start).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether Redis answered the last heartbeat.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn check_up(&self) -> Result<(), ClusterError> {
        if self.is_up() { Ok(()) } else { Err(ClusterError::Unavailable("not connected".into())) }
    }

    /// Runs a Redis command, failing after `cluster_timeout`.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        let mut redis = self.redis.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut redis)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.went_down(e.to_string())),
            Err(_) => Err(self.went_down(format!("no answer within {:?}", self.timeout))),
        }
    }

    fn went_down(&self, why: String) -> ClusterError {
        if self.up.swap(false, Ordering::AcqRel) {
            warn!(
                side = "broker",
                "cluster: Redis unreachable ({why}); local delivery continues, cluster operations answer \
                 'cluster unavailable' until it is back (reconnecting with backoff)"
            );
        }
        self.resync.store(true, Ordering::Release);
        ClusterError::Unavailable(why)
    }

    /// Publishes `bytes` on a Redis channel; the count of receiving nodes.
    async fn publish_raw(&self, channel: String, bytes: Vec<u8>) -> Result<usize, ClusterError> {
        let count: usize = self.query(redis::cmd("PUBLISH").arg(channel).arg(bytes)).await?;
        self.metrics.cluster_message("sent");
        Ok(count)
    }

    /// Registers a request id with room for `capacity` answers.
    fn register(&self, capacity: usize) -> Result<(u64, mpsc::Receiver<Reply>, PendingGuard<'_>), ClusterError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING {
            return Err(ClusterError::Unavailable(format!("{MAX_PENDING} cluster requests already waiting")));
        }
        pending.insert(id, tx);
        Ok((id, rx, PendingGuard { node: self, id }))
    }

    fn resolve(&self, id: u64, reply: Reply) {
        if let Some(tx) = lock(&self.pending).get(&id) {
            // A full queue means more answers than nodes: drop the extra.
            let _ = tx.try_send(reply);
        }
    }

    /// `/send/` across the cluster: delivers locally and to every node with
    /// subscribers of `channel`; at qos 1/2 adds up their answers. On a Redis
    /// failure the local delivery still happens and is returned with the error.
    pub async fn publish(&self, channel: &str, message: Message) -> Result<Delivered, (ClusterError, Delivered)> {
        let Message { message_type, qos, payload, timeout } = message;
        if qos == Qos::AtMostOnce {
            let local = self.hub.publish(channel, message_type, qos, payload.clone(), timeout).await;
            if let Err(e) = self.check_up() {
                return Err((e, local));
            }
            let header = Header::Publish { from: self.tag, id: 0, message_type, qos: 0, timeout_ms: 0 };
            return match self.publish_raw(self.names.channel(channel), message::encode(&header, &payload)).await {
                Ok(_) => Ok(local),
                Err(e) => Err((e, local)),
            };
        }
        let deadline = Instant::now() + timeout;
        let local = self.hub.publish(channel, message_type, qos, payload.clone(), timeout);
        if let Err(e) = self.check_up() {
            return Err((e, local.await));
        }
        let (id, mut answers, _guard) = match self.register(64) {
            Ok(r) => r,
            Err(e) => return Err((e, local.await)),
        };
        let timeout_ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        let header = Header::Publish { from: self.tag, id, message_type, qos: qos.as_u8(), timeout_ms };
        let bytes = message::encode(&header, &payload);
        let remote = async {
            let expected = self.publish_raw(self.names.channel(channel), bytes).await?;
            let mut total = Aggregate { answered: 0, reply: None, complete: true };
            let mut received = 0;
            while received < expected {
                match tokio::time::timeout_at(deadline.into(), answers.recv()).await {
                    Ok(Some(Reply::Answer { answered, complete, reply })) => {
                        received += 1;
                        total.answered += answered;
                        total.complete &= complete;
                        if total.reply.is_none() && !reply.is_empty() {
                            total.reply = Some(reply);
                        }
                    }
                    Ok(Some(Reply::Result(_))) => {}
                    Ok(None) | Err(_) => {
                        total.complete = false;
                        break;
                    }
                }
            }
            Ok::<_, ClusterError>(total)
        };
        let (local, remote) = tokio::join!(local, remote);
        let Delivered::Answered(mut total) = local else { return Ok(local) };
        match remote {
            Ok(theirs) => {
                total.answered += theirs.answered;
                total.complete &= theirs.complete;
                if total.reply.is_none() {
                    total.reply = theirs.reply;
                }
                Ok(Delivered::Answered(total))
            }
            Err(e) => Err((e, Delivered::Answered(total))),
        }
    }

    /// The cluster-wide part of an occupy: every other node removes its
    /// local subscribers of `channel`, and answers.
    pub async fn evict(&self, channel: &str, keep: Identity) -> Result<(), ClusterError> {
        self.check_up()?;
        let (id, mut answers, _guard) = self.register(64)?;
        let header = Header::Evict { from: self.tag, id, keep: keep.to_string() };
        let expected = self.publish_raw(self.names.channel(channel), message::encode(&header, b"")).await?;
        let deadline = Instant::now() + self.timeout;
        for _ in 0..expected {
            match tokio::time::timeout_at(deadline.into(), answers.recv()).await {
                Ok(Some(_)) => {}
                _ => return Err(ClusterError::Unavailable("a node did not confirm the occupy".into())),
            }
        }
        Ok(())
    }

    /// Sends `call` to node `tag` and waits up to `wait` for its outcome.
    pub async fn call(&self, tag: u32, call: Request, wait: Duration) -> Result<Outcome, ClusterError> {
        self.check_up()?;
        // No need to consult the live table: PUBLISH counts the subscribers
        // of the node's inbox, 0 when it is gone (even before its heartbeat
        // expires) and 1 as soon as a new node subscribed.
        let (id, mut answers, _guard) = self.register(1)?;
        let body = call.payload();
        let header = Header::Call { from: self.tag, id, call };
        if self.publish_raw(self.names.inbox(tag), message::encode(&header, &body)).await? == 0 {
            return Err(ClusterError::NoSuchNode(tag));
        }
        match tokio::time::timeout(wait, answers.recv()).await {
            Ok(Some(Reply::Result(outcome))) => Ok(outcome),
            _ => Err(ClusterError::NodeTimeout { tag, waited: wait }),
        }
    }

    /// Every live node's info, this one's first, for `/serverinfo/?cluster=1`.
    pub async fn nodes(&self) -> Result<Vec<Value>, ClusterError> {
        self.check_up()?;
        let now = unix_ms();
        let tags: Vec<String> =
            self.query(redis::cmd("ZRANGEBYSCORE").arg(self.names.nodes()).arg(now).arg("+inf")).await?;
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> =
            tags.iter().filter_map(|t| u32::from_str_radix(t, 16).ok()).map(|t| self.names.info(t)).collect();
        let infos: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(keys)).await?;
        let mut nodes: Vec<Value> =
            infos.into_iter().flatten().filter_map(|s| serde_json::from_str::<Value>(&s).ok()).collect();
        let me = format!("{:08x}", self.tag);
        nodes.sort_by_key(|n| (n["node"] != json!(me), n["node"].as_str().unwrap_or_default().to_string()));
        Ok(nodes)
    }

    /// Makes Redis subscriptions match the hub for these channels.
    async fn reconcile(&self, channels: Vec<Arc<str>>) -> Result<(), ClusterError> {
        let mut subscribed = self.subscribed.lock().await;
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for channel in channels {
            match (self.hub.has_channel(&channel), subscribed.contains(&channel)) {
                (true, false) => add.push(channel),
                (false, true) => remove.push(channel),
                _ => {}
            }
        }
        let mut redis = self.redis.clone();
        for batch in add.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<String> = batch.iter().map(|c| self.names.channel(c)).collect();
            match tokio::time::timeout(self.timeout, redis.subscribe(&names)).await {
                Ok(Ok(())) => subscribed.extend(batch.iter().cloned()),
                Ok(Err(e)) => return Err(self.went_down(e.to_string())),
                Err(_) => return Err(self.went_down("SUBSCRIBE timed out".into())),
            }
        }
        for batch in remove.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<String> = batch.iter().map(|c| self.names.channel(c)).collect();
            match tokio::time::timeout(self.timeout, redis.unsubscribe(&names)).await {
                Ok(Ok(())) => batch.iter().for_each(|c| {
                    subscribed.remove(c);
                }),
                Ok(Err(e)) => return Err(self.went_down(e.to_string())),
                Err(_) => return Err(self.went_down("UNSUBSCRIBE timed out".into())),
            }
        }
        Ok(())
    }

    /// Subscribes `channel` in Redis now if the hub has local subscribers
    /// for it (so a publish right after `/sub/` answers reaches them).
    pub async fn ensure_subscribed(&self, channel: &str) -> Result<(), ClusterError> {
        self.check_up()?;
        self.reconcile(vec![Arc::from(channel)]).await
    }

    /// After a reconnect: subscribe the inbox and every local channel anew.
    async fn resubscribe(&self) -> Result<(), ClusterError> {
        {
            let mut redis = self.redis.clone();
            match tokio::time::timeout(self.timeout, redis.subscribe(self.names.inbox(self.tag))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.went_down(e.to_string())),
                Err(_) => return Err(self.went_down("SUBSCRIBE timed out".into())),
            }
            self.subscribed.lock().await.clear();
        }
        let channels = self.hub.track_channels();
        self.reconcile(channels).await
    }

    /// One heartbeat: publish our info, refresh our score, drop expired
    /// nodes, read the live ones.
    async fn heartbeat(&self, local: &dyn Local) -> Result<(), ClusterError> {
        let now = unix_ms();
        let ttl_ms = self.ttl.as_millis() as u64;
        let info = local.summary(MAX_LISTED_CHANNELS);
        let me = format!("{:08x}", self.tag);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.names.info(self.tag)).arg(info.to_string()).arg("PX").arg(ttl_ms).ignore();
        pipe.cmd("ZADD").arg(self.names.nodes()).arg(now + ttl_ms).arg(&me).ignore();
        pipe.cmd("ZREMRANGEBYSCORE").arg(self.names.nodes()).arg("-inf").arg(format!("({now}")).ignore();
        pipe.cmd("ZRANGEBYSCORE").arg(self.names.nodes()).arg(now).arg("+inf");
        let mut redis = self.redis.clone();
        let (live,): (Vec<String>,) = match tokio::time::timeout(self.timeout, pipe.query_async(&mut redis)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(self.went_down(e.to_string())),
            Err(_) => return Err(self.went_down(format!("no answer within {:?}", self.timeout))),
        };
        let live: HashSet<u32> = live.iter().filter_map(|t| u32::from_str_radix(t, 16).ok()).collect();
        let before = std::mem::replace(&mut *self.live.write().unwrap_or_else(|p| p.into_inner()), live.clone());
        for gone in before.difference(&live) {
            info!(node = format_args!("{gone:08x}"), "cluster: node left (heartbeat expired or shut down)");
        }
        for new in live.difference(&before).filter(|t| **t != self.tag) {
            info!(node = format_args!("{new:08x}"), "cluster: node joined");
        }
        Ok(())
    }

    /// Leaves the cluster at shutdown, so other nodes drop this one at once.
    pub async fn leave(&self) {
        if !self.is_up() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(self.names.nodes()).arg(format!("{:08x}", self.tag)).ignore();
        pipe.cmd("DEL").arg(self.names.info(self.tag)).ignore();
        let mut redis = self.redis.clone();
        let _ = tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut redis)).await;
    }

    /// The background loops (see the module docs), until the task is
    /// aborted at shutdown. `local` runs other nodes' calls here and
    /// describes this node in heartbeats.
    pub async fn run(self: Arc<Self>, local: Arc<dyn Local>) {
        let Some(pushes) = lock(&self.pushes).take() else { return };
        // Record channel changes from now on; the first resync subscribes
        // whatever exists already.
        self.hub.track_channels();
        tokio::join!(self.heartbeats(&*local), self.receive(&local, pushes), self.follow_channels());
    }

    async fn heartbeats(&self, local: &dyn Local) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = self.heartbeat(local).await;
            let result = match result {
                Ok(()) if self.resync.swap(false, Ordering::AcqRel) => self.resubscribe().await,
                other => other,
            };
            match result {
                Ok(()) => {
                    if !self.up.swap(true, Ordering::AcqRel) {
                        info!(node = format_args!("{:08x}", self.tag), "cluster: connected to Redis");
                    }
                    self.metrics.cluster_up.set(1);
                    backoff = Duration::from_millis(100);
                    tokio::time::sleep(self.ttl / 3).await;
                }
                Err(e) => {
                    self.resync.store(true, Ordering::Release);
                    self.metrics.cluster_up.set(0);
                    debug!("cluster: heartbeat failed ({e}); retrying in {backoff:?}");
                    // Jitter spreads the reconnections of many nodes.
                    let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn follow_channels(&self) {
        loop {
            self.hub.channels_changed().await;
            let changed = self.hub.take_changed_channels();
            if changed.is_empty() || !self.is_up() {
                // A resync after the reconnect covers them.
                continue;
            }
            if let Err(e) = self.reconcile(changed).await {
                debug!("cluster: subscription change deferred to the next resync ({e})");
            }
        }
    }

    async fn receive(self: &Arc<Self>, local: &Arc<dyn Local>, mut pushes: mpsc::Receiver<PushInfo>) {
        let inbox = self.names.inbox(self.tag);
        while let Some(push) = pushes.recv().await {
            match push.kind {
                PushKind::Message => {}
                PushKind::Disconnection => {
                    self.went_down("connection lost".into());
                    self.metrics.cluster_up.set(0);
                    continue;
                }
                _ => continue,
            }
            let (Some(channel), Some(bytes)) =
                (push.data.first().and_then(bytes_of), push.data.get(1).and_then(bytes_of))
            else {
                continue;
            };
            self.metrics.cluster_message("received");
            let Ok(channel) = std::str::from_utf8(channel) else { continue };
            let (header, body) = match message::decode(bytes) {
                Ok(m) => m,
                Err(e) => {
                    self.metrics.cluster_message("malformed");
                    warn!(side = "broker", channel, "cluster: dropped a message that does not decode: {e}");
                    continue;
                }
            };
            if channel == inbox {
                self.on_inbox(local, header, body);
            } else if let Some(rainbow_channel) = self.names.channel_of(channel) {
                self.on_channel(rainbow_channel, header, body).await;
            }
        }
    }

    /// Publishes `header` (and `body`) in node `to`'s inbox, from a task of
    /// its own.
    fn answer(self: &Arc<Self>, to: u32, answer: impl Future<Output = (Header, Bytes)> + Send + 'static) {
        let node = self.clone();
        self.tasks.spawn(async move {
            let (header, body) = answer.await;
            if let Err(e) = node.publish_raw(node.names.inbox(to), message::encode(&header, &body)).await {
                debug!("cluster: could not answer node {to:08x}: {e}");
            }
        });
    }

    fn on_inbox(self: &Arc<Self>, local: &Arc<dyn Local>, header: Header, body: Bytes) {
        match header {
            Header::Answer { id, answered, complete } => {
                self.resolve(id, Reply::Answer { answered, complete, reply: body })
            }
            Header::Result { id, outcome } => self.resolve(id, Reply::Result(outcome)),
            Header::Call { from, id, call } => {
                let run = local.clone().run(call.with_payload(body));
                self.answer(from, async move { (Header::Result { id, outcome: run.await }, Bytes::new()) });
            }
            other => debug!(?other, "cluster: unexpected message in the inbox"),
        }
    }

    async fn on_channel(self: &Arc<Self>, channel: &str, header: Header, body: Bytes) {
        match header {
            // Our own publication: the local part was delivered directly;
            // count our Redis subscription as an empty answer.
            Header::Publish { from, id, qos, .. } if from == self.tag => {
                if qos > 0 {
                    self.resolve(id, Reply::Answer { answered: 0, complete: true, reply: Bytes::new() });
                }
            }
            Header::Publish { from, id, message_type, qos, timeout_ms } => {
                let Some(qos) = Qos::from_u8(qos) else { return };
                if qos == Qos::AtMostOnce {
                    self.hub.publish(channel, message_type, qos, body, Duration::ZERO).await;
                    return;
                }
                // Answer a little before the caller's deadline so the answer
                // arrives in time.
                let margin = (timeout_ms / 10).min(200);
                let timeout = Duration::from_millis(timeout_ms.saturating_sub(margin).max(1));
                let receivers = self.hub.subscribers(channel);
                self.answer(from, async move {
                    let agg = match Hub::deliver(receivers, message_type, qos, body, timeout).await {
                        Delivered::Answered(agg) => agg,
                        Delivered::Queued(n) => Aggregate { answered: n, reply: None, complete: true },
                    };
                    let header = Header::Answer { id, answered: agg.answered, complete: agg.complete };
                    (header, agg.reply.unwrap_or_default())
                });
            }
            Header::Evict { from, id, .. } if from == self.tag => {
                self.resolve(id, Reply::Answer { answered: 0, complete: true, reply: Bytes::new() });
            }
            Header::Evict { from, id, keep } => {
                let removed = self.hub.evict(channel, keep.parse::<Identity>().ok());
                let header = Header::Answer { id, answered: removed, complete: true };
                self.answer(from, async move { (header, Bytes::new()) });
            }
            other => debug!(?other, "cluster: unexpected message on a channel"),
        }
    }
}
