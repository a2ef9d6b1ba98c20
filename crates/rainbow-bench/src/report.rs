//! The JSON results, one line per run, and how shares are merged into them.
//!
//! Field names are the interface of the `bench/` scripts and of
//! `docs/PERFORMANCE.md`: add fields, do not rename them. Sizes are KiB as
//! `/proc` reports them, except `rss_per_connection_bytes`; times are seconds
//! except latencies, which are milliseconds.

use std::collections::BTreeMap;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::{Finished, Opened};

/// Rounds to one decimal, for readable JSON.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The opening phase of every share, merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenTotals {
    /// Connections opened.
    pub ok: u64,
    /// Connections that could not be opened.
    pub failed: u64,
    /// The longest share's opening time, seconds.
    pub open_secs: f64,
    /// Failures by label.
    pub errors: BTreeMap<String, u64>,
    /// Handshake latency statistics.
    pub latency: Latency,
}

/// Handshake latency statistics, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Statistics of a microsecond histogram.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| round3(us as f64 / 1000.0);
        Latency {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: round3(h.mean() / 1000.0),
        }
    }
}

/// Merges the opening reports of every share.
pub fn merge_opened(parts: &[Opened]) -> anyhow::Result<OpenTotals> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("latency histogram")?;
    let mut totals = OpenTotals::default();
    for part in parts {
        totals.ok += part.ok;
        totals.failed += part.failed;
        totals.open_secs = totals.open_secs.max(part.open_secs);
        for (label, n) in &part.errors {
            *totals.errors.entry(label.clone()).or_default() += n;
        }
        for &(value, count) in &part.latency_us {
            h.saturating_record_n(value, count);
        }
    }
    totals.latency = Latency::of(&h);
    Ok(totals)
}

/// The final reports of every share, merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinishTotals {
    /// Connections open at release.
    pub alive: u64,
    /// Connections that ended before release.
    pub dropped: u64,
    /// Those ends by label.
    pub drops: BTreeMap<String, u64>,
    /// Sum of the processes' RSS at release, KiB.
    pub rss_kib: u64,
    /// Sum of the processes' peak RSS, KiB.
    pub peak_rss_kib: u64,
    /// Sum of the processes' CPU seconds.
    pub cpu_seconds: f64,
}

/// Merges the final reports of every share.
pub fn merge_finished(parts: &[Finished]) -> FinishTotals {
    let mut t = FinishTotals::default();
    for part in parts {
        t.alive += part.alive;
        t.dropped += part.dropped;
        t.rss_kib += part.rss_kib;
        t.peak_rss_kib += part.peak_rss_kib;
        t.cpu_seconds += part.cpu_seconds;
        for (label, n) in &part.drops {
            *t.drops.entry(label.clone()).or_default() += n;
        }
    }
    t
}

/// The result of `rainbow-bench idle`.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Always `"idle"`.
    pub bench: &'static str,
    /// The gateway URL.
    pub url: String,
    /// The gateway's process id.
    pub pid: u32,
    /// Connections asked for.
    pub connections: u64,
    /// Connections opened.
    pub connections_ok: u64,
    /// Connections that could not be opened.
    pub connections_failed: u64,
    /// Opened connections that ended during the hold.
    pub connections_dropped: u64,
    /// Connections open when `rss_after_kib` was read.
    pub connections_held: u64,
    /// Connections started per second (0 = unpaced).
    pub rate: f64,
    /// Source addresses used.
    pub sources: usize,
    /// Bench processes (1, or the parent plus its workers).
    pub processes: usize,
    /// Seconds the connections were held idle after the last one opened.
    pub hold_secs: u64,
    /// Warm-up connections opened and closed before `rss_before_kib`.
    pub warmup: u64,
    /// Gateway `VmRSS` after the warm-up, KiB.
    pub rss_before_kib: u64,
    /// Gateway `VmRSS` at the end of the hold, KiB.
    pub rss_after_kib: u64,
    /// Highest gateway `VmRSS` seen during the hold (sampled each second), KiB.
    pub rss_max_during_hold_kib: u64,
    /// Gateway `VmHWM` (peak RSS since start) at the end of the hold, KiB.
    pub rss_peak_kib: u64,
    /// Gateway `RssAnon` after the warm-up, KiB.
    pub rss_anon_before_kib: u64,
    /// Gateway `RssAnon` at the end of the hold, KiB.
    pub rss_anon_after_kib: u64,
    /// `(rss_after - rss_before) * 1024 / connections_held`; null if none held.
    /// User-space memory only: kernel socket buffers are not in RSS.
    pub rss_per_connection_bytes: Option<f64>,
    /// Gateway CPU seconds used from the warm-up's end to the hold's end.
    pub gateway_cpu_seconds: f64,
    /// Seconds the opening phase took.
    pub open_secs: f64,
    /// Handshake latency statistics.
    pub latency: Latency,
    /// Seconds the whole run took.
    pub elapsed: f64,
    /// The bench's own RSS (all its processes) at the end of the hold, KiB.
    pub bench_rss_kib: u64,
    /// The bench's own peak RSS (all its processes), KiB.
    pub bench_peak_rss_kib: u64,
    /// The bench's own CPU seconds (all its processes).
    pub bench_cpu_seconds: f64,
    /// Open failures by label.
    pub errors: BTreeMap<String, u64>,
    /// Ends during the hold by label.
    pub drops: BTreeMap<String, u64>,
}

/// The result of `rainbow-bench connect`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectResult {
    /// Always `"connect"`.
    pub bench: &'static str,
    /// The gateway URL.
    pub url: String,
    /// Connections asked for.
    pub connections: u64,
    /// Connections opened.
    pub connections_ok: u64,
    /// Connections that could not be opened.
    pub connections_failed: u64,
    /// Target rate, connections started per second (0 = unpaced).
    pub rate: f64,
    /// Handshakes in flight at most, per process.
    pub concurrency: usize,
    /// Source addresses used.
    pub sources: usize,
    /// Bench processes (1, or the parent plus its workers).
    pub processes: usize,
    /// Successful handshakes per second over the opening phase.
    pub handshakes_per_sec: f64,
    /// Median handshake latency (TCP connect to 101 received), ms.
    pub latency_p50_ms: f64,
    /// 90th percentile handshake latency, ms.
    pub latency_p90_ms: f64,
    /// 99th percentile handshake latency, ms.
    pub latency_p99_ms: f64,
    /// Largest handshake latency, ms.
    pub latency_max_ms: f64,
    /// Mean handshake latency, ms.
    pub latency_mean_ms: f64,
    /// Seconds the opening phase took.
    pub open_secs: f64,
    /// Seconds the whole run took.
    pub elapsed: f64,
    /// Gateway CPU seconds during the opening phase (with `--pid`).
    pub gateway_cpu_seconds: Option<f64>,
    /// Gateway `VmRSS` before, KiB (with `--pid`).
    pub gateway_rss_before_kib: Option<u64>,
    /// Gateway `VmRSS` with every connection open, KiB (with `--pid`).
    pub gateway_rss_after_kib: Option<u64>,
    /// The bench's own RSS (all its processes) with every connection open, KiB.
    pub bench_rss_kib: u64,
    /// The bench's own CPU seconds (all its processes).
    pub bench_cpu_seconds: f64,
    /// Open failures by label.
    pub errors: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_sums_counts_and_histograms() {
        let a = Opened {
            ok: 2,
            failed: 1,
            open_secs: 1.5,
            errors: [("timeout".to_string(), 1)].into(),
            latency_us: vec![(1000, 1), (3000, 1)],
        };
        let b = Opened {
            ok: 2,
            failed: 2,
            open_secs: 2.5,
            errors: [("timeout".to_string(), 1), ("http 503".to_string(), 1)].into(),
            latency_us: vec![(2000, 1), (100_000, 1)],
        };
        let t = merge_opened(&[a, b]).expect("merges");
        assert_eq!((t.ok, t.failed, t.open_secs), (4, 3, 2.5));
        assert_eq!(t.errors["timeout"], 2);
        assert_eq!(t.errors["http 503"], 1);
        assert!((t.latency.p50_ms - 2.0).abs() < 0.01, "{:?}", t.latency);
        assert!((t.latency.max_ms - 100.0).abs() < 0.1, "{:?}", t.latency);
        let f = merge_finished(&[
            Finished { alive: 2, rss_kib: 10, cpu_seconds: 0.5, ..Default::default() },
            Finished { alive: 1, dropped: 1, drops: [("eof".to_string(), 1)].into(), rss_kib: 5, ..Default::default() },
        ]);
        assert_eq!((f.alive, f.dropped, f.rss_kib), (3, 1, 15));
        assert_eq!(f.drops["eof"], 1);
    }

    #[test]
    fn empty_latency_is_zero() {
        assert_eq!(merge_opened(&[]).expect("merges").latency, Latency::default());
    }
}
