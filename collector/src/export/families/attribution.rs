//! Per-cgroup attribution's own bookkeeping (issue 20): which cgroup ids are charged, and
//! what could not be charged to one: nothing is dropped silently.

use collector_common::CGROUP_STATS_ENTRIES;
use prometheus_client::encoding::DescriptorEncoder;

use super::{counters, gauges};
use crate::export::ExporterState;

/// `nodestate_cgroup_attribution_mode`, `nodestate_cgroup_refused_events_total`,
/// `nodestate_cgroup_unattributed_events_total`, `nodestate_cgroup_task_table_full_total`,
/// `nodestate_cgroup_table_entries`, `nodestate_cgroup_table_capacity`,
/// `nodestate_cgroup_entries_removed_total`. Absent before the first window.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    let Some(view) = &state.attribution else {
        return Ok(());
    };
    let none: Vec<(&str, String)> = Vec::new();
    let counts = &view.counters;
    gauges(
        encoder,
        "nodestate_cgroup_attribution_mode",
        "Which cgroup ids per-cgroup attribution charges (unified, v1_memory, v1_cpu or off); 1",
        None,
        &[(vec![("mode", view.mode.label())], 1.0)],
    )?;
    counters(
        encoder,
        "nodestate_cgroup_refused_events",
        "Events charged to no cgroup of their own because the per-cgroup table was full",
        None,
        &[(none.clone(), counts.refused_events as f64)],
    )?;
    counters(
        encoder,
        "nodestate_cgroup_unattributed_events",
        "Events whose cgroup was unknown (softirq context without a known socket owner, a task \
         not in the task table)",
        None,
        &[(none.clone(), counts.unattributed_events as f64)],
    )?;
    counters(
        encoder,
        "nodestate_cgroup_task_table_full",
        "Threads the task-to-cgroup table had no room for (their events go unattributed)",
        None,
        &[(none.clone(), counts.task_table_full as f64)],
    )?;
    gauges(
        encoder,
        "nodestate_cgroup_table_entries",
        "Entries of the per-cgroup table in use (its two special keys included)",
        None,
        &[(none.clone(), counts.entries as f64)],
    )?;
    gauges(
        encoder,
        "nodestate_cgroup_table_capacity",
        "Entries the per-cgroup table can hold",
        None,
        &[(none.clone(), f64::from(CGROUP_STATS_ENTRIES))],
    )?;
    counters(
        encoder,
        "nodestate_cgroup_entries_removed",
        "Per-cgroup table entries of cgroups that no longer exist, removed by the daemon",
        None,
        &[(none, counts.removed as f64)],
    )?;
    Ok(())
}
