//! The worker pool: attached workers, their credits, and the one bounded
//! gateway-wide queue of tasks waiting for a free worker.
//!
//! Everything here is synchronous state behind one mutex, driven by the
//! callers with an explicit `now`, so the dispatch rules are unit-tested
//! without sockets:
//!
//! - [`Pool::submit`] hands a task to the worker with the most free credits,
//!   or queues it (refused when `worker_queue_size` tasks already wait). The
//!   caller gets a [`Pending`] to await the outcome.
//! - A worker never holds more unanswered tasks than its credits; a reply
//!   frees a place and pulls the queue's front task ([`Pool::reply`]).
//! - [`Pool::detach`] (the worker's session ended) puts the tasks it held back
//!   at the **front** of the queue, oldest first, with `attempt` + 1 and the
//!   same `key`. A connection has at most one task outstanding (its forward
//!   queue is serialized), so this never reorders a connection's tasks.
//! - Timeouts are checked by the waiting caller ([`Pending::wait`]) rather
//!   than by a timer per task: a queued task waits at most
//!   `worker_queue_timeout` (and never past its deadline); a task held by a
//!   worker fails at its deadline (`forward_timeout` / `hook_timeout`) but
//!   keeps occupying the worker's credit until the worker answers or leaves,
//!   because the worker is still busy with it.
//!
//! Deliveries reach a worker's session through a channel whose capacity is
//! [`MAX_CREDITS`]: since a worker never holds more than that many tasks, the
//! channel cannot fill.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rainbow_protocol::worker::{MAX_CREDITS, ReplyFields, TaskEvent};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::WorkerMetrics;

/// A task's id, unique in this gateway process; kept on redelivery.
pub type TaskId = u64;
/// A worker session's id, unique in this gateway process.
pub type WorkerId = u64;

/// What happened on the client connection: the protocol's task kind.
pub use rainbow_protocol::worker::TaskKind as Kind;

/// A task's content: built once, sent again unchanged on redelivery.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The client connection's identity.
    pub identity: String,
    /// What happened, with the kind's fields (`type`, `qos`, `context`,
    /// `headers`, ...).
    pub event: TaskEvent,
    /// The client's payload (messages), else empty.
    pub body: Bytes,
}

impl TaskSpec {
    /// What happened.
    pub fn kind(&self) -> Kind {
        self.event.kind()
    }
}

/// One delivery of a task to a worker.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The task id (the worker answers with it).
    pub task: TaskId,
    /// Stays the same across redeliveries.
    pub key: Arc<str>,
    /// 1 on first delivery.
    pub attempt: u32,
    /// The content.
    pub spec: Arc<TaskSpec>,
}

/// Why a task produced no reply.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Failure {
    /// No worker was free and the queue was full.
    #[error(
        "no worker free and {0} tasks already queued (worker_queue_size); attach workers, raise their credits or the queue size"
    )]
    QueueFull(usize),
    /// The task waited in the queue until `worker_queue_timeout` (or its
    /// deadline) passed.
    #[error("no worker took the task in {0:?} (worker_queue_timeout); is a worker attached and giving credits?")]
    QueueTimeout(Duration),
    /// The worker holding the task did not answer in time.
    #[error("worker {worker:?} did not answer within {timeout:?} (forward_timeout/hook_timeout)")]
    Timeout {
        /// The worker's name.
        worker: Arc<str>,
        /// The task's timeout.
        timeout: Duration,
    },
    /// The worker answered with an `error`, or an unusable reply.
    #[error("worker {worker:?} failed the task: {message}")]
    Error {
        /// The worker's name.
        worker: Arc<str>,
        /// What it said.
        message: String,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    Shutdown,
}

impl Failure {
    /// A short label for metrics (`rainbow_forwards_total{outcome}` and the
    /// worker metrics).
    pub fn label(&self) -> &'static str {
        match self {
            Failure::QueueFull(_) => "worker_queue_full",
            Failure::QueueTimeout(_) => "worker_queue_timeout",
            Failure::Timeout { .. } => "worker_timeout",
            Failure::Error { .. } => "worker_error",
            Failure::Shutdown => "worker_shutdown",
        }
    }
}

/// A worker's reply to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerReply {
    /// The name of the worker that answered (for logs).
    pub worker: Arc<str>,
    /// What it answered.
    pub fields: ReplyFields,
}

/// A task's outcome: the worker's reply, or why there is none.
pub type TaskResult = Result<WorkerReply, Failure>;

/// Queue bounds, read from the live configuration at each submit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `worker_queue_size`.
    pub queue_size: usize,
    /// `worker_queue_timeout`.
    pub queue_timeout: Duration,
}

/// One attached worker, for `/serverinfo/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Session id.
    pub id: WorkerId,
    /// Its name (may be empty).
    pub name: Arc<str>,
    /// Its window.
    pub credits: u32,
    /// Tasks it holds unanswered.
    pub in_flight: usize,
    /// Whether it is draining.
    pub draining: bool,
    /// Seconds since it said hello.
    pub attached_seconds: u64,
}

/// What a reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyResult {
    /// It answered a waiting task.
    Answered,
    /// It answered a task whose caller had given up (timed out).
    Late,
    /// No task with this id is held by this worker.
    Unknown,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Waiting in the queue until `expires`.
    Queued { expires: Instant },
    /// Held by a worker.
    Held(WorkerId),
}

#[derive(Debug)]
struct Entry {
    spec: Arc<TaskSpec>,
    key: Arc<str>,
    attempt: u32,
    timeout: Duration,
    created: Instant,
    deadline: Instant,
    place: Place,
    /// `None` once the caller stopped waiting (abandoned).
    done: Option<oneshot::Sender<TaskResult>>,
}

#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    credits: u32,
    /// Tasks delivered and not answered, including abandoned ones.
    held: BTreeSet<TaskId>,
    draining: bool,
    /// Its session stopped taking deliveries; it will be detached.
    dead: bool,
    tx: mpsc::Sender<Delivery>,
    since: Instant,
}

impl Slot {
    fn free(&self) -> usize {
        if self.draining || self.dead { 0 } else { (self.credits as usize).saturating_sub(self.held.len()) }
    }
}

#[derive(Debug, Default)]
struct Dispatch {
    next_task: TaskId,
    next_worker: WorkerId,
    workers: BTreeMap<WorkerId, Slot>,
    queue: VecDeque<TaskId>,
    tasks: HashMap<TaskId, Entry>,
    in_flight: usize,
    shut: bool,
}

/// The result of a caller's periodic check on its task.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Check again at this instant.
    Wait(Instant),
    /// The task is over: failed with this.
    Failed(Failure),
    /// The outcome was already sent.
    Gone,
}

/// The worker pool. One per gateway.
#[derive(Debug)]
pub struct Pool {
    /// This node's tag, in hex (as `/serverinfo/` and the cluster show it).
    node: String,
    /// Prefix of task keys: the node and a random part, so that keys stay
    /// unique across restarts of the gateway (task ids start again at 1).
    key_prefix: String,
    metrics: WorkerMetrics,
    state: Mutex<Dispatch>,
    closing: watch::Sender<bool>,
}

/// Capacity of a session's delivery channel (see the module docs).
pub const DELIVERY_CAPACITY: usize = MAX_CREDITS as usize;

impl Pool {
    /// An empty pool of the node tagged `node_tag`; `metrics` are updated as
    /// tasks move.
    pub fn new(metrics: WorkerMetrics, node_tag: u32) -> Pool {
        let node = format!("{node_tag:08x}");
        let key_prefix = format!("{node}{:08x}", rand::random::<u32>());
        Pool { node, key_prefix, metrics, state: Mutex::new(Dispatch::default()), closing: watch::channel(false).0 }
    }

    /// This node's tag (a new random one at each start), sent in `welcome`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The metrics.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, Dispatch> {
        // Every critical section leaves the state consistent; a panic
        // elsewhere must not wedge dispatch.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh worker id (sent in `welcome`, before the worker attaches).
    pub fn next_worker_id(&self) -> WorkerId {
        let mut s = self.lock();
        s.next_worker += 1;
        s.next_worker
    }

    /// Attached workers (draining ones included).
    pub fn attached(&self) -> usize {
        self.lock().workers.len()
    }

    /// Tasks waiting in the queue.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// The attached workers, for `/serverinfo/`.
    pub fn snapshot(&self, now: Instant) -> Vec<WorkerInfo> {
        self.lock()
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                id: *id,
                name: w.name.clone(),
                credits: w.credits,
                in_flight: w.held.len(),
                draining: w.draining,
                attached_seconds: now.saturating_duration_since(w.since).as_secs(),
            })
            .collect()
    }

    /// Resolves when the gateway shuts down (see [`Pool::shutdown`]).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Tells every worker session to close, and fails queued tasks.
    pub fn shutdown(&self) {
        let mut s = self.lock();
        s.shut = true;
        for id in std::mem::take(&mut s.queue) {
            if let Some(entry) = s.tasks.remove(&id)
                && let Some(done) = entry.done
            {
                let _ = done.send(Err(Failure::Shutdown));
            }
        }
        self.gauges(&s);
        drop(s);
        self.closing.send_replace(true);
    }

    /// A worker said hello: it takes up to `credits` tasks, delivered on `tx`.
    pub fn attach(&self, id: WorkerId, name: Arc<str>, credits: u32, tx: mpsc::Sender<Delivery>, now: Instant) {
        let mut s = self.lock();
        let slot = Slot { name, credits, held: BTreeSet::new(), draining: false, dead: false, tx, since: now };
        s.workers.insert(id, slot);
        self.pump(&mut s);
        self.gauges(&s);
    }

    /// A worker's session ended. Its unanswered tasks go back to the front of
    /// the queue (abandoned ones are forgotten); returns how many.
    pub fn detach(&self, id: WorkerId) -> usize {
        let mut s = self.lock();
        let Some(slot) = s.workers.remove(&id) else { return 0 };
        let mut requeued = Vec::new();
        let shut = s.shut;
        for task in slot.held {
            s.in_flight -= 1;
            let Some(entry) = s.tasks.get_mut(&task) else { continue };
            if entry.done.is_none() || shut {
                if let Some(done) = s.tasks.remove(&task).and_then(|e| e.done) {
                    let _ = done.send(Err(Failure::Shutdown));
                }
                continue;
            }
            entry.attempt += 1;
            // A requeued task is bounded by its deadline only: it was already
            // taken once, and delivering it beats failing it.
            entry.place = Place::Queued { expires: entry.deadline };
            requeued.push(task);
        }
        // Oldest first at the very front.
        for task in requeued.iter().rev() {
            s.queue.push_front(*task);
        }
        self.metrics.requeued.inc_by(requeued.len() as u64);
        self.pump(&mut s);
        self.gauges(&s);
        requeued.len()
    }

    /// A worker changed its window.
    pub fn credit(&self, id: WorkerId, credits: u32) {
        let mut s = self.lock();
        if let Some(slot) = s.workers.get_mut(&id) {
            slot.credits = credits;
        }
        self.pump(&mut s);
        self.gauges(&s);
    }

    /// A worker asked to drain: it gets no new task. Returns whether it holds
    /// none already (then `drained` is due at once).
    pub fn drain(&self, id: WorkerId) -> bool {
        let mut s = self.lock();
        let Some(slot) = s.workers.get_mut(&id) else { return true };
        slot.draining = true;
        slot.held.is_empty()
    }

    /// A worker answered `task`. Returns what the reply did, and whether the
    /// worker is draining and now holds nothing (`drained` is due).
    pub fn reply(&self, worker: WorkerId, task: TaskId, outcome: TaskResult) -> (ReplyResult, bool) {
        let mut s = self.lock();
        let held = s.workers.get_mut(&worker).is_some_and(|slot| slot.held.remove(&task));
        if !held {
            return (ReplyResult::Unknown, false);
        }
        s.in_flight -= 1;
        let drained = s.workers.get(&worker).is_some_and(|slot| slot.draining && slot.held.is_empty());
        let result = match s.tasks.remove(&task).and_then(|e| e.done) {
            Some(done) => {
                // The caller may have been dropped meanwhile; nothing to do then.
                let _ = done.send(outcome);
                ReplyResult::Answered
            }
            None => ReplyResult::Late,
        };
        self.pump(&mut s);
        self.gauges(&s);
        (result, drained)
    }

    /// Submits a task. It goes to the free worker with the most free credits
    /// if the queue is empty, else to the back of the queue; a full queue
    /// refuses it.
    pub fn submit(
        &self,
        spec: TaskSpec,
        timeout: Duration,
        limits: Limits,
        now: Instant,
    ) -> Result<Pending<'_>, Failure> {
        let mut s = self.lock();
        if s.shut {
            return Err(Failure::Shutdown);
        }
        if s.queue.len() >= limits.queue_size && (!s.queue.is_empty() || pick(&s.workers).is_none()) {
            self.metrics.dropped(spec.kind(), "queue_full");
            return Err(Failure::QueueFull(limits.queue_size));
        }
        s.next_task += 1;
        let id = s.next_task;
        let deadline = now + timeout;
        let expires = (now + limits.queue_timeout).min(deadline);
        let (done, rx) = oneshot::channel();
        let key: Arc<str> = Arc::from(format!("{}-{id}", self.key_prefix));
        let kind = spec.kind();
        let entry = Entry {
            spec: Arc::new(spec),
            key,
            attempt: 1,
            timeout,
            created: now,
            deadline,
            place: Place::Queued { expires },
            done: Some(done),
        };
        s.tasks.insert(id, entry);
        s.queue.push_back(id);
        self.metrics.submitted(kind);
        self.pump(&mut s);
        self.gauges(&s);
        let wake = match s.tasks.get(&id).map(|e| e.place) {
            Some(Place::Queued { expires }) => expires,
            _ => deadline,
        };
        Ok(Pending { pool: self, id, rx, wake, finished: false, started: now, kind })
    }

    /// Moves queued tasks to free workers, front first.
    fn pump(&self, s: &mut Dispatch) {
        while let Some(&task) = s.queue.front() {
            let Some(worker) = pick(&s.workers) else { return };
            s.queue.pop_front();
            let Some(entry) = s.tasks.get_mut(&task) else { continue };
            let delivery = Delivery { task, key: entry.key.clone(), attempt: entry.attempt, spec: entry.spec.clone() };
            let Some(slot) = s.workers.get_mut(&worker) else { continue };
            match slot.tx.try_send(delivery) {
                Ok(()) => {
                    slot.held.insert(task);
                    entry.place = Place::Held(worker);
                    s.in_flight += 1;
                    self.metrics.dispatched.inc();
                }
                Err(_) => {
                    // The session is gone (the channel cannot be full: see
                    // the module docs). Take the task back and stop using
                    // this worker; its detach follows.
                    slot.dead = true;
                    s.queue.push_front(task);
                }
            }
        }
    }

    fn gauges(&self, s: &Dispatch) {
        self.metrics.workers.set(s.workers.len() as i64);
        self.metrics.queued.set(s.queue.len() as i64);
        self.metrics.in_flight.set(s.in_flight as i64);
    }

    /// The caller's periodic check (see [`Pending::wait`]).
    fn check(&self, id: TaskId, now: Instant) -> Check {
        let mut s = self.lock();
        let Some(entry) = s.tasks.get_mut(&id) else { return Check::Gone };
        if entry.done.is_none() {
            return Check::Gone;
        }
        match entry.place {
            Place::Queued { expires } if now < expires => Check::Wait(expires),
            Place::Queued { .. } => {
                let failure = Failure::QueueTimeout(now.saturating_duration_since(entry.created));
                let kind = entry.spec.kind();
                s.tasks.remove(&id);
                s.queue.retain(|t| *t != id);
                self.metrics.dropped(kind, "queue_timeout");
                self.gauges(&s);
                Check::Failed(failure)
            }
            Place::Held(_) if now < entry.deadline => Check::Wait(entry.deadline),
            Place::Held(worker) => {
                // Abandon it: the worker keeps the credit until it answers.
                entry.done = None;
                let timeout = entry.timeout;
                let kind = entry.spec.kind();
                let name = s.workers.get(&worker).map(|w| w.name.clone()).unwrap_or_else(|| Arc::from(""));
                self.metrics.dropped(kind, "timeout");
                Check::Failed(Failure::Timeout { worker: name, timeout })
            }
        }
    }

    /// The caller stopped waiting: a queued task is removed, a held one
    /// abandoned.
    fn cancel(&self, id: TaskId) {
        let mut s = self.lock();
        let Some(entry) = s.tasks.get_mut(&id) else { return };
        match entry.place {
            Place::Queued { .. } => {
                s.tasks.remove(&id);
                s.queue.retain(|t| *t != id);
                self.gauges(&s);
            }
            Place::Held(_) => entry.done = None,
        }
    }
}

/// The free worker with the most free credits (the oldest on ties).
fn pick(workers: &BTreeMap<WorkerId, Slot>) -> Option<WorkerId> {
    let mut best: Option<(WorkerId, usize)> = None;
    for (id, slot) in workers {
        let free = slot.free();
        if free > 0 && best.is_none_or(|(_, b)| free > b) {
            best = Some((*id, free));
        }
    }
    best.map(|(id, _)| id)
}

/// A submitted task's outcome, to await. Dropping it cancels the task.
#[derive(Debug)]
pub struct Pending<'a> {
    pool: &'a Pool,
    id: TaskId,
    rx: oneshot::Receiver<TaskResult>,
    wake: Instant,
    finished: bool,
    started: Instant,
    kind: Kind,
}

impl Pending<'_> {
    /// The task id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Waits for the worker's answer, or the first timeout that applies.
    pub async fn wait(mut self) -> TaskResult {
        let outcome = loop {
            match tokio::time::timeout_at(self.wake.into(), &mut self.rx).await {
                Ok(Ok(outcome)) => break outcome,
                Ok(Err(_)) => break Err(Failure::Shutdown),
                Err(_) => match self.pool.check(self.id, Instant::now()) {
                    Check::Wait(at) => self.wake = at,
                    Check::Failed(failure) => break Err(failure),
                    // The outcome is in the channel (or the pool dropped it).
                    Check::Gone => self.wake = Instant::now() + Duration::from_secs(1),
                },
            }
        };
        self.finished = true;
        let m = self.pool.metrics();
        m.task_duration(self.kind, self.started.elapsed().as_secs_f64());
        outcome
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.pool.cancel(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { queue_size: 4, queue_timeout: Duration::from_secs(5) };
    const TIMEOUT: Duration = Duration::from_secs(15);

    fn spec(n: u64) -> TaskSpec {
        let event = TaskEvent::Message { message_type: 1, qos: rainbow_protocol::Qos::AtMostOnce, context: None };
        TaskSpec { identity: n.to_string(), event, body: Bytes::new() }
    }

    fn pool() -> Pool {
        Pool::new(WorkerMetrics::default(), 0x0a0b0c0d)
    }

    fn attach(pool: &Pool, credits: u32) -> (WorkerId, mpsc::Receiver<Delivery>) {
        let id = pool.next_worker_id();
        let (tx, rx) = mpsc::channel(DELIVERY_CAPACITY);
        pool.attach(id, Arc::from(format!("w{id}")), credits, tx, Instant::now());
        (id, rx)
    }

    fn n(d: &Delivery) -> u64 {
        d.spec.identity.parse().unwrap()
    }

    fn ok() -> TaskResult {
        Ok(WorkerReply { worker: Arc::from("w"), fields: ReplyFields::default() })
    }

    #[test]
    fn credits_bound_what_a_worker_holds_and_replies_pull_the_queue() {
        let p = pool();
        let (w, mut rx) = attach(&p, 1);
        let now = Instant::now();
        let a = p.submit(spec(1), TIMEOUT, LIMITS, now).unwrap();
        let _b = p.submit(spec(2), TIMEOUT, LIMITS, now).unwrap();
        let first = rx.try_recv().unwrap();
        assert_eq!((n(&first), first.attempt), (1, 1));
        assert!(rx.try_recv().is_err(), "credit 1: the second task waits");
        assert_eq!(p.queued(), 1);
        assert_eq!(p.reply(w, first.task, ok()), (ReplyResult::Answered, false));
        assert_eq!(n(&rx.try_recv().unwrap()), 2, "the reply freed the credit");
        assert_eq!(p.queued(), 0);
        drop(a);
    }

    #[test]
    fn the_worker_with_most_free_credits_is_picked_and_credit_changes_apply() {
        let p = pool();
        let (_w1, mut rx1) = attach(&p, 1);
        let (w2, mut rx2) = attach(&p, 3);
        let now = Instant::now();
        let _t: Vec<_> = (0..4).map(|i| p.submit(spec(i), TIMEOUT, LIMITS, now).unwrap()).collect();
        let got2 = std::iter::from_fn(|| rx2.try_recv().ok()).count();
        let got1 = std::iter::from_fn(|| rx1.try_recv().ok()).count();
        assert_eq!((got1, got2), (1, 3));
        let _more = p.submit(spec(9), TIMEOUT, LIMITS, now).unwrap();
        assert_eq!(p.queued(), 1);
        p.credit(w2, 4);
        assert_eq!(n(&rx2.try_recv().unwrap()), 9);
        p.credit(w2, 0);
        let _again = p.submit(spec(10), TIMEOUT, LIMITS, now).unwrap();
        assert!(rx2.try_recv().is_err(), "credit 0 pauses the worker");
    }

    #[test]
    fn a_full_queue_refuses_and_counts() {
        let p = pool();
        let now = Instant::now();
        let _held: Vec<_> = (0..4).map(|i| p.submit(spec(i), TIMEOUT, LIMITS, now).unwrap()).collect();
        assert_eq!(p.submit(spec(5), TIMEOUT, LIMITS, now).unwrap_err(), Failure::QueueFull(4));
        let zero = Limits { queue_size: 0, ..LIMITS };
        let q = pool();
        assert_eq!(q.submit(spec(1), TIMEOUT, zero, now).unwrap_err(), Failure::QueueFull(0));
        let (_w, mut rx) = attach(&q, 1);
        let _t = q.submit(spec(1), TIMEOUT, zero, now).expect("a free worker takes it even with no queue");
        assert!(rx.try_recv().is_ok());
        assert_eq!(q.submit(spec(2), TIMEOUT, zero, now).unwrap_err(), Failure::QueueFull(0));
        assert_eq!(p.metrics().dropped_count("queue_full"), 1);
    }

    #[test]
    fn death_requeues_at_the_front_oldest_first_with_a_new_attempt() {
        let p = pool();
        let (w1, mut rx1) = attach(&p, 2);
        let now = Instant::now();
        let _t: Vec<_> = (1..=4).map(|i| p.submit(spec(i), TIMEOUT, LIMITS, now).unwrap()).collect();
        let held: Vec<Delivery> = std::iter::from_fn(|| rx1.try_recv().ok()).collect();
        assert_eq!(held.iter().map(n).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(p.queued(), 2);
        assert_eq!(p.detach(w1), 2);
        assert_eq!(p.queued(), 4);
        let (_w2, mut rx2) = attach(&p, 10);
        let again: Vec<Delivery> = std::iter::from_fn(|| rx2.try_recv().ok()).collect();
        assert_eq!(again.iter().map(n).collect::<Vec<_>>(), [1, 2, 3, 4], "requeued tasks first, in order");
        assert_eq!(again[0].key, held[0].key, "same key");
        assert_eq!(again[0].task, held[0].task, "same task id");
        assert_eq!((again[0].attempt, again[2].attempt), (2, 1));
        assert_eq!(p.metrics().requeued.get(), 2);
    }

    #[tokio::test]
    async fn a_reply_reaches_the_waiting_caller_and_a_stray_one_is_unknown() {
        let p = pool();
        let (w, mut rx) = attach(&p, 1);
        let pending = p.submit(spec(1), TIMEOUT, LIMITS, Instant::now()).unwrap();
        let d = rx.try_recv().unwrap();
        let fields = ReplyFields { body: Bytes::from_static(b"hi"), ..Default::default() };
        let reply = WorkerReply { worker: Arc::from("w"), fields };
        assert_eq!(p.reply(w, d.task, Ok(reply.clone())), (ReplyResult::Answered, false));
        assert_eq!(pending.wait().await, Ok(reply));
        assert_eq!(p.reply(w, d.task, ok()).0, ReplyResult::Unknown, "answered twice");
        assert_eq!(p.reply(w, 999, ok()).0, ReplyResult::Unknown);
    }

    #[tokio::test]
    async fn queued_tasks_expire_after_the_queue_timeout() {
        let p = pool();
        let limits = Limits { queue_size: 4, queue_timeout: Duration::from_millis(300) };
        let pending = p.submit(spec(1), TIMEOUT, limits, Instant::now()).unwrap();
        assert!(matches!(pending.wait().await, Err(Failure::QueueTimeout(_))));
        assert_eq!(p.queued(), 0);
        assert_eq!(p.metrics().dropped_count("queue_timeout"), 1);
    }

    #[tokio::test]
    async fn a_held_task_times_out_but_keeps_the_credit_until_the_late_reply() {
        let p = pool();
        let (w, mut rx) = attach(&p, 1);
        let pending = p.submit(spec(1), Duration::from_millis(200), LIMITS, Instant::now()).unwrap();
        let d = rx.try_recv().unwrap();
        assert!(matches!(pending.wait().await, Err(Failure::Timeout { .. })));
        let _next = p.submit(spec(2), TIMEOUT, LIMITS, Instant::now()).unwrap();
        assert!(rx.try_recv().is_err(), "the worker still holds the timed-out task");
        assert_eq!(p.reply(w, d.task, ok()).0, ReplyResult::Late);
        assert_eq!(n(&rx.try_recv().unwrap()), 2);
    }

    #[test]
    fn abandoned_tasks_are_not_requeued() {
        let p = pool();
        let (w, mut rx) = attach(&p, 1);
        let pending = p.submit(spec(1), TIMEOUT, LIMITS, Instant::now()).unwrap();
        let _d = rx.try_recv().unwrap();
        drop(pending);
        assert_eq!(p.detach(w), 0);
        assert_eq!(p.queued(), 0);
        let queued = p.submit(spec(2), TIMEOUT, LIMITS, Instant::now()).unwrap();
        drop(queued);
        assert_eq!(p.queued(), 0, "a dropped caller's queued task is removed");
    }

    #[test]
    fn draining_takes_no_new_tasks_and_reports_when_empty() {
        let p = pool();
        let (w, mut rx) = attach(&p, 2);
        let _a = p.submit(spec(1), TIMEOUT, LIMITS, Instant::now()).unwrap();
        let d = rx.try_recv().unwrap();
        assert!(!p.drain(w), "still holds one");
        let _b = p.submit(spec(2), TIMEOUT, LIMITS, Instant::now()).unwrap();
        assert!(rx.try_recv().is_err(), "draining: nothing new");
        assert_eq!(p.reply(w, d.task, ok()), (ReplyResult::Answered, true));
        assert_eq!(p.queued(), 1, "the new task waits for another worker");
        let (w2, _rx2) = attach(&p, 1);
        assert!(!p.drain(w2), "the second worker took the queued task");
        assert_eq!(
            p.snapshot(Instant::now()).iter().map(|i| (i.in_flight, i.draining)).collect::<Vec<_>>(),
            [(0, true), (1, true)]
        );
    }

    #[test]
    fn a_gone_session_is_skipped_and_the_task_kept() {
        let p = pool();
        let (w1, rx1) = attach(&p, 1);
        drop(rx1);
        let _t = p.submit(spec(1), TIMEOUT, LIMITS, Instant::now()).unwrap();
        assert_eq!(p.queued(), 1, "the dead session's channel refused it");
        let (_w2, mut rx2) = attach(&p, 1);
        assert_eq!(n(&rx2.try_recv().unwrap()), 1);
        assert_eq!(p.detach(w1), 0);
    }

    #[tokio::test]
    async fn shutdown_fails_queued_tasks() {
        let p = pool();
        let pending = p.submit(spec(1), TIMEOUT, LIMITS, Instant::now()).unwrap();
        let mut closing = p.closing();
        p.shutdown();
        assert_eq!(pending.wait().await, Err(Failure::Shutdown));
        assert!(*closing.borrow_and_update());
        assert_eq!(p.submit(spec(2), TIMEOUT, LIMITS, Instant::now()).unwrap_err(), Failure::Shutdown);
    }
}
