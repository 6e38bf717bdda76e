//! Window arithmetic: cumulative kernel counters in, per-window deltas, rates and percentiles out.
//!
//! Pure functions on plain numbers so they are tested without a kernel.

pub mod cgroups;
pub mod devices;
pub mod numeric;
pub mod pressure;
pub mod procfile;
pub mod record;
pub mod system;

use collector_common::{BlockDevStats, LATENCY_BUCKETS, op};

/// `current - previous` for a monotonic counter. A counter that went backwards was reset (the
/// device's entry was removed and re-created, or the maps were replaced): everything it holds
/// now happened since the reset, so the delta is its current value.
pub fn counter_delta(previous: u64, current: u64) -> u64 {
    if current >= previous {
        current - previous
    } else {
        current
    }
}

/// Events per second; 0 for an empty window rather than NaN or infinity.
pub fn rate(count: u64, window_s: f64) -> f64 {
    if window_s > 0.0 {
        count as f64 / window_s
    } else {
        0.0
    }
}

/// The delta of a counter read at the start and at the end of a window; `None` (a missing
/// value) when either read failed. A rate is never computed across a gap: after a failed
/// read, the next good read only sets the baseline, and that window's delta is missing too
/// (the old code read a failed read as 0 and the next window's delta as the whole counter).
pub fn delta_across(previous: Option<u64>, current: Option<u64>) -> Option<u64> {
    Some(counter_delta(previous?, current?))
}

/// [`rate`] of [`delta_across`]: `None` when either end of the window is missing.
pub fn rate_across(previous: Option<u64>, current: Option<u64>, window_s: f64) -> Option<f64> {
    delta_across(previous, current).map(|delta| rate(delta, window_s))
}

/// Bounds of log2 bucket `i` in microseconds: `[2^i, 2^(i+1))`, with bucket 0 taking `[0, 2)`.
pub fn bucket_bounds_us(bucket: usize) -> (f64, f64) {
    let upper = 2f64.powi(bucket as i32 + 1);
    let lower = if bucket == 0 { 0.0 } else { upper / 2.0 };
    (lower, upper)
}

/// The `quantile` (0..=1) of a log2 histogram, interpolating linearly inside the bucket the rank
/// falls into. `None` when the histogram is empty.
pub fn histogram_quantile_us(buckets: &[u64], quantile: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = quantile.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (bucket, &count) in buckets.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            let (lower, upper) = bucket_bounds_us(bucket);
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below += count;
    }
    let last = buckets.iter().rposition(|&count| count > 0)?;
    Some(bucket_bounds_us(last).1)
}

/// One device's counters summed over CPUs, at one instant.
pub type DeviceCounters = BlockDevStats;

/// What happened on one device during one window.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceWindow {
    pub ops: [u64; op::COUNT],
    pub bytes: [u64; op::COUNT],
    pub flushes: u64,
    pub completed: u64,
    pub errors: u64,
    /// Requests issued and not yet completed at the end of the window.
    pub inflight: u64,
    pub latency_sum_ns: u64,
    pub latency_hist: [u64; LATENCY_BUCKETS],
}

impl DeviceWindow {
    /// The window between two snapshots of a device's cumulative counters.
    pub fn between(previous: &BlockDevStats, current: &BlockDevStats) -> Self {
        // A reset of any counter means the entry was re-created: take every field from zero so
        // the window stays self-consistent.
        let reset = current.tracked_issued < previous.tracked_issued
            || current.completed < previous.completed
            || current.ops.iter().zip(&previous.ops).any(|(c, p)| c < p);
        let previous = if reset {
            &BlockDevStats::ZERO
        } else {
            previous
        };
        let mut window = Self {
            ops: [0; op::COUNT],
            bytes: [0; op::COUNT],
            flushes: counter_delta(previous.flushes, current.flushes),
            completed: counter_delta(previous.completed, current.completed),
            errors: counter_delta(previous.errors, current.errors),
            inflight: current.tracked_issued.saturating_sub(current.completed),
            latency_sum_ns: counter_delta(previous.latency_sum_ns, current.latency_sum_ns),
            latency_hist: [0; LATENCY_BUCKETS],
        };
        for class in 0..op::COUNT {
            window.ops[class] = counter_delta(previous.ops[class], current.ops[class]);
            window.bytes[class] = counter_delta(previous.bytes[class], current.bytes[class]);
        }
        for bucket in 0..LATENCY_BUCKETS {
            window.latency_hist[bucket] =
                counter_delta(previous.latency_hist[bucket], current.latency_hist[bucket]);
        }
        window
    }

    pub fn total_ops(&self) -> u64 {
        self.ops.iter().sum()
    }

    /// The counts scaled from the time the block hooks were on to the whole window (`factor`
    /// = window / time on, at least 1): estimates of what the window held. The in-flight
    /// gauge is not a count of the window and stays; latencies keep their distribution.
    pub fn scaled(&self, factor: f64) -> Self {
        if !(factor > 1.0 && factor.is_finite()) {
            return self.clone();
        }
        let scale = |count: u64| (count as f64 * factor).round() as u64;
        Self {
            ops: self.ops.map(scale),
            bytes: self.bytes.map(scale),
            flushes: scale(self.flushes),
            completed: scale(self.completed),
            errors: scale(self.errors),
            inflight: self.inflight,
            latency_sum_ns: scale(self.latency_sum_ns),
            latency_hist: self.latency_hist.map(scale),
        }
    }

    /// Mean issue → complete latency, `None` when nothing completed.
    pub fn latency_mean_us(&self) -> Option<f64> {
        let timed: u64 = self.latency_hist.iter().sum();
        (timed > 0).then(|| self.latency_sum_ns as f64 / timed as f64 / 1000.0)
    }

    pub fn latency_quantile_us(&self, quantile: f64) -> Option<f64> {
        histogram_quantile_us(&self.latency_hist, quantile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_of_monotonic_counters_and_resets() {
        assert_eq!(counter_delta(10, 25), 15);
        assert_eq!(counter_delta(25, 25), 0);
        // Reset: the counter restarted from zero and counted 7 since.
        assert_eq!(counter_delta(25, 7), 7);
    }

    #[test]
    fn a_rate_is_never_computed_across_a_failed_read() {
        // Reads of a counter window after window: good, failed, good, good.
        let reads = [Some(1_000u64), None, Some(84_000_000), Some(84_005_000)];
        let rates: Vec<Option<f64>> = reads
            .windows(2)
            .map(|ends| rate_across(ends[0], ends[1], 5.0))
            .collect();
        // The failed window is missing (never 0); the one after only re-establishes the
        // baseline (never 84 M / 5 s); then rates resume.
        assert_eq!(rates, vec![None, None, Some(1000.0)]);
        assert_eq!(delta_across(Some(10), Some(25)), Some(15));
        assert_eq!(delta_across(Some(25), None), None);
    }

    #[test]
    fn rates_never_divide_by_zero() {
        assert_eq!(rate(50, 5.0), 10.0);
        assert_eq!(rate(50, 0.0), 0.0);
    }

    #[test]
    fn bucket_bounds_are_powers_of_two() {
        assert_eq!(bucket_bounds_us(0), (0.0, 2.0));
        assert_eq!(bucket_bounds_us(1), (2.0, 4.0));
        assert_eq!(bucket_bounds_us(10), (1024.0, 2048.0));
    }

    #[test]
    fn quantiles_from_log2_buckets() {
        let mut hist = [0u64; LATENCY_BUCKETS];
        assert_eq!(histogram_quantile_us(&hist, 0.5), None);
        // 100 requests all in [1024, 2048) µs: the median is the bucket's middle.
        hist[10] = 100;
        assert_eq!(histogram_quantile_us(&hist, 0.5), Some(1536.0));
        assert_eq!(histogram_quantile_us(&hist, 1.0), Some(2048.0));
        // 90 fast ([8, 16) µs) and 10 slow ([4096, 8192) µs): p50 is fast, p99 is slow.
        let mut hist = [0u64; LATENCY_BUCKETS];
        hist[3] = 90;
        hist[12] = 10;
        let p50 = histogram_quantile_us(&hist, 0.5).unwrap();
        let p99 = histogram_quantile_us(&hist, 0.99).unwrap();
        assert!((8.0..16.0).contains(&p50), "{p50}");
        assert!((4096.0..=8192.0).contains(&p99), "{p99}");
        // p90 sits exactly at the top of the fast bucket.
        assert_eq!(histogram_quantile_us(&hist, 0.9), Some(16.0));
    }

    fn stats(reads: u64, issued: u64, completed: u64, hist10: u64) -> BlockDevStats {
        let mut stats = BlockDevStats::ZERO;
        stats.ops[op::READ] = reads;
        stats.bytes[op::READ] = reads * 4096;
        stats.tracked_issued = issued;
        stats.completed = completed;
        stats.latency_hist[10] = hist10;
        stats.latency_sum_ns = hist10 * 1_500_000;
        stats
    }

    #[test]
    fn window_between_snapshots() {
        let previous = stats(100, 100, 98, 98);
        let current = stats(160, 160, 155, 155);
        let window = DeviceWindow::between(&previous, &current);
        assert_eq!(window.ops[op::READ], 60);
        assert_eq!(window.bytes[op::READ], 60 * 4096);
        assert_eq!(window.completed, 57);
        assert_eq!(window.inflight, 5);
        assert_eq!(window.latency_hist[10], 57);
        assert_eq!(window.latency_mean_us(), Some(1500.0));
    }

    #[test]
    fn a_reset_device_counts_from_zero() {
        let previous = stats(1000, 1000, 1000, 1000);
        let current = stats(30, 30, 30, 30);
        let window = DeviceWindow::between(&previous, &current);
        assert_eq!(window.ops[op::READ], 30);
        assert_eq!(window.latency_hist[10], 30);
        assert_eq!(window.inflight, 0);
    }

    #[test]
    fn sampled_counts_scale_to_the_whole_window() {
        let window = DeviceWindow {
            ops: [10, 4, 0, 0, 1],
            bytes: [40960, 16384, 0, 0, 0],
            flushes: 1,
            completed: 14,
            errors: 1,
            inflight: 3,
            latency_sum_ns: 1_400_000,
            latency_hist: {
                let mut hist = [0; LATENCY_BUCKETS];
                hist[7] = 14;
                hist
            },
        };
        let scaled = window.scaled(10.0);
        assert_eq!(scaled.ops, [100, 40, 0, 0, 10]);
        assert_eq!(scaled.bytes[0], 409_600);
        assert_eq!(
            (scaled.flushes, scaled.completed, scaled.errors),
            (10, 140, 10)
        );
        assert_eq!(scaled.inflight, 3, "a gauge, not a count");
        assert_eq!(scaled.latency_mean_us(), window.latency_mean_us());
        assert_eq!(
            scaled.latency_quantile_us(0.99),
            window.latency_quantile_us(0.99)
        );
        assert_eq!(window.scaled(1.0), window);
        assert_eq!(window.scaled(f64::NAN), window);
    }

    #[test]
    fn sums_per_cpu_copies() {
        let a = stats(10, 10, 9, 9);
        let b = stats(5, 5, 6, 6);
        let total = crate::kernel::sum_cpus([&a, &b]);
        assert_eq!(total.ops[op::READ], 15);
        assert_eq!(total.tracked_issued, 15);
        assert_eq!(total.completed, 15);
        assert_eq!(total.latency_hist[10], 15);
    }
}
