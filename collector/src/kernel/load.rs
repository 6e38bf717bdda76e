//! Loading the eBPF object and attaching its programs: the embedded object, the globals the
//! programs get at load (layouts, thresholds, our own TGID), the attach table, and detaching.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use collector_common::{
    ABSENT, BlockDevStats, BlockTracepointLayout, ExitCodeOffsets, Histogram, hook_config, names,
};
use tracing::{info, warn};

use super::{
    cgroups::{Attribution, CgroupTables},
    config::KernelConfig,
    hooks::{SampledHooks, SampledLink},
    layout::{
        block_layout, exit_code_offsets, kernel_thread_flags_offset, open_syscalls,
        process_start_offsets, pt_regs_syscall_nr_offset, sock_common_state_offset, system_layout,
        task_pid_offset, wait_syscalls,
    },
    privileges,
    probes::{Attacher, SIGNALS},
    report::{AttachReport, HookOutcome},
    stats::ProgramStatsMode,
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

/// Forwards aya-log records from the kernel programs to the `log` facade (and so to tracing).
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The loaded programs and their maps.
pub struct KernelCollector {
    /// Holds the programs and their links: dropping it detaches everything.
    pub(super) ebpf: Option<Ebpf>,
    pub(super) block_dev_stats: PerCpuHashMap<MapData, u32, BlockDevStats>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) slow_io_events: Option<RingBuf<MapData>>,
    pub(super) events: PerCpuArray<MapData, u64>,
    pub(super) errnos: PerCpuArray<MapData, u64>,
    pub(super) drop_reasons: PerCpuArray<MapData, u64>,
    pub(super) histograms: PerCpuArray<MapData, Histogram>,
    pub(super) logger: Option<KernelLogger>,
    pub(super) attached: Vec<AttachReport>,
    /// Every attachment, detached together on exit (see [`Self::detach`]).
    pub(super) links: Vec<crate::kernel::probes::OwnedLink>,
    /// The busiest hooks, apart: the hook sampler takes them off and puts them back.
    pub(super) sampled: SampledHooks,
    /// Whether the syscall exit program also counts opens (no kprobe for them here).
    pub(super) opens_from_syscall_exit: bool,
    /// Holding it keeps the kernel's per-program run-time statistics on.
    pub(super) stats: Option<std::os::fd::OwnedFd>,
    pub(super) program_stats: ProgramStatsMode,
    /// Which cgroup ids the programs charge.
    pub(super) attribution: Attribution,
    /// The per-cgroup table and its counters, while attribution is on.
    pub(super) cgroups: Option<CgroupTables>,
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

        let (mut system_layout, absent_fields) = system_layout(&tracefs);
        for field in &absent_fields {
            warn!("tracepoint field {field} missing on this kernel: the features it feeds read 0");
        }
        let open_syscalls = open_syscalls();
        let wait_syscalls = wait_syscalls();
        let kernel_btf = crate::kernel::btf::Btf::from_kernel();
        let exit_code_offsets = exit_code_offsets(kernel_btf.as_ref());
        // For the BTF tracepoints, which read `pid` through the task pointers they get.
        let task_pid_offset = task_pid_offset(kernel_btf.as_ref());
        let syscall_nr_offset = pt_regs_syscall_nr_offset(kernel_btf.as_ref());
        if system_layout.kfree_skb_rx_sk != ABSENT {
            system_layout.sock_common_state = sock_common_state_offset(kernel_btf.as_ref());
        }
        let mut exit_code_offsets_value = ExitCodeOffsets::UNKNOWN;
        if let Some((task_signal, signal_group_exit_code)) = exit_code_offsets {
            exit_code_offsets_value.task_signal = task_signal;
            exit_code_offsets_value.signal_group_exit_code = signal_group_exit_code;
        }
        (
            exit_code_offsets_value.task_group_leader,
            exit_code_offsets_value.task_start_time,
        ) = process_start_offsets(kernel_btf.as_ref());

        let mut attribution = super::cgroups::decide(config.cgroup_attribution);
        let (mut cgroup_layout, cgroup_absent) = super::cgroups::tracepoint_layout(&tracefs);
        if matches!(attribution, Attribution::Unified { .. }) {
            cgroup_layout.task_flags = kernel_thread_flags_offset(kernel_btf.as_ref());
        }
        if attribution.mode() != collector_common::cgroup_mode::OFF && !cgroup_absent.is_empty() {
            warn!(
                "tracepoint fields missing for per-cgroup attribution ({}): the signals they \
                 feed are not attributed",
                cgroup_absent.join(", ")
            );
        }
        let v1_hierarchy = match &attribution {
            Attribution::V1 { hierarchy_id, .. } => *hierarchy_id,
            _ => 0,
        };

        let mut ebpf = EbpfLoader::new()
            .override_global(names::CGROUP_MODE, &attribution.mode(), true)
            .override_global(names::CGROUP_V1_HIERARCHY, &v1_hierarchy, true)
            .override_global(names::CGROUP_LAYOUT, &cgroup_layout, true)
            // The XDP program's LRU table is preallocated; this copy is never used.
            .map_max_entries(collector_common::xdp::names::SOURCE_TRAFFIC, 1)
            .override_global(names::BLOCK_LAYOUT, &layout_value, true)
            .override_global(names::SYSTEM_LAYOUT, &system_layout, true)
            .override_global(names::OPEN_SYSCALLS, &open_syscalls, true)
            .override_global(names::WAIT_SYSCALLS, &wait_syscalls, true)
            .override_global(names::EXIT_CODE_OFFSETS, &exit_code_offsets_value, true)
            .override_global(names::BRIEF_EXIT_NS, &config.brief_exit_ns, true)
            .override_global(
                names::TASK_PID_OFFSET,
                &task_pid_offset.unwrap_or(ABSENT),
                true,
            )
            .override_global("PT_REGS_SYSCALL_NR_OFFSET", &syscall_nr_offset, true)
            .override_global(
                names::SLOW_IO_THRESHOLD_NS,
                &config.slow_io_threshold_ns,
                true,
            )
            .override_global(names::IGNORED_TGID, &config.exclude_tgid.unwrap_or(0), true)
            .map_max_entries(names::SLOW_IO_EVENTS, config.ringbuf_bytes)
            // The two special keys must fit.
            .map_max_entries(names::CGROUP_STATS, config.cgroup_table_entries.max(2))
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
                    && !config.disabled_signals.iter().any(|id| id == plan.id)
                    && (attribution.mode() != collector_common::cgroup_mode::OFF
                        || !crate::kernel::probes::ATTRIBUTION_SIGNALS.contains(&plan.id));
                if wanted {
                    attacher.attach(plan)
                } else {
                    plan.disabled()
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
        let cgroups = match attribution.mode() {
            collector_common::cgroup_mode::OFF => None,
            _ => match start_attribution(&mut ebpf, &attribution) {
                Ok(tables) => Some(tables),
                Err(err) => {
                    warn!("per-cgroup attribution unavailable: {err:#}");
                    attribution = Attribution::Off {
                        reason: format!("{err:#}"),
                    };
                    None
                }
            },
        };
        info!("cgroup attribution: {}", attribution.describe());
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
            attribution,
            cgroups,
        };
        collector.set_program_stats(config.program_stats.on_in_window(0));
        Ok(collector)
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
}

/// Takes the per-cgroup maps, inserts the special keys and seeds the task table from /proc
/// (after the programs are attached, so a task forked or moved meanwhile is caught by them;
/// the scan never overwrites what they wrote).
/// `BPF_NOEXIST` (linux/bpf.h): insert only a key not already there.
const BPF_NOEXIST: u64 = 1;

fn start_attribution(ebpf: &mut Ebpf, attribution: &Attribution) -> anyhow::Result<CgroupTables> {
    let stats = PerCpuHashMap::try_from(take_map(ebpf, names::CGROUP_STATS)?)?;
    let counters = PerCpuArray::try_from(take_map(ebpf, names::CGROUP_COUNTERS)?)?;
    let tables = CgroupTables::new(stats, counters)?;
    let mut tasks: HashMap<MapData, u32, u64> =
        HashMap::try_from(take_map(ebpf, names::TASK_CGROUP)?)?;
    let started = Instant::now();
    let scanned = super::cgroups::scan_tasks(attribution);
    let mut full = 0usize;
    for (tid, cgroup) in &scanned {
        if let Err(err) = tasks.insert(tid, cgroup, BPF_NOEXIST) {
            // EEXIST: a program recorded the thread since (fresher than our read).
            if !matches!(&err, aya::maps::MapError::SyscallError(call) if call.io_error.raw_os_error() == Some(libc::EEXIST))
            {
                full += 1;
            }
        }
    }
    info!(
        threads = scanned.len(),
        not_stored = full,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cgroup attribution: task table seeded from /proc"
    );
    Ok(tables)
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
    fn ring_buffer_sizes_must_be_whole_power_of_two_pages() {
        assert!(validate_ringbuf_bytes(4096).is_ok());
        assert!(validate_ringbuf_bytes(256 * 1024).is_ok());
        assert!(validate_ringbuf_bytes(5000).is_err());
        assert!(validate_ringbuf_bytes(2048).is_err());
    }
}
