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
//!
//! The rises add up over the episode ([`Episode`]): a degraded verdict names who rose in the
//! anomalous windows since the node left normal, the recent ones weighing most. A window that
//! is degraded only because hysteresis holds the state (the node recovering) adds nothing: its
//! explanation is a normal window's, whose few small rises a steady neighbour's jitter can
//! "explain" with a large share of a small total. Ranked window by window, such a window named
//! whoever jittered (seen end to end: the neighbour, conmon and the test's own shell named
//! while the node recovered from throttled writes, in about half the runs of a loaded CI).

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

    /// Its index in [`Signal::ALL`] (and in a row of rates).
    fn slot(self) -> usize {
        self as usize
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
    // Not judged by default; named when a user's model judges it (the per-cgroup count holds
    // every non-zero exit, brief or not).
    (
        "proc_brief_exits_nonzero_*",
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
/// A feature within [`MOVED_Z`] of its normal did not move and points nowhere.
/// Signals with their weights.
pub type Weighted = Vec<(Signal, f64)>;

/// The least |z| of a feature that moved. An explanation lists its top features whatever
/// their size: judged on rises only, a window with one feature up lists others at z = 0.0
/// (seen: `psi_cpu_some_pct` at +0.02 beside I/O pressure at +5.5, which named a steady
/// neighbour's CPU jitter as 100% of the node's on-CPU rise).
pub const MOVED_Z: f64 = 1.0;

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
        let weight = if z.is_finite() { z.abs() } else { 1.0 };
        if weight < MOVED_Z {
            continue;
        }
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
/// A workload is named when its weighted share of the moved signals' rise (each signal
/// weighted by how much it moved) is at least this: 100% of a signal that barely moved
/// beside one that moved far is not a share of the verdict.
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
/// Each anomalous window, the episode's earlier rises count this much less: about the last
/// ten anomalous windows count, as in a workload's own baseline ([`ALPHA`]). A cause that
/// changes within one long episode is named after a few windows, and a short stretch in which
/// others rise (a backlog draining after the fault stopped) does not outweigh the fault.
const EPISODE_DECAY: f64 = 1.0 - ALPHA;

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

/// The rises of one episode: the run of windows that were anomalous or degraded, from its
/// first anomalous window until the node is healthy again. Sums decay by [`EPISODE_DECAY`]
/// each anomalous window.
#[derive(Debug, Default)]
struct Episode {
    /// Per workload: its rises, per signal, and its rates in the last anomalous window.
    workloads: HashMap<Workload, (Rates, Rates)>,
    /// The node's rises per signal: every workload's and the unattributed events'.
    node: Rates,
    /// How much the verdicts moved each signal (the largest |z|, decayed), causes and victims.
    causes: Rates,
    victims: Rates,
}

impl Episode {
    /// Adds one anomalous window: its workloads' rises above their baselines, in the signals
    /// its verdict moved. Returns how many workloads it stopped following at the bound.
    fn add(
        &mut self,
        baselines: &HashMap<Workload, Baseline>,
        rows: &[(&Workload, Rates)],
        unattributed: (&Baseline, &Rates),
        verdict: &Verdict,
    ) -> u64 {
        let mut evicted = 0;
        let decay = |sums: &mut Rates| sums.iter_mut().for_each(|sum| *sum *= EPISODE_DECAY);
        let (causes, victims) = moved_signals(&verdict.explanation);
        let mut moved = [false; Signal::ALL.len()];
        for (list, weights) in [(&causes, &mut self.causes), (&victims, &mut self.victims)] {
            decay(weights);
            for &(signal, weight) in list {
                let slot = signal.slot();
                weights[slot] = weights[slot].max(weight);
                moved[slot] = true;
            }
        }
        self.workloads
            .values_mut()
            .for_each(|(rises, _)| decay(rises));
        decay(&mut self.node);
        let empty = Baseline::default();
        let (unattributed_baseline, unattributed_rates) = unattributed;
        for slot in (0..Signal::ALL.len()).filter(|&slot| moved[slot]) {
            self.node[slot] += unattributed_baseline.signals[slot].excess(unattributed_rates[slot]);
        }
        for (workload, rates) in rows {
            let baseline = baselines.get(*workload).unwrap_or(&empty);
            let window_rises: Rates = std::array::from_fn(|slot| {
                if moved[slot] {
                    baseline.signals[slot].excess(rates[slot])
                } else {
                    0.0
                }
            });
            for (node, rise) in self.node.iter_mut().zip(&window_rises) {
                *node += rise;
            }
            if let Some((rises, last)) = self.workloads.get_mut(*workload) {
                for (rise, window_rise) in rises.iter_mut().zip(&window_rises) {
                    *rise += window_rise;
                }
                *last = *rates;
            } else if window_rises.iter().any(|rise| *rise > 0.0) {
                if self.workloads.len() >= MAX_WORKLOADS {
                    self.forget_least();
                    evicted += 1;
                }
                self.workloads
                    .insert((*workload).clone(), (window_rises, *rates));
            }
        }
        evicted
    }

    /// At the bound, the workload with the least rise goes: it is the last that would be named.
    fn forget_least(&mut self) {
        let least = self
            .workloads
            .iter()
            .min_by(|a, b| {
                let sum = |rises: &Rates| rises.iter().sum::<f64>();
                sum(&a.1.0).total_cmp(&sum(&b.1.0))
            })
            .map(|(workload, _)| workload.clone());
        if let Some(least) = least {
            self.workloads.remove(&least);
        }
    }

    fn attribution(&self, baselines: &HashMap<Workload, Baseline>) -> Attribution {
        Attribution {
            culprits: self.rank(baselines, &self.causes),
            victims: self.rank(baselines, &self.victims),
        }
    }

    /// Workloads by their shares of the node's rise in the moved signals, weighted by how much
    /// each signal moved; at most [`TOP`], each named for its largest weighted share.
    fn rank(&self, baselines: &HashMap<Workload, Baseline>, weights: &Rates) -> Vec<Blame> {
        let slots: Vec<usize> = (0..Signal::ALL.len())
            .filter(|&slot| weights[slot] > 0.0 && self.node[slot] > 0.0)
            .collect();
        let total_weight: f64 = slots.iter().map(|&slot| weights[slot]).sum();
        if total_weight <= 0.0 {
            return Vec::new();
        }
        let mut blamed: Vec<(f64, Blame)> = self
            .workloads
            .iter()
            .filter_map(|(workload, (rises, last))| {
                let mut score = 0.0;
                let mut best: Option<(f64, usize, f64)> = None;
                for &slot in &slots {
                    let share = rises[slot] / self.node[slot];
                    let weighted = weights[slot] * share;
                    score += weighted;
                    if share > 0.0 && best.is_none_or(|(w, _, _)| weighted > w) {
                        best = Some((weighted, slot, share));
                    }
                }
                let (_, slot, share) = best?;
                let score = score / total_weight;
                (score >= MIN_SHARE).then(|| {
                    (
                        score,
                        Blame {
                            workload: workload.clone(),
                            signal: Signal::ALL[slot],
                            share,
                            rate: last[slot],
                            baseline: baselines
                                .get(workload)
                                .map_or(0.0, |baseline| baseline.signals[slot].mean),
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
}

/// Keeps the baselines and ranks each degraded window.
#[derive(Debug, Default)]
pub struct CulpritRanker {
    workloads: HashMap<Workload, Baseline>,
    unattributed: Baseline,
    window: u64,
    /// Normal windows not learned yet, oldest first (at most [`CONFIRM_AFTER`]).
    pending: std::collections::VecDeque<Pending>,
    /// The rises since the node left normal (empty while it is healthy).
    episode: Episode,
    /// Workloads whose baseline went at the [`MAX_WORKLOADS`] bound (the least recently seen):
    /// they are measured against nothing until they have a baseline again.
    pub baselines_evicted: u64,
    /// Workloads an episode stopped following at the [`MAX_WORKLOADS`] bound (the least
    /// risen): they can no longer be named for it.
    pub episode_workloads_evicted: u64,
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

    /// One window: adds its rises to the episode when it was anomalous and names the episode's
    /// culprits when the verdict is degraded; then learns from it when it was not anomalous
    /// and the next [`CONFIRM_AFTER`] windows were not either (a fault's windows, its onset
    /// included, never become the baseline it is measured against).
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
        if verdict.anomalous {
            self.episode_workloads_evicted += self.episode.add(
                &self.workloads,
                &rows,
                (&self.unattributed, &unattributed),
                verdict,
            );
        }
        let attribution = (verdict.state == NodeState::Degraded)
            .then(|| self.episode.attribution(&self.workloads));
        if !verdict.anomalous && verdict.state != NodeState::Degraded {
            self.episode = Episode::default();
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
                self.baselines_evicted += 1;
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
mod tests;
