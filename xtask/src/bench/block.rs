//! Cost of the block programs: the same direct-I/O fio job's IOPS without and with the
//! collector attached, alternated in one run, as a ratio.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::util::output;

const ROUNDS: usize = 3;
const SECONDS_PER_RUN: u64 = 6;

/// After the collector says it is collecting, how long the benchmarks wait before measuring:
/// its start-up (the first window's reads of sysfs and procfs, the first scrape) is not what
/// it costs a node day to day.
pub(super) const SETTLE_MS: u64 = 2000;

/// A loop device over a file in memory (tmpfs, written whole so no read finds a hole): fast,
/// so the per-request cost of our programs is as visible as it can be, and no writeback to a
/// real disk comes and goes between runs.
pub(super) struct LoopDevice {
    pub(super) path: String,
    backing: std::path::PathBuf,
}

impl LoopDevice {
    pub(super) fn new() -> anyhow::Result<Self> {
        let dir = std::path::Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let backing = dir.join(format!("nodestate-bench-{}.img", std::process::id()));
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&backing)?;
            let chunk = vec![0x5au8; 1 << 20];
            for _ in 0..256 {
                file.write_all(&chunk)?;
            }
        }
        let path = output(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&backing),
        )
        .context("losetup failed")?
        .trim()
        .to_string();
        Ok(Self { path, backing })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// The CPU the workloads run on: the last one, away from CPU 0's housekeeping. Each workload
/// runs on one CPU so that its speed does not depend on where the scheduler puts its threads
/// from one run to the next: a direct read on a loop device is 3 to 6 times faster when the
/// device's worker runs on the reader's CPU than when it runs on the other, measured here.
pub(super) fn workload_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

/// Runs `work` with the calling thread (and every thread or process it starts) on `cpu` only,
/// then puts the thread's CPU set back.
pub(super) fn pinned<T>(cpu: usize, work: impl FnOnce() -> T) -> anyhow::Result<T> {
    // SAFETY: cpu_set_t is plain data; the calls get its size and a valid pointer.
    unsafe {
        let mut previous: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut previous) != 0 {
            bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &only) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
        let result = work();
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &previous);
        Ok(result)
    }
}

/// Unbound kernel workqueues (the loop device's worker is one) confined to one CPU while this
/// lives, the workload's: see [`workload_cpu`]. The machine's setting comes back on drop.
pub(super) struct WorkqueuesOn {
    previous: String,
}

const WORKQUEUE_CPUMASK: &str = "/sys/devices/virtual/workqueue/cpumask";

impl WorkqueuesOn {
    pub(super) fn cpu(cpu: usize) -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(WORKQUEUE_CPUMASK)
            .with_context(|| format!("reading {WORKQUEUE_CPUMASK}"))?;
        // A hex mask with bit `cpu` set: its top digit, then a zero per 4 lower CPUs.
        let mask = format!("{:x}{}", 1u8 << (cpu % 4), "0".repeat(cpu / 4));
        std::fs::write(WORKQUEUE_CPUMASK, &mask)
            .with_context(|| format!("writing {mask} to {WORKQUEUE_CPUMASK}"))?;
        Ok(Self { previous })
    }
}

impl Drop for WorkqueuesOn {
    fn drop(&mut self) {
        let _ = std::fs::write(WORKQUEUE_CPUMASK, self.previous.trim());
    }
}

/// The benchmarks' fio job, named `name`: 4 KiB direct random reads and writes (70/30) on
/// `device`, one job, for `seconds`.
pub(super) fn fio_job(name: &str, device: &str, seconds: u64) -> Command {
    let mut command = Command::new("fio");
    command.args([
        &format!("--name={name}"),
        &format!("--filename={device}"),
        "--rw=randrw",
        "--rwmixread=70",
        "--bs=4k",
        "--direct=1",
        "--ioengine=psync",
        "--numjobs=1",
        "--time_based",
        &format!("--runtime={seconds}"),
    ]);
    command
}

/// fio's IOPS over `seconds`.
fn fio_iops(device: &str, seconds: u64) -> anyhow::Result<f64> {
    let json = output(fio_job("nodestate-block", device, seconds).arg("--output-format=json"))
        .context("fio failed")?;
    let report: serde_json::Value = serde_json::from_str(&json).context("parsing fio's JSON")?;
    let job = &report["jobs"][0];
    let iops =
        job["read"]["iops"].as_f64().unwrap_or(0.0) + job["write"]["iops"].as_f64().unwrap_or(0.0);
    if iops <= 0.0 {
        bail!("fio reported no I/O");
    }
    Ok(iops)
}

/// Starts the collector with `args` and waits until it says it is collecting (programs
/// attached).
pub(super) fn start_collector(args: &[&str]) -> anyhow::Result<Child> {
    let mut command = Command::new(crate::util::release_binary("collector"));
    command.args(args);
    start_and_wait(command, |_| None)
}

/// Starts `command` (a `collector run …`, perhaps behind nsenter) and waits until it says it
/// is collecting; the one starter of the benchmarks' daemons. `refuse` sees each line logged
/// before that and may name a reason to stop it (with SIGTERM, so it detaches what it
/// attached) and fail.
pub(super) fn start_and_wait(
    mut command: Command,
    refuse: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Child> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the collector")?;
    let stderr = child.stderr.take().context("collector stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("collecting") => break,
            Some(Ok(line)) => {
                if let Some(reason) = refuse(&line) {
                    let _ = stop(child);
                    bail!("{reason}");
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the collector exited before collecting");
            }
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

pub(super) fn stop(mut child: Child) -> anyhow::Result<()> {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait()?;
    if !status.success() {
        bail!("collector exited with {status}");
    }
    Ok(())
}

pub(super) use crate::util::median;

pub fn run() -> anyhow::Result<String> {
    let device = LoopDevice::new()?;
    let cpu = workload_cpu();
    let _workqueues = WorkqueuesOn::cpu(cpu)?;
    let fio = || pinned(cpu, || fio_iops(&device.path, SECONDS_PER_RUN))?;
    // Round one should not be special.
    fio()?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        without.push(fio()?);
        // Only the block programs, and on all the time: this measures what they cost per
        // request (`bench overhead` measures the default configuration).
        let collector = start_collector(&[
            "run",
            "--window",
            "1s",
            "--listen",
            "127.0.0.1:0",
            "--signals",
            "block-issue,block-complete",
            "--hook-budget",
            "0",
        ])?;
        std::thread::sleep(Duration::from_millis(SETTLE_MS));
        let iops = fio();
        stop(collector)?;
        with.push(iops?);
        eprintln!(
            "  round {}: {:.0} IOPS without, {:.0} with",
            round + 1,
            without[round],
            with[round]
        );
    }
    let baseline = median(&without);
    let attached = median(&with);
    let ratio = attached / baseline;
    Ok(format!(
        "## Block I/O programs: cost on a direct-I/O workload\n\n\
         `cargo xtask bench block`: fio 4 KiB random read/write (70/30), direct I/O, psync, one \
         job, on a loop device over a file in tmpfs (fast, so per-request overhead shows as \
         much as it can), fio and the kernel's unbound workqueues (the loop worker) on CPU \
         {cpu}, {SECONDS_PER_RUN} s per run; {ROUNDS} rounds alternating without and with \
         `collector run --signals block-issue,block-complete --hook-budget 0` (only the block \
         programs attached, on all the time, 1 s windows; measured from {SETTLE_MS} ms after \
         it starts); medians.\n\n\
         | | IOPS (median) |\n|---|---|\n\
         | no collector | {baseline:.0} |\n\
         | collector attached | {attached:.0} |\n\
         | **ratio (with / without)** | **{ratio:.3}** |\n\n\
         Per round (without, with): {}\n",
        without
            .iter()
            .zip(&with)
            .map(|(a, b)| format!("({a:.0}, {b:.0})"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
