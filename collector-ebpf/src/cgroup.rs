//! Per-cgroup attribution (issue 20): the same events the node counts, charged to the cgroup
//! of the task (or socket) behind them, in `CGROUP_STATS` keyed by cgroup id.
//!
//! Which id ([`CGROUP_MODE`], set before load):
//! - unified (cgroup v2 at `/sys/fs/cgroup`): `bpf_get_current_cgroup_id()` for events of the
//!   current task, unless it is a kernel thread (its `task_struct.flags`, at an offset from
//!   BTF, carry `PF_KTHREAD`): those sit in the root cgroup but work for everyone, so their
//!   events are unattributed;
//! - v1: the task → cgroup table [`TASK_CGROUP`], fed by `cgroup:cgroup_attach_task` (moves
//!   within the one v1 hierarchy the daemon chose: memory, else cpu), by forks (a child starts
//!   in its parent's cgroup) and by the daemon's `/proc` scan at start-up; a thread's entry
//!   goes at its exit. Reading the id through `task_struct` would take four dependent probe
//!   reads per event and a BTF enum the daemon does not parse.
//!
//! Events of another task (the task switched in, an OOM victim, a signal's target) use the
//! task table in both modes. Events in softirq context (TCP) use the socket → cgroup table
//! [`SOCK_CGROUP`], learnt when the owning task connects, listens or closes. What has no known
//! cgroup goes to `CGROUP_UNATTRIBUTED`; a cgroup the full table refuses goes to
//! `CGROUP_REFUSED`; both are counted in [`CGROUP_COUNTERS`]: nothing is lost silently.
//!
//! With `CGROUP_MODE` off (read-only data) the verifier prunes every path below.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_probe_read_kernel,
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use collector_common::{
    ABSENT, BIO_ORIGIN_SLOTS, CGROUP_REFUSED, CGROUP_STATS_ENTRIES, CGROUP_UNATTRIBUTED,
    CgroupStats, CgroupTracepointLayout, PF_KTHREAD, SOCK_CGROUP_ENTRIES, TASK_CGROUP_ENTRIES,
    cgroup_counter, cgroup_errno, cgroup_mode, sampled_group,
};

use crate::util::{SAMPLED_SINCE, add};

#[unsafe(no_mangle)]
static CGROUP_MODE: u32 = cgroup_mode::OFF;

/// The v1 hierarchy id (`/proc/cgroups`) whose moves [`cgroup_attach_task`] follows.
#[unsafe(no_mangle)]
static CGROUP_V1_HIERARCHY: u32 = 0;

#[unsafe(no_mangle)]
static CGROUP_LAYOUT: CgroupTracepointLayout = CgroupTracepointLayout::LINUX_6;

/// Cumulative counters per cgroup id. A plain hash, not an LRU: an LRU would evict a cgroup's
/// counts without telling anyone; this one refuses the new key, and the event is charged to
/// `CGROUP_REFUSED` (inserted by the daemon at load, so it always exists).
#[map]
static CGROUP_STATS: PerCpuHashMap<u64, CgroupStats> =
    PerCpuHashMap::with_max_entries(CGROUP_STATS_ENTRIES, 0);

#[map]
static CGROUP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(cgroup_counter::COUNT, 0);

/// Thread id → cgroup id.
#[map]
static TASK_CGROUP: HashMap<u32, u64> = HashMap::with_max_entries(TASK_CGROUP_ENTRIES, 0);

/// Socket address → cgroup id of its owner. An LRU: a socket closed without a state change we
/// see would otherwise hold its entry for ever; an evicted live socket's events go
/// unattributed (counted).
#[map]
static SOCK_CGROUP: LruHashMap<u64, u64> = LruHashMap::with_max_entries(SOCK_CGROUP_ENTRIES, 0);

/// One zeroed value, the source for inserting a new cgroup (152 bytes are too many for the
/// stack of the hot programs).
#[map]
static CGROUP_ZERO: Array<CgroupStats> = Array::with_max_entries(1, 0);

/// When the task now on each CPU got it (ns), for its on-CPU time at the next switch.
#[map]
static ONCPU_SINCE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Who submitted the bio at (device, sector): written at `block:block_bio_queue`, read at the
/// request's completion (whose first bio it is) to charge the latency to the submitter. An
/// array indexed by a hash, like the in-flight table: plain loads and stores. A slot another
/// bio took meanwhile leaves that latency uncharged (the submission was counted).
#[map]
static BIO_ORIGIN: Array<BioOrigin> = Array::with_max_entries(BIO_ORIGIN_SLOTS, 0);

/// One slot of [`BIO_ORIGIN`]; kernel-only, user space never reads it.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct BioOrigin {
    dev: u64,
    sector: u64,
    cgroup: u64,
}

#[inline(always)]
fn mode() -> u32 {
    // SAFETY: a plain read of a static the loader rewrites in .rodata.
    unsafe { core::ptr::read_volatile(&CGROUP_MODE) }
}

/// Whether attribution is on at all.
#[inline(always)]
pub fn enabled() -> bool {
    mode() != cgroup_mode::OFF
}

#[inline(always)]
fn layout() -> CgroupTracepointLayout {
    // SAFETY: as for `mode`.
    unsafe { core::ptr::read_volatile(&CGROUP_LAYOUT) }
}

#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i32> {
    if offset == ABSENT {
        return Err(0);
    }
    // SAFETY: the offset is the running kernel's, for this tracepoint; the helper checks bounds.
    unsafe { ctx.read_at::<T>(offset as usize) }
}

/// The cgroup of thread `pid`, from the task table.
#[inline(always)]
pub fn of_task(pid: u32) -> u64 {
    // SAFETY: a plain u64 read once.
    unsafe { TASK_CGROUP.get(pid).copied() }.unwrap_or(CGROUP_UNATTRIBUTED)
}

/// Whether the current task is a kernel thread (unified mode; `task_flags` from BTF).
#[inline(always)]
fn current_is_kernel_thread() -> bool {
    let offset = layout().task_flags;
    if offset == ABSENT {
        return false;
    }
    // SAFETY: no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: the helper checks the read; the offset is the running kernel's (BTF).
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize).cast::<u32>()) }
        .is_ok_and(|flags| flags & PF_KTHREAD != 0)
}

/// The cgroup of the current task. In unified mode a kernel thread's is the root, but it works
/// for everyone (the loop driver's workers submit a container's I/O to the backing file, the
/// flushers write back everyone's pages): its events are unattributed, as on v1, where kernel
/// threads are never in the task table. One probe read per event, in unified mode only.
#[inline(always)]
pub fn of_current() -> u64 {
    if mode() == cgroup_mode::UNIFIED {
        if current_is_kernel_thread() {
            return CGROUP_UNATTRIBUTED;
        }
        // SAFETY: no preconditions.
        unsafe { bpf_get_current_cgroup_id() }
    } else {
        of_task(bpf_get_current_pid_tgid() as u32)
    }
}

/// The counters of `cgroup`, inserting it if new; `CGROUP_REFUSED`'s when the table is full.
#[inline(always)]
fn stats_of(cgroup: u64) -> Option<*mut CgroupStats> {
    if cgroup == CGROUP_UNATTRIBUTED {
        add(&CGROUP_COUNTERS, cgroup_counter::UNATTRIBUTED_EVENTS, 1);
    }
    if let Some(stats) = CGROUP_STATS.get_ptr_mut(cgroup) {
        return Some(stats);
    }
    let zero = CGROUP_ZERO.get(0)?;
    // BPF_NOEXIST: another CPU may have inserted it meanwhile, which is fine (each CPU has its
    // own copy); a full table refuses it.
    if CGROUP_STATS
        .insert(cgroup, zero, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return CGROUP_STATS.get_ptr_mut(cgroup);
    }
    if let Some(stats) = CGROUP_STATS.get_ptr_mut(cgroup) {
        return Some(stats);
    }
    add(&CGROUP_COUNTERS, cgroup_counter::REFUSED_EVENTS, 1);
    CGROUP_STATS.get_ptr_mut(CGROUP_REFUSED)
}

/// Adds to `cgroup`'s counters.
#[inline(always)]
pub fn charge(cgroup: u64, update: impl FnOnce(&mut CgroupStats)) {
    if !enabled() {
        return;
    }
    if let Some(stats) = stats_of(cgroup) {
        // SAFETY: a per-CPU value, and tracing programs do not nest on one CPU.
        update(unsafe { &mut *stats });
    }
}

// --- which task is where ---------------------------------------------------------------------

#[inline(always)]
fn remember_task(pid: u32, cgroup: u64) {
    if TASK_CGROUP.insert(pid, cgroup, 0).is_err() {
        add(&CGROUP_COUNTERS, cgroup_counter::TASK_TABLE_FULL, 1);
    }
}

/// A task moved to another cgroup. Only the chosen v1 hierarchy's moves count (in unified
/// mode the default hierarchy's, whose id is 0).
#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    if !enabled() {
        return 0;
    }
    let layout = layout();
    let wanted = if mode() == cgroup_mode::UNIFIED {
        0
    } else {
        // SAFETY: as for `mode`.
        unsafe { core::ptr::read_volatile(&CGROUP_V1_HIERARCHY) }
    };
    if let (Ok(root), Ok(id), Ok(pid)) = (
        field::<i32>(&ctx, layout.attach_dst_root),
        field::<u64>(&ctx, layout.attach_dst_id),
        field::<i32>(&ctx, layout.attach_pid),
    ) && root as u32 == wanted
    {
        remember_task(pid as u32, id);
    }
    0
}

/// A new task starts in its parent's cgroup (called from the fork program).
#[inline(always)]
pub fn forked(ctx: &TracePointContext) {
    if !enabled() {
        return;
    }
    let layout = layout();
    if let (Ok(parent), Ok(child)) = (
        field::<i32>(ctx, layout.fork_parent_pid),
        field::<i32>(ctx, layout.fork_child_pid),
    ) {
        let cgroup = of_task(parent as u32);
        if cgroup != CGROUP_UNATTRIBUTED {
            remember_task(child as u32, cgroup);
        }
    }
}

/// The current thread exits at `now`: its on-CPU time so far is charged, then its entry goes.
///
/// Charged here because after the entry goes the final switch-out finds no cgroup for it: a
/// short-lived busy process that nothing preempted (a CPU to itself) would otherwise have all
/// its on-CPU time counted as unattributed.
#[inline(always)]
pub fn thread_exited(now: u64) {
    if enabled() {
        let tid = bpf_get_current_pid_tgid() as u32;
        settle_oncpu(tid, now);
        let _ = TASK_CGROUP.remove(tid);
    }
}

// --- scheduler -------------------------------------------------------------------------------

/// A context switch at `now`: `prev` (current, unless the idle task) ran since its switch-in.
#[inline(always)]
pub fn switched(prev_pid: u32, now: u64) {
    if enabled() {
        settle_oncpu(prev_pid, now);
    }
}

/// Charges the current task (`pid`, the idle task when 0) its on-CPU time up to `now` and
/// starts its next stretch there.
#[inline(always)]
fn settle_oncpu(prev_pid: u32, now: u64) {
    let Some(since) = ONCPU_SINCE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot.
    let started = unsafe { core::ptr::replace(since, now) };
    // A switch-in before the scheduler hooks last came back on: the time between is unseen.
    let fresh = SAMPLED_SINCE
        .get(sampled_group::SCHEDULER)
        .is_none_or(|since| started >= *since);
    if prev_pid != 0 && started != 0 && fresh && now > started {
        let cgroup = if mode() == cgroup_mode::UNIFIED {
            // The switch runs in the context of `prev`.
            of_current()
        } else {
            of_task(prev_pid)
        };
        charge(cgroup, |stats| stats.oncpu_ns += now - started);
    }
}

/// `pid` waited `waited_ns` on a run queue before getting a CPU.
#[inline(always)]
pub fn waited(pid: u32, waited_ns: u64) {
    if enabled() {
        charge(of_task(pid), |stats| stats.runq_wait_ns += waited_ns);
    }
}

// --- syscalls, exits, signals, OOM, reclaim --------------------------------------------------

/// A syscall of the current task failed with `errno`.
#[inline(always)]
pub fn syscall_failed(errno: u32) {
    if !enabled() {
        return;
    }
    let mut slot = cgroup_errno::COUNT;
    for (index, number) in cgroup_errno::NUMBERS.iter().enumerate() {
        if *number == i64::from(errno) {
            slot = index;
        }
    }
    if slot < cgroup_errno::COUNT {
        charge(of_current(), |stats| {
            if let Some(count) = stats.errors.get_mut(slot) {
                *count += 1;
            }
        });
    }
}

#[inline(always)]
pub fn exited_nonzero() {
    if enabled() {
        charge(of_current(), |stats| stats.exits_nonzero += 1);
    }
}

/// A fatal signal generated for the task in the record's `pid`.
#[inline(always)]
pub fn fatal_signal(ctx: &TracePointContext) {
    if !enabled() {
        return;
    }
    let cgroup = field::<i32>(ctx, layout().signal_pid)
        .map_or(CGROUP_UNATTRIBUTED, |pid| of_task(pid as u32));
    charge(cgroup, |stats| stats.fatal_signals += 1);
}

/// `oom:mark_victim` runs in the allocating task: the victim is the record's `pid`.
#[inline(always)]
pub fn oom_victim(ctx: &TracePointContext) {
    if !enabled() {
        return;
    }
    let cgroup = field::<i32>(ctx, layout().victim_pid)
        .map_or(CGROUP_UNATTRIBUTED, |pid| of_task(pid as u32));
    charge(cgroup, |stats| stats.oom_victims += 1);
}

#[inline(always)]
pub fn reclaim_stalled(stall_ns: u64) {
    if enabled() {
        charge(of_current(), |stats| stats.reclaim_stall_ns += stall_ns);
    }
}

// --- block I/O -------------------------------------------------------------------------------

#[inline(always)]
fn bio_slot(dev: u64, sector: u64) -> u32 {
    let hash = (sector ^ (dev << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((hash >> 32) as u32) & (BIO_ORIGIN_SLOTS - 1)
}

/// A bio submitted by the current task: its cgroup issued it, whoever later dispatches the
/// request (kblockd, a plug flushed by another task). Writeback on cgroup v1 is submitted by
/// the flusher threads, so it is charged to their cgroup (the root), not the dirtier's.
#[tracepoint]
pub fn block_bio_queue(ctx: TracePointContext) -> u32 {
    if !enabled() {
        return 0;
    }
    let layout = layout();
    let (Ok(dev), Ok(sector), Ok(nr_sector)) = (
        field::<u32>(&ctx, layout.bio_dev),
        field::<u64>(&ctx, layout.bio_sector),
        field::<u32>(&ctx, layout.bio_nr_sector),
    ) else {
        return 0;
    };
    let cgroup = of_current();
    charge(cgroup, |stats| {
        stats.io_ops += 1;
        stats.io_bytes += u64::from(nr_sector) * 512;
    });
    if let Some(slot) = BIO_ORIGIN.get_ptr_mut(bio_slot(u64::from(dev), sector)) {
        // SAFETY: a valid array slot; a torn read by a completion on another CPU can at worst
        // charge one latency to the wrong cgroup.
        unsafe {
            (*slot).dev = u64::from(dev);
            (*slot).sector = sector;
            (*slot).cgroup = cgroup;
        }
    }
    0
}

/// A request whose first bio started at (`dev`, `sector`) completed after `latency_ns`.
#[inline(always)]
pub fn request_completed(dev: u32, sector: u64, latency_ns: u64) {
    if !enabled() {
        return;
    }
    let Some(slot) = BIO_ORIGIN.get_ptr_mut(bio_slot(u64::from(dev), sector)) else {
        return;
    };
    // SAFETY: a valid array slot.
    let origin = unsafe { *slot };
    if origin.dev == u64::from(dev) && origin.sector == sector && origin.cgroup != 0 {
        // SAFETY: as above; the slot is freed so a later request at the same place (a
        // flusher's write to a block a task once read) is not charged to the old submitter.
        unsafe { (*slot).cgroup = 0 };
        charge(origin.cgroup, |stats| stats.io_latency_ns += latency_ns);
    }
}

// --- TCP -------------------------------------------------------------------------------------

// TCP states from include/net/tcp_states.h.
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;
const TCP_LISTEN: i32 = 10;

#[inline(always)]
fn of_socket(ctx: &TracePointContext, offset: u32) -> (u64, u64) {
    match field::<u64>(ctx, offset) {
        // SAFETY: a plain u64 read once.
        Ok(sk) if sk != 0 => (
            sk,
            unsafe { SOCK_CGROUP.get(sk).copied() }.unwrap_or(CGROUP_UNATTRIBUTED),
        ),
        _ => (0, CGROUP_UNATTRIBUTED),
    }
}

/// A TCP state change (`sock:inet_sock_set_state`, protocol already checked).
#[inline(always)]
pub fn tcp_state(ctx: &TracePointContext, old: i32, new: i32) {
    if !enabled() {
        return;
    }
    let offset = layout().set_state_skaddr;
    match (old, new) {
        // Transitions made by the owning task, in process context: connect(), listen(), and
        // close() of an open connection.
        (TCP_CLOSE, TCP_SYN_SENT)
        | (TCP_CLOSE, TCP_LISTEN)
        | (TCP_ESTABLISHED, TCP_FIN_WAIT1)
        | (TCP_CLOSE_WAIT, TCP_LAST_ACK) => {
            if let Ok(sk) = field::<u64>(ctx, offset)
                && sk != 0
            {
                let _ = SOCK_CGROUP.insert(sk, of_current(), 0);
            }
        }
        (_, TCP_CLOSE) => {
            let (sk, cgroup) = of_socket(ctx, offset);
            if old == TCP_SYN_SENT {
                charge(cgroup, |stats| stats.tcp_connect_failures += 1);
            }
            if sk != 0 {
                let _ = SOCK_CGROUP.remove(sk);
            }
        }
        _ => {}
    }
}

#[inline(always)]
pub fn tcp_retransmit(ctx: &TracePointContext) {
    if enabled() {
        let (_, cgroup) = of_socket(ctx, layout().retransmit_skaddr);
        charge(cgroup, |stats| stats.tcp_retransmits += 1);
    }
}

/// A reset received (`received`) or sent.
#[inline(always)]
pub fn tcp_reset(ctx: &TracePointContext, received: bool) {
    if enabled() {
        let layout = layout();
        let offset = if received {
            layout.receive_reset_skaddr
        } else {
            layout.send_reset_skaddr
        };
        let (_, cgroup) = of_socket(ctx, offset);
        charge(cgroup, |stats| stats.tcp_resets += 1);
    }
}
