//! The window record: one JSON object per window, the daemon's output and the model's input.
//!
//! Field names are a stable interface (documented in docs/window-record.md). Top-level numeric
//! fields are node-wide features; `block_devices` carries per-device detail.
//!
//! The judge and the exporter read the numbers through [`WindowRecord::fields`] and the
//! model's [`model::WindowFields`]: typed, never through JSON. Only the JSON Lines sink (and
//! `/state`) serialises a record; a test checks that the two forms agree field for field.

use std::collections::BTreeMap;

use collector_common::{LATENCY_BUCKETS, op};
use serde::{Deserialize, Serialize};

use crate::{
    window::pressure::{PsiWindow, ThrottlingWindow},
    window::system::SystemFeatures,
    window::{DeviceWindow, histogram_quantile_us, rate},
};

/// A numeric field of `T`: its name in the window record, and how its value is read (`None`:
/// a missing value, `null` in the JSON Lines).
pub type NumericField<T> = (&'static str, fn(&T) -> Option<f64>);

/// A field's value as the model reads it. A value that is not finite is missing, as it is in
/// the JSON Lines (serde_json writes NaN and infinities as `null`).
pub trait Numeric {
    fn number(self) -> Option<f64>;
}

impl Numeric for f64 {
    fn number(self) -> Option<f64> {
        self.is_finite().then_some(self)
    }
}

impl Numeric for u64 {
    fn number(self) -> Option<f64> {
        Some(self as f64)
    }
}

impl Numeric for u32 {
    fn number(self) -> Option<f64> {
        Some(f64::from(self))
    }
}

impl<T: Numeric> Numeric for Option<T> {
    fn number(self) -> Option<f64> {
        self.and_then(Numeric::number)
    }
}

/// `numeric_fields!(Type: a, b, …)`: the [`NumericField`]s of `Type`'s fields `a`, `b`, …
/// (written in name order).
macro_rules! numeric_fields {
    ($type:ty: $($field:ident),+ $(,)?) => {
        &[$((stringify!($field), |value: &$type| {
            $crate::window::record::Numeric::number(value.$field)
        })),+]
    };
}
pub(crate) use numeric_fields;

/// Two lists of (name, …) in name order as one, in name order.
fn merge_by_name<T>(
    a: impl Iterator<Item = (&'static str, T)>,
    b: impl Iterator<Item = (&'static str, T)>,
) -> impl Iterator<Item = (&'static str, T)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0 < x.0 => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// Version of the record's schema; bumped when a field changes meaning or is removed.
/// 2: `net_drops_per_s` leaves out housekeeping drop reasons (`HOUSEKEEPING_DROP_REASONS`);
/// in 1 it counted every `skb:kfree_skb`.
pub const RECORD_SCHEMA_VERSION: u32 = 2;

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

impl WindowRecord {
    /// The record's own numeric fields (the flattened [`SystemFeatures`] have theirs), in
    /// name order.
    const NUMERIC_FIELDS: &[NumericField<Self>] = numeric_fields!(WindowRecord:
        block_discard_ops_per_s,
        block_errors_per_s,
        block_flush_ops_per_s,
        block_inflight,
        block_latency_mean_us,
        block_latency_p50_us,
        block_latency_p90_us,
        block_latency_p99_us,
        block_read_bytes_per_s,
        block_read_ops_per_s,
        block_slow_io_events,
        block_write_bytes_per_s,
        block_write_ops_per_s,
        cpu_throttled_cgroups,
        cpu_throttled_ms_per_s,
        cpu_throttled_periods_per_s,
        events_lost,
        psi_cpu_some_pct,
        psi_io_full_pct,
        psi_io_some_pct,
        psi_memory_full_pct,
        psi_memory_some_pct,
        schema,
        unix_ms,
        window_s,
    );

    /// Every numeric top-level field with its value (`None`: missing), in name order: the
    /// numbers (and `null`s) of the record's JSON, read without JSON. Features and bookkeeping
    /// alike (see `model::input::NOT_FEATURES`); `partial`, strings and the per-device and
    /// per-program maps are not numbers of the window.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, Option<f64>)> + '_ {
        merge_by_name(
            Self::NUMERIC_FIELDS
                .iter()
                .map(move |(name, value)| (*name, value(self))),
            SystemFeatures::NUMERIC_FIELDS
                .iter()
                .map(move |(name, value)| (*name, value(&self.system))),
        )
    }

    /// The names of [`WindowRecord::fields`], in name order: what every record has.
    pub fn field_names() -> impl Iterator<Item = &'static str> {
        merge_by_name(
            Self::NUMERIC_FIELDS.iter().map(|(name, _)| (*name, ())),
            SystemFeatures::NUMERIC_FIELDS
                .iter()
                .map(|(name, _)| (*name, ())),
        )
        .map(|(name, ())| name)
    }

    /// The features this collector produces: [`WindowRecord::field_names`] without the
    /// bookkeeping (`model::input::NOT_FEATURES`). What a model may ask for.
    pub fn feature_names() -> impl Iterator<Item = &'static str> {
        Self::field_names().filter(|name| model::input::is_feature(name))
    }

    /// One field: `None` when the record has no such numeric field, `Some(None)` when it is
    /// missing in this window.
    fn numeric(&self, name: &str) -> Option<Option<f64>> {
        if let Ok(index) = Self::NUMERIC_FIELDS.binary_search_by(|(own, _)| (*own).cmp(name)) {
            return Some((Self::NUMERIC_FIELDS[index].1)(self));
        }
        SystemFeatures::NUMERIC_FIELDS
            .binary_search_by(|(own, _)| (*own).cmp(name))
            .ok()
            .map(|index| (SystemFeatures::NUMERIC_FIELDS[index].1)(&self.system))
    }
}

/// The model reads a record directly: a field the collector could not read this window is
/// missing ([`model::WindowFields::is_missing`]), one it never has is absent.
impl model::WindowFields for WindowRecord {
    fn field(&self, name: &str) -> Option<f64> {
        self.numeric(name).flatten()
    }

    fn is_missing(&self, name: &str) -> bool {
        matches!(self.numeric(name), Some(None))
    }

    fn feature_fields(&self) -> Vec<String> {
        self.fields()
            .filter(|(name, value)| value.is_some() && model::input::is_feature(name))
            .map(|(name, _)| name.to_string())
            .collect()
    }
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

/// One block device's window, as the window maker hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSample {
    /// Its name under /dev (`vda`), or `major:minor` when sysfs does not know it.
    pub name: String,
    pub major: u32,
    pub minor: u32,
    pub window: DeviceWindow,
    /// Slow-I/O events received for it in the window.
    pub slow_io_events: u64,
}

impl DeviceRecord {
    pub fn new(sample: &DeviceSample) -> Self {
        let DeviceSample {
            major,
            minor,
            ref window,
            slow_io_events,
            ..
        } = *sample;
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
            latency: LatencyHistogram {
                buckets: window.latency_hist,
                sum_ns: window.latency_sum_ns,
            },
        }
    }
}

/// Everything a window is made of, before it becomes a record.
pub struct WindowInputs<'a> {
    pub timestamp: std::time::SystemTime,
    pub window_s: f64,
    pub node: &'a str,
    /// The devices with something to show in this window.
    pub devices: Vec<DeviceSample>,
    pub slow_io_events: u64,
    pub events_lost: u64,
    pub psi: PsiWindow,
    /// `None` when the cgroup tree could not be read at one end of the window.
    pub throttling: Option<ThrottlingWindow>,
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
        let mut hist = [0u64; LATENCY_BUCKETS];
        for DeviceSample { window, .. } in &devices {
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
        let mut record = Self {
            timestamp: humantime::format_rfc3339_millis(timestamp).to_string(),
            unix_ms,
            window_s,
            node: node.to_string(),
            schema: RECORD_SCHEMA_VERSION,
            partial: false,
            missing: Vec::new(),
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
            cpu_throttled_periods_per_s: throttling
                .map(|throttling| rate(throttling.throttled_periods, window_s)),
            cpu_throttled_ms_per_s: throttling.map(|throttling| {
                if window_s > 0.0 {
                    throttling.throttled_ns as f64 / 1e6 / window_s
                } else {
                    0.0
                }
            }),
            cpu_throttled_cgroups: throttling.map(|throttling| throttling.throttled_cgroups),
            system,
            programs,
            block_devices: devices
                .iter()
                .map(|device| (device.name.clone(), DeviceRecord::new(device)))
                .collect(),
        };
        record.missing = record.null_fields();
        record.partial = !record.missing.is_empty();
        record
    }

    /// The top-level fields that are `null` (missing values), by name.
    fn null_fields(&self) -> Vec<String> {
        self.fields()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string())
            .collect()
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
            psi: PsiWindow {
                cpu_some_pct: Some(0.0),
                io_some_pct: Some(0.0),
                io_full_pct: Some(0.0),
                memory_some_pct: Some(0.0),
                memory_full_pct: Some(0.0),
            },
            throttling: Some(ThrottlingWindow::default()),
            system: SystemFeatures {
                sched_context_switches_per_s: Some(0.0),
                mem_major_faults_per_s: Some(0.0),
                conntrack_fill_pct: Some(0.0),
                ..SystemFeatures::default()
            },
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
                DeviceSample {
                    name: "vda".into(),
                    major: 254,
                    minor: 0,
                    window: device(10, 20, 11),
                    slow_io_events: 1,
                },
                DeviceSample {
                    name: "loop0".into(),
                    major: 7,
                    minor: 0,
                    window: device(30, 0, 11),
                    slow_io_events: 0,
                },
            ],
            slow_io_events: 1,
            events_lost: 0,
            psi: PsiWindow::default(),
            system: SystemFeatures::default(),
            programs: BTreeMap::new(),
            throttling: Some(ThrottlingWindow {
                throttled_periods: 10,
                throttled_ns: 500_000_000,
                throttled_cgroups: 2,
            }),
        });
        assert_eq!(record.cpu_throttled_periods_per_s, Some(5.0));
        assert_eq!(record.cpu_throttled_ms_per_s, Some(250.0));
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
    fn devices_carry_their_histograms_which_stay_out_of_the_json() {
        let record = WindowRecord::build(WindowInputs {
            timestamp: std::time::UNIX_EPOCH,
            window_s: 1.0,
            node: "n",
            devices: vec![DeviceSample {
                name: "vda".into(),
                major: 254,
                minor: 0,
                window: device(10, 20, 11),
                slow_io_events: 2,
            }],
            slow_io_events: 2,
            events_lost: 0,
            psi: PsiWindow::default(),
            throttling: None,
            system: SystemFeatures::default(),
            programs: BTreeMap::new(),
        });
        let vda = &record.block_devices["vda"];
        assert_eq!(vda.latency.buckets[11], 30);
        assert_eq!(vda.latency.buckets.iter().sum::<u64>(), 30);
        assert_eq!(vda.latency.sum_ns, 30 * 3_000_000);
        // The JSON Lines keep the device's fields as they were: no histogram.
        let json = serde_json::to_value(&record).unwrap();
        let keys: Vec<&str> = json["block_devices"]["vda"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "major",
            "minor",
            "reads",
            "writes",
            "discards",
            "flushes",
            "other_ops",
            "read_bytes",
            "write_bytes",
            "discard_bytes",
            "completed",
            "errors",
            "inflight",
            "latency_mean_us",
            "latency_p50_us",
            "latency_p90_us",
            "latency_p99_us",
            "slow_io_events",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        // Read back from a file, a device has its percentiles and an empty histogram.
        let back: WindowRecord = serde_json::from_value(json).unwrap();
        assert_eq!(
            back.block_devices["vda"].latency,
            LatencyHistogram::default()
        );
        assert_eq!(back.block_devices["vda"].latency_p99_us, vda.latency_p99_us);
    }

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
    fn missing_values_are_null_named_and_mark_the_window_partial() {
        let empty = WindowRecord::empty();
        let record = WindowRecord::build(WindowInputs {
            timestamp: std::time::UNIX_EPOCH,
            window_s: 5.0,
            node: "n",
            devices: vec![],
            slow_io_events: 0,
            events_lost: 0,
            psi: PsiWindow {
                cpu_some_pct: None,
                ..PsiWindow::default()
            },
            throttling: None,
            system: SystemFeatures {
                sched_context_switches_per_s: None,
                ..empty.system.clone()
            },
            programs: BTreeMap::new(),
        });
        assert!(record.partial);
        for field in [
            "psi_cpu_some_pct",
            "cpu_throttled_ms_per_s",
            "cpu_throttled_cgroups",
            "sched_context_switches_per_s",
        ] {
            assert!(
                record.missing.iter().any(|m| m == field),
                "{field}: {record:?}"
            );
        }
        let json = serde_json::to_value(&record).unwrap();
        assert!(json["psi_cpu_some_pct"].is_null(), "null, never 0");
        assert!(json["sched_context_switches_per_s"].is_null());
        assert_eq!(json["partial"], serde_json::json!(true));
        // What a model reads from the record: the missing fields are not there at all.
        let values = model::input::Row::from_json(&json, 1).unwrap().values;
        assert!(!values.contains_key("psi_cpu_some_pct"));
        assert!(!values.contains_key("partial"));
        assert!(values.contains_key("syscalls_per_s"));
        assert!(record.summary().contains("partial, missing: "));
        let back: WindowRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn the_typed_fields_are_the_numbers_of_the_json() {
        use model::WindowFields as _;
        let record = WindowRecord::populated();
        let json = serde_json::to_value(&record).unwrap();
        let from_json: Vec<(String, Option<f64>)> = json
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, value)| value.is_number() || value.is_null())
            .map(|(name, value)| (name.clone(), value.as_f64()))
            .collect();
        let typed: Vec<(String, Option<f64>)> = record
            .fields()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        // Same names, same order (name order, as the exporter lists them), same values.
        assert_eq!(typed, from_json);
        assert!(
            WindowRecord::field_names().eq(typed.iter().map(|(name, _)| name.as_str())),
            "field_names lists the fields"
        );
        assert!(
            WindowRecord::field_names()
                .zip(WindowRecord::field_names().skip(1))
                .all(|(a, b)| a < b),
            "the field tables are in name order (binary search relies on it)"
        );
        let mut nulls = 0;
        for (name, value) in json.as_object().unwrap() {
            if model::input::NOT_FEATURES.contains(&name.as_str()) {
                continue;
            }
            if value.is_null() {
                nulls += 1;
                assert!(record.is_missing(name), "{name} is null: missing");
                assert_eq!(record.field(name), None, "{name}");
            } else if let Some(number) = value.as_f64() {
                assert_eq!(record.field(name), Some(number), "{name}");
                assert!(!record.is_missing(name), "{name}");
            } else {
                assert_eq!(record.field(name), None, "{name} is not a number");
                assert!(!record.is_missing(name), "{name} is not a missing number");
            }
        }
        assert_eq!(nulls, 5, "four missing values and a NaN");
        // An absent field is neither a number nor missing.
        assert_eq!(record.field("no_such_field"), None);
        assert!(!record.is_missing("no_such_field"));
        // The features a baseline learns from: what `model` reads from the JSON Lines.
        let values = model::input::Row::from_json(&json, 1).unwrap().values;
        assert_eq!(
            record.feature_fields(),
            values.keys().cloned().collect::<Vec<_>>()
        );
        assert!(
            WindowRecord::feature_names().eq(WindowRecord::empty()
                .feature_fields()
                .iter()
                .map(String::as_str)),
            "an empty record has every feature"
        );
    }

    #[test]
    fn the_missing_list_names_the_null_fields_in_json_order() {
        let record = WindowRecord::build(WindowInputs {
            timestamp: std::time::UNIX_EPOCH,
            window_s: 5.0,
            node: "n",
            devices: vec![],
            slow_io_events: 0,
            events_lost: 0,
            // Every PSI share missing, and the throttling and the system's reads too.
            psi: PsiWindow::default(),
            throttling: None,
            system: SystemFeatures::default(),
            programs: BTreeMap::new(),
        });
        let json = serde_json::to_value(&record).unwrap();
        let nulls: Vec<&String> = json
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, value)| value.is_null())
            .map(|(name, _)| name)
            .collect();
        assert!(!nulls.is_empty());
        assert_eq!(record.missing.iter().collect::<Vec<_>>(), nulls);
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
