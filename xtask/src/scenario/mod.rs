//! `cargo xtask scenario NAME` / `cargo xtask scenarios`: a healthy period under a realistic
//! background workload, then a real fault, then recovery, while `collector record` writes the
//! node's windows, and the daemon as shipped (`collector run --model builtin`) judges the node
//! and names culprits. The windows (compressed), the ground truth, the daemon's culprits and a
//! description land in `datasets/`.

pub mod faults;
pub mod lab;
pub mod shipped;
pub mod worker;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::util::{is_root, release_binary, workspace_root};
use faults::Active;
use lab::Lab;

/// Window length of the recordings: short, so a fault shows within seconds.
pub const WINDOW_S: u64 = 2;
/// Background workload running before recording starts, so its start-up is not "healthy".
const WARMUP: Duration = Duration::from_secs(4);
/// Where the blocklist of the flood-with-blocklist scenario is pinned: never the operator's.
const SCENARIO_PIN_DIR: &str = "/sys/fs/bpf/nodestate-scenario";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A fault: the node is degraded between its start and end.
    Fault,
    /// A benign burst: the node stays healthy; any "Yes" is a false alarm.
    NoFault,
}

type Start = fn(&mut Lab, &mut Active) -> anyhow::Result<()>;
type Stop = fn(&mut Lab) -> anyhow::Result<()>;

pub struct Scenario {
    pub name: &'static str,
    pub kind: Kind,
    /// What happens to the node, for the datasets table.
    pub what: &'static str,
    /// The window-record fields it should move.
    pub moves: &'static str,
    start: Start,
    stop: Option<Stop>,
    /// Record with the XDP drop list on the host end, the flood's source listed.
    xdp_blocklist: bool,
    /// The cgroup (under the hierarchy's root) of the workload that causes the fault, which
    /// the daemon should name as the first culprit; `None` when no workload on the node is
    /// the cause: faults from outside the node (the namespace is "outside"), of a device, or
    /// of a limit put on the service (disk-throttling: the capped service issues less I/O,
    /// not more; in the ranking it is a victim, by its I/O wait, not a culprit).
    pub culprit: Option<&'static str>,
}

impl Scenario {
    /// The name the daemon gives the culprit's cgroup (its path), if there is one.
    pub fn expected_culprit(&self) -> Option<String> {
        self.culprit.map(lab::workload_name)
    }
}

const fn fault(
    name: &'static str,
    what: &'static str,
    moves: &'static str,
    start: Start,
) -> Scenario {
    Scenario {
        name,
        kind: Kind::Fault,
        what,
        moves,
        start,
        stop: None,
        xdp_blocklist: false,
        culprit: None,
    }
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        culprit: Some(faults::CPU_HOGS),
        ..fault(
            "cpu-saturation",
            "stress-ng, 4 CPU hogs on 2 CPUs",
            "psi_cpu_some_pct, sched_runqueue_latency_p99_us",
            faults::cpu_saturation,
        )
    },
    Scenario {
        culprit: Some(faults::THROTTLED),
        ..fault(
            "cpu-throttling",
            "2 CPU hogs in a cgroup with a 20% CFS quota",
            "cpu_throttled_ms_per_s, cpu_throttled_periods_per_s",
            faults::cpu_throttling,
        )
    },
    Scenario {
        culprit: Some(faults::MEMORY_JOB),
        ..fault(
            "memory-pressure",
            "a job keeping 128 MiB and rereading a 512 MiB file in a 192 MiB cgroup",
            "mem_reclaims_per_s, mem_reclaim_stall_ms_per_s, psi_memory_*",
            faults::memory_pressure,
        )
    },
    Scenario {
        culprit: Some(faults::OOM_LOOP),
        ..fault(
            "oom-kill-loop",
            "a service asking for 128 MiB in a 64 MiB cgroup, restarted at once",
            "mem_oom_kills, proc_fatal_signals_per_s, proc_exits_nonzero_per_s",
            faults::oom_kill_loop,
        )
    },
    Scenario {
        culprit: Some(faults::CRASH_LOOP),
        ..fault(
            "crash-loop",
            "a service that segfaults at start and its wrapper exiting 1, restarted every 0.1 s",
            "proc_exits_nonzero_per_s, proc_fatal_signals_per_s, proc_forks_per_s",
            faults::crash_loop,
        )
    },
    Scenario {
        stop: Some(faults::disk_throttling_stop),
        ..fault(
            "disk-throttling",
            "the workload's disk capped at 20 IOPS (cgroup blkio/io.max) under its sync writes",
            "block_*_ops_per_s, psi_io_*",
            faults::disk_throttling,
        )
    },
    Scenario {
        stop: Some(faults::slow_disk_stop),
        ..fault(
            "slow-disk",
            "the device under the workload's disk capped at 15 IOPS: every request is slow",
            "block_latency_*, block_slow_io_events, psi_io_*",
            faults::slow_disk,
        )
    },
    Scenario {
        culprit: Some(faults::VOLUME_WRITER),
        ..fault(
            "disk-errors",
            "a thin volume whose 16 MiB pool is full: writes fail with I/O errors",
            "block_errors_per_s, syscall_eio_per_s",
            faults::disk_errors,
        )
    },
    fault(
        "network-loss",
        "15% random loss (nftables numgen, netdev ingress) on the TCP stream into the node",
        "tcp_retransmits_per_s, net_*_packets_per_s",
        faults::network_loss,
    ),
    fault(
        "bandwidth-collapse",
        "the 20 Mbit/s stream's link capped to 1 Mbit/s (tbf)",
        "net_*_bytes_per_s, tcp_retransmits_per_s",
        faults::bandwidth_collapse,
    ),
    fault(
        "packet-flood",
        "a 200 kpps UDP flood from the namespace to a closed port",
        "net_rx_packets_per_s, net_drops_per_s (reason NO_SOCKET)",
        faults::packet_flood,
    ),
    Scenario {
        xdp_blocklist: true,
        ..fault(
            "packet-flood-blocked",
            "the same flood with its source on the XDP drop list",
            "little: XDP drops it before the stack (the fault is absorbed)",
            faults::packet_flood,
        )
    },
    Scenario {
        culprit: Some(faults::FD_LEAK),
        ..fault(
            "fd-exhaustion",
            "a process at its descriptor limit retrying opens",
            "syscall_emfile_per_s, file_open_errors_per_s",
            faults::fd_exhaustion,
        )
    },
    Scenario {
        culprit: Some(faults::CONNECTION_CHURN),
        ..fault(
            "port-exhaustion",
            "100 ephemeral ports and a client churning connections: connect() fails",
            "syscall_eaddrnotavail_per_s, tcp_connects_per_s",
            faults::port_exhaustion,
        )
    },
    Scenario {
        culprit: Some(faults::LOG_WRITER),
        ..fault(
            "disk-full",
            "a writer on a full 8 MiB file system retrying",
            "syscall_enospc_per_s, syscall_errors_per_s",
            faults::disk_full,
        )
    },
    Scenario {
        culprit: Some(faults::NOISY_WRITER),
        ..fault(
            "noisy-neighbour",
            "a bulk loader beside the service: 128 KiB direct writes, 4 at once, uncapped, to the file system holding its volume",
            "block_latency_*, fsync_latency_*, psi_io_*",
            faults::noisy_neighbour,
        )
    },
    Scenario {
        kind: Kind::NoFault,
        ..fault(
            "no-fault-compile",
            "benign: a niced compiler loop, one job",
            "CPU and forks, within what a healthy node does",
            faults::compile_burst,
        )
    },
    Scenario {
        kind: Kind::NoFault,
        ..fault(
            "no-fault-backup",
            "benign: a sequential backup read of the disk at 40 MB/s",
            "block_read_bytes_per_s",
            faults::backup_read,
        )
    },
];

pub fn find(name: &str) -> anyhow::Result<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        format!("no scenario {name:?}; there are: {}", names.join(", "))
    })
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub baseline: Duration,
    pub fault: Duration,
    pub recovery: Duration,
}

impl Timing {
    /// The recorded datasets: 15 healthy windows, 12 under the fault, 6 of recovery.
    pub const FULL: Timing = Timing {
        baseline: Duration::from_secs(30),
        fault: Duration::from_secs(24),
        recovery: Duration::from_secs(12),
    };
    /// The CI check.
    pub const SHORT: Timing = Timing {
        baseline: Duration::from_secs(16),
        fault: Duration::from_secs(12),
        recovery: Duration::from_secs(6),
    };

    fn total(&self) -> Duration {
        self.baseline + self.fault + self.recovery
    }
}

/// What a run wrote.
pub struct Recording {
    pub windows: PathBuf,
    pub labels: PathBuf,
    pub meta: PathBuf,
    /// Per window, the shipped daemon's verdict, culprits and victims.
    pub culprits: PathBuf,
}

/// The dataset files of scenario `name` in `dir`.
pub fn dataset_files(dir: &Path, name: &str) -> Recording {
    Recording {
        windows: dir.join(format!("{name}.jsonl.gz")),
        labels: dir.join(format!("{name}.labels.csv")),
        meta: dir.join(format!("{name}.json")),
        culprits: dir.join(format!("{name}.culprits.jsonl.gz")),
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

pub fn run(scenario: &Scenario, timing: Timing, out_dir: &Path) -> anyhow::Result<Recording> {
    if !is_root() {
        bail!("scenarios make cgroups, loop devices and network namespaces: run them as root");
    }
    let collector = release_binary("collector");
    if !collector.exists() {
        bail!(
            "{} is missing: run `cargo xtask build`",
            collector.display()
        );
    }
    fs::create_dir_all(out_dir)?;
    println!(
        "scenario {}: {}s healthy, {}s {}, {}s recovery",
        scenario.name,
        timing.baseline.as_secs(),
        timing.fault.as_secs(),
        if scenario.kind == Kind::Fault {
            "fault"
        } else {
            "benign burst"
        },
        timing.recovery.as_secs()
    );
    wait_for_quiet_machine(scenario.name);
    let mut lab = Lab::start(timing.total().as_secs() + WARMUP.as_secs())?;
    let _pins = scenario
        .xdp_blocklist
        .then(|| PinDir(SCENARIO_PIN_DIR.into()));
    if scenario.xdp_blocklist {
        let _ = fs::remove_dir_all(SCENARIO_PIN_DIR);
        crate::util::run(
            Command::new(&collector)
                .args(["blocklist", "--pin-dir", SCENARIO_PIN_DIR, "add"])
                .arg(format!("{}/32", lab::PEER_ADDR))
                .args(["--comment", "scenario flood source"])
                .stdout(Stdio::null()),
        )?;
    }
    std::thread::sleep(WARMUP);
    lab.check_running()?;

    let raw = lab.dir.join("windows.jsonl");
    let log = fs::File::create(lab.dir.join("collector.log"))?;
    // Two windows more than the phases: the recorder needs a moment to load its programs.
    let record_for = timing.total() + Duration::from_secs(2 * WINDOW_S);
    let mut record = Command::new(&collector);
    record
        .args(["record", "--window", &format!("{WINDOW_S}s"), "--duration"])
        .arg(format!("{}s", record_for.as_secs()))
        .arg("--out")
        .arg(&raw)
        .env("NODE_NAME", "scenario-node")
        .stdout(Stdio::null())
        .stderr(log);
    if scenario.xdp_blocklist {
        record.args([
            "--xdp-iface",
            lab::HOST_IFACE,
            "--pin-dir",
            SCENARIO_PIN_DIR,
        ]);
    }
    // The daemon as shipped, beside the recorder: the culprits it names are graded.
    let daemon = shipped::ShippedDaemon::start(&collector, &lab.dir, WINDOW_S)?;
    let mut recorder = record.spawn().context("starting collector record")?;
    let started = Instant::now();
    // Let the recorder attach before the healthy period starts counting.
    std::thread::sleep(Duration::from_secs(WINDOW_S));

    std::thread::sleep(timing.baseline);
    lab.check_running()?;
    let fault_start = SystemTime::now();
    let mut active = Active::default();
    (scenario.start)(&mut lab, &mut active)
        .with_context(|| format!("starting the fault of {}", scenario.name))?;
    std::thread::sleep(timing.fault);
    drop(active);
    if let Some(stop) = scenario.stop {
        stop(&mut lab).with_context(|| format!("stopping the fault of {}", scenario.name))?;
    }
    let fault_end = SystemTime::now();
    lab.check_running()?;

    let deadline = started + record_for + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = recorder.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = recorder.kill();
            bail!("collector record did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let log = fs::read_to_string(lab.dir.join("collector.log")).unwrap_or_default();
        bail!("collector record failed ({status}):\n{log}");
    }

    let files = dataset_files(out_dir, scenario.name);
    let judged = daemon.finish(&files.culprits)?;
    let windows = fs::read(&raw)?;
    crate::util::write_gz(&files.windows, &windows)?;
    let (start, end) = (rfc3339(fault_start), rfc3339(fault_end));
    let mut labels = String::from("start,end\n");
    if scenario.kind == Kind::Fault {
        labels.push_str(&format!("{start},{end}\n"));
    }
    fs::write(&files.labels, labels)?;
    let meta = json!({
        "scenario": scenario.name,
        "kind": if scenario.kind == Kind::Fault { "fault" } else { "no-fault" },
        "what": scenario.what,
        "moves": scenario.moves,
        "window_s": WINDOW_S,
        "phases_s": {
            "healthy": timing.baseline.as_secs(),
            "fault_or_burst": timing.fault.as_secs(),
            "recovery": timing.recovery.as_secs(),
        },
        // The fault (or, in a no-fault run, the benign burst) ran from start to end.
        "start": start,
        "end": end,
        "windows": windows.iter().filter(|&&b| b == b'\n').count(),
        // The workload that causes the fault, as the daemon names it (null: none on the node).
        "culprit": scenario.expected_culprit(),
        "daemon_windows": judged,
    });
    fs::write(&files.meta, serde_json::to_string_pretty(&meta)? + "\n")?;
    println!(
        "scenario {}: wrote {}",
        scenario.name,
        files
            .windows
            .strip_prefix(workspace_root())
            .unwrap_or(&files.windows)
            .display()
    );
    Ok(files)
}

/// Pressure (`some`, % of each second stalled) under which the machine counts as quiet before a
/// run: the lab's own load then makes the healthy period, not what ran before it (a build's
/// writeback, a deletion's discards, a neighbour on the host).
const QUIET_PRESSURE_PCT: f64 = 5.0;
/// ...for this many seconds in a row, each measured on its own from the stall totals. One
/// reading of `avg10` was not enough: it lags, and the discards of the scenario just torn down
/// came back in bursts after it had fallen under 5%, into the next run's healthy period.
const QUIET_SECONDS: u32 = 3;
/// How long to wait for it; then the run goes ahead, and says the machine was busy.
const QUIET_WAIT: Duration = Duration::from_secs(90);

/// `some total` (µs stalled since boot) of /proc/pressure/{cpu,io}; `None` without PSI.
fn stall_totals() -> Option<(u64, u64)> {
    let some_total = |resource: &str| -> Option<u64> {
        let text = fs::read_to_string(format!("/proc/pressure/{resource}")).ok()?;
        let line = text.lines().find(|l| l.starts_with("some"))?;
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some((some_total("cpu")?, some_total("io")?))
}

/// Waits until CPU and I/O pressure stay below [`QUIET_PRESSURE_PCT`] for [`QUIET_SECONDS`]
/// seconds in a row, at most [`QUIET_WAIT`], saying what it waited for.
fn wait_for_quiet_machine(name: &str) {
    let started = Instant::now();
    let mut said = false;
    let Some(mut last) = stall_totals() else {
        println!(
            "scenario {name}: this kernel has no pressure stall information \
             (/proc/pressure): not waiting for a quiet machine"
        );
        return;
    };
    let mut last_at = Instant::now();
    let mut quiet_for = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(now) = stall_totals() else {
            return;
        };
        let elapsed_us = last_at.elapsed().as_secs_f64() * 1e6;
        let share = |now: u64, before: u64| now.saturating_sub(before) as f64 / elapsed_us * 100.0;
        let (cpu, io) = (share(now.0, last.0), share(now.1, last.1));
        (last, last_at) = (now, Instant::now());
        if cpu < QUIET_PRESSURE_PCT && io < QUIET_PRESSURE_PCT {
            quiet_for += 1;
            if quiet_for >= QUIET_SECONDS {
                if said {
                    println!(
                        "scenario {name}: quiet after {:.0} s (pressure cpu {cpu:.1}% io {io:.1}% \
                         over the last second, under {QUIET_PRESSURE_PCT}% for {QUIET_SECONDS} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                return;
            }
            continue;
        }
        quiet_for = 0;
        if started.elapsed() > QUIET_WAIT {
            println!(
                "scenario {name}: the machine is still busy after {} s (pressure cpu {cpu:.1}% \
                 io {io:.1}%): running anyway; its healthy period carries that load",
                QUIET_WAIT.as_secs()
            );
            return;
        }
        if !said {
            println!(
                "scenario {name}: waiting for a quiet machine (pressure cpu {cpu:.1}% io \
                 {io:.1}%, under {QUIET_PRESSURE_PCT}% for {QUIET_SECONDS} s wanted)"
            );
            said = true;
        }
    }
}

/// This program, copied aside on first use: the workers are started from the copy, so that
/// rebuilding xtask while scenarios run cannot pull the binary from under them.
pub fn worker_exe() -> anyhow::Result<PathBuf> {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(path) = COPY.get() {
        return Ok(path.clone());
    }
    let path =
        std::env::temp_dir().join(format!("nodestate-scenario-worker-{}", std::process::id()));
    fs::copy(std::env::current_exe()?, &path).context("copying xtask for the scenario workers")?;
    Ok(COPY.get_or_init(|| path).clone())
}

pub fn remove_worker_exe() {
    let _ = fs::remove_file(
        std::env::temp_dir().join(format!("nodestate-scenario-worker-{}", std::process::id())),
    );
}

/// The scenario's pin directory, removed with the maps in it afterwards.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `cargo xtask scenario NAME` / `scenarios`.
pub fn run_named(names: &[&str], timing: Timing) -> anyhow::Result<()> {
    let out_dir = workspace_root().join("datasets");
    let mut failed = Vec::new();
    for name in names {
        let scenario = find(name)?;
        if let Err(err) = run(scenario, timing, &out_dir) {
            eprintln!("scenario {name} FAILED: {err:#}");
            failed.push(*name);
        }
    }
    remove_worker_exe();
    if !failed.is_empty() {
        bail!("scenarios failed: {failed:?}");
    }
    Ok(())
}
