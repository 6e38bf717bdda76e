//! Which of a window's fields are signals of health: the saturation, error and latency
//! signals a verdict is made of (volumes explain a verdict but do not make one), and which are
//! latencies (0 in a window without a sample of it). Shared by the built-in model's way of
//! judging ([`crate::Model::judge_signals`]) and the learned baseline, so both judge the same
//! fields the same way; names only, no model.

/// The fields the learned baseline judges by default: saturation, error and latency signals,
/// the ones the built-in model uses (`cargo xtask evaluate` trains it on this very list).
/// Volumes (syscalls, context switches, I/O operations, packets, bytes) change with the work a
/// node is given, not with its health: a new `dd oflag=dsync` writer moved
/// `block_flush_ops_per_s` by z = +86 on an idle node. The daemon's `--baseline-fields`
/// asks for others (`*` for every field).
pub const JUDGED_FIELDS: &[&str] = &[
    "psi_*",
    "cpu_throttled_*",
    "proc_exits_nonzero_*",
    "proc_fatal_signals_per_s",
    "mem_oom_kills",
    "mem_reclaim*",
    "block_errors_per_s",
    "block_error_fraction",
    "block_latency_p99_us",
    "fsync_latency_p99_us",
    "syscall_enospc_per_s",
    "syscall_emfile_per_s",
    "syscall_eio_per_s",
    "syscall_econnrefused_per_s",
    "syscall_eaddrnotavail_per_s",
    "net_drops_per_s",
    "net_tx_error*",
    "tcp_retransmits_per_s",
    "tcp_connect_failure*",
    "tcp_resets_per_s",
    "conntrack_fill_pct",
];

/// Whether the field `name` is one of the [`JUDGED_FIELDS`] (a pattern there matches it).
pub fn is_judged(name: &str) -> bool {
    JUDGED_FIELDS
        .iter()
        .any(|pattern| crate::features::name_matches(pattern, name))
}

/// A latency field (`*_latency_*`): 0 when the window had no sample of it.
pub fn is_latency(field: &str) -> bool {
    field.contains("_latency_")
}
