//! `rainbow-bench churn`: hold N connections while closing and reopening a
//! fraction of them every second, and watch the gateway's resident memory.
//!
//! Every connection (the [`Behaviour::Churn`] behaviour) is closed and
//! reopened once per period = 1 / `--fraction` seconds, at its own offset in
//! the period, so the closes are spread evenly: N × fraction per second. The
//! gateway's `VmRSS` is sampled every `--sample-every` seconds; the result
//! compares the end of the run with the sample at `--baseline-at` seconds (the
//! first minute by default), which is after allocator pools and maps have
//! grown to the steady-state size. Growth beyond that means memory kept per
//! closed connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::cli::{ChurnArgs, seconds};
use crate::engine::Behaviour;
use crate::fleet::split;
use crate::latency;

use crate::procfs;
use crate::progress::Bars;
use crate::report::{self, Latency, round1, round3};
use crate::runs::{gateway_cpu, gateway_memory, load_spec_for, open_all, own_figures, start};
use crate::stats::REOPEN_HISTOGRAM;

/// One RSS sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the churn started.
    pub t: f64,
    /// Gateway `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Connections reopened so far.
    pub reopened: u64,
    /// Reopenings failed so far.
    pub failed: u64,
}

/// The result of `rainbow-bench churn`.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnResult {
    /// Always `"churn"`.
    pub bench: &'static str,
    /// The gateway URL.
    pub url: String,
    /// The gateway's process id.
    pub pid: u32,
    /// Connections asked for.
    pub connections: u64,
    /// Connections opened at the start.
    pub connections_ok: u64,
    /// Connections that could not be opened at the start.
    pub connections_failed: u64,
    /// Fraction of the connections reopened per second.
    pub fraction: f64,
    /// Reopenings per second asked for (connections × fraction).
    pub churn_per_sec: f64,
    /// Seconds of churn.
    pub duration_secs: f64,
    /// Bench processes (1, or the parent plus its workers).
    pub processes: usize,
    /// Gateway RSS with every connection open, before the churn, KiB.
    pub rss_start_kib: u64,
    /// Gateway RSS at the baseline sample, KiB.
    pub rss_baseline_kib: u64,
    /// Seconds into the churn of the baseline sample.
    pub baseline_at: f64,
    /// Gateway RSS at the end, KiB.
    pub rss_end_kib: u64,
    /// Highest sampled gateway RSS, KiB.
    pub rss_max_kib: u64,
    /// rss_end / rss_baseline.
    pub rss_end_over_baseline: f64,
    /// (rss_end − rss_baseline) / rss_baseline × 100.
    pub rss_growth_percent: f64,
    /// Connections closed on schedule.
    pub closed: u64,
    /// Connections reopened.
    pub reopened: u64,
    /// Handshake failures: at the start plus reopenings.
    pub handshake_failures: u64,
    /// Reopening failures by label.
    pub reopen_errors: BTreeMap<String, u64>,
    /// Reopening latency (connect to 101).
    pub reopen_latency: Latency,
    /// Connections the gateway ended by itself.
    pub connections_dropped: u64,
    /// Gateway CPU seconds during the churn.
    pub gateway_cpu_seconds: f64,
    /// Non-idle CPU seconds of the whole machine during the churn (every process).
    pub machine_cpu_seconds: f64,
    /// The bench's own RSS (all its processes) at the end, KiB.
    pub bench_rss_kib: u64,
    /// The bench's own CPU seconds (all its processes).
    pub bench_cpu_seconds: f64,
    /// Every RSS sample.
    pub samples: Vec<Sample>,
    /// Seconds the whole run took.
    pub elapsed: f64,
    /// Open failures at the start by label.
    pub errors: BTreeMap<String, u64>,
}

/// The baseline sample: the first at or after `at` seconds (or the last one).
pub fn baseline(samples: &[Sample], at: f64) -> Option<Sample> {
    samples.iter().find(|s| s.t >= at).or(samples.last()).copied()
}

/// `rainbow-bench churn`.
pub async fn churn(args: &ChurnArgs) -> anyhow::Result<ChurnResult> {
    let started = Instant::now();
    if !(args.fraction.is_finite() && args.fraction > 0.0 && args.fraction <= 10.0) {
        bail!("--fraction must be above 0 and at most 10 (per second)");
    }
    let duration = seconds("duration", args.duration)?;
    let every = seconds("sample-every", args.sample_every)?.max(Duration::from_millis(200));
    let period = Duration::from_secs_f64(1.0 / args.fraction);
    let bars = Bars::new(!args.load.no_progress);
    gateway_memory(args.pid)?;
    let (spec, per_process) = load_spec_for(&args.load, &args.load.urls, Behaviour::Churn { period }).await?;
    let shares = split(args.load.connections, args.load.rate, per_process);
    let mut fleet = start(&spec, &shares)?;
    let opened = open_all(&mut fleet, bars, "connecting", args.load.connections).await?;
    let rss_start = gateway_memory(args.pid)?.rss_kib;
    let cpu0 = gateway_cpu(args.pid)?;
    let machine0 = procfs::machine_cpu_seconds().unwrap_or(0.0);

    let bar = bars.seconds("churning", duration.as_secs());
    let churn_start = Instant::now();
    let mut samples = Vec::new();
    let mut next = tokio::time::Instant::now() + every;
    let end = tokio::time::Instant::now() + duration;
    loop {
        let at = next.min(end);
        fleet.wait_until(at, |_| false, |_| {}).await?;
        let stats = fleet.stats();
        let rss = gateway_memory(args.pid)?.rss_kib;
        let sample = Sample {
            t: round3(churn_start.elapsed().as_secs_f64()),
            rss_kib: rss,
            reopened: stats.churn_reopened,
            failed: stats.churn_failed,
        };
        bar.set_position(churn_start.elapsed().as_secs().min(duration.as_secs()));
        bar.set_message(format!(
            "gateway RSS {rss} KiB, {} reopened, {} failed",
            stats.churn_reopened, stats.churn_failed
        ));
        samples.push(sample);
        if at >= end {
            break;
        }
        next += every;
    }
    bar.finish();
    let cpu1 = gateway_cpu(args.pid)?;
    let machine1 = procfs::machine_cpu_seconds().unwrap_or(0.0);
    let stats = fleet.stats();
    let finished = fleet.release().await?;
    let finish = report::merge_finished(&finished);
    let (bench_rss_kib, _, bench_cpu_seconds) = own_figures(&fleet, &finish);
    let parts: Vec<&[(u64, u64)]> =
        finished.iter().filter_map(|f| f.histograms.get(REOPEN_HISTOGRAM)).map(Vec::as_slice).collect();
    let (reopen_latency, _) = latency::summarise(parts)?;
    let base =
        baseline(&samples, args.baseline_at).unwrap_or(Sample { t: 0.0, rss_kib: rss_start, reopened: 0, failed: 0 });
    let last = samples.last().copied().unwrap_or(base);
    let ratio = if base.rss_kib > 0 { last.rss_kib as f64 / base.rss_kib as f64 } else { 0.0 };
    let mut reopen_errors: BTreeMap<String, u64> = BTreeMap::new();
    for f in &finished {
        for (label, n) in &f.failures {
            *reopen_errors.entry(label.clone()).or_default() += n;
        }
    }
    bars.note(&format!(
        "churn: {} connections, {:.0} reopenings/s for {:.0} s: gateway RSS {} KiB at {:.0} s, {} KiB at the end ({:+.1} %), {} handshake failures",
        opened.ok,
        args.load.connections as f64 * args.fraction,
        duration.as_secs_f64(),
        base.rss_kib,
        base.t,
        last.rss_kib,
        (ratio - 1.0) * 100.0,
        opened.failed + stats.churn_failed
    ));
    Ok(ChurnResult {
        bench: "churn",
        url: args.load.url_label(),
        pid: args.pid,
        connections: args.load.connections as u64,
        connections_ok: opened.ok,
        connections_failed: opened.failed,
        fraction: args.fraction,
        churn_per_sec: round1(args.load.connections as f64 * args.fraction),
        duration_secs: round3(duration.as_secs_f64()),
        processes: fleet.processes() + usize::from(!fleet.is_local()),
        rss_start_kib: rss_start,
        rss_baseline_kib: base.rss_kib,
        baseline_at: base.t,
        rss_end_kib: last.rss_kib,
        rss_max_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(rss_start),
        rss_end_over_baseline: round3(ratio),
        rss_growth_percent: round3((ratio - 1.0) * 100.0),
        closed: stats.churn_closed,
        reopened: stats.churn_reopened,
        handshake_failures: opened.failed + stats.churn_failed,
        reopen_errors,
        reopen_latency,
        connections_dropped: finish.dropped,
        gateway_cpu_seconds: round3(cpu1 - cpu0),
        machine_cpu_seconds: round3(machine1 - machine0),
        bench_rss_kib,
        bench_cpu_seconds: round3(bench_cpu_seconds),
        samples,
        elapsed: round3(started.elapsed().as_secs_f64()),
        errors: opened.errors,
    })
}
