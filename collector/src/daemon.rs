//! The daemon's loop: drain the ring buffer as events arrive, and every window turn the kernel's
//! counters into one [`WindowRecord`].

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use collector_common::{BlockDevStats, SlowIoEvent, counter};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use tracing::{debug, info, warn};

use crate::{
    export::{ExporterState, SharedState},
    kernel::{KernelCollector, KernelConfig, KernelLogger, ProgramStats},
    window::devices::{DeviceNames, split_kernel_dev},
    window::pressure::{PsiReader, ThrottlingReader},
    window::procfile::ReadErrors,
    window::record::{DeviceSample, ProgramWindow, WindowInputs, WindowRecord},
    window::system::{
        SyscallSampling, SystemFeatures, SystemFiles, SystemSnapshot, parse_symbolic_names,
        system_features,
    },
    window::{
        DeviceWindow,
        cgroups::{CgroupMode, CgroupTable, SampledShares, window_table},
        counter_delta,
    },
};

/// What the collection loop needs.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    pub window: Duration,
    pub kernel: KernelConfig,
    pub node: String,
    /// Where to serve /metrics, /healthz, /readyz and /state; `None` serves nothing.
    pub listen: Option<std::net::SocketAddr>,
    /// Which series /metrics serves.
    pub metrics: crate::export::MetricSet,
    /// How windows are judged; `None` only records them.
    pub assessor: Option<crate::judge::AssessorOptions>,
    /// The XDP drop list: where to attach it, where its maps are pinned.
    pub xdp: crate::xdp::XdpOptions,
    /// Automatic flood blocking (needs `xdp` interfaces and an assessor); `None`: off.
    pub auto_block: Option<crate::xdp::autoblock::AutoBlockPolicy>,
    /// Where pods get their names for the culprits; `None`: pods are named by their UID.
    pub kube_api: Option<crate::workload::kube::ApiSource>,
}

/// Slow-I/O events received from the ring buffer since the last window.
#[derive(Debug, Default, Clone)]
pub struct SlowIoTally {
    pub received: u64,
    pub per_device: HashMap<u32, u64>,
}

impl SlowIoTally {
    pub fn add(&mut self, event: &SlowIoEvent) {
        self.received += 1;
        *self.per_device.entry(event.dev).or_default() += 1;
    }
}

/// Reads one [`SlowIoEvent`] out of a ring-buffer item, `None` if it is too short (a kernel and
/// daemon built from different sources).
pub fn parse_slow_io_event(bytes: &[u8]) -> Option<SlowIoEvent> {
    if bytes.len() < size_of::<SlowIoEvent>() {
        return None;
    }
    // SAFETY: the length is checked above and SlowIoEvent is plain integers (every bit pattern
    // is valid); read_unaligned because ring-buffer items are only 8-byte aligned by contract.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SlowIoEvent>()) })
}

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
                .and_then(|tracefs| {
                    std::fs::read_to_string(tracefs.root().join("events/skb/kfree_skb/format")).ok()
                })
                .map(|format| parse_symbolic_names(&format))
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

/// Where finished windows go besides the log.
pub enum WindowSink {
    None,
    JsonLines {
        path: PathBuf,
        file: std::fs::File,
        /// Bytes of whole lines written: the length the file is cut back to when a write
        /// fails half-way.
        whole_bytes: u64,
        lines: u64,
    },
}

/// Where windows should go; opened only once the programs are loaded, so a daemon that fails
/// to start leaves no empty file behind.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    LogOnly,
    JsonLines(PathBuf),
}

impl WindowSink {
    pub fn open(spec: &SinkSpec) -> anyhow::Result<Self> {
        match spec {
            SinkSpec::LogOnly => Ok(Self::None),
            SinkSpec::JsonLines(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Ok(Self::JsonLines {
                    path: path.clone(),
                    file,
                    whole_bytes: 0,
                    lines: 0,
                })
            }
        }
    }

    fn write(&mut self, record: &WindowRecord) -> anyhow::Result<()> {
        if let Self::JsonLines {
            path,
            file,
            whole_bytes,
            lines,
        } = self
        {
            let mut line = serde_json::to_vec(record)?;
            line.push(b'\n');
            // One write per line and no buffering: a killed recorder leaves whole lines only.
            if let Err(err) = file.write_all(&line) {
                // A full file system (ENOSPC, EDQUOT) takes part of the line: cut the file back
                // to its last whole line, so whoever reads it never meets half a record.
                let cut = file.set_len(*whole_bytes).and_then(|()| {
                    std::io::Seek::seek(file, std::io::SeekFrom::Start(*whole_bytes))
                });
                let kept = match cut {
                    Ok(_) => format!("it keeps the {lines} whole window(s) written before"),
                    Err(cut) => format!(
                        "and cutting its partial last line failed too ({cut}): drop its last line"
                    ),
                };
                return Err(anyhow::Error::new(err)
                    .context(format!("writing {} failed; {kept}", path.display())));
            }
            *whole_bytes += line.len() as u64;
            *lines += 1;
        }
        Ok(())
    }
}

/// Drains the ring buffer into `tally` whenever the kernel signals data.
async fn read_slow_io_events(ring: RingBuf<MapData>, tally: Arc<Mutex<SlowIoTally>>) {
    // SAFETY: the RingBuf owns its map's file descriptor, which stays open and unchanged until
    // the RingBuf (and so the AsyncFd) is dropped.
    let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(ring) => ring,
        Err(err) => {
            warn!("cannot poll the slow-I/O ring buffer, slow-I/O events disabled: {err}");
            return;
        }
    };
    let mut names = DeviceNames::default();
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(guard) => guard,
            Err(err) => {
                warn!("slow-I/O ring buffer poll failed, events disabled: {err}");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            match parse_slow_io_event(&item) {
                Some(event) => {
                    debug!(
                        device = %names.name(event.dev),
                        latency_us = event.latency_ns / 1000,
                        op = collector_common::op::NAMES
                            .get(event.op as usize)
                            .copied()
                            .unwrap_or("?"),
                        bytes = event.bytes,
                        error = event.error,
                        "slow I/O"
                    );
                    tally.lock().expect("tally lock").add(&event);
                }
                None => warn!("short slow-I/O event of {} bytes ignored", item.len()),
            }
        }
        guard.clear_ready();
    }
}

/// Forwards aya-log records from the kernel programs to our log.
async fn forward_kernel_logs(logger: KernelLogger) {
    // SAFETY: as for the ring buffer above, the logger owns its map's file descriptor.
    let Ok(mut logger) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
    else {
        return;
    };
    loop {
        let Ok(mut guard) = logger.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// How long to run.
#[derive(Debug, Clone, Copy)]
pub enum RunFor {
    UntilSignalled,
    Windows(u64),
}

/// Loads the programs and produces windows until a signal (or `run_for`) ends it.
/// Test-only: while the file this names exists, the window loop blocks before closing a
/// window, as a stuck kernel map or `/proc` read would (the stall-aware `/healthz` test).
pub const STALL_FILE_VAR: &str = "NODESTATE_TEST_STALL_FILE";

/// Blocks the loop's thread (not just the task: a stuck read blocks it too) while `file`
/// exists.
fn stall_while_present(file: &std::path::Path) {
    if file.exists() {
        warn!(file = %file.display(), "{STALL_FILE_VAR}: the window loop stalls on purpose");
        while file.exists() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub async fn run(options: CollectOptions, sink: SinkSpec, run_for: RunFor) -> anyhow::Result<()> {
    let mut kernel = KernelCollector::load(&options.kernel)?;
    kernel.log_attach_table();
    let mut xdp = crate::xdp::attach::start(&options.xdp)?;
    let mut auto_block = match (&options.auto_block, xdp.as_mut(), &options.assessor) {
        (Some(policy), Some(xdp), Some(_)) => Some(
            crate::xdp::autoblock::AutoBlocker::start(policy.clone(), xdp)
                .context("starting automatic flood blocking")?,
        ),
        (Some(_), _, _) => {
            anyhow::bail!("automatic flood blocking needs --xdp-iface and a judged node")
        }
        (None, _, _) => None,
    };
    let mut sink = WindowSink::open(&sink)?;
    let tally = Arc::new(Mutex::new(SlowIoTally::default()));
    if let Some(ring) = kernel.take_slow_io_events() {
        tokio::spawn(read_slow_io_events(ring, tally.clone()));
    }
    if let Some(logger) = kernel.take_logger() {
        tokio::spawn(forward_kernel_logs(logger));
    }

    let shared: SharedState = Arc::new(std::sync::RwLock::new(ExporterState::new(
        options.node.clone(),
    )));
    {
        let mut state = shared.write().expect("exporter state lock");
        state.set_probes(kernel.attach_reports());
        state.metric_set = options.metrics;
        // The page at `/` draws the last hour.
        state.set_history_span(Duration::from_secs(3600), options.window);
    }
    let heartbeat = Arc::new(crate::export::liveness::Heartbeat::new(options.window));
    if let Some(listen) = options.listen {
        let registry = crate::export::registry(shared.clone(), Vec::new());
        let (bound, server) =
            crate::export::http::bind(listen, shared.clone(), registry, heartbeat.clone()).await?;
        info!(%bound, "serving /metrics, /healthz, /readyz, /state");
        tokio::spawn(async move {
            if let Err(err) = server.await {
                warn!("HTTP server stopped: {err}");
            }
        });
    }

    let mut assessor = options
        .assessor
        .as_ref()
        .map(crate::judge::Assessor::new)
        .transpose()?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    let mut attributor = options
        .assessor
        .as_ref()
        .map(|_| start_attribution(&options, CgroupMode::from(kernel.attribution())));
    let mut windows = WindowMaker::start(&mut kernel, &options.node)?;
    let mut sampler_step = start_sampled_window(&mut kernel, &options);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + options.window, options.window);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    info!(
        window_s = options.window.as_secs_f64(),
        node = %options.node,
        "collecting"
    );
    let stall_file = std::env::var_os(STALL_FILE_VAR).map(std::path::PathBuf::from);
    let mut produced = 0u64;
    heartbeat.beat();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(stall) = &stall_file {
                    stall_while_present(stall);
                }
                let slow = std::mem::take(&mut *tally.lock().expect("tally lock"));
                let record = windows.close_window(&mut kernel, slow)?;
                // After the window is closed, so nothing here can stretch it. The upkeep
                // never waits for the drop list's edit lock (a held lock postpones the TTL
                // sweep, counted) and costs the same per window whatever the number of rules
                // (see blocklist::upkeep).
                if let Some(xdp) = xdp.as_mut() {
                    match xdp.window_upkeep(crate::xdp::TOP_RULES) {
                        Ok(metrics) => {
                            if let Some(blocker) = auto_block.as_mut() {
                                blocker.metrics.active_rules = metrics.automatic_rules;
                            }
                            let mut state = shared.write().expect("exporter state lock");
                            state.xdp = Some(metrics);
                            state.xdp_interfaces = xdp
                                .attached
                                .iter()
                                .map(|a| (a.interface.clone(), a.mode.to_string()))
                                .collect();
                        }
                        Err(err) => warn!("reading the XDP drop counters: {err}"),
                    }
                }
                info!("{}", record.summary());
                sink.write(&record)?;
                // The window's per-cgroup table, handed on beside the record (the judge names
                // culprits from it); then, now and then, the sweep of dead cgroups.
                let cgroup_table = windows.take_cgroup_table();
                let cgroups = cgroup_table.clone();
                if let Some(table) = cgroup_table {
                    let counters = match kernel.attribution_counters() {
                        Some(Ok(counters)) => counters,
                        Some(Err(err)) => {
                            warn!("reading the attribution counters: {err:#}");
                            Default::default()
                        }
                        None => Default::default(),
                    };
                    let mut state = shared.write().expect("exporter state lock");
                    state.attribution = Some(crate::export::AttributionView {
                        mode: CgroupMode::from(kernel.attribution()),
                        describe: kernel.attribution().describe(),
                        window: table,
                        totals: windows.cgroup_totals().to_vec(),
                        counters,
                    });
                }
                windows.sweep_cgroups(&mut kernel);
                let verdict = assessor.as_mut().map(|assessor| (assessor.judge(&record), assessor.model_info()));
                // The culprits, from the window's per-cgroup table (none while attribution is
                // off: no one is named then).
                let attributed = match (attributor.as_mut(), cgroups, &verdict) {
                    (Some(attributor), Some(table), Some((verdict, _))) => {
                        Some(attribute(attributor, &table, verdict, &options.node))
                    }
                    _ => None,
                };
                let own_events = kernel.own_events();
                {
                    let mut state = shared.write().expect("exporter state lock");
                    state.add_window(&record);
                    state.read_errors = windows.read_errors().clone();
                    state.partial_windows_total = windows.partial_windows();
                    match own_events {
                        Ok(own) => state.own_events = Some(own),
                        Err(err) => warn!("reading the daemon's own event counts: {err:#}"),
                    }
                    if let Some((verdict, model)) = &verdict {
                        state.set_health(verdict);
                        state.model = model.clone();
                    }
                    match attributed.clone() {
                        Some((view, attribution, stats)) => {
                            state.workloads = Some(view);
                            state.culprits = attribution;
                            state.attribution_stats = stats;
                        }
                        None => state.culprits = Default::default(),
                    }
                }
                if let (Some(blocker), Some(xdp), Some((verdict, _))) =
                    (auto_block.as_mut(), xdp.as_mut(), &verdict)
                {
                    blocker.window(xdp, verdict.state.as_str(), &verdict.explanation, record.window_s);
                    shared.write().expect("exporter state lock").auto_block = Some(blocker.metrics);
                }
                if let Some((verdict, _)) = &verdict {
                    let top = verdict.explanation.first().map(|(f, z)| format!("{f} z={z:+.1}")).unwrap_or_default();
                    let culprits = attributed
                        .as_ref()
                        .map(|(_, attribution, _)| culprits_line(attribution))
                        .unwrap_or_default();
                    info!(state = %verdict.state, score = verdict.score, threshold = verdict.threshold, anomalous = verdict.anomalous, "health {top}{culprits}");
                }
                // Last: the sampled hooks' time on must not be the time this daemon spends
                // closing a window, when it competes with the node's work for a CPU.
                sampler_step = start_sampled_window(&mut kernel, &options);
                heartbeat.beat();
                produced += 1;
                if let RunFor::Windows(limit) = run_for
                    && produced >= limit
                {
                    break;
                }
            }
            _ = tokio::time::sleep_until(sampler_step.map_or_else(tokio::time::Instant::now, |step| step.at().into())), if sampler_step.is_some() => {
                sampler_step = sampler_turn(&mut kernel, &options, sampler_step.take());
            }
            _ = sighup.recv() => {
                if let Some(assessor) = assessor.as_mut() {
                    let reloaded = assessor.reload();
                    let mut state = shared.write().expect("exporter state lock");
                    state.model = assessor.model_info();
                    state.model_reload_failures += u64::from(!reloaded);
                }
            }
            _ = sigterm.recv() => { info!("SIGTERM: detaching and exiting"); break; }
            _ = sigint.recv() => { info!("SIGINT: detaching and exiting"); break; }
        }
    }
    if let Some(mut xdp) = xdp.take() {
        xdp.detach_all();
        info!("XDP drop list detached and its pinned links removed (its rules stay pinned)");
    }
    kernel.detach();
    Ok(())
}

/// The resolver and culprit ranking, on the hierarchy this node names cgroups by.
fn start_attribution(
    options: &CollectOptions,
    mode: CgroupMode,
) -> crate::judge::culprits::Attributor {
    use crate::workload::{ContainerNames, PodNames, Resolver, paths};
    let cgroup_fs = std::path::Path::new(paths::CGROUP_FS);
    let root = paths::hierarchy_root(mode, cgroup_fs);
    info!(?mode, root = ?root, node = %options.node, "attribution: cgroup ids are named from this hierarchy");
    let pods = PodNames::default();
    if let Some(source) = options.kube_api.clone() {
        tokio::spawn(crate::workload::kube::watch_pods(
            source,
            options.node.clone(),
            pods.clone(),
        ));
    }
    crate::judge::culprits::Attributor::new(Resolver::new(
        paths::CgroupPaths::new(root),
        pods,
        ContainerNames::system(),
    ))
}

/// Names the window's workloads and ranks its culprits: the `/workloads` view, the
/// attribution, and the resolver's counters.
fn attribute(
    attributor: &mut crate::judge::culprits::Attributor,
    table: &crate::window::cgroups::CgroupTable,
    verdict: &crate::judge::Verdict,
    node: &str,
) -> (
    crate::export::WorkloadsView,
    crate::judge::culprits::Attribution,
    crate::export::AttributionStats,
) {
    let (rows, attribution) = attributor.window(table, verdict);
    let view = crate::export::WorkloadsView {
        node: node.to_string(),
        window_s: table.window_s,
        state: verdict.state.to_string(),
        workloads: rows
            .iter()
            .map(|row| crate::export::WorkloadRow {
                workload: row.workload.clone(),
                cgroups: row.cgroups,
                rates: crate::export::signal_rates(&row.delta, table.window_s),
            })
            .collect(),
        unattributed: crate::export::signal_rates(&table.unattributed, table.window_s),
        refused: crate::export::signal_rates(&table.refused, table.window_s),
    };
    let resolver = &attributor.resolver;
    let stats = crate::export::AttributionStats {
        walk: resolver.paths.stats,
        container_name_errors: resolver.containers.read_errors,
        pod_name_fallbacks: resolver.pod_name_fallbacks,
        kube_api_errors: resolver.pods.api_errors(),
        tracked_workloads: attributor.ranker.tracked() as u64,
    };
    (view, attribution.unwrap_or_default(), stats)
}

/// `; culprits: 87% of I/O issued: shop/db-0 (postgres), …; victims: …` for the health log
/// line, or nothing when no one is named.
pub fn culprits_line(attribution: &crate::judge::culprits::Attribution) -> String {
    let join = |list: &[crate::judge::culprits::Blame]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = String::new();
    if !attribution.culprits.is_empty() {
        line.push_str(&format!("; culprits: {}", join(&attribution.culprits)));
    }
    if !attribution.victims.is_empty() {
        line.push_str(&format!("; victims: {}", join(&attribution.victims)));
    }
    line
}

/// A window starts: the sampled hooks go (back) on, and the sampler's probe is due.
fn start_sampled_window(
    kernel: &mut KernelCollector,
    options: &CollectOptions,
) -> Option<crate::kernel::sampler::SamplerStep> {
    if let Err(err) = kernel.resume_sampled_hooks() {
        warn!("{err:#}");
    }
    if !kernel.has_sampled_hooks() {
        return None;
    }
    let counts = kernel.sampled_event_counts().ok()?;
    crate::kernel::sampler::window_started(
        options.kernel.hook_budget,
        options.window,
        Instant::now(),
        counts,
    )
}

/// The sampler's step is due: look at the events of the hooks still on and decide when the
/// costly ones go off; at that time, take them off.
fn sampler_turn(
    kernel: &mut KernelCollector,
    options: &CollectOptions,
    step: Option<crate::kernel::sampler::SamplerStep>,
) -> Option<crate::kernel::sampler::SamplerStep> {
    use crate::kernel::sampler::SamplerStep;
    let hooked = kernel.sampled_groups();
    let (groups, so_far) = match step? {
        SamplerStep::Look { window: so_far, .. } => {
            let counts = kernel.sampled_event_counts().ok()?;
            let now = Instant::now();
            let next = crate::kernel::sampler::look(
                options.kernel.hook_budget,
                options.window,
                so_far,
                now,
                &counts,
                hooked,
            );
            match next {
                Some(SamplerStep::Off { at, groups, window }) => {
                    debug!(
                        on_s = at.duration_since(window.start()).as_secs_f64(),
                        ?groups,
                        "sampled hooks on for part of this window only"
                    );
                    if at > now {
                        return next;
                    }
                    (groups, window)
                }
                _ => return next,
            }
        }
        SamplerStep::Off { groups, window, .. } => (groups, window),
    };
    kernel.pause_hook_groups(groups);
    crate::kernel::sampler::went_off(options.window, so_far, groups, Instant::now(), hooked)
}

/// The node's name: `NODE_NAME` (the DaemonSet sets it from the downward API), else the
/// hostname.
pub fn node_name() -> String {
    if let Ok(name) = std::env::var("NODE_NAME")
        && !name.trim().is_empty()
    {
        return name.trim().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_io_events_parse_and_short_items_are_refused() {
        let event = SlowIoEvent {
            dev: 7 << 20,
            op: 1,
            sector: 42,
            latency_ns: 12_000_000,
            bytes: 4096,
            error: -5,
        };
        // SAFETY: viewing a plain-integer struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&event as *const SlowIoEvent).cast::<u8>(),
                size_of::<SlowIoEvent>(),
            )
        };
        assert_eq!(parse_slow_io_event(bytes), Some(event));
        assert_eq!(parse_slow_io_event(&bytes[..bytes.len() - 1]), None);
        let mut tally = SlowIoTally::default();
        tally.add(&event);
        tally.add(&event);
        assert_eq!(tally.received, 2);
        assert_eq!(tally.per_device[&(7 << 20)], 2);
    }
}
