//! Request latency as a histogram of fixed buckets: recording is one atomic increment,
//! any two snapshots give the distribution between them (the dashboard's p50 and p99
//! per second), and Prometheus gets the same buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in nanoseconds: the Renard R10 series (ten steps a decade), 10 µs to
/// 10 s, so a quantile read from them is within about 12% of the true value.
pub const BOUNDS_NS: [u64; 61] = {
    const STEPS: [u64; 10] = [1000, 1250, 1600, 2000, 2500, 3150, 4000, 5000, 6300, 8000];
    let mut bounds = [0u64; 61];
    let mut decade = 10u64; // 10 ns × 1000 = 10 µs
    let mut i = 0;
    while i < 60 {
        bounds[i] = STEPS[i % 10] * decade;
        i += 1;
        if i % 10 == 0 {
            decade *= 10;
        }
    }
    bounds[60] = 10_000_000_000;
    bounds
};

/// One count per bound, and one past the last (`+Inf`).
const SLOTS: usize = BOUNDS_NS.len() + 1;

#[derive(Debug)]
pub struct LatencyHistogram {
    counts: [AtomicU64; SLOTS],
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let slot = BOUNDS_NS.partition_point(|bound| *bound < ns);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// Counts per bucket (not cumulative) at one moment, or between two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySnapshot {
    counts: [u64; SLOTS],
    sum_ns: u64,
}

impl Default for LatencySnapshot {
    fn default() -> Self {
        LatencySnapshot {
            counts: [0; SLOTS],
            sum_ns: 0,
        }
    }
}

impl LatencySnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// What was recorded after `earlier`.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }

    /// Cumulative counts up to each bound, then the total (`+Inf`), as Prometheus wants.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut running = 0;
        self.counts.iter().enumerate().map(move |(i, count)| {
            running += count;
            (BOUNDS_NS.get(i).copied(), running)
        })
    }

    /// The `q` quantile (0 < q ≤ 1), interpolated within its bucket; `None` when
    /// nothing was recorded. Past the last bound it is the last bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            if (below + count) as f64 >= rank {
                let Some(upper) = BOUNDS_NS.get(i) else {
                    return Some(Duration::from_nanos(BOUNDS_NS[BOUNDS_NS.len() - 1]));
                };
                let lower = if i == 0 { 0 } else { BOUNDS_NS[i - 1] };
                let within = (rank - below as f64) / *count as f64;
                let ns = lower as f64 + within * (upper - lower) as f64;
                return Some(Duration::from_nanos(ns as u64));
            }
            below += count;
        }
        None
    }
}

/// Seconds as Prometheus writes them: `0.0000125`, `0.25`, `10`.
pub fn seconds_label(ns: u64) -> String {
    let whole = ns / 1_000_000_000;
    let fraction = ns % 1_000_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_climb_ten_steps_a_decade() {
        assert_eq!(BOUNDS_NS[0], 10_000);
        assert_eq!(BOUNDS_NS[10], 100_000);
        assert_eq!(BOUNDS_NS[15], 315_000);
        assert_eq!(BOUNDS_NS[60], 10_000_000_000);
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seconds_label(12_500), "0.0000125");
        assert_eq!(seconds_label(2_500_000_000), "2.5");
        assert_eq!(seconds_label(10_000_000_000), "10");
    }

    #[test]
    fn quantiles_come_from_the_buckets_between_snapshots() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(500));
        let before = histogram.snapshot();
        for _ in 0..98 {
            histogram.record(Duration::from_micros(100));
        }
        histogram.record(Duration::from_millis(20));
        histogram.record(Duration::from_secs(60));
        let window = histogram.snapshot().since(&before);
        assert_eq!(window.count(), 100);
        let p50 = window.quantile(0.5).unwrap();
        assert!(
            p50 > Duration::from_micros(80) && p50 <= Duration::from_micros(100),
            "{p50:?}"
        );
        let p99 = window.quantile(0.99).unwrap();
        assert!(
            p99 > Duration::from_millis(16) && p99 <= Duration::from_millis(20),
            "{p99:?}"
        );
        assert_eq!(window.quantile(1.0), Some(Duration::from_secs(10)));
        assert_eq!(LatencySnapshot::default().quantile(0.5), None);
        let (bound, total) = window.cumulative().last().unwrap();
        assert_eq!((bound, total), (None, 100));
    }
}
