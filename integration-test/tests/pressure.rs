//! PSI and CFS throttling, caused for real: a busy loop in a cgroup with a tight CPU quota, and
//! more busy threads than CPUs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use collector::{
    window::pressure::{CgroupLayout, PsiReader, ThrottlingReader},
    window::procfile::ReadErrors,
};
use integration_test::privileged;

/// A cgroup made by the test with a CPU quota, removed (after killing its tasks) on drop.
struct QuotaCgroup {
    path: PathBuf,
    busy: Option<Child>,
}

impl QuotaCgroup {
    /// `quota_us` of CPU time per 100 ms period.
    fn new(layout: &CgroupLayout, quota_us: u64) -> Self {
        let name = format!("nodestate-test-{}", std::process::id());
        let path = match layout {
            CgroupLayout::V1(root) | CgroupLayout::V2(root) => root.join(name),
            CgroupLayout::None => panic!("no cpu cgroup controller on this machine"),
        };
        fs::create_dir(&path).expect("creating the test cgroup");
        match layout {
            CgroupLayout::V1(_) => {
                fs::write(path.join("cpu.cfs_period_us"), "100000").unwrap();
                fs::write(path.join("cpu.cfs_quota_us"), quota_us.to_string()).unwrap();
            }
            _ => fs::write(path.join("cpu.max"), format!("{quota_us} 100000")).unwrap(),
        }
        Self { path, busy: None }
    }

    fn run_busy_loop(&mut self) {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("starting a busy loop");
        fs::write(self.path.join("cgroup.procs"), child.id().to_string())
            .expect("moving the busy loop into the cgroup");
        self.busy = Some(child);
    }
}

impl Drop for QuotaCgroup {
    fn drop(&mut self) {
        if let Some(mut child) = self.busy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The directory can be removed once its last task has gone.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_busy_loop_over_its_cpu_quota_shows_as_throttling() {
    if !privileged("a_busy_loop_over_its_cpu_quota_shows_as_throttling") {
        return;
    }
    let mut reader = ThrottlingReader::new(Path::new("/sys/fs/cgroup"));
    let mut cgroup = QuotaCgroup::new(reader.layout(), 10_000);
    let mut errors = ReadErrors::default();
    let _ = reader.window(&mut errors);
    cgroup.run_busy_loop();
    // 10 ms per 100 ms period: a busy loop is throttled in every period, ~10 per second.
    std::thread::sleep(Duration::from_millis(1500));
    let window = reader.window(&mut errors).expect("the cgroup tree reads");
    assert!(
        window.throttled_periods >= 8,
        "1.5 s over quota gave {} throttled periods",
        window.throttled_periods
    );
    assert!(window.throttled_cgroups >= 1);
    // Each throttled period keeps the loop off the CPU for most of the 100 ms.
    assert!(
        window.throttled_ns >= 8 * 50_000_000,
        "throttled only {} ns",
        window.throttled_ns
    );
}

#[test]
fn more_busy_threads_than_cpus_show_as_cpu_pressure() {
    if !privileged("more_busy_threads_than_cpus_show_as_cpu_pressure") {
        return;
    }
    let mut psi = PsiReader::default();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = std::time::Instant::now();
    let mut errors = ReadErrors::default();
    let _ = psi.window(1.0, &mut errors);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..cpus * 3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let window = psi.window(started.elapsed().as_secs_f64(), &mut errors);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    // Three runnable threads per CPU: some task is always waiting.
    let cpu_some_pct = window.cpu_some_pct.expect("PSI reads");
    assert!(cpu_some_pct >= 30.0, "cpu pressure only {cpu_some_pct:.1}%");
}
