//! What every program attached costs the workloads it watches: a syscall-heavy, a
//! context-switch-heavy and an I/O-heavy workload, each without the collector, with only an
//! empty program on the syscall exit tracepoint (the floor any per-syscall hook pays), and
//! with the full program set, alternated in one run; and which hooks cost most, from the
//! kernel's BPF run-time statistics that the collector records per window.

mod stretches;
mod workload;

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    block::{LoopDevice, WorkqueuesOn, median, start_collector, stop, workload_cpu},
    system::{bpf, machine_state, process_cpu_seconds},
};
use stretches::{Config, Stretch, median_interval, round_configs, sandwiched_ratios, summary};
use workload::{RunningWorkload, SLICE_MS, epoch_ms};
pub use workload::{WorkloadKind, run_workload};

/// Rounds per workload when `--overhead-rounds` does not say. Each round measures the
/// collector as shipped twice and one other configuration once (they take turns), each
/// between two stretches without it: a stretch of 5 s here spreads ±4% from the next one
/// with nothing changed (the host's noise, in bursts of a second or more), and 2% can only
/// be told from that with the median of many.
pub const DEFAULT_ROUNDS: usize = 16;
/// Each stretch counts for this long: the daemon's default window, so that every stretch
/// with a collector holds one window's whole cycle of the hook sampler (on at the window's
/// start, off for the rest) at whatever phase it falls, and five of the 1 s windows.
const SECONDS: u64 = 5;
/// After a configuration is in place (a collector says it is collecting), how long before
/// its stretch counts: the sampler's first look at a window's load comes within it.
const WARM_UP_S: u64 = 1;

/// After a collector stops, how long before the next stretch counts: the kernel frees its
/// maps and links in work queued after the exit (on the workload's CPU, where the bench puts
/// the unbound workqueues), which is no configuration's cost.
const TEARDOWN_MS: u64 = 1000;

/// Before it starts, the bench waits up to this long for the 1-minute load average to fall
/// below [`QUIET_LOAD`].
const QUIET_WAIT_S: u64 = 180;
const QUIET_LOAD: f64 = 0.5;
/// An empty program (`r0 = 0; exit`) on the raw tracepoint `sys_exit`, loaded with the bpf(2)
/// syscall directly: what attaching any syscall hook costs before the program does anything.
/// Enabling a syscall tracepoint moves every syscall of the node onto the kernel's slow path,
/// and the tracepoint then dispatches to the program. Detached when dropped.
struct EmptySyscallHook {
    _link: OwnedFd,
    _program: OwnedFd,
}

impl EmptySyscallHook {
    fn attach() -> anyhow::Result<Self> {
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
        const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
        // mov64 r0, 0 (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT).
        let instructions: [u64; 2] = [0xb7, 0x95];
        let license = c"GPL";
        // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license; rest zero.
        let mut attr = [0u64; 16];
        attr[0] = u64::from(BPF_PROG_TYPE_RAW_TRACEPOINT) | (instructions.len() as u64) << 32;
        attr[1] = instructions.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        let program = bpf(BPF_PROG_LOAD, &mut attr).context("loading an empty program")?;
        let name = c"sys_exit";
        // BPF_RAW_TRACEPOINT_OPEN: name, prog_fd.
        let mut attr = [0u64; 16];
        attr[0] = name.as_ptr() as u64;
        attr[1] = u64::from(program as u32);
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        let program = unsafe { OwnedFd::from_raw_fd(program) };
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
            .context("attaching an empty program to sys_exit")?;
        Ok(Self {
            // SAFETY: as above.
            _link: unsafe { OwnedFd::from_raw_fd(link) },
            _program: program,
        })
    }
}
/// User + system CPU time of process `pid` so far, in seconds (0 if it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    process_cpu_seconds(pid).unwrap_or(0.0)
}
/// The workloads `bench overhead` can measure (`--overhead-workloads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverheadWorkload {
    Getppid,
    Pread,
    PingPong,
    Fio,
}

pub const ALL_WORKLOADS: [OverheadWorkload; 4] = [
    OverheadWorkload::Getppid,
    OverheadWorkload::Pread,
    OverheadWorkload::PingPong,
    OverheadWorkload::Fio,
];

/// The workloads' names as `--overhead-workloads` spells them.
pub fn workload_names(workloads: &[OverheadWorkload]) -> Vec<String> {
    workloads
        .iter()
        .filter_map(|kind| {
            Some(
                clap::ValueEnum::to_possible_value(kind)?
                    .get_name()
                    .to_string(),
            )
        })
        .collect()
}

struct Workload {
    kind: OverheadWorkload,
    name: &'static str,
    unit: &'static str,
    /// Starts it, to run until finished.
    start: Box<dyn Fn() -> anyhow::Result<RunningWorkload>>,
}

/// Sums the per-program run counts and run times of every window in a recording.
fn program_costs(recording: &str) -> BTreeMap<String, (u64, u64)> {
    let mut costs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in recording.lines() {
        let Ok(window) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(programs) = window["programs"].as_object() {
            for (name, program) in programs {
                let entry = costs.entry(name.clone()).or_default();
                entry.0 += program["runs"].as_u64().unwrap_or(0);
                entry.1 += program["run_time_ns"].as_u64().unwrap_or(0);
            }
        }
    }
    costs
}
/// Share of each window a group of sampled hooks was on (`field`: its `*_sample_fraction`),
/// median over the windows of a recording that ended between `from` and `to` (ms since the
/// epoch): those the workload filled.
fn median_sample_fraction(recording: &str, field: &str, from: u128, to: u128) -> f64 {
    let fractions: Vec<f64> = recording
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|window| {
            window["unix_ms"]
                .as_u64()
                .is_some_and(|ms| (from..=to).contains(&u128::from(ms)))
        })
        .filter_map(|window| window[field].as_f64())
        .collect();
    if fractions.is_empty() {
        f64::NAN
    } else {
        median(&fractions)
    }
}

pub fn run(rounds: usize, selected: &[OverheadWorkload]) -> anyhow::Result<String> {
    if rounds == 0 {
        bail!("--overhead-rounds must be at least 1");
    }
    if selected.is_empty() {
        bail!("--overhead-workloads names none");
    }
    let (mut load_before, others) = machine_state();
    if !others.is_empty() {
        bail!(
            "another collector is running (pid {}): its programs would be attached during the \
             stretches without ours; stop it first",
            others.join(", ")
        );
    }
    // The build that `cargo xtask bench` just ran is still in the load average (it decays
    // over minutes); other work is what the figure should tell.
    let quiet_by = Instant::now() + Duration::from_secs(QUIET_WAIT_S);
    while load_before > QUIET_LOAD && Instant::now() < quiet_by {
        std::thread::sleep(Duration::from_secs(5));
        load_before = machine_state().0;
    }
    let cpu = workload_cpu();
    let _workqueues = WorkqueuesOn::cpu(cpu)?;
    let device = LoopDevice::new()?;
    let io_path = device.path.clone();
    let cached_path =
        std::env::temp_dir().join(format!("nodestate-overhead-{}.dat", std::process::id()));
    fs::write(&cached_path, vec![1u8; 1 << 20])?;
    let in_child = move |kind: WorkloadKind, file: Option<std::path::PathBuf>| {
        Box::new(move || RunningWorkload::start(cpu, kind, file.as_deref()))
    };
    let workloads = [
        Workload {
            kind: OverheadWorkload::Getppid,
            name: "syscall-heavy (getppid loop)",
            unit: "calls/s",
            start: in_child(WorkloadKind::Getppid, None),
        },
        Workload {
            kind: OverheadWorkload::Pread,
            name: "syscall-heavy, realistic (4 KiB pread of a cached file)",
            unit: "reads/s",
            start: in_child(WorkloadKind::Pread, Some(cached_path.clone())),
        },
        Workload {
            kind: OverheadWorkload::PingPong,
            name: "context-switch-heavy (pipe ping-pong, both threads on one CPU)",
            unit: "round trips/s",
            start: in_child(WorkloadKind::PingPong, None),
        },
        Workload {
            kind: OverheadWorkload::Fio,
            name: "I/O-heavy (fio 4 KiB randrw, direct, loop device in tmpfs)",
            unit: "IOPS",
            start: Box::new(move || RunningWorkload::start_fio(cpu, &io_path)),
        },
    ];
    let recording =
        std::env::temp_dir().join(format!("nodestate-overhead-{}.jsonl", std::process::id()));
    let recording_arg = recording.to_string_lossy().into_owned();
    let mut rows = Vec::new();
    let mut costs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut worst: f64 = 0.0;
    let mut worst_plausible: f64 = 0.0;
    let mut worst_one_second: f64 = 0.0;
    let counted = |config: Config| {
        let from = epoch_ms();
        std::thread::sleep(Duration::from_secs(SECONDS));
        Stretch {
            config,
            from,
            to: epoch_ms(),
        }
    };
    for workload in workloads
        .iter()
        .filter(|workload| selected.contains(&workload.kind))
    {
        eprintln!("  {}: {rounds} rounds", workload.name);
        let running = (workload.start)()?;
        // Its own start (fio's first I/O, the page cache) is nobody's cost.
        std::thread::sleep(Duration::from_secs(2));
        let mut stretches = vec![counted(Config::Without)];
        let mut daemon_cpu = Vec::new();
        for round in 0..rounds {
            for config in round_configs(round) {
                match config {
                    Config::Without => unreachable!("rounds hold configurations only"),
                    Config::Floor => {
                        let hook = EmptySyscallHook::attach()?;
                        std::thread::sleep(Duration::from_secs(WARM_UP_S));
                        stretches.push(counted(config));
                        drop(hook);
                    }
                    Config::AlwaysOn
                    | Config::Default
                    | Config::OneSecondWindows
                    | Config::AttributionOff => {
                        let mut args = vec!["run", "--listen", "127.0.0.1:0"];
                        match config {
                            Config::AlwaysOn => args.extend(["--hook-budget", "0"]),
                            Config::OneSecondWindows => args.extend(["--window", "1s"]),
                            Config::AttributionOff => args.extend(["--cgroup-attribution", "off"]),
                            _ => {}
                        }
                        // The workload is running as the daemon starts, as on a node whose
                        // load was there before it.
                        let collector = start_collector(&args)?;
                        std::thread::sleep(Duration::from_secs(WARM_UP_S));
                        let cpu_before = cpu_seconds(collector.id());
                        let started = Instant::now();
                        stretches.push(counted(config));
                        if config == Config::Default {
                            daemon_cpu.push(
                                (cpu_seconds(collector.id()) - cpu_before)
                                    / started.elapsed().as_secs_f64(),
                            );
                        }
                        stop(collector)?;
                    }
                }
                std::thread::sleep(Duration::from_millis(TEARDOWN_MS));
                stretches.push(counted(Config::Without));
            }
        }
        // One more collector with statistics in every window, for the per-hook costs (which
        // then include the statistics' own clock reads) and the share of time the hooks were
        // on; the windows that end from 4 s on (the first is 5 s) are whole ones.
        let collector = start_collector(&[
            "record",
            "--duration",
            "10m",
            "--program-stats",
            "always",
            "--out",
            &recording_arg,
        ])?;
        let windows_from = epoch_ms() + 4000.0;
        std::thread::sleep(Duration::from_millis(2 * SECONDS * 1000 + 500));
        let windows_to = epoch_ms();
        stop(collector)?;
        let slices = running.finish()?;
        let (without, ratios) = sandwiched_ratios(&stretches, &slices)?;
        let of = |config: Config| {
            ratios
                .get(&(config as usize))
                .map_or(&[][..], Vec::as_slice)
        };
        let shipped = of(Config::Default);
        let (ratio, low, high) = summary(shipped);
        let (interval_low, interval_high) = median_interval(shipped);
        worst = worst.max(1.0 - ratio);
        worst_plausible = worst_plausible.max(1.0 - interval_low);
        let cell = |config: Config| {
            let ratios = of(config);
            if ratios.is_empty() {
                return "—".to_string();
            }
            let (median, low, high) = summary(ratios);
            format!("{median:.3} ({low:.3}–{high:.3}; {})", ratios.len())
        };
        if !of(Config::OneSecondWindows).is_empty() {
            worst_one_second = worst_one_second.max(1.0 - summary(of(Config::OneSecondWindows)).0);
        }
        // The attribution's own share: how much more the workload lost to the collector as
        // shipped than to the same collector without per-cgroup counting, in points.
        let attribution_share = if of(Config::AttributionOff).is_empty() {
            "—".to_string()
        } else {
            let off = summary(of(Config::AttributionOff)).0;
            format!("{:+.1} points", (off - ratio) * 100.0)
        };

        let text = fs::read_to_string(&recording).context("reading the recording")?;
        for (name, (runs, ns)) in program_costs(&text) {
            let entry = costs.entry(name).or_default();
            entry.0 += runs;
            entry.1 += ns;
        }
        let on_share: Vec<String> = ["syscall", "sched", "block"]
            .iter()
            .map(|group| {
                let field = format!("{group}_sample_fraction");
                let share =
                    median_sample_fraction(&text, &field, windows_from as u128, windows_to as u128);
                format!("{:.0}%", share * 100.0)
            })
            .collect();
        let on_share = on_share.join(" / ");
        eprintln!(
            "  {}: {:.0} {} without; as shipped {ratio:.3} ({low:.3}–{high:.3}; median within \
             {interval_low:.3}–{interval_high:.3}); empty hook {}, always on {}, 1 s windows \
             {}; hooks on {on_share} of each window (syscall / sched / block)",
            workload.name,
            median(&without),
            workload.unit,
            cell(Config::Floor),
            cell(Config::AlwaysOn),
            cell(Config::OneSecondWindows),
        );
        rows.push(format!(
            "| {} | {:.0} {} | {} | {} | **{ratio:.3}** ({low:.3}–{high:.3}; {}) | \
             **{:+.1}%** ({:+.1}% to {:+.1}%) | {} | {attribution_share} | {on_share} | {:.1}% | \
             {} |",
            workload.name,
            median(&without),
            workload.unit,
            cell(Config::Floor),
            cell(Config::AlwaysOn),
            shipped.len(),
            (ratio - 1.0) * 100.0,
            (interval_low - 1.0) * 100.0,
            (interval_high - 1.0) * 100.0,
            cell(Config::AttributionOff),
            median(&daemon_cpu) * 100.0,
            cell(Config::OneSecondWindows),
        ));
    }
    let _ = fs::remove_file(&recording);
    let _ = fs::remove_file(&cached_path);

    let mut by_cost: Vec<_> = costs
        .into_iter()
        .filter(|(_, (runs, _))| *runs > 0)
        .collect();
    by_cost.sort_by_key(|(_, (_, ns))| std::cmp::Reverse(*ns));
    let total_ns: u64 = by_cost.iter().map(|(_, (_, ns))| ns).sum();
    let hooks: Vec<String> = by_cost
        .iter()
        .take(8)
        .map(|(name, (runs, ns))| {
            format!(
                "| `{name}` | {runs} | {:.0} | {:.0}% |",
                *ns as f64 / *runs as f64,
                *ns as f64 / total_ns.max(1) as f64 * 100.0
            )
        })
        .collect();
    // Only the load before counts: during the run, the workloads are the load.
    let busy = if load_before > QUIET_LOAD {
        format!(
            " **The machine was not idle** (1-minute load average {load_before:.2} before the \
             run, after waiting up to {QUIET_WAIT_S} s for it to fall below {QUIET_LOAD}): other \
             work shared the CPUs, so read the figures as approximate."
        )
    } else {
        format!(" 1-minute load average {load_before:.2} before the run: a quiet machine.")
    };
    let verdict = format!(
        "{} by the median of the stretches (the worst: {:.1}%); the worst slowdown the 95% \
         intervals allow: {:.1}%. With 1 s windows the worst median slowdown is {:.1}%.",
        if worst < 0.02 {
            "Every workload slowed by less than 2% as shipped"
        } else {
            "**Not every workload stayed under 2%** as shipped"
        },
        worst * 100.0,
        worst_plausible * 100.0,
        worst_one_second * 100.0
    );
    let samples = rounds * 2;
    let (command, only) = if selected == ALL_WORKLOADS {
        (
            format!("cargo xtask bench overhead --overhead-rounds {rounds}"),
            String::new(),
        )
    } else {
        let names = workload_names(selected);
        (
            format!(
                "cargo xtask bench overhead --overhead-rounds {rounds} --overhead-workloads {}",
                names.join(",")
            ),
            format!(" ({} alone)", names.join(", ")),
        )
    };
    Ok(format!(
        "## Every program attached: cost to the workloads it watches{only}\n\n\
         `{command}`: each workload \
         runs without a break on CPU {cpu} alone, in a process of its own (fio with the \
         kernel's unbound workqueues, the loop device's worker among them, on the same CPU: \
         where the scheduler puts the threads otherwise changes a workload's speed by far more \
         than 2%), and reports what it did every {SLICE_MS} ms. Meanwhile the bench starts and \
         stops what runs beside it, and counts {SECONDS} s stretches: stretches without the \
         collector alternate with stretches of one configuration each, a round being the \
         collector as shipped, one other configuration (in turn), the collector as shipped \
         again. The configurations: with only an empty program on the raw tracepoint \
         `sys_exit` (the floor any syscall hook pays: enabling a syscall tracepoint puts every \
         syscall on the kernel's slow path); with `collector run --hook-budget 0` (every \
         program attached and on all the time); with `collector run` as it ships (every \
         program attached, 5 s windows; the busiest hooks, syscall exit, scheduler and block, \
         share a budget of 0.5% of one CPU: those whose events would cost more are on for \
         only part of each window, those whose events are cheap stay on, see \
         collector/src/kernel/sampler.rs; program statistics one window in 12); and the same with \
         `--window 1s` (the sampler takes hooks off and puts them back five times as often, \
         and the kernel interrupts every CPU to patch the tracepoints each time); and with \
         `--cgroup-attribution off` (as shipped but without the per-cgroup counting that \
         names culprits: its paths are pruned at load; the attribution's share is how many \
         more points of the workload's rate the shipped collector costs than this one, \
         medians against medians, so within the stretches' noise it can come out negative). A \
         configuration's stretch starts {WARM_UP_S} s after it is in place (a collector has \
         said it is collecting), so it holds one whole 5 s window's cycle of the sampler, and \
         five 1 s ones; a stretch without starts {TEARDOWN_MS} ms after a collector stops \
         (the kernel frees its maps in work queued after the exit). Ratio = a stretch's rate \
         / the mean of the stretches without either side of it (this cancels the host's \
         drift; on this machine a 5 s stretch is ±4% from the next with nothing changed, in \
         bursts that last seconds); the median of a configuration's stretches, with the \
         lowest and highest in brackets and how many there were (1.000 = no cost). Change: \
         the shipped collector's median, with its 95% confidence interval (order statistics, \
         no assumption about the noise's distribution; neighbouring stretches share a \
         stretch without, so read it as approximate). Hooks on: the median share of each \
         window the syscall / scheduler / block hooks were on, from one more collector as \
         shipped after the rounds. Daemon CPU: the collector's own user + system time during \
         its stretches, as a share of one CPU (median, as shipped; it runs on any CPU).{busy}\n\n\
         | workload | without | empty `sys_exit` program | every hook always on | collector \
         as shipped ({samples} stretches) | change (95% interval) | attribution off | \
         attribution's share | hooks on | daemon CPU | as shipped, 1 s windows |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{}\n\n{verdict}\n\n\
         Which hooks cost most: that one more collector per workload had `--program-stats \
         always` (kernel BPF statistics: runs and mean ns per run, which includes the \
         statistics' own ~90 ns; the share is of the total program time; it leaves out what \
         the kernel spends before a program runs, such as building a classic tracepoint's \
         record):\n\n\
         | program | runs | ns/run | share |\n|---|---|---|---|\n{}\n",
        rows.join("\n"),
        hooks.join("\n")
    ))
}
