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

/// The window's table from two cumulative snapshots (`(cgroup id, counters)` as read from the
/// per-cgroup map, summed over CPUs). A cgroup new in `current` counts from zero; one gone from
/// `current` (its entry removed) did nothing more this window and is left out; rows whose
/// delta is all zero are left out.
pub fn window_table(
    previous: &[(u64, CgroupStats)],
    current: &[(u64, CgroupStats)],
    window_s: f64,
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
        let table = window_table(&previous, &current, 5.0);
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

    #[test]
    fn a_counter_that_went_back_counts_from_its_reset() {
        let delta = stats_delta(&stats(500, 10, 4), &stats(20, 12, 1));
        assert_eq!(delta, stats(20, 2, 1));
    }
}
