//! What connections count beyond opening: deliveries of stamped
//! publications (fan-out), round trips (rpc), reopenings (churn) and the
//! attempts of hostile clients, with how the gateway ended them (hostile).
//!
//! Each process keeps one [`Counters`] shared by its connection tasks
//! (atomics, and a mutex per histogram). [`Counters::stats`] snapshots the
//! counts as a [`Stats`], the plain serde value a worker process sends its
//! parent every progress tick; [`Counters::histograms`] ships the latency
//! histograms once, at the end. [`Stats`] of several processes add up with
//! [`Stats::merge`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hostile::wire::{Attack, Outcome};
use crate::latency::{self, Recorder};
use crate::stamp::Stamp;

/// Rate steps of one fan-out run at most, warm-up (step 0) included.
pub const MAX_STEPS: usize = 64;

/// Histogram name of fan-out step `k`.
pub fn step_histogram(k: usize) -> String {
    format!("step{k}")
}

/// Histogram name of rpc round trips inside the measuring window.
pub const RPC_HISTOGRAM: &str = "rpc";
/// Histogram name of churn reopenings (connect to 101).
pub const REOPEN_HISTOGRAM: &str = "reopen";

/// Histogram name of the time hostile attempts of `attack` took until the
/// gateway ended them with `outcome` (a label of [`Outcome::label`]).
pub fn hostile_histogram(attack: Attack, outcome: &str) -> String {
    format!("hostile:{attack}:{outcome}")
}

/// Distinct outcome labels kept per attack; further ones count as "other".
const MAX_OUTCOMES: usize = 16;

/// Hostile: one attack's counts so far.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct AttackCounts {
    /// Attempts started.
    pub started: u64,
    /// Attempts finished, by outcome label ([`Outcome::label`]).
    pub outcomes: BTreeMap<String, u64>,
    /// Frames (WebSocket attacks) or writes (HTTP attacks) sent.
    pub frames: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl AttackCounts {
    /// Attempts finished.
    pub fn finished(&self) -> u64 {
        self.outcomes.values().sum()
    }

    fn merge(&mut self, o: &AttackCounts) {
        self.started += o.started;
        self.frames += o.frames;
        self.bytes += o.bytes;
        for (label, n) in &o.outcomes {
            *self.outcomes.entry(label.clone()).or_default() += n;
        }
    }
}

/// Hostile: the live counters of every attack.
#[derive(Debug, Default)]
pub struct HostileCounters {
    started: [AtomicU64; Attack::COUNT],
    frames: [AtomicU64; Attack::COUNT],
    bytes: [AtomicU64; Attack::COUNT],
    /// Finished attempts by attack and outcome label: how many, and how long
    /// they lasted when the gateway ended them.
    outcomes: Mutex<BTreeMap<(Attack, String), (u64, Recorder)>>,
}

impl HostileCounters {
    /// An attempt of `attack` started.
    pub fn started(&self, attack: Attack) {
        self.started[attack.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt of `attack` sent `frames` frames (or writes) of `bytes` bytes in all.
    pub fn sent(&self, attack: Attack, frames: u64, bytes: u64) {
        self.frames[attack.index()].fetch_add(frames, Ordering::Relaxed);
        self.bytes[attack.index()].fetch_add(bytes, Ordering::Relaxed);
    }

    /// An attempt of `attack` ended with `outcome`, `after` its start.
    pub fn ended(&self, attack: Attack, outcome: &Outcome, after: Duration) {
        let mut map = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        let mut label = outcome.label();
        let labels = map.keys().filter(|(a, _)| *a == attack).count();
        if labels >= MAX_OUTCOMES && !map.contains_key(&(attack, label.clone())) {
            label = "other".to_string();
        }
        let entry = map.entry((attack, label)).or_default();
        entry.0 += 1;
        if outcome.by_gateway() {
            entry.1.record_duration(after);
        }
    }

    /// A snapshot, by attack name (attacks never started are left out).
    pub fn counts(&self) -> BTreeMap<String, AttackCounts> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out: BTreeMap<String, AttackCounts> = BTreeMap::new();
        for attack in Attack::ALL {
            let (started, frames) = (load(&self.started[attack.index()]), load(&self.frames[attack.index()]));
            if started > 0 || frames > 0 {
                let bytes = load(&self.bytes[attack.index()]);
                out.insert(
                    attack.name().to_string(),
                    AttackCounts { started, outcomes: BTreeMap::new(), frames, bytes },
                );
            }
        }
        for ((attack, label), (n, _)) in self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.entry(attack.name().to_string()).or_default().outcomes.insert(label.clone(), *n);
        }
        out
    }

    /// The non-empty histograms of times to the gateway's end, by name
    /// ([`hostile_histogram`]).
    fn histograms(&self, out: &mut BTreeMap<String, Vec<(u64, u64)>>) {
        for ((attack, label), (_, r)) in self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if !r.is_empty() {
                out.insert(hostile_histogram(*attack, label), r.pairs());
            }
        }
    }
}

/// Deliveries of one fan-out step, so far.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounts {
    /// Publications received (duplicates excluded).
    pub received: u64,
    /// Of those, how many took longer than the lag threshold.
    pub late: u64,
    /// When the last one arrived, Unix microseconds (0 = none yet).
    pub last_us: u64,
}

/// A snapshot of the counts of one process, or several merged.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct Stats {
    /// Fan-out: deliveries per step (index = step).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepCounts>,
    /// Fan-out: subscribers that have received at least one publication.
    pub ready: u64,
    /// Fan-out: publications a subscriber skipped (a higher sequence number
    /// arrived first); each one either arrives later (`reordered`) or is lost.
    pub gaps: u64,
    /// Fan-out: publications that arrived after a higher sequence number.
    pub reordered: u64,
    /// Fan-out: retransmissions (qos 1 with dup set), not counted as deliveries.
    pub duplicates: u64,
    /// Fan-out: messages that were not stamped publications.
    pub unparsed: u64,
    /// Rpc: round trips completed (all, including outside the window).
    pub rpc_done: u64,
    /// Rpc: round trips completed inside the measuring window.
    pub rpc_window: u64,
    /// Rpc: requests that got no answer in time, or a wrong one.
    pub rpc_failed: u64,
    /// Rpc: processes whose measuring window is over.
    pub rpc_windows_done: u64,
    /// Rpc: the measuring window's length, seconds (the longest over processes).
    pub rpc_window_secs: f64,
    /// Churn: connections closed on schedule.
    pub churn_closed: u64,
    /// Churn: connections reopened.
    pub churn_reopened: u64,
    /// Churn: reopenings that failed.
    pub churn_failed: u64,
    /// Hostile: counts by attack name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hostile: BTreeMap<String, AttackCounts>,
}

impl Stats {
    /// Adds another process's snapshot into this one.
    pub fn merge(&mut self, o: &Stats) {
        if self.steps.len() < o.steps.len() {
            self.steps.resize(o.steps.len(), StepCounts::default());
        }
        for (mine, theirs) in self.steps.iter_mut().zip(&o.steps) {
            mine.received += theirs.received;
            mine.late += theirs.late;
            mine.last_us = mine.last_us.max(theirs.last_us);
        }
        self.ready += o.ready;
        self.gaps += o.gaps;
        self.reordered += o.reordered;
        self.duplicates += o.duplicates;
        self.unparsed += o.unparsed;
        self.rpc_done += o.rpc_done;
        self.rpc_window += o.rpc_window;
        self.rpc_failed += o.rpc_failed;
        self.rpc_windows_done += o.rpc_windows_done;
        self.rpc_window_secs = self.rpc_window_secs.max(o.rpc_window_secs);
        self.churn_closed += o.churn_closed;
        self.churn_reopened += o.churn_reopened;
        self.churn_failed += o.churn_failed;
        for (attack, counts) in &o.hostile {
            self.hostile.entry(attack.clone()).or_default().merge(counts);
        }
    }

    /// The counts of step `k` (zero if none yet).
    pub fn step(&self, k: usize) -> StepCounts {
        self.steps.get(k).copied().unwrap_or_default()
    }
}

/// One fan-out step's live counters.
#[derive(Debug, Default)]
struct Step {
    received: AtomicU64,
    late: AtomicU64,
    last_us: AtomicU64,
}

/// The counters of one process, shared by its connection tasks.
#[derive(Debug)]
pub struct Counters {
    /// Fan-out: a delivery later than this is late, microseconds.
    pub late_us: u64,
    steps: Vec<Step>,
    step_latency: Vec<Recorder>,
    /// Highest step seen + 1.
    steps_used: AtomicU64,
    ready: AtomicU64,
    gaps: AtomicU64,
    reordered: AtomicU64,
    duplicates: AtomicU64,
    unparsed: AtomicU64,
    rpc_done: AtomicU64,
    rpc_window: AtomicU64,
    rpc_failed: AtomicU64,
    /// Rpc: whether round trips are being measured now.
    pub rpc_recording: AtomicBool,
    /// Rpc: whether clients should stop sending.
    pub rpc_stop: AtomicBool,
    rpc_window_done: AtomicBool,
    rpc_window_us: AtomicU64,
    rpc_latency: Recorder,
    churn_closed: AtomicU64,
    churn_reopened: AtomicU64,
    churn_failed: AtomicU64,
    reopen_latency: Recorder,
    /// Churn: failure labels of reopenings.
    pub reopen_errors: Mutex<BTreeMap<String, u64>>,
    /// Hostile: attempts by attack.
    pub hostile: HostileCounters,
}

/// What a subscriber remembers between deliveries: the next sequence number
/// it expects (0 = nothing received yet).
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscriberState {
    next_seq: u64,
}

impl Counters {
    /// Fresh counters; `late` is the fan-out lag threshold.
    pub fn new(late: Duration) -> Counters {
        Counters {
            late_us: latency::micros(late),
            steps: (0..MAX_STEPS).map(|_| Step::default()).collect(),
            step_latency: (0..MAX_STEPS).map(|_| Recorder::new()).collect(),
            steps_used: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            rpc_done: AtomicU64::new(0),
            rpc_window: AtomicU64::new(0),
            rpc_failed: AtomicU64::new(0),
            rpc_recording: AtomicBool::new(false),
            rpc_stop: AtomicBool::new(false),
            rpc_window_done: AtomicBool::new(false),
            rpc_window_us: AtomicU64::new(0),
            rpc_latency: Recorder::new(),
            churn_closed: AtomicU64::new(0),
            churn_reopened: AtomicU64::new(0),
            churn_failed: AtomicU64::new(0),
            reopen_latency: Recorder::new(),
            reopen_errors: Mutex::default(),
            hostile: HostileCounters::default(),
        }
    }

    /// A subscriber received a publication stamped `stamp` at `now_us`.
    pub fn delivered(&self, state: &mut SubscriberState, stamp: Stamp, now_us: u64) {
        let Some(step) = self.steps.get(stamp.step as usize) else {
            self.unparsed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if state.next_seq == 0 {
            self.ready.fetch_add(1, Ordering::Relaxed);
        } else if stamp.seq > state.next_seq {
            self.gaps.fetch_add(stamp.seq - state.next_seq, Ordering::Relaxed);
        } else if stamp.seq < state.next_seq {
            self.reordered.fetch_add(1, Ordering::Relaxed);
        }
        state.next_seq = state.next_seq.max(stamp.seq + 1);
        let us = now_us.saturating_sub(stamp.ts_us);
        step.received.fetch_add(1, Ordering::Relaxed);
        if us > self.late_us {
            step.late.fetch_add(1, Ordering::Relaxed);
        }
        step.last_us.fetch_max(now_us, Ordering::Relaxed);
        self.steps_used.fetch_max(u64::from(stamp.step) + 1, Ordering::Relaxed);
        if let Some(recorder) = self.step_latency.get(stamp.step as usize) {
            recorder.record(us);
        }
    }

    /// A subscriber got a retransmission (counted, not delivered again).
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscriber got something that is not a stamped publication.
    pub fn unparsed(&self) {
        self.unparsed.fetch_add(1, Ordering::Relaxed);
    }

    /// An rpc round trip completed in `rtt`.
    pub fn round_trip(&self, rtt: Duration) {
        self.rpc_done.fetch_add(1, Ordering::Relaxed);
        if self.rpc_recording.load(Ordering::Relaxed) {
            self.rpc_window.fetch_add(1, Ordering::Relaxed);
            self.rpc_latency.record_duration(rtt);
        }
    }

    /// An rpc request failed (no answer in time, or a wrong answer).
    pub fn rpc_failed(&self) {
        self.rpc_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts the rpc measuring window.
    pub fn start_window(&self) {
        self.rpc_recording.store(true, Ordering::Relaxed);
    }

    /// Ends the rpc measuring window, which lasted `length`, and stops the clients.
    pub fn end_window(&self, length: Duration) {
        self.rpc_recording.store(false, Ordering::Relaxed);
        self.rpc_window_us.store(latency::micros(length), Ordering::Relaxed);
        self.rpc_window_done.store(true, Ordering::Relaxed);
        self.rpc_stop.store(true, Ordering::Relaxed);
    }

    /// A churning connection was closed on schedule.
    pub fn churn_closed(&self) {
        self.churn_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// A churning connection was reopened in `took`.
    pub fn churn_reopened(&self, took: Duration) {
        self.churn_reopened.fetch_add(1, Ordering::Relaxed);
        self.reopen_latency.record_duration(took);
    }

    /// A churning connection could not be reopened.
    pub fn churn_failed(&self, label: String) {
        self.churn_failed.fetch_add(1, Ordering::Relaxed);
        crate::engine::bump(&self.reopen_errors, label);
    }

    /// A snapshot of the counts.
    pub fn stats(&self) -> Stats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let used = usize::try_from(load(&self.steps_used)).unwrap_or(MAX_STEPS).min(MAX_STEPS);
        Stats {
            steps: self.steps[..used]
                .iter()
                .map(|s| StepCounts { received: load(&s.received), late: load(&s.late), last_us: load(&s.last_us) })
                .collect(),
            ready: load(&self.ready),
            gaps: load(&self.gaps),
            reordered: load(&self.reordered),
            duplicates: load(&self.duplicates),
            unparsed: load(&self.unparsed),
            rpc_done: load(&self.rpc_done),
            rpc_window: load(&self.rpc_window),
            rpc_failed: load(&self.rpc_failed),
            rpc_windows_done: u64::from(self.rpc_window_done.load(Ordering::Relaxed)),
            rpc_window_secs: load(&self.rpc_window_us) as f64 / 1e6,
            churn_closed: load(&self.churn_closed),
            churn_reopened: load(&self.churn_reopened),
            churn_failed: load(&self.churn_failed),
            hostile: self.hostile.counts(),
        }
    }

    /// Every non-empty latency histogram by name, as `[value, count]` pairs.
    pub fn histograms(&self) -> BTreeMap<String, Vec<(u64, u64)>> {
        let mut out = BTreeMap::new();
        for (k, r) in self.step_latency.iter().enumerate() {
            if !r.is_empty() {
                out.insert(step_histogram(k), r.pairs());
            }
        }
        for (name, r) in [(RPC_HISTOGRAM, &self.rpc_latency), (REOPEN_HISTOGRAM, &self.reopen_latency)] {
            if !r.is_empty() {
                out.insert(name.to_string(), r.pairs());
            }
        }
        self.hostile.histograms(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(seq: u64, step: u32, ts_us: u64) -> Stamp {
        Stamp { seq, step, ts_us }
    }

    #[test]
    fn deliveries_count_latency_gaps_and_reorders() {
        let c = Counters::new(Duration::from_millis(10));
        let mut s = SubscriberState::default();
        c.delivered(&mut s, stamp(5, 0, 1_000), 2_000); // first: ready, no gap
        c.delivered(&mut s, stamp(6, 1, 10_000), 10_500);
        c.delivered(&mut s, stamp(9, 1, 20_000), 40_001); // skipped 7 and 8; late (20 ms)
        c.delivered(&mut s, stamp(7, 1, 15_000), 41_000); // one of them, late: reordered
        let st = c.stats();
        assert_eq!((st.ready, st.gaps, st.reordered), (1, 2, 1));
        assert_eq!(st.steps.len(), 2);
        assert_eq!(st.step(0), StepCounts { received: 1, late: 0, last_us: 2_000 });
        assert_eq!(st.step(1), StepCounts { received: 3, late: 2, last_us: 41_000 });
        assert_eq!(st.step(7), StepCounts::default());
        let h = c.histograms();
        assert_eq!(h.keys().collect::<Vec<_>>(), ["step0", "step1"]);
        assert_eq!(h["step1"].iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn steps_beyond_the_limit_are_not_deliveries() {
        let c = Counters::new(Duration::from_secs(1));
        c.delivered(&mut SubscriberState::default(), stamp(1, MAX_STEPS as u32, 0), 1);
        let st = c.stats();
        assert_eq!((st.unparsed, st.steps.len()), (1, 0));
    }

    #[test]
    fn rpc_window_records_only_while_open() {
        let c = Counters::new(Duration::from_secs(1));
        c.round_trip(Duration::from_micros(100));
        c.start_window();
        c.round_trip(Duration::from_micros(200));
        c.round_trip(Duration::from_micros(300));
        c.end_window(Duration::from_secs(2));
        c.round_trip(Duration::from_micros(400));
        let st = c.stats();
        assert_eq!((st.rpc_done, st.rpc_window, st.rpc_windows_done), (4, 2, 1));
        assert!((st.rpc_window_secs - 2.0).abs() < 1e-9);
        assert!(c.rpc_stop.load(Ordering::Relaxed));
        assert_eq!(c.histograms()[RPC_HISTOGRAM].iter().map(|(_, n)| n).sum::<u64>(), 2);
    }

    #[test]
    fn hostile_attempts_are_counted_by_attack_and_outcome() {
        let c = Counters::new(Duration::from_secs(1));
        c.hostile.started(Attack::RelFlood);
        c.hostile.started(Attack::RelFlood);
        c.hostile.started(Attack::Silent);
        c.hostile.sent(Attack::RelFlood, 50, 450);
        c.hostile.ended(Attack::RelFlood, &Outcome::Closed(Some(1008)), Duration::from_millis(250));
        c.hostile.ended(Attack::Silent, &Outcome::Open { blocked: false }, Duration::from_secs(30));
        let st = c.stats();
        let rel = &st.hostile["rel-flood"];
        assert_eq!((rel.started, rel.frames, rel.bytes, rel.finished()), (2, 50, 450, 1));
        assert_eq!(rel.outcomes["closed 1008"], 1);
        assert_eq!(st.hostile["silent"].outcomes["open"], 1);
        assert!(!st.hostile.contains_key("ping-flood"));
        // Only the gateway's ends are timed.
        let h = c.histograms();
        assert_eq!(h.keys().collect::<Vec<_>>(), ["hostile:rel-flood:closed 1008"]);
        // Labels per attack are capped.
        for code in 0..40u16 {
            c.hostile.ended(Attack::BigHeader, &Outcome::Http(100 + code), Duration::from_millis(1));
        }
        let big = &c.stats().hostile["big-header"];
        assert_eq!(big.outcomes.len(), MAX_OUTCOMES + 1);
        assert_eq!(big.finished(), 40);
        // Snapshots of two processes add up.
        let mut a = c.stats();
        a.merge(&st);
        assert_eq!(a.hostile["rel-flood"].started, 4);
        assert_eq!(a.hostile["rel-flood"].outcomes["closed 1008"], 2);
        let line = serde_json::to_string(&a).expect("serializes");
        assert_eq!(serde_json::from_str::<Stats>(&line).expect("parses"), a);
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_latest_arrival() {
        let mut a = Stats {
            steps: vec![StepCounts { received: 1, late: 0, last_us: 5 }],
            ready: 2,
            rpc_window_secs: 1.5,
            ..Stats::default()
        };
        let b = Stats {
            steps: vec![
                StepCounts { received: 2, late: 1, last_us: 4 },
                StepCounts { received: 7, late: 0, last_us: 9 },
            ],
            ready: 3,
            churn_failed: 1,
            rpc_window_secs: 2.0,
            ..Stats::default()
        };
        a.merge(&b);
        assert_eq!(
            a.steps,
            vec![StepCounts { received: 3, late: 1, last_us: 5 }, StepCounts { received: 7, late: 0, last_us: 9 }]
        );
        assert_eq!((a.ready, a.churn_failed, a.rpc_window_secs), (5, 1, 2.0));
        let line = serde_json::to_string(&a).expect("serializes");
        assert_eq!(serde_json::from_str::<Stats>(&line).expect("parses"), a);
    }
}
