//! The worker metrics, registered into the gateway's registry by
//! [`super::Metrics::new`]. Labels are small fixed sets (task kind,
//! reason, op, outcome), never worker names or identities.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use rainbow_protocol::worker::TaskKind as Kind;

use super::{Outcome, Reason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Dropped {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpOutcome {
    op: &'static str,
    outcome: &'static str,
}

/// Why a worker session ended, for `rainbow_worker_disconnects_total`.
pub const DISCONNECT_REASONS: [&str; 7] =
    ["drained", "closed", "lost", "protocol_error", "ping_timeout", "error", "shutdown"];
/// Why a task ended without a reply, for `rainbow_worker_tasks_dropped_total`.
pub const DROP_REASONS: [&str; 3] = ["queue_full", "queue_timeout", "timeout"];
/// What a reply did, for `rainbow_worker_replies_total`.
pub const REPLY_OUTCOMES: [&str; 4] = ["ok", "error", "late", "unknown"];

fn duration_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0])
}

/// Counters and gauges of the worker pool and sessions. Clones share them.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    /// Attached workers.
    pub workers: Gauge,
    /// Tasks waiting in the queue.
    pub queued: Gauge,
    /// Tasks held by workers.
    pub in_flight: Gauge,
    /// Deliveries to workers (redeliveries included).
    pub dispatched: Counter,
    /// Tasks put back in the queue because their worker left.
    pub requeued: Counter,
    submitted: Family<KindLabel, Counter>,
    dropped: Family<Dropped, Counter>,
    replies: Family<Outcome, Counter>,
    calls: Family<OpOutcome, Counter>,
    disconnects: Family<Reason, Counter>,
    duration: Family<KindLabel, Histogram, fn() -> Histogram>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let m = WorkerMetrics {
            workers: Gauge::default(),
            queued: Gauge::default(),
            in_flight: Gauge::default(),
            dispatched: Counter::default(),
            requeued: Counter::default(),
            submitted: Family::default(),
            dropped: Family::default(),
            replies: Family::default(),
            calls: Family::default(),
            disconnects: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        };
        // Known label values start at 0, so alerts work from the first scrape.
        for kind in [Kind::Connect, Kind::Message, Kind::Close] {
            let _ = m.submitted.get_or_create(&KindLabel { kind: kind.name() });
            for reason in DROP_REASONS {
                let _ = m.dropped.get_or_create(&Dropped { kind: kind.name(), reason });
            }
        }
        for outcome in REPLY_OUTCOMES {
            let _ = m.replies.get_or_create(&Outcome { outcome });
        }
        for reason in DISCONNECT_REASONS {
            let _ = m.disconnects.get_or_create(&Reason { reason });
        }
        m
    }
}

impl WorkerMetrics {
    /// Registers every worker metric (prefixed `rainbow_` by the registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("workers", "Attached workers", self.workers.clone());
        registry.register("worker_tasks_queued", "Tasks waiting for a free worker", self.queued.clone());
        registry.register("worker_tasks_in_flight", "Tasks held by workers, unanswered", self.in_flight.clone());
        registry.register("worker_tasks_submitted", "Tasks routed to workers, by kind", self.submitted.clone());
        registry.register("worker_tasks_dispatched", "Task deliveries to workers", self.dispatched.clone());
        registry.register("worker_tasks_requeued", "Tasks requeued because their worker left", self.requeued.clone());
        registry.register(
            "worker_tasks_dropped",
            "Tasks that ended without a worker's reply, by kind and reason",
            self.dropped.clone(),
        );
        registry.register("worker_replies", "Worker replies by outcome", self.replies.clone());
        registry.register("worker_calls", "Worker API calls by op and outcome", self.calls.clone());
        registry.register("worker_disconnects", "Ended worker sessions by reason", self.disconnects.clone());
        registry.register(
            "worker_task_duration_seconds",
            "Time from routing a task to its outcome",
            self.duration.clone(),
        );
    }

    /// Counts a task routed to workers.
    pub fn submitted(&self, kind: Kind) {
        self.submitted.get_or_create(&KindLabel { kind: kind.name() }).inc();
    }

    /// Counts a task that ended without a reply.
    pub fn dropped(&self, kind: Kind, reason: &'static str) {
        self.dropped.get_or_create(&Dropped { kind: kind.name(), reason }).inc();
    }

    /// Tasks dropped for `reason`, over all kinds (for tests).
    pub fn dropped_count(&self, reason: &'static str) -> u64 {
        [Kind::Connect, Kind::Message, Kind::Close]
            .iter()
            .map(|k| self.dropped.get_or_create(&Dropped { kind: k.name(), reason }).get())
            .sum()
    }

    /// Counts a reply.
    pub fn reply(&self, outcome: &'static str) {
        self.replies.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts an API call.
    pub fn call(&self, op: &'static str, outcome: &'static str) {
        self.calls.get_or_create(&OpOutcome { op, outcome }).inc();
    }

    /// Counts an ended session.
    pub fn disconnect(&self, reason: &'static str) {
        self.disconnects.get_or_create(&Reason { reason }).inc();
    }

    /// Records how long a task took, routing to outcome.
    pub fn task_duration(&self, kind: Kind, seconds: f64) {
        self.duration.get_or_create(&KindLabel { kind: kind.name() }).observe(seconds);
    }
}
