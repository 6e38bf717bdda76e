//! Reading the programs' maps: per-CPU counters, histograms and the block device table,
//! summed over CPUs into cumulative totals (the window takes the deltas).

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use collector_common::{
    BlockDevStats, DROP_REASON_SLOTS, ERRNO_SLOTS, Histogram, counter, event, hist,
};

use super::KernelCollector;

/// Sums the per-CPU copies of a device's counters (a per-CPU map's value, as read).
pub fn sum_cpus<'a>(
    per_cpu: impl IntoIterator<Item = &'a collector_common::BlockDevStats>,
) -> collector_common::BlockDevStats {
    let mut total = collector_common::BlockDevStats::ZERO;
    for stats in per_cpu {
        for class in 0..collector_common::op::COUNT {
            total.ops[class] += stats.ops[class];
            total.bytes[class] += stats.bytes[class];
        }
        total.flushes += stats.flushes;
        total.tracked_issued += stats.tracked_issued;
        total.completed += stats.completed;
        total.errors += stats.errors;
        total.latency_sum_ns += stats.latency_sum_ns;
        for bucket in 0..collector_common::LATENCY_BUCKETS {
            total.latency_hist[bucket] += stats.latency_hist[bucket];
        }
    }
    total
}

impl KernelCollector {
    /// Cumulative counters of every block device seen, summed over CPUs, by kernel `dev_t`.
    pub fn block_snapshot(&self) -> anyhow::Result<BTreeMap<u32, BlockDevStats>> {
        let mut devices = BTreeMap::new();
        for entry in self.block_dev_stats.iter() {
            let (dev, per_cpu) = entry.context("reading the block device table")?;
            devices.insert(dev, sum_cpus(per_cpu.iter()));
        }
        Ok(devices)
    }

    /// The kernel side's own counters (see `collector_common::counter`), summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<[u64; counter::COUNT as usize]> {
        let totals = sum_array(&self.counters, counter::COUNT)?;
        Ok(totals
            .try_into()
            .expect("sum_array returns one total per slot"))
    }

    /// Node-wide event counts (see `collector_common::event`), summed over CPUs.
    pub fn events(&self) -> anyhow::Result<Vec<u64>> {
        sum_array(&self.events, event::COUNT)
    }

    /// Failed syscalls by errno (index = errno), summed over CPUs.
    pub fn errnos(&self) -> anyhow::Result<Vec<u64>> {
        sum_array(&self.errnos, ERRNO_SLOTS)
    }

    /// Freed-and-dropped packets by `enum skb_drop_reason`, summed over CPUs.
    pub fn drop_reasons(&self) -> anyhow::Result<Vec<u64>> {
        sum_array(&self.drop_reasons, DROP_REASON_SLOTS)
    }

    /// Latency histograms (see `collector_common::hist`), summed over CPUs.
    pub fn histograms(&self) -> anyhow::Result<Vec<Histogram>> {
        (0..hist::COUNT)
            .map(|index| {
                let per_cpu = self
                    .histograms
                    .get(&index, 0)
                    .context("reading the latency histograms")?;
                let mut total = Histogram::default();
                for histogram in per_cpu.iter() {
                    for (sum, count) in total.buckets.iter_mut().zip(&histogram.buckets) {
                        *sum += count;
                    }
                }
                Ok(total)
            })
            .collect()
    }

    /// Syscalls the hook ran for so far (cumulative, summed over CPUs): the node's and the
    /// excluded process's, since the hook costs the same on both.
    pub fn syscalls_counted(&self) -> anyhow::Result<u64> {
        let events = self.events()?;
        let slot = |index: u32| events.get(index as usize).copied().unwrap_or(0);
        Ok(slot(event::SYSCALLS) + slot(event::OWN_SYSCALLS))
    }
}

/// The kernel side's own bookkeeping, cumulative since load (see
/// [`KernelCollector::accounting`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelAccounting {
    /// The block programs' counters, by `collector_common::counter` index.
    pub block: [u64; counter::COUNT as usize],
    /// Program runs the kernel skipped, summed over the loaded programs (see
    /// [`KernelCollector::program_runs_skipped`]).
    pub runs_skipped: u64,
    /// `NOT_SPECIFIED` drops whose socket's state the kfree_skb program could not read
    /// (`collector_common::event::SOCK_STATE_UNREADABLE`): counted as drops, maybe wrongly.
    pub socket_state_unreadable: u64,
    /// Process exits whose status or start the exit programs could not read
    /// (`collector_common::event::EXIT_UNREADABLE`): an unreadable status is not counted as
    /// non-zero, an unreadable start counts a non-zero exit as a program's.
    pub exit_unreadable: u64,
    /// What the excluded process ([`super::KernelConfig::exclude_tgid`]) did so far, counted apart
    /// from the node's (its syscalls only while the syscall hook was on). Taken from the same
    /// read of the events array as the rest of the accounting (in the daemon, the window's).
    pub own: OwnEvents,
}

impl KernelCollector {
    /// The block programs' counters and the program runs the kernel skipped, for the
    /// daemon's metrics: what was not counted the usual way, and why.
    pub fn accounting(&self) -> anyhow::Result<KernelAccounting> {
        Ok(KernelAccounting::from_reads(
            self.counters()?,
            &self.events()?,
            self.runs_skipped(),
        ))
    }

    /// Program runs the kernel skipped, summed over the loaded programs.
    pub fn runs_skipped(&self) -> u64 {
        self.program_runs_skipped()
            .iter()
            .map(|(_, skipped)| skipped)
            .sum()
    }
}

impl KernelAccounting {
    /// The accounting from reads made already: the block programs' counters and the events
    /// array (by `collector_common::event` index, cumulative; a short array reads as 0), so
    /// the window loop builds it from the window's own reads instead of reading the maps
    /// again.
    pub fn from_reads(
        block: [u64; counter::COUNT as usize],
        events: &[u64],
        runs_skipped: u64,
    ) -> Self {
        let event = |index: u32| events.get(index as usize).copied().unwrap_or(0);
        Self {
            block,
            runs_skipped,
            socket_state_unreadable: event(event::SOCK_STATE_UNREADABLE),
            exit_unreadable: event(event::EXIT_UNREADABLE),
            own: OwnEvents {
                syscalls: event(event::OWN_SYSCALLS),
                forks: event(event::OWN_FORKS),
            },
        }
    }
}

/// The excluded process's own events, cumulative (see [`KernelAccounting::own`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnEvents {
    pub syscalls: u64,
    pub forks: u64,
}

/// Sums each slot of a per-CPU array over CPUs.
fn sum_array(array: &PerCpuArray<MapData, u64>, slots: u32) -> anyhow::Result<Vec<u64>> {
    (0..slots)
        .map(|index| {
            array
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .context("reading a per-CPU counter array")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_takes_each_count_from_its_own_slot() {
        let mut block = [0; counter::COUNT as usize];
        block[counter::INFLIGHT_STALE_EVICTED as usize] = 3;
        // Every slot a different value, so a wrong index cannot pass.
        let events: Vec<u64> = (0..event::COUNT as u64).map(|index| 100 + index).collect();
        let accounting = KernelAccounting::from_reads(block, &events, 9);
        assert_eq!(accounting.block, block);
        assert_eq!(accounting.runs_skipped, 9);
        let slot = |index: u32| 100 + u64::from(index);
        assert_eq!(
            accounting.socket_state_unreadable,
            slot(event::SOCK_STATE_UNREADABLE)
        );
        assert_eq!(accounting.exit_unreadable, slot(event::EXIT_UNREADABLE));
        assert_eq!(
            accounting.own,
            OwnEvents {
                syscalls: slot(event::OWN_SYSCALLS),
                forks: slot(event::OWN_FORKS),
            }
        );
        // A short array (an old program's) reads as zeros, not a panic.
        let short = KernelAccounting::from_reads(block, &events[..2], 0);
        assert_eq!(short.own, OwnEvents::default());
        assert_eq!(short.exit_unreadable, 0);
    }
}
