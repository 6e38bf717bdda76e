//! What the programs need to know about this kernel and architecture before they load: the
//! tracepoint record layouts (read from tracefs) and the open-family syscall numbers.

use collector_common::{
    ABSENT, BlockTracepointLayout, OpenSyscalls, RECORD_HEAD_BYTES, SystemTracepointLayout,
};

use tracing::warn;

use super::{
    btf::Btf,
    tracefs::{EventFormat, Tracefs},
};

/// The tracepoint record layout of the block events on the running kernel.
pub fn block_layout(tracefs: &Tracefs) -> anyhow::Result<BlockTracepointLayout> {
    let issue = tracefs.event_format("block", "block_rq_issue")?;
    let complete = tracefs.event_format("block", "block_rq_complete")?;
    let layout = BlockTracepointLayout {
        issue_dev: issue.offset("dev", 4)?,
        issue_sector: issue.offset("sector", 8)?,
        issue_bytes: issue.offset("bytes", 4)?,
        issue_rwbs: issue.offset("rwbs", 2)?,
        complete_dev: complete.offset("dev", 4)?,
        complete_sector: complete.offset("sector", 8)?,
        complete_nr_sector: complete.offset("nr_sector", 4)?,
        complete_error: complete.offset("error", 4)?,
        complete_rwbs: complete.offset("rwbs", 2)?,
        _pad: 0,
    };
    // The programs copy the first RECORD_HEAD_BYTES of a record and read fields from the copy.
    let ends = [
        (layout.issue_dev, 4),
        (layout.issue_sector, 8),
        (layout.issue_bytes, 4),
        (layout.issue_rwbs, 2),
        (layout.complete_dev, 4),
        (layout.complete_sector, 8),
        (layout.complete_nr_sector, 4),
        (layout.complete_error, 4),
        (layout.complete_rwbs, 2),
    ];
    if let Some((offset, size)) = ends
        .iter()
        .find(|(offset, size)| *offset as usize + size > RECORD_HEAD_BYTES)
    {
        anyhow::bail!(
            "a block tracepoint field at byte {offset} (size {size}) lies beyond the \
             {RECORD_HEAD_BYTES} bytes the programs read"
        );
    }
    Ok(layout)
}

/// Offsets of every field the system programs read; fields this kernel lacks are `ABSENT`,
/// listed in the second value as "category:event field".
pub fn system_layout(tracefs: &Tracefs) -> (SystemTracepointLayout, Vec<String>) {
    let mut absent = Vec::new();
    let mut offset = |category: &str, name: &str, field: &str, size: u32| -> u32 {
        match tracefs
            .event_format(category, name)
            .and_then(|format| format.offset(field, size))
        {
            Ok(offset) => offset,
            Err(_) => {
                // A missing tracepoint is reported by the attach table; only note fields of
                // tracepoints that exist.
                if tracefs.has_event(category, name) {
                    absent.push(format!("{category}:{name} {field}"));
                }
                ABSENT
            }
        }
    };
    let layout = SystemTracepointLayout {
        switch_prev_pid: offset("sched", "sched_switch", "prev_pid", 4),
        switch_prev_state: offset("sched", "sched_switch", "prev_state", 8),
        switch_next_pid: offset("sched", "sched_switch", "next_pid", 4),
        wakeup_pid: offset("sched", "sched_wakeup", "pid", 4),
        process_exit_group_dead: offset("sched", "sched_process_exit", "group_dead", 1),
        exit_group_error_code: offset("syscalls", "sys_enter_exit_group", "error_code", 8),
        signal_sig: offset("signal", "signal_generate", "sig", 4),
        sys_exit_id: offset("raw_syscalls", "sys_exit", "id", 8),
        sys_exit_ret: offset("raw_syscalls", "sys_exit", "ret", 8),
        kfree_skb_reason: offset("skb", "kfree_skb", "reason", 4),
        kfree_skb_rx_sk: offset("skb", "kfree_skb", "rx_sk", 8),
        kfree_skb_not_specified: ABSENT,
        // From BTF, set by the loader.
        sock_common_state: ABSENT,
        set_state_oldstate: offset("sock", "inet_sock_set_state", "oldstate", 4),
        set_state_newstate: offset("sock", "inet_sock_set_state", "newstate", 4),
        set_state_protocol: offset("sock", "inet_sock_set_state", "protocol", 2),
        rx_len: offset("net", "netif_receive_skb", "len", 4),
        tx_len: offset("net", "net_dev_xmit", "len", 4),
        tx_rc: offset("net", "net_dev_xmit", "rc", 4),
    };
    // The reason's value, which changes between kernels (the name does not).
    let mut layout = layout;
    if let Ok(format) = tracefs.event_format("skb", "kfree_skb") {
        layout.kfree_skb_not_specified = not_specified_value(&format);
    }
    // Older kernels have no `group_dead`: the program then counts every thread's exit.
    // Kernels before 6.12 have no `rx_sk`: segments a TIME_WAIT socket handled then stay
    // `NOT_SPECIFIED` drops, as they always were.
    absent.retain(|field| !field.ends_with("group_dead") && !field.ends_with("rx_sk"));
    (layout, absent)
}

/// The value of `NOT_SPECIFIED` among the kfree_skb format's reason names, `ABSENT` if none.
fn not_specified_value(format: &EventFormat) -> u32 {
    format
        .symbolic_names
        .iter()
        .find(|(_, name)| *name == "NOT_SPECIFIED")
        .and_then(|(value, _)| u32::try_from(*value).ok())
        .unwrap_or(ABSENT)
}

/// Where `struct sock_common.skc_state` (a u8) is, from the kernel's BTF: the kfree_skb
/// program reads it through the tracepoint's `rx_sk` to tell segments a TIME_WAIT socket
/// handled from drops. `ABSENT` when the BTF lacks it (said here): they then count as
/// `NOT_SPECIFIED` drops.
pub(super) fn sock_common_state_offset(btf: Result<&Btf, &anyhow::Error>) -> u32 {
    offset_or_absent(
        btf,
        ("sock_common", "skc_state", 1),
        "segments handled in TIME_WAIT count as NOT_SPECIFIED drops",
    )
}

/// Where `task_struct.flags` is (a u32), from the kernel's BTF: in unified mode the
/// attribution programs read the current task's flags to tell kernel threads apart. They sit in
/// the root cgroup but work for everyone (the loop driver's workers, the flushers, kswapd), so
/// their events count as unattributed rather than as the root's. `ABSENT` when the BTF lacks it
/// (said here): kernel threads' events are then charged to the root cgroup.
pub(super) fn kernel_thread_flags_offset(btf: Result<&Btf, &anyhow::Error>) -> u32 {
    offset_or_absent(
        btf,
        ("task_struct", "flags", 4),
        "kernel threads' events are charged to the root cgroup",
    )
}

/// Where `task_struct.group_leader` (a pointer) and `task_struct.start_time` (u64) are, from the
/// kernel's BTF: the exit programs read the exiting process's start to tell a brief command's
/// non-zero exit from a program's. `ABSENT` when the BTF lacks one (said here): every
/// non-zero exit then counts as a program's.
pub(super) fn process_start_offsets(btf: Result<&Btf, &anyhow::Error>) -> (u32, u32) {
    let without = "every non-zero exit counts as a program's, brief commands' included";
    (
        offset_or_absent(btf, ("task_struct", "group_leader", 8), without),
        offset_or_absent(btf, ("task_struct", "start_time", 8), without),
    )
}

/// Where `task_struct.signal` (a pointer) and `signal_struct.group_exit_code` (an int) are,
/// from the kernel's BTF: `sched_process_exit` reads the exiting process's exit code through
/// them. Both or neither: without either (said here) exit codes come from the per-syscall
/// `exit_group` tracepoint instead.
pub(super) fn exit_code_offsets(btf: Result<&Btf, &anyhow::Error>) -> Option<(u32, u32)> {
    let without = "exit codes need the per-syscall exit_group tracepoint";
    let signal = offset_or_absent(btf, ("task_struct", "signal", 8), without);
    let code = offset_or_absent(btf, ("signal_struct", "group_exit_code", 4), without);
    (signal != ABSENT && code != ABSENT).then_some((signal, code))
}

/// Where `task_struct.pid` (an int) is, from the kernel's BTF: the BTF scheduler programs read
/// it through the task pointers they get. `None` when the BTF lacks it (said here): the
/// scheduler programs then use the classic tracepoints.
pub(super) fn task_pid_offset(btf: Result<&Btf, &anyhow::Error>) -> Option<u32> {
    let offset = offset_or_absent(
        btf,
        ("task_struct", "pid", 4),
        "the scheduler programs use the classic tracepoints",
    );
    (offset != ABSENT).then_some(offset)
}

/// The byte offset of `structure.member` from the kernel's BTF when it has the width the
/// programs read (`bytes`); else [`ABSENT`], with a warning that ends in what the programs
/// then do without it (`without`).
fn offset_or_absent(
    btf: Result<&Btf, &anyhow::Error>,
    (structure, member, bytes): (&str, &str, u32),
    without: &str,
) -> u32 {
    match btf
        .map_err(|err| anyhow::anyhow!("{err:#}"))
        .and_then(|btf| member_slot(btf, structure, member, bytes))
    {
        Ok(offset) => offset,
        Err(err) => {
            warn!("{structure}.{member} not usable from the kernel's BTF ({err:#}): {without}");
            ABSENT
        }
    }
}

/// Where `struct pt_regs` keeps the syscall number the raw and BTF `sys_exit` programs read,
/// for the architecture this daemon (and so its embedded eBPF object) is built for: x86_64's
/// `orig_ax` is a stable uapi layout (byte 120, no BTF needed); arm64's `syscallno` (an `s32`,
/// byte 280 on Debian's 6.1 and 6.12 kernels) is looked up in the kernel's BTF. `ABSENT` when
/// unknown: the programs then count no opens from the syscall exit and read every ETIMEDOUT as
/// an error, so the daemon says so.
pub(super) fn pt_regs_syscall_nr_offset(btf: Result<&Btf, &anyhow::Error>) -> u32 {
    if cfg!(target_arch = "x86_64") {
        return 15 * 8;
    }
    let Some(member) = PT_REGS_SYSCALL_NR else {
        warn!(
            "no known syscall number slot in struct pt_regs on {}: opens are not counted from \
             the syscall exit and timed waits read as errors",
            std::env::consts::ARCH
        );
        return ABSENT;
    };
    offset_or_absent(
        btf,
        ("pt_regs", member, SYSCALL_NR_BYTES),
        "opens are not counted from the syscall exit and timed waits read as errors",
    )
}

/// The `struct pt_regs` member with the syscall number and its width, as the eBPF object
/// built for this architecture reads it (`collector-ebpf`'s `SyscallNrSlot`).
#[cfg(target_arch = "aarch64")]
const PT_REGS_SYSCALL_NR: Option<&str> = Some("syscallno");
#[cfg(not(target_arch = "aarch64"))]
const PT_REGS_SYSCALL_NR: Option<&str> = None;
#[cfg(target_arch = "aarch64")]
const SYSCALL_NR_BYTES: u32 = 4;
#[cfg(not(target_arch = "aarch64"))]
const SYSCALL_NR_BYTES: u32 = 8;

/// The byte offset of `structure.member`, if the kernel's BTF gives it the width the programs
/// read: a different width would read a neighbouring field's bytes (as the syscall number, the
/// socket's state, the task's flags).
pub(super) fn member_slot(
    btf: &Btf,
    structure: &str,
    member: &str,
    bytes: u32,
) -> anyhow::Result<u32> {
    let found = btf.member(structure, member)?;
    if found.size != bytes {
        anyhow::bail!(
            "{structure}.{member} is {} bytes in the kernel's BTF, the programs read {bytes}",
            found.size
        );
    }
    Ok(found.offset)
}

/// This architecture's open-family syscall numbers.
pub(super) fn open_syscalls() -> OpenSyscalls {
    #[cfg(target_arch = "x86_64")]
    let numbers = [
        libc::SYS_open,
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_creat,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let numbers = [libc::SYS_openat, libc::SYS_openat2, -1, -1];
    OpenSyscalls { numbers }
}

/// This architecture's timed waits (see [`collector_common::WaitSyscalls`]): syscalls that
/// return ETIMEDOUT, EAGAIN or 0 when the time they were given runs out, as they are asked
/// to. Only futex, futex_waitv and the message queues report it as ETIMEDOUT; the others are
/// listed so that no future kernel's ETIMEDOUT from a wait reads as a failure.
pub(super) fn wait_syscalls() -> collector_common::WaitSyscalls {
    let known = [
        libc::SYS_futex,
        libc::SYS_futex_waitv,
        libc::SYS_mq_timedsend,
        libc::SYS_mq_timedreceive,
        libc::SYS_semtimedop,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_io_getevents,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_clock_nanosleep,
    ];
    let mut numbers = [-1i64; collector_common::WAIT_SYSCALL_SLOTS];
    for (slot, number) in numbers.iter_mut().zip(known) {
        *slot = number;
    }
    collector_common::WaitSyscalls { numbers }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookup on this machine's kernel: its own architecture's slot must be found with
    /// the width the programs read, a wrong width or a missing member is an error.
    #[test]
    fn syscall_number_slot_comes_from_btf_with_its_width() {
        let Some(btf) = crate::kernel::btf::kernel_btf_or_skip() else {
            return;
        };
        let (member, bytes, offset) = if cfg!(target_arch = "x86_64") {
            ("orig_ax", 8, 120)
        } else {
            ("syscallno", 4, 280)
        };
        assert_eq!(member_slot(&btf, "pt_regs", member, bytes).unwrap(), offset);
        let err = member_slot(&btf, "pt_regs", member, bytes / 2).unwrap_err();
        assert!(
            err.to_string().contains("bytes in the kernel's BTF"),
            "{err}"
        );
        assert!(member_slot(&btf, "pt_regs", "no_such_member", bytes).is_err());
        // What the loader hands the programs: the x86 constant agrees with the BTF lookup.
        if cfg!(target_arch = "x86_64") {
            assert_eq!(pt_regs_syscall_nr_offset(Ok(&btf)), offset);
        }
    }

    /// `sock_common.skc_state` on this machine's kernel: one byte, after the address pair
    /// (8), hash (4), port pair (4) and family (2) on 64-bit, where it has been for over a
    /// decade; without BTF the programs are told it is absent.
    #[test]
    fn socket_state_comes_from_btf() {
        let Some(btf) = crate::kernel::btf::kernel_btf_or_skip() else {
            return;
        };
        let offset = sock_common_state_offset(Ok(&btf));
        let family = btf
            .member("sock_common", "skc_family")
            .expect("sock_common.skc_family in BTF");
        assert_eq!(offset, family.offset + family.size, "{family:?}");
        if cfg!(target_pointer_width = "64") {
            assert_eq!(offset, 18);
        }
        assert_eq!(
            sock_common_state_offset(Err(&anyhow::anyhow!("no BTF here"))),
            ABSENT
        );
    }

    #[test]
    fn not_specified_is_found_by_name() {
        let format = "print fmt: \"reason: %s\", __print_symbolic(REC->reason, \
                      { 2, \"NOT_SPECIFIED\" }, { 3, \"NO_SOCKET\" })";
        assert_eq!(
            not_specified_value(&EventFormat::parse("skb:kfree_skb", format)),
            2
        );
        assert_eq!(
            not_specified_value(&EventFormat::parse("skb:kfree_skb", "{ 1, \"NO_SOCKET\" }")),
            ABSENT
        );
    }

    /// `task_struct.flags` on this machine's kernel: a 4-byte member the programs can read,
    /// inside the struct; without BTF the programs are told it is absent.
    #[test]
    fn kernel_thread_flags_come_from_btf() {
        let Some(btf) = crate::kernel::btf::kernel_btf_or_skip() else {
            return;
        };
        let offset = kernel_thread_flags_offset(Ok(&btf));
        assert_ne!(offset, ABSENT);
        assert_eq!(offset % 4, 0, "flags at {offset} is not u32-aligned");
        let pid = btf
            .member("task_struct", "pid")
            .expect("task_struct.pid in BTF")
            .offset;
        // `flags` comes early in task_struct, well before `pid`.
        assert!(offset < pid, "flags at {offset}, pid at {pid}");
        assert_eq!(
            kernel_thread_flags_offset(Err(&anyhow::anyhow!("no BTF here"))),
            ABSENT
        );
    }

    #[test]
    fn exit_code_and_pid_offsets_come_from_btf_with_their_widths() {
        let Some(btf) = crate::kernel::btf::kernel_btf_or_skip() else {
            return;
        };
        let member = |structure: &str, name: &str| {
            let found = btf.member(structure, name).expect("member in BTF");
            (found.offset, found.size)
        };
        let (signal, code) = exit_code_offsets(Ok(&btf)).expect("exit-code offsets");
        assert_eq!((signal, 8), member("task_struct", "signal"));
        assert_eq!((code, 4), member("signal_struct", "group_exit_code"));
        let pid = task_pid_offset(Ok(&btf)).expect("task_struct.pid");
        assert_eq!((pid, 4), member("task_struct", "pid"));
        let none = anyhow::anyhow!("no BTF here");
        assert_eq!(exit_code_offsets(Err(&none)), None);
        assert_eq!(task_pid_offset(Err(&none)), None);
    }
}
