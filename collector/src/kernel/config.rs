//! What the daemon asks of the kernel side: thresholds, ring buffer size, which signals, the
//! hook budget, the process whose events are not the node's.

use super::stats::ProgramStatsMode;

/// What the daemon asks of the kernel side.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Completions at or over this go to user space as slow-I/O events.
    pub slow_io_threshold_ns: u64,
    /// Size of the slow-I/O ring buffer: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
    /// A process exiting non-zero within this long of its start counts as a brief command's
    /// failure (`proc_brief_exits_nonzero_per_s`), not a program's (`proc_exits_nonzero_per_s`);
    /// 0 counts every non-zero exit as a program's.
    pub brief_exit_ns: u64,
    /// Attach only these signals (ids from `probes::SIGNALS`); all when `None`.
    pub signals: Option<Vec<String>>,
    /// Never attach these signals (ids), e.g. to shed a hook too costly for a node.
    pub disabled_signals: Vec<String>,
    /// When the kernel keeps per-program run counts and run time.
    pub program_stats: ProgramStatsMode,
    /// Share of one CPU the sampled hooks may cost (see [`crate::kernel::sampler`]); 0: no budget,
    /// they stay on.
    pub hook_budget: f64,
    /// A process (TGID) whose syscalls, opens and forks are not the node's: the daemon's own,
    /// which `collector run` and `collector record` set to their process id. The programs
    /// count them apart ([`crate::kernel::KernelAccounting::own`]). `None` (the default) counts every
    /// process: for a caller that causes the events it measures, as tests and
    /// `collector probes --exercise` do.
    pub exclude_tgid: Option<u32>,
    /// Per-cgroup attribution: which cgroup id to charge, or off.
    pub cgroup_attribution: super::cgroups::AttributionChoice,
    /// Entries of the per-cgroup table (its two special keys included); the default is
    /// `collector_common::CGROUP_STATS_ENTRIES`. Tests make it tiny to fill it.
    pub cgroup_table_entries: u32,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            slow_io_threshold_ns: 10_000_000,
            ringbuf_bytes: 256 * 1024,
            brief_exit_ns: collector_common::BRIEF_EXIT_NS,
            signals: None,
            disabled_signals: Vec::new(),
            program_stats: ProgramStatsMode::default(),
            hook_budget: crate::kernel::sampler::DEFAULT_HOOK_BUDGET,
            exclude_tgid: None,
            cgroup_attribution: super::cgroups::AttributionChoice::Auto,
            cgroup_table_entries: collector_common::CGROUP_STATS_ENTRIES,
        }
    }
}
