//! Small pieces every program uses.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, PerCpuArray},
};
use collector_common::{Histogram, LATENCY_BUCKETS};

/// The daemon's own process id (TGID), written by the loader; 0 (the default, and what tests
/// that cause events themselves load) ignores no process. The daemon's syscalls are its
/// upkeep, not the node's work: they grow with what it is asked to do (a drop list of 131k
/// rules, a scraper polling it) and would read as a node fault. Only signals counted in the
/// context of the task that caused them are filtered this way (syscalls, opens, forks); see
/// `system.rs` for the ones that are not.
#[unsafe(no_mangle)]
static IGNORED_TGID: u32 = 0;

/// Whether the current task belongs to the ignored process. Read-only data: the verifier
/// knows the value, so with 0 the helper call is pruned from the program.
#[inline(always)]
pub fn current_is_ignored() -> bool {
    // SAFETY: a plain read of a static the loader rewrites in .rodata.
    let ignored = unsafe { core::ptr::read_volatile(&IGNORED_TGID) };
    ignored != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == ignored
}

/// Adds `value` to slot `index` of a per-CPU counter array and returns the new per-CPU value.
#[inline(always)]
pub fn add(counters: &PerCpuArray<u64>, index: u32, value: u64) -> u64 {
    match counters.get_ptr_mut(index) {
        Some(slot) => {
            // SAFETY: per-CPU slot, and tracing programs do not nest on one CPU.
            unsafe {
                *slot += value;
                *slot
            }
        }
        None => 0,
    }
}

/// log2 of `value`, 0 for 0 and 1; unrolled because the verifier bounds loops and this is
/// cheaper than a bounded loop anyway.
#[inline(always)]
pub fn log2(mut value: u64) -> usize {
    let mut result = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if value >= 1u64 << shift {
            value >>= shift;
            result += shift as usize;
        }
    }
    result
}

/// The histogram bucket of a latency in nanoseconds (log2 of microseconds, capped).
#[inline(always)]
pub fn latency_bucket(latency_ns: u64) -> usize {
    let bucket = log2(latency_ns / 1000);
    if bucket < LATENCY_BUCKETS {
        bucket
    } else {
        LATENCY_BUCKETS - 1
    }
}

/// Counts one latency in slot `index` of a per-CPU histogram array.
#[inline(always)]
pub fn record_latency(histograms: &PerCpuArray<Histogram>, index: u32, latency_ns: u64) {
    if let Some(histogram) = histograms.get_ptr_mut(index) {
        let bucket = latency_bucket(latency_ns);
        // SAFETY: per-CPU value; `get_mut` keeps the index provably in bounds for the verifier.
        unsafe {
            if let Some(count) = (*histogram).buckets.get_mut(bucket) {
                *count += 1;
            }
        }
    }
}

/// Per group of sampled hooks (`sampled_group`: scheduler, block, syscall exit), since when
/// (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) they have been on without a break; the daemon writes
/// it each time it puts the group back on.
/// A start time recorded before it belongs to a wait or a request whose end may have passed
/// while the hooks were off: pairing it with a later end would measure the off-period, so such
/// starts are dropped. 0 (never written): every start counts. The scheduler group's slot is
/// `u64::MAX` while its hooks are off, for the exit hook, which stays on (see
/// `cgroup::thread_exited`).
#[map]
pub static SAMPLED_SINCE: Array<u64> =
    Array::with_max_entries(collector_common::sampled_group::COUNT, 0);

/// See [`SAMPLED_SINCE`]: whether `started` (ns) predates the current on-period of the hooks
/// of `group`.
#[inline(always)]
pub fn started_before_sampling(group: u32, started: u64) -> bool {
    SAMPLED_SINCE
        .get(group)
        .is_some_and(|since| started < *since)
}
