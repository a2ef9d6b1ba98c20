//! The hub: which connections exist, which channels they are in, and
//! delivering a message to a channel.
//!
//! - [`identity`]: connection identities.
//! - [`connection`]: the per-connection state shared with the API and hooks.
//! - [`delivery`]: aggregation of qos 1/2 answers for one `/send/`.
//!
//! The hub holds two maps behind their own locks: identity → connection, and
//! channel → its subscribers. The lock order is always `channels` before a
//! connection's own channel list. The hub knows nothing about sockets or HTTP:
//! it queues [`Outgoing`] items on connections and the transport writes them.
//!
//! Everything here is local to one node. The cluster layer (`cluster`) sits
//! above it: it decides which nodes a `/send/` or `/sub/` must reach and calls
//! these same methods on each node's hub. For it the hub remembers which
//! channels gained their first or lost their last local subscriber
//! ([`Hub::take_changed_channels`]), so the node subscribes in Redis only to
//! channels it has subscribers for.

pub mod connection;
pub mod delivery;
pub mod identity;

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rainbow_protocol::{Packet, Qos, SendPacket};
use thiserror::Error;

pub use connection::{CloseOrder, Connection, ITEM_OVERHEAD, Limits, NextForward, Outgoing, PushError};
pub use delivery::{Aggregate, Publication, Tracker};
pub use identity::Identity;

/// Longest accepted channel name, bytes.
pub const MAX_CHANNEL_LEN: usize = 256;

/// Seconds since the process started, plus one (so 0 can mean "never").
/// The coarse clock of liveness stamps.
pub fn coarse_now() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    start.elapsed().as_secs().min(u32::MAX as u64 - 1) as u32 + 1
}

/// A subscription was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubscribeError {
    /// The channel name is empty or longer than [`MAX_CHANNEL_LEN`].
    #[error("invalid channel name (1..={MAX_CHANNEL_LEN} bytes)")]
    InvalidChannel,
    /// The connection is at `max_channels_per_connection`.
    #[error("connection is already subscribed to {0} channels (max_channels_per_connection)")]
    TooMany(usize),
    /// The connection has ended and left the hub.
    #[error("the connection has ended")]
    Gone,
}

type Subscribers = HashMap<Identity, Arc<Connection>>;

/// A connection in the identity map, hashed and compared by its identity: the
/// map holds one pointer per connection rather than a copy of the 32-byte
/// identity beside it (9 instead of 41 bytes a slot, measured in
/// docs/PERFORMANCE.md).
#[derive(Debug)]
struct ById(Arc<Connection>);

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.identity() == other.0.identity()
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `Identity` hashes, which `Borrow` requires.
        self.0.identity_ref().hash(state)
    }
}

impl Borrow<Identity> for ById {
    fn borrow(&self) -> &Identity {
        self.0.identity_ref()
    }
}

/// The result of delivering a `/send/` on this node.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// qos 0: queued for this many receivers.
    Queued(usize),
    /// qos 1/2: the receivers' answers, aggregated at the deadline.
    Answered(Aggregate),
}

/// Connections and channels of one node.
#[derive(Debug)]
pub struct Hub {
    connections: RwLock<HashSet<ById>>,
    channels: RwLock<HashMap<Arc<str>, Subscribers>>,
    max_channels_per_connection: usize,
    /// This node's tag, the first 4 bytes of every identity it mints.
    node_tag: u32,
    /// Whether to record channel changes (only when clustered).
    track_channels: AtomicBool,
    /// Channels that gained their first or lost their last subscriber since
    /// the last [`Hub::take_changed_channels`]. Bounded by the number of
    /// channel names in use.
    changed: Mutex<HashSet<Arc<str>>>,
    /// Wakes the cluster layer when `changed` gains an entry.
    channels_changed: tokio::sync::Notify,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// An empty hub.
    pub fn new(max_channels_per_connection: usize) -> Hub {
        Hub {
            connections: Default::default(),
            channels: Default::default(),
            max_channels_per_connection,
            node_tag: rand::random(),
            track_channels: AtomicBool::new(false),
            changed: Default::default(),
            channels_changed: tokio::sync::Notify::new(),
        }
    }

    /// This node's tag (see [`Identity::for_node`]).
    pub fn node_tag(&self) -> u32 {
        self.node_tag
    }

    /// A new identity for a connection of this node.
    pub fn mint_identity(&self) -> Identity {
        Identity::for_node(self.node_tag)
    }

    /// Starts recording which channels appear and disappear, and returns the
    /// channels that exist now.
    pub fn track_channels(&self) -> Vec<Arc<str>> {
        let channels = read(&self.channels);
        self.track_channels.store(true, Ordering::Release);
        channels.keys().cloned().collect()
    }

    /// Channels that gained their first or lost their last subscriber since
    /// the last call (check [`Hub::has_channel`] for which).
    pub fn take_changed_channels(&self) -> Vec<Arc<str>> {
        lock(&self.changed).drain().collect()
    }

    /// Resolves when [`Hub::take_changed_channels`] has something new.
    pub async fn channels_changed(&self) {
        self.channels_changed.notified().await
    }

    /// Whether `channel` has local subscribers.
    pub fn has_channel(&self, channel: &str) -> bool {
        read(&self.channels).contains_key(channel)
    }

    fn note_change(&self, channel: &Arc<str>) {
        if self.track_channels.load(Ordering::Acquire) {
            lock(&self.changed).insert(channel.clone());
            self.channels_changed.notify_one();
        }
    }

    /// Adds a connection.
    pub fn register(&self, conn: Arc<Connection>) {
        write(&self.connections).replace(ById(conn));
    }

    /// Removes a connection and all of its subscriptions, for good: whoever
    /// still holds it (a forward answered late, a `/sub/` racing the close)
    /// can never subscribe it again.
    pub fn unregister(&self, conn: &Connection) {
        write(&self.connections).remove(&conn.identity());
        let mut channels = write(&self.channels);
        // Under the channel lock, which every subscription takes first.
        conn.set_gone();
        for channel in conn.channels().drain(..) {
            if let Some(subs) = channels.get_mut(&channel) {
                subs.remove(&conn.identity());
                if subs.is_empty() {
                    channels.remove(&channel);
                    self.note_change(&channel);
                }
            }
        }
    }

    /// The connection with this identity.
    pub fn get(&self, identity: &Identity) -> Option<Arc<Connection>> {
        read(&self.connections).get(identity).map(|c| c.0.clone())
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        read(&self.connections).len()
    }

    /// Whether there are no connections.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every connection (a snapshot).
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        read(&self.connections).iter().map(|c| c.0.clone()).collect()
    }

    /// Subscribes `conn` to `channel` (idempotent).
    pub fn subscribe(&self, conn: &Arc<Connection>, channel: &str) -> Result<(), SubscribeError> {
        self.join(conn, channel, false)
    }

    /// Removes every other subscriber of `channel`, then subscribes `conn`,
    /// in one step.
    pub fn occupy(&self, conn: &Arc<Connection>, channel: &str) -> Result<(), SubscribeError> {
        self.join(conn, channel, true)
    }

    fn join(&self, conn: &Arc<Connection>, channel: &str, occupy: bool) -> Result<(), SubscribeError> {
        if channel.is_empty() || channel.len() > MAX_CHANNEL_LEN {
            return Err(SubscribeError::InvalidChannel);
        }
        let mut channels = write(&self.channels);
        // Checked under the channel lock, which `unregister` takes too.
        if conn.is_gone() {
            return Err(SubscribeError::Gone);
        }
        let mine = conn.channels();
        let subscribed = mine.iter().any(|c| &**c == channel);
        if !subscribed && mine.len() >= self.max_channels_per_connection {
            return Err(SubscribeError::TooMany(mine.len()));
        }
        drop(mine);
        if occupy {
            self.evict_locked(&mut channels, channel, Some(conn.identity()));
        }
        if subscribed {
            return Ok(());
        }
        // Share one allocation of the name between the map and the list.
        let name = match channels.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(channel);
                self.note_change(&name);
                name
            }
        };
        channels.entry(name.clone()).or_default().insert(conn.identity(), conn.clone());
        conn.channels().push(name);
        Ok(())
    }

    /// Unsubscribes `conn` from `channel` (a no-op when not subscribed).
    pub fn unsubscribe(&self, conn: &Connection, channel: &str) {
        let mut channels = write(&self.channels);
        conn.channels().retain(|c| &**c != channel);
        if let Some(subs) = channels.get_mut(channel) {
            subs.remove(&conn.identity());
            if subs.is_empty()
                && let Some((name, _)) = channels.remove_entry(channel)
            {
                self.note_change(&name);
            }
        }
    }

    /// Removes every local subscriber of `channel` except `keep` (the rest of
    /// a cluster-wide occupy). Returns how many were removed.
    pub fn evict(&self, channel: &str, keep: Option<Identity>) -> usize {
        self.evict_locked(&mut write(&self.channels), channel, keep)
    }

    fn evict_locked(
        &self,
        channels: &mut HashMap<Arc<str>, Subscribers>,
        channel: &str,
        keep: Option<Identity>,
    ) -> usize {
        let Some(subs) = channels.get_mut(channel) else { return 0 };
        let before = subs.len();
        subs.retain(|identity, other| {
            if Some(*identity) == keep {
                return true;
            }
            other.channels().retain(|c| &**c != channel);
            false
        });
        let removed = before - subs.len();
        if subs.is_empty()
            && let Some((name, _)) = channels.remove_entry(channel)
        {
            self.note_change(&name);
        }
        removed
    }

    /// The subscribers of a channel (a snapshot).
    pub fn subscribers(&self, channel: &str) -> Vec<Arc<Connection>> {
        read(&self.channels).get(channel).map(|subs| subs.values().cloned().collect()).unwrap_or_default()
    }

    /// Every channel with its subscriber count, sorted by name.
    pub fn channel_counts(&self) -> Vec<(Arc<str>, usize)> {
        let mut counts: Vec<_> = read(&self.channels).iter().map(|(c, s)| (c.clone(), s.len())).collect();
        counts.sort();
        counts
    }

    /// Delivers a message to every subscriber of `channel`. qos 0 is queued
    /// and returns at once; qos 1/2 wait until every receiver answered, failed
    /// or `timeout` passed.
    pub async fn publish(
        &self,
        channel: &str,
        message_type: u16,
        qos: Qos,
        payload: Bytes,
        timeout: Duration,
    ) -> Delivered {
        Self::deliver(self.subscribers(channel), message_type, qos, payload, timeout).await
    }

    /// Delivers a message to `receivers`, as [`Hub::publish`] does to a
    /// channel's subscribers.
    pub async fn deliver(
        receivers: Vec<Arc<Connection>>,
        message_type: u16,
        qos: Qos,
        payload: Bytes,
        timeout: Duration,
    ) -> Delivered {
        if qos == Qos::AtMostOnce {
            let frame = Packet::Send(SendPacket { message_type, qos, id: 0, dup: false, payload }).encode();
            let queued = receivers.iter().filter(|c| c.push(Outgoing::Push(frame.clone())).is_ok()).count();
            return Delivered::Queued(queued);
        }
        let deadline = Instant::now() + timeout;
        let publication =
            Arc::new(Publication { message_type, qos, payload, deadline, tracker: Tracker::new(receivers.len()) });
        for conn in &receivers {
            if conn.push(Outgoing::Publish(publication.clone())).is_err() {
                publication.tracker.failed();
            }
        }
        Delivered::Answered(publication.tracker.wait(deadline).await)
    }

    /// Orders every connection closed.
    pub fn close_all(&self, order: CloseOrder) {
        for ById(conn) in read(&self.connections).iter() {
            conn.close(order.clone());
        }
    }

    /// One liveness pass over all connections (see
    /// [`Connection::check_liveness`]).
    pub fn sweep(&self, now: u32, ping_after: Duration, pong_within: Duration) {
        let ping_after = ping_after.as_secs().max(1) as u32;
        let pong_within = pong_within.as_secs().max(1) as u32;
        for ById(conn) in read(&self.connections).iter() {
            conn.check_liveness(now, ping_after, pong_within);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<Connection> {
        Arc::new(Connection::new(
            Identity::random(),
            "127.0.0.1:1".parse().unwrap(),
            None,
            Limits::new(4, 1 << 20),
            coarse_now(),
        ))
    }

    #[test]
    fn subscribe_unsubscribe_and_occupy() {
        let hub = Hub::new(2);
        let (a, b) = (conn(), conn());
        hub.register(a.clone());
        hub.register(b.clone());
        hub.subscribe(&a, "room").unwrap();
        hub.subscribe(&a, "room").unwrap();
        hub.subscribe(&b, "room").unwrap();
        assert_eq!(hub.subscribers("room").len(), 2);
        hub.occupy(&b, "room").unwrap();
        let subs = hub.subscribers("room");
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].identity(), b.identity());
        assert_eq!(a.channel_count(), 0);
        hub.unsubscribe(&b, "room");
        assert!(hub.channel_counts().is_empty());
    }

    #[test]
    fn subscriptions_are_bounded_and_validated() {
        let hub = Hub::new(2);
        let a = conn();
        hub.subscribe(&a, "1").unwrap();
        hub.subscribe(&a, "2").unwrap();
        assert_eq!(hub.subscribe(&a, "3"), Err(SubscribeError::TooMany(2)));
        assert_eq!(hub.subscribe(&a, ""), Err(SubscribeError::InvalidChannel));
        assert_eq!(hub.subscribe(&a, &"x".repeat(MAX_CHANNEL_LEN + 1)), Err(SubscribeError::InvalidChannel));
    }

    #[test]
    fn unregister_forgets_every_subscription() {
        let hub = Hub::new(8);
        let a = conn();
        hub.register(a.clone());
        hub.subscribe(&a, "x").unwrap();
        hub.subscribe(&a, "y").unwrap();
        hub.unregister(&a);
        assert!(hub.channel_counts().is_empty());
        assert!(hub.get(&a.identity()).is_none());
    }

    /// Review bug 1: whoever still holds a connection that left the hub (a
    /// late forward answer, a `/sub/` racing the close) cannot put it back
    /// into a channel.
    #[test]
    fn a_connection_gone_from_the_hub_is_never_subscribed_again() {
        let hub = Hub::new(8);
        let a = conn();
        hub.register(a.clone());
        hub.unregister(&a);
        assert_eq!(hub.subscribe(&a, "ghost"), Err(SubscribeError::Gone));
        assert_eq!(hub.occupy(&a, "ghost"), Err(SubscribeError::Gone));
        assert!(hub.channel_counts().is_empty());
        assert_eq!(a.channel_count(), 0);
    }

    #[tokio::test]
    async fn a_full_outbox_fails_the_receiver_and_orders_slow_consumer() {
        let hub = Hub::new(8);
        let a = conn();
        hub.subscribe(&a, "c").unwrap();
        for _ in 0..4 {
            a.push(Outgoing::Push(Bytes::new())).unwrap();
        }
        let got = hub.publish("c", 1, Qos::AtLeastOnce, Bytes::new(), Duration::from_secs(5)).await;
        assert_eq!(got, Delivered::Answered(Aggregate { answered: 0, reply: None, complete: true }));
        assert_eq!(a.close_order(), Some(CloseOrder::SLOW_CONSUMER));
    }
}
