//! The hook sampler's other hooks: under a flood of block requests and context switches the
//! scheduler and block programs go off and on with the syscall hook; what they measure must
//! stay true across the gaps (no wait or request that began before a gap is timed across it),
//! and the daemon's block rates still estimate the flood.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use collector::kernel::{KernelCollector, KernelConfig};
use collector_common::{LATENCY_BUCKETS, hist, op};
use integration_test::{
    AlignedBuffer, LoopDevice, SyscallFlood, privileged, read_windows, workspace_binary,
};

/// Latency buckets are log2 of microseconds: bucket 16 starts at 65.5 ms. A run-queue wait or
/// a loop-device read that long on an idle test machine does not happen; a wait timed across
/// one of our 150 ms gaps lands there.
const LONG_BUCKET: usize = 16;

/// Two threads handing a token back and forth (a context switch and a wake-up each way) and
/// one reading 4 KiB blocks with direct I/O from the first 64 blocks of `device`, until
/// `stop`, at most 60 s; the reads are counted in `reads`.
struct Flood {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(device: &LoopDevice) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut threads = Vec::new();
        let (to_peer, from_main) = std::sync::mpsc::sync_channel::<u64>(0);
        let (to_main, from_peer) = std::sync::mpsc::sync_channel::<u64>(0);
        threads.push(std::thread::spawn(move || {
            for value in from_main {
                if to_main.send(value).is_err() {
                    break;
                }
            }
        }));
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if to_peer.send(round).is_err() || from_peer.recv().is_err() {
                        break;
                    }
                    round += 1;
                }
            }));
        }
        {
            let (stop, reads) = (stop.clone(), reads.clone());
            let file = device.open_direct();
            threads.push(std::thread::spawn(move || {
                use std::os::unix::fs::FileExt as _;
                let mut buffer = AlignedBuffer::new(4096, 0);
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    file.read_exact_at(buffer.as_mut_slice(), (index % 64) * 4096)
                        .expect("direct read");
                    index += 1;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Self {
            stop,
            reads,
            threads,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
    }
}

fn long_samples(buckets: &[u64; LATENCY_BUCKETS]) -> u64 {
    buckets[LONG_BUCKET..].iter().sum()
}

#[test]
fn waits_and_requests_begun_while_the_hooks_were_off_are_not_timed_across_the_gap() {
    if !privileged("waits_and_requests_begun_while_the_hooks_were_off_are_not_timed_across_the_gap")
    {
        return;
    }
    let device = LoopDevice::new(16 << 20);
    let mut kernel = KernelCollector::load(&KernelConfig::default()).expect("loading programs");
    assert!(kernel.has_sampled_hooks(), "no sampled hooks attached");
    let flood = Flood::start(&device);
    // Twenty gaps of 150 ms, each after 50 ms on: every gap strands the waits and requests
    // in flight when it starts, and starts new ones the hooks see end.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        kernel.pause_sampled_hooks();
        std::thread::sleep(Duration::from_millis(150));
        kernel
            .resume_sampled_hooks()
            .expect("putting the hooks back");
    }
    std::thread::sleep(Duration::from_millis(50));
    let reads = flood.reads.load(Ordering::Relaxed);
    flood.stop();
    kernel.detach();

    let runqueue = kernel.histograms().expect("histograms")[hist::RUNQUEUE as usize].buckets;
    let waits: u64 = runqueue.iter().sum();
    assert!(
        waits > 1000,
        "only {waits} run-queue waits timed: {runqueue:?}"
    );
    assert!(
        long_samples(&runqueue) <= 2,
        "run-queue waits over 65 ms: {} of {waits} ({runqueue:?})",
        long_samples(&runqueue)
    );

    let stats = kernel
        .block_snapshot()
        .expect("block stats")
        .get(&device.kernel_dev())
        .copied()
        .expect("our device counted");
    let timed: u64 = stats.latency_hist.iter().sum();
    // On for a quarter of the time: about a quarter of the reads are seen.
    assert!(
        stats.ops[op::READ] > reads / 10 && stats.ops[op::READ] < reads / 2,
        "{} reads counted of {reads}",
        stats.ops[op::READ]
    );
    assert!(timed > 100, "only {timed} reads timed");
    assert!(
        long_samples(&stats.latency_hist) <= 2,
        "reads over 65 ms: {} of {timed} ({:?})",
        long_samples(&stats.latency_hist),
        stats.latency_hist
    );
}

#[test]
fn under_a_flood_the_daemon_samples_block_and_scheduler_hooks_and_still_estimates_them() {
    if !privileged(
        "under_a_flood_the_daemon_samples_block_and_scheduler_hooks_and_still_estimates_them",
    ) {
        return;
    }
    let device = LoopDevice::new(16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("windows.jsonl");
    let flood = Flood::start(&device);
    let started = Instant::now();
    // 0.2% of a CPU: a few thousand reads and tens of thousands of switches a second are
    // over it, whatever this machine's speed.
    let status = std::process::Command::new(workspace_binary("collector"))
        .args(["record", "--window", "1s", "--duration", "6s"])
        .args(["--hook-budget", "0.2%", "--out"])
        .arg(&out)
        .status()
        .expect("running collector record");
    let reads_per_s = flood.reads.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    flood.stop();
    assert!(status.success(), "collector record failed: {status}");
    let windows = read_windows(&out);
    assert!(windows.len() >= 5, "{} windows", windows.len());
    let name = device.name();
    let mut estimates = Vec::new();
    for window in &windows {
        let fraction = window["block_sample_fraction"].as_f64().unwrap();
        assert!(
            fraction < 0.5,
            "block hooks on {fraction} of a window under {reads_per_s:.0} reads/s: {window}"
        );
        let sched = window["sched_sample_fraction"].as_f64().unwrap();
        assert!(
            sched < 0.5,
            "scheduler hooks on {sched} of a window under a ping-pong flood: {window}"
        );
        let ours = &window["block_devices"][name.as_str()];
        assert!(ours.is_object(), "{name} missing: {window}");
        // Counted while on, scaled to the window. The flood's own rate swings by 4x or more
        // from moment to moment (whether the loop device's worker runs on the reader's CPU or
        // the other), and a window sees only a few ms of it, so one window's estimate is
        // rough; a rate not scaled to the time on would read at the fraction of ours (a few
        // per cent), one scaled twice at many times ours.
        let estimated = ours["reads"].as_f64().unwrap() / window["window_s"].as_f64().unwrap();
        // The low bound is what tells a scaled rate from an unscaled one (which reads at
        // `fraction` of ours): 1.5 times that, or a tenth of ours where the hooks were on longer.
        // A flat tenth failed one window in a quiet CI run at 0.094 of ours with the hooks on
        // 0.047 of it: scaled, at a slow moment of the flood.
        let low = (1.5 * fraction).min(0.1);
        assert!(
            estimated > low * reads_per_s && estimated < 5.0 * reads_per_s,
            "estimated {estimated:.0} reads/s for our {reads_per_s:.0} (on {fraction}): {window}"
        );
        estimates.push(estimated);
        // From /proc/stat, exact: every hand-off is two switches.
        assert!(
            window["sched_context_switches_per_s"].as_f64().unwrap() > 1000.0,
            "{window}"
        );
        assert!(
            window["sched_runqueue_latency_p50_us"].as_f64().unwrap() > 0.0,
            "no run-queue waits timed: {window}"
        );
    }
    let mean = estimates.iter().sum::<f64>() / estimates.len() as f64;
    assert!(
        mean > 0.25 * reads_per_s && mean < 2.5 * reads_per_s,
        "estimated {mean:.0} reads/s on average for our {reads_per_s:.0}: {estimates:.0?}"
    );
}

#[test]
fn under_a_syscall_flood_a_trickle_of_block_requests_stays_watched_and_exact() {
    if !privileged("under_a_syscall_flood_a_trickle_of_block_requests_stays_watched_and_exact") {
        return;
    }
    use std::io::BufRead as _;
    let device = LoopDevice::new(16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("windows.jsonl");
    let flood = SyscallFlood::start();
    let mut recorder = std::process::Command::new(workspace_binary("collector"))
        .args(["record", "--window", "1s", "--duration", "6s"])
        .args(["--hook-budget", "0.5%", "--out"])
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running collector record");
    let mut log = std::io::BufReader::new(recorder.stderr.take().unwrap()).lines();
    assert!(
        log.by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("collecting")),
        "the recorder never started collecting"
    );
    // Drain the rest of its log so that it never blocks on a full pipe.
    let drain = std::thread::spawn(move || log.for_each(drop));
    // Well inside the recording: 100 direct reads a second for 3 s, far under what a third
    // of the budget pays for (~1 µs each), while the syscall flood is far over it.
    std::thread::sleep(Duration::from_millis(1200));
    let file = device.open_direct();
    let mut buffer = AlignedBuffer::new(4096, 0);
    let mut reads = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        use std::os::unix::fs::FileExt as _;
        file.read_exact_at(buffer.as_mut_slice(), (reads % 64) * 4096)
            .expect("direct read");
        reads += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = recorder.wait().unwrap();
    flood.stop();
    drain.join().unwrap();
    assert!(status.success(), "collector record failed: {status}");
    let windows = read_windows(&out);
    assert!(windows.len() >= 5, "{} windows", windows.len());
    for window in &windows {
        let fraction = window["syscall_sample_fraction"].as_f64().unwrap();
        assert!(
            fraction < 0.5,
            "syscall hook on {fraction} of a window: {window}"
        );
        let block = window["block_sample_fraction"].as_f64().unwrap();
        assert_eq!(block, 1.0, "block hooks went off: {window}");
    }
    // Had the block hooks gone off with the syscall hook, the reads would be an estimate
    // scaled from the few per cent of each window they saw, and almost never this number.
    let name = device.name();
    let counted: f64 = windows
        .iter()
        .filter_map(|window| window["block_devices"][name.as_str()]["reads"].as_f64())
        .sum();
    assert_eq!(
        counted, reads as f64,
        "{reads} direct reads made, {counted} counted"
    );
}
