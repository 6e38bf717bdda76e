//! The daemon's loop: drain the ring buffer as events arrive, and every window turn the kernel's
//! counters into one [`WindowRecord`].
//!
//! One job a file: `window_maker.rs` turns the kernel's counters into window records;
//! `events.rs` drains what the kernel programs push (slow-I/O events, their log records);
//! `sink.rs` writes the windows to a file; `attribution.rs` names the workloads and culprits
//! of a judged window; `sampling.rs` turns the costly hooks off and on within a window. Here:
//! the options, and the loop that starts everything, wires a window through the stages and
//! detaches at the end.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    export::{ExporterState, SharedState},
    kernel::{KernelCollector, KernelConfig},
    window::cgroups::CgroupMode,
};

mod attribution;
mod events;
mod sampling;
mod sink;
mod window_maker;

pub use attribution::culprits_line;
pub use events::{SlowIoTally, parse_slow_io_event};
pub use sink::{SinkSpec, WindowSink};
pub use window_maker::{CGROUP_SWEEP_EVERY, WindowMaker};

use attribution::{attribute, start_attribution};
use events::{forward_kernel_logs, read_slow_io_events};
use sampling::{sampler_turn, start_sampled_window};

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

/// How long to run.
#[derive(Debug, Clone, Copy)]
pub enum RunFor {
    UntilSignalled,
    Windows(u64),
}

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

/// Loads the programs and produces windows until a signal (or `run_for`) ends it.
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
                let accounting = windows.accounting(&kernel);
                {
                    let mut state = shared.write().expect("exporter state lock");
                    state.add_window(&record);
                    state.read_errors = windows.read_errors().clone();
                    state.partial_windows_total = windows.partial_windows();
                    state.own_events = Some(accounting.own);
                    state.kernel_accounting = Some(accounting);
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
    // Last: the save waits for a disk that may be slow (an I/O incident), and the programs
    // must be off the node's hooks before the grace period's SIGKILL can come.
    if let Some(assessor) = assessor.take() {
        assessor.finish();
    }
    Ok(())
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
