//! What the daemon shows the world: one shared snapshot, updated once per window, and a
//! Prometheus collector that encodes it on every scrape (OpenMetrics text, prometheus-client).
//!
//! Label sets are bounded: `state` has three values, `feature` the window record's fixed field
//! names, `device` the node's block devices, `program` and `signal` the object's fixed lists,
//! `rank` 1..=3.

pub mod http;

use std::{
    borrow::Cow,
    collections::{BTreeMap, VecDeque},
    sync::{Arc, RwLock},
    time::{Instant, SystemTime},
};

use collector_common::LATENCY_BUCKETS;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use serde::Serialize;

use crate::{
    kernel::{AttachReport, HookOutcome},
    window::record::WindowRecord,
};

/// How many recent windows `/state` returns.
pub const RECENT_WINDOWS: usize = 12;

/// The node's health as the daemon last judged it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// Learning (no model or baseline yet), healthy or degraded.
    pub state: crate::judge::NodeState,
    pub score: f64,
    pub threshold: f64,
    /// Cluster of the last window, when the model has one.
    pub cluster: Option<usize>,
    /// Top features pushing the window away from healthy: (feature, z-distance).
    pub explanation: Vec<(String, f64)>,
    /// When the state last changed (RFC 3339).
    pub since: String,
    #[serde(skip)]
    pub since_instant: Instant,
    pub transitions: u64,
}

impl Health {
    /// The node's rank for schedulers, 0–100 (see [`crate::rank`]).
    pub fn rank(&self) -> f64 {
        model::rank::rank(self.state.as_str(), self.score, self.threshold)
    }
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: crate::judge::NodeState::Learning,
            score: 0.0,
            threshold: 0.0,
            cluster: None,
            explanation: Vec::new(),
            since: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            since_instant: Instant::now(),
            transitions: 0,
        }
    }
}

/// What the model in use is (the judge says), for `nodestate_model_info`.
pub use crate::judge::ModelInfo;

/// Everything the exporter shows, updated by the daemon once per window.
#[derive(Debug)]
pub struct ExporterState {
    pub node: String,
    pub started: Instant,
    pub health: Health,
    pub model: Option<ModelInfo>,
    /// SIGHUP reloads that refused the model file (the old model was kept).
    pub model_reload_failures: u64,
    /// Ready once the programs are attached and a model or baseline is in place.
    pub programs_attached: bool,
    pub recent: VecDeque<WindowRecord>,
    pub windows_total: u64,
    pub events_lost_total: u64,
    pub slow_io_events_total: u64,
    /// Cumulative runs and run time (ns) per program, from sampled windows.
    pub program_totals: BTreeMap<String, (u64, u64)>,
    /// Cumulative block latency histogram per device: buckets and sum in seconds.
    pub block_latency: BTreeMap<String, ([u64; LATENCY_BUCKETS], f64)>,
    /// (signal id, signal, kind, outcome) of every signal at start-up.
    pub probes: Vec<(String, String, String, String)>,
    /// The XDP drop list's counters, when it is attached somewhere.
    pub xdp: Option<crate::xdp::store::DropMetrics>,
    /// (interface, mode) the XDP program is attached to.
    pub xdp_interfaces: Vec<(String, String)>,
    /// Automatic flood blocking's counters, when it is on.
    pub auto_block: Option<crate::xdp::autoblock::AutoBlockMetrics>,
    /// Failed reads of the files windows are made from, by source (and re-opens).
    pub read_errors: crate::window::procfile::ReadErrors,
    /// Windows with a missing value.
    pub partial_windows_total: u64,
    /// HTTP connections closed at accept because every slot was taken.
    pub http_connections_refused_total: u64,
    /// The daemon's own syscalls and thread spawns, which the programs leave out of the
    /// node's features (cumulative; see `kernel::KernelConfig::exclude_tgid`).
    pub own_events: Option<crate::kernel::OwnEvents>,
}

/// Rules shown by name in the XDP drop metrics; the rest are summed as `rule="other"`. Kept
/// with the drop list, which reads them, so the list never imports the exporter.
pub use crate::xdp::TOP_RULES as XDP_TOP_RULES;

impl ExporterState {
    pub fn new(node: String) -> Self {
        Self {
            node,
            started: Instant::now(),
            health: Health::default(),
            model: None,
            model_reload_failures: 0,
            programs_attached: false,
            recent: VecDeque::with_capacity(RECENT_WINDOWS),
            windows_total: 0,
            events_lost_total: 0,
            slow_io_events_total: 0,
            program_totals: BTreeMap::new(),
            block_latency: BTreeMap::new(),
            probes: Vec::new(),
            xdp: None,
            xdp_interfaces: Vec::new(),
            auto_block: None,
            read_errors: crate::window::procfile::ReadErrors::default(),
            partial_windows_total: 0,
            http_connections_refused_total: 0,
            own_events: None,
        }
    }

    pub fn set_probes(&mut self, reports: &[AttachReport]) {
        self.probes = reports
            .iter()
            .zip(crate::kernel::probes::SIGNALS)
            .map(|(report, plan)| {
                let outcome = match &report.outcome {
                    HookOutcome::Attached => "attached",
                    HookOutcome::Disabled => "disabled",
                    HookOutcome::Missing => "missing",
                    HookOutcome::Failed(_) => "failed",
                };
                (
                    plan.id.to_string(),
                    report.signal.to_string(),
                    report.kind.to_string(),
                    outcome.to_string(),
                )
            })
            .collect();
        self.programs_attached = reports
            .iter()
            .any(|report| report.outcome == HookOutcome::Attached);
    }

    /// Folds one finished window in.
    pub fn add_window(
        &mut self,
        record: &WindowRecord,
        device_histograms: &[(String, [u64; LATENCY_BUCKETS], u64)],
    ) {
        self.windows_total += 1;
        self.events_lost_total += record.events_lost;
        self.slow_io_events_total += record.block_slow_io_events;
        for (name, program) in &record.programs {
            let total = self.program_totals.entry(name.clone()).or_default();
            total.0 += program.runs;
            total.1 += program.run_time_ns;
        }
        for (device, buckets, sum_ns) in device_histograms {
            let (total, sum_s) = self
                .block_latency
                .entry(device.clone())
                .or_insert(([0; LATENCY_BUCKETS], 0.0));
            for (t, b) in total.iter_mut().zip(buckets) {
                *t += b;
            }
            *sum_s += *sum_ns as f64 / 1e9;
        }
        if self.recent.len() == RECENT_WINDOWS {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
    }

    /// Records a new judgement; counts a transition when the state changes.
    /// The judge's verdict on the last window, taken whole.
    pub fn set_health(&mut self, verdict: &crate::judge::Verdict) {
        let crate::judge::Verdict {
            state,
            score,
            threshold,
            cluster,
            ref explanation,
            anomalous: _,
        } = *verdict;
        let explanation = explanation.clone();
        if state != self.health.state {
            self.health.transitions += 1;
            self.health.since = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            self.health.since_instant = Instant::now();
        }
        self.health.state = state;
        self.health.score = score;
        self.health.threshold = threshold;
        self.health.cluster = cluster;
        self.health.explanation = explanation;
    }

    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.programs_attached {
            Err("kernel programs not attached")
        } else if self.model.is_none() {
            Err("no model yet: still learning this node's baseline")
        } else {
            Ok(())
        }
    }
}

pub type SharedState = Arc<RwLock<ExporterState>>;

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

/// Daemon CPU seconds (user + system) and resident bytes, from /proc/self.
fn process_usage() -> (f64, f64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start after ") ".
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            // SAFETY: sysconf has no preconditions.
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024.0)
        })
        .unwrap_or(0.0);
    (cpu, rss)
}

/// One metric family: (labels, value) pairs under one descriptor, as gauges or counters.
fn family(
    encoder: &mut DescriptorEncoder,
    metric_type: MetricType,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in series {
        let encoder = metric.encode_family(labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(*value).encode(encoder)?,
            _ => ConstGauge::new(*value).encode(encoder)?,
        }
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    family(encoder, MetricType::Gauge, name, help, unit, series)
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    family(encoder, MetricType::Counter, name, help, unit, series)
}

impl Collector for NodestateMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.state.read().map_err(|_| std::fmt::Error)?;
        let health = &state.health;
        let none: Vec<(&str, String)> = Vec::new();

        let states: Vec<_> = crate::judge::NodeState::ALL
            .iter()
            .map(|s| {
                (
                    vec![("state", s.as_str().to_string())],
                    f64::from(u8::from(health.state == *s)),
                )
            })
            .collect();
        gauges(
            &mut encoder,
            "nodestate_state",
            "1 for the node's current health state, 0 for the others",
            None,
            &states,
        )?;
        gauges(
            &mut encoder,
            "nodestate_anomaly_score",
            "Distance of the last window from the nearest healthy centroid (scaled units)",
            None,
            &[(none.clone(), health.score)],
        )?;
        gauges(
            &mut encoder,
            "nodestate_anomaly_threshold",
            "Score above which a window counts as anomalous",
            None,
            &[(none.clone(), health.threshold)],
        )?;
        gauges(
            &mut encoder,
            "nodestate_rank",
            "The node's rank for schedulers, 0-100, higher is healthier: healthy 60-100, learning 50, degraded 0-40",
            None,
            &[(none.clone(), health.rank())],
        )?;
        counters(
            &mut encoder,
            "nodestate_state_transitions",
            "Changes of the health state since the daemon started",
            None,
            &[(none.clone(), health.transitions as f64)],
        )?;
        gauges(
            &mut encoder,
            "nodestate_state_since",
            "Seconds since the health state last changed",
            Some(&Unit::Seconds),
            &[(none.clone(), health.since_instant.elapsed().as_secs_f64())],
        )?;
        gauges(
            &mut encoder,
            "nodestate_cluster",
            "Model cluster of the last window (-1 when there is none)",
            None,
            &[(none.clone(), health.cluster.map_or(-1.0, |c| c as f64))],
        )?;
        let explanation: Vec<_> = health
            .explanation
            .iter()
            .enumerate()
            .map(|(rank, (feature, z))| {
                (
                    vec![
                        ("rank", (rank + 1).to_string()),
                        ("feature", feature.clone()),
                    ],
                    *z,
                )
            })
            .collect();
        gauges(
            &mut encoder,
            "nodestate_explanation_z",
            "Top features pushing the last window away from healthy, by rank, as z-distance",
            None,
            &explanation,
        )?;
        counters(
            &mut encoder,
            "nodestate_model_reload_failures",
            "SIGHUP reloads that refused the model file and kept the old model (the log says why)",
            None,
            &[(none.clone(), state.model_reload_failures as f64)],
        )?;
        if let Some(model) = &state.model {
            gauges(
                &mut encoder,
                "nodestate_model_info",
                "The model in use",
                None,
                &[(
                    vec![
                        ("source", model.source.clone()),
                        ("version", model.version.clone()),
                        ("trained_at", model.trained_at.clone()),
                        ("k", model.k.to_string()),
                    ],
                    1.0,
                )],
            )?;
            if let Some(baseline) = &model.baseline {
                for (name, help, value) in [
                    (
                        "nodestate_baseline_windows_seen",
                        "Windows the learned baseline has seen since the daemon started",
                        baseline.windows_seen as f64,
                    ),
                    (
                        "nodestate_baseline_windows_kept",
                        "Windows the learned baseline keeps for its refresh (recent and sampled)",
                        baseline.windows_kept as f64,
                    ),
                    (
                        "nodestate_baseline_hours_covered",
                        "Hours from the oldest window the learned baseline keeps to the newest",
                        baseline.hours_covered,
                    ),
                    (
                        "nodestate_baseline_floor_applies",
                        "1 while the learned baseline's threshold is held at its conservative floor",
                        f64::from(u8::from(baseline.floor_applies)),
                    ),
                ] {
                    gauges(&mut encoder, name, help, None, &[(none.clone(), value)])?;
                }
            }
        }

        if let Some(latest) = state.recent.back() {
            let value = serde_json::to_value(latest).map_err(|_| std::fmt::Error)?;
            let features: Vec<_> = value
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(name, _)| !matches!(name.as_str(), "unix_ms" | "schema"))
                .filter_map(|(name, v)| Some((vec![("feature", name.clone())], v.as_f64()?)))
                .collect();
            gauges(
                &mut encoder,
                "nodestate_feature",
                "The last window's features (see docs/window-record.md for names and units)",
                None,
                &features,
            )?;
        }

        // Block latency histograms, cumulative since start, in the kernel's log2 buckets.
        let mut metric = encoder.encode_descriptor(
            "nodestate_block_io_latency",
            "Block request latency, issue to completion, per device",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (device, (buckets, sum_s)) in &state.block_latency {
            let mut cumulative = 0u64;
            let bounds: Vec<(f64, u64)> = buckets
                .iter()
                .enumerate()
                .map(|(index, count)| {
                    cumulative += count;
                    // The last log2 bucket is open-ended: Prometheus calls that +Inf.
                    let upper = if index + 1 == LATENCY_BUCKETS {
                        f64::INFINITY
                    } else {
                        crate::window::bucket_bounds_us(index).1 / 1e6
                    };
                    (upper, *count)
                })
                .collect();
            let labels = vec![("device", device.clone())];
            let mut family = metric.encode_family(&labels)?;
            family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                *sum_s, cumulative, &bounds, None,
            )?;
        }

        counters(
            &mut encoder,
            "nodestate_windows",
            "Windows processed",
            None,
            &[(none.clone(), state.windows_total as f64)],
        )?;
        // Every source is listed (0 until it fails), so a rate() sees the first failure.
        let sources = [
            crate::window::procfile::source::PROC_STAT,
            crate::window::procfile::source::PROC_VMSTAT,
            crate::window::procfile::source::PSI,
            crate::window::procfile::source::CGROUP_CPU_STAT,
            crate::window::procfile::source::CONNTRACK,
            crate::window::procfile::source::SYSFS_BLOCK,
        ];
        let by_source = |counts: &BTreeMap<&'static str, u64>| -> Vec<(Vec<(&str, String)>, f64)> {
            sources
                .iter()
                .map(|source| {
                    (
                        vec![("source", (*source).to_string())],
                        counts.get(source).copied().unwrap_or(0) as f64,
                    )
                })
                .collect()
        };
        counters(
            &mut encoder,
            "nodestate_read_errors",
            "Failed reads of the files windows are made from; the features they give are missing \
             (null) in those windows, never 0",
            None,
            &by_source(&state.read_errors.total),
        )?;
        counters(
            &mut encoder,
            "nodestate_read_reopens",
            "Kept-open files opened again after a read on their descriptor failed",
            None,
            &by_source(&state.read_errors.reopens),
        )?;
        counters(
            &mut encoder,
            "nodestate_partial_windows",
            "Windows with a missing value (`partial` in the window record)",
            None,
            &[(none.clone(), state.partial_windows_total as f64)],
        )?;
        counters(
            &mut encoder,
            "nodestate_http_connections_refused",
            "HTTP connections closed at accept because every connection slot was taken",
            None,
            &[(none.clone(), state.http_connections_refused_total as f64)],
        )?;
        counters(
            &mut encoder,
            "nodestate_events_lost",
            "Events the kernel could not hand over because a ring buffer was full",
            None,
            &[(
                vec![("ring", "slow_io".to_string())],
                state.events_lost_total as f64,
            )],
        )?;
        if let Some(own) = &state.own_events {
            counters(
                &mut encoder,
                "nodestate_own_syscalls",
                "Syscalls of the daemon itself while the syscall hook was on: left out of the \
                 node's syscall features, counted here",
                None,
                &[(none.clone(), own.syscalls as f64)],
            )?;
            counters(
                &mut encoder,
                "nodestate_own_forks",
                "Threads the daemon itself started: left out of the node's fork rate, counted \
                 here",
                None,
                &[(none.clone(), own.forks as f64)],
            )?;
        }
        counters(
            &mut encoder,
            "nodestate_slow_io_events",
            "Block requests over the slow-I/O threshold received",
            None,
            &[(none.clone(), state.slow_io_events_total as f64)],
        )?;
        let runs: Vec<_> = state
            .program_totals
            .iter()
            .map(|(name, (runs, _))| (vec![("program", name.clone())], *runs as f64))
            .collect();
        counters(
            &mut encoder,
            "nodestate_program_runs",
            "Runs of each kernel program while run-time statistics were on (see --program-stats)",
            None,
            &runs,
        )?;
        let run_time: Vec<_> = state
            .program_totals
            .iter()
            .map(|(name, (_, ns))| (vec![("program", name.clone())], *ns as f64 / 1e9))
            .collect();
        counters(
            &mut encoder,
            "nodestate_program_run",
            "Run time of each kernel program while run-time statistics were on",
            Some(&Unit::Seconds),
            &run_time,
        )?;
        let probes: Vec<_> = state
            .probes
            .iter()
            .map(|(id, _, kind, outcome)| {
                (
                    vec![
                        ("signal", id.clone()),
                        ("kind", kind.clone()),
                        ("outcome", outcome.clone()),
                    ],
                    1.0,
                )
            })
            .collect();
        gauges(
            &mut encoder,
            "nodestate_probe",
            "Each signal's hook on this kernel: kind (kprobe, tracepoint, raw_tracepoint, none) and outcome",
            None,
            &probes,
        )?;
        if let Some(xdp) = &state.xdp {
            let totals = [
                ("passed", xdp.totals.passed),
                ("dropped", xdp.totals.dropped),
                ("malformed", xdp.totals.malformed),
                ("non_ip", xdp.totals.non_ip),
                ("expired", xdp.totals.expired),
            ];
            let series: Vec<_> = totals
                .iter()
                .map(|(verdict, count)| (vec![("verdict", (*verdict).to_string())], *count as f64))
                .collect();
            counters(
                &mut encoder,
                "nodestate_xdp_packets",
                "Packets seen by the XDP drop list, by verdict (malformed, non-IP and expired-rule packets pass)",
                None,
                &series,
            )?;
            let mut packets: Vec<_> = xdp
                .top
                .iter()
                .map(|(rule, packets, _)| (vec![("rule", rule.clone())], *packets as f64))
                .collect();
            packets.push((
                vec![("rule", "other".to_string())],
                xdp.other_packets as f64,
            ));
            counters(
                &mut encoder,
                "nodestate_xdp_rule_dropped_packets",
                "Packets dropped per rule: the top rules by name, the rest as rule=\"other\"",
                None,
                &packets,
            )?;
            let mut bytes: Vec<_> = xdp
                .top
                .iter()
                .map(|(rule, _, bytes)| (vec![("rule", rule.clone())], *bytes as f64))
                .collect();
            bytes.push((vec![("rule", "other".to_string())], xdp.other_bytes as f64));
            counters(
                &mut encoder,
                "nodestate_xdp_rule_dropped",
                "Bytes dropped per rule, like nodestate_xdp_rule_dropped_packets",
                Some(&Unit::Bytes),
                &bytes,
            )?;
            counters(
                &mut encoder,
                "nodestate_xdp_sweeps_postponed",
                "Windows whose drop-list TTL sweep was put off because another process held the \
                 list's edit lock (the program ignores expired rules meanwhile)",
                None,
                &[(none.clone(), xdp.sweeps_postponed as f64)],
            )?;
            gauges(
                &mut encoder,
                "nodestate_xdp_rules",
                "Rules on the XDP drop list",
                None,
                &[(none.clone(), xdp.rules as f64)],
            )?;
            let interfaces: Vec<_> = state
                .xdp_interfaces
                .iter()
                .map(|(interface, mode)| {
                    (
                        vec![("interface", interface.clone()), ("mode", mode.clone())],
                        1.0,
                    )
                })
                .collect();
            gauges(
                &mut encoder,
                "nodestate_xdp_attached",
                "Interfaces the XDP drop list is attached to, and in which mode",
                None,
                &interfaces,
            )?;
        }
        if let Some(auto) = &state.auto_block {
            counters(
                &mut encoder,
                "nodestate_autoblock_rules_added",
                "Rules the automatic flood blocking added to the XDP drop list",
                None,
                &[(none.clone(), auto.rules_added as f64)],
            )?;
            gauges(
                &mut encoder,
                "nodestate_autoblock_active_rules",
                "Automatic rules on the XDP drop list now",
                None,
                &[(none.clone(), auto.active_rules as f64)],
            )?;
            let refused = [
                ("allowlist", auto.refused_allowlisted),
                ("max_rules", auto.refused_max_rules),
                ("error", auto.failed),
            ];
            let series: Vec<_> = refused
                .iter()
                .map(|(reason, count)| (vec![("reason", (*reason).to_string())], *count as f64))
                .collect();
            counters(
                &mut encoder,
                "nodestate_autoblock_refused",
                "Flood sources not blocked, once per window: allow-listed (or an own address), \
                 the automatic rule limit reached, or an error (logged)",
                None,
                &series,
            )?;
        }
        let (cpu, rss) = process_usage();
        counters(
            &mut encoder,
            "nodestate_process_cpu",
            "CPU time used by the daemon (user + system)",
            Some(&Unit::Seconds),
            &[(none.clone(), cpu)],
        )?;
        gauges(
            &mut encoder,
            "nodestate_process_resident_memory",
            "Resident memory of the daemon",
            Some(&Unit::Bytes),
            &[(none, rss)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        state.block_latency.insert("vda".into(), (buckets, 0.25));
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

    #[test]
    fn readiness_needs_programs_and_a_model() {
        let mut state = ExporterState::new("n".into());
        assert!(state.ready().is_err());
        state.programs_attached = true;
        assert_eq!(
            state.ready(),
            Err("no model yet: still learning this node's baseline")
        );
        state.model = Some(ModelInfo::default());
        assert_eq!(state.ready(), Ok(()));
    }
}
