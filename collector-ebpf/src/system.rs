//! Node-wide signals: scheduler, processes, memory reclaim, syscalls, files and network.
//!
//! Every program only adds to per-CPU arrays; the daemon sums and differences them per window.
//! Where a signal has a kprobe and a tracepoint (opens, fsync), the daemon attaches one of the
//! two, so nothing is counted twice.
//!
//! The daemon's own process (`IGNORED_TGID`, see `util.rs`) is not the node's work: its
//! syscalls (with their errors and opens) and the threads it creates are counted apart
//! (`event::OWN_SYSCALLS`, `event::OWN_FORKS`), since they grow with what the daemon is asked
//! to do. What is not filtered, and why:
//! - scheduler waits and context switches: the daemon's threads wait for a CPU like any
//!   other task, so its waits measure the node's contention (and /proc/stat's switch count
//!   cannot be filtered anyway);
//! - block I/O: requests are often issued from a kworker or another task's plug, so the
//!   current task is not the requester; and the daemon's writes (a `record` file) load the
//!   disk the same as anyone's, which is what the device's latency and queue show;
//! - network and TCP state: counted in softirq context, where the current task is whichever
//!   one was interrupted; scrapes of the daemon are real traffic on the node;
//! - reclaim, fsync latency, exits, signals: rare for the daemon (it neither fsyncs nor
//!   forks processes), and reclaim stalls are the node's memory pressure whoever hits them.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{
        BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use collector_common::{
    ABSENT, DROP_REASON_SLOTS, ERRNO_SLOTS, ETIMEDOUT, ExitCodeOffsets, Histogram, OpenSyscalls,
    RUNQUEUE_SLOTS, SystemTracepointLayout, WaitSyscalls, event, hist, hook_config, sampled_group,
};

use crate::{
    cgroup,
    util::{SAMPLED_SINCE, add, current_is_ignored, record_latency},
};

#[unsafe(no_mangle)]
static SYSTEM_LAYOUT: SystemTracepointLayout = SystemTracepointLayout::LINUX_6;

/// x86_64 open(2), openat(2), openat2(2), creat(2); the daemon writes this architecture's.
#[unsafe(no_mangle)]
static OPEN_SYSCALLS: OpenSyscalls = OpenSyscalls {
    numbers: [2, 257, 437, 85],
};

/// x86_64 futex, futex_waitv, mq_timedsend, mq_timedreceive, semtimedop, rt_sigtimedwait,
/// io_getevents, ppoll, pselect6, epoll_pwait, epoll_pwait2, clock_nanosleep;
/// the daemon writes this architecture's (from `libc::SYS_*`).
#[unsafe(no_mangle)]
static WAIT_SYSCALLS: WaitSyscalls = WaitSyscalls {
    numbers: [
        202, 449, 242, 243, 220, 128, 208, 271, 270, 281, 441, 230, -1, -1, -1, -1,
    ],
};

#[map]
static EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(event::COUNT, 0);

#[map]
static ERRNOS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ERRNO_SLOTS, 0);

#[map]
static DROP_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_SLOTS, 0);

#[map]
static HISTOGRAMS: PerCpuArray<Histogram> = PerCpuArray::with_max_entries(hist::COUNT, 0);

#[map]
static HOOK_CONFIG: Array<u32> = Array::with_max_entries(hook_config::COUNT, 0);

/// When each task entered reclaim, by pid_tgid.
#[map]
static RECLAIM_START: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// When each task entered fsync, by pid_tgid.
#[map]
static FSYNC_START: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn layout() -> SystemTracepointLayout {
    // SAFETY: a plain read of a static; volatile because the loader rewrites it in .rodata.
    unsafe { core::ptr::read_volatile(&SYSTEM_LAYOUT) }
}

#[inline(always)]
fn count(index: u32) {
    add(&EVENTS, index, 1);
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Reads a field of the tracepoint record at `offset` (from the kernel's format file).
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i32> {
    // SAFETY: the offset is the running kernel's, for this tracepoint; the helper checks bounds.
    unsafe { ctx.read_at::<T>(offset as usize) }
}

// --- scheduler -------------------------------------------------------------------------------

/// Byte offset of `pid` in `struct task_struct`, from the kernel's BTF; set before load. The
/// verifier sees the value as a constant (read-only data), so the BTF programs read the field
/// with one plain load.
#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u32 = ABSENT;

/// When each runnable task started waiting for a CPU: one word per slot, slot = pid modulo
/// [`RUNQUEUE_SLOTS`]. An array costs two inlined loads and a store per event where the hash
/// map it replaces cost a hashed lookup, an update and a delete, each a locked helper call.
#[map]
static RUNQUEUE_START: Array<u64> = Array::with_max_entries(RUNQUEUE_SLOTS, 0);

/// A slot's word: bit 63 set while a wait is pending, bits 56..63 the pid's bits above the
/// slot index (the tag), bits 0..56 the start time in ns (wraps after 2.2 years; the
/// difference is taken modulo 2^56). One aligned word, so a reader on another CPU never sees
/// half an update.
const RQ_PENDING: u64 = 1 << 63;
const RQ_TIME_BITS: u32 = 56;
const RQ_TIME_MASK: u64 = (1 << RQ_TIME_BITS) - 1;
const RQ_TAG_MASK: u64 = 0x7f << RQ_TIME_BITS;

#[inline(always)]
fn runqueue_tag(pid: u32) -> u64 {
    RQ_PENDING | ((u64::from(pid / RUNQUEUE_SLOTS) << RQ_TIME_BITS) & RQ_TAG_MASK)
}

/// `pid` became runnable at `now`.
#[inline(always)]
fn runqueue_enter(pid: u32, now: u64) {
    let Some(slot) = RUNQUEUE_START.get_ptr_mut(pid % RUNQUEUE_SLOTS) else {
        return;
    };
    let word = runqueue_tag(pid) | (now & RQ_TIME_MASK);
    // SAFETY: a valid, aligned array slot; volatile so each is one load and one store.
    unsafe {
        let old = core::ptr::read_volatile(slot);
        // Another pid's wait is still pending in this slot: its sample is lost, and counted.
        if old & RQ_PENDING != 0 && (old ^ word) & RQ_TAG_MASK != 0 {
            count(event::LATENCY_TABLE_FULL);
        }
        core::ptr::write_volatile(slot, word);
    }
}

/// `pid` got a CPU at `now`: records its wait, if we saw it start.
#[inline(always)]
fn runqueue_leave(pid: u32, now: u64) {
    let Some(slot) = RUNQUEUE_START.get_ptr_mut(pid % RUNQUEUE_SLOTS) else {
        return;
    };
    // SAFETY: as above.
    let old = unsafe { core::ptr::read_volatile(slot) };
    if old & (RQ_PENDING | RQ_TAG_MASK) != runqueue_tag(pid) {
        return;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(slot, 0) };
    let waited = now.wrapping_sub(old) & RQ_TIME_MASK;
    // The wait began before the hooks last came back on: its end may have passed unseen while
    // they were off, so this switch-in need not be its end (see `SAMPLED_SINCE`). The slot
    // keeps only 56 bits of time, so compare how long ago each was.
    if let Some(since) = SAMPLED_SINCE.get(sampled_group::SCHEDULER)
        && *since != 0
        && waited > now.wrapping_sub(*since) & RQ_TIME_MASK
    {
        return;
    }
    record_latency(&HISTOGRAMS, hist::RUNQUEUE, waited);
    cgroup::waited(pid, waited);
}

/// One context switch: `prev` goes back on a run queue if it is still runnable, `next` ends
/// its wait. Pid 0 is a CPU's idle task, which never waits.
#[inline(always)]
fn context_switch(prev_pid: u32, prev_runnable: bool, next_pid: u32) {
    // Not counted here: the daemon takes context switches from /proc/stat, exact while this
    // hook is sampled.
    let prev_waits = prev_pid != 0 && prev_runnable;
    // A task blocking with the CPU going idle (half the switches of a lightly loaded CPU)
    // needs no clock read, unless its on-CPU time is charged to its cgroup.
    if !prev_waits && next_pid == 0 && !cgroup::enabled() {
        return;
    }
    let now = now_ns();
    cgroup::switched(prev_pid, now);
    if prev_waits {
        runqueue_enter(prev_pid, now);
    }
    if next_pid != 0 {
        runqueue_leave(next_pid, now);
    }
}

/// `prev_state` of a task switched out while still runnable: 0, or TASK_REPORT_MAX (0x100)
/// when it was preempted (kernels since 4.14 report preemption that way).
const TASK_RUNNING_OR_PREEMPTED: i64 = 0x100;

/// The classic tracepoint, for kernels without BTF tracepoints (or without the `prev_state`
/// argument, before 5.18): the kernel builds a record for it, which costs more.
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let layout = layout();
    if let (Ok(prev_pid), Ok(prev_state), Ok(next_pid)) = (
        field::<u32>(&ctx, layout.switch_prev_pid),
        field::<i64>(&ctx, layout.switch_prev_state),
        field::<u32>(&ctx, layout.switch_next_pid),
    ) {
        // A task switched out while runnable goes straight back onto a run queue.
        let runnable = prev_state == 0 || prev_state & TASK_RUNNING_OR_PREEMPTED != 0;
        context_switch(prev_pid, runnable, next_pid);
    }
    0
}

/// Attached to both `sched_wakeup` and `sched_wakeup_new` (classic tracepoints).
#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    if let Ok(pid) = field::<u32>(&ctx, layout().wakeup_pid)
        && pid != 0
    {
        runqueue_enter(pid, now_ns());
    }
    0
}

/// `task->pid` through the task pointer a BTF tracepoint hands over: one load the verifier
/// checks against the kernel's BTF (no helper call).
#[inline(always)]
fn task_pid(task: *const u8) -> u32 {
    // SAFETY: a plain read of a static the loader rewrites.
    let offset = unsafe { core::ptr::read_volatile(&TASK_PID_OFFSET) };
    // SAFETY: `task` is a `struct task_struct *` argument of the tracepoint and the offset is
    // `pid`'s in the running kernel (BTF); the verifier checks the access.
    unsafe { core::ptr::read_volatile(task.wrapping_add(offset as usize).cast::<i32>()) as u32 }
}

/// `sched_switch` as a BTF tracepoint: TP_PROTO(bool preempt, struct task_struct *prev,
/// struct task_struct *next, unsigned int prev_state) (5.18+). No trace record is built and
/// arguments are plain loads, so this costs a fraction of the classic tracepoint.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // The same test as the record's prev_state: preempted, or TASK_RUNNING (0).
    let runnable = preempt & 0xff != 0 || prev_state & 0xffff_ffff == 0;
    context_switch(task_pid(prev), runnable, task_pid(next));
    0
}

/// `sched_wakeup` as a BTF tracepoint: TP_PROTO(struct task_struct *p). A BTF program is
/// loaded for one tracepoint, hence two programs with the same body.
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup_btf(ctx: BtfTracePointContext) -> i32 {
    wakeup_btf(&ctx);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new_btf(ctx: BtfTracePointContext) -> i32 {
    wakeup_btf(&ctx);
    0
}

#[inline(always)]
fn wakeup_btf(ctx: &BtfTracePointContext) {
    let task: *const u8 = ctx.arg(0);
    let pid = task_pid(task);
    if pid != 0 {
        runqueue_enter(pid, now_ns());
    }
}

// --- processes -------------------------------------------------------------------------------

/// Runs in the parent: the daemon's own thread spawns (its hook sampler starts a few per
/// window) are counted apart.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    cgroup::forked(&ctx);
    if current_is_ignored() {
        count(event::OWN_FORKS);
    } else {
        count(event::FORKS);
    }
    0
}

/// Offsets of `signal` in `struct task_struct` and of `group_exit_code` in
/// `struct signal_struct`, and of `group_leader` and `start_time` in `struct task_struct`,
/// from the kernel's BTF; set before load.
#[unsafe(no_mangle)]
static EXIT_CODE_OFFSETS: ExitCodeOffsets = ExitCodeOffsets::UNKNOWN;

/// Non-zero exits within this long of the process's start are brief commands'. Set before load.
#[unsafe(no_mangle)]
static BRIEF_EXIT_NS: u64 = collector_common::BRIEF_EXIT_NS;

#[inline(always)]
fn exit_code_offsets() -> ExitCodeOffsets {
    // SAFETY: a plain read of a static the loader rewrites.
    unsafe { core::ptr::read_volatile(&EXIT_CODE_OFFSETS) }
}

/// Counts the current process's non-zero exit: as a brief command's when it started under
/// [`BRIEF_EXIT_NS`] ago, else as a program's. The process's start is its thread group
/// leader's (the exiting thread may be one started just now); when that cannot be read
/// (offsets unknown, a failed read) the exit counts as a program's, as before the split, and
/// a failed read is counted (`EXIT_UNREADABLE`).
#[inline(always)]
fn count_nonzero_exit() {
    // SAFETY: see `exit_code_offsets`.
    let brief_ns = unsafe { core::ptr::read_volatile(&BRIEF_EXIT_NS) };
    let brief = match process_start_ns(exit_code_offsets()) {
        Ok(Some(started)) => now_ns().saturating_sub(started) < brief_ns,
        Ok(None) => false,
        Err(_) => {
            count(event::EXIT_UNREADABLE);
            false
        }
    };
    count(if brief {
        event::EXITS_NONZERO_BRIEF
    } else {
        event::EXITS_NONZERO
    });
    // Every non-zero exit is charged to its cgroup: attribution names who fails, briefly or not.
    cgroup::exited_nonzero();
}

/// `current->group_leader->start_time`: monotonic ns, the clock of `bpf_ktime_get_ns`.
/// `Ok(None)` when the offsets are unknown (the loader said so), `Err` when a read failed.
#[inline(always)]
fn process_start_ns(offsets: ExitCodeOffsets) -> Result<Option<u64>, i32> {
    if offsets.task_group_leader == ABSENT || offsets.task_start_time == ABSENT {
        return Ok(None);
    }
    // SAFETY: no preconditions; the exiting task is current.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: the helper checks each read; the offsets are the running kernel's (BTF).
    let leader: *const u8 = unsafe {
        bpf_probe_read_kernel(task.wrapping_add(offsets.task_group_leader as usize).cast())
    }?;
    let started: u64 = unsafe {
        bpf_probe_read_kernel(leader.wrapping_add(offsets.task_start_time as usize).cast())
    }?;
    Ok(Some(started))
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let offset = layout().process_exit_group_dead;
    // Without `group_dead` (older kernels) every thread exit counts.
    let process_gone = offset == ABSENT || field::<u8>(&ctx, offset).is_ok_and(|dead| dead != 0);
    if !process_gone {
        cgroup::thread_exited(now_ns());
        return 0;
    }
    count(event::EXITS);
    let from_task = HOOK_CONFIG
        .get(hook_config::EXIT_CODE_FROM_TASK)
        .is_some_and(|enabled| *enabled != 0);
    let offsets = exit_code_offsets();
    if from_task && offsets.task_signal != ABSENT && offsets.signal_group_exit_code != ABSENT {
        match group_exit_status(offsets) {
            Ok(status) if (status >> 8) & 0xff != 0 => count_nonzero_exit(),
            Ok(_) => {}
            Err(_) => count(event::EXIT_UNREADABLE),
        }
    }
    // After the charge above, which looks the exiting task up.
    cgroup::thread_exited(now_ns());
    0
}

/// The exiting process's wait status: exit code in bits 8..16, or the killing signal in the
/// low bits. do_group_exit (or do_exit for the last thread) stores it in the shared
/// signal_struct before this tracepoint; `task_struct.exit_code` is written later on 6.x.
#[inline(always)]
fn group_exit_status(offsets: ExitCodeOffsets) -> Result<i32, i32> {
    // The exiting task is current.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: the helper checks each read; the offsets are the running kernel's (BTF).
    let signal: *const u8 =
        unsafe { bpf_probe_read_kernel(task.wrapping_add(offsets.task_signal as usize).cast()) }?;
    unsafe {
        bpf_probe_read_kernel(
            signal
                .wrapping_add(offsets.signal_group_exit_code as usize)
                .cast::<i32>(),
        )
    }
}

#[tracepoint]
pub fn sys_enter_exit_group(ctx: TracePointContext) -> u32 {
    let offset = layout().exit_group_error_code;
    if offset == ABSENT {
        // The loader said so: no exit codes from this tracepoint.
        return 0;
    }
    match field::<i64>(&ctx, offset) {
        Ok(0) => {}
        Ok(_) => count_nonzero_exit(),
        Err(_) => count(event::EXIT_UNREADABLE),
    }
    0
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    // SIGILL 4, SIGABRT 6, SIGBUS 7, SIGFPE 8, SIGSEGV 11, SIGSYS 31: a program crashing.
    if let Ok(4 | 6 | 7 | 8 | 11 | 31) = field::<i32>(&ctx, layout().signal_sig) {
        count(event::FATAL_SIGNALS);
        cgroup::fatal_signal(&ctx);
    }
    0
}

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    count(event::OOM_KILLS);
    cgroup::oom_victim(&ctx);
    0
}

// --- memory ----------------------------------------------------------------------------------

/// Attached to `mm_vmscan_direct_reclaim_begin` and `mm_vmscan_memcg_reclaim_begin`.
#[tracepoint]
pub fn reclaim_begin(_ctx: TracePointContext) -> u32 {
    let _ = RECLAIM_START.insert(bpf_get_current_pid_tgid(), now_ns(), 0);
    0
}

/// Attached to the matching `_end` tracepoints.
#[tracepoint]
pub fn reclaim_end(_ctx: TracePointContext) -> u32 {
    let task = bpf_get_current_pid_tgid();
    // SAFETY: plain u64 read once.
    if let Some(started) = unsafe { RECLAIM_START.get(task).copied() } {
        let _ = RECLAIM_START.remove(task);
        count(event::RECLAIMS);
        let stall_ns = now_ns().saturating_sub(started);
        add(&EVENTS, event::RECLAIM_NS, stall_ns);
        cgroup::reclaim_stalled(stall_ns);
    }
    0
}

// --- syscalls and files ----------------------------------------------------------------------

/// Offset of the syscall number in `struct pt_regs`, for the raw and BTF tracepoints, which
/// get the registers, not a record. The daemon writes the running kernel's: x86_64 `orig_ax`
/// (a stable uapi layout), arm64 `syscallno` (from the kernel's BTF), or `ABSENT`.
#[cfg(not(bpf_target_arch = "aarch64"))]
#[unsafe(no_mangle)]
static PT_REGS_SYSCALL_NR_OFFSET: u32 = 120;
#[cfg(bpf_target_arch = "aarch64")]
#[unsafe(no_mangle)]
static PT_REGS_SYSCALL_NR_OFFSET: u32 = ABSENT;

/// The width of that slot: x86_64's `orig_ax` is an `unsigned long`; arm64's `syscallno` an
/// `s32`, sign-extended (its -1 means "no syscall", which matches no number we look for).
#[cfg(not(bpf_target_arch = "aarch64"))]
type SyscallNrSlot = i64;
#[cfg(bpf_target_arch = "aarch64")]
type SyscallNrSlot = i32;

/// Every syscall return: the rate, failures by errno, and opens when no kprobe counts them.
/// The raw tracepoint is the cheap hook: the kernel builds no trace record for it.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_raw(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let ret: i64 = ctx.arg(1);
    let regs: *const u8 = ctx.arg(0);
    let _ = count_syscall_exit(ret, || {
        // SAFETY: a plain read of a static the loader rewrites.
        let offset = unsafe { core::ptr::read_volatile(&PT_REGS_SYSCALL_NR_OFFSET) };
        if offset == ABSENT {
            return Err(0);
        }
        // SAFETY: the helper checks the read; the offset is the architecture's pt_regs layout.
        unsafe { bpf_probe_read_kernel(regs.wrapping_add(offset as usize).cast::<SyscallNrSlot>()) }
            .map(i64::from)
    });
    0
}

/// The same as a BTF tracepoint, the first choice: TP_PROTO(struct pt_regs *regs, long ret).
/// The kernel dispatches both the same way, but here `regs` is a BTF pointer, so the syscall
/// number is one plain load instead of a `bpf_probe_read_kernel` call.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    let regs: *const u8 = ctx.arg(0);
    let _ = count_syscall_exit(ret, || {
        // SAFETY: a plain read of a static the loader rewrites.
        let offset = unsafe { core::ptr::read_volatile(&PT_REGS_SYSCALL_NR_OFFSET) };
        if offset == ABSENT {
            return Err(0);
        }
        // SAFETY: `regs` is the tracepoint's `struct pt_regs *` and the offset this
        // architecture's syscall number slot in it; the verifier checks the access.
        let nr = unsafe {
            core::ptr::read_volatile(regs.wrapping_add(offset as usize).cast::<SyscallNrSlot>())
        };
        Ok(i64::from(nr))
    });
    0
}

/// The classic tracepoint, for kernels that refuse the raw one.
#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    let layout = layout();
    if let Ok(ret) = field::<i64>(&ctx, layout.sys_exit_ret) {
        let _ = count_syscall_exit(ret, || field(&ctx, layout.sys_exit_id));
    }
    0
}

#[inline(always)]
fn count_syscall_exit(ret: i64, syscall_nr: impl FnOnce() -> Result<i64, i32>) -> Result<(), i32> {
    // The daemon's own: counted apart, and not as errors or opens of the node.
    if current_is_ignored() {
        count(event::OWN_SYSCALLS);
        return Ok(());
    }
    count(event::SYSCALLS);
    // Only -4095..=-1 are errors; other negative values are legitimate results (lseek, mmap).
    let failed = (-4095..0).contains(&ret);
    let errno = if failed { (-ret) as u32 } else { 0 };
    let opens_here = HOOK_CONFIG
        .get(hook_config::OPENS_FROM_SYSCALL_EXIT)
        .is_some_and(|enabled| *enabled != 0);
    // The syscall number is read only when needed: for the opens, and for an ETIMEDOUT (rare
    // but for timed waits), whose meaning depends on the syscall. Unknown (-1) matches none.
    let timed_out = errno == ETIMEDOUT;
    let id = if opens_here || timed_out {
        syscall_nr().unwrap_or(-1)
    } else {
        -1
    };
    if failed {
        // SAFETY: plain read of a static rewritten by the loader.
        let waits = unsafe { core::ptr::read_volatile(&WAIT_SYSCALLS) };
        if timed_out && id >= 0 && waits.numbers.contains(&id) {
            // A timed wait ran out: its ordinary outcome (a lock or condition polled with a
            // timeout), not a failure of the node.
            count(event::WAIT_TIMEOUTS);
        } else {
            count(event::SYSCALL_ERRORS);
            if errno < ERRNO_SLOTS {
                add(&ERRNOS, errno, 1);
            }
            cgroup::syscall_failed(errno);
        }
    }
    if opens_here {
        // SAFETY: plain read of a static rewritten by the loader.
        let opens = unsafe { core::ptr::read_volatile(&OPEN_SYSCALLS) };
        if id >= 0 && opens.numbers.contains(&id) {
            count(event::OPENS);
            if failed {
                count(event::OPEN_ERRORS);
            }
        }
    }
    Ok(())
}

/// Opens through the kprobe: `do_sys_openat2` serves open, openat, openat2 and creat.
#[kretprobe]
pub fn do_sys_openat2_return(ctx: RetProbeContext) -> u32 {
    // The daemon's own opens (its /proc and sysfs reads) are among its own syscalls.
    if current_is_ignored() {
        return 0;
    }
    count(event::OPENS);
    let fd: i64 = ctx.ret();
    if fd < 0 {
        count(event::OPEN_ERRORS);
    }
    0
}

#[inline(always)]
fn fsync_begin() {
    let _ = FSYNC_START.insert(bpf_get_current_pid_tgid(), now_ns(), 0);
}

#[inline(always)]
fn fsync_end() {
    let task = bpf_get_current_pid_tgid();
    // SAFETY: plain u64 read once.
    if let Some(started) = unsafe { FSYNC_START.get(task).copied() } {
        let _ = FSYNC_START.remove(task);
        let latency_ns = now_ns().saturating_sub(started);
        count(event::FSYNCS);
        add(&EVENTS, event::FSYNC_NS, latency_ns);
        record_latency(&HISTOGRAMS, hist::FSYNC, latency_ns);
    }
}

/// fsync latency through the kprobe pair on `vfs_fsync_range` (fsync, fdatasync, msync,
/// sync_file_range all end there).
#[kprobe]
pub fn vfs_fsync_range(_ctx: ProbeContext) -> u32 {
    fsync_begin();
    0
}

#[kretprobe]
pub fn vfs_fsync_range_return(_ctx: RetProbeContext) -> u32 {
    fsync_end();
    0
}

/// The tracepoint fallbacks: `ext4:ext4_sync_file_enter`, or `sys_enter_fsync` and
/// `sys_enter_fdatasync`.
#[tracepoint]
pub fn fsync_enter(_ctx: TracePointContext) -> u32 {
    fsync_begin();
    0
}

/// `ext4:ext4_sync_file_exit`, or `sys_exit_fsync` and `sys_exit_fdatasync`.
#[tracepoint]
pub fn fsync_exit(_ctx: TracePointContext) -> u32 {
    fsync_end();
    0
}

// --- network ---------------------------------------------------------------------------------

#[tracepoint]
pub fn netif_receive_skb(ctx: TracePointContext) -> u32 {
    count(event::RX_PACKETS);
    if let Ok(len) = field::<u32>(&ctx, layout().rx_len) {
        add(&EVENTS, event::RX_BYTES, u64::from(len));
    }
    0
}

#[tracepoint]
pub fn net_dev_xmit(ctx: TracePointContext) -> u32 {
    let layout = layout();
    count(event::TX_PACKETS);
    if let Ok(len) = field::<u32>(&ctx, layout.tx_len) {
        add(&EVENTS, event::TX_BYTES, u64::from(len));
    }
    if field::<i32>(&ctx, layout.tx_rc).is_ok_and(|rc| rc != 0) {
        count(event::TX_ERRORS);
    }
    0
}

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    count(event::SKB_DROPS);
    let layout = layout();
    if let Ok(reason) = field::<u32>(&ctx, layout.kfree_skb_reason)
        && reason < DROP_REASON_SLOTS
    {
        // `tcp_v4_rcv` frees a segment a TIME_WAIT socket handled (ACKed or ignored) with the
        // generic reason: the protocol's housekeeping after a close, not loss.
        if reason == layout.kfree_skb_not_specified && in_time_wait(&ctx, &layout) {
            count(event::TCP_TIME_WAIT_SEGMENTS);
        } else {
            add(&DROP_REASONS, reason, 1);
        }
    }
    0
}

/// TCP_TIME_WAIT from include/net/tcp_states.h.
const TCP_TIME_WAIT: u8 = 6;

/// Whether the freed packet's receiving socket (`rx_sk`, Linux 6.12+) is in TIME_WAIT. Every
/// kind of socket `rx_sk` can be (full, request, timewait) starts with `struct sock_common`,
/// whose `skc_state` is read. False when the kernel has no `rx_sk`, no BTF offset, or no
/// socket; a failed read is counted ([`event::SOCK_STATE_UNREADABLE`]) and is false.
#[inline(always)]
fn in_time_wait(ctx: &TracePointContext, layout: &SystemTracepointLayout) -> bool {
    if layout.kfree_skb_rx_sk == ABSENT || layout.sock_common_state == ABSENT {
        return false;
    }
    let Ok(socket) = field::<u64>(ctx, layout.kfree_skb_rx_sk) else {
        count(event::SOCK_STATE_UNREADABLE);
        return false;
    };
    if socket == 0 {
        return false;
    }
    let state = (socket as usize as *const u8).wrapping_add(layout.sock_common_state as usize);
    // SAFETY: the helper checks the read; `state` is `skc_state` of a live socket the kernel
    // passed to the tracepoint.
    match unsafe { bpf_probe_read_kernel(state) } {
        Ok(state) => state == TCP_TIME_WAIT,
        Err(_) => {
            count(event::SOCK_STATE_UNREADABLE);
            false
        }
    }
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    count(event::TCP_RETRANSMITS);
    cgroup::tcp_retransmit(&ctx);
    0
}

// TCP states from include/net/tcp_states.h.
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let layout = layout();
    if field::<u16>(ctx, layout.set_state_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    let old: i32 = field(ctx, layout.set_state_oldstate)?;
    let new: i32 = field(ctx, layout.set_state_newstate)?;
    cgroup::tcp_state(ctx, old, new);
    match (old, new) {
        (TCP_SYN_SENT, TCP_ESTABLISHED) => count(event::TCP_CONNECTS),
        (TCP_SYN_SENT, TCP_CLOSE) => count(event::TCP_CONNECT_FAILURES),
        (TCP_SYN_RECV, TCP_ESTABLISHED) => count(event::TCP_ACCEPTS),
        _ => {}
    }
    Ok(())
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    count(event::TCP_RESETS_RECEIVED);
    cgroup::tcp_reset(&ctx, true);
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    count(event::TCP_RESETS_SENT);
    cgroup::tcp_reset(&ctx, false);
    0
}
