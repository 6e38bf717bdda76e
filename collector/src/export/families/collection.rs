//! How collecting went: windows made, failed reads, partial windows, refused HTTP
//! connections, lost events, the daemon's own events left out, slow-I/O events received, the
//! block programs' bookkeeping and the program runs the kernel skipped.

use std::collections::BTreeMap;

use prometheus_client::encoding::DescriptorEncoder;

use super::counters;
use crate::export::ExporterState;

/// `nodestate_windows` … `nodestate_exit_unreadable`.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    let none: Vec<(&str, String)> = Vec::new();
    counters(
        encoder,
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
        encoder,
        "nodestate_read_errors",
        "Failed reads of the files windows are made from; the features they give are missing \
             (null) in those windows, never 0",
        None,
        &by_source(&state.read_errors.total),
    )?;
    counters(
        encoder,
        "nodestate_read_reopens",
        "Kept-open files opened again after a read on their descriptor failed",
        None,
        &by_source(&state.read_errors.reopens),
    )?;
    counters(
        encoder,
        "nodestate_partial_windows",
        "Windows with a missing value (`partial` in the window record)",
        None,
        &[(none.clone(), state.partial_windows_total as f64)],
    )?;
    counters(
        encoder,
        "nodestate_http_connections_refused",
        "HTTP connections closed at accept because every connection slot was taken",
        None,
        &[(none.clone(), state.http_connections_refused_total as f64)],
    )?;
    counters(
        encoder,
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
            encoder,
            "nodestate_own_syscalls",
            "Syscalls of the daemon itself while the syscall hook was on: left out of the \
                 node's syscall features, counted here",
            None,
            &[(none.clone(), own.syscalls as f64)],
        )?;
        counters(
            encoder,
            "nodestate_own_forks",
            "Threads the daemon itself started: left out of the node's fork rate, counted \
                 here",
            None,
            &[(none.clone(), own.forks as f64)],
        )?;
    }
    counters(
        encoder,
        "nodestate_slow_io_events",
        "Block requests over the slow-I/O threshold received",
        None,
        &[(none.clone(), state.slow_io_events_total as f64)],
    )?;
    if let Some(accounting) = &state.kernel_accounting {
        encode_accounting(encoder, accounting)?;
    }
    Ok(())
}

/// The block programs' counters other than the slow-I/O events' (`nodestate_events_lost`
/// and `nodestate_slow_io_events` show those), by name, and the runs the kernel skipped.
/// Every series is there from the first window, 0 until it happens, so a rate() sees the
/// first one.
fn encode_accounting(
    encoder: &mut DescriptorEncoder,
    accounting: &crate::kernel::KernelAccounting,
) -> Result<(), std::fmt::Error> {
    use collector_common::counter;
    let shown = (counter::SLOW_IO_LOST + 1) as usize..counter::COUNT as usize;
    let by_event: Vec<(Vec<(&str, String)>, f64)> = shown
        .map(|index| {
            (
                vec![("event", counter::NAMES[index].to_string())],
                accounting.block[index] as f64,
            )
        })
        .collect();
    counters(
        encoder,
        "nodestate_block_accounting",
        "Block requests and completions the programs did not count the usual way, by why: \
         inflight_table_full (issued, not timed), complete_unmatched (a completion with no \
         issue seen: issued before the hooks were on, or the issue's run skipped), device_table_full (not counted), \
         issue_unreadable and complete_unreadable (a record the program could not read), \
         complete_without_sectors (the flush machinery's second completion of a request \
         counted already; not an error), inflight_stale_evicted (a request pending over 120 s \
         whose completion the program never saw: its latency is lost)",
        None,
        &by_event,
    )?;
    counters(
        encoder,
        "nodestate_program_runs_skipped",
        "Runs of the daemon's programs the kernel skipped (recursion_misses summed over \
         programs): a tracepoint program does not run while another BPF program runs on that \
         CPU or a map is read there through the bpf syscall, and its event goes uncounted",
        None,
        &[(Vec::new(), accounting.runs_skipped as f64)],
    )?;
    counters(
        encoder,
        "nodestate_socket_state_unreadable",
        "NOT_SPECIFIED packet drops whose socket's state the program could not read: they \
         count as drops, though some may be segments a TIME_WAIT socket handled \
         (housekeeping, shown as the TCP_TIME_WAIT reason)",
        None,
        &[(Vec::new(), accounting.socket_state_unreadable as f64)],
    )?;
    counters(
        encoder,
        "nodestate_exit_unreadable",
        "Process exits whose exit status or start the programs could not read: an unreadable \
         status is not counted as a non-zero exit, and an unreadable start counts a non-zero \
         exit as a program's failure rather than a brief command's",
        None,
        &[(Vec::new(), accounting.exit_unreadable as f64)],
    )?;
    Ok(())
}
