//! The kernel side as the daemon sees it: load the object, attach each program by the best hook
//! this kernel offers, and hand out the maps as typed handles.

use std::{collections::BTreeMap, fmt};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePoint,
};
use collector_common::{BlockDevStats, BlockTracepointLayout, counter, names};
use tracing::{info, warn};

use crate::{privileges, tracefs::Tracefs};

/// The compiled kernel programs, built by build.rs (aya-build) and embedded so the daemon is one
/// file to ship.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf"));

/// Forwards aya-log records from the kernel programs to the `log` facade (and so to tracing).
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// What the daemon asks of the kernel side.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Completions at or over this go to user space as slow-I/O events.
    pub slow_io_threshold_ns: u64,
    /// Size of the slow-I/O ring buffer: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            slow_io_threshold_ns: 10_000_000,
            ringbuf_bytes: 256 * 1024,
        }
    }
}

/// How one signal was hooked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Attached,
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
    pub kind: &'static str,
    pub outcome: HookOutcome,
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::Missing => f.write_str("missing on this kernel, skipped"),
            Self::Failed(err) => write!(f, "failed: {err}"),
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
    logger: Option<KernelLogger>,
    attached: Vec<AttachReport>,
}

/// The tracepoint record layout of the block events on the running kernel.
pub fn block_layout(tracefs: &Tracefs) -> anyhow::Result<BlockTracepointLayout> {
    let issue = tracefs.event_format("block", "block_rq_issue")?;
    let complete = tracefs.event_format("block", "block_rq_complete")?;
    Ok(BlockTracepointLayout {
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
    })
}

impl KernelCollector {
    /// Checks privileges and tracefs, loads the object and attaches every program it can.
    /// A hook missing from this kernel is reported, not fatal.
    pub fn load(config: &KernelConfig) -> anyhow::Result<Self> {
        privileges::check_can_load_programs()?;
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

        let mut ebpf = EbpfLoader::new()
            .override_global(names::BLOCK_LAYOUT, &layout_value, true)
            .override_global(
                names::SLOW_IO_THRESHOLD_NS,
                &config.slow_io_threshold_ns,
                true,
            )
            .map_max_entries(names::SLOW_IO_EVENTS, config.ringbuf_bytes)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object into the kernel")?;

        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                warn!("kernel-side log forwarding unavailable: {err}");
                None
            }
        };

        let mut attached = Vec::new();
        for (signal, program, category, name) in [
            (
                "block I/O issue",
                names::BLOCK_RQ_ISSUE,
                "block",
                "block_rq_issue",
            ),
            (
                "block I/O completion",
                names::BLOCK_RQ_COMPLETE,
                "block",
                "block_rq_complete",
            ),
        ] {
            let outcome = if layout.is_none() || !tracefs.has_event(category, name) {
                HookOutcome::Missing
            } else {
                match attach_tracepoint(&mut ebpf, program, category, name) {
                    Ok(()) => HookOutcome::Attached,
                    Err(err) => HookOutcome::Failed(format!("{err:#}")),
                }
            };
            attached.push(AttachReport {
                signal,
                program,
                hook: format!("tracepoint {category}:{name}"),
                kind: "tracepoint",
                outcome,
            });
        }

        let block_dev_stats =
            PerCpuHashMap::try_from(take_map(&mut ebpf, names::BLOCK_DEV_STATS)?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, names::COUNTERS)?)?;
        let slow_io_events = RingBuf::try_from(take_map(&mut ebpf, names::SLOW_IO_EVENTS)?)?;
        Ok(Self {
            ebpf: Some(ebpf),
            block_dev_stats,
            counters,
            slow_io_events: Some(slow_io_events),
            logger,
            attached,
        })
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
        }
    }

    /// Cumulative counters of every block device seen, summed over CPUs, by kernel `dev_t`.
    pub fn block_snapshot(&self) -> anyhow::Result<BTreeMap<u32, BlockDevStats>> {
        let mut devices = BTreeMap::new();
        for entry in self.block_dev_stats.iter() {
            let (dev, per_cpu) = entry.context("reading the block device table")?;
            devices.insert(dev, crate::window::sum_cpus(per_cpu.iter()));
        }
        Ok(devices)
    }

    /// The kernel side's own counters (see `collector_common::counter`), summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<[u64; counter::COUNT as usize]> {
        let mut totals = [0u64; counter::COUNT as usize];
        for (index, total) in totals.iter_mut().enumerate() {
            let per_cpu = self
                .counters
                .get(&(index as u32), 0)
                .context("reading the kernel counters")?;
            *total = per_cpu.iter().sum();
        }
        Ok(totals)
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
        self.ebpf = None;
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> anyhow::Result<()> {
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?
        .try_into()?;
    tracepoint
        .load()
        .with_context(|| format!("verifier rejected {program}"))?;
    tracepoint
        .attach(category, name)
        .with_context(|| format!("attaching {program} to {category}:{name}"))?;
    Ok(())
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
