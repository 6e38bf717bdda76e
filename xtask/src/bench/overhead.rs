//! What every program attached costs the workloads it watches: a syscall-heavy, a
//! context-switch-heavy and an I/O-heavy workload, each without the collector, with only an
//! empty program on the syscall exit tracepoint (the floor any per-syscall hook pays), and
//! with the full program set, alternated in one run; and which hooks cost most, from the
//! kernel's BPF run-time statistics that the collector records per window.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::fs::FileExt as _,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::block::{
    LoopDevice, WorkqueuesOn, fio_iops, median, pinned, start_collector, stop, workload_cpu,
};

/// Rounds for the CPU-bound workloads; the I/O one gets more: its runs spread twice as
/// wide here (±10% from one run to the next with nothing else changed), and 2% can only be
/// told from noise with the median of many.
const ROUNDS: usize = 14;
const IO_ROUNDS: usize = 24;
/// Each run counts for this long: the daemon's default window, so that every run holds one
/// window's whole cycle of the hook sampler (on at the window's start, off for the rest) at
/// whatever phase it falls, and five of the 1 s windows.
const SECONDS: u64 = 5;
/// Before it counts, each workload runs this long with the configuration in place: the
/// sampler's first look at a window's load comes within it.
const WARM_UP_S: u64 = 1;

/// After a collector stops, how long before the next run: the kernel frees its maps and
/// links in work queued after the exit (on the workload's CPU, where the bench puts the
/// unbound workqueues), which is no run's cost.
const TEARDOWN_MS: u64 = 1000;

/// The CPU-bound workloads, each run in a process of its own (`cargo xtask bench-workload`):
/// a workload shares no address space with the bench, whose threads (the collector's log
/// drain) would otherwise make the kernel interrupt the workload's CPU whenever they change
/// their memory mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// getppid(2) in a loop: the raw syscall tracepoint's worst case.
    Getppid,
    /// 4 KiB pread(2)s of a page-cached file (`--file`): a syscall that does some work, as
    /// most do.
    Pread,
    /// Two threads passing a byte back and forth through pipes: every round trip is two
    /// context switches and two wake-ups.
    PingPong,
}

/// Runs a workload for `warm_up` uncounted, then `seconds` counted; prints operations per
/// second of the counted part.
pub fn run_workload(
    kind: WorkloadKind,
    file: Option<&std::path::Path>,
    warm_up: Duration,
    seconds: Duration,
) -> anyhow::Result<()> {
    let rate = match kind {
        WorkloadKind::Getppid => counted_rate(warm_up, seconds, || {
            for _ in 0..1000 {
                // SAFETY: getppid has no preconditions.
                std::hint::black_box(unsafe { libc::getppid() });
            }
            Ok(1000)
        })?,
        WorkloadKind::Pread => {
            let path = file.context("pread needs --file")?;
            let file =
                fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut buffer = vec![0u8; 4096];
            counted_rate(warm_up, seconds, || {
                for i in 0..100u64 {
                    file.read_at(&mut buffer, (i % 256) * 4096)?;
                }
                Ok(100)
            })?
        }
        WorkloadKind::PingPong => {
            let (mut ping_rx, mut ping_tx) = std::io::pipe()?;
            let (mut pong_rx, mut pong_tx) = std::io::pipe()?;
            let echo = std::thread::spawn(move || {
                let mut byte = [0u8; 1];
                while ping_rx.read_exact(&mut byte).is_ok() {
                    if pong_tx.write_all(&byte).is_err() {
                        break;
                    }
                }
            });
            let mut byte = [0u8; 1];
            let rate = counted_rate(warm_up, seconds, || {
                for _ in 0..100 {
                    ping_tx.write_all(&[1])?;
                    pong_rx.read_exact(&mut byte)?;
                }
                Ok(100)
            })?;
            drop(ping_tx);
            let _ = echo.join();
            rate
        }
    };
    println!("{rate}");
    Ok(())
}

/// Calls `batch` (which returns how many operations it did) for `warm_up`, then counts the
/// operations of the next `seconds`.
fn counted_rate(
    warm_up: Duration,
    seconds: Duration,
    mut batch: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<f64> {
    let counted_from = Instant::now() + warm_up;
    while Instant::now() < counted_from {
        batch()?;
    }
    let started = Instant::now();
    let deadline = started + seconds;
    let mut operations = 0u64;
    while Instant::now() < deadline {
        operations += batch()?;
    }
    Ok(operations as f64 / started.elapsed().as_secs_f64())
}

/// Runs a workload in a process of its own, pinned to `cpu`, counting `seconds` after the
/// warm-up; returns its rate.
fn workload_in_child(
    cpu: usize,
    kind: WorkloadKind,
    file: Option<&std::path::Path>,
    seconds: u64,
) -> anyhow::Result<f64> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("bench-workload")
        .arg(
            clap::ValueEnum::to_possible_value(&kind)
                .context("a workload's name")?
                .get_name(),
        )
        .args(["--warm-up-s", &WARM_UP_S.to_string()])
        .args(["--seconds", &seconds.to_string()]);
    if let Some(file) = file {
        command.arg("--file").arg(file);
    }
    let out = pinned(cpu, || command.output())?.context("running the workload")?;
    if !out.status.success() {
        bail!(
            "workload {kind:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("workload {kind:?} printed no rate"))
}

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

fn bpf(command: libc::c_long, attr: &mut [u64; 16]) -> anyhow::Result<i32> {
    // SAFETY: `attr` is a zeroed union bpf_attr (128 bytes) with this command's fields set,
    // and every pointer in it outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(fd as i32)
}

/// How busy the machine is: the 1-minute load average, and other collectors running (whose
/// programs would be attached during the runs "without").
fn machine_state() -> (f64, Vec<String>) {
    let load = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let others = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "collector").then(|| pid.to_string())
        })
        .collect();
    (load, others)
}

/// User + system CPU time of process `pid` so far, in seconds (0 if it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // After "pid (comm) ": state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}

struct Workload {
    name: &'static str,
    unit: &'static str,
    rounds: usize,
    /// Runs it once, counting `seconds` after the warm-up; returns its rate.
    run: Box<dyn Fn(u64) -> anyhow::Result<f64>>,
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

/// The configurations every round runs, each workload once; the order rotates from round to
/// round so that none is always first or last.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Config {
    Without,
    /// Only the empty program on `sys_exit`.
    Floor,
    /// `collector run` with every hook on all the time (`--hook-budget 0`).
    AlwaysOn,
    /// `collector run` as it ships (5 s windows).
    Default,
    /// `collector run --window 1s`: five times the sampler's cycles.
    OneSecondWindows,
}

const CONFIGS: [Config; 5] = [
    Config::Without,
    Config::Floor,
    Config::AlwaysOn,
    Config::Default,
    Config::OneSecondWindows,
];

/// The median of the per-round ratios of `with` to `without`, and their range.
fn paired(with: &[f64], without: &[f64]) -> (f64, f64, f64) {
    let ratios: Vec<f64> = with.iter().zip(without).map(|(w, o)| w / o).collect();
    let (low, high) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &r| {
            (l.min(r), h.max(r))
        });
    (median(&ratios), low, high)
}

/// A 95% confidence interval for the median of `ratios`, free of any assumption about their
/// distribution: the order statistics the binomial distribution (normal approximation) puts
/// either side of the median.
fn median_interval(ratios: &[f64]) -> (f64, f64) {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let half_width = 1.96 * n.sqrt() / 2.0;
    let lower = ((n / 2.0 - half_width).round() as usize).clamp(1, sorted.len());
    let upper = ((n / 2.0 + 1.0 + half_width).round() as usize).clamp(1, sorted.len());
    (sorted[lower - 1], sorted[upper - 1])
}

/// The best run of `with` against the best of `without`: the host's noise only ever slows a
/// run down, so each configuration's fastest run is the one least disturbed.
fn best(with: &[f64], without: &[f64]) -> f64 {
    let fastest = |runs: &[f64]| runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    fastest(with) / fastest(without)
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

pub fn run() -> anyhow::Result<String> {
    let (load_before, others) = machine_state();
    if !others.is_empty() {
        bail!(
            "another collector is running (pid {}): its programs would be attached during the \
             runs without ours; stop it first",
            others.join(", ")
        );
    }
    let cpu = workload_cpu();
    let _workqueues = WorkqueuesOn::cpu(cpu)?;
    let device = LoopDevice::new()?;
    let io_path = device.path.clone();
    let cached_path =
        std::env::temp_dir().join(format!("nodestate-overhead-{}.dat", std::process::id()));
    fs::write(&cached_path, vec![1u8; 1 << 20])?;
    let in_child = move |kind: WorkloadKind, file: Option<std::path::PathBuf>| {
        Box::new(move |seconds: u64| workload_in_child(cpu, kind, file.as_deref(), seconds))
    };
    let workloads = [
        Workload {
            name: "syscall-heavy (getppid loop)",
            unit: "calls/s",
            rounds: ROUNDS,
            run: in_child(WorkloadKind::Getppid, None),
        },
        Workload {
            name: "syscall-heavy, realistic (4 KiB pread of a cached file)",
            unit: "reads/s",
            rounds: ROUNDS,
            run: in_child(WorkloadKind::Pread, Some(cached_path.clone())),
        },
        Workload {
            name: "context-switch-heavy (pipe ping-pong, both threads on one CPU)",
            unit: "round trips/s",
            rounds: ROUNDS,
            run: in_child(WorkloadKind::PingPong, None),
        },
        Workload {
            name: "I/O-heavy (fio 4 KiB randrw, direct, loop device in tmpfs)",
            unit: "IOPS",
            rounds: IO_ROUNDS,
            run: Box::new(move |seconds| pinned(cpu, || fio_iops(&io_path, WARM_UP_S, seconds))?),
        },
    ];
    let recording =
        std::env::temp_dir().join(format!("nodestate-overhead-{}.jsonl", std::process::id()));
    let recording_arg = recording.to_string_lossy().into_owned();
    let mut rows = Vec::new();
    let mut costs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut worst: f64 = 0.0;
    let mut worst_best: f64 = 0.0;
    let mut worst_plausible: f64 = 0.0;
    let mut worst_one_second: f64 = 0.0;
    for workload in &workloads {
        let measure = || (workload.run)(SECONDS);
        measure()?; // warm-up
        let mut results: [Vec<f64>; CONFIGS.len()] = Default::default();
        let mut daemon_cpu = Vec::new();
        for round in 0..workload.rounds {
            for step in 0..CONFIGS.len() {
                let index = (round + step) % CONFIGS.len();
                let value = match CONFIGS[index] {
                    Config::Without => measure()?,
                    Config::Floor => {
                        let hook = EmptySyscallHook::attach()?;
                        let value = measure();
                        drop(hook);
                        std::thread::sleep(Duration::from_millis(TEARDOWN_MS));
                        value?
                    }
                    config @ (Config::AlwaysOn | Config::Default | Config::OneSecondWindows) => {
                        let mut args = vec!["run", "--listen", "127.0.0.1:0"];
                        match config {
                            Config::AlwaysOn => args.extend(["--hook-budget", "0"]),
                            Config::OneSecondWindows => args.extend(["--window", "1s"]),
                            _ => {}
                        }
                        // The workload starts as the first window does, as on a node whose
                        // load was there before the daemon.
                        let collector = start_collector(&args)?;
                        let cpu_before = cpu_seconds(collector.id());
                        let started = Instant::now();
                        let value = measure();
                        if config == Config::Default {
                            daemon_cpu.push(
                                (cpu_seconds(collector.id()) - cpu_before)
                                    / started.elapsed().as_secs_f64(),
                            );
                        }
                        stop(collector)?;
                        std::thread::sleep(Duration::from_millis(TEARDOWN_MS));
                        value?
                    }
                };
                results[index].push(value);
            }
        }
        let series = |config: Config| -> &[f64] {
            &results[CONFIGS.iter().position(|c| *c == config).expect("a config")]
        };
        let without = series(Config::Without);
        let (floor, low_floor, high_floor) = paired(series(Config::Floor), without);
        let (always, low_always, high_always) = paired(series(Config::AlwaysOn), without);
        let (ratio, low, high) = paired(series(Config::Default), without);
        let best_ratio = best(series(Config::Default), without);
        let default_ratios: Vec<f64> = series(Config::Default)
            .iter()
            .zip(without)
            .map(|(with, without)| with / without)
            .collect();
        let (interval_low, interval_high) = median_interval(&default_ratios);
        worst_plausible = worst_plausible.max(1.0 - interval_low);
        let (one_second, low_one_second, high_one_second) =
            paired(series(Config::OneSecondWindows), without);
        worst_one_second = worst_one_second.max(1.0 - one_second);
        let best_always = best(series(Config::AlwaysOn), without);
        worst = worst.max(1.0 - ratio);
        worst_best = worst_best.max(1.0 - best_ratio);
        // One more run with statistics in every window, for the per-hook costs (which then
        // include the statistics' own clock reads) and the share of time the hooks were on.
        let collector = start_collector(&[
            "record",
            "--duration",
            "10m",
            "--program-stats",
            "always",
            "--out",
            &recording_arg,
        ])?;
        let epoch_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis())
        };
        // The workload starts with the first (5 s) window: the windows that end from 4 s on
        // are those it filled, two of them.
        let workload_from = epoch_ms() + 4000;
        let result = (workload.run)(2 * SECONDS);
        let workload_to = epoch_ms();
        stop(collector)?;
        result?;
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
                let share = median_sample_fraction(&text, &field, workload_from, workload_to);
                format!("{:.0}%", share * 100.0)
            })
            .collect();
        let on_share = on_share.join(" / ");
        eprintln!(
            "  {}: {:.0} {} without; ratios: empty hook {floor:.3}, always on {always:.3}, \
             default {ratio:.3} ({low:.3}–{high:.3}; median within \
             {interval_low:.3}–{interval_high:.3}), best runs {best_ratio:.3}, 1 s windows \
             {one_second:.3}; hooks on {on_share} of each window (syscall / sched / block)",
            workload.name,
            median(without),
            workload.unit,
        );
        rows.push(format!(
            "| {} | {:.0} {} | {floor:.3} ({low_floor:.3}–{high_floor:.3}) | \
             {always:.3} ({low_always:.3}–{high_always:.3}); best {best_always:.3} | \
             **{ratio:.3}** ({low:.3}–{high:.3}) | **{:+.1}%** ({:+.1}% to {:+.1}%) | \
             {best_ratio:.3} ({:+.1}%) | {on_share} | {:.1}% | \
             {one_second:.3} ({low_one_second:.3}–{high_one_second:.3}) | {} |",
            workload.name,
            median(without),
            workload.unit,
            (ratio - 1.0) * 100.0,
            (interval_low - 1.0) * 100.0,
            (interval_high - 1.0) * 100.0,
            (best_ratio - 1.0) * 100.0,
            median(&daemon_cpu) * 100.0,
            workload.rounds,
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
    let busy = if load_before > 0.5 {
        format!(
            " **The machine was not idle** (1-minute load average {load_before:.2} before the \
             run): other work shared the CPUs, so read the figures as approximate."
        )
    } else {
        format!(" 1-minute load average {load_before:.2} before the run: a quiet machine.")
    };
    let verdict = format!(
        "{} by the median of the rounds (the worst: {:.1}%); {} by the best runs (the worst: \
         {:.1}%); the worst slowdown the 95% intervals allow: {:.1}%. With 1 s windows the worst median \
         slowdown is {:.1}%.",
        if worst < 0.02 {
            "Every workload slowed by less than 2% as shipped"
        } else {
            "**Not every workload stayed under 2%** as shipped"
        },
        worst * 100.0,
        if worst_best < 0.02 {
            "every one under 2%"
        } else {
            "**not every one under 2%**"
        },
        worst_best * 100.0,
        worst_plausible * 100.0,
        worst_one_second * 100.0
    );
    Ok(format!(
        "## Every program attached: cost to the workloads it watches\n\n\
         `cargo xtask bench overhead`: each workload runs on CPU {cpu} alone, in a process of \
         its own, counted for {SECONDS} s after a {WARM_UP_S} s warm-up (fio with the kernel's \
         unbound workqueues, the loop device's worker among them, on the same CPU: where the \
         scheduler puts the threads otherwise changes a workload's speed between runs by far \
         more than 2%), in five configurations per round: without the collector; with only an \
         empty program on the raw tracepoint `sys_exit` (the floor any syscall hook pays: \
         enabling a syscall tracepoint puts every syscall on the kernel's slow path); with \
         `collector run --hook-budget 0` (every program attached and on all the time); with \
         `collector run` as it ships (every program attached, 5 s windows; the busiest hooks, \
         syscall exit, scheduler and block, share a budget of 0.5% of one CPU: those whose \
         events would cost more are on for only part of each window, those whose events are \
         cheap stay on, see collector/src/sampler.rs; program statistics one window in 12); \
         and the same with `--window 1s` (the sampler takes hooks off and puts them back five \
         times as often, and the kernel interrupts every CPU to patch the tracepoints each \
         time). A collector's workload starts when the collector says it is collecting (its \
         programs attached, its first window begun), as on a node whose load was there before \
         the daemon; a counted stretch of {SECONDS} s holds one whole 5 s window's cycle of \
         the sampler, and five 1 s ones. The next run starts {TEARDOWN_MS} ms after a \
         collector stops (the kernel frees its maps in work queued after the exit). {ROUNDS} \
         rounds ({IO_ROUNDS} for fio, whose runs spread twice as wide), the order of the five \
         rotating from round to round. Ratio = configuration / without, the median of each \
         round's own ratio, with the lowest and highest round in brackets: their spread is \
         this machine's noise (1.000 = no cost). Change: the median's, with its 95% \
         confidence interval (order statistics, no assumption about the noise's \
         distribution). Hooks on: the median share of each window the syscall / scheduler / \
         block hooks were on, from one more run as shipped. Daemon CPU: the collector's own \
         user + system time while the workload ran, as a share of one CPU (median, as \
         shipped; it runs on any CPU).{busy}\n\n\
         Best runs: the fastest run as shipped against the fastest without; the host's noise \
         only slows runs down, so the fastest are the least disturbed.\n\n\
         | workload | without | empty `sys_exit` program | every hook always on | collector \
         as shipped | change (95% interval) | best runs (change) | hooks on | daemon CPU | \
         as shipped, 1 s windows | rounds |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{}\n\n{verdict}\n\n\
         Which hooks cost most: that one more run per workload had `--program-stats always` \
         (kernel BPF statistics: runs and mean ns per run, which includes the statistics' own \
         ~90 ns; the share is of the total program time; it leaves out what the kernel spends \
         before a program runs, such as building a classic tracepoint's record):\n\n\
         | program | runs | ns/run | share |\n|---|---|---|---|\n{}\n",
        rows.join("\n"),
        hooks.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_is_the_order_statistics_either_side() {
        // Shuffled, so the function must sort.
        let twelve: Vec<f64> = (1..=12).rev().map(f64::from).collect();
        assert_eq!(median_interval(&twelve), (3.0, 10.0));
        let thirty: Vec<f64> = (1..=30).map(|i| f64::from((i * 7) % 31)).collect();
        assert_eq!(median_interval(&thirty), (10.0, 21.0));
        assert_eq!(median_interval(&[0.9]), (0.9, 0.9));
    }
}
