//! What the daemon shows the world: one shared snapshot, updated once per window, and a
//! Prometheus collector that encodes it on every scrape (OpenMetrics text, prometheus-client).
//!
//! `state.rs` holds the snapshot ([`ExporterState`]); `families/` encodes it, one file per
//! group of metric families (health, features, devices, collection, programs, XDP, process);
//! `http.rs` serves it.
//!
//! Label sets are bounded: `state` has three values, `feature` the window record's fixed field
//! names, `device` the node's block devices, `program` and `signal` the object's fixed lists,
//! `rank` 1..=3.

mod families;
pub mod http;
pub mod liveness;
pub mod page;
mod state;

use std::borrow::Cow;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

pub use state::{
    AttributionStats, AttributionView, DEFAULT_HISTORY_LEN, DeviceLatency, ExporterState, Health,
    HistoryPoint, MAX_HISTORY_LEN, MetricSet, ModelInfo, RECENT_WINDOWS, SharedState, WorkloadRow,
    WorkloadsView, XDP_TOP_RULES, signal_rates,
};

/// Encodes [`ExporterState`] on each scrape.
#[derive(Debug)]
pub struct NodestateMetrics {
    state: SharedState,
}

/// The registry `/metrics` serves: our collector, then any extra sources (the XDP blocklist),
/// with a `node` label on every series.
pub fn registry(state: SharedState, extra: Vec<Box<dyn Collector>>) -> Registry {
    let node = state.read().expect("exporter state lock").node.clone();
    let mut registry =
        Registry::with_labels([(Cow::Borrowed("node"), Cow::Owned(node))].into_iter());
    registry.register_collector(Box::new(NodestateMetrics { state }));
    for collector in extra {
        registry.register_collector(collector);
    }
    registry
}

impl Collector for NodestateMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.state.read().map_err(|_| std::fmt::Error)?;
        families::health::encode(&mut encoder, &state)?;
        // The culprits are in every set: at most 3 series, only while degraded.
        families::culprits::encode(&mut encoder, &state)?;
        // The judged features in every set (fleet training reads them), the volumes and the
        // per-device detail only when asked for (`--metrics full`): a fleet of nodes scraping
        // every 5 s cannot afford ~40 more + 34 per device series each.
        families::features::encode(&mut encoder, &state)?;
        if state.metric_set == MetricSet::Full {
            families::devices::encode(&mut encoder, &state)?;
        }
        families::collection::encode(&mut encoder, &state)?;
        families::programs::encode(&mut encoder, &state)?;
        families::xdp::encode(&mut encoder, &state)?;
        families::attribution::encode(&mut encoder, &state)?;
        families::process::encode(&mut encoder)?;
        families::build_info::encode(&mut encoder)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use collector_common::LATENCY_BUCKETS;

    use super::*;
    use crate::window::record::WindowRecord;
    use crate::xdp::store::{DropMetrics, Totals};

    fn scrape(state: ExporterState) -> String {
        let registry = registry(Arc::new(RwLock::new(state)), Vec::new());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn state_enum_explanation_histogram_and_xdp_series() {
        let mut state = ExporterState::new("node-a".into());
        state.metric_set = MetricSet::Full;
        state.set_health(&crate::judge::Verdict {
            state: crate::judge::NodeState::Degraded,
            score: 12.5,
            threshold: 4.0,
            cluster: Some(2),
            explanation: vec![("proc_exits_nonzero_per_s".into(), 56.7)],
            anomalous: true,
        });
        let mut buckets = [0u64; LATENCY_BUCKETS];
        buckets[3] = 5;
        buckets[LATENCY_BUCKETS - 1] = 1;
        state.block_latency.insert(
            "vda".into(),
            DeviceLatency {
                buckets,
                sum_s: 0.25,
            },
        );
        state.xdp = Some(DropMetrics {
            top: vec![("10.0.0.0/8".into(), 40, 4000)],
            other_packets: 2,
            other_bytes: 200,
            totals: Totals {
                passed: 100,
                dropped: 42,
                malformed: 1,
                non_ip: 3,
                expired: 4,
            },
            automatic_rules: 2,
            rules: 9,
            sweeps_postponed: 5,
        });
        state.xdp_interfaces = vec![("eth0".into(), "native".into())];
        state.auto_block = Some(crate::xdp::autoblock::AutoBlockMetrics {
            rules_added: 3,
            refused_allowlisted: 7,
            refused_max_rules: 0,
            failed: 1,
            active_rules: 2,
        });
        state.own_events = Some(crate::kernel::OwnEvents {
            syscalls: 1234,
            forks: 5,
        });
        let mut block = [0; collector_common::counter::COUNT as usize];
        block[collector_common::counter::SLOW_IO_PRODUCED as usize] = 99;
        block[collector_common::counter::COMPLETE_UNMATCHED as usize] = 3;
        block[collector_common::counter::COMPLETE_WITHOUT_SECTORS as usize] = 7;
        block[collector_common::counter::INFLIGHT_STALE_EVICTED as usize] = 11;
        state.kernel_accounting = Some(crate::kernel::KernelAccounting {
            block,
            runs_skipped: 2,
            socket_state_unreadable: 4,
            exit_unreadable: 6,
            own: crate::kernel::OwnEvents::default(),
        });
        let text = scrape(state);
        for expected in [
            r#"nodestate_state{node="node-a",state="degraded"} 1"#,
            r#"nodestate_state{node="node-a",state="healthy"} 0"#,
            r#"nodestate_state_transitions_total{node="node-a"} 1"#,
            r#"nodestate_anomaly_score{node="node-a"} 12.5"#,
            r#"nodestate_rank{node="node-a"} 9.69696"#,
            r#"nodestate_cluster{node="node-a"} 2"#,
            r#"nodestate_explanation_z{node="node-a",rank="1",feature="proc_exits_nonzero_per_s"} 56.7"#,
            r#"nodestate_block_io_latency_seconds_count{node="node-a",device="vda"} 6"#,
            r#"nodestate_block_io_latency_seconds_bucket{node="node-a",le="+Inf",device="vda"} 6"#,
            r#"nodestate_xdp_packets_total{node="node-a",verdict="dropped"} 42"#,
            r#"nodestate_xdp_packets_total{node="node-a",verdict="expired"} 4"#,
            r#"nodestate_xdp_sweeps_postponed_total{node="node-a"} 5"#,
            r#"nodestate_xdp_rules{node="node-a"} 9"#,
            r#"nodestate_xdp_rule_dropped_packets_total{node="node-a",rule="10.0.0.0/8"} 40"#,
            r#"nodestate_xdp_rule_dropped_packets_total{node="node-a",rule="other"} 2"#,
            r#"nodestate_xdp_attached{node="node-a",interface="eth0",mode="native"} 1"#,
            r#"nodestate_autoblock_rules_added_total{node="node-a"} 3"#,
            r#"nodestate_autoblock_active_rules{node="node-a"} 2"#,
            r#"nodestate_autoblock_refused_total{node="node-a",reason="allowlist"} 7"#,
            r#"nodestate_autoblock_refused_total{node="node-a",reason="error"} 1"#,
            r#"nodestate_own_syscalls_total{node="node-a"} 1234"#,
            r#"nodestate_own_forks_total{node="node-a"} 5"#,
            r#"nodestate_block_accounting_total{node="node-a",event="complete_unmatched"} 3"#,
            r#"nodestate_block_accounting_total{node="node-a",event="complete_without_sectors"} 7"#,
            r#"nodestate_block_accounting_total{node="node-a",event="issue_unreadable"} 0"#,
            r#"nodestate_block_accounting_total{node="node-a",event="inflight_stale_evicted"} 11"#,
            r#"nodestate_program_runs_skipped_total{node="node-a"} 2"#,
            r#"nodestate_socket_state_unreadable_total{node="node-a"} 4"#,
            r#"nodestate_exit_unreadable_total{node="node-a"} 6"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
        // The bucket under 16 µs holds the 5 fast requests, cumulatively.
        assert!(
            text.contains(r#"le="1.6e-5",device="vda"} 5"#)
                || text.contains(r#"le="0.000016",device="vda"} 5"#),
            "{text}"
        );
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }

    fn degraded_with_culprits(state: &mut ExporterState, degraded: bool) {
        use crate::judge::culprits::{Attribution, Blame, Signal};
        state.set_health(&crate::judge::Verdict {
            state: if degraded {
                crate::judge::NodeState::Degraded
            } else {
                crate::judge::NodeState::Healthy
            },
            score: 9.0,
            threshold: 4.0,
            cluster: Some(0),
            explanation: vec![("psi_io_some_pct".into(), 11.0)],
            anomalous: degraded,
        });
        let blame = |namespace: &str, pod: &str, container: &str, share: f64| Blame {
            workload: crate::workload::Workload {
                namespace: namespace.into(),
                pod: pod.into(),
                container: container.into(),
                name: format!("{namespace}/{pod} ({container})"),
            },
            signal: Signal::IoIssued,
            share,
            rate: 100.0,
            baseline: 1.0,
        };
        state.culprits = Attribution {
            culprits: vec![
                blame("shop", "db-0", "postgres", 0.87),
                blame("", "", "backup.service", 0.1),
                blame("", "", "exited cgroup 42", 0.02),
                blame("", "", "never-shown", 0.01),
            ],
            victims: Vec::new(),
        };
    }

    #[test]
    fn the_culprit_gauge_names_the_top_three_only_while_degraded() {
        let mut state = ExporterState::new("node-a".into());
        degraded_with_culprits(&mut state, true);
        let text = scrape(state);
        for expected in [
            r#"nodestate_culprit_share{node="node-a",namespace="shop",pod="db-0",container="postgres",signal="io_issued"} 0.87"#,
            r#"nodestate_culprit_share{node="node-a",namespace="",pod="",container="backup.service",signal="io_issued"} 0.1"#,
            r#"nodestate_culprit_share{node="node-a",namespace="",pod="",container="exited cgroup 42",signal="io_issued"} 0.02"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
        assert!(!text.contains("never-shown"), "{text}");
        // Healthy again: the series are gone.
        let mut state = ExporterState::new("node-a".into());
        degraded_with_culprits(&mut state, false);
        let text = scrape(state);
        assert!(
            text.contains("# TYPE nodestate_culprit_share gauge"),
            "{text}"
        );
        assert!(!text.contains("nodestate_culprit_share{"), "{text}");
    }

    /// Every family's name, type, unit and HELP text, and every series' labels, in the order
    /// `/metrics` lists them, for a state with every family in it: the scrape with the values
    /// left out (they are checked elsewhere), compared with `testdata/scrape-skeleton.txt`.
    /// Regenerate that file with `NODESTATE_BLESS=1` only when a change is meant.
    #[test]
    fn families_names_help_labels_and_order_are_as_recorded() {
        let mut state = ExporterState::new("node-a".into());
        state.metric_set = MetricSet::Full;
        state.set_health(&crate::judge::Verdict {
            state: crate::judge::NodeState::Healthy,
            score: 1.5,
            threshold: 4.0,
            cluster: Some(0),
            explanation: vec![
                ("tcp_resets_per_s".into(), 1.2),
                ("fsyncs_per_s".into(), -0.4),
            ],
            anomalous: false,
        });
        state.model = Some(ModelInfo {
            source: "file".into(),
            version: "1".into(),
            trained_at: "2026-12-03T00:00:00Z".into(),
            k: 3,
            baseline: None,
            saved_baseline: Some(crate::judge::saved::SavedBaselineInfo {
                path: "/var/lib/nodestate/baseline.json".into(),
                restored: true,
                saves: 2,
                ..Default::default()
            }),
        });
        state.add_window(&WindowRecord::populated());
        state
            .block_latency
            .insert("vda".into(), DeviceLatency::default());
        state
            .program_totals
            .insert("block_rq_issue".into(), (10, 1000));
        state.probes = vec![(
            "oom".into(),
            "OOM kills".into(),
            "tracepoint".into(),
            "attached".into(),
        )];
        state.xdp = Some(crate::xdp::store::DropMetrics {
            top: vec![("192.0.2.0/24".into(), 1, 64)],
            ..Default::default()
        });
        state.xdp_interfaces = vec![("eth0".into(), "native".into())];
        state.auto_block = Some(crate::xdp::autoblock::AutoBlockMetrics::default());
        state.own_events = Some(crate::kernel::OwnEvents {
            syscalls: 1,
            forks: 1,
        });
        state.kernel_accounting = Some(crate::kernel::KernelAccounting::default());
        state.attribution = Some(AttributionView {
            mode: crate::window::cgroups::CgroupMode::V1 {
                hierarchy: "memory",
            },
            describe: String::new(),
            window: Default::default(),
            totals: Vec::new(),
            counters: Default::default(),
        });
        let text = scrape(state);
        let skeleton: String = text
            .lines()
            .map(|line| {
                if line.starts_with('#') {
                    format!("{line}\n")
                } else {
                    let (series, _value) = line.rsplit_once(' ').unwrap_or((line, ""));
                    // The build's labels change with every commit and compiler: recorded by
                    // name only.
                    if let Some(labels) = series.strip_prefix("nodestate_build_info{") {
                        let names: Vec<&str> = labels
                            .split("\",")
                            .filter_map(|pair| pair.split_once('=').map(|(name, _)| name))
                            .collect();
                        return format!("nodestate_build_info{{{}}}\n", names.join(","));
                    }
                    format!("{series}\n")
                }
            })
            .collect();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/export/testdata/scrape-skeleton.txt");
        if std::env::var_os("NODESTATE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &skeleton).unwrap();
        }
        let recorded = std::fs::read_to_string(&path).unwrap();
        assert_eq!(skeleton, recorded, "the scrape changed; full text:\n{text}");
    }

    #[test]
    fn feature_series_are_the_numbers_of_the_records_json() {
        let record = WindowRecord::populated();
        // What the exporter showed when it read the record's JSON: every number but
        // `unix_ms` and `schema`, in name order; nulls (missing values) have no series.
        let json = serde_json::to_value(&record).unwrap();
        let expected: Vec<(String, f64)> = json
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "unix_ms" | "schema"))
            .filter_map(|(name, value)| {
                Some((
                    format!(r#"nodestate_feature{{node="n",feature="{name}"}}"#),
                    value.as_f64()?,
                ))
            })
            .collect();
        let mut state = ExporterState::new("n".into());
        state.metric_set = MetricSet::Full;
        state.add_window(&record);
        let text = scrape(state);
        let shown: Vec<(String, f64)> = text
            .lines()
            .filter(|line| line.starts_with("nodestate_feature{"))
            .map(|line| {
                let (labels, value) = line.rsplit_once(' ').unwrap();
                (labels.to_string(), value.parse().unwrap())
            })
            .collect();
        assert!(expected.len() > 50, "{expected:?}");
        assert_eq!(shown, expected, "{text}");
        for window_field in ["window_s", "syscall_sample_fraction"] {
            assert!(
                text.contains(&format!(r#"feature="{window_field}""#)),
                "{text}"
            );
        }
    }

    #[test]
    fn device_histograms_come_with_the_record_and_accumulate() {
        use crate::window::record::{DeviceRecord, DeviceSample};
        let mut hist = [0u64; LATENCY_BUCKETS];
        hist[3] = 4;
        let window = crate::window::DeviceWindow {
            ops: [4, 0, 0, 0, 0],
            bytes: [16384, 0, 0, 0, 0],
            flushes: 0,
            completed: 4,
            errors: 0,
            inflight: 0,
            latency_sum_ns: 40_000,
            latency_hist: hist,
        };
        let mut record = WindowRecord::empty();
        record.block_devices.insert(
            "vdb".into(),
            DeviceRecord::new(&DeviceSample {
                name: "vdb".into(),
                major: 254,
                minor: 16,
                window,
                slow_io_events: 0,
            }),
        );
        let mut state = ExporterState::new("n".into());
        state.metric_set = MetricSet::Full;
        state.add_window(&record);
        state.add_window(&record);
        assert_eq!(state.block_latency["vdb"].buckets[3], 8);
        assert!((state.block_latency["vdb"].sum_s - 80e-6).abs() < 1e-12);
        let text = scrape(state);
        assert!(
            text.contains(r#"nodestate_block_io_latency_seconds_count{node="n",device="vdb"} 8"#),
            "{text}"
        );
    }

    /// The default set leaves out the volumes and the per-device detail and keeps what a
    /// fleet watches and trains on (the judged features); the model's training time is a
    /// value, not a label.
    #[test]
    fn the_default_set_has_the_judged_features_and_no_volume_or_device_series() {
        let full_state = |set: MetricSet| {
            let mut state = ExporterState::new("n".into());
            state.metric_set = set;
            state.model = Some(ModelInfo {
                source: "file".into(),
                version: "1".into(),
                trained_at: "2026-12-03T00:00:00Z".into(),
                k: 3,
                baseline: None,
                saved_baseline: None,
            });
            state.add_window(&WindowRecord::populated());
            state
                .block_latency
                .insert("vda".into(), DeviceLatency::default());
            state
                .program_totals
                .insert("block_rq_issue".into(), (10, 1000));
            state
        };
        let default = scrape(full_state(MetricSet::Default));
        let full = scrape(full_state(MetricSet::Full));
        for detail in [
            "nodestate_feature{node=\"n\",feature=\"syscalls_per_s\"}",
            "nodestate_feature{node=\"n\",feature=\"sched_context_switches_per_s\"}",
            "nodestate_feature{node=\"n\",feature=\"net_rx_bytes_per_s\"}",
            "nodestate_block_io_latency_seconds_bucket{",
            "nodestate_program_runs_total{",
        ] {
            assert!(
                !default.contains(detail),
                "{detail} in the default set:\n{default}"
            );
            assert!(
                full.contains(detail),
                "{detail} missing from the full set:\n{full}"
            );
        }
        // What fleet training reads from a fleet that scrapes the default set: every judged
        // field the window has, and the window's length for its step.
        let record = WindowRecord::populated();
        let judged: Vec<&str> = record
            .fields()
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| name)
            .filter(|name| model::signals::is_judged(name))
            .collect();
        assert!(judged.len() >= 15, "{judged:?}");
        for name in judged.iter().chain(&["window_s"]) {
            let series = format!("nodestate_feature{{node=\"n\",feature=\"{name}\"}}");
            assert!(default.contains(&series), "{series} missing:\n{default}");
        }
        for kept in [
            "nodestate_state{",
            "nodestate_anomaly_score{",
            "nodestate_anomaly_threshold{",
            "nodestate_rank{",
            "nodestate_state_last_change_timestamp_seconds{",
            "nodestate_events_lost_total{",
            "process_cpu_seconds_total{",
            "process_resident_memory_bytes{",
            r#"nodestate_model_trained_timestamp_seconds{node="n"} 1796256000"#,
        ] {
            assert!(default.contains(kept), "{kept} missing:\n{default}");
        }
        assert!(!default.contains("trained_at="), "{default}");
        let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(series(&default) + 60 < series(&full), "{default}");
    }

    #[test]
    fn build_info_carries_the_package_version_revision_and_compiler() {
        let text = scrape(ExporterState::new("node-a".into()));
        let line = text
            .lines()
            .find(|line| line.starts_with("nodestate_build_info{"))
            .unwrap_or_else(|| panic!("no nodestate_build_info in:\n{text}"));
        assert!(
            line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
        assert!(line.contains("revision=\""), "{line}");
        assert!(line.contains("rustc=\"rustc "), "{line}");
        let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert_eq!(value, 1.0, "{line}");
    }
}
