//! Node-wide signals, from the system programs' counters and a few files the kernel keeps:
//! cumulative snapshots in, one window of flat features out.

use std::{collections::BTreeMap, fs, path::Path};

use collector_common::{Histogram, TCP_TIME_WAIT_DROP_REASON, event, hist, housekeeping_drops};
use serde::{Deserialize, Serialize};

use crate::{
    kernel::KernelCollector,
    window::procfile::{ProcFile, ReadErrors, source},
    window::{counter_delta, histogram_quantile_us, rate, rate_across},
};

/// Everything cumulative the system features are made from, at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemSnapshot {
    pub events: Vec<u64>,
    pub errnos: Vec<u64>,
    pub drop_reasons: Vec<u64>,
    pub histograms: Vec<Histogram>,
    /// `pgmajfault` from /proc/vmstat; `None` when the read failed.
    pub major_faults: Option<u64>,
    /// `ctxt` from /proc/stat: context switches since boot, exact whether or not the
    /// scheduler hooks are sampled; `None` when the read failed.
    pub context_switches: Option<u64>,
    /// Conntrack table fill.
    pub conntrack: Conntrack,
}

/// The conntrack table, as /proc/sys/net/netfilter shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Conntrack {
    /// nf_conntrack is not loaded: no table to fill.
    #[default]
    NotLoaded,
    Table {
        entries: u64,
        max: u64,
    },
    /// The files are there but could not be read: a missing value.
    Unreadable,
}

/// The /proc files a snapshot reads, kept open between windows (see [`ProcFile`]).
#[derive(Debug)]
pub struct SystemFiles {
    stat: ProcFile,
    vmstat: ProcFile,
    conntrack_count: ProcFile,
    conntrack_max: ProcFile,
}

impl Default for SystemFiles {
    fn default() -> Self {
        Self::new(Path::new("/proc"))
    }
}

impl SystemFiles {
    /// The files under `proc` (normally /proc).
    pub fn new(proc: &Path) -> Self {
        let netfilter = proc.join("sys/net/netfilter");
        Self {
            stat: ProcFile::new(source::PROC_STAT, proc.join("stat")),
            vmstat: ProcFile::new(source::PROC_VMSTAT, proc.join("vmstat")),
            conntrack_count: ProcFile::new(source::CONNTRACK, netfilter.join("nf_conntrack_count")),
            conntrack_max: ProcFile::new(source::CONNTRACK, netfilter.join("nf_conntrack_max")),
        }
    }

    /// `ctxt` of /proc/stat, `None` when it cannot be read (noted in `errors`).
    pub fn context_switches(&mut self, errors: &mut ReadErrors) -> Option<u64> {
        let value = self
            .stat
            .read_noted(errors)
            .map(crate::kernel::exact::parse_context_switches)?;
        if value.is_none() {
            errors.failed(source::PROC_STAT, self.stat.path(), &"no ctxt line");
        }
        value
    }

    /// `pgmajfault` of /proc/vmstat, `None` when it cannot be read (noted in `errors`).
    pub fn major_faults(&mut self, errors: &mut ReadErrors) -> Option<u64> {
        let value = self
            .vmstat
            .read_noted(errors)
            .map(|text| parse_vmstat_field(text, "pgmajfault"))?;
        if value.is_none() {
            errors.failed(
                source::PROC_VMSTAT,
                self.vmstat.path(),
                &"no pgmajfault line",
            );
        }
        value
    }

    /// The conntrack table; a module that is not loaded is not an error.
    pub fn conntrack(&mut self, errors: &mut ReadErrors) -> Conntrack {
        let mut read = |file: &mut ProcFile| -> Result<Option<u64>, ()> {
            match file.read() {
                Ok(text) => match text.trim().parse() {
                    Ok(value) => Ok(Some(value)),
                    Err(err) => {
                        errors.failed(source::CONNTRACK, file.path(), &err);
                        Err(())
                    }
                },
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(err) => {
                    errors.failed(source::CONNTRACK, file.path(), &err);
                    Err(())
                }
            }
        };
        match (
            read(&mut self.conntrack_count),
            read(&mut self.conntrack_max),
        ) {
            (Ok(Some(entries)), Ok(Some(max))) => {
                errors.ok(source::CONNTRACK);
                Conntrack::Table { entries, max }
            }
            (Ok(None), Ok(None)) => Conntrack::NotLoaded,
            _ => Conntrack::Unreadable,
        }
    }
}

impl SystemSnapshot {
    /// A snapshot with the /proc files opened for it (tests, tools); the daemon keeps them
    /// open with [`SystemSnapshot::read_from`].
    pub fn read(kernel: &KernelCollector) -> anyhow::Result<Self> {
        Self::read_from(
            kernel,
            &mut SystemFiles::default(),
            &mut ReadErrors::default(),
        )
    }

    pub fn read_from(
        kernel: &KernelCollector,
        files: &mut SystemFiles,
        errors: &mut ReadErrors,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            events: kernel.events()?,
            errnos: kernel.errnos()?,
            drop_reasons: kernel.drop_reasons()?,
            histograms: kernel.histograms()?,
            major_faults: files.major_faults(errors),
            context_switches: files.context_switches(errors),
            conntrack: files.conntrack(errors),
        })
    }
}

/// A `name value` field of /proc/vmstat.
pub fn read_vmstat_field(path: &Path, name: &str) -> Option<u64> {
    parse_vmstat_field(&fs::read_to_string(path).ok()?, name)
}

fn parse_vmstat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// Entries and limit of the conntrack table; `None` when nf_conntrack is not loaded.
pub fn read_conntrack(dir: &Path) -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// Errno names for the counts a window reports by name (others appear as "E<number>").
const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::EBADF, "EBADF"),
    (libc::ECHILD, "ECHILD"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENOTTY, "ENOTTY"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EPIPE, "EPIPE"),
    (libc::ERANGE, "ERANGE"),
    (libc::EDEADLK, "EDEADLK"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ENODATA, "ENODATA"),
    (libc::ETIME, "ETIME"),
    (libc::EOVERFLOW, "EOVERFLOW"),
    (libc::ENOTSOCK, "ENOTSOCK"),
    (libc::EMSGSIZE, "EMSGSIZE"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::EALREADY, "EALREADY"),
    (libc::EINPROGRESS, "EINPROGRESS"),
    (libc::EDQUOT, "EDQUOT"),
    (libc::ECANCELED, "ECANCELED"),
];

pub fn errno_name(errno: usize) -> String {
    ERRNO_NAMES
        .iter()
        .find(|(number, _)| *number as usize == errno)
        .map_or_else(|| format!("E{errno}"), |(_, name)| (*name).to_string())
}

/// Flat per-window features of the system signals (the window record flattens them in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemFeatures {
    /// `None` (JSON `null`) when /proc/stat could not be read at either end of the window:
    /// a missing value, listed in the record's `missing`.
    pub sched_context_switches_per_s: Option<f64>,
    pub sched_runqueue_latency_p50_us: f64,
    pub sched_runqueue_latency_p99_us: f64,
    pub proc_forks_per_s: f64,
    pub proc_exits_per_s: f64,
    pub proc_exits_nonzero_per_s: f64,
    /// Non-zero exits of processes that lived under `--brief-exit`: how builds and checks
    /// work, so a volume that explains and is not judged (`event::EXITS_NONZERO_BRIEF`).
    pub proc_brief_exits_nonzero_per_s: f64,
    pub proc_fatal_signals_per_s: f64,
    /// OOM kills in the window (a count: one is already news).
    pub mem_oom_kills: u64,
    pub mem_reclaims_per_s: f64,
    pub mem_reclaim_stall_ms_per_s: f64,
    /// `None` when /proc/vmstat could not be read at either end of the window.
    pub mem_major_faults_per_s: Option<f64>,
    /// Share of the window the syscall exit hook was on (1: all of it): the syscall sampler
    /// takes it off for the rest of a window when syscalls come faster than its budget, and
    /// the `syscall_*` rates (and the opens', when that hook counts them) are then per second
    /// of the time it was on. Describes the measurement, not the node: not a model feature.
    #[serde(default = "whole_window")]
    pub syscall_sample_fraction: f64,
    /// The same for the scheduler hooks (switch and wake-ups): the run-queue latencies are
    /// those of this share of the window. Context switches come from /proc/stat, exact.
    #[serde(default = "whole_window")]
    pub sched_sample_fraction: f64,
    /// The same for the block hooks (issue and completion): block counts, node-wide and per
    /// device, and slow-I/O events are what they saw scaled to the whole window, and block
    /// latencies are those of this share.
    #[serde(default = "whole_window")]
    pub block_sample_fraction: f64,
    pub syscalls_per_s: f64,
    pub syscall_errors_per_s: f64,
    pub syscall_enospc_per_s: f64,
    /// EMFILE (process) and ENFILE (system) together: out of file descriptors.
    pub syscall_emfile_per_s: f64,
    pub syscall_eagain_per_s: f64,
    pub syscall_etimedout_per_s: f64,
    /// ETIMEDOUT from timed waits (futex, message queues): their ordinary outcome, counted
    /// apart from `syscall_etimedout_per_s` and `syscall_errors_per_s`.
    #[serde(default)]
    pub syscall_wait_timeouts_per_s: f64,
    pub syscall_econnrefused_per_s: f64,
    pub syscall_eio_per_s: f64,
    pub syscall_eaddrnotavail_per_s: f64,
    pub file_opens_per_s: f64,
    pub file_open_errors_per_s: f64,
    pub fsyncs_per_s: f64,
    pub fsync_latency_p99_us: f64,
    pub net_rx_packets_per_s: f64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_packets_per_s: f64,
    pub net_tx_bytes_per_s: f64,
    pub net_tx_errors_per_s: f64,
    /// Packets freed as dropped (`skb:kfree_skb`) per second, less those whose reason is
    /// housekeeping, not loss (`HOUSEKEEPING_DROP_REASONS`: queues purged as sockets close).
    /// Where the kernel gives no reason (before 5.17), or its names could not be read, every
    /// drop counts.
    pub net_drops_per_s: f64,
    pub tcp_retransmits_per_s: f64,
    pub tcp_connects_per_s: f64,
    pub tcp_connect_failures_per_s: f64,
    pub tcp_accepts_per_s: f64,
    pub tcp_resets_per_s: f64,
    /// Conntrack entries over the table's limit, % (0 without nf_conntrack; `None` when its
    /// files could not be read).
    pub conntrack_fill_pct: Option<f64>,
    /// Failed syscalls seen in the window by errno name (only errnos seen; while the syscall
    /// sampler had the hook off, none are seen: see `syscall_sample_fraction`).
    pub syscall_errors_by_errno: BTreeMap<String, u64>,
    /// Dropped packets in the window by kernel drop reason (only reasons seen), the
    /// housekeeping ones included, and `TCP_TIME_WAIT` (the daemon's own name, not the
    /// kernel's: segments a TIME_WAIT socket handled, which the kernel frees as
    /// `NOT_SPECIFIED`).
    pub net_drops_by_reason: BTreeMap<String, u64>,
}

impl SystemFeatures {
    /// Every numeric field, by its name in the window record, in name order: the record's
    /// typed fields (`WindowRecord::fields`) take these along with its own. A field added to
    /// the struct goes here too (a test compares this list with the record's JSON).
    pub const NUMERIC_FIELDS: &[crate::window::numeric::NumericField<Self>] = crate::window::numeric::numeric_fields!(SystemFeatures:
        block_sample_fraction,
        conntrack_fill_pct,
        file_open_errors_per_s,
        file_opens_per_s,
        fsync_latency_p99_us,
        fsyncs_per_s,
        mem_major_faults_per_s,
        mem_oom_kills,
        mem_reclaim_stall_ms_per_s,
        mem_reclaims_per_s,
        net_drops_per_s,
        net_rx_bytes_per_s,
        net_rx_packets_per_s,
        net_tx_bytes_per_s,
        net_tx_errors_per_s,
        net_tx_packets_per_s,
        proc_brief_exits_nonzero_per_s,
        proc_exits_nonzero_per_s,
        proc_exits_per_s,
        proc_fatal_signals_per_s,
        proc_forks_per_s,
        sched_context_switches_per_s,
        sched_runqueue_latency_p50_us,
        sched_runqueue_latency_p99_us,
        sched_sample_fraction,
        syscall_eaddrnotavail_per_s,
        syscall_eagain_per_s,
        syscall_econnrefused_per_s,
        syscall_eio_per_s,
        syscall_emfile_per_s,
        syscall_enospc_per_s,
        syscall_errors_per_s,
        syscall_etimedout_per_s,
        syscall_sample_fraction,
        syscall_wait_timeouts_per_s,
        syscalls_per_s,
        tcp_accepts_per_s,
        tcp_connect_failures_per_s,
        tcp_connects_per_s,
        tcp_resets_per_s,
        tcp_retransmits_per_s,
    );
}

/// How long the syscall exit hook watched in a window: the syscall sampler takes it off for
/// part of a window when syscalls come too fast for its budget, and the syscall rates are then
/// what it counted over the time it was on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyscallSampling {
    /// Seconds of the window the hook was on.
    pub on_s: f64,
    /// Whether opens are counted by that hook too (no kprobe for them), so sampled with it.
    pub opens_too: bool,
}

impl SyscallSampling {
    /// Watched the whole window (or nothing to sample).
    pub fn whole(window_s: f64) -> Self {
        Self {
            on_s: window_s,
            opens_too: false,
        }
    }
}

fn whole_window() -> f64 {
    1.0
}

/// The window's drops less the housekeeping ones (`HOUSEKEEPING_DROP_REASONS`) among them.
/// The total and the by-reason counts are separate maps read one after the other, so the
/// difference can come out a little under 0 in a quiet window: it stops at 0.
fn drops_less_housekeeping(total: u64, by_reason: &BTreeMap<String, u64>) -> u64 {
    let housekeeping = housekeeping_drops(|reason| by_reason.get(reason).copied().unwrap_or(0));
    total.saturating_sub(housekeeping)
}

/// Differences two snapshots into one window's features.
pub fn system_features(
    previous: &SystemSnapshot,
    current: &SystemSnapshot,
    window_s: f64,
    syscall_sampling: SyscallSampling,
    drop_reason_names: &BTreeMap<usize, String>,
) -> SystemFeatures {
    let delta = |index: u32| {
        let index = index as usize;
        counter_delta(
            previous.events.get(index).copied().unwrap_or(0),
            current.events.get(index).copied().unwrap_or(0),
        )
    };
    let per_s = |index: u32| rate(delta(index), window_s);
    let errno_delta = |errno: i32| {
        let errno = errno as usize;
        counter_delta(
            previous.errnos.get(errno).copied().unwrap_or(0),
            current.errnos.get(errno).copied().unwrap_or(0),
        )
    };
    let syscall_s = syscall_sampling.on_s;
    let syscall_per_s = |index: u32| rate(delta(index), syscall_s);
    let opens_per_s = |index: u32| {
        if syscall_sampling.opens_too {
            syscall_per_s(index)
        } else {
            per_s(index)
        }
    };
    let errno_per_s = |errno: i32| rate(errno_delta(errno), syscall_s);
    let histogram = |index: u32| -> Vec<u64> {
        let index = index as usize;
        let empty = Histogram::default();
        let before = previous.histograms.get(index).unwrap_or(&empty);
        let after = current.histograms.get(index).unwrap_or(&empty);
        before
            .buckets
            .iter()
            .zip(&after.buckets)
            .map(|(b, a)| counter_delta(*b, *a))
            .collect()
    };
    let runqueue = histogram(hist::RUNQUEUE);
    let fsync = histogram(hist::FSYNC);
    let by_index = |before: &[u64], after: &[u64], name: &dyn Fn(usize) -> String| {
        after
            .iter()
            .enumerate()
            .filter_map(|(index, &now)| {
                let count = counter_delta(before.get(index).copied().unwrap_or(0), now);
                (count > 0).then(|| (name(index), count))
            })
            .collect::<BTreeMap<_, _>>()
    };
    // Unnamed reasons (no tracefs names) are `reason_N` and never housekeeping: counted.
    let mut net_drops_by_reason =
        by_index(&previous.drop_reasons, &current.drop_reasons, &|reason| {
            drop_reason_names
                .get(&reason)
                .cloned()
                .unwrap_or_else(|| format!("reason_{reason}"))
        });
    // Segments a TIME_WAIT socket handled: the kernel says `NOT_SPECIFIED`, the programs
    // count them apart under a name of the daemon's own (housekeeping, left out of the rate).
    let time_wait = delta(event::TCP_TIME_WAIT_SEGMENTS);
    if time_wait > 0 {
        net_drops_by_reason.insert(TCP_TIME_WAIT_DROP_REASON.to_string(), time_wait);
    }
    SystemFeatures {
        sched_context_switches_per_s: rate_across(
            previous.context_switches,
            current.context_switches,
            window_s,
        ),
        sched_runqueue_latency_p50_us: histogram_quantile_us(&runqueue, 0.5).unwrap_or(0.0),
        sched_runqueue_latency_p99_us: histogram_quantile_us(&runqueue, 0.99).unwrap_or(0.0),
        proc_forks_per_s: per_s(event::FORKS),
        proc_exits_per_s: per_s(event::EXITS),
        proc_exits_nonzero_per_s: per_s(event::EXITS_NONZERO),
        proc_brief_exits_nonzero_per_s: per_s(event::EXITS_NONZERO_BRIEF),
        proc_fatal_signals_per_s: per_s(event::FATAL_SIGNALS),
        mem_oom_kills: delta(event::OOM_KILLS),
        mem_reclaims_per_s: per_s(event::RECLAIMS),
        mem_reclaim_stall_ms_per_s: rate(delta(event::RECLAIM_NS), window_s) / 1e6,
        mem_major_faults_per_s: rate_across(previous.major_faults, current.major_faults, window_s),
        syscall_sample_fraction: if window_s > 0.0 {
            (syscall_s / window_s).clamp(0.0, 1.0)
        } else {
            1.0
        },
        // Set by the daemon, which knows the other groups' time on.
        sched_sample_fraction: 1.0,
        block_sample_fraction: 1.0,
        syscalls_per_s: syscall_per_s(event::SYSCALLS),
        syscall_errors_per_s: syscall_per_s(event::SYSCALL_ERRORS),
        syscall_enospc_per_s: errno_per_s(libc::ENOSPC),
        syscall_emfile_per_s: errno_per_s(libc::EMFILE) + errno_per_s(libc::ENFILE),
        syscall_eagain_per_s: errno_per_s(libc::EAGAIN),
        syscall_etimedout_per_s: errno_per_s(libc::ETIMEDOUT),
        syscall_wait_timeouts_per_s: syscall_per_s(event::WAIT_TIMEOUTS),
        syscall_econnrefused_per_s: errno_per_s(libc::ECONNREFUSED),
        syscall_eio_per_s: errno_per_s(libc::EIO),
        syscall_eaddrnotavail_per_s: errno_per_s(libc::EADDRNOTAVAIL),
        file_opens_per_s: opens_per_s(event::OPENS),
        file_open_errors_per_s: opens_per_s(event::OPEN_ERRORS),
        fsyncs_per_s: per_s(event::FSYNCS),
        fsync_latency_p99_us: histogram_quantile_us(&fsync, 0.99).unwrap_or(0.0),
        net_rx_packets_per_s: per_s(event::RX_PACKETS),
        net_rx_bytes_per_s: per_s(event::RX_BYTES),
        net_tx_packets_per_s: per_s(event::TX_PACKETS),
        net_tx_bytes_per_s: per_s(event::TX_BYTES),
        net_tx_errors_per_s: per_s(event::TX_ERRORS),
        net_drops_per_s: rate(
            drops_less_housekeeping(delta(event::SKB_DROPS), &net_drops_by_reason),
            window_s,
        ),
        tcp_retransmits_per_s: per_s(event::TCP_RETRANSMITS),
        tcp_connects_per_s: per_s(event::TCP_CONNECTS),
        tcp_connect_failures_per_s: per_s(event::TCP_CONNECT_FAILURES),
        tcp_accepts_per_s: per_s(event::TCP_ACCEPTS),
        tcp_resets_per_s: per_s(event::TCP_RESETS_RECEIVED) + per_s(event::TCP_RESETS_SENT),
        conntrack_fill_pct: match current.conntrack {
            Conntrack::Table { entries, max } if max > 0 => {
                Some(entries as f64 / max as f64 * 100.0)
            }
            Conntrack::Table { .. } | Conntrack::NotLoaded => Some(0.0),
            Conntrack::Unreadable => None,
        },
        syscall_errors_by_errno: by_index(&previous.errnos, &current.errnos, &errno_name),
        net_drops_by_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> SystemSnapshot {
        SystemSnapshot {
            events: vec![0; event::COUNT as usize],
            errnos: vec![0; 256],
            drop_reasons: vec![0; 256],
            histograms: vec![Histogram::default(); hist::COUNT as usize],
            major_faults: Some(0),
            context_switches: Some(0),
            conntrack: Conntrack::NotLoaded,
        }
    }

    #[test]
    fn features_are_rates_of_deltas_with_named_breakdowns() {
        let previous = snapshot();
        let mut current = snapshot();
        current.context_switches = Some(5000);
        current.events[event::EXITS_NONZERO as usize] = 10;
        current.events[event::EXITS_NONZERO_BRIEF as usize] = 35;
        current.events[event::OOM_KILLS as usize] = 1;
        current.events[event::RECLAIM_NS as usize] = 300_000_000;
        current.errnos[libc::EMFILE as usize] = 40;
        current.errnos[libc::ENFILE as usize] = 10;
        current.errnos[libc::ENOENT as usize] = 7;
        current.drop_reasons[3] = 4;
        current.histograms[hist::RUNQUEUE as usize].buckets[4] = 100;
        current.major_faults = Some(50);
        current.conntrack = Conntrack::Table {
            entries: 512,
            max: 2048,
        };
        let names = BTreeMap::from([(3, "NO_SOCKET".to_string())]);
        let features = system_features(
            &previous,
            &current,
            5.0,
            SyscallSampling::whole(5.0),
            &names,
        );
        assert_eq!(features.sched_context_switches_per_s, Some(1000.0));
        assert_eq!(features.proc_exits_nonzero_per_s, 2.0);
        assert_eq!(features.proc_brief_exits_nonzero_per_s, 7.0);
        assert_eq!(features.mem_oom_kills, 1);
        assert_eq!(features.mem_reclaim_stall_ms_per_s, 60.0);
        assert_eq!(features.syscall_emfile_per_s, 10.0);
        assert_eq!(features.mem_major_faults_per_s, Some(10.0));
        assert_eq!(features.conntrack_fill_pct, Some(25.0));
        assert!((16.0..=32.0).contains(&features.sched_runqueue_latency_p50_us));
        assert_eq!(features.syscall_errors_by_errno["EMFILE"], 40);
        assert_eq!(features.syscall_errors_by_errno["ENOENT"], 7);
        assert_eq!(features.net_drops_by_reason["NO_SOCKET"], 4);
        assert_eq!(features.syscall_errors_by_errno.len(), 3);
    }

    /// The drop rate and the by-reason counts of one window with these counts: `total`
    /// `skb:kfree_skb` events, `reasons` by `enum skb_drop_reason` value.
    fn drops(
        total: u64,
        reasons: &[(usize, u64)],
        names: &BTreeMap<usize, String>,
        window_s: f64,
    ) -> (f64, BTreeMap<String, u64>) {
        let previous = snapshot();
        let mut current = snapshot();
        current.events[event::SKB_DROPS as usize] = total;
        for &(reason, count) in reasons {
            current.drop_reasons[reason] = count;
        }
        let features = system_features(
            &previous,
            &current,
            window_s,
            SyscallSampling::whole(window_s),
            names,
        );
        (features.net_drops_per_s, features.net_drops_by_reason)
    }

    /// Names as this kernel's tracefs gives them (the numbers differ between kernels).
    fn reason_names() -> BTreeMap<usize, String> {
        BTreeMap::from([
            (2, "NOT_SPECIFIED".to_string()),
            (3, "NO_SOCKET".to_string()),
            (4, "SOCKET_CLOSE".to_string()),
            (47, "TCP_CLOSE".to_string()),
            (105, "QUEUE_PURGE".to_string()),
        ])
    }

    #[test]
    fn housekeeping_drops_leave_the_rate_and_stay_in_the_reasons() {
        let names = reason_names();
        // 70 refused (no socket), 5 for a closed TCP socket, 20 purged queues, 5 unread on
        // closed Unix sockets: 75 dropped in 2.5 s.
        let reasons = [(3, 70), (47, 5), (105, 20), (4, 5)];
        let (rate, by_reason) = drops(100, &reasons, &names, 2.5);
        assert_eq!(rate, 30.0);
        assert_eq!(by_reason["QUEUE_PURGE"], 20);
        assert_eq!(by_reason["SOCKET_CLOSE"], 5);
        assert_eq!(by_reason["NO_SOCKET"], 70);
        assert_eq!(by_reason["TCP_CLOSE"], 5);
        // Only purges: an idle node or a burst of short connections drops nothing.
        let (rate, by_reason) = drops(800, &[(105, 800)], &names, 2.0);
        assert_eq!(rate, 0.0);
        assert_eq!(by_reason["QUEUE_PURGE"], 800);
    }

    #[test]
    fn segments_handled_in_time_wait_show_by_name_and_leave_the_rate() {
        let previous = snapshot();
        let mut current = snapshot();
        // 30 freed: 10 segments for TIME_WAIT sockets, 4 unspecified, 16 refused.
        current.events[event::SKB_DROPS as usize] = 30;
        current.events[event::TCP_TIME_WAIT_SEGMENTS as usize] = 10;
        current.drop_reasons[2] = 4;
        current.drop_reasons[3] = 16;
        let features = system_features(
            &previous,
            &current,
            2.0,
            SyscallSampling::whole(2.0),
            &reason_names(),
        );
        assert_eq!(features.net_drops_by_reason["TCP_TIME_WAIT"], 10);
        assert_eq!(features.net_drops_by_reason["NOT_SPECIFIED"], 4);
        assert_eq!(features.net_drops_per_s, 10.0);
        // None in the window: no entry (a window without them reads as before).
        let features = system_features(
            &current,
            &current,
            2.0,
            SyscallSampling::whole(2.0),
            &reason_names(),
        );
        assert!(features.net_drops_by_reason.is_empty());
    }

    #[test]
    fn without_reasons_or_their_names_every_drop_counts() {
        // A kernel without the tracepoint's reason field: the by-reason counts stay empty.
        let (rate, by_reason) = drops(50, &[], &reason_names(), 5.0);
        assert_eq!(rate, 10.0);
        assert!(by_reason.is_empty());
        // Reasons counted but no names (tracefs unreadable): nothing is known to be
        // housekeeping, so nothing is left out.
        let (rate, by_reason) = drops(40, &[(105, 40)], &BTreeMap::new(), 5.0);
        assert_eq!(rate, 8.0);
        assert_eq!(by_reason["reason_105"], 40);
    }

    #[test]
    fn more_housekeeping_than_drops_read_is_zero_not_negative() {
        // The reasons' map is read after the total's: a purge in between is in one only.
        let (rate, _) = drops(10, &[(105, 12)], &reason_names(), 1.0);
        assert_eq!(rate, 0.0);
    }

    #[test]
    fn failed_proc_reads_are_missing_never_zero_and_never_a_rate_across_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        fs::write(&stat, "cpu 1 2 3\nctxt 1000\n").unwrap();
        fs::write(dir.path().join("vmstat"), "pgmajfault 7\n").unwrap();
        let mut files = SystemFiles::new(dir.path());
        let mut errors = ReadErrors::default();
        let read = |files: &mut SystemFiles, errors: &mut ReadErrors| SystemSnapshot {
            context_switches: files.context_switches(errors),
            major_faults: files.major_faults(errors),
            conntrack: files.conntrack(errors),
            ..snapshot()
        };
        let names = BTreeMap::new();
        let features = |a: &SystemSnapshot, b: &SystemSnapshot| {
            system_features(a, b, 1.0, SyscallSampling::whole(1.0), &names)
        };
        let first = read(&mut files, &mut errors);
        assert_eq!(first.context_switches, Some(1000));
        assert_eq!(first.conntrack, Conntrack::NotLoaded);
        // /proc/stat stops reading: its file becomes a directory (a read on it fails).
        fs::remove_file(&stat).unwrap();
        fs::create_dir(&stat).unwrap();
        // The kept descriptor still reads the old file: break it by re-pointing the files.
        let mut broken = SystemFiles::new(dir.path());
        let failed = read(&mut broken, &mut errors);
        assert_eq!(failed.context_switches, None);
        let window = features(&first, &failed);
        assert_eq!(window.sched_context_switches_per_s, None, "missing, not 0");
        assert_eq!(window.mem_major_faults_per_s, Some(0.0));
        assert_eq!(
            window.conntrack_fill_pct,
            Some(0.0),
            "no nf_conntrack: an empty table"
        );
        assert_eq!(errors.total[source::PROC_STAT], 1);
        assert!(errors.is_failing(source::PROC_STAT));
        // It reads again, 16.7 M switches later: that only sets the baseline.
        fs::remove_dir(&stat).unwrap();
        fs::write(&stat, "ctxt 16701000\n").unwrap();
        let back = read(&mut broken, &mut errors);
        assert_eq!(back.context_switches, Some(16_701_000));
        assert_eq!(features(&failed, &back).sched_context_switches_per_s, None);
        assert!(!errors.is_failing(source::PROC_STAT));
        fs::write(&stat, "ctxt 16702000\n").unwrap();
        let next = read(&mut broken, &mut errors);
        assert_eq!(
            features(&back, &next).sched_context_switches_per_s,
            Some(1000.0)
        );
        // A conntrack file that is there but unreadable is missing, not 0 %.
        let netfilter = dir.path().join("sys/net/netfilter");
        fs::create_dir_all(netfilter.join("nf_conntrack_count")).unwrap();
        fs::write(netfilter.join("nf_conntrack_max"), "100\n").unwrap();
        let mut files = SystemFiles::new(dir.path());
        let unreadable = read(&mut files, &mut errors);
        assert_eq!(unreadable.conntrack, Conntrack::Unreadable);
        assert_eq!(features(&next, &unreadable).conntrack_fill_pct, None);
        assert_eq!(errors.total[source::CONNTRACK], 1);
    }

    #[test]
    fn errno_names_and_unknown_numbers() {
        assert_eq!(errno_name(libc::ENOSPC as usize), "ENOSPC");
        assert_eq!(errno_name(250), "E250");
    }

    #[test]
    fn vmstat_and_conntrack_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("vmstat"), "pgfault 10\npgmajfault 42\n").unwrap();
        assert_eq!(
            read_vmstat_field(&dir.path().join("vmstat"), "pgmajfault"),
            Some(42)
        );
        assert_eq!(read_conntrack(dir.path()), None);
        fs::write(dir.path().join("nf_conntrack_count"), "10\n").unwrap();
        fs::write(dir.path().join("nf_conntrack_max"), "100\n").unwrap();
        assert_eq!(read_conntrack(dir.path()), Some((10, 100)));
    }
}
