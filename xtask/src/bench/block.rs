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
const SECONDS_PER_RUN: u32 = 6;

/// A loop device over a temporary file: fast (the backing file sits in the page cache), so the
/// per-request cost of our programs is as visible as it can be.
pub(super) struct LoopDevice {
    pub(super) path: String,
    backing: std::path::PathBuf,
}

impl LoopDevice {
    pub(super) fn new() -> anyhow::Result<Self> {
        let backing =
            std::env::temp_dir().join(format!("nodestate-bench-{}.img", std::process::id()));
        std::fs::File::create(&backing)?.set_len(256 << 20)?;
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

pub(super) fn fio_iops(device: &str) -> anyhow::Result<f64> {
    let json = output(Command::new("fio").args([
        "--name=nodestate-block",
        &format!("--filename={device}"),
        "--rw=randrw",
        "--rwmixread=70",
        "--bs=4k",
        "--direct=1",
        "--ioengine=psync",
        "--numjobs=1",
        "--time_based",
        &format!("--runtime={SECONDS_PER_RUN}"),
        "--output-format=json",
    ]))
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
    let mut child = Command::new(crate::util::release_binary("collector"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the collector")?;
    let stderr = child.stderr.take().context("collector stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("collecting") => break,
            Some(Ok(_)) => continue,
            _ => bail!("the collector exited before attaching"),
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

pub(super) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

pub fn run() -> anyhow::Result<String> {
    let device = LoopDevice::new()?;
    // Warm the backing file into the page cache so round one is not special.
    fio_iops(&device.path)?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        without.push(fio_iops(&device.path)?);
        // Only the block programs: this measures their cost (`bench overhead` measures all).
        let collector = start_collector(&[
            "run",
            "--window",
            "1s",
            "--listen",
            "127.0.0.1:0",
            "--signals",
            "block-issue,block-complete",
        ])?;
        std::thread::sleep(Duration::from_millis(200));
        let iops = fio_iops(&device.path);
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
         job, on a loop device over a page-cached file (fast, so per-request overhead shows as \
         much as it can), {SECONDS_PER_RUN} s per run; {ROUNDS} rounds alternating without and \
         with `collector run --signals block-issue,block-complete` (only the block programs \
         attached, 1 s windows); medians.\n\n\
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
