//! The kernel programs' counts that are not records: the indices of the per-CPU counter
//! arrays (`COUNTERS`, the programs' own bookkeeping; `EVENTS`, the node's events), the sizes
//! of the by-errno and by-drop-reason arrays, and which drop reasons are housekeeping. Both
//! sides read them from here (re-exported at the crate root), so an index or a reason cannot
//! differ between the program that counts and the daemon that reads.

/// Indices into the `COUNTERS` per-CPU array: the kernel side's own bookkeeping.
pub mod counter {
    /// Completions at or over the slow-I/O threshold (events we tried to send).
    pub const SLOW_IO_PRODUCED: u32 = 0;
    /// Of those, events the ring buffer had no room for.
    pub const SLOW_IO_LOST: u32 = 1;
    /// Issues not tracked because the in-flight table could not take them.
    pub const INFLIGHT_TABLE_FULL: u32 = 2;
    /// Completions with no recorded issue (issued before we attached or before the hooks
    /// last came back on, evicted, or whose issue the kernel did not run the program for).
    pub const COMPLETE_UNMATCHED: u32 = 3;
    /// Devices not counted because the per-device table was full.
    pub const DEVICE_TABLE_FULL: u32 = 4;
    /// `block_rq_issue` records the program could not read (the read of the record failed,
    /// or a field lies outside the bytes read): that request is not counted.
    pub const ISSUE_UNREADABLE: u32 = 5;
    /// `block_rq_complete` records the program could not read: that completion is not
    /// counted.
    pub const COMPLETE_UNREADABLE: u32 = 6;
    /// Completions with no sectors that are not flushes: the flush machinery completes a
    /// request that carried a flush a second time, after its post-flush, when its data
    /// completion has counted it already. Not an error; counted here so that every completion
    /// the program saw is accounted for.
    pub const COMPLETE_WITHOUT_SECTORS: u32 = 7;
    /// In-flight entries a new issue took over because they were older than the programs'
    /// stale limit (120 s, four times the kernel's own request timeout): requests whose
    /// completion the program never saw (the kernel did not run it, or ran it on a record it
    /// could not match). Their latency is never measured; counted so that no lost completion
    /// goes unseen.
    pub const INFLIGHT_STALE_EVICTED: u32 = 8;
    pub const COUNT: u32 = 9;

    /// Each counter's name where the daemon shows it (`nodestate_block_accounting_total`'s
    /// `event` label), by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "slow_io_produced",
        "slow_io_lost",
        "inflight_table_full",
        "complete_unmatched",
        "device_table_full",
        "issue_unreadable",
        "complete_unreadable",
        "complete_without_sectors",
        "inflight_stale_evicted",
    ];
}

/// Indices into the `EVENTS` per-CPU array: node-wide event counts of the system programs.
pub mod event {
    /// No longer counted by a program (context switches come from /proc/stat, exact while the
    /// scheduler hooks are sampled); kept so that the other indices stay where they are.
    pub const CONTEXT_SWITCHES: u32 = 0;
    /// Processes and threads created (`sched:sched_process_fork`).
    pub const FORKS: u32 = 1;
    /// Processes whose last thread exited (`sched:sched_process_exit`, group_dead).
    pub const EXITS: u32 = 2;
    /// A process that ran at least [`crate::BRIEF_EXIT_NS`] and exited with a non-zero
    /// status: a program that did work and failed (a job, a service crashing after start).
    pub const EXITS_NONZERO: u32 = 3;
    /// Fault signals generated (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS).
    pub const FATAL_SIGNALS: u32 = 4;
    pub const OOM_KILLS: u32 = 5;
    /// Direct and memcg reclaim episodes, and the time tasks spent stalled in them.
    pub const RECLAIMS: u32 = 6;
    pub const RECLAIM_NS: u32 = 7;
    pub const SYSCALLS: u32 = 8;
    pub const SYSCALL_ERRORS: u32 = 9;
    pub const OPENS: u32 = 10;
    pub const OPEN_ERRORS: u32 = 11;
    pub const FSYNCS: u32 = 12;
    pub const FSYNC_NS: u32 = 13;
    pub const RX_PACKETS: u32 = 14;
    pub const RX_BYTES: u32 = 15;
    pub const TX_PACKETS: u32 = 16;
    pub const TX_BYTES: u32 = 17;
    pub const TX_ERRORS: u32 = 18;
    pub const SKB_DROPS: u32 = 19;
    pub const TCP_RETRANSMITS: u32 = 20;
    /// Active opens that reached ESTABLISHED, and those that failed from SYN_SENT.
    pub const TCP_CONNECTS: u32 = 21;
    pub const TCP_CONNECT_FAILURES: u32 = 22;
    /// Passive opens (SYN_RECV → ESTABLISHED).
    pub const TCP_ACCEPTS: u32 = 23;
    pub const TCP_RESETS_RECEIVED: u32 = 24;
    pub const TCP_RESETS_SENT: u32 = 25;
    /// Run-queue waits whose start was overwritten before the task ran (another pid sharing
    /// its slot of the run-queue table, see [`crate::RUNQUEUE_SLOTS`]): samples lost, counted
    /// so that nothing is lost silently.
    pub const LATENCY_TABLE_FULL: u32 = 26;
    /// Syscalls of the daemon's own process (`IGNORED_TGID`), counted here and not in
    /// [`SYSCALLS`] (nor their errors, errnos and opens): the daemon's upkeep is not the
    /// node's work, and grows with what the daemon is asked to do (a big drop list, busy
    /// scrapers).
    pub const OWN_SYSCALLS: u32 = 27;
    /// Threads and processes the daemon's own process created, counted here and not in
    /// [`FORKS`].
    pub const OWN_FORKS: u32 = 28;
    /// ETIMEDOUT returned by a timed wait ([`crate::WaitSyscalls`]: futex and the like), where
    /// a timeout is the ordinary outcome, not a failure: counted here and not in
    /// [`SYSCALL_ERRORS`] or the errno counts, so `syscall_etimedout_per_s` means a connection
    /// or an operation that timed out.
    pub const WAIT_TIMEOUTS: u32 = 29;
    /// `skb:kfree_skb` with reason `NOT_SPECIFIED` whose `rx_sk` is a TCP socket in
    /// TIME_WAIT: `tcp_v4_rcv`/`tcp_v6_rcv` hand a segment for a TIME_WAIT socket to
    /// `tcp_timewait_state_process` (which ACKs it or ignores an old one) and then free it
    /// with the generic reason. Counted here and not in the `NOT_SPECIFIED` slot of the
    /// by-reason counts; user space shows it as [`crate::TCP_TIME_WAIT_DROP_REASON`].
    pub const TCP_TIME_WAIT_SEGMENTS: u32 = 30;
    /// `NOT_SPECIFIED` drops whose socket's state could not be read (`bpf_probe_read_kernel`
    /// failed): counted as `NOT_SPECIFIED` as before, and here, so no read fails silently.
    pub const SOCK_STATE_UNREADABLE: u32 = 31;
    /// Non-zero exits of processes that lived under [`crate::BRIEF_EXIT_NS`]: a build's
    /// compiler probes, `grep` finding nothing, `test` answering no, a service failing at
    /// once. Counted here and not in [`EXITS_NONZERO`]: a burst of them is how a build or a
    /// configure script works, and paged an idle node's young baseline (z = +7.3).
    pub const EXITS_NONZERO_BRIEF: u32 = 32;
    /// Process exits the exit programs could not read in full (`bpf_probe_read_kernel`
    /// failed, or the tracepoint's record): an unreadable exit status is not counted as
    /// non-zero; an unreadable process start counts the non-zero exit as a program's
    /// ([`EXITS_NONZERO`]), as before brief exits were told apart. Counted so that no read
    /// fails silently.
    pub const EXIT_UNREADABLE: u32 = 33;
    pub const COUNT: u32 = 34;
}

/// Errno values are counted in a per-CPU array of this many slots (errno 1..=255).
pub const ERRNO_SLOTS: u32 = 256;
/// `enum skb_drop_reason` values are counted in a per-CPU array of this many slots.
pub const DROP_REASON_SLOTS: u32 = 256;

/// The name under which the by-reason drop counts show segments a TCP socket in TIME_WAIT
/// handled ([`event::TCP_TIME_WAIT_SEGMENTS`]). Not a name of the kernel's
/// `enum skb_drop_reason`: the kernel frees them as `NOT_SPECIFIED`; the daemon tells them
/// apart by the socket's state (Linux 6.12+, whose tracepoint has `rx_sk`).
pub const TCP_TIME_WAIT_DROP_REASON: &str = "TCP_TIME_WAIT";

/// `skb:kfree_skb` reasons (their names in the tracepoint's format, which change number from
/// kernel to kernel, never name) that are housekeeping, not traffic lost on its way: the
/// kernel freeing what a socket still held when it went away. They stay in the by-reason
/// counts, and are left out of the node's drop rate, where a burst of short-lived
/// connections made them look like loss. A reason a fault shows is never listed here
/// (`TCP_CLOSE`, packets arriving for a closed TCP socket, is a fault's signal: port
/// exhaustion).
pub const HOUSEKEEPING_DROP_REASONS: &[&str] = &[
    // "bulk free" (`skb_queue_purge`): the queues of a socket being destroyed (unread
    // receive data, unsent writes, the error queue) and other queues emptied in one go.
    // A steady background on an idle node, many more when many connections close.
    "QUEUE_PURGE",
    // Unread data in the receive queue of a Unix socket that was close()d (since Linux 6.14;
    // `NOT_SPECIFIED` before): an application closing early, not the network.
    "SOCKET_CLOSE",
    // Segments for a socket in TIME_WAIT (`NOT_SPECIFIED` in the kernel, told apart by the
    // daemon): the protocol ACKing a retransmitted FIN or ignoring a late segment after the
    // close, about one per thousand connections under churn where the server closes first.
    TCP_TIME_WAIT_DROP_REASON,
];

/// The housekeeping drops ([`HOUSEKEEPING_DROP_REASONS`]) among one window's drops by reason,
/// with `count` looking one reason's count up by name (0 for a reason not seen). The daemon's
/// drop rate and the re-derivation of old recordings both take it from here, so the two
/// cannot count different reasons. A lookup that fails (a recording whose count is not a
/// whole number) stops the sum with its error. The sum saturates rather than wraps.
pub fn try_housekeeping_drops<E>(mut count: impl FnMut(&str) -> Result<u64, E>) -> Result<u64, E> {
    let mut sum: u64 = 0;
    for reason in HOUSEKEEPING_DROP_REASONS {
        sum = sum.saturating_add(count(reason)?);
    }
    Ok(sum)
}

/// [`try_housekeeping_drops`] for a lookup that cannot fail (the daemon's own counts).
pub fn housekeeping_drops(mut count: impl FnMut(&str) -> u64) -> u64 {
    match try_housekeeping_drops(|reason| Ok::<u64, core::convert::Infallible>(count(reason))) {
        Ok(sum) => sum,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window's drops by reason, looked up as the daemon does (0 for a reason not seen).
    fn lookup<'a>(counts: &'a [(&'a str, u64)]) -> impl FnMut(&str) -> u64 + 'a {
        |reason| {
            counts
                .iter()
                .find(|(name, _)| *name == reason)
                .map_or(0, |(_, count)| *count)
        }
    }

    #[test]
    fn only_the_housekeeping_reasons_are_summed() {
        let counts = [
            ("QUEUE_PURGE", 7),
            ("TCP_CLOSE", 100),
            ("SOCKET_CLOSE", 3),
            ("NOT_SPECIFIED", 11),
            ("TCP_TIME_WAIT", 5),
        ];
        assert_eq!(housekeeping_drops(lookup(&counts)), 15);
        assert_eq!(housekeeping_drops(lookup(&[("TCP_TIME_WAIT", 6)])), 6);
        assert_eq!(housekeeping_drops(lookup(&[("SOCKET_CLOSE", 4)])), 4);
        assert_eq!(housekeeping_drops(lookup(&[("TCP_CLOSE", 9)])), 0);
        assert_eq!(housekeeping_drops(lookup(&[])), 0);
    }

    #[test]
    fn every_listed_reason_is_asked_once_in_order() {
        let mut asked = [""; 8];
        let mut n = 0;
        let sum = housekeeping_drops(|reason| {
            // The table's own strings come back: no copy is needed to remember them.
            let listed = HOUSEKEEPING_DROP_REASONS
                .iter()
                .copied()
                .find(|listed| *listed == reason)
                .expect("asked for a reason that is not listed");
            asked[n] = listed;
            n += 1;
            1
        });
        assert_eq!(&asked[..n], HOUSEKEEPING_DROP_REASONS);
        assert_eq!(sum, HOUSEKEEPING_DROP_REASONS.len() as u64);
    }

    #[test]
    fn a_failed_lookup_stops_the_sum_with_its_error() {
        let result = try_housekeeping_drops(|reason| match reason {
            "SOCKET_CLOSE" => Err("not a whole number"),
            _ => Ok(5),
        });
        assert_eq!(result, Err("not a whole number"));
        assert_eq!(try_housekeeping_drops(|_| Ok::<u64, ()>(5)), Ok(15));
    }

    #[test]
    fn the_sum_saturates() {
        let counts = [("QUEUE_PURGE", u64::MAX), ("SOCKET_CLOSE", 2)];
        assert_eq!(housekeeping_drops(lookup(&counts)), u64::MAX);
    }
}
