//! The window maker: successive snapshots of the kernel's cumulative counters (and of `/proc`,
//! PSI, the per-cgroup table and the programs' statistics) become one window record each.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use collector_common::{BlockDevStats, counter};
use tracing::warn;

use super::SlowIoTally;
use crate::{
    kernel::{KernelAccounting, KernelCollector, ProgramStats, dev::split_kernel_dev},
    window::devices::DeviceNames,
    window::pressure::{PsiReader, ThrottlingReader},
    window::procfile::ReadErrors,
    window::record::{DeviceSample, ProgramWindow, WindowInputs, WindowRecord},
    window::system::{
        SyscallSampling, SystemFeatures, SystemFiles, SystemSnapshot, system_features,
    },
    window::{
        DeviceWindow,
        cgroups::{CgroupTable, SampledShares, window_table},
        counter_delta,
    },
};

/// Turns successive snapshots of the kernel's cumulative counters into window records.
pub struct WindowMaker {
    node: String,
    names: DeviceNames,
    previous: BTreeMap<u32, BlockDevStats>,
    previous_counters: [u64; counter::COUNT as usize],
    previous_at: Instant,
    psi: PsiReader,
    throttling: ThrottlingReader,
    previous_system: SystemSnapshot,
    /// /proc/stat and /proc/vmstat, kept open.
    files: SystemFiles,
    /// Failed reads so far, by source (`nodestate_read_errors_total`).
    read_errors: ReadErrors,
    /// Windows with a missing value so far (`nodestate_partial_windows_total`).
    partial_windows: u64,
    previous_programs: BTreeMap<String, ProgramStats>,
    drop_reason_names: BTreeMap<usize, String>,
    /// Windows closed so far; decides when program statistics are sampled.
    closed: u64,
    /// The per-cgroup counters at the start of the window (cumulative, summed over CPUs).
    previous_cgroups: Vec<(u64, collector_common::CgroupStats)>,
    /// The last window's per-cgroup table, until the loop takes it.
    cgroup_table: Option<CgroupTable>,
    /// When the per-cgroup table was last swept of dead cgroups.
    cgroups_swept_at: Instant,
}

/// How often the per-cgroup table is swept of cgroups that no longer exist: a walk of the
/// cgroup tree, kept off every window.
pub const CGROUP_SWEEP_EVERY: Duration = Duration::from_secs(60);

impl WindowMaker {
    /// Starts the first window now, from the counters as they are.
    pub fn start(kernel: &mut KernelCollector, node: &str) -> anyhow::Result<Self> {
        let now = Instant::now();
        // The sampled hooks' time on counts from this window's start.
        kernel.take_sampled_time(now);
        let mut files = SystemFiles::default();
        let mut read_errors = ReadErrors::default();
        let previous_system = SystemSnapshot::read_from(kernel, &mut files, &mut read_errors)?;
        Ok(Self {
            node: node.to_string(),
            names: DeviceNames::default(),
            previous: kernel.block_snapshot()?,
            previous_cgroups: kernel.cgroup_snapshot().unwrap_or_else(|err| {
                warn!("reading the per-cgroup table: {err:#}");
                Vec::new()
            }),
            cgroup_table: None,
            cgroups_swept_at: now,
            previous_counters: kernel.counters()?,
            previous_at: now,
            psi: PsiReader::default(),
            throttling: ThrottlingReader::new(std::path::Path::new("/sys/fs/cgroup")),
            previous_system,
            files,
            read_errors,
            partial_windows: 0,
            previous_programs: program_stats_by_name(kernel),
            drop_reason_names: crate::kernel::tracefs::Tracefs::find_or_mount()
                .ok()
                .and_then(|tracefs| tracefs.event_format("skb", "kfree_skb").ok())
                .map(|format| format.symbolic_names)
                .unwrap_or_default(),
            closed: 0,
        })
    }

    /// Closes the current window and starts the next one.
    pub fn close_window(
        &mut self,
        kernel: &mut KernelCollector,
        slow: SlowIoTally,
    ) -> anyhow::Result<WindowRecord> {
        let stats_were_on = kernel.program_stats_on();
        let now = Instant::now();
        let current = kernel.block_snapshot()?;
        let counters = kernel.counters()?;
        let system = SystemSnapshot::read_from(kernel, &mut self.files, &mut self.read_errors)?;
        let programs = program_stats_by_name(kernel);
        let window_s = now.duration_since(self.previous_at).as_secs_f64();
        // A failed read of the per-cgroup table costs that table's window, never the node's.
        let cgroups = match kernel.cgroup_snapshot() {
            Ok(cgroups) => Some(cgroups),
            Err(err) => {
                warn!("reading the per-cgroup table: {err:#}");
                None
            }
        };
        let sampled_time = kernel.take_sampled_time(now);
        let on_s = |group| {
            sampled_time
                .of(group)
                .map_or(window_s, |on| on.as_secs_f64().min(window_s))
        };
        let syscall_sampling = SyscallSampling {
            on_s: on_s(crate::kernel::sampler::HookGroup::Syscalls),
            opens_too: kernel.opens_from_syscall_exit(),
        };
        // The block programs may have been off for part of the window: their counts are of
        // the time they were on, scaled here to the window.
        let share_on = |group| {
            if window_s > 0.0 {
                (on_s(group) / window_s).clamp(0.0, 1.0)
            } else {
                1.0
            }
        };
        let block_on_s = on_s(crate::kernel::sampler::HookGroup::Block);
        let block_scale = if block_on_s > 0.0 {
            window_s / block_on_s
        } else {
            1.0
        };

        let mut devices = Vec::new();
        for (&dev, stats) in &current {
            let previous = self.previous.get(&dev).unwrap_or(&BlockDevStats::ZERO);
            let mut window = DeviceWindow::between(previous, stats).scaled(block_scale);
            // What the kernel has in flight, exact: issues and completions seen while the
            // hooks were on need not pair up.
            if let Some(inflight) = self.names.inflight_noted(dev, &mut self.read_errors) {
                window.inflight = inflight;
            }
            let slow_here = (slow.per_device.get(&dev).copied().unwrap_or(0) as f64 * block_scale)
                .round() as u64;
            // Devices idle in this window and with nothing in flight add only noise.
            if window.total_ops() == 0 && window.completed == 0 && window.inflight == 0 {
                continue;
            }
            let (major, minor) = split_kernel_dev(dev);
            devices.push(DeviceSample {
                name: self.names.name_noted(dev, &mut self.read_errors),
                major,
                minor,
                window,
                slow_io_events: slow_here,
            });
        }
        let lost = counter_delta(
            self.previous_counters[counter::SLOW_IO_LOST as usize],
            counters[counter::SLOW_IO_LOST as usize],
        );
        for (index, what) in [
            (
                counter::INFLIGHT_TABLE_FULL,
                "requests not latency-tracked (in-flight table full)",
            ),
            (
                counter::DEVICE_TABLE_FULL,
                "requests not counted (device table full)",
            ),
            (
                counter::ISSUE_UNREADABLE,
                "block_rq_issue records the program could not read (requests not counted)",
            ),
            (
                counter::COMPLETE_UNREADABLE,
                "block_rq_complete records the program could not read (completions not counted)",
            ),
        ] {
            let delta = counter_delta(
                self.previous_counters[index as usize],
                counters[index as usize],
            );
            if delta > 0 {
                warn!("{delta} {what} in this window");
            }
        }
        let record = WindowRecord::build(WindowInputs {
            timestamp: SystemTime::now(),
            window_s,
            node: &self.node,
            devices,
            slow_io_events: slow.received,
            events_lost: lost,
            psi: self.psi.window(window_s, &mut self.read_errors),
            throttling: self.throttling.window(&mut self.read_errors),
            system: SystemFeatures {
                sched_sample_fraction: share_on(crate::kernel::sampler::HookGroup::Scheduler),
                block_sample_fraction: share_on(crate::kernel::sampler::HookGroup::Block),
                ..system_features(
                    &self.previous_system,
                    &system,
                    window_s,
                    syscall_sampling,
                    &self.drop_reason_names,
                )
            },
            programs: if stats_were_on {
                program_windows(&self.previous_programs, &programs)
            } else {
                BTreeMap::new()
            },
        });
        self.closed += 1;
        if record.partial {
            self.partial_windows += 1;
        }
        kernel.set_program_stats(kernel.program_stats_mode().on_in_window(self.closed));
        if let Some(cgroups) = cgroups {
            // Scaled like the node's features: a sampled group's per-cgroup counters are of
            // the time its hooks were on.
            let on = SampledShares {
                syscalls: share_on(crate::kernel::sampler::HookGroup::Syscalls),
                scheduler: share_on(crate::kernel::sampler::HookGroup::Scheduler),
                block: share_on(crate::kernel::sampler::HookGroup::Block),
            };
            self.cgroup_table = Some(window_table(&self.previous_cgroups, &cgroups, window_s, on));
            self.previous_cgroups = cgroups;
        }
        self.previous_system = system;
        self.previous_programs = programs;
        self.previous = current;
        self.previous_counters = counters;
        self.previous_at = now;
        Ok(record)
    }
}

impl WindowMaker {
    /// The per-cgroup table of the window just closed (`None` if attribution is off or its
    /// read failed).
    pub fn take_cgroup_table(&mut self) -> Option<CgroupTable> {
        self.cgroup_table.take()
    }

    /// The kernel side's bookkeeping as of the window just closed, built from that window's
    /// reads of the block counters and the events array, not from reads of its own; only the
    /// program runs the kernel skipped are read here.
    pub fn accounting(&self, kernel: &KernelCollector) -> KernelAccounting {
        KernelAccounting::from_reads(
            self.previous_counters,
            &self.previous_system.events,
            kernel.runs_skipped(),
        )
    }

    /// The per-cgroup counters as last read (cumulative since load), for `/debug/cgroups`.
    pub fn cgroup_totals(&self) -> &[(u64, collector_common::CgroupStats)] {
        &self.previous_cgroups
    }

    /// Every [`CGROUP_SWEEP_EVERY`], after a window: drops the table entries of cgroups that
    /// no longer exist, so dead ids do not fill it (counted in
    /// `nodestate_cgroup_entries_removed_total`).
    pub fn sweep_cgroups(&mut self, kernel: &mut KernelCollector) {
        if self.cgroups_swept_at.elapsed() >= CGROUP_SWEEP_EVERY {
            self.cgroups_swept_at = Instant::now();
            kernel.remove_dead_cgroups();
        }
    }

    /// Failed reads so far, by source.
    pub fn read_errors(&self) -> &ReadErrors {
        &self.read_errors
    }

    /// Windows closed with a missing value so far.
    pub fn partial_windows(&self) -> u64 {
        self.partial_windows
    }
}

fn program_stats_by_name(kernel: &KernelCollector) -> BTreeMap<String, ProgramStats> {
    kernel
        .program_stats()
        .into_iter()
        .map(|stats| (stats.name.clone(), stats))
        .collect()
}

/// Per-program runs and run time within the window; programs that never ran are left out.
fn program_windows(
    previous: &BTreeMap<String, ProgramStats>,
    current: &BTreeMap<String, ProgramStats>,
) -> BTreeMap<String, ProgramWindow> {
    current
        .iter()
        .filter_map(|(name, now)| {
            let before = previous.get(name);
            let runs = counter_delta(before.map_or(0, |b| b.runs), now.runs);
            let run_time_ns = counter_delta(before.map_or(0, |b| b.run_time_ns), now.run_time_ns);
            (runs > 0).then(|| {
                (
                    name.clone(),
                    ProgramWindow {
                        runs,
                        run_time_ns,
                        ns_per_run: run_time_ns as f64 / runs as f64,
                    },
                )
            })
        })
        .collect()
}
