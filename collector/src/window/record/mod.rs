//! The window record: one JSON object per window, the daemon's output and the model's input.
//!
//! Field names are a stable interface (documented in docs/window-record.md). Top-level numeric
//! fields are node-wide features; `block_devices` carries per-device detail.
//!
//! The judge and the exporter read the numbers through [`WindowRecord::fields`] and the
//! model's [`model::WindowFields`]: typed, never through JSON. Only the JSON Lines sink (and
//! `/state`) serialises a record; a test checks that the two forms agree field for field.
//!
//! Split by job: this module holds the record and its parts; `fields` its numeric fields as
//! the judge, the exporter and the model read them; `assemble` how a window's inputs become
//! a record.

use std::collections::BTreeMap;

use collector_common::LATENCY_BUCKETS;
use serde::{Deserialize, Serialize};

use crate::window::system::SystemFeatures;

mod assemble;
mod fields;

pub use assemble::{DeviceSample, WindowInputs};

/// Version of the record's schema; bumped when a field changes meaning or is removed.
/// 2: `net_drops_per_s` leaves out housekeeping drop reasons (`HOUSEKEEPING_DROP_REASONS`);
/// in 1 it counted every `skb:kfree_skb`. The list may grow within a schema when the daemon
/// learns to tell a kind of housekeeping apart under a name of its own (`TCP_TIME_WAIT`):
/// a recording made before has no such name, so it reads the same.
/// 3: `proc_exits_nonzero_per_s` leaves out the non-zero exits of processes that lived under
/// `--brief-exit`, counted in `proc_brief_exits_nonzero_per_s` (new); in 2 it counted every
/// non-zero exit. A schema-2 recording cannot be brought to 3: it does not say how long the
/// failing processes lived.
pub const RECORD_SCHEMA_VERSION: u32 = 3;

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

    /// Some fields of this window are missing (`null`): a file the daemon reads could not be
    /// read at one end of the window. Absent in records from before it existed (= false).
    #[serde(default)]
    pub partial: bool,
    /// The fields that are `null` in this window, by name (empty when not `partial`). A
    /// missing value is never written as 0, and a model leaves it out of the score.
    #[serde(default)]
    pub missing: Vec<String>,

    /// Share of the window some task waited for a CPU (PSI), %. This and the other PSI and
    /// throttling fields are `null` when missing.
    pub psi_cpu_some_pct: Option<f64>,
    pub psi_io_some_pct: Option<f64>,
    /// Share of the window all non-idle tasks were stalled on I/O at once, %.
    pub psi_io_full_pct: Option<f64>,
    pub psi_memory_some_pct: Option<f64>,
    pub psi_memory_full_pct: Option<f64>,
    /// CFS bandwidth periods in which some cgroup was throttled, per second (all cgroups).
    pub cpu_throttled_periods_per_s: Option<f64>,
    /// Time cgroups spent throttled, ms per second of window (can exceed 1000 with many).
    pub cpu_throttled_ms_per_s: Option<f64>,
    /// Cgroups throttled at least once in the window.
    pub cpu_throttled_cgroups: Option<u64>,

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
    /// The window's latency histogram, which the exporter accumulates. Not in the JSON Lines
    /// (the percentiles above are): a record read back from a file has an empty one.
    #[serde(skip)]
    pub latency: LatencyHistogram,
}

/// Block request latencies of one window (issue to completion), in the kernel's log2 buckets
/// (see `window::bucket_bounds_us`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of the latencies counted, ns.
    pub sum_ns: u64,
}

impl WindowRecord {
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
             in flight {}, errors {:.1}/s, slow {}, lost {}; psi cpu {}% io {}% mem {}%, \
             throttled {} ms/s in {} cgroups; {} cs/s, {:.0} syscalls/s ({:.0} failed{}), \
             exits {:.1}/s ({:.1} non-zero), OOM {}, rx {:.0} tx {:.0} pkt/s, drops {:.0}/s, \
             retrans {:.1}/s{}",
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
            shown(self.psi_cpu_some_pct, 1),
            shown(self.psi_io_some_pct, 1),
            shown(self.psi_memory_some_pct, 1),
            shown(self.cpu_throttled_ms_per_s, 1),
            self.cpu_throttled_cgroups
                .map_or_else(|| "?".to_string(), |count| count.to_string()),
            shown(self.system.sched_context_switches_per_s, 0),
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
            if self.partial {
                format!("; partial, missing: {}", self.missing.join(", "))
            } else {
                String::new()
            },
        )
    }
}

#[cfg(test)]
impl WindowRecord {
    /// A record with every numeric field set to a value of its own (a few missing), built
    /// through its JSON so that a field added later is populated too.
    pub(crate) fn populated() -> Self {
        let mut json = serde_json::to_value(WindowRecord::empty()).unwrap();
        for (index, (_, value)) in json.as_object_mut().unwrap().iter_mut().enumerate() {
            if let serde_json::Value::Number(number) = value {
                *value = if number.is_f64() {
                    serde_json::json!(index as f64 + 0.25)
                } else {
                    serde_json::json!(index + 1)
                };
            }
        }
        for missing in [
            "psi_io_full_pct",
            "cpu_throttled_cgroups",
            "mem_major_faults_per_s",
            "conntrack_fill_pct",
        ] {
            json[missing] = serde_json::Value::Null;
        }
        let mut record: WindowRecord = serde_json::from_value(json).unwrap();
        // serde_json writes a NaN as null: the typed path reads it as missing too.
        record.block_latency_p99_us = f64::NAN;
        record
    }
}

/// A value for the log line: `?` when missing.
fn shown(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "?".to_string(), |value| format!("{value:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_window_has_zeros_not_nan() {
        let record = WindowRecord {
            timestamp: humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(5),
            )
            .to_string(),
            unix_ms: 5000,
            window_s: 5.0,
            node: "n".into(),
            ..WindowRecord::empty()
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("NaN") && !json.contains("null"), "{json}");
        assert!(!record.partial && record.missing.is_empty());
        assert_eq!(record.block_latency_p99_us, 0.0);
        let back: WindowRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn records_written_before_missing_values_still_read() {
        let mut old = serde_json::to_value(WindowRecord::empty()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("partial");
        fields.remove("missing");
        let back: WindowRecord = serde_json::from_value(old).unwrap();
        assert!(!back.partial && back.missing.is_empty());
        assert_eq!(back.psi_cpu_some_pct, Some(0.0));
    }
}
