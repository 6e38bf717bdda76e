//! The window record: one JSON object per window, the daemon's output and the model's input.
//!
//! Field names are a stable interface (documented in docs/window-record.md). Top-level numeric
//! fields are node-wide features; `block_devices` carries per-device detail.

use std::collections::BTreeMap;

use collector_common::op;
use serde::{Deserialize, Serialize};

use crate::{
    pressure::{PsiWindow, ThrottlingWindow},
    system::SystemFeatures,
    window::{DeviceWindow, histogram_quantile_us, rate},
};

/// Version of the record's schema; bumped when a field changes meaning or is removed.
pub const RECORD_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// End of the window, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    pub unix_ms: u64,
    pub window_s: f64,
    pub node: String,
    pub schema: u32,

    pub block_read_ops_per_s: f64,
    pub block_write_ops_per_s: f64,
    pub block_discard_ops_per_s: f64,
    pub block_flush_ops_per_s: f64,
    pub block_read_bytes_per_s: f64,
    pub block_write_bytes_per_s: f64,
    pub block_errors_per_s: f64,
    /// Requests in flight at the end of the window, all devices.
    pub block_inflight: u64,
    pub block_latency_mean_us: f64,
    pub block_latency_p50_us: f64,
    pub block_latency_p90_us: f64,
    pub block_latency_p99_us: f64,
    /// Requests at or over the slow-I/O threshold received this window.
    pub block_slow_io_events: u64,
    /// Ring-buffer events the kernel could not hand over this window (buffer full).
    pub events_lost: u64,

    /// Share of the window some task waited for a CPU (PSI), %.
    pub psi_cpu_some_pct: f64,
    pub psi_io_some_pct: f64,
    /// Share of the window all non-idle tasks were stalled on I/O at once, %.
    pub psi_io_full_pct: f64,
    pub psi_memory_some_pct: f64,
    pub psi_memory_full_pct: f64,
    /// CFS bandwidth periods in which some cgroup was throttled, per second (all cgroups).
    pub cpu_throttled_periods_per_s: f64,
    /// Time cgroups spent throttled, ms per second of window (can exceed 1000 with many).
    pub cpu_throttled_ms_per_s: f64,
    /// Cgroups throttled at least once in the window.
    pub cpu_throttled_cgroups: u64,

    /// Scheduler, process, memory, syscall, file and network features.
    #[serde(flatten)]
    pub system: SystemFeatures,

    pub block_devices: BTreeMap<String, DeviceRecord>,

    /// What our own kernel programs cost in this window, by program name.
    #[serde(default)]
    pub programs: BTreeMap<String, ProgramWindow>,
}

/// One program's runs and run time within one window (kernel BPF run-time statistics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgramWindow {
    pub runs: u64,
    pub run_time_ns: u64,
    /// Mean cost of one run, ns (0 when it did not run).
    pub ns_per_run: f64,
}

/// One block device in one window: counts (not rates) so sums over windows stay exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub major: u32,
    pub minor: u32,
    pub reads: u64,
    pub writes: u64,
    pub discards: u64,
    pub flushes: u64,
    pub other_ops: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub discard_bytes: u64,
    pub completed: u64,
    pub errors: u64,
    pub inflight: u64,
    pub latency_mean_us: f64,
    pub latency_p50_us: f64,
    pub latency_p90_us: f64,
    pub latency_p99_us: f64,
    pub slow_io_events: u64,
}

impl DeviceRecord {
    pub fn new(major: u32, minor: u32, window: &DeviceWindow, slow_io_events: u64) -> Self {
        Self {
            major,
            minor,
            reads: window.ops[op::READ],
            writes: window.ops[op::WRITE],
            discards: window.ops[op::DISCARD],
            // Pure flushes are an op class; pre-flushes ride on writes. Both flush the cache.
            flushes: window.flushes,
            other_ops: window.ops[op::OTHER],
            read_bytes: window.bytes[op::READ],
            write_bytes: window.bytes[op::WRITE],
            discard_bytes: window.bytes[op::DISCARD],
            completed: window.completed,
            errors: window.errors,
            inflight: window.inflight,
            latency_mean_us: window.latency_mean_us().unwrap_or(0.0),
            latency_p50_us: window.latency_quantile_us(0.50).unwrap_or(0.0),
            latency_p90_us: window.latency_quantile_us(0.90).unwrap_or(0.0),
            latency_p99_us: window.latency_quantile_us(0.99).unwrap_or(0.0),
            slow_io_events,
        }
    }
}

/// Everything a window is made of, before it becomes a record.
pub struct WindowInputs<'a> {
    pub timestamp: std::time::SystemTime,
    pub window_s: f64,
    pub node: &'a str,
    /// Per device: name, major, minor, window, slow events received.
    pub devices: Vec<(String, u32, u32, DeviceWindow, u64)>,
    pub slow_io_events: u64,
    pub events_lost: u64,
    pub psi: PsiWindow,
    pub throttling: ThrottlingWindow,
    pub system: SystemFeatures,
    pub programs: BTreeMap<String, ProgramWindow>,
}

impl WindowRecord {
    pub fn build(inputs: WindowInputs<'_>) -> Self {
        let WindowInputs {
            timestamp,
            window_s,
            node,
            devices,
            slow_io_events,
            events_lost,
            psi,
            throttling,
            system,
            programs,
        } = inputs;
        let mut ops = [0u64; op::COUNT];
        let mut bytes = [0u64; op::COUNT];
        let (mut flushes, mut errors, mut inflight, mut latency_sum_ns) = (0, 0, 0, 0);
        let mut hist = [0u64; collector_common::LATENCY_BUCKETS];
        for (_, _, _, window, _) in &devices {
            for class in 0..op::COUNT {
                ops[class] += window.ops[class];
                bytes[class] += window.bytes[class];
            }
            flushes += window.flushes;
            errors += window.errors;
            inflight += window.inflight;
            latency_sum_ns += window.latency_sum_ns;
            for (total, count) in hist.iter_mut().zip(&window.latency_hist) {
                *total += count;
            }
        }
        let timed: u64 = hist.iter().sum();
        let quantile = |q| histogram_quantile_us(&hist, q).unwrap_or(0.0);
        let unix_ms = timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            timestamp: humantime::format_rfc3339_millis(timestamp).to_string(),
            unix_ms,
            window_s,
            node: node.to_string(),
            schema: RECORD_SCHEMA_VERSION,
            block_read_ops_per_s: rate(ops[op::READ], window_s),
            block_write_ops_per_s: rate(ops[op::WRITE], window_s),
            block_discard_ops_per_s: rate(ops[op::DISCARD], window_s),
            block_flush_ops_per_s: rate(flushes, window_s),
            block_read_bytes_per_s: rate(bytes[op::READ], window_s),
            block_write_bytes_per_s: rate(bytes[op::WRITE], window_s),
            block_errors_per_s: rate(errors, window_s),
            block_inflight: inflight,
            block_latency_mean_us: if timed > 0 {
                latency_sum_ns as f64 / timed as f64 / 1000.0
            } else {
                0.0
            },
            block_latency_p50_us: quantile(0.50),
            block_latency_p90_us: quantile(0.90),
            block_latency_p99_us: quantile(0.99),
            block_slow_io_events: slow_io_events,
            events_lost,
            psi_cpu_some_pct: psi.cpu_some_pct,
            psi_io_some_pct: psi.io_some_pct,
            psi_io_full_pct: psi.io_full_pct,
            psi_memory_some_pct: psi.memory_some_pct,
            psi_memory_full_pct: psi.memory_full_pct,
            cpu_throttled_periods_per_s: rate(throttling.throttled_periods, window_s),
            cpu_throttled_ms_per_s: if window_s > 0.0 {
                throttling.throttled_ns as f64 / 1e6 / window_s
            } else {
                0.0
            },
            cpu_throttled_cgroups: throttling.throttled_cgroups,
            system,
            programs,
            block_devices: devices
                .into_iter()
                .map(|(name, major, minor, window, slow)| {
                    (name, DeviceRecord::new(major, minor, &window, slow))
                })
                .collect(),
        }
    }

    /// A window with nothing in it: the schema, for checking what a model expects.
    pub fn empty() -> Self {
        Self::build(WindowInputs {
            timestamp: std::time::UNIX_EPOCH,
            window_s: 1.0,
            node: "",
            devices: Vec::new(),
            slow_io_events: 0,
            events_lost: 0,
            psi: PsiWindow::default(),
            throttling: ThrottlingWindow::default(),
            system: SystemFeatures::default(),
            programs: BTreeMap::new(),
        })
    }

    /// The one-line summary logged per window.
    pub fn summary(&self) -> String {
        let sampled = if self.system.syscall_sample_fraction < 1.0 {
            format!(
                ", hook on {:.0}% of the window",
                self.system.syscall_sample_fraction * 100.0
            )
        } else {
            String::new()
        };
        format!(
            "block: {:.0} r/s {:.0} w/s, {:.1} MB/s read {:.1} MB/s write, p50 {:.0} µs p99 {:.0} µs, \
             in flight {}, errors {:.1}/s, slow {}, lost {}; psi cpu {:.1}% io {:.1}% mem {:.1}%, \
             throttled {:.1} ms/s in {} cgroups; {:.0} cs/s, {:.0} syscalls/s ({:.0} failed{}), \
             exits {:.1}/s ({:.1} non-zero), OOM {}, rx {:.0} tx {:.0} pkt/s, drops {:.0}/s, \
             retrans {:.1}/s",
            self.block_read_ops_per_s,
            self.block_write_ops_per_s,
            self.block_read_bytes_per_s / 1e6,
            self.block_write_bytes_per_s / 1e6,
            self.block_latency_p50_us,
            self.block_latency_p99_us,
            self.block_inflight,
            self.block_errors_per_s,
            self.block_slow_io_events,
            self.events_lost,
            self.psi_cpu_some_pct,
            self.psi_io_some_pct,
            self.psi_memory_some_pct,
            self.cpu_throttled_ms_per_s,
            self.cpu_throttled_cgroups,
            self.system.sched_context_switches_per_s,
            self.system.syscalls_per_s,
            self.system.syscall_errors_per_s,
            sampled,
            self.system.proc_exits_per_s,
            self.system.proc_exits_nonzero_per_s,
            self.system.mem_oom_kills,
            self.system.net_rx_packets_per_s,
            self.system.net_tx_packets_per_s,
            self.system.net_drops_per_s,
            self.system.tcp_retransmits_per_s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_common::{BlockDevStats, LATENCY_BUCKETS};

    fn device(reads: u64, writes: u64, bucket: usize) -> DeviceWindow {
        let mut current = BlockDevStats::ZERO;
        current.ops[op::READ] = reads;
        current.ops[op::WRITE] = writes;
        current.bytes[op::READ] = reads * 4096;
        current.bytes[op::WRITE] = writes * 8192;
        current.tracked_issued = reads + writes;
        current.completed = reads + writes;
        current.latency_hist[bucket] = reads + writes;
        current.latency_sum_ns = (reads + writes) * 3_000_000;
        DeviceWindow::between(&BlockDevStats::ZERO, &current)
    }

    #[test]
    fn totals_are_rates_over_all_devices_and_devices_keep_counts() {
        let record = WindowRecord::build(WindowInputs {
            timestamp: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            window_s: 2.0,
            node: "node-a",
            devices: vec![
                ("vda".into(), 254, 0, device(10, 20, 11), 1),
                ("loop0".into(), 7, 0, device(30, 0, 11), 0),
            ],
            slow_io_events: 1,
            events_lost: 0,
            psi: PsiWindow::default(),
            system: SystemFeatures::default(),
            programs: BTreeMap::new(),
            throttling: ThrottlingWindow {
                throttled_periods: 10,
                throttled_ns: 500_000_000,
                throttled_cgroups: 2,
            },
        });
        assert_eq!(record.cpu_throttled_periods_per_s, 5.0);
        assert_eq!(record.cpu_throttled_ms_per_s, 250.0);
        assert_eq!(record.timestamp, "2023-11-14T22:13:20.123Z");
        assert_eq!(record.unix_ms, 1_700_000_000_123);
        assert_eq!(record.block_read_ops_per_s, 20.0);
        assert_eq!(record.block_write_ops_per_s, 10.0);
        assert_eq!(record.block_read_bytes_per_s, 40.0 * 4096.0 / 2.0);
        assert_eq!(record.block_latency_mean_us, 3000.0);
        assert!((2048.0..4096.0).contains(&record.block_latency_p50_us));
        assert_eq!(record.block_devices["loop0"].reads, 30);
        assert_eq!(record.block_devices["vda"].write_bytes, 20 * 8192);
        assert_eq!(record.block_devices["vda"].slow_io_events, 1);
        let hist_len = LATENCY_BUCKETS;
        assert!(hist_len > 11);
    }

    #[test]
    fn an_idle_window_has_zeros_not_nan() {
        let record = WindowRecord::build(WindowInputs {
            timestamp: std::time::UNIX_EPOCH,
            window_s: 5.0,
            node: "n",
            devices: vec![],
            slow_io_events: 0,
            events_lost: 0,
            psi: PsiWindow::default(),
            throttling: ThrottlingWindow::default(),
            system: SystemFeatures::default(),
            programs: BTreeMap::new(),
        });
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("NaN") && !json.contains("null"), "{json}");
        assert_eq!(record.block_latency_p99_us, 0.0);
        let back: WindowRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }
}
