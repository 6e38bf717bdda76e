//! Records shared by the kernel programs (`collector-ebpf`) and the daemon (`collector`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so both sides agree on the byte layout
//! and map keys hash the same whatever the stack held before. The counter arrays' indices and
//! the housekeeping drop reasons are in `counters`, re-exported here.
#![no_std]

mod counters;

pub use counters::{
    DROP_REASON_SLOTS, ERRNO_SLOTS, HOUSEKEEPING_DROP_REASONS, TCP_TIME_WAIT_DROP_REASON, counter,
    event, housekeeping_drops, try_housekeeping_drops,
};

/// Number of log2 latency buckets. Bucket `i` counts requests whose latency in microseconds
/// falls in `[2^i, 2^(i+1))`; bucket 0 also holds everything under 1 µs, the last bucket
/// everything from `2^31` µs (~36 minutes) on.
pub const LATENCY_BUCKETS: usize = 32;

/// Request classes, decoded from the tracepoint's `rwbs` string.
pub mod op {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const DISCARD: usize = 2;
    /// A pure cache flush (`REQ_OP_FLUSH`, rwbs "F"). A write carrying a pre-flush ("FWS") is
    /// a write here and is also counted in [`super::BlockDevStats::flushes`].
    pub const FLUSH: usize = 3;
    pub const OTHER: usize = 4;
    pub const COUNT: usize = 5;
    pub const NAMES: [&str; COUNT] = ["read", "write", "discard", "flush", "other"];
}

/// Per block device counters, one copy per CPU (`BPF_MAP_TYPE_PERCPU_HASH` keyed by the
/// kernel's `dev_t`, `major << 20 | minor`). The daemon sums the CPUs and takes deltas.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockDevStats {
    /// Requests issued to the driver, by [`op`] class.
    pub ops: [u64; op::COUNT],
    /// Bytes of those requests, by [`op`] class.
    pub bytes: [u64; op::COUNT],
    /// Requests that flush the device cache: pure flushes and pre-flushes on writes.
    pub flushes: u64,
    /// Issued requests whose start time we recorded (the in-flight table had room).
    pub tracked_issued: u64,
    /// Completions matched to a recorded issue; `tracked_issued - completed` is in flight.
    pub completed: u64,
    /// Completions with a non-zero error (`blk_status_t` turned errno, e.g. -EIO).
    pub errors: u64,
    /// Sum of issue → complete latencies of matched completions, nanoseconds.
    pub latency_sum_ns: u64,
    /// log2 histogram of issue → complete latency in microseconds (see [`LATENCY_BUCKETS`]).
    pub latency_hist: [u64; LATENCY_BUCKETS],
}

impl BlockDevStats {
    pub const ZERO: Self = Self {
        ops: [0; op::COUNT],
        bytes: [0; op::COUNT],
        flushes: 0,
        tracked_issued: 0,
        completed: 0,
        errors: 0,
        latency_sum_ns: 0,
        latency_hist: [0; LATENCY_BUCKETS],
    };
}

/// Key of the in-flight table: a request is known by its device and start sector between
/// issue and completion (tracepoints do not expose the `struct request` pointer).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct InflightKey {
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}

/// One slot of the in-flight table, an array indexed by a hash of the [`InflightKey`]: plain
/// array loads and stores cost a fraction of a hash map's update and delete on the hot path.
/// `started_ns` 0 marks a free slot.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct InflightSlot {
    pub key: InflightKey,
    pub started_ns: u64,
}

/// Slots in the in-flight table (a power of two). A request may use either of two
/// neighbouring slots: with 256 requests in flight about 1 in 1,000 finds both taken (and is
/// counted, not timed). Kept small on purpose: random slots of a large table miss the cache
/// and the TLB on every request.
pub const INFLIGHT_SLOTS: u32 = 8192;

/// Slots in the run-queue table, indexed by pid modulo this (a power of two): with the
/// default `pid_max` (32768, or 1024 per CPU up to 4 M) every pid below it has a slot of its
/// own.
pub const RUNQUEUE_SLOTS: u32 = 65536;

/// A request slower than the configured threshold, sent to user space through the ring buffer.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SlowIoEvent {
    pub dev: u32,
    /// [`op`] class.
    pub op: u32,
    pub sector: u64,
    pub latency_ns: u64,
    pub bytes: u32,
    /// Negative errno from the completion, 0 on success.
    pub error: i32,
}

/// The block programs read this many bytes from the start of a tracepoint record, once, and
/// take every field from that copy; the daemon refuses a layout with a field beyond it.
pub const RECORD_HEAD_BYTES: usize = 48;

/// Field offsets inside the block tracepoints' records, read by the daemon from tracefs
/// `events/block/<name>/format` at start-up and written into the program before load: the
/// layout changes between kernels (`rwbs` grew from 8 to 10 bytes in 6.x) and we cannot use
/// CO-RE relocations.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BlockTracepointLayout {
    pub issue_dev: u32,
    pub issue_sector: u32,
    pub issue_bytes: u32,
    pub issue_rwbs: u32,
    pub complete_dev: u32,
    pub complete_sector: u32,
    pub complete_nr_sector: u32,
    pub complete_error: u32,
    pub complete_rwbs: u32,
    pub _pad: u32,
}

impl BlockTracepointLayout {
    /// The layout of Linux 6.x (`rwbs[10]`), used only as the compiled-in default; the daemon
    /// always overwrites it with what the running kernel reports.
    pub const LINUX_6: Self = Self {
        issue_dev: 8,
        issue_sector: 16,
        issue_bytes: 28,
        issue_rwbs: 34,
        complete_dev: 8,
        complete_sector: 16,
        complete_nr_sector: 24,
        complete_error: 28,
        complete_rwbs: 34,
        _pad: 0,
    };
}

/// A log2 latency histogram in microseconds (see [`LATENCY_BUCKETS`]).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; LATENCY_BUCKETS],
        }
    }
}

/// Indices into the `HISTOGRAMS` per-CPU array.
pub mod hist {
    /// Wake-up (or preemption) → running again: time spent waiting on a run queue.
    pub const RUNQUEUE: u32 = 0;
    pub const FSYNC: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Run-time switches in the `HOOK_CONFIG` array, written by the daemon after it has attached
/// its programs, so that a signal with two possible hooks is counted by exactly one.
pub mod hook_config {
    /// 1: the raw syscall exit program counts opens (the `do_sys_openat2` kprobe is missing).
    pub const OPENS_FROM_SYSCALL_EXIT: u32 = 0;
    /// 1: the process-exit program reads exit codes from `task_struct` (offset from BTF), so
    /// the per-syscall `exit_group` tracepoint is not needed.
    pub const EXIT_CODE_FROM_TASK: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Field offsets in the system tracepoints' records, read from tracefs at start-up (see
/// [`BlockTracepointLayout`]). [`ABSENT`] marks a field this kernel does not have.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SystemTracepointLayout {
    pub switch_prev_pid: u32,
    pub switch_prev_state: u32,
    pub switch_next_pid: u32,
    pub wakeup_pid: u32,
    pub process_exit_group_dead: u32,
    pub exit_group_error_code: u32,
    pub signal_sig: u32,
    pub sys_exit_id: u32,
    pub sys_exit_ret: u32,
    pub kfree_skb_reason: u32,
    /// `rx_sk` (the receiving socket, Linux 6.12+), a pointer.
    pub kfree_skb_rx_sk: u32,
    /// The value of `enum skb_drop_reason`'s `NOT_SPECIFIED` on this kernel (from the
    /// format's names), [`ABSENT`] when unknown.
    pub kfree_skb_not_specified: u32,
    /// Byte offset of `skc_state` (a u8) in `struct sock_common`, from the kernel's BTF,
    /// [`ABSENT`] when unknown. Not a tracepoint field: the programs read it through `rx_sk`.
    pub sock_common_state: u32,
    pub set_state_oldstate: u32,
    pub set_state_newstate: u32,
    pub set_state_protocol: u32,
    pub rx_len: u32,
    pub tx_len: u32,
    pub tx_rc: u32,
}

/// Marks a tracepoint field missing on this kernel.
pub const ABSENT: u32 = u32::MAX;

/// Which architecture an eBPF object was built for: the object keeps this prefix, the
/// architecture (the `bpf_target_arch` aya-build passes, e.g. `aarch64`) and NULs in a
/// read-only static of [`EBPF_ARCH_MARKER_BYTES`]. Context structs differ between
/// architectures (`struct pt_regs`), so the release checks look for it in each binary to prove
/// the binary embeds its own architecture's object. The daemon itself never reads it.
pub const EBPF_ARCH_MARKER: &[u8] = b"nodestate-ebpf-arch=";
pub const EBPF_ARCH_MARKER_BYTES: usize = 32;

impl SystemTracepointLayout {
    /// Linux 6.x offsets; only a compiled-in default, overwritten at start-up.
    pub const LINUX_6: Self = Self {
        switch_prev_pid: 24,
        switch_prev_state: 32,
        switch_next_pid: 56,
        wakeup_pid: 24,
        process_exit_group_dead: 32,
        exit_group_error_code: 16,
        signal_sig: 8,
        sys_exit_id: 8,
        sys_exit_ret: 16,
        kfree_skb_reason: 36,
        kfree_skb_rx_sk: ABSENT,
        kfree_skb_not_specified: ABSENT,
        sock_common_state: ABSENT,
        set_state_oldstate: 16,
        set_state_newstate: 20,
        set_state_protocol: 30,
        rx_len: 16,
        tx_len: 16,
        tx_rc: 20,
    };
}

/// Where the kernel keeps an exiting process's status: `task_struct.signal` and
/// `signal_struct.group_exit_code` byte offsets from BTF, [`ABSENT`] when unknown; and where
/// it keeps when the process started (`task_struct.group_leader`, `task_struct.start_time`),
/// to tell a brief command's non-zero exit from a program's (see [`event::EXITS_NONZERO`]).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ExitCodeOffsets {
    pub task_signal: u32,
    pub signal_group_exit_code: u32,
    pub task_group_leader: u32,
    pub task_start_time: u32,
}

impl ExitCodeOffsets {
    /// Nothing known: exit codes need the per-syscall tracepoint, and every non-zero exit
    /// counts as a program's.
    pub const UNKNOWN: Self = Self {
        task_signal: ABSENT,
        signal_group_exit_code: ABSENT,
        task_group_leader: ABSENT,
        task_start_time: ABSENT,
    };
}

/// A process that exits non-zero within this long of its start is a brief command (a build's
/// probe, `grep` finding nothing, a check that answers "no"): counted as
/// [`event::EXITS_NONZERO_BRIEF`], not as [`event::EXITS_NONZERO`]. The daemon's
/// `--brief-exit` sets it before load; this is its default.
pub const BRIEF_EXIT_NS: u64 = 1_000_000_000;

/// Syscall numbers of the open family on this architecture (-1: none), set before load.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OpenSyscalls {
    pub numbers: [i64; 4],
}

/// ETIMEDOUT (the asm-generic value, which x86_64 and aarch64 share).
pub const ETIMEDOUT: u32 = 110;

/// Syscall numbers of the timed waits on this architecture (-1: unused slot), set before load
/// from the daemon's `libc::SYS_*`, so another architecture needs no kernel-side table. Their
/// ETIMEDOUT is counted as [`event::WAIT_TIMEOUTS`].
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WaitSyscalls {
    pub numbers: [i64; WAIT_SYSCALL_SLOTS],
}

/// Slots of [`WaitSyscalls`].
pub const WAIT_SYSCALL_SLOTS: usize = 16;

/// Errnos counted per cgroup (issue 20): the ones a fault shows as, in the order of
/// [`CgroupStats::errors`].
pub mod cgroup_errno {
    pub const ENOSPC: usize = 0;
    pub const EMFILE: usize = 1;
    pub const ENFILE: usize = 2;
    pub const EIO: usize = 3;
    pub const ECONNREFUSED: usize = 4;
    pub const EADDRNOTAVAIL: usize = 5;
    pub const ENOMEM: usize = 6;
    pub const COUNT: usize = 7;
    /// Linux errno numbers (asm-generic; identical on x86_64 and aarch64).
    pub const NUMBERS: [i64; COUNT] = [28, 24, 23, 5, 111, 99, 12];
    pub const NAMES: [&str; COUNT] = [
        "ENOSPC",
        "EMFILE",
        "ENFILE",
        "EIO",
        "ECONNREFUSED",
        "EADDRNOTAVAIL",
        "ENOMEM",
    ];
}

/// What one cgroup did, cumulative since load: the per-cgroup side of the node's counters, so a
/// degraded verdict can name the workload behind it (issue 20). Keyed by a `u64` cgroup id: on
/// the unified hierarchy (cgroup v2) the task's default-hierarchy id; on cgroup v1 the kernfs
/// id (the directory's inode number) of the task's cgroup in the memory hierarchy, else cpu.
/// Key [`CGROUP_UNATTRIBUTED`] collects events whose cgroup is unknown (softirq context, a task
/// the pid map has not seen) and [`CGROUP_REFUSED`] those of cgroups refused because the
/// table was full: nothing is dropped silently.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Time on CPU, ns.
    pub oncpu_ns: u64,
    /// Time runnable but waiting for a CPU, ns (a victim-side signal).
    pub runq_wait_ns: u64,
    /// Block requests issued (charged at bio submission, to the submitting task's cgroup).
    pub io_ops: u64,
    pub io_bytes: u64,
    /// Sum of the completion latencies of the requests it issued, ns (victim-side).
    pub io_latency_ns: u64,
    /// Syscalls that failed with each of [`cgroup_errno::NAMES`].
    pub errors: [u64; cgroup_errno::COUNT],
    pub exits_nonzero: u64,
    pub fatal_signals: u64,
    /// Tasks of this cgroup chosen as OOM-kill victims.
    pub oom_victims: u64,
    /// Time its tasks spent in direct reclaim, ns (victim-side).
    pub reclaim_stall_ns: u64,
    pub tcp_retransmits: u64,
    pub tcp_resets: u64,
    pub tcp_connect_failures: u64,
}

/// Entries of the per-cgroup table; a node with more live cgroups charges the rest to
/// [`CGROUP_REFUSED`]. 4096 entries x 152 bytes x CPUs (per-CPU hash): 608 KiB per CPU.
pub const CGROUP_STATS_ENTRIES: u32 = 4096;
const _: () = assert!(size_of::<CgroupStats>() == 152);
/// Key for events whose task's cgroup is not known.
pub const CGROUP_UNATTRIBUTED: u64 = 0;
/// Key for events of cgroups that did not fit in the table.
pub const CGROUP_REFUSED: u64 = u64::MAX;

/// Which cgroup id the programs charge (the `CGROUP_MODE` global, set before load; read-only
/// data, so with [`cgroup_mode::OFF`] the verifier prunes every attribution path).
pub mod cgroup_mode {
    /// No per-cgroup counting.
    pub const OFF: u32 = 0;
    /// `bpf_get_current_cgroup_id()`: the default (cgroup v2) hierarchy.
    pub const UNIFIED: u32 = 1;
    /// The task → cgroup table (`TASK_CGROUP`), fed by `cgroup:cgroup_attach_task` for one v1
    /// hierarchy, by forks and by the daemon's `/proc` scan at start-up.
    pub const V1: u32 = 2;
}

/// Indices into the `CGROUP_COUNTERS` per-CPU array: attribution's own bookkeeping.
pub mod cgroup_counter {
    /// Events charged to [`super::CGROUP_REFUSED`] because the per-cgroup table was full.
    pub const REFUSED_EVENTS: u32 = 0;
    /// Events charged to [`super::CGROUP_UNATTRIBUTED`] (cgroup of the task or socket unknown).
    pub const UNATTRIBUTED_EVENTS: u32 = 1;
    /// Tasks the task → cgroup table had no room for (their events go unattributed).
    pub const TASK_TABLE_FULL: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Entries of the task → cgroup table (`TASK_CGROUP`, by thread id): one per live thread.
pub const TASK_CGROUP_ENTRIES: u32 = 65536;
/// Entries of the socket → cgroup table (`SOCK_CGROUP`, an LRU by socket address).
pub const SOCK_CGROUP_ENTRIES: u32 = 16384;
/// Slots of the bio-origin table (`BIO_ORIGIN`): who submitted the bio at (device, sector),
/// read back at the request's completion to charge its latency (a power of two).
pub const BIO_ORIGIN_SLOTS: u32 = 8192;

/// Field offsets the attribution programs read, from tracefs at start-up ([`ABSENT`]: the
/// field, or its tracepoint, is missing here, and that part of attribution is off).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CgroupTracepointLayout {
    pub attach_dst_root: u32,
    pub attach_dst_id: u32,
    pub attach_pid: u32,
    pub fork_parent_pid: u32,
    pub fork_child_pid: u32,
    pub victim_pid: u32,
    pub signal_pid: u32,
    pub bio_dev: u32,
    pub bio_sector: u32,
    pub bio_nr_sector: u32,
    pub set_state_skaddr: u32,
    pub retransmit_skaddr: u32,
    pub receive_reset_skaddr: u32,
    pub send_reset_skaddr: u32,
    /// `task_struct.flags` (a u32), from the kernel's BTF, not a tracepoint: in unified mode
    /// the programs read it to leave kernel threads ([`PF_KTHREAD`]) out of the root cgroup
    /// ([`ABSENT`]: they are charged to it).
    pub task_flags: u32,
}

/// `PF_KTHREAD` of `include/linux/sched.h`: the task is a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

impl CgroupTracepointLayout {
    /// Linux 6.x offsets; only a compiled-in default, overwritten at start-up.
    pub const LINUX_6: Self = Self {
        attach_dst_root: 8,
        attach_dst_id: 16,
        attach_pid: 24,
        fork_parent_pid: 12,
        fork_child_pid: 20,
        victim_pid: 8,
        signal_pid: 36,
        bio_dev: 8,
        bio_sector: 16,
        bio_nr_sector: 24,
        set_state_skaddr: 8,
        retransmit_skaddr: 16,
        receive_reset_skaddr: 8,
        send_reset_skaddr: 16,
        task_flags: ABSENT,
    };
}

/// Map and program names, shared so a rename on one side breaks the build, not the daemon.
pub mod names {
    pub const BLOCK_RQ_ISSUE: &str = "block_rq_issue";
    pub const BLOCK_RQ_COMPLETE: &str = "block_rq_complete";
    pub const BLOCK_DEV_STATS: &str = "BLOCK_DEV_STATS";
    pub const INFLIGHT: &str = "INFLIGHT";
    pub const SLOW_IO_EVENTS: &str = "SLOW_IO_EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const BLOCK_LAYOUT: &str = "BLOCK_LAYOUT";
    pub const SLOW_IO_THRESHOLD_NS: &str = "SLOW_IO_THRESHOLD_NS";
    pub const EVENTS: &str = "EVENTS";
    pub const ERRNOS: &str = "ERRNOS";
    pub const DROP_REASONS: &str = "DROP_REASONS";
    pub const HISTOGRAMS: &str = "HISTOGRAMS";
    pub const HOOK_CONFIG: &str = "HOOK_CONFIG";
    pub const SYSTEM_LAYOUT: &str = "SYSTEM_LAYOUT";
    pub const OPEN_SYSCALLS: &str = "OPEN_SYSCALLS";
    pub const WAIT_SYSCALLS: &str = "WAIT_SYSCALLS";
    /// Per-cgroup counters, [`super::CgroupStats`] keyed by cgroup id (issue 20).
    pub const CGROUP_STATS: &str = "CGROUP_STATS";
    pub const CGROUP_COUNTERS: &str = "CGROUP_COUNTERS";
    pub const TASK_CGROUP: &str = "TASK_CGROUP";
    pub const CGROUP_MODE: &str = "CGROUP_MODE";
    /// The v1 hierarchy id (`/proc/cgroups`) whose moves `cgroup_attach_task` follows.
    pub const CGROUP_V1_HIERARCHY: &str = "CGROUP_V1_HIERARCHY";
    pub const CGROUP_LAYOUT: &str = "CGROUP_LAYOUT";
    pub const CGROUP_ATTACH_TASK: &str = "cgroup_attach_task";
    pub const BLOCK_BIO_QUEUE: &str = "block_bio_queue";
    /// Byte offset of `pid` in `struct task_struct` (from BTF) for the BTF tracepoints.
    pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
    /// Where [`crate::ExitCodeOffsets`] go, and the brief-exit limit ([`crate::BRIEF_EXIT_NS`]).
    pub const EXIT_CODE_OFFSETS: &str = "EXIT_CODE_OFFSETS";
    pub const BRIEF_EXIT_NS: &str = "BRIEF_EXIT_NS";
    pub const SAMPLED_SINCE: &str = "SAMPLED_SINCE";
    /// The process id (TGID) whose syscalls, opens and forks the programs count apart from
    /// the node's (the daemon's own); 0 counts every process alike.
    pub const IGNORED_TGID: &str = "IGNORED_TGID";
}

/// Slots of `SAMPLED_SINCE`: one per group of sampled hooks that go off and on together
/// (the daemon's `sampler::HookGroup`, in the same order).
pub mod sampled_group {
    pub const SYSCALLS: u32 = 0;
    pub const SCHEDULER: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers, with explicit padding
    // fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::BlockDevStats {}
    unsafe impl aya::Pod for super::CgroupStats {}
    unsafe impl aya::Pod for super::InflightKey {}
    unsafe impl aya::Pod for super::InflightSlot {}
    unsafe impl aya::Pod for super::SlowIoEvent {}
    unsafe impl aya::Pod for super::BlockTracepointLayout {}
    unsafe impl aya::Pod for super::Histogram {}
    unsafe impl aya::Pod for super::SystemTracepointLayout {}
    unsafe impl aya::Pod for super::OpenSyscalls {}
    unsafe impl aya::Pod for super::WaitSyscalls {}
    unsafe impl aya::Pod for super::ExitCodeOffsets {}
    unsafe impl aya::Pod for super::CgroupTracepointLayout {}
}

/// The XDP drop list: source-address rules in LPM tries, hit counters in per-CPU maps.
pub mod xdp {
    /// Rules per address family and per set. The per-rule hit table holds twice this (both
    /// sets of both families can be live for the instant of an atomic replace).
    pub const MAX_RULES: u32 = 131_072;
    /// Bytes of free text kept with a rule (`--comment`), NUL-padded, cut at a char boundary.
    pub const COMMENT_BYTES: usize = 64;

    /// A rule as stored in the tries (the LPM key holds the prefix). The program reads only
    /// `id`; the rest is for the CLI and the daemon's TTL sweep, kept in the map so the list is
    /// whole in bpffs and needs no side file.
    #[repr(C)]
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    pub struct Rule {
        /// Key of the rule's counters in the hits table; unique among live rules.
        pub id: u32,
        /// [`rule_flags`]. Was padding (always 0) before automatic rules existed, so rules
        /// pinned by an older version read as added by hand.
        pub flags: u32,
        /// Unix seconds when the rule was added.
        pub added_unix_s: u64,
        /// Unix seconds after which the daemon removes the rule; 0: never. For display: what
        /// is enforced is `expires_boot_ns`.
        pub expires_unix_s: u64,
        /// CLOCK_BOOTTIME nanoseconds (`bpf_ktime_get_boot_ns`) from which the program ignores
        /// the rule; 0: never. The program enforces it itself so a TTL holds while no daemon
        /// runs to remove the rule. Boot time, not wall time: a TTL is a duration, and boot
        /// time neither jumps with NTP or `date -s` nor stops while the machine is suspended;
        /// it restarts at each boot, but so does bpffs, so no deadline outlives its boot.
        pub expires_boot_ns: u64,
        pub comment: [u8; COMMENT_BYTES],
    }

    /// Bytes of a [`Rule`] as pinned by versions before `expires_boot_ns` (no boot-time
    /// deadline); such pins are migrated when the list is opened.
    pub const LEGACY_RULE_BYTES: usize = 88;
    const _: () = assert!(size_of::<Rule>() == LEGACY_RULE_BYTES + 8);

    /// Slots of the `BLOCKLIST_ACTIVE` array.
    pub mod active {
        /// Which pair of tries the program reads (0: A, 1: B).
        pub const SET: u32 = 0;
        /// Bumped (wrapping) by every edit of the list, under the edit lock: the daemon
        /// re-reads the rules only when it moved, so its per-window cost does not grow with
        /// the number of rules.
        pub const GENERATION: u32 = 1;
        pub const COUNT: u32 = 2;
    }

    /// Bits of [`Rule::flags`].
    pub mod rule_flags {
        /// Added by the daemon's automatic flood blocking, not by an operator.
        pub const AUTOMATIC: u32 = 1;
    }

    /// Packets and bytes a rule dropped, one copy per CPU.
    #[repr(C)]
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
    pub struct RuleHits {
        pub packets: u64,
        pub bytes: u64,
    }

    /// Indices into the `BLOCKLIST_TOTALS` per-CPU array.
    pub mod total {
        /// Every packet the program returned `XDP_PASS` for (malformed and non-IP included).
        pub const PASSED: u32 = 0;
        pub const DROPPED: u32 = 1;
        /// Truncated or inconsistent Ethernet/VLAN/IP headers: passed untouched.
        pub const MALFORMED: u32 = 2;
        /// Neither IPv4 nor IPv6 (ARP, LLDP, two VLAN tags, …): passed.
        pub const NON_IP: u32 = 3;
        /// The matching rule's TTL had passed (no daemon has removed it yet): passed.
        pub const EXPIRED: u32 = 4;
        pub const COUNT: u32 = 5;
        pub const NAMES: [&str; COUNT as usize] =
            ["passed", "dropped", "malformed", "non_ip", "expired"];
    }

    /// Source prefixes counted in the per-source table of passed traffic (an LRU map: a
    /// flood from more prefixes than this evicts the quietest ones, never the program's work).
    pub const SOURCE_PREFIXES: u32 = 8192;

    /// Key of the per-source table: the source address masked to the configured prefix
    /// length, zero beyond it (an IPv4 address fills the first 4 bytes).
    #[repr(C)]
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SourceKey {
        pub addr: [u8; 16],
        /// 4 or 6.
        pub family: u8,
        pub prefix_len: u8,
        pub _pad: [u8; 2],
    }

    /// Packets and bytes passed from one source prefix, one copy per CPU.
    #[repr(C)]
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
    pub struct SourceTraffic {
        pub packets: u64,
        pub bytes: u64,
    }

    /// The one entry of `SOURCE_CONFIG`, written by the daemon before it attaches the
    /// program. All zero (the default of a fresh array) counts nothing.
    #[repr(C)]
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
    pub struct SourceConfig {
        /// Non-zero: count passed traffic per source prefix.
        pub enabled: u32,
        /// 1..=32; the program clamps anything else into that range.
        pub v4_prefix_len: u32,
        /// 1..=128; clamped likewise.
        pub v6_prefix_len: u32,
        pub _pad: u32,
    }

    /// Map and program names; also the file names of the pins.
    pub mod names {
        pub const PROGRAM: &str = "xdp_blocklist";
        /// Two tries per family, A (0) and B (1); `ACTIVE` says which pair the program reads,
        /// so a whole list is replaced by filling the other pair and flipping one word.
        pub const V4: [&str; 2] = ["BLOCKLIST_V4_A", "BLOCKLIST_V4_B"];
        pub const V6: [&str; 2] = ["BLOCKLIST_V6_A", "BLOCKLIST_V6_B"];
        pub const ACTIVE: &str = "BLOCKLIST_ACTIVE";
        pub const HITS: &str = "BLOCKLIST_HITS";
        pub const TOTALS: &str = "BLOCKLIST_TOTALS";
        pub const ALL_MAPS: [&str; 7] = [V4[0], V4[1], V6[0], V6[1], ACTIVE, HITS, TOTALS];
        /// Not pinned: they belong to the daemon that loaded the program, and the CLI never
        /// reads them.
        pub const SOURCE_TRAFFIC: &str = "SOURCE_TRAFFIC";
        pub const SOURCE_CONFIG: &str = "SOURCE_CONFIG";
    }

    #[cfg(feature = "user")]
    mod pod {
        // SAFETY: #[repr(C)], Copy, integers and byte arrays only, explicit padding: every bit
        // pattern is a valid value.
        unsafe impl aya::Pod for super::Rule {}
        unsafe impl aya::Pod for super::RuleHits {}
        unsafe impl aya::Pod for super::SourceKey {}
        unsafe impl aya::Pod for super::SourceTraffic {}
        unsafe impl aya::Pod for super::SourceConfig {}
    }
}
