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
    process::Command,
    time::Duration,
};

use collector::{
    judge::{
        NodeState, Verdict,
        culprits::{Attributor, Signal},
    },
    window::cgroups::window_table,
    workload::{CgroupPaths, ContainerNames, PodNames, Resolver},
};
use collector_common::CgroupStats;
use integration_test::{LoopDevice, privileged};

const CGROUP_FS: &str = "/sys/fs/cgroup";

fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs");
    assert!(
        output.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A container removed when dropped.
struct Container(String);

impl Container {
    fn run(name: &str, image: &str, extra: &[&str], script: &str) -> Self {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", name])
            .output();
        let mut args = vec![
            // crun refuses this host's hybrid cgroup layout; runc runs (see xtask/src/image.rs).
            "--runtime",
            "runc",
            "run",
            "-d",
            "--network=none",
            "--name",
            name,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image, "/bin/sh", "-c", script]);
        podman(&args);
        Container(name.to_string())
    }

    /// Its cgroup path in the memory hierarchy, from its first process.
    fn cgroup_path(&self) -> String {
        let pid = podman(&["inspect", "-f", "{{.State.Pid}}", &self.0]);
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        cgroups
            .lines()
            .find_map(|line| {
                let (_, rest) = line.split_once(':')?;
                let (controllers, path) = rest.split_once(':')?;
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.trim_start_matches('/').to_string())
            })
            .expect("a memory cgroup")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.0])
            .output();
    }
}

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
    let tag = std::process::id();
    let image = format!("localhost/nodestate-attribution-test:{tag}");
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("rootfs/tmp")).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    for applet in ["sh", "sleep", "dd", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tarball = root.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(root.path().join("rootfs"))
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    podman(&["import", tarball.to_str().unwrap(), &image]);
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
        }
    }
    let _image = Image(image.clone());

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
            let path = container.cgroup_path();
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
        let table = window_table(&previous, &current, window.as_secs_f64());
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
    podman(&["exec", &faulty_name, "/bin/sh", "-c", "echo > /tmp/go"]);
    std::thread::sleep(Duration::from_millis(300));
    previous = snapshot(&cgroups);
    std::thread::sleep(Duration::from_secs(1));
    let current = snapshot(&cgroups);
    let table = window_table(&previous, &current, 1.0);
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
