//! Prometheus metrics: every counter the gateway keeps, and their rendering at
//! `/metrics`. The worker pool's own are in [`worker`].
//!
//! Hot-path counters are resolved once at start-up into plain fields, so
//! counting a message is one atomic add with no label lookup. Label values are
//! small fixed sets (never identities or channel names), so cardinality stays
//! bounded.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub mod worker;

pub use worker::WorkerMetrics;

/// An `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Flow {
    direction: &'static str,
    qos: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Hook {
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCall {
    endpoint: &'static str,
    outcome: &'static str,
}

/// Why a connection ended, as counted in `rainbow_disconnects_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client closed or the TCP connection dropped.
    Client,
    /// The client sent a packet that does not parse.
    ProtocolError,
    /// The client sent a message over `max_message_size`.
    TooBig,
    /// The outbound queue filled up.
    SlowConsumer,
    /// The client sent faster than `max_message_rate`.
    RateLimited,
    /// A ping went unanswered.
    PingTimeout,
    /// The gateway is shutting down.
    Shutdown,
    /// A socket error.
    Error,
    /// The backend (a worker's `close` call) closed it.
    Backend,
}

impl DisconnectReason {
    const ALL: [DisconnectReason; 9] = [
        DisconnectReason::Client,
        DisconnectReason::ProtocolError,
        DisconnectReason::TooBig,
        DisconnectReason::SlowConsumer,
        DisconnectReason::RateLimited,
        DisconnectReason::PingTimeout,
        DisconnectReason::Shutdown,
        DisconnectReason::Error,
        DisconnectReason::Backend,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DisconnectReason::Client => "client",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::TooBig => "too_big",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::RateLimited => "rate_limited",
            DisconnectReason::PingTimeout => "ping_timeout",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Error => "error",
            DisconnectReason::Backend => "backend",
        }
    }
}

/// Handshake outcomes counted in `rainbow_connects_total`.
pub const CONNECT_OUTCOMES: [&str; 5] = ["accepted", "denied", "backend_error", "over_limit", "bad_request"];
/// Forward outcomes counted in `rainbow_forwards_total` (see `HookError::label`).
pub const FORWARD_OUTCOMES: [&str; 12] = [
    "ok",
    "timeout",
    "unreachable",
    "http_error",
    "no_forward_url",
    "bad_url",
    "bad_answer",
    "worker_queue_full",
    "worker_queue_timeout",
    "worker_timeout",
    "worker_error",
    "worker_shutdown",
];

/// Kinds of cluster traffic counted in `rainbow_cluster_messages_total`:
/// published to other nodes, received from them, and received messages that
/// were dropped (queue full) or did not decode.
pub const CLUSTER_MESSAGE_KINDS: [&str; 4] = ["sent", "received", "dropped", "malformed"];

/// Counters for one qos level in one direction.
#[derive(Clone, Debug, Default)]
pub struct ByQos(pub [Counter; 3]);

/// All of the gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open client connections.
    pub connections: Gauge,
    connects: Family<Outcome, Counter>,
    disconnects: Family<Reason, Counter>,
    /// Client → gateway SENDs, by qos.
    pub messages_in: ByQos,
    /// Gateway → client SENDs, by qos.
    pub messages_out: ByQos,
    forwards: Family<Outcome, Counter>,
    hook_latency: Family<Hook, Histogram, fn() -> Histogram>,
    protocol_errors: Family<Kind, Counter>,
    api_calls: Family<ApiCall, Counter>,
    /// qos-2 duplicates that were not processed again.
    pub duplicates: Counter,
    /// DUP retransmissions written to clients.
    pub retransmits: Counter,
    /// Forwards waiting for a global forward slot.
    pub forwards_waiting: Gauge,
    /// Times a connection's forward queue filled and the gateway stopped
    /// reading that client until the backend caught up.
    pub forward_queue_full: Counter,
    /// 1 while this node reaches the cluster's Redis, 0 otherwise (and when
    /// not clustered).
    pub cluster_up: Gauge,
    cluster_messages: Family<Kind, Counter>,
    /// Accepted sockets that are not (or not yet) client WebSockets:
    /// handshakes under way, API and worker HTTP connections.
    pub http_connections: Gauge,
    sockets_shed: Family<Reason, Counter>,
    /// The worker pool's metrics (`rainbow_worker*`).
    pub workers: WorkerMetrics,
}

/// Why a socket was closed by the listener rather than served, counted in
/// `rainbow_sockets_shed_total`: the oldest idle one made room for a new one
/// at `max_http_connections` (`evicted`), a new one found every HTTP socket
/// busy (`too_many`), or the process ran out of file descriptors (`no_fd`).
pub const SHED_REASONS: [&str; 3] = ["evicted", "too_many", "no_fd"];

fn hook_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rainbow");
        let messages: Family<Flow, Counter> = Family::default();
        // Resolve the per-qos children once so hot paths skip the label lookup.
        let by_qos = |direction: &'static str| {
            ByQos(["0", "1", "2"].map(|qos| messages.get_or_create(&Flow { direction, qos }).clone()))
        };
        let m = Metrics {
            connections: Gauge::default(),
            connects: Family::default(),
            disconnects: Family::default(),
            messages_in: by_qos("in"),
            messages_out: by_qos("out"),
            forwards: Family::default(),
            hook_latency: Family::new_with_constructor(hook_histogram as fn() -> Histogram),
            protocol_errors: Family::default(),
            api_calls: Family::default(),
            duplicates: Counter::default(),
            retransmits: Counter::default(),
            forwards_waiting: Gauge::default(),
            forward_queue_full: Counter::default(),
            cluster_up: Gauge::default(),
            cluster_messages: Family::default(),
            http_connections: Gauge::default(),
            sockets_shed: Family::default(),
            workers: Default::default(),
            registry: Registry::default(),
        };
        // Known label values start at 0 rather than absent, so rate() and
        // alerts work from the first scrape.
        for reason in DisconnectReason::ALL {
            let _ = m.disconnects.get_or_create(&Reason { reason: reason.label() });
        }
        for outcome in CONNECT_OUTCOMES {
            let _ = m.connects.get_or_create(&Outcome { outcome });
        }
        for outcome in FORWARD_OUTCOMES {
            let _ = m.forwards.get_or_create(&Outcome { outcome });
        }
        for kind in CLUSTER_MESSAGE_KINDS {
            let _ = m.cluster_messages.get_or_create(&Kind { kind });
        }
        for hook in ["connect", "forward", "close"] {
            let _ = m.hook_latency.get_or_create(&Hook { hook });
        }
        registry.register("connections", "Open client connections", m.connections.clone());
        registry.register("connects", "WebSocket handshakes by outcome", m.connects.clone());
        registry.register("disconnects", "Ended connections by reason", m.disconnects.clone());
        registry.register("messages", "SEND packets by direction and qos", messages);
        registry.register("forwards", "Forward hook calls by outcome", m.forwards.clone());
        registry.register("hook_duration_seconds", "Hook call latency", m.hook_latency.clone());
        registry.register("protocol_errors", "Malformed client packets by kind", m.protocol_errors.clone());
        registry.register("api_calls", "Backend API calls by endpoint and outcome", m.api_calls.clone());
        registry.register("qos2_duplicates", "qos-2 duplicates not processed again", m.duplicates.clone());
        registry.register("retransmits", "DUP retransmissions to clients", m.retransmits.clone());
        registry.register("forwards_waiting", "Forwards waiting for a global slot", m.forwards_waiting.clone());
        registry.register(
            "forward_queue_full",
            "Times a client's forward queue filled (max_pending_forwards) and its reading paused",
            m.forward_queue_full.clone(),
        );
        for reason in SHED_REASONS {
            let _ = m.sockets_shed.get_or_create(&Reason { reason });
        }
        registry.register(
            "http_connections",
            "Sockets that are not client WebSockets: handshakes under way, API and worker HTTP connections",
            m.http_connections.clone(),
        );
        registry.register(
            "sockets_shed",
            "Sockets the listener closed instead of serving, by reason",
            m.sockets_shed.clone(),
        );
        registry.register("cluster_up", "1 while the cluster's Redis is reachable", m.cluster_up.clone());
        registry.register("cluster_messages", "Messages between cluster nodes by kind", m.cluster_messages.clone());
        m.workers.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// Counts a handshake outcome.
    pub fn connect(&self, outcome: &'static str) {
        self.connects.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts a socket the listener closed instead of serving (one of
    /// [`SHED_REASONS`]).
    pub fn shed(&self, reason: &'static str) {
        self.sockets_shed.get_or_create(&Reason { reason }).inc();
    }

    /// Counts an ended connection.
    pub fn disconnect(&self, reason: DisconnectReason) {
        self.disconnects.get_or_create(&Reason { reason: reason.label() }).inc();
    }

    /// Counts a forward outcome.
    pub fn forward(&self, outcome: &'static str) {
        self.forwards.get_or_create(&Outcome { outcome }).inc();
    }

    /// Records a hook call's latency.
    pub fn hook_latency(&self, hook: &'static str, seconds: f64) {
        self.hook_latency.get_or_create(&Hook { hook }).observe(seconds);
    }

    /// Counts a malformed packet.
    pub fn protocol_error(&self, kind: &'static str) {
        self.protocol_errors.get_or_create(&Kind { kind }).inc();
    }

    /// Counts a message between cluster nodes (see [`CLUSTER_MESSAGE_KINDS`]).
    pub fn cluster_message(&self, kind: &'static str) {
        self.cluster_messages.get_or_create(&Kind { kind }).inc();
    }

    /// Counts an API call.
    pub fn api_call(&self, endpoint: &'static str, outcome: &'static str) {
        self.api_calls.get_or_create(&ApiCall { endpoint, outcome }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
