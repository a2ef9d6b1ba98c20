//! Latency histograms: recording from many tasks, shipping between
//! processes, merging and summarising.
//!
//! Values are microseconds in an HDR histogram with 3 significant digits
//! (so a reported figure is within 0.1 % of the true one). A histogram
//! crosses a process boundary as its `[value, count]` pairs
//! ([`Recorder::pairs`]) and is rebuilt with [`merge`].

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::report::Latency;

/// Largest latency recorded, microseconds (one hour); larger ones saturate.
pub const MAX_US: u64 = 3_600_000_000;

/// An empty microsecond histogram.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_US, 3).context("latency histogram")
}

/// Microseconds of a duration, at least 1 (the histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The `[value, count]` pairs of a histogram.
pub fn pairs_of(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

/// Adds `[value, count]` pairs into `h`.
pub fn merge(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value.clamp(1, MAX_US), count);
    }
}

/// Statistics of merged `[value, count]` pair lists.
pub fn summarise<'a>(parts: impl IntoIterator<Item = &'a [(u64, u64)]>) -> anyhow::Result<(Latency, u64)> {
    let mut h = histogram()?;
    for part in parts {
        merge(&mut h, part);
    }
    Ok((Latency::of(&h), h.len()))
}

/// A histogram many tasks record into. Its memory (about 190 KB) is only
/// allocated by the first recording, so unused recorders cost nothing.
#[derive(Debug, Default)]
pub struct Recorder {
    h: Mutex<Option<Histogram<u64>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Records one latency, microseconds (clamped to 1..=[`MAX_US`]).
    pub fn record(&self, us: u64) {
        // A poisoned lock only means a recording thread panicked; the counts are still counts.
        let mut h = self.h.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_none() {
            // Fails only for invalid constant bounds; then nothing is recorded.
            *h = histogram().ok();
        }
        if let Some(h) = h.as_mut() {
            h.saturating_record(us.clamp(1, MAX_US));
        }
    }

    /// Records one duration.
    pub fn record_duration(&self, d: Duration) {
        self.record(micros(d));
    }

    /// The recorded values as `[value, count]` pairs.
    pub fn pairs(&self) -> Vec<(u64, u64)> {
        self.h.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(pairs_of).unwrap_or_default()
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.h.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, Histogram::len)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let r = Recorder::new();
        // 1..=1000 ms, once each.
        for ms in 1..=1000u64 {
            r.record(ms * 1000);
        }
        let (lat, n) = summarise([r.pairs().as_slice()]).expect("summary");
        assert_eq!(n, 1000);
        assert!((lat.p50_ms - 500.0).abs() <= 0.5, "{lat:?}");
        assert!((lat.p99_ms - 990.0).abs() <= 1.0, "{lat:?}");
        assert!((lat.max_ms - 1000.0).abs() <= 1.0, "{lat:?}");
        assert!((lat.mean_ms - 500.5).abs() <= 0.5, "{lat:?}");
    }

    #[test]
    fn merging_parts_equals_recording_all() {
        let (a, b, all) = (Recorder::new(), Recorder::new(), Recorder::new());
        for v in [3u64, 70, 70, 900, 15_000, 2_000_000] {
            a.record(v);
            all.record(v);
        }
        for v in [1u64, 44, 123_456] {
            b.record(v);
            all.record(v);
        }
        let merged = summarise([a.pairs().as_slice(), b.pairs().as_slice()]).expect("merged");
        let direct = summarise([all.pairs().as_slice()]).expect("direct");
        assert_eq!(merged, direct);
        assert_eq!(merged.1, 9);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let r = Recorder::new();
        r.record(0);
        r.record(u64::MAX);
        assert_eq!(r.len(), 2);
        let (lat, _) = summarise([r.pairs().as_slice()]).expect("summary");
        assert!(lat.max_ms >= 3_600_000.0 * 0.999, "{lat:?}");
        assert_eq!(micros(Duration::ZERO), 1);
    }

    #[test]
    fn empty_is_zero() {
        let (lat, n) = summarise(std::iter::empty()).expect("summary");
        assert_eq!((lat, n), (Latency::default(), 0));
        assert!(Recorder::new().is_empty());
    }
}
