//! How a window's inputs (device samples, pressure, throttling, system features) become a
//! record.

use std::collections::BTreeMap;

use collector_common::{LATENCY_BUCKETS, op};

use super::{DeviceRecord, LatencyHistogram, ProgramWindow, RECORD_SCHEMA_VERSION, WindowRecord};
use crate::{
    window::pressure::{PsiWindow, ThrottlingWindow},
    window::system::SystemFeatures,
    window::{DeviceWindow, histogram_quantile_us, rate},
};

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
}
