//! What every program attached costs the workloads it watches: a syscall-heavy, a
//! context-switch-heavy and an I/O-heavy workload, each without and with the full program set,
//! alternated in one run; and which hooks cost most, from the kernel's BPF run-time statistics
//! that the collector records per window.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::block::{LoopDevice, fio_iops, median, start_collector, stop};

const ROUNDS: usize = 3;
const SECONDS: u64 = 4;

/// getppid(2) in a loop: the raw syscall tracepoint's worst case. Returns calls per second.
fn syscalls_per_s() -> f64 {
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let mut calls = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            // SAFETY: getppid has no preconditions.
            std::hint::black_box(unsafe { libc_getppid() });
        }
        calls += 1000;
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

unsafe extern "C" {
    #[link_name = "getppid"]
    fn libc_getppid() -> i32;
}

/// Two threads passing a byte back and forth through pipes: every round trip is two context
/// switches and two wake-ups. Returns round trips per second.
fn round_trips_per_s() -> anyhow::Result<f64> {
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
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let mut trips = 0u64;
    let mut byte = [0u8; 1];
    while Instant::now() < deadline {
        ping_tx.write_all(&[1])?;
        pong_rx.read_exact(&mut byte)?;
        trips += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(ping_tx);
    let _ = echo.join();
    Ok(trips as f64 / elapsed)
}

struct Workload {
    name: &'static str,
    unit: &'static str,
    run: Box<dyn Fn() -> anyhow::Result<f64>>,
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

pub fn run() -> anyhow::Result<String> {
    let device = LoopDevice::new()?;
    let io_path = device.path.clone();
    let workloads = [
        Workload {
            name: "syscall-heavy (getppid loop)",
            unit: "calls/s",
            run: Box::new(|| Ok(syscalls_per_s())),
        },
        Workload {
            name: "context-switch-heavy (pipe ping-pong)",
            unit: "round trips/s",
            run: Box::new(round_trips_per_s),
        },
        Workload {
            name: "I/O-heavy (fio 4 KiB randrw, direct, loop device)",
            unit: "IOPS",
            run: Box::new(move || fio_iops(&io_path)),
        },
    ];
    let recording =
        std::env::temp_dir().join(format!("nodestate-overhead-{}.jsonl", std::process::id()));
    let recording_arg = recording.to_string_lossy().into_owned();
    let mut rows = Vec::new();
    let mut costs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for workload in &workloads {
        (workload.run)()?; // warm-up
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            without.push((workload.run)()?);
            let collector = start_collector(&["run", "--window", "1s"])?;
            let result = (workload.run)();
            stop(collector)?;
            with.push(result?);
        }
        // One more run with statistics in every window, for the per-hook costs (which then
        // include the statistics' own clock reads).
        let collector = start_collector(&[
            "record",
            "--window",
            "1s",
            "--duration",
            "10m",
            "--program-stats",
            "always",
            "--out",
            &recording_arg,
        ])?;
        let result = (workload.run)();
        stop(collector)?;
        result?;
        let text = fs::read_to_string(&recording).context("reading the recording")?;
        for (name, (runs, ns)) in program_costs(&text) {
            let entry = costs.entry(name).or_default();
            entry.0 += runs;
            entry.1 += ns;
        }
        let (base, attached) = (median(&without), median(&with));
        eprintln!(
            "  {}: {base:.0} → {attached:.0} {}",
            workload.name, workload.unit
        );
        rows.push(format!(
            "| {} | {base:.0} {unit} | {attached:.0} {unit} | {:.3} | {:+.1}% |",
            workload.name,
            attached / base,
            (attached / base - 1.0) * 100.0,
            unit = workload.unit
        ));
    }
    let _ = fs::remove_file(&recording);
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
    Ok(format!(
        "## Every program attached: cost to the workloads it watches\n\n\
         `cargo xtask bench overhead`: each workload runs {SECONDS} s without the collector, then \
         {SECONDS} s with `collector run` in its default configuration (every signal attached, \
         program statistics sampled one window in 12, 1 s windows), {ROUNDS} rounds alternated; \
         medians. Ratio = with / without (1.000 = no cost; the target is a slowdown under \
         2%).\n\n\
         | workload | without | with | ratio | change |\n|---|---|---|---|---|\n{}\n\n\
         Which hooks cost most: one more run per workload with `--program-stats always` (kernel \
         BPF statistics: runs and mean ns per run, which includes the statistics' own ~90 ns; \
         the share is of the total program time):\n\n\
         | program | runs | ns/run | share |\n|---|---|---|---|\n{}\n",
        rows.join("\n"),
        hooks.join("\n")
    ))
}
