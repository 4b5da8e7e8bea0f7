//! Latency histograms, batch sizes and rate-limited logging.
//!
//! This module owns how ssdaq measures itself: HDR histograms of the time a
//! datagram spends in each stage, the distribution of receive batch sizes,
//! and the habit of logging a recurring problem at most once per interval
//! with a count of what was not logged. Recording is a few array increments:
//! no allocation, no lock, no syscall. It never decides anything about data.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Largest latency recorded exactly: 60 s (longer values are clamped).
const MAX_NS: u64 = 60_000_000_000;

/// Significant digits of the latency histograms: 1 % resolution (a value
/// near 20 µs lands in a bucket 128 ns wide). With 3 digits each histogram
/// was ~210 KB; with 2 it is ~30 KB, so the eight of them stay in cache
/// beside the event buffers (the build core's L2 is 1 MiB here).
const SIGNIFICANT_DIGITS: u8 = 2;

/// Latency of one stage, in ns: the current interval (for the periodic
/// status line) and everything before it (for the end-of-run summary).
/// Each sample is recorded once, into the interval; an interval is folded
/// into the total when it is taken.
pub struct Latency {
    pub name: &'static str,
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

impl Latency {
    pub fn new(name: &'static str) -> Latency {
        let h = || {
            Histogram::new_with_bounds(1, MAX_NS, SIGNIFICANT_DIGITS)
                .expect("valid histogram bounds")
        };
        Latency {
            name,
            total: h(),
            interval: h(),
        }
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.interval.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Quantiles since the start.
    pub fn total(&self) -> Quantiles {
        if self.interval.is_empty() {
            return Quantiles::of(&self.total);
        }
        let mut all = self.total.clone();
        // Cannot fail: both histograms have the same bounds.
        let _ = all.add(&self.interval);
        Quantiles::of(&all)
    }

    /// Quantiles since the last call, then starts a new interval.
    pub fn take_interval(&mut self) -> Quantiles {
        let q = Quantiles::of(&self.interval);
        // Cannot fail: both histograms have the same bounds.
        let _ = self.total.add(&self.interval);
        self.interval.reset();
        q
    }
}

/// Upper bounds of the latency buckets exported to Prometheus, ns: 1 µs to
/// 1 s in 1-2-5 steps.
pub const BUCKETS_NS: [u64; 19] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
];

/// A latency histogram in Prometheus's shape: cumulative counts at each
/// bound of [`BUCKETS_NS`], the count and the sum of everything recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    pub le: [u64; BUCKETS_NS.len()],
    pub count: u64,
    pub sum_ns: f64,
}

impl Latency {
    /// Everything recorded so far, in Prometheus buckets. Walks the
    /// histograms' recorded values once (no allocation, no copy).
    pub fn buckets(&self) -> Buckets {
        let mut b = Buckets::default();
        for h in [&self.total, &self.interval] {
            for v in h.iter_recorded() {
                let (at, n) = (v.value_iterated_to(), v.count_at_value());
                b.count += n;
                b.sum_ns += h.median_equivalent(at) as f64 * n as f64;
                // The first bound at or above the bucket's lowest value
                // (a value recorded at a bound counts below it); cumulated below.
                let low = h.lowest_equivalent(at);
                if let Some(i) = BUCKETS_NS.iter().position(|&le| low <= le) {
                    b.le[i] += n;
                }
            }
        }
        for i in 1..b.le.len() {
            b.le[i] += b.le[i - 1];
        }
        b
    }
}

/// p50/p99/p99.9/max of a histogram, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quantiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        Quantiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Formats ns as a short human duration: `850ns`, `12.3µs`, `4.1ms`, `2.0s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.1}s", ns as f64 / 1e9),
    }
}

impl fmt::Display for Quantiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return write!(f, "-");
        }
        write!(
            f,
            "p50 {} p99 {} p99.9 {} max {} (n={})",
            human_ns(self.p50),
            human_ns(self.p99),
            human_ns(self.p999),
            human_ns(self.max),
            self.count
        )
    }
}

/// The latency of every stage, measured from a datagram's arrival stamp
/// (the kernel's receive time) or from when ssdaqd read it.
pub struct StageLatency {
    /// Arrival of the last datagram of a complete event → ssdaqd read the
    /// datagram that completed it: the time in the kernel and the socket
    /// queue, waking the receive thread included.
    pub to_read: Latency,
    /// Arrival → its readouts are in their slots (every datagram).
    pub to_slot: Latency,
    /// Arrival of the last datagram of a complete event → event built.
    pub to_built: Latency,
    /// Arrival of the last datagram of a complete event → handed to ZeroMQ.
    pub to_zmq: Latency,
    /// Same for partial events (dominated by the timeout that emitted them).
    pub partial_to_zmq: Latency,
    /// ssdaqd read the datagram that completed an event → handed to
    /// ZeroMQ: ssdaqd's own share of `to_zmq`.
    pub read_to_zmq: Latency,
}

impl Default for StageLatency {
    fn default() -> Self {
        StageLatency {
            to_read: Latency::new("arrival→read"),
            to_slot: Latency::new("arrival→slot"),
            to_built: Latency::new("arrival→built"),
            to_zmq: Latency::new("arrival→zmq"),
            partial_to_zmq: Latency::new("partial arrival→zmq"),
            read_to_zmq: Latency::new("read→zmq"),
        }
    }
}

impl StageLatency {
    pub fn all_mut(&mut self) -> [&mut Latency; 6] {
        [
            &mut self.to_read,
            &mut self.to_slot,
            &mut self.to_built,
            &mut self.to_zmq,
            &mut self.read_to_zmq,
            &mut self.partial_to_zmq,
        ]
    }
    pub fn all(&self) -> [&Latency; 6] {
        [
            &self.to_read,
            &self.to_slot,
            &self.to_built,
            &self.to_zmq,
            &self.read_to_zmq,
            &self.partial_to_zmq,
        ]
    }
}

/// Exact histogram of receive batch sizes 1..=N, shared across threads
/// (relaxed atomic increments: the receive thread writes, anyone reads).
pub struct BatchSizes {
    counts: Box<[AtomicU64]>,
}

impl BatchSizes {
    pub fn new(max: usize) -> BatchSizes {
        BatchSizes {
            counts: (0..=max).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub fn record(&self, n: usize) {
        let i = n.min(self.counts.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (batches, mean size, p50, p99, max) over all batches so far.
    pub fn summary(&self) -> BatchSummary {
        let c: Vec<u64> = self
            .counts
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        let n: u64 = c.iter().sum();
        if n == 0 {
            return BatchSummary::default();
        }
        let total: u64 = c.iter().enumerate().map(|(i, &k)| i as u64 * k).sum();
        let q = |p: f64| {
            let target = (p * n as f64).ceil().max(1.0) as u64;
            let mut acc = 0;
            for (i, &k) in c.iter().enumerate() {
                acc += k;
                if acc >= target {
                    return i;
                }
            }
            c.len() - 1
        };
        let max = c.iter().rposition(|&k| k > 0).unwrap_or(0);
        BatchSummary {
            batches: n,
            mean: total as f64 / n as f64,
            p50: q(0.5),
            p99: q(0.99),
            max,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchSummary {
    pub batches: u64,
    pub mean: f64,
    pub p50: usize,
    pub p99: usize,
    pub max: usize,
}

impl fmt::Display for BatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} batches, mean {:.1}, p50 {}, p99 {}, max {}",
            self.batches, self.mean, self.p50, self.p99, self.max
        )
    }
}

/// Lets a recurring message through at most once per interval and counts
/// the ones held back, so a flood of bad datagrams costs one line.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    interval_ns: u64,
    next_ns: u64,
    held: u64,
}

impl RateLimit {
    pub const fn new(interval_ns: u64) -> RateLimit {
        RateLimit {
            interval_ns,
            next_ns: 0,
            held: 0,
        }
    }

    /// `Some(held back since the last message)` if a message may go out now.
    #[inline]
    pub fn allow(&mut self, now_ns: u64) -> Option<u64> {
        if now_ns >= self.next_ns {
            self.next_ns = now_ns.saturating_add(self.interval_ns);
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_messages_is_let_through_once_per_interval_with_a_count() {
        let mut r = RateLimit::new(1_000);
        assert_eq!(r.allow(0), Some(0));
        for t in 1..1_000 {
            assert_eq!(r.allow(t), None);
        }
        assert_eq!(r.allow(1_000), Some(999));
        assert_eq!(r.allow(1_001), None);
    }

    #[test]
    fn latency_quantiles_cover_what_was_recorded() {
        let mut l = Latency::new("t");
        for v in 1..=1000u64 {
            l.record(v * 1_000);
        }
        let q = l.take_interval();
        assert_eq!(q.count, 1000);
        // Within the histograms' 1 % resolution.
        assert!((495_000..=505_000).contains(&q.p50), "{q:?}");
        assert!((980_000..=1_000_000).contains(&q.p99), "{q:?}");
        assert!((1_000_000..=1_010_000).contains(&q.max), "{q:?}");
        assert_eq!(l.take_interval().count, 0, "interval restarts");
        assert_eq!(l.total().count, 1000, "total keeps everything");
    }

    #[test]
    fn the_total_holds_every_interval_taken_and_the_one_under_way() {
        let mut l = Latency::new("t");
        for v in 1..=100u64 {
            l.record(v);
        }
        assert_eq!(l.take_interval().count, 100);
        for _ in 0..50 {
            l.record(1_000_000);
        }
        let t = l.total();
        assert_eq!(t.count, 150);
        assert!((1_000_000..=1_010_000).contains(&t.max), "{t:?}");
        assert_eq!(l.take_interval().count, 50);
        assert_eq!(l.total().count, 150, "taking an interval loses nothing");
    }

    #[test]
    fn prometheus_buckets_are_cumulative_and_count_everything() {
        let mut l = Latency::new("t");
        for v in [500, 1_000, 1_500, 40_000, 3_000_000_000] {
            l.record(v);
        }
        let _ = l.take_interval(); // some in the total, some in the interval
        l.record(700_000_000);
        let b = l.buckets();
        assert_eq!(b.count, 6);
        assert_eq!(b.le[0], 2, "≤1 µs: 500 ns and 1 µs (1 % resolution)");
        assert_eq!(b.le[1], 3, "≤2 µs");
        assert_eq!(b.le[5], 4, "≤50 µs");
        assert_eq!(b.le[18], 5, "≤1 s: all but the 3 s one");
        assert!(b.le.windows(2).all(|w| w[0] <= w[1]));
        assert!((b.sum_ns - 3_700_042_000.0).abs() / 3.7e9 < 0.01);
    }

    #[test]
    fn batch_sizes_are_exact() {
        let b = BatchSizes::new(64);
        for _ in 0..98 {
            b.record(1);
        }
        b.record(64);
        b.record(100); // clamped into the top bucket
        let s = b.summary();
        assert_eq!((s.batches, s.p50, s.p99, s.max), (100, 1, 64, 64));
        assert!((s.mean - (98.0 + 128.0) / 100.0).abs() < 1e-9);
    }

    #[test]
    fn durations_print_in_human_units() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_345), "12.3µs");
        assert_eq!(human_ns(4_100_000), "4.1ms");
        assert_eq!(human_ns(2_000_000_000), "2.0s");
    }
}
