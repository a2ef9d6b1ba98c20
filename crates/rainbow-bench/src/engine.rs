//! One process's share of a benchmark.
//!
//! [`run`] opens `count` connections at a paced rate (connection `i` starts no
//! earlier than `i / rate` seconds in), with at most `concurrency` handshakes
//! in flight, and reports through a [`Sink`]:
//!
//! 1. [`Event::Progress`] every 200 ms (opened, failed, dropped so far);
//! 2. [`Event::Opened`] once every open has succeeded or failed, with the
//!    failure labels and the handshake latencies;
//! 3. it then holds the connections until `release` resolves, and
//!    [`Event::Finished`] reports how many were still open then and the
//!    process's own RSS and CPU time, measured before letting them go.
//!
//! What each connection does once open is the plan's [`Behaviour`]: idle
//! (answer pings), subscribe (fan-out), rpc (qos-1 requests, closed loop or
//! paced), churn (close and reopen on a schedule) or hostile (attacks, each
//! attempt on a connection of its own: "opened" then only means started).
//! Behaviours that count more than
//! opens also report [`Event::Stats`] every tick, and their latency
//! histograms in [`Event::Finished`]. Rpc and churn start together once every
//! open has finished (the "go" instant); rpc then measures for a fixed
//! window, timed by this process.
//!
//! The events are plain serde values: a worker process prints them as JSON
//! lines and the parent reads them back (see [`crate::fleet`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::clients::{self, RpcPlan};
use crate::conn::{self, End, Failure, Target, Ws};
use crate::hostile::{self, HostilePlan};
use crate::procfs::{self, Proc};
use crate::sources::Sources;
use crate::stats::{Counters, Stats};

/// Distinct failure labels kept; further ones are counted as "other".
const MAX_LABELS: usize = 32;

/// How often progress is reported.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Largest latency recorded, microseconds (one hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What a connection does once open.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// Nothing but answering pings (`idle`, `connect`).
    Idle,
    /// Receive stamped publications and time them (`fanout`); a delivery
    /// slower than `late` counts as late.
    Subscribe {
        /// The lag threshold.
        late: Duration,
    },
    /// Send qos-1 requests in a closed loop (`rpc`).
    Rpc(RpcPlan),
    /// Close and reopen every `period`, spread evenly over the connections (`churn`).
    Churn {
        /// Each connection's life between reopenings.
        period: Duration,
    },
    /// Cycle through attacks on the gateway (`hostile`); no WebSocket is
    /// opened for it beforehand, each attempt opens its own connection.
    Hostile(Box<HostilePlan>),
}

/// What one process should open.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Where to connect: connection i (global number) goes to `targets[i % len]`.
    pub targets: Vec<Arc<Target>>,
    /// How many connections.
    pub count: usize,
    /// Global number of this share's first connection (device ids, source choice).
    pub first_index: usize,
    /// Connections started per second; 0 = as fast as `concurrency` allows.
    pub rate: f64,
    /// Handshakes in flight at most.
    pub concurrency: usize,
    /// Source addresses, picked round robin by global connection number.
    pub sources: Sources,
    /// Longest one open (connect + handshake) may take.
    pub handshake_timeout: Duration,
    /// Device ids are `{device_prefix}-{n}`.
    pub device_prefix: String,
    /// What each connection does once open.
    pub behaviour: Behaviour,
}

/// Counts so far.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Connections opened.
    pub ok: u64,
    /// Connections that could not be opened.
    pub failed: u64,
    /// Opened connections that have since ended.
    pub dropped: u64,
}

impl std::ops::Add for Progress {
    type Output = Progress;
    fn add(self, o: Progress) -> Progress {
        Progress { ok: self.ok + o.ok, failed: self.failed + o.failed, dropped: self.dropped + o.dropped }
    }
}

/// The outcome of the opening phase.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Opened {
    /// Connections opened.
    pub ok: u64,
    /// Connections that could not be opened.
    pub failed: u64,
    /// Seconds from the first start to the last open finishing.
    pub open_secs: f64,
    /// Failures by label.
    pub errors: BTreeMap<String, u64>,
    /// Handshake latencies of opened connections, microseconds: `[value, count]` pairs.
    pub latency_us: Vec<(u64, u64)>,
}

/// The state at release.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Finished {
    /// Connections still open when released.
    pub alive: u64,
    /// Opened connections that ended before the release.
    pub dropped: u64,
    /// Those ends by label.
    pub drops: BTreeMap<String, u64>,
    /// This process's resident set at release, KiB.
    pub rss_kib: u64,
    /// This process's peak resident set, KiB.
    pub peak_rss_kib: u64,
    /// This process's user + system CPU seconds at release.
    pub cpu_seconds: f64,
    /// Latency histograms of the behaviour, by name (see [`crate::stats`]),
    /// as `[value, count]` pairs in microseconds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub histograms: BTreeMap<String, Vec<(u64, u64)>>,
    /// Failures of the behaviour by label (churn: reopenings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u64>,
}

/// What [`run`] reports.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Counts so far.
    Progress(Progress),
    /// Every open has finished.
    Opened(Opened),
    /// The behaviour's counts so far (not sent by idle connections).
    Stats(Stats),
    /// Released; the process's final figures.
    Finished(Finished),
}

/// Where events go.
pub type Sink = Arc<dyn Fn(Event) + Send + Sync>;

/// Counts one more `label` in `map`, keeping at most [`MAX_LABELS`] labels.
pub fn bump(map: &Mutex<BTreeMap<String, u64>>, label: String) {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = if map.len() >= MAX_LABELS && !map.contains_key(&label) { "other".to_string() } else { label };
    *map.entry(key).or_default() += 1;
}

/// Counters shared by the connection tasks.
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    drops: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    counters: Counters,
}

impl Tally {
    fn new(behaviour: &Behaviour) -> anyhow::Result<Tally> {
        let late = match behaviour {
            Behaviour::Subscribe { late } => *late,
            _ => Duration::from_secs(1),
        };
        Ok(Tally {
            counters: Counters::new(late),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: Mutex::default(),
            drops: Mutex::default(),
            latency: Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("latency histogram")?),
        })
    }

    fn opened(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(us);
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, failure: &Failure) {
        bump(&self.errors, failure.label());
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self, end: &conn::End) {
        bump(&self.drops, end.label());
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn progress(&self) -> Progress {
        Progress {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn opened_report(&self, open_secs: f64) -> Opened {
        let p = self.progress();
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        Opened {
            ok: p.ok,
            failed: p.failed,
            open_secs,
            errors: self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            latency_us: latency.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect(),
        }
    }

    fn finished_report(&self) -> Finished {
        let p = self.progress();
        let mem = procfs::memory(Proc::Current).unwrap_or_default();
        Finished {
            alive: p.ok.saturating_sub(p.dropped),
            dropped: p.dropped,
            drops: self.drops.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            rss_kib: mem.rss_kib,
            peak_rss_kib: mem.peak_kib,
            cpu_seconds: procfs::cpu_seconds(Proc::Current).unwrap_or(0.0),
            histograms: self.counters.histograms(),
            failures: self.counters.reopen_errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// Everything one connection needs to open; dropped once it is open
/// (except by churning connections, which reopen).
struct Opening {
    target: Arc<Target>,
    source: Option<IpAddr>,
    device_id: String,
    timeout: Duration,
}

impl Opening {
    async fn open(&self) -> Result<Ws, Failure> {
        match tokio::time::timeout(self.timeout, conn::open(&self.target, self.source, &self.device_id)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        }
    }
}

/// What a connection task needs besides its opening.
struct Role {
    behaviour: Arc<Behaviour>,
    /// When every open of this process finished (set once).
    go: watch::Receiver<Option<Instant>>,
    /// Churn, paced rpc, hostile: this connection's offset into the period.
    phase: Duration,
}

/// One connection's task: open, then run the behaviour until the gateway
/// ends it or the task is aborted at release.
async fn connection(opening: Opening, permit: OwnedSemaphorePermit, tally: Arc<Tally>, role: Role) {
    let started = Instant::now();
    // Boxed so the handshake's state lives on the heap only while it runs and
    // the task's stored future stays small for the idle phase. Counted before
    // the permit goes back: all permits back means all opens counted.
    let mut ws = match Box::pin(opening.open()).await {
        Ok(ws) => ws,
        Err(failure) => {
            tally.failed(&failure);
            drop(permit);
            return;
        }
    };
    tally.opened(started.elapsed());
    drop(permit);
    // The stream stays in this one place; the behaviours only borrow it.
    // Behaviours other than idle are boxed for the same reason as the open.
    let end = match &*role.behaviour {
        Behaviour::Idle => {
            drop(opening);
            conn::idle(&mut ws).await
        }
        Behaviour::Subscribe { .. } => {
            drop(opening);
            Box::pin(clients::subscribe(&mut ws, &tally.counters)).await
        }
        Behaviour::Rpc(plan) => {
            drop(opening);
            Box::pin(clients::rpc(&mut ws, plan, role.go.clone(), role.phase, &tally.counters)).await
        }
        Behaviour::Churn { period } => Box::pin(churn(ws, opening, *period, role, &tally)).await,
        // Started by `hostile_connection` instead.
        Behaviour::Hostile(_) => End::Error("a hostile connection has no WebSocket of its own".to_string()),
    };
    tally.ended(&end);
}

/// A hostile connection's task: each attempt connects by itself, so the
/// connection counts as opened at once, then cycles until aborted.
/// `index` is the connection's global number (it decides its first attack).
async fn hostile_connection(
    opening: Opening,
    permit: OwnedSemaphorePermit,
    tally: Arc<Tally>,
    role: Role,
    index: usize,
) {
    tally.opened(Duration::ZERO);
    drop(permit);
    let Behaviour::Hostile(plan) = &*role.behaviour else { return };
    let origin = hostile::attack::Origin {
        target: opening.target,
        source: opening.source,
        device_id: opening.device_id,
        handshake_timeout: opening.timeout,
        index,
        start_after: role.phase,
    };
    Box::pin(hostile::attack::cycle(origin, plan, &tally.counters.hostile)).await;
}

/// Closes a connection politely: a close frame, then reading until the
/// gateway's close arrives and the stream ends (bounded).
async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// A churning connection: idles until its turn in each period, closes and
/// reopens. A reopening that fails is retried at the next turn. Returns only
/// if the gateway ends the connection by itself.
async fn churn(mut ws: Ws, opening: Opening, period: Duration, role: Role, tally: &Tally) -> End {
    let mut go = role.go.clone();
    let Ok(go_at) = go.wait_for(Option::is_some).await.map(|g| g.unwrap_or_else(Instant::now)) else {
        return conn::idle(&mut ws).await;
    };
    let period = period.max(Duration::from_millis(10));
    let mut turn = go_at + role.phase;
    let mut current = Some(ws);
    loop {
        while turn <= Instant::now() {
            turn += period;
        }
        match current.as_mut() {
            Some(ws) => {
                tokio::select! {
                    end = conn::idle(ws) => return end,
                    _ = tokio::time::sleep_until(turn.into()) => {}
                }
            }
            None => tokio::time::sleep_until(turn.into()).await,
        }
        if let Some(ws) = current.take() {
            close(ws).await;
            tally.counters.churn_closed();
        }
        let started = Instant::now();
        match opening.open().await {
            Ok(ws) => {
                tally.counters.churn_reopened(started.elapsed());
                current = Some(ws);
            }
            Err(failure) => tally.counters.churn_failed(failure.label()),
        }
    }
}

/// Opens the plan's connections, reports, holds them until `release`
/// resolves, reports again and closes them.
pub async fn run(plan: Plan, sink: Sink, release: impl Future<Output = ()>) -> anyhow::Result<()> {
    if plan.targets.is_empty() {
        anyhow::bail!("the plan names no gateway URL");
    }
    let tally = Arc::new(Tally::new(&plan.behaviour)?);
    let counting = plan.behaviour != Behaviour::Idle;
    let reporter = {
        let (tally, sink) = (tally.clone(), sink.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tick.tick().await;
                sink(Event::Progress(tally.progress()));
                if counting {
                    sink(Event::Stats(tally.counters.stats()));
                }
            }
        })
    };
    let behaviour = Arc::new(plan.behaviour.clone());
    let (go_tx, go_rx) = watch::channel(None);
    let concurrency = plan.concurrency.clamp(1, 1 << 20);
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut conns = JoinSet::new();
    let start = Instant::now();
    let period = match &plan.behaviour {
        Behaviour::Churn { period } => *period,
        Behaviour::Rpc(rpc) => rpc.interval.unwrap_or_default(),
        Behaviour::Hostile(h) => Duration::from_secs_f64(h.attack_secs.clamp(0.0, 1e7)),
        _ => Duration::ZERO,
    };
    for i in 0..plan.count {
        if plan.rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / plan.rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let permit = gate.clone().acquire_owned().await.context("handshake gate closed")?;
        let index = plan.first_index + i;
        let opening = Opening {
            // Not empty: checked at the top.
            target: plan.targets[index % plan.targets.len()].clone(),
            source: plan.sources.pick(index),
            device_id: format!("{}-{index}", plan.device_prefix),
            timeout: plan.handshake_timeout,
        };
        let role = Role {
            behaviour: behaviour.clone(),
            go: go_rx.clone(),
            phase: period.mul_f64(i as f64 / plan.count.max(1) as f64),
        };
        if matches!(plan.behaviour, Behaviour::Hostile(_)) {
            conns.spawn(hostile_connection(opening, permit, tally.clone(), role, index));
        } else {
            conns.spawn(connection(opening, permit, tally.clone(), role));
        }
        // Forget tasks that already ended (failed opens).
        while conns.try_join_next().is_some() {}
    }
    // Every permit back means every open has finished.
    let all = u32::try_from(concurrency).context("concurrency too large")?;
    let _all_opens_done = gate.acquire_many(all).await.context("handshake gate closed")?;
    sink(Event::Opened(tally.opened_report(start.elapsed().as_secs_f64())));
    // Nobody may be waiting (idle connections): that is fine.
    let _ = go_tx.send(Some(Instant::now()));
    let window = match &plan.behaviour {
        Behaviour::Rpc(rpc) => {
            let (tally, warmup, measure) = (tally.clone(), rpc.warmup, rpc.measure);
            Some(tokio::spawn(async move {
                tokio::time::sleep(warmup).await;
                tally.counters.start_window();
                let opened = Instant::now();
                tokio::time::sleep(measure).await;
                tally.counters.end_window(opened.elapsed());
            }))
        }
        _ => None,
    };

    release.await;
    let finished = tally.finished_report();
    reporter.abort();
    if let Some(window) = window {
        window.abort();
    }
    conns.shutdown().await;
    sink(Event::Progress(tally.progress()));
    if counting {
        sink(Event::Stats(tally.counters.stats()));
    }
    sink(Event::Finished(finished));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json_lines() {
        let events = vec![
            Event::Progress(Progress { ok: 3, failed: 1, dropped: 0 }),
            Event::Opened(Opened {
                ok: 3,
                failed: 1,
                open_secs: 0.5,
                errors: [("http 503".to_string(), 1)].into(),
                latency_us: vec![(120, 2), (900, 1)],
            }),
            Event::Stats(Stats { ready: 4, rpc_window: 9, ..Stats::default() }),
            Event::Finished(Finished { alive: 3, rss_kib: 1000, cpu_seconds: 0.25, ..Default::default() }),
            Event::Finished(Finished {
                alive: 1,
                histograms: [("step1".to_string(), vec![(250, 7)])].into(),
                ..Default::default()
            }),
        ];
        for event in events {
            let line = serde_json::to_string(&event).expect("serializes");
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Event>(&line).expect("parses"), event);
        }
    }

    /// An idle connection's task keeps this future for its whole life: keep
    /// it small (the handshake's state is boxed and gone by then).
    #[tokio::test]
    async fn idle_connection_future_stays_small() {
        let target = Arc::new(Target::resolve("ws://127.0.0.1:9/").await.expect("resolves"));
        let opening = Opening { target, source: None, device_id: String::new(), timeout: Duration::from_secs(1) };
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.expect("permit");
        let role = Role { behaviour: Arc::new(Behaviour::Idle), go: watch::channel(None).1, phase: Duration::ZERO };
        let task = connection(opening, permit, Arc::new(Tally::new(&Behaviour::Idle).expect("tally")), role);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2 * std::mem::size_of::<Ws>(), "connection future is {size} bytes");
    }

    #[test]
    fn failure_labels_are_capped() {
        let map = Mutex::default();
        for i in 0..100 {
            bump(&map, format!("label {i}"));
        }
        let map = map.into_inner().expect("not poisoned");
        assert_eq!(map.len(), MAX_LABELS + 1);
        assert_eq!(map["other"], 100 - MAX_LABELS as u64);
    }
}
