//! What the programs need to know about this kernel and architecture before they load: the
//! tracepoint record layouts (read from tracefs) and the open-family syscall numbers.

use collector_common::{
    ABSENT, BlockTracepointLayout, OpenSyscalls, RECORD_HEAD_BYTES, SystemTracepointLayout,
};

use super::tracefs::Tracefs;

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
        set_state_oldstate: offset("sock", "inet_sock_set_state", "oldstate", 4),
        set_state_newstate: offset("sock", "inet_sock_set_state", "newstate", 4),
        set_state_protocol: offset("sock", "inet_sock_set_state", "protocol", 2),
        rx_len: offset("net", "netif_receive_skb", "len", 4),
        tx_len: offset("net", "net_dev_xmit", "len", 4),
        tx_rc: offset("net", "net_dev_xmit", "rc", 4),
    };
    // Older kernels have no `group_dead`: the program then counts every thread's exit.
    absent.retain(|field| !field.ends_with("group_dead"));
    (layout, absent)
}

/// Where `struct pt_regs` keeps the syscall number (x86_64 `orig_ax`, a stable uapi layout);
/// `ABSENT` elsewhere, so the raw syscall exit program never miscounts opens.
#[cfg(target_arch = "x86_64")]
pub(super) const PT_REGS_SYSCALL_NR_OFFSET: u32 = 15 * 8;
#[cfg(not(target_arch = "x86_64"))]
pub(super) const PT_REGS_SYSCALL_NR_OFFSET: u32 = ABSENT;

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
