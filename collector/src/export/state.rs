//! The exporter's state: one snapshot the daemon updates once per window (health, totals,
//! histograms, the last windows) and every scrape, `/state` and `/rank` read.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, RwLock},
    time::{Instant, SystemTime},
};

use collector_common::LATENCY_BUCKETS;
use serde::Serialize;

use crate::{
    kernel::{AttachReport, HookOutcome},
    window::record::WindowRecord,
};

/// How many recent windows `/state` returns.
pub const RECENT_WINDOWS: usize = 12;

/// Judgements `/` draws by default: an hour of 5 s windows (the daemon sets the capacity from
/// its window length, see [`ExporterState::set_history_span`]).
pub const DEFAULT_HISTORY_LEN: usize = 720;
/// The page never keeps more points than this, whatever the window length (an hour of 1 s
/// windows; the page's SVG stays a few hundred KiB at most).
pub const MAX_HISTORY_LEN: usize = 3600;

/// One judged window, for the page's chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// End of the window, ms since the Unix epoch.
    pub unix_ms: u64,
    pub score: f64,
    pub threshold: f64,
    pub degraded: bool,
}

/// Which metric families `/metrics` serves (`--metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricSet {
    /// What a fleet scrapes and trains on: state, score, threshold, rank, explanation,
    /// culprits, model, the judged window features, drops and losses, the daemon's own cost,
    /// probes. About a hundred series per node.
    #[default]
    Default,
    /// Also the window's volumes (~40 more `nodestate_feature` series), the per-device block
    /// latency histograms (34 series per device) and per-program costs, for one node's
    /// dashboard.
    Full,
}

impl std::fmt::Display for MetricSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetricSet::Default => "default",
            MetricSet::Full => "full",
        })
    }
}

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
    /// When the state last changed, for `nodestate_state_last_change_timestamp_seconds`.
    #[serde(skip)]
    pub since_system: SystemTime,
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
            since_system: SystemTime::now(),
            transitions: 0,
        }
    }
}

/// What the model in use is (the judge says), for `nodestate_model_info`.
pub use crate::judge::ModelInfo;

/// One device's block latencies since the daemon started, in the kernel's log2 buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceLatency {
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of the latencies counted, seconds.
    pub sum_s: f64,
}

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
    /// Cumulative block latency histogram per device.
    pub block_latency: BTreeMap<String, DeviceLatency>,
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
    /// The block programs' bookkeeping and the program runs the kernel skipped (cumulative;
    /// `None` until the first window).
    pub kernel_accounting: Option<crate::kernel::KernelAccounting>,
    /// Which families `/metrics` serves.
    pub metric_set: MetricSet,
    /// The last hour's judgements, oldest first, for the page at `/`.
    pub history: VecDeque<HistoryPoint>,
    /// How many judgements `history` keeps.
    pub history_len: usize,
    /// Per-cgroup attribution: the last window's table and the kernel side's bookkeeping.
    pub attribution: Option<AttributionView>,
    /// The last window's culprits and victims (empty unless it was degraded).
    pub culprits: crate::judge::culprits::Attribution,
    /// The last window's per-workload table (`/workloads`, `collector top`); `None` while
    /// nothing produces per-cgroup counters.
    pub workloads: Option<WorkloadsView>,
    /// The resolver's counters (walks, exited cgroups, names that could not be read).
    pub attribution_stats: AttributionStats,
}

/// One workload's rates over the last window, per signal (per second; seconds per second for
/// the times).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WorkloadRow {
    #[serde(flatten)]
    pub workload: crate::workload::Workload,
    /// Cgroups that make it up.
    pub cgroups: usize,
    /// Signal name ([`crate::judge::culprits::Signal::as_str`]) → rate.
    pub rates: BTreeMap<String, f64>,
}

/// What `/workloads` serves: the last window, per workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct WorkloadsView {
    pub node: String,
    pub window_s: f64,
    pub state: String,
    pub workloads: Vec<WorkloadRow>,
    /// Events no cgroup could be charged with, and those of cgroups the table refused.
    pub unattributed: BTreeMap<String, f64>,
    pub refused: BTreeMap<String, f64>,
}

/// The attribution's own counters, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AttributionStats {
    pub walk: crate::workload::WalkStats,
    /// The runtimes' container lists that could not be read or parsed.
    pub container_name_errors: u64,
    /// Workload rows (one per pod container per window) that named a pod by its UID because
    /// the API had not named it (unreachable, refused, or not yet listed).
    pub pod_name_fallbacks: u64,
    /// Failed list or watch calls of the Kubernetes API (unreachable, 403, garbage).
    pub kube_api_errors: u64,
    /// Workloads with a baseline in the culprit ranking.
    pub tracked_workloads: u64,
    /// Baselines dropped at the ranking's bound of workloads (the least recently seen first).
    pub baselines_evicted: u64,
    /// Workloads an episode stopped following at the same bound (the least risen first).
    pub episode_workloads_evicted: u64,
}

/// Per-signal rates of one window's counters.
pub fn signal_rates(stats: &collector_common::CgroupStats, window_s: f64) -> BTreeMap<String, f64> {
    let window_s = if window_s > 0.0 { window_s } else { 1.0 };
    crate::judge::culprits::Signal::ALL
        .iter()
        .map(|signal| (signal.as_str().to_string(), signal.amount(stats) / window_s))
        .collect()
}

/// Per-cgroup attribution as of the last window (issue 20).
#[derive(Debug, Clone)]
pub struct AttributionView {
    pub mode: crate::window::cgroups::CgroupMode,
    /// The mode in words, with the hierarchy's mount (the start-up log's line).
    pub describe: String,
    /// What each cgroup did in the last window.
    pub window: crate::window::cgroups::CgroupTable,
    /// Cumulative per-cgroup counters since load, as last read.
    pub totals: Vec<(u64, collector_common::CgroupStats)>,
    pub counters: crate::kernel::AttributionCounters,
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
            kernel_accounting: None,
            culprits: Default::default(),
            workloads: None,
            attribution_stats: AttributionStats::default(),
            attribution: None,
            metric_set: MetricSet::default(),
            history: VecDeque::new(),
            history_len: DEFAULT_HISTORY_LEN,
        }
    }

    /// Keeps `span` (an hour) of judgements at one per `window`, at most [`MAX_HISTORY_LEN`].
    pub fn set_history_span(&mut self, span: std::time::Duration, window: std::time::Duration) {
        let per_window = window.as_secs_f64().max(1e-3);
        self.history_len =
            ((span.as_secs_f64() / per_window).ceil() as usize).clamp(1, MAX_HISTORY_LEN);
        while self.history.len() > self.history_len {
            self.history.pop_front();
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
    pub fn add_window(&mut self, record: &WindowRecord) {
        self.windows_total += 1;
        self.events_lost_total += record.events_lost;
        self.slow_io_events_total += record.block_slow_io_events;
        for (name, program) in &record.programs {
            let total = self.program_totals.entry(name.clone()).or_default();
            total.0 += program.runs;
            total.1 += program.run_time_ns;
        }
        for (device, window) in &record.block_devices {
            let total = self.block_latency.entry(device.clone()).or_default();
            for (t, b) in total.buckets.iter_mut().zip(&window.latency.buckets) {
                *t += b;
            }
            total.sum_s += window.latency.sum_ns as f64 / 1e9;
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
            self.health.since_system = SystemTime::now();
        }
        self.health.state = state;
        self.health.score = score;
        self.health.threshold = threshold;
        self.health.cluster = cluster;
        self.health.explanation = explanation;
        if self.history.len() >= self.history_len {
            self.history.pop_front();
        }
        self.history.push_back(HistoryPoint {
            unix_ms: SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64),
            score,
            threshold,
            degraded: state == crate::judge::NodeState::Degraded,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_an_hour_of_windows_and_no_more() {
        let mut state = ExporterState::new("n".into());
        state.set_history_span(
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(5),
        );
        assert_eq!(state.history_len, 720);
        for index in 0..800 {
            state.set_health(&crate::judge::Verdict {
                state: crate::judge::NodeState::Healthy,
                score: f64::from(index),
                threshold: 4.0,
                cluster: None,
                explanation: Vec::new(),
                anomalous: false,
            });
        }
        assert_eq!(state.history.len(), 720);
        assert_eq!(state.history.front().map(|p| p.score), Some(80.0));
        assert_eq!(state.history.back().map(|p| p.score), Some(799.0));
        // 1 ms windows would keep millions: capped.
        state.set_history_span(
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_millis(1),
        );
        assert_eq!(state.history_len, MAX_HISTORY_LEN);
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
