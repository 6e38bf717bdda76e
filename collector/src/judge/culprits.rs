//! Who is to blame for a degraded window (issue 20): workloads ranked by how much of the node's
//! rise in a cause-side signal is theirs. Pure arithmetic on the window's per-workload rows,
//! tested without a kernel.
//!
//! Per workload and signal a short recent baseline is kept (an exponentially weighted mean and
//! deviation of its per-second rate, learned from windows that were not anomalous). In a
//! degraded window a workload's *rise* is its rate above its own baseline (beyond three
//! deviations, so a steady volume earns no blame); its *share* of a signal is its rise over
//! the node's (the sum of every workload's rise, the unattributed events included, so shares
//! never add up to more than 100%). Which signals count is the verdict's: its top features
//! map to the per-cgroup signals that explain them ([`FEATURE_SIGNALS`]). Victims (waits and
//! latencies, which say who suffers, not who causes) are ranked the same way and listed apart.

use std::collections::HashMap;

use collector_common::CgroupStats;
use serde::Serialize;

use super::{NodeState, Verdict, field_matches};
use crate::workload::{Workload, WorkloadWindow};

/// The per-cgroup signals, cause side first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    OncpuTime,
    IoIssued,
    Errors,
    ExitsNonzero,
    FatalSignals,
    OomVictims,
    TcpFailures,
    RunqWait,
    IoLatency,
    ReclaimStall,
}

impl Signal {
    /// What a workload does to the node.
    pub const CAUSES: [Signal; 7] = [
        Signal::OncpuTime,
        Signal::IoIssued,
        Signal::Errors,
        Signal::ExitsNonzero,
        Signal::FatalSignals,
        Signal::OomVictims,
        Signal::TcpFailures,
    ];
    /// What the node does to a workload.
    pub const VICTIMS: [Signal; 3] = [Signal::RunqWait, Signal::IoLatency, Signal::ReclaimStall];
    pub const ALL: [Signal; 10] = [
        Signal::OncpuTime,
        Signal::IoIssued,
        Signal::Errors,
        Signal::ExitsNonzero,
        Signal::FatalSignals,
        Signal::OomVictims,
        Signal::TcpFailures,
        Signal::RunqWait,
        Signal::IoLatency,
        Signal::ReclaimStall,
    ];

    /// The metric label and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::OncpuTime => "oncpu_time",
            Signal::IoIssued => "io_issued",
            Signal::Errors => "errors",
            Signal::ExitsNonzero => "exits_nonzero",
            Signal::FatalSignals => "fatal_signals",
            Signal::OomVictims => "oom_victims",
            Signal::TcpFailures => "tcp_failures",
            Signal::RunqWait => "runq_wait",
            Signal::IoLatency => "io_latency",
            Signal::ReclaimStall => "reclaim_stall",
        }
    }

    /// In a sentence: "87% of I/O issued".
    pub fn describe(self) -> &'static str {
        match self {
            Signal::OncpuTime => "on-CPU time",
            Signal::IoIssued => "I/O issued",
            Signal::Errors => "syscall errors",
            Signal::ExitsNonzero => "non-zero exits",
            Signal::FatalSignals => "fatal signals",
            Signal::OomVictims => "OOM kills",
            Signal::TcpFailures => "TCP failures",
            Signal::RunqWait => "run-queue wait",
            Signal::IoLatency => "I/O wait",
            Signal::ReclaimStall => "reclaim stalls",
        }
    }

    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL
            .into_iter()
            .find(|signal| signal.as_str() == name)
    }

    /// The window's amount (seconds for times, counts for events).
    pub fn amount(self, stats: &CgroupStats) -> f64 {
        match self {
            Signal::OncpuTime => stats.oncpu_ns as f64 / 1e9,
            Signal::IoIssued => stats.io_ops as f64,
            Signal::Errors => stats.errors.iter().sum::<u64>() as f64,
            Signal::ExitsNonzero => stats.exits_nonzero as f64,
            Signal::FatalSignals => stats.fatal_signals as f64,
            Signal::OomVictims => stats.oom_victims as f64,
            Signal::TcpFailures => {
                (stats.tcp_retransmits + stats.tcp_resets + stats.tcp_connect_failures) as f64
            }
            Signal::RunqWait => stats.runq_wait_ns as f64 / 1e9,
            Signal::IoLatency => stats.io_latency_ns as f64 / 1e9,
            Signal::ReclaimStall => stats.reclaim_stall_ns as f64 / 1e9,
        }
    }
}

/// Memory pressure's causes: OOM kills, and the time a workload spends in direct reclaim.
/// Direct reclaim runs only in a task that is allocating while memory (the node's or its
/// cgroup's) is short, so its time is the per-cgroup sign of who charges memory under
/// pressure; there is no per-cgroup "memory charged" counter. It is a victim signal too: the
/// job that thrashes its own memory limit is both. With OOM kills alone, a job reclaiming its
/// page cache over and over (no kill) named no one.
const MEMORY_CAUSES: &[Signal] = &[Signal::OomVictims, Signal::ReclaimStall];

/// Which per-cgroup signals explain a node feature that moved: (feature pattern, causes,
/// victims). The first pattern matching a feature wins.
pub const FEATURE_SIGNALS: &[(&str, &[Signal], &[Signal])] = &[
    ("psi_cpu_*", &[Signal::OncpuTime], &[Signal::RunqWait]),
    ("cpu_throttled_*", &[Signal::OncpuTime], &[Signal::RunqWait]),
    ("sched_*", &[Signal::OncpuTime], &[Signal::RunqWait]),
    ("psi_io_*", &[Signal::IoIssued], &[Signal::IoLatency]),
    ("block_*", &[Signal::IoIssued], &[Signal::IoLatency]),
    ("fsync_*", &[Signal::IoIssued], &[Signal::IoLatency]),
    ("psi_memory_*", MEMORY_CAUSES, &[Signal::ReclaimStall]),
    ("mem_reclaim*", MEMORY_CAUSES, &[Signal::ReclaimStall]),
    (
        "mem_oom_kills",
        &[Signal::OomVictims],
        &[Signal::ReclaimStall],
    ),
    ("syscall_*", &[Signal::Errors], &[]),
    ("fd_*", &[Signal::Errors], &[]),
    (
        "proc_exits_nonzero_*",
        &[Signal::ExitsNonzero, Signal::FatalSignals],
        &[],
    ),
    (
        "proc_fatal_signals_*",
        &[Signal::FatalSignals, Signal::ExitsNonzero],
        &[],
    ),
    ("tcp_*", &[Signal::TcpFailures], &[]),
    ("net_*", &[Signal::TcpFailures], &[]),
    ("conntrack_*", &[Signal::TcpFailures], &[]),
];

/// The signals the verdict's moved features point to, each weighted by the largest |z| of a
/// feature pointing to it; `(causes, victims)`. Nothing mapped: every signal, weight 1.
/// Signals with their weights.
pub type Weighted = Vec<(Signal, f64)>;

pub fn moved_signals(explanation: &[(String, f64)]) -> (Weighted, Weighted) {
    let mut causes: Vec<(Signal, f64)> = Vec::new();
    let mut victims: Vec<(Signal, f64)> = Vec::new();
    let add = |list: &mut Vec<(Signal, f64)>, signal: Signal, weight: f64| match list
        .iter_mut()
        .find(|(s, _)| *s == signal)
    {
        Some((_, w)) => *w = w.max(weight),
        None => list.push((signal, weight)),
    };
    for (feature, z) in explanation {
        let weight = if z.is_finite() {
            z.abs().max(1e-3)
        } else {
            1.0
        };
        if let Some((_, cause, victim)) = FEATURE_SIGNALS
            .iter()
            .find(|(pattern, _, _)| field_matches(pattern, feature))
        {
            for signal in cause.iter() {
                add(&mut causes, *signal, weight);
            }
            for signal in victim.iter() {
                add(&mut victims, *signal, weight);
            }
        }
    }
    if causes.is_empty() {
        causes = Signal::CAUSES.iter().map(|s| (*s, 1.0)).collect();
    }
    if victims.is_empty() {
        victims = Signal::VICTIMS.iter().map(|s| (*s, 1.0)).collect();
    }
    (causes, victims)
}

/// One workload named for a degraded window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blame {
    #[serde(flatten)]
    pub workload: Workload,
    /// The signal where its share is largest.
    pub signal: Signal,
    /// Its share of the node's rise in that signal, 0–1.
    pub share: f64,
    /// Its rate in the window, per second (seconds per second for times).
    pub rate: f64,
    /// Its baseline rate.
    pub baseline: f64,
}

impl std::fmt::Display for Blame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}% of {}: {}",
            self.share * 100.0,
            self.signal.describe(),
            self.workload.name
        )
    }
}

/// The culprits and victims of one degraded window, best first (at most [`TOP`] each).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Attribution {
    pub culprits: Vec<Blame>,
    pub victims: Vec<Blame>,
}

/// How many culprits (and victims) are named.
pub const TOP: usize = 3;
/// A share below this names no one.
pub const MIN_SHARE: f64 = 0.05;
/// Weight of the newest window in a baseline (about the last ten windows count).
const ALPHA: f64 = 0.2;
/// A rise within this many deviations of the baseline is noise.
const STEADY_DEVIATIONS: f64 = 3.0;
/// A normal window is learned only once this many later windows were normal too: the onset
/// of a fault (its first, partial window, still under the threshold) must not become the
/// baseline the fault is then measured against. Learned, it raises the faulty workload's mean
/// and spread at once (one window weighs [`ALPHA`]), and its rise in the degraded windows
/// after is then partly or wholly within its "noise" (seen end to end with real containers).
const CONFIRM_AFTER: usize = 3;
/// Workloads unseen for this many windows are forgotten.
const FORGET_AFTER: u64 = 120;
/// At most this many workloads keep a baseline (the least recently seen go first).
pub const MAX_WORKLOADS: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    mean: f64,
    var: f64,
    seen: u32,
}

impl Ewma {
    fn update(&mut self, x: f64) {
        if self.seen == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            self.mean += ALPHA * diff;
            self.var = (1.0 - ALPHA) * (self.var + ALPHA * diff * diff);
        }
        self.seen = self.seen.saturating_add(1);
    }

    /// The part of `x` above what this baseline calls normal.
    fn excess(&self, x: f64) -> f64 {
        if self.seen == 0 {
            return x.max(0.0);
        }
        (x - self.mean - STEADY_DEVIATIONS * self.var.sqrt()).max(0.0)
    }
}

#[derive(Debug, Clone, Default)]
struct Baseline {
    signals: [Ewma; Signal::ALL.len()],
    last_seen: u64,
}

/// One window's per-signal rates, per workload and unattributed.
type Rates = [f64; Signal::ALL.len()];

/// A normal window waiting for [`CONFIRM_AFTER`] more before it is learned.
#[derive(Debug)]
struct Pending {
    window: u64,
    rows: Vec<(Workload, Rates)>,
    unattributed: Rates,
}

/// Keeps the baselines and ranks each degraded window.
#[derive(Debug, Default)]
pub struct CulpritRanker {
    workloads: HashMap<Workload, Baseline>,
    unattributed: Baseline,
    window: u64,
    /// Normal windows not learned yet, oldest first (at most [`CONFIRM_AFTER`]).
    pending: std::collections::VecDeque<Pending>,
}

fn rates(stats: &CgroupStats, window_s: f64) -> [f64; Signal::ALL.len()] {
    let window_s = if window_s > 0.0 { window_s } else { 1.0 };
    Signal::ALL.map(|signal| signal.amount(stats) / window_s)
}

impl CulpritRanker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Workloads with a baseline.
    pub fn tracked(&self) -> usize {
        self.workloads.len()
    }

    /// One window: rank it when the verdict is degraded, then learn from it when it was not
    /// anomalous and the next [`CONFIRM_AFTER`] windows were not either (a fault's windows,
    /// its onset included, never become the baseline it is measured against).
    pub fn window(
        &mut self,
        rows: &[WorkloadWindow],
        unattributed: &CgroupStats,
        window_s: f64,
        verdict: &Verdict,
    ) -> Option<Attribution> {
        self.window += 1;
        let rows: Vec<(&Workload, [f64; Signal::ALL.len()])> = rows
            .iter()
            .map(|row| (&row.workload, rates(&row.delta, window_s)))
            .collect();
        let unattributed = rates(unattributed, window_s);
        let attribution = (verdict.state == NodeState::Degraded).then(|| {
            let (causes, victims) = moved_signals(&verdict.explanation);
            Attribution {
                culprits: self.rank(&rows, &unattributed, &causes),
                victims: self.rank(&rows, &unattributed, &victims),
            }
        });
        if !verdict.anomalous && verdict.state != NodeState::Degraded {
            self.pending.push_back(Pending {
                window: self.window,
                rows: rows
                    .iter()
                    .map(|(workload, rates)| ((*workload).clone(), *rates))
                    .collect(),
                unattributed,
            });
            if self.pending.len() > CONFIRM_AFTER
                && let Some(confirmed) = self.pending.pop_front()
            {
                self.learn(&confirmed);
            }
        } else {
            // The windows just before an anomalous one may already carry the fault.
            self.pending.clear();
        }
        attribution
    }

    fn rank(
        &self,
        rows: &[(&Workload, [f64; Signal::ALL.len()])],
        unattributed: &[f64; Signal::ALL.len()],
        signals: &[(Signal, f64)],
    ) -> Vec<Blame> {
        let empty = Baseline::default();
        let excess = |baseline: &Baseline, rates: &[f64; Signal::ALL.len()], slot: usize| {
            baseline.signals[slot].excess(rates[slot])
        };
        // The node's rise per signal: every workload's, plus the unattributed events'.
        let slots: Vec<(Signal, usize, f64, f64)> = signals
            .iter()
            .filter_map(|&(signal, weight)| {
                let slot = Signal::ALL.iter().position(|s| *s == signal)?;
                let node: f64 = rows
                    .iter()
                    .map(|(workload, rates)| {
                        excess(self.workloads.get(*workload).unwrap_or(&empty), rates, slot)
                    })
                    .sum::<f64>()
                    + excess(&self.unattributed, unattributed, slot);
                (node > 0.0).then_some((signal, slot, weight, node))
            })
            .collect();
        let total_weight: f64 = slots.iter().map(|(_, _, weight, _)| weight).sum();
        if total_weight <= 0.0 {
            return Vec::new();
        }
        let mut blamed: Vec<(f64, Blame)> = rows
            .iter()
            .filter_map(|(workload, rates)| {
                let baseline = self.workloads.get(*workload).unwrap_or(&empty);
                let mut score = 0.0;
                let mut best: Option<(f64, Signal, f64, usize)> = None;
                for &(signal, slot, weight, node) in &slots {
                    let share = excess(baseline, rates, slot) / node;
                    score += weight * share;
                    if share > 0.0 && best.is_none_or(|(w, _, s, _)| weight * share > w * s) {
                        best = Some((weight, signal, share, slot));
                    }
                }
                let (_, signal, share, slot) = best?;
                (share >= MIN_SHARE).then(|| {
                    (
                        score / total_weight,
                        Blame {
                            workload: (*workload).clone(),
                            signal,
                            share,
                            rate: rates[slot],
                            baseline: baseline.signals[slot].mean,
                        },
                    )
                })
            })
            .collect();
        blamed.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.workload.cmp(&b.1.workload))
        });
        blamed
            .into_iter()
            .take(TOP)
            .map(|(_, blame)| blame)
            .collect()
    }

    fn learn(&mut self, pending: &Pending) {
        let Pending {
            window,
            rows,
            unattributed,
        } = pending;
        let window = *window;
        for (workload, rates) in rows {
            if !self.workloads.contains_key(workload) && self.workloads.len() >= MAX_WORKLOADS {
                self.forget_oldest();
            }
            let baseline = self.workloads.entry(workload.clone()).or_default();
            for (ewma, rate) in baseline.signals.iter_mut().zip(rates) {
                ewma.update(*rate);
            }
            baseline.last_seen = window;
        }
        // Workloads absent from a healthy window did nothing in it.
        for baseline in self.workloads.values_mut() {
            if baseline.last_seen != window {
                for ewma in baseline.signals.iter_mut() {
                    ewma.update(0.0);
                }
            }
        }
        for (ewma, rate) in self.unattributed.signals.iter_mut().zip(unattributed) {
            ewma.update(*rate);
        }
        let now = self.window;
        self.workloads
            .retain(|_, baseline| now.saturating_sub(baseline.last_seen) < FORGET_AFTER);
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .workloads
            .iter()
            .min_by_key(|(_, baseline)| baseline.last_seen)
            .map(|(workload, _)| workload.clone())
        {
            self.workloads.remove(&oldest);
        }
    }
}

/// The attribution stage of the daemon: names the window's cgroups, then ranks the culprits.
#[derive(Debug)]
pub struct Attributor {
    pub resolver: crate::workload::Resolver,
    pub ranker: CulpritRanker,
}

impl Attributor {
    pub fn new(resolver: crate::workload::Resolver) -> Self {
        Self {
            resolver,
            ranker: CulpritRanker::new(),
        }
    }

    /// One window: its per-workload rows, and its culprits when the verdict is degraded.
    pub fn window(
        &mut self,
        table: &crate::window::cgroups::CgroupTable,
        verdict: &Verdict,
    ) -> (Vec<WorkloadWindow>, Option<Attribution>) {
        let rows = self.resolver.workloads(table);
        let mut uncharged = table.unattributed;
        crate::workload::add_stats(&mut uncharged, &table.refused);
        let attribution = self
            .ranker
            .window(&rows, &uncharged, table.window_s, verdict);
        (rows, attribution)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str) -> Workload {
        Workload {
            namespace: String::new(),
            pod: String::new(),
            container: name.into(),
            name: name.into(),
        }
    }

    fn row(name: &str, oncpu_ms: u64, io_ops: u64, enospc: u64) -> WorkloadWindow {
        let mut delta = CgroupStats {
            oncpu_ns: oncpu_ms * 1_000_000,
            io_ops,
            io_latency_ns: io_ops * 1_000_000,
            ..CgroupStats::default()
        };
        delta.errors[collector_common::cgroup_errno::ENOSPC] = enospc;
        WorkloadWindow {
            workload: workload(name),
            delta,
            cgroups: 1,
        }
    }

    fn verdict(state: NodeState, explanation: &[(&str, f64)]) -> Verdict {
        Verdict {
            state,
            score: 0.0,
            threshold: 1.0,
            cluster: Some(0),
            explanation: explanation
                .iter()
                .map(|(feature, z)| (feature.to_string(), *z))
                .collect(),
            anomalous: state == NodeState::Degraded,
        }
    }

    /// A busy but steady database and a quiet batch job; the batch job starts hammering the
    /// disk. The database issues more I/O in total, yet its volume is its usual one: the batch
    /// job is named, the database is not, and the database shows up as a victim of I/O wait.
    #[test]
    fn the_workload_that_rose_is_blamed_not_the_busiest() {
        let mut ranker = CulpritRanker::new();
        let healthy = verdict(NodeState::Healthy, &[]);
        for n in 0..10 {
            let rows = [row("db", 400, 5000 + n * 10, 0), row("batch", 10, 20, 0)];
            assert_eq!(
                ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy),
                None
            );
        }
        let mut db = row("db", 400, 5050, 0);
        db.delta.io_latency_ns = 80_000_000_000;
        let rows = [db, row("batch", 40, 1800, 0)];
        let degraded = verdict(NodeState::Degraded, &[("psi_io_some_pct", 11.0)]);
        let unattributed = CgroupStats {
            io_ops: 200,
            ..CgroupStats::default()
        };
        let attribution = ranker
            .window(&rows, &unattributed, 1.0, &degraded)
            .expect("a degraded window is attributed");
        let culprits: Vec<String> = attribution.culprits.iter().map(|b| b.to_string()).collect();
        // 1780 of the node's 1780 + 200 (unattributed) rise.
        assert_eq!(culprits, vec!["90% of I/O issued: batch".to_string()]);
        assert_eq!(attribution.victims.len(), 1, "{attribution:?}");
        assert_eq!(attribution.victims[0].workload.name, "db");
        assert_eq!(attribution.victims[0].signal, Signal::IoLatency);
        // The fault's window did not become the baseline: the next one blames the same.
        let again = ranker
            .window(&rows, &unattributed, 1.0, &degraded)
            .expect("attributed");
        assert_eq!(again.culprits[0].workload.name, "batch");
    }

    /// A crash loop starts late in a window: that window is still judged normal (its share of
    /// the fault is too small to cross the threshold), the next ones are degraded. The onset
    /// window is not learned, so the crashing job's baseline stays at its quiet one and it is
    /// named with its whole rise; a normal window is learned only after later normal ones.
    #[test]
    fn the_onset_of_a_fault_is_not_learned_as_normal() {
        let crashing = |exits: u64| {
            let mut row = row("job", 10, 0, 0);
            row.delta.exits_nonzero = exits;
            row
        };
        let mut ranker = CulpritRanker::new();
        let healthy = verdict(NodeState::Healthy, &[]);
        for _ in 0..10 {
            let rows = [crashing(0), row("web", 100, 10, 0)];
            ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
        }
        // The onset: 40 crashes in the window's last moments, judged normal.
        let rows = [crashing(40), row("web", 100, 10, 0)];
        assert_eq!(
            ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy),
            None
        );
        let degraded = verdict(NodeState::Degraded, &[("proc_exits_nonzero_per_s", 20.0)]);
        let rows = [crashing(200), row("web", 100, 10, 0)];
        let named = ranker
            .window(&rows, &CgroupStats::default(), 1.0, &degraded)
            .expect("attributed");
        assert_eq!(named.culprits.len(), 1, "{named:?}");
        assert_eq!(named.culprits[0].to_string(), "100% of non-zero exits: job");
        assert_eq!(named.culprits[0].baseline, 0.0);

        // After the fault: a window is learned once three more normal ones followed it.
        let mut ranker = CulpritRanker::new();
        let rows = [crashing(5)];
        for _ in 0..CONFIRM_AFTER {
            ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
        }
        assert_eq!(ranker.tracked(), 0, "nothing learned yet");
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
        assert_eq!(ranker.tracked(), 1);
    }

    #[test]
    fn the_moved_features_choose_the_signals() {
        let mut ranker = CulpritRanker::new();
        let healthy = verdict(NodeState::Healthy, &[]);
        for _ in 0..10 {
            let rows = [row("web", 100, 10, 0), row("cron", 10, 10, 0)];
            ranker.window(&rows, &CgroupStats::default(), 2.0, &healthy);
        }
        // web burns CPU, cron fails its writes with ENOSPC.
        let rows = [row("web", 1900, 10, 0), row("cron", 10, 10, 500)];
        let cpu = verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 8.0)]);
        let named = ranker
            .window(&rows, &CgroupStats::default(), 2.0, &cpu)
            .unwrap();
        assert_eq!(named.culprits[0].workload.name, "web");
        assert_eq!(named.culprits[0].signal, Signal::OncpuTime);
        assert!(named.culprits.iter().all(|b| b.workload.name != "cron"));
        let errors = verdict(NodeState::Degraded, &[("syscall_enospc_per_s", 30.0)]);
        let named = ranker
            .window(&rows, &CgroupStats::default(), 2.0, &errors)
            .unwrap();
        assert_eq!(named.culprits.len(), 1);
        assert_eq!(
            named.culprits[0].to_string(),
            "100% of syscall errors: cron"
        );
        assert_eq!(named.culprits[0].rate, 250.0);
        // Both moved: the larger z leads.
        let both = verdict(
            NodeState::Degraded,
            &[("syscall_enospc_per_s", 30.0), ("psi_cpu_some_pct", 2.0)],
        );
        let named = ranker
            .window(&rows, &CgroupStats::default(), 2.0, &both)
            .unwrap();
        let order: Vec<&str> = named
            .culprits
            .iter()
            .map(|b| b.workload.name.as_str())
            .collect();
        assert_eq!(order, vec!["cron", "web"]);
    }

    /// A job rereading a file in a tight memory limit: reclaim all the time, no OOM kill. The
    /// job stalls in direct reclaim because it allocates; the service, steady, does not. The
    /// job is named by its reclaim time (once with OOM kills alone, no one was named).
    #[test]
    fn memory_pressure_without_kills_names_the_workload_in_reclaim() {
        let reclaiming = |name: &str, stall_ms: u64| {
            let mut row = row(name, 100, 10, 0);
            row.delta.reclaim_stall_ns = stall_ms * 1_000_000;
            row
        };
        let mut ranker = CulpritRanker::new();
        let healthy = verdict(NodeState::Healthy, &[]);
        for _ in 0..10 {
            let rows = [reclaiming("job", 0), reclaiming("service", 0)];
            ranker.window(&rows, &CgroupStats::default(), 2.0, &healthy);
        }
        let rows = [reclaiming("job", 180), reclaiming("service", 0)];
        let degraded = verdict(NodeState::Degraded, &[("mem_reclaims_per_s", 16.0)]);
        let named = ranker
            .window(&rows, &CgroupStats::default(), 2.0, &degraded)
            .expect("attributed");
        assert_eq!(named.culprits.len(), 1, "{named:?}");
        assert_eq!(named.culprits[0].to_string(), "100% of reclaim stalls: job");
        assert_eq!(named.victims[0].workload.name, "job");
    }

    #[test]
    fn healthy_windows_name_no_one_and_steady_volumes_earn_no_blame() {
        let mut ranker = CulpritRanker::new();
        let healthy = verdict(NodeState::Healthy, &[]);
        for n in 0..10 {
            let rows = [row("a", 100 + n % 3, 50, 0), row("b", 200, 80 + n % 2, 0)];
            assert!(
                ranker
                    .window(&rows, &CgroupStats::default(), 1.0, &healthy)
                    .is_none()
            );
        }
        // Degraded, but no workload moved beyond its noise: nobody is named.
        let rows = [row("a", 102, 50, 0), row("b", 200, 81, 0)];
        let degraded = verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 5.0)]);
        let attribution = ranker
            .window(&rows, &CgroupStats::default(), 1.0, &degraded)
            .unwrap();
        assert_eq!(attribution, Attribution::default());
    }

    #[test]
    fn only_the_top_three_are_named_and_a_new_workload_starts_from_zero() {
        let mut ranker = CulpritRanker::new();
        let rows: Vec<WorkloadWindow> = (1..=5)
            .map(|n| row(&format!("w{n}"), 0, n * 100, 0))
            .collect();
        let degraded = verdict(NodeState::Degraded, &[("block_latency_p99_us", 9.0)]);
        let attribution = ranker
            .window(&rows, &CgroupStats::default(), 1.0, &degraded)
            .unwrap();
        let named: Vec<(String, u64)> = attribution
            .culprits
            .iter()
            .map(|b| (b.workload.name.clone(), (b.share * 1500.0).round() as u64))
            .collect();
        assert_eq!(
            named,
            vec![("w5".into(), 500), ("w4".into(), 400), ("w3".into(), 300)]
        );
    }

    #[test]
    fn every_moved_feature_the_baseline_judges_maps_to_signals() {
        let judged: Vec<&str> = crate::window::record::WindowRecord::feature_names()
            .filter(|feature| {
                model::baseline::JUDGED_FIELDS
                    .iter()
                    .any(|pattern| field_matches(pattern, feature))
            })
            .collect();
        assert!(judged.len() > 10, "{judged:?}");
        for feature in judged {
            assert!(
                FEATURE_SIGNALS
                    .iter()
                    .any(|(p, _, _)| field_matches(p, feature)),
                "{feature} maps to no per-cgroup signal"
            );
        }
    }
}
