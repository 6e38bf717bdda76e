//! Per-cgroup window deltas (issue 20): the kernel's cumulative per-cgroup counters in, what
//! each cgroup did during one window out. Pure arithmetic, tested without a kernel.
//!
//! This is the boundary between the window stage and attribution: the judge ranks culprits from
//! a [`CgroupTable`], and the workload resolver names its `cgroup_id`s.

use collector_common::{CGROUP_REFUSED, CGROUP_UNATTRIBUTED, CgroupStats, cgroup_errno};

use super::counter_delta;

/// Which cgroup id the kernel side charges events to, decided at load and shown by
/// `collector probes` and the start-up log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// `/sys/fs/cgroup` is cgroup2: the default-hierarchy id of the current task.
    Unified,
    /// cgroup v1: the kernfs id of the task's cgroup in this v1 hierarchy (`memory` or `cpu`).
    V1 { hierarchy: &'static str },
    /// Attribution is off (not supported here, or disabled).
    Off,
}

impl From<&crate::kernel::Attribution> for CgroupMode {
    fn from(attribution: &crate::kernel::Attribution) -> Self {
        match attribution {
            crate::kernel::Attribution::Unified { .. } => Self::Unified,
            crate::kernel::Attribution::V1 { controller, .. } => Self::V1 {
                hierarchy: controller,
            },
            crate::kernel::Attribution::Off { .. } => Self::Off,
        }
    }
}

impl CgroupMode {
    /// `unified`, `v1_memory`, `v1_cpu` or `off` (a metric label, a JSON value).
    pub fn label(&self) -> String {
        match self {
            Self::Unified => "unified".into(),
            Self::V1 { hierarchy } => format!("v1_{hierarchy}"),
            Self::Off => "off".into(),
        }
    }
}

/// One cgroup's counters over one window.
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupWindow {
    pub cgroup_id: u64,
    pub delta: CgroupStats,
}

/// What every cgroup did during one window, plus what could not be charged to one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupTable {
    pub window_s: f64,
    /// Cgroups with any activity in the window, in no particular order.
    pub rows: Vec<CgroupWindow>,
    /// Events whose cgroup was unknown ([`CGROUP_UNATTRIBUTED`]).
    pub unattributed: CgroupStats,
    /// Events of cgroups refused because the table was full ([`CGROUP_REFUSED`]).
    pub refused: CgroupStats,
}

/// Field-wise [`counter_delta`] of two cumulative readings of one cgroup.
pub fn stats_delta(previous: &CgroupStats, current: &CgroupStats) -> CgroupStats {
    let mut errors = [0; cgroup_errno::COUNT];
    for (slot, error) in errors.iter_mut().enumerate() {
        *error = counter_delta(previous.errors[slot], current.errors[slot]);
    }
    CgroupStats {
        oncpu_ns: counter_delta(previous.oncpu_ns, current.oncpu_ns),
        runq_wait_ns: counter_delta(previous.runq_wait_ns, current.runq_wait_ns),
        io_ops: counter_delta(previous.io_ops, current.io_ops),
        io_bytes: counter_delta(previous.io_bytes, current.io_bytes),
        io_latency_ns: counter_delta(previous.io_latency_ns, current.io_latency_ns),
        errors,
        exits_nonzero: counter_delta(previous.exits_nonzero, current.exits_nonzero),
        fatal_signals: counter_delta(previous.fatal_signals, current.fatal_signals),
        oom_victims: counter_delta(previous.oom_victims, current.oom_victims),
        reclaim_stall_ns: counter_delta(previous.reclaim_stall_ns, current.reclaim_stall_ns),
        tcp_retransmits: counter_delta(previous.tcp_retransmits, current.tcp_retransmits),
        tcp_resets: counter_delta(previous.tcp_resets, current.tcp_resets),
        tcp_connect_failures: counter_delta(
            previous.tcp_connect_failures,
            current.tcp_connect_failures,
        ),
    }
}

/// The share of a window each sampled hook group was on (1: all of it). The hook sampler
/// (`crate::kernel::sampler`) takes the syscall exit, scheduler and block hooks off for part of
/// a window when their events would cost more than `--hook-budget`; what the per-cgroup
/// counters of those hooks hold is then what they saw while on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampledShares {
    /// The syscall exit hook: syscall errors by errno.
    pub syscalls: f64,
    /// The scheduler hooks (switch, wake-ups): on-CPU time and run-queue wait.
    pub scheduler: f64,
    /// The block hooks (bio submission, request completion): I/O issued, its bytes and its
    /// latency.
    pub block: f64,
}

impl SampledShares {
    /// Every hook on for the whole window.
    pub const WHOLE: Self = Self {
        syscalls: 1.0,
        scheduler: 1.0,
        block: 1.0,
    };
}

/// `stats` scaled to the whole window: each counter of a sampled hook divided by the share of
/// the window its hook was on, as the node's own rates are, so that a workload's rate, its
/// share against signals that are never sampled and its rise over its own baseline do not move
/// when the sampler's share does. The others (exits, fatal signals, OOM kills, reclaim stalls,
/// TCP events: hooks the sampler never takes off) are as counted. A share that is not in
/// (0, 1) leaves its counters as they are (a hook that saw nothing counted nothing to scale).
pub fn scaled_to_window(stats: &CgroupStats, on: SampledShares) -> CgroupStats {
    let scale = |count: u64, share: f64| {
        if share > 0.0 && share < 1.0 {
            // Saturates at u64::MAX; estimates, so rounding is as good as any.
            (count as f64 / share).round() as u64
        } else {
            count
        }
    };
    CgroupStats {
        oncpu_ns: scale(stats.oncpu_ns, on.scheduler),
        runq_wait_ns: scale(stats.runq_wait_ns, on.scheduler),
        io_ops: scale(stats.io_ops, on.block),
        io_bytes: scale(stats.io_bytes, on.block),
        io_latency_ns: scale(stats.io_latency_ns, on.block),
        errors: stats.errors.map(|count| scale(count, on.syscalls)),
        ..*stats
    }
}

/// The window's table from two cumulative snapshots (`(cgroup id, counters)` as read from the
/// per-cgroup map, summed over CPUs), scaled to the whole window by the share each sampled
/// hook group was `on` ([`scaled_to_window`]). A cgroup new in `current` counts from zero; one
/// gone from `current` (its entry removed) did nothing more this window and is left out; rows
/// whose delta is all zero are left out.
pub fn window_table(
    previous: &[(u64, CgroupStats)],
    current: &[(u64, CgroupStats)],
    window_s: f64,
    on: SampledShares,
) -> CgroupTable {
    let before: std::collections::HashMap<u64, &CgroupStats> =
        previous.iter().map(|(id, stats)| (*id, stats)).collect();
    let zero = CgroupStats::default();
    let mut table = CgroupTable {
        window_s,
        ..CgroupTable::default()
    };
    for (id, stats) in current {
        let delta = stats_delta(before.get(id).copied().unwrap_or(&zero), stats);
        if delta == zero {
            continue;
        }
        let delta = scaled_to_window(&delta, on);
        match *id {
            CGROUP_UNATTRIBUTED => table.unattributed = delta,
            CGROUP_REFUSED => table.refused = delta,
            cgroup_id => table.rows.push(CgroupWindow { cgroup_id, delta }),
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(oncpu_ns: u64, io_ops: u64, enospc: u64) -> CgroupStats {
        let mut errors = [0; cgroup_errno::COUNT];
        errors[cgroup_errno::ENOSPC] = enospc;
        CgroupStats {
            oncpu_ns,
            io_ops,
            errors,
            ..CgroupStats::default()
        }
    }

    #[test]
    fn a_window_holds_what_each_cgroup_did_and_sets_apart_the_uncharged() {
        let previous = [(7, stats(100, 5, 0)), (9, stats(50, 0, 0))];
        let current = [
            (7, stats(300, 8, 2)),
            (9, stats(50, 0, 0)),
            (11, stats(40, 1, 0)),
            (CGROUP_UNATTRIBUTED, stats(0, 3, 0)),
            (CGROUP_REFUSED, stats(0, 0, 1)),
        ];
        let table = window_table(&previous, &current, 5.0, SampledShares::WHOLE);
        assert_eq!(table.window_s, 5.0);
        assert_eq!(
            table.rows,
            vec![
                CgroupWindow {
                    cgroup_id: 7,
                    delta: stats(200, 3, 2)
                },
                CgroupWindow {
                    cgroup_id: 11,
                    delta: stats(40, 1, 0)
                },
            ]
        );
        assert_eq!(table.unattributed, stats(0, 3, 0));
        assert_eq!(table.refused, stats(0, 0, 1));
    }

    fn everything(count: u64) -> CgroupStats {
        CgroupStats {
            oncpu_ns: count,
            runq_wait_ns: count,
            io_ops: count,
            io_bytes: count,
            io_latency_ns: count,
            errors: [count; cgroup_errno::COUNT],
            exits_nonzero: count,
            fatal_signals: count,
            oom_victims: count,
            reclaim_stall_ns: count,
            tcp_retransmits: count,
            tcp_resets: count,
            tcp_connect_failures: count,
        }
    }

    #[test]
    fn sampled_counters_are_scaled_by_their_own_hooks_share_and_the_rest_kept() {
        // Syscalls on for a quarter of the window, the scheduler for half, block for a tenth.
        let on = SampledShares {
            syscalls: 0.25,
            scheduler: 0.5,
            block: 0.1,
        };
        let scaled = scaled_to_window(&everything(100), on);
        let expected = CgroupStats {
            oncpu_ns: 200,
            runq_wait_ns: 200,
            io_ops: 1000,
            io_bytes: 1000,
            io_latency_ns: 1000,
            errors: [400; cgroup_errno::COUNT],
            // Never sampled: as counted.
            ..everything(100)
        };
        assert_eq!(scaled, expected);
        // On all the time: nothing changes; a share that is no share changes nothing either.
        assert_eq!(
            scaled_to_window(&everything(100), SampledShares::WHOLE),
            everything(100)
        );
        for share in [0.0, -1.0, f64::NAN, 1.5] {
            let odd = SampledShares {
                syscalls: share,
                scheduler: share,
                block: share,
            };
            assert_eq!(scaled_to_window(&everything(7), odd), everything(7));
        }
        // Huge counts saturate rather than wrap.
        let huge = scaled_to_window(&everything(u64::MAX / 2), on);
        assert_eq!(huge.io_ops, u64::MAX);
    }

    #[test]
    fn a_workloads_rate_does_not_move_with_the_samplers_share() {
        // A workload issuing 500 I/Os a second, seen by the block hooks for all of one 5 s
        // window and for a fifth of the next: the same rate in both tables, and its unattributed
        // neighbour (the same hooks) is scaled alike.
        let whole = window_table(
            &[(7, stats(0, 0, 0))],
            &[
                (7, stats(0, 2500, 0)),
                (CGROUP_UNATTRIBUTED, stats(0, 100, 0)),
            ],
            5.0,
            SampledShares::WHOLE,
        );
        let fifth = window_table(
            &[
                (7, stats(0, 2500, 0)),
                (CGROUP_UNATTRIBUTED, stats(0, 100, 0)),
            ],
            &[
                (7, stats(0, 3000, 0)),
                (CGROUP_UNATTRIBUTED, stats(0, 120, 0)),
            ],
            5.0,
            SampledShares {
                block: 0.2,
                ..SampledShares::WHOLE
            },
        );
        assert_eq!(whole.rows[0].delta.io_ops, 2500);
        assert_eq!(fifth.rows[0].delta.io_ops, 2500);
        assert_eq!(whole.unattributed.io_ops, fifth.unattributed.io_ops);
    }

    #[test]
    fn a_counter_that_went_back_counts_from_its_reset() {
        let delta = stats_delta(&stats(500, 10, 4), &stats(20, 12, 1));
        assert_eq!(delta, stats(20, 2, 1));
    }
}
