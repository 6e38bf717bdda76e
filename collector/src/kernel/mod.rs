//! The kernel side as the daemon sees it: load the object, attach each program by the best hook
//! this kernel offers, and hand out the maps as typed handles.

pub mod btf;
pub mod exact;
pub mod privileges;
pub mod probe_report;
pub mod probes;
pub mod sampler;
pub mod tracefs;

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use collector_common::{
    ABSENT, BlockDevStats, BlockTracepointLayout, DROP_REASON_SLOTS, ERRNO_SLOTS, ExitCodeOffsets,
    Histogram, OpenSyscalls, RECORD_HEAD_BYTES, SystemTracepointLayout, counter, event, hist,
    hook_config, names,
};
use tracing::{info, warn};

use self::{
    probes::{Attacher, SIGNALS},
    tracefs::Tracefs,
};

/// The compiled kernel programs, built by build.rs (aya-build) and embedded so the daemon is one
/// file to ship.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf"));

/// This binary was built without bpf-linker, with build.rs's empty stub in place of the
/// programs.
#[derive(Debug, thiserror::Error)]
#[error(
    "this collector was built without its eBPF programs (bpf-linker was not found when it was \
     built); run `cargo xtask setup`, then build it again"
)]
pub struct NoEbpfObject;

/// The embedded eBPF object, or why there is none.
pub(crate) fn ebpf_object() -> Result<&'static [u8], NoEbpfObject> {
    if EBPF_OBJECT.is_empty() {
        Err(NoEbpfObject)
    } else {
        Ok(EBPF_OBJECT)
    }
}

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

/// Forwards aya-log records from the kernel programs to the `log` facade (and so to tracing).
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// What the daemon asks of the kernel side.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Completions at or over this go to user space as slow-I/O events.
    pub slow_io_threshold_ns: u64,
    /// Size of the slow-I/O ring buffer: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
    /// Attach only these signals (ids from `probes::SIGNALS`); all when `None`.
    pub signals: Option<Vec<String>>,
    /// Never attach these signals (ids), e.g. to shed a hook too costly for a node.
    pub disabled_signals: Vec<String>,
    /// When the kernel keeps per-program run counts and run time.
    pub program_stats: ProgramStatsMode,
    /// Share of one CPU the sampled hooks may cost (see [`crate::kernel::sampler`]); 0: no budget,
    /// they stay on.
    pub hook_budget: f64,
    /// A process (TGID) whose syscalls, opens and forks are not the node's: the daemon's own,
    /// which `collector run` and `collector record` set to their process id. The programs
    /// count them apart ([`KernelCollector::own_events`]). `None` (the default) counts every
    /// process: for a caller that causes the events it measures, as tests and
    /// `collector probes --exercise` do.
    pub exclude_tgid: Option<u32>,
}

/// Per-program run-time statistics cost every program run two clock reads (~90 ns per run
/// measured on our VMs), so by default they are on for one window in
/// [`ProgramStatsMode::SAMPLE_EVERY`]: enough to see what each hook costs, at a twelfth of
/// the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgramStatsMode {
    Always,
    #[default]
    Sampled,
    Off,
}

impl ProgramStatsMode {
    pub const SAMPLE_EVERY: u64 = 12;

    /// Whether statistics should be on during window number `index` (0-based).
    pub fn on_in_window(self, index: u64) -> bool {
        match self {
            Self::Always => true,
            Self::Sampled => index.is_multiple_of(Self::SAMPLE_EVERY),
            Self::Off => false,
        }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            slow_io_threshold_ns: 10_000_000,
            ringbuf_bytes: 256 * 1024,
            signals: None,
            disabled_signals: Vec::new(),
            program_stats: ProgramStatsMode::default(),
            hook_budget: crate::kernel::sampler::DEFAULT_HOOK_BUDGET,
            exclude_tgid: None,
        }
    }
}

/// How one signal was hooked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Attached,
    /// Turned off by configuration (`--signals`, `--disable-signals`).
    Disabled,
    /// The hook does not exist on this kernel; the signal is skipped.
    Missing,
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct AttachReport {
    pub signal: &'static str,
    pub program: &'static str,
    /// e.g. "tracepoint block:block_rq_issue".
    pub hook: String,
    /// "kprobe", "tracepoint", or "none" when nothing could be attached.
    pub kind: &'static str,
    pub outcome: HookOutcome,
    /// Better hooks tried first, and why each was not used.
    pub tried: Vec<String>,
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::Disabled => f.write_str("disabled by configuration"),
            Self::Missing => f.write_str("missing on this kernel, skipped"),
            Self::Failed(err) => write!(f, "failed: {err}"),
        }
    }
}

impl AttachReport {
    fn disabled(plan: &crate::kernel::probes::SignalPlan) -> Self {
        let (program, hook) = plan.alternatives[0][0];
        Self {
            signal: plan.signal,
            program,
            hook: hook.describe(),
            kind: "none",
            outcome: HookOutcome::Disabled,
            tried: Vec::new(),
        }
    }
}

/// The loaded programs and their maps.
pub struct KernelCollector {
    /// Holds the programs and their links: dropping it detaches everything.
    ebpf: Option<Ebpf>,
    block_dev_stats: PerCpuHashMap<MapData, u32, BlockDevStats>,
    counters: PerCpuArray<MapData, u64>,
    slow_io_events: Option<RingBuf<MapData>>,
    events: PerCpuArray<MapData, u64>,
    errnos: PerCpuArray<MapData, u64>,
    drop_reasons: PerCpuArray<MapData, u64>,
    histograms: PerCpuArray<MapData, Histogram>,
    logger: Option<KernelLogger>,
    attached: Vec<AttachReport>,
    /// Every attachment, detached together on exit (see [`Self::detach`]).
    links: Vec<crate::kernel::probes::OwnedLink>,
    /// The busiest hooks, apart: the hook sampler takes them off and puts them back.
    sampled: SampledHooks,
    /// Whether the syscall exit program also counts opens (no kprobe for them here).
    opens_from_syscall_exit: bool,
    /// Holding it keeps the kernel's per-program run-time statistics on.
    stats: Option<std::os::fd::OwnedFd>,
    program_stats: ProgramStatsMode,
}

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

impl KernelCollector {
    /// Checks privileges and tracefs, loads the object and attaches every program it can.
    /// A hook missing from this kernel is reported, not fatal.
    pub fn load(config: &KernelConfig) -> anyhow::Result<Self> {
        privileges::check_can_load_programs()?;
        privileges::raise_memlock_limit_on_old_kernels();
        validate_ringbuf_bytes(config.ringbuf_bytes)?;
        let tracefs = Tracefs::find_or_mount()?;

        // Without the block tracepoints' format we cannot read their records; the rest of the
        // daemon still runs and reports the signal as missing.
        let layout = match block_layout(&tracefs) {
            Ok(layout) => Some(layout),
            Err(err) => {
                warn!("block I/O tracepoints unusable on this kernel: {err:#}");
                None
            }
        };
        let layout_value = layout.unwrap_or(BlockTracepointLayout::LINUX_6);

        let (system_layout, absent_fields) = system_layout(&tracefs);
        for field in &absent_fields {
            warn!("tracepoint field {field} missing on this kernel: the features it feeds read 0");
        }
        let open_syscalls = open_syscalls();
        let wait_syscalls = wait_syscalls();
        let kernel_btf = crate::kernel::btf::Btf::from_kernel();
        let exit_code_offsets = match kernel_btf
            .as_ref()
            .map_err(|err| anyhow::anyhow!("{err:#}"))
            .and_then(|btf| {
                Ok(ExitCodeOffsets {
                    task_signal: btf.member_offset("task_struct", "signal")?,
                    signal_group_exit_code: btf
                        .member_offset("signal_struct", "group_exit_code")?,
                })
            }) {
            Ok(offsets) => Some(offsets),
            Err(err) => {
                warn!(
                    "exit-code offsets not in the kernel's BTF ({err:#}): exit codes need the \
                     per-syscall exit_group tracepoint"
                );
                None
            }
        };
        // For the BTF tracepoints, which read `pid` through the task pointers they get.
        let task_pid_offset = match kernel_btf
            .as_ref()
            .map_err(|err| anyhow::anyhow!("{err:#}"))
            .and_then(|btf| Ok(btf.member_offset("task_struct", "pid")?))
        {
            Ok(offset) => Some(offset),
            Err(err) => {
                warn!(
                    "task_struct.pid not in the kernel's BTF ({err:#}): the scheduler programs \
                     use the classic tracepoints"
                );
                None
            }
        };
        let exit_code_offsets_value = exit_code_offsets.unwrap_or(ExitCodeOffsets {
            task_signal: ABSENT,
            signal_group_exit_code: ABSENT,
        });

        let mut ebpf = EbpfLoader::new()
            // The XDP program's LRU table is preallocated; this copy is never used.
            .map_max_entries(collector_common::xdp::names::SOURCE_TRAFFIC, 1)
            .override_global(names::BLOCK_LAYOUT, &layout_value, true)
            .override_global(names::SYSTEM_LAYOUT, &system_layout, true)
            .override_global(names::OPEN_SYSCALLS, &open_syscalls, true)
            .override_global(names::WAIT_SYSCALLS, &wait_syscalls, true)
            .override_global("EXIT_CODE_OFFSETS", &exit_code_offsets_value, true)
            .override_global(
                names::TASK_PID_OFFSET,
                &task_pid_offset.unwrap_or(ABSENT),
                true,
            )
            .override_global(
                "PT_REGS_SYSCALL_NR_OFFSET",
                &PT_REGS_SYSCALL_NR_OFFSET,
                true,
            )
            .override_global(
                names::SLOW_IO_THRESHOLD_NS,
                &config.slow_io_threshold_ns,
                true,
            )
            .override_global(names::IGNORED_TGID, &config.exclude_tgid.unwrap_or(0), true)
            .map_max_entries(names::SLOW_IO_EVENTS, config.ringbuf_bytes)
            .load(ebpf_object()?)
            .map_err(|err| {
                let what = match crate::kernel::privileges::seccomp_hint() {
                    Some(hint) => format!("loading the eBPF object into the kernel ({hint})"),
                    None => "loading the eBPF object into the kernel".to_string(),
                };
                anyhow::Error::new(err).context(what)
            })?;

        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                warn!("kernel-side log forwarding unavailable: {err}");
                None
            }
        };

        let mut attacher = Attacher::new(&mut ebpf, &tracefs, exit_code_offsets.is_some());
        if task_pid_offset.is_none() {
            attacher.disable(crate::kernel::probes::SCHED_SWITCH_BTF);
        }
        if layout.is_none() {
            attacher.disable(names::BLOCK_RQ_ISSUE);
            attacher.disable(names::BLOCK_RQ_COMPLETE);
        }
        let attached: Vec<AttachReport> = SIGNALS
            .iter()
            .map(|plan| {
                let wanted = config
                    .signals
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|id| id == plan.id))
                    && !config.disabled_signals.iter().any(|id| id == plan.id);
                if wanted {
                    attacher.attach(plan)
                } else {
                    AttachReport::disabled(plan)
                }
            })
            .collect();
        let mut sampled_links = Vec::new();
        let mut links = Vec::new();
        for (program, hook, link) in attacher.into_owned_links() {
            match crate::kernel::probes::sampled_group(program) {
                Some(group) => sampled_links.push(SampledLink {
                    program,
                    hook,
                    group,
                    link: Some(link),
                }),
                None => links.push(link),
            }
        }
        let sampled_since: Array<MapData, u64> =
            Array::try_from(take_map(&mut ebpf, names::SAMPLED_SINCE)?)?;
        let loaded_at = Instant::now();
        let sampled = SampledHooks {
            links: sampled_links,
            on_since: [Some(loaded_at); 3],
            on_for: [Duration::ZERO; 3],
            sampled_since,
        };
        let uses = |program: &str| {
            attached
                .iter()
                .any(|report| report.outcome == HookOutcome::Attached && report.program == program)
        };
        let opens_from_syscall_exit = uses(crate::kernel::probes::SYSCALL_EXIT_COUNTS);
        let exit_code_from_task = uses(crate::kernel::probes::PROCESS_EXIT_COUNTS);

        let mut hook_config: Array<MapData, u32> =
            Array::try_from(take_map(&mut ebpf, names::HOOK_CONFIG)?)?;
        hook_config.set(
            hook_config::OPENS_FROM_SYSCALL_EXIT,
            u32::from(opens_from_syscall_exit),
            0,
        )?;
        hook_config.set(
            hook_config::EXIT_CODE_FROM_TASK,
            u32::from(exit_code_from_task),
            0,
        )?;

        let block_dev_stats =
            PerCpuHashMap::try_from(take_map(&mut ebpf, names::BLOCK_DEV_STATS)?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, names::COUNTERS)?)?;
        let slow_io_events = RingBuf::try_from(take_map(&mut ebpf, names::SLOW_IO_EVENTS)?)?;
        let events = PerCpuArray::try_from(take_map(&mut ebpf, names::EVENTS)?)?;
        let errnos = PerCpuArray::try_from(take_map(&mut ebpf, names::ERRNOS)?)?;
        let drop_reasons = PerCpuArray::try_from(take_map(&mut ebpf, names::DROP_REASONS)?)?;
        let histograms = PerCpuArray::try_from(take_map(&mut ebpf, names::HISTOGRAMS)?)?;
        let mut collector = Self {
            ebpf: Some(ebpf),
            block_dev_stats,
            counters,
            slow_io_events: Some(slow_io_events),
            events,
            errnos,
            drop_reasons,
            histograms,
            logger,
            attached,
            links,
            sampled,
            opens_from_syscall_exit,
            stats: None,
            program_stats: config.program_stats,
        };
        collector.set_program_stats(config.program_stats.on_in_window(0));
        Ok(collector)
    }

    /// Turns the kernel's per-program run-time statistics on or off (they stay on while any
    /// process holds the file descriptor `BPF_ENABLE_STATS` returned).
    pub fn set_program_stats(&mut self, on: bool) {
        if on && self.stats.is_none() {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => self.stats = Some(fd),
                Err(err) => warn!("BPF run-time statistics unavailable: {err}"),
            }
        } else if !on {
            self.stats = None;
        }
    }

    pub fn program_stats_mode(&self) -> ProgramStatsMode {
        self.program_stats
    }

    pub fn program_stats_on(&self) -> bool {
        self.stats.is_some()
    }

    pub fn attach_reports(&self) -> &[AttachReport] {
        &self.attached
    }

    /// Logs the "signal → hook → result" table.
    pub fn log_attach_table(&self) {
        for report in &self.attached {
            match report.outcome {
                HookOutcome::Attached => info!(
                    signal = report.signal,
                    hook = %report.hook,
                    "probe {}: {}",
                    report.program,
                    report.outcome
                ),
                _ => warn!(
                    signal = report.signal,
                    hook = %report.hook,
                    "probe {}: {}",
                    report.program,
                    report.outcome
                ),
            }
            for attempt in &report.tried {
                info!(
                    signal = report.signal,
                    "  fallback taken; tried first: {attempt}"
                );
            }
        }
    }

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

    /// Run count and total run time (ns) of every loaded program, by name, as far as the
    /// kernel counted them (only while statistics were on).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let Some(ebpf) = &self.ebpf else {
            return Vec::new();
        };
        ebpf.programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats {
                    name: name.to_string(),
                    runs: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }

    /// The slow-I/O ring buffer, to be drained by one reader.
    pub fn take_slow_io_events(&mut self) -> Option<RingBuf<MapData>> {
        self.slow_io_events.take()
    }

    pub fn take_logger(&mut self) -> Option<KernelLogger> {
        self.logger.take()
    }

    /// Detaches every program; the maps stay readable (tests use this to stop new events).
    pub fn detach(&mut self) {
        // Each detach waits for an RCU grace period in the kernel (tens of ms); one after the
        // other, 20 of them take over a second and a half. Dropping them on their own threads
        // lets the waits overlap.
        let mut links = std::mem::take(&mut self.links);
        links.extend(
            self.sampled
                .links
                .drain(..)
                .filter_map(|sampled| sampled.link),
        );
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
        self.ebpf = None;
    }

    /// Whether the syscall exit program counts opens, so that the opens rate is sampled with
    /// the syscalls.
    pub fn opens_from_syscall_exit(&self) -> bool {
        self.opens_from_syscall_exit
    }

    /// Takes the sampled hooks off until [`Self::resume_sampled_hooks`]: while they are off,
    /// no task takes the syscall tracing slow path and no switch or block request runs a
    /// program. The kernel waits for an RCU grace period before it lets go of a link (tens of
    /// ms), so the links are dropped on threads of their own; the programs stop running when
    /// the drops start.
    pub fn pause_sampled_hooks(&mut self) {
        self.pause_hook_groups(crate::kernel::sampler::HookGroups::ALL);
    }

    /// Takes the sampled hooks of `groups` off (see [`Self::pause_sampled_hooks`]).
    pub fn pause_hook_groups(&mut self, groups: crate::kernel::sampler::HookGroups) {
        let hooks = &mut self.sampled;
        let links: Vec<_> = hooks
            .links
            .iter_mut()
            .filter(|sampled| groups.contains(sampled.group))
            .filter_map(|sampled| sampled.link.take())
            .collect();
        if links.is_empty() {
            return;
        }
        for group in crate::kernel::sampler::HookGroup::ALL {
            if groups.contains(group)
                && let Some(since) = hooks.on_since[group as usize].take()
            {
                hooks.on_for[group as usize] += since.elapsed();
            }
        }
        std::thread::spawn(move || {
            std::thread::scope(|scope| {
                for link in links {
                    scope.spawn(move || drop(link));
                }
            })
        });
    }

    /// Whether any signal has a hook the sampler can take off and put back.
    pub fn has_sampled_hooks(&self) -> bool {
        !self.sampled.links.is_empty()
    }

    /// The groups that have sampled hooks.
    pub fn sampled_groups(&self) -> crate::kernel::sampler::HookGroups {
        let mut groups = crate::kernel::sampler::HookGroups::default();
        for sampled in &self.sampled.links {
            groups.insert(sampled.group);
        }
        groups
    }

    /// Whether any of `programs` is attached as one of the sampled hooks.
    fn samples(&self, programs: &[&str]) -> bool {
        self.sampled
            .links
            .iter()
            .any(|sampled| programs.contains(&sampled.program))
    }

    /// Whether the block programs are among the sampled hooks, so that block counts are per
    /// second of the time they were on.
    pub fn samples_block_io(&self) -> bool {
        self.samples(&crate::kernel::probes::BLOCK_PROGRAMS)
    }

    /// Syscalls the hook ran for so far (cumulative, summed over CPUs): the node's and the
    /// excluded process's, since the hook costs the same on both.
    pub fn syscalls_counted(&self) -> anyhow::Result<u64> {
        let events = self.events()?;
        let slot = |index: u32| events.get(index as usize).copied().unwrap_or(0);
        Ok(slot(event::SYSCALLS) + slot(event::OWN_SYSCALLS))
    }

    /// What the excluded process ([`KernelConfig::exclude_tgid`]) did so far, counted apart
    /// from the node's (cumulative; its syscalls only while the syscall hook was on).
    pub fn own_events(&self) -> anyhow::Result<OwnEvents> {
        let slot = |index: u32| -> anyhow::Result<u64> {
            Ok(self
                .events
                .get(&index, 0)
                .context("reading a per-CPU counter array")?
                .iter()
                .sum())
        };
        Ok(OwnEvents {
            syscalls: slot(event::OWN_SYSCALLS)?,
            forks: slot(event::OWN_FORKS)?,
        })
    }

    /// The events on the sampled hooks so far, each from where it is exact, for the sampler's
    /// cost estimate; a hook that is not attached counts none.
    pub fn sampled_event_counts(&self) -> anyhow::Result<crate::kernel::sampler::EventCounts> {
        let mut counts = crate::kernel::sampler::EventCounts::default();
        if self.samples(&crate::kernel::probes::SYSCALL_EXIT_PROGRAMS) {
            counts.syscalls = self.syscalls_counted()?;
        }
        if self.samples(&crate::kernel::probes::SCHED_PROGRAMS) {
            // A failed read is no count: 0 here would read as a burst on the next look.
            counts.context_switches =
                self::exact::read_context_switches(std::path::Path::new("/proc/stat"))
                    .context("reading ctxt from /proc/stat")?;
        }
        if self.samples_block_io() {
            counts.block_requests = self::exact::block_requests_completed(
                std::path::Path::new("/proc/diskstats"),
                std::path::Path::new("/sys/block"),
            )
            .context("reading /proc/diskstats")?;
        }
        Ok(counts)
    }

    /// Puts the sampled hooks back on (a no-op while they are on). The programs learn from
    /// `SAMPLED_SINCE` that starts recorded before now (waits, requests) may have ended
    /// unseen. A hook that fails to attach is reported and the others still go on.
    pub fn resume_sampled_hooks(&mut self) -> anyhow::Result<()> {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return Ok(());
        };
        let hooks = &mut self.sampled;
        let mut off = crate::kernel::sampler::HookGroups::default();
        for sampled in hooks.links.iter().filter(|sampled| sampled.link.is_none()) {
            off.insert(sampled.group);
        }
        if off.is_empty() {
            return Ok(());
        }
        // Written before a group's hooks are back, so every start its programs record from
        // here on is at or after it. A group that stayed on keeps its time: its waits and
        // requests in progress were watched from their start.
        let now_ns = monotonic_ns();
        for group in crate::kernel::sampler::HookGroup::ALL {
            if off.contains(group) {
                hooks.sampled_since.set(group as u32, now_ns, 0)?;
            }
        }
        let mut failed = Vec::new();
        for sampled in hooks
            .links
            .iter_mut()
            .filter(|sampled| sampled.link.is_none())
        {
            match crate::kernel::probes::reattach(ebpf, sampled.program, sampled.hook) {
                Ok(attached) => sampled.link = Some(attached),
                Err(err) => failed.push(format!("{}: {err:#}", sampled.program)),
            }
        }
        let now = Instant::now();
        for group in crate::kernel::sampler::HookGroup::ALL {
            if off.contains(group) {
                hooks.on_since[group as usize].get_or_insert(now);
            }
        }
        if !failed.is_empty() {
            anyhow::bail!("putting sampled hooks back on: {}", failed.join("; "));
        }
        Ok(())
    }

    /// How long each group of sampled hooks was on since the last call (or since load), up
    /// to `now`; `None` for a group without any (its signals are off or missing).
    pub fn take_sampled_time(&mut self, now: Instant) -> SampledTime {
        let hooks = &mut self.sampled;
        let mut time = SampledTime::default();
        for group in crate::kernel::sampler::HookGroup::ALL {
            let index = group as usize;
            let mut on = std::mem::take(&mut hooks.on_for[index]);
            if let Some(since) = hooks.on_since[index].as_mut() {
                on += now.saturating_duration_since(*since);
                *since = now;
            }
            if hooks.links.iter().any(|sampled| sampled.group == group) {
                time.0[index] = Some(on);
            }
        }
        time
    }
}

/// The excluded process's own events (see [`KernelCollector::own_events`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnEvents {
    pub syscalls: u64,
    pub forks: u64,
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// How long each group of sampled hooks was on over a stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampledTime([Option<Duration>; 3]);

impl SampledTime {
    /// `None`: the group has no hooks (its signals are off or missing).
    pub fn of(&self, group: crate::kernel::sampler::HookGroup) -> Option<Duration> {
        self.0[group as usize]
    }
}

/// One attachment of a sampled program.
struct SampledLink {
    program: &'static str,
    hook: crate::kernel::probes::Hook,
    group: crate::kernel::sampler::HookGroup,
    /// While it is on.
    link: Option<crate::kernel::probes::OwnedLink>,
}

/// The attachments of the sampled programs (see `probes::sampled_group`), which the hook
/// sampler takes off and puts back a group at a time.
struct SampledHooks {
    links: Vec<SampledLink>,
    /// Per group ([`crate::kernel::sampler::HookGroup`] order): when its hooks last went on, while
    /// they are on.
    on_since: [Option<Instant>; 3],
    /// Per group: time on since the last [`KernelCollector::take_sampled_time`], not counting
    /// the current stretch.
    on_for: [Duration; 3],
    /// The programs' `SAMPLED_SINCE`.
    sampled_since: Array<MapData, u64>,
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

/// A loaded program's cost so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
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
const PT_REGS_SYSCALL_NR_OFFSET: u32 = 15 * 8;
#[cfg(not(target_arch = "x86_64"))]
const PT_REGS_SYSCALL_NR_OFFSET: u32 = ABSENT;

/// This architecture's open-family syscall numbers.
fn open_syscalls() -> OpenSyscalls {
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
fn wait_syscalls() -> collector_common::WaitSyscalls {
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

fn take_map(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

/// The kernel wants a ring buffer of a power-of-two number of pages.
pub fn validate_ringbuf_bytes(bytes: u32) -> anyhow::Result<()> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if bytes < page || !bytes.is_power_of_two() {
        anyhow::bail!(
            "ring buffer size {bytes} bytes is invalid: it must be a power of two and at least one \
             page ({page} bytes), e.g. 262144"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_statistics_are_sampled_one_window_in_twelve() {
        let on: Vec<u64> = (0..36)
            .filter(|&index| ProgramStatsMode::Sampled.on_in_window(index))
            .collect();
        assert_eq!(on, vec![0, 12, 24]);
        assert!((0..36).all(|index| ProgramStatsMode::Always.on_in_window(index)));
        assert!(!(0..36).any(|index| ProgramStatsMode::Off.on_in_window(index)));
    }

    #[test]
    fn ring_buffer_sizes_must_be_whole_power_of_two_pages() {
        assert!(validate_ringbuf_bytes(4096).is_ok());
        assert!(validate_ringbuf_bytes(256 * 1024).is_ok());
        assert!(validate_ringbuf_bytes(5000).is_err());
        assert!(validate_ringbuf_bytes(2048).is_err());
    }
}
