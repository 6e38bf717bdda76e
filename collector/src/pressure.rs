//! Pressure read the cheap way, in user space once per window: PSI stall time and CFS
//! throttling of cgroups. The kernel already keeps these counters; eBPF would only copy them.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::window::counter_delta;

/// The stall resources PSI reports on, and which of its lines we read.
const PSI_RESOURCES: [(&str, &str); 5] = [
    ("cpu", "some"),
    ("io", "some"),
    ("io", "full"),
    ("memory", "some"),
    ("memory", "full"),
];

/// Parses the `total=` (µs stalled since boot) of the `kind` ("some"/"full") line of a PSI file.
pub fn parse_psi_total_us(text: &str, kind: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(kind))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Per window: the share of wall time some (or all) tasks were stalled on a resource, in %.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiWindow {
    pub cpu_some_pct: f64,
    pub io_some_pct: f64,
    pub io_full_pct: f64,
    pub memory_some_pct: f64,
    pub memory_full_pct: f64,
}

/// Reads `/proc/pressure/*`. A kernel without PSI (`psi=0`) yields zeros and one warning.
#[derive(Debug)]
pub struct PsiReader {
    root: PathBuf,
    previous: Option<[u64; PSI_RESOURCES.len()]>,
    available: bool,
}

impl Default for PsiReader {
    fn default() -> Self {
        Self::new("/proc/pressure")
    }
}

impl PsiReader {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let available = root.join("cpu").exists();
        if !available {
            tracing::warn!(
                "PSI unavailable ({} missing; boot with psi=1): pressure features read 0",
                root.display()
            );
        }
        let mut reader = Self {
            root,
            previous: None,
            available,
        };
        reader.previous = reader.read();
        reader
    }

    fn read(&self) -> Option<[u64; PSI_RESOURCES.len()]> {
        if !self.available {
            return None;
        }
        let mut totals = [0u64; PSI_RESOURCES.len()];
        for (slot, (resource, kind)) in totals.iter_mut().zip(PSI_RESOURCES) {
            let text = fs::read_to_string(self.root.join(resource)).ok()?;
            *slot = parse_psi_total_us(&text, kind).unwrap_or(0);
        }
        Some(totals)
    }

    /// Stall shares since the previous call, over `window_s` seconds.
    pub fn window(&mut self, window_s: f64) -> PsiWindow {
        let current = self.read();
        let (Some(previous), Some(now)) = (self.previous, current) else {
            self.previous = current;
            return PsiWindow::default();
        };
        self.previous = current;
        let pct = |index: usize| {
            if window_s <= 0.0 {
                return 0.0;
            }
            let stalled_s = counter_delta(previous[index], now[index]) as f64 / 1e6;
            (stalled_s / window_s * 100.0).min(100.0)
        };
        PsiWindow {
            cpu_some_pct: pct(0),
            io_some_pct: pct(1),
            io_full_pct: pct(2),
            memory_some_pct: pct(3),
            memory_full_pct: pct(4),
        }
    }
}

/// Which cgroup layout the node has: Kubernetes nodes are mostly v2, older ones (and our test
/// machines) v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// `cpu.stat` with `nr_throttled` and `throttled_usec`.
    V2(PathBuf),
    /// The cpu controller's hierarchy: `cpu.stat` with `nr_throttled` and `throttled_time` (ns).
    V1(PathBuf),
    None,
}

impl CgroupLayout {
    pub fn detect(cgroup_root: &Path) -> Self {
        let controllers = fs::read_to_string(cgroup_root.join("cgroup.controllers"));
        if controllers.is_ok_and(|text| text.split_whitespace().any(|c| c == "cpu")) {
            return Self::V2(cgroup_root.to_path_buf());
        }
        for name in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
            let dir = cgroup_root.join(name);
            if dir.join("cpu.stat").exists() {
                return Self::V1(dir);
            }
        }
        Self::None
    }
}

/// Throttling counters of one cgroup: (periods throttled, time throttled in ns).
pub fn parse_cpu_stat(text: &str, v2: bool) -> Option<(u64, u64)> {
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse::<u64>().ok())?
        })
    };
    let periods = value("nr_throttled")?;
    let time_ns = if v2 {
        value("throttled_usec")?.saturating_mul(1000)
    } else {
        value("throttled_time")?
    };
    Some((periods, time_ns))
}

/// Per window: CFS bandwidth throttling summed over every cgroup of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThrottlingWindow {
    pub throttled_periods: u64,
    pub throttled_ns: u64,
    /// Cgroups throttled at least once in the window.
    pub throttled_cgroups: u64,
}

/// Walks the cpu cgroup tree each window. Bounded: at most `MAX_CGROUPS` directories, at most
/// `MAX_DEPTH` deep, so a node with a runaway number of cgroups costs a bounded scan.
#[derive(Debug)]
pub struct ThrottlingReader {
    layout: CgroupLayout,
    previous: HashMap<PathBuf, (u64, u64)>,
}

const MAX_CGROUPS: usize = 20_000;
const MAX_DEPTH: usize = 10;

impl ThrottlingReader {
    pub fn new(cgroup_root: &Path) -> Self {
        let layout = CgroupLayout::detect(cgroup_root);
        if layout == CgroupLayout::None {
            tracing::warn!(
                "no cpu cgroup controller under {}: CFS throttling features read 0",
                cgroup_root.display()
            );
        }
        let mut reader = Self {
            layout,
            previous: HashMap::new(),
        };
        // The first scan is the baseline: throttling before we started is not this window's.
        reader.previous = reader.scan();
        reader
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    fn scan(&self) -> HashMap<PathBuf, (u64, u64)> {
        let (root, v2) = match &self.layout {
            CgroupLayout::V2(root) => (root, true),
            CgroupLayout::V1(root) => (root, false),
            CgroupLayout::None => return HashMap::new(),
        };
        let mut found = HashMap::new();
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if found.len() >= MAX_CGROUPS {
                break;
            }
            if let Ok(text) = fs::read_to_string(dir.join("cpu.stat"))
                && let Some(counters) = parse_cpu_stat(&text, v2)
            {
                found.insert(dir.clone(), counters);
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                        stack.push((entry.path(), depth + 1));
                    }
                }
            }
        }
        found
    }

    pub fn window(&mut self) -> ThrottlingWindow {
        let current = self.scan();
        let mut window = ThrottlingWindow::default();
        for (cgroup, &(periods, time_ns)) in &current {
            // A cgroup born during the window counts from zero.
            let (previous_periods, previous_ns) =
                self.previous.get(cgroup).copied().unwrap_or((0, 0));
            let delta_periods = counter_delta(previous_periods, periods);
            window.throttled_periods += delta_periods;
            window.throttled_ns += counter_delta(previous_ns, time_ns);
            if delta_periods > 0 {
                window.throttled_cgroups += 1;
            }
        }
        self.previous = current;
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_totals_are_parsed_per_kind() {
        let text = "some avg10=1.00 avg60=0.50 avg300=0.10 total=36100599\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=12550675\n";
        assert_eq!(parse_psi_total_us(text, "some"), Some(36_100_599));
        assert_eq!(parse_psi_total_us(text, "full"), Some(12_550_675));
        assert_eq!(parse_psi_total_us("garbage", "some"), None);
    }

    #[test]
    fn psi_window_is_the_stalled_share_of_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let write = |cpu: u64, io: u64, mem: u64| {
            for (name, total) in [("cpu", cpu), ("io", io), ("memory", mem)] {
                fs::write(
                    dir.path().join(name),
                    format!(
                        "some avg10=0 avg60=0 avg300=0 total={total}\nfull avg10=0 avg60=0 avg300=0 total={}\n",
                        total / 2
                    ),
                )
                .unwrap();
            }
        };
        write(1_000_000, 0, 0);
        let mut reader = PsiReader::new(dir.path());
        // 2 s window: cpu stalled 0.5 s (25%), io 2 s (100%, capped), memory 0.
        write(1_500_000, 2_400_000, 0);
        let window = reader.window(2.0);
        assert!((window.cpu_some_pct - 25.0).abs() < 1e-9, "{window:?}");
        assert_eq!(window.io_some_pct, 100.0);
        assert!((window.io_full_pct - 60.0).abs() < 1e-9, "{window:?}");
        assert_eq!(window.memory_some_pct, 0.0);
    }

    #[test]
    fn a_missing_psi_reads_zero() {
        let mut reader = PsiReader::new("/nonexistent/pressure");
        assert_eq!(reader.window(5.0), PsiWindow::default());
    }

    #[test]
    fn cpu_stat_in_both_layouts() {
        let v1 = "nr_periods 120\nnr_throttled 40\nthrottled_time 9000000\nnr_bursts 0\n";
        assert_eq!(parse_cpu_stat(v1, false), Some((40, 9_000_000)));
        let v2 = "usage_usec 100\nuser_usec 50\nsystem_usec 50\nnr_periods 10\nnr_throttled 3\nthrottled_usec 1500\n";
        assert_eq!(parse_cpu_stat(v2, true), Some((3, 1_500_000)));
        // A v2 root cgroup has no bandwidth fields.
        assert_eq!(parse_cpu_stat("usage_usec 100\n", true), None);
    }

    #[test]
    fn throttling_sums_deltas_over_the_tree_and_counts_new_cgroups_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let stat = |path: &Path, throttled: u64, usec: u64| {
            fs::create_dir_all(path).unwrap();
            fs::write(
                path.join("cpu.stat"),
                format!(
                    "usage_usec 1\nnr_periods 99\nnr_throttled {throttled}\nthrottled_usec {usec}\n"
                ),
            )
            .unwrap();
        };
        stat(&root.join("kubepods/pod-a"), 10, 1000);
        stat(&root.join("kubepods/pod-b"), 5, 500);
        let mut reader = ThrottlingReader::new(root);
        assert_eq!(reader.layout(), &CgroupLayout::V2(root.to_path_buf()));
        stat(&root.join("kubepods/pod-a"), 16, 4000);
        stat(&root.join("kubepods/pod-c"), 2, 100);
        let window = reader.window();
        assert_eq!(window.throttled_periods, 6 + 2);
        assert_eq!(window.throttled_ns, 3_000_000 + 100_000);
        assert_eq!(window.throttled_cgroups, 2);
        assert_eq!(reader.window(), ThrottlingWindow::default());
    }

    #[test]
    fn v1_layout_is_found_under_the_cpu_controller() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("cpu,cpuacct")).unwrap();
        fs::write(
            dir.path().join("cpu,cpuacct/cpu.stat"),
            "nr_throttled 0\nthrottled_time 0\n",
        )
        .unwrap();
        assert_eq!(
            CgroupLayout::detect(dir.path()),
            CgroupLayout::V1(dir.path().join("cpu,cpuacct"))
        );
        assert_eq!(
            CgroupLayout::detect(Path::new("/nonexistent")),
            CgroupLayout::None
        );
    }
}
