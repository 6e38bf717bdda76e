//! Attribution with real containers (issue 20): podman runs two containers from an image this
//! test builds (busybox in a tarball, `podman import`: no registry), one burning CPU and
//! writing to a loop device, one idle beside it. The per-cgroup table is fed from cgroupfs
//! (cpuacct.usage and blkio.throttle.io_serviced of each container's cgroup, keyed by its
//! memory cgroup's inode, the id the kernel side charges on cgroup v1) until the kernel
//! side's per-cgroup counters are read into windows; the real resolver names the cgroups and
//! the real ranking names the culprit. Needs root (podman's storage is root's).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use collector::{
    judge::{
        NodeState, Verdict,
        culprits::{Attributor, Signal},
    },
    window::cgroups::{SampledShares, window_table},
    workload::{CgroupPaths, ContainerNames, PodNames, Resolver},
};
use collector_common::CgroupStats;
use integration_test::{
    LoopDevice,
    podman::{self, Container, Image},
    privileged,
};

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// What cgroupfs counts for a cgroup: CPU time and block requests issued.
fn cgroupfs_stats(path: &str) -> CgroupStats {
    let read = |file: PathBuf| std::fs::read_to_string(file).unwrap_or_default();
    let oncpu_ns = read(
        Path::new(CGROUP_FS)
            .join("cpuacct")
            .join(path)
            .join("cpuacct.usage"),
    )
    .trim()
    .parse()
    .unwrap_or(0);
    let io_ops = read(
        Path::new(CGROUP_FS)
            .join("blkio")
            .join(path)
            .join("blkio.throttle.io_serviced"),
    )
    .lines()
    .find_map(|line| line.strip_prefix("Total "))
    .and_then(|total| total.trim().parse().ok())
    .unwrap_or(0);
    CgroupStats {
        oncpu_ns,
        io_ops,
        ..CgroupStats::default()
    }
}

fn snapshot(cgroups: &[(u64, String)]) -> Vec<(u64, CgroupStats)> {
    cgroups
        .iter()
        .map(|(id, path)| (*id, cgroupfs_stats(path)))
        .collect()
}

#[test]
fn the_container_that_burns_and_writes_is_named_not_its_neighbour() {
    if !privileged("the_container_that_burns_and_writes_is_named_not_its_neighbour") {
        return;
    }
    if !podman::available("the_container_that_burns_and_writes_is_named_not_its_neighbour") {
        return;
    }
    let tag = std::process::id();
    let image = Image::busybox("attribution-test");

    let disk = LoopDevice::new(64 << 20);
    let device = disk.path.to_str().unwrap().to_string();
    let faulty_name = format!("t20r-faulty-{tag}");
    let neighbour_name = format!("t20r-neighbour-{tag}");
    // Both start idle, so the baseline sees each at rest.
    let faulty = Container::run(
        &faulty_name,
        &image,
        &["--device", &device],
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; \
         while true; do dd if=/dev/zero of=DEV bs=4096 count=2000 oflag=direct 2>/dev/null; done"
            .replace("DEV", &device)
            .as_str(),
    );
    let neighbour = Container::run(
        &neighbour_name,
        &image,
        &[],
        "while true; do sleep 0.2; done",
    );
    let cgroups: Vec<(u64, String)> = [&faulty, &neighbour]
        .iter()
        .map(|container| {
            let path = container.cgroup_path("memory");
            let id = std::fs::metadata(Path::new(CGROUP_FS).join("memory").join(&path))
                .unwrap()
                .ino();
            (id, path)
        })
        .collect();

    let mut attributor = Attributor::new(Resolver::new(
        CgroupPaths::new(Some(Path::new(CGROUP_FS).join("memory"))),
        PodNames::default(),
        ContainerNames::system(),
    ));
    let healthy = Verdict {
        state: NodeState::Healthy,
        score: 0.5,
        threshold: 4.0,
        cluster: Some(0),
        explanation: Vec::new(),
        anomalous: false,
    };
    let window = Duration::from_millis(500);
    let mut previous = snapshot(&cgroups);
    for _ in 0..6 {
        std::thread::sleep(window);
        let current = snapshot(&cgroups);
        // No sampler runs here: the hooks are on for the whole window.
        let table = window_table(
            &previous,
            &current,
            window.as_secs_f64(),
            SampledShares::WHOLE,
        );
        let (rows, attribution) = attributor.window(&table, &healthy);
        assert!(attribution.is_none());
        previous = current;
        // Both containers are named by podman's own list, apart.
        let names: Vec<&str> = rows
            .iter()
            .map(|row| row.workload.container.as_str())
            .collect();
        assert!(
            names
                .iter()
                .all(|name| *name == faulty_name || *name == neighbour_name),
            "{names:?}"
        );
    }

    // The fault: the first container writes to its disk as fast as it can.
    faulty.exec("echo > /tmp/go");
    std::thread::sleep(Duration::from_millis(300));
    previous = snapshot(&cgroups);
    std::thread::sleep(Duration::from_secs(1));
    let current = snapshot(&cgroups);
    let table = window_table(&previous, &current, 1.0, SampledShares::WHOLE);
    // What the judge says when I/O pressure moved (the verdict is the model's; here given).
    let degraded = Verdict {
        state: NodeState::Degraded,
        score: 12.0,
        threshold: 4.0,
        cluster: Some(0),
        explanation: vec![
            ("psi_io_some_pct".into(), 11.0),
            ("psi_cpu_some_pct".into(), 3.0),
        ],
        anomalous: true,
    };
    let (rows, attribution) = attributor.window(&table, &degraded);
    let attribution = attribution.expect("a degraded window is attributed");
    assert!(!attribution.culprits.is_empty(), "{rows:?}");
    let first = &attribution.culprits[0];
    assert_eq!(first.workload.container, faulty_name, "{attribution:?}");
    assert_eq!(first.workload.name, format!("podman {faulty_name}"));
    // Its writes (when blkio counts them: v1 here does not count direct writes to a loop
    // device without a throttle rule) and the CPU they burn are both its rise.
    assert!(
        [Signal::IoIssued, Signal::OncpuTime].contains(&first.signal),
        "{attribution:?}"
    );
    assert!(first.share > 0.5, "{attribution:?}");
    assert!(
        attribution
            .culprits
            .iter()
            .all(|blame| blame.workload.container != neighbour_name),
        "the idle neighbour is not named: {attribution:?}"
    );
    drop(faulty);
    drop(neighbour);
}
