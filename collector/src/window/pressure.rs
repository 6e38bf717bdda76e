//! Pressure read the cheap way, in user space once per window: PSI stall time and CFS
//! throttling of cgroups. The kernel already keeps these counters; eBPF would only copy them.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::{
    window::procfile::{ProcFile, ReadErrors, source},
    window::{counter_delta, delta_across},
};

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
/// `None`: missing (PSI could not be read at one end of the window, or the kernel has none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiWindow {
    pub cpu_some_pct: Option<f64>,
    pub io_some_pct: Option<f64>,
    pub io_full_pct: Option<f64>,
    pub memory_some_pct: Option<f64>,
    pub memory_full_pct: Option<f64>,
}

/// PSI totals (µs) at one instant, in [`PSI_RESOURCES`] order; `None` where a read failed.
pub type PsiTotals = [Option<u64>; PSI_RESOURCES.len()];

/// Reads `/proc/pressure/*`, keeping the three files open (see [`ProcFile`]). A kernel
/// without PSI (`psi=0`) gives missing values and one warning.
#[derive(Debug)]
pub struct PsiReader {
    /// cpu, io, memory.
    files: Vec<ProcFile>,
    previous: PsiTotals,
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
                "PSI unavailable ({} missing; boot with psi=1): pressure features are missing \
                 from every window",
                root.display()
            );
        }
        let mut reader = Self {
            files: ["cpu", "io", "memory"]
                .into_iter()
                .map(|name| ProcFile::new(source::PSI, root.join(name)))
                .collect(),
            previous: [None; PSI_RESOURCES.len()],
            available,
        };
        reader.previous = reader.read(&mut ReadErrors::default());
        reader
    }

    fn read(&mut self, errors: &mut ReadErrors) -> PsiTotals {
        let mut totals = [None; PSI_RESOURCES.len()];
        if !self.available {
            return totals;
        }
        for (file, name) in self.files.iter_mut().zip(["cpu", "io", "memory"]) {
            let path = file.path().to_path_buf();
            let Some(text) = file.read_noted(errors) else {
                continue;
            };
            for (slot, (resource, kind)) in totals.iter_mut().zip(PSI_RESOURCES) {
                if resource != name {
                    continue;
                }
                *slot = parse_psi_total_us(text, kind);
                if slot.is_none() {
                    errors.failed(source::PSI, &path, &format!("no `{kind}` total"));
                }
            }
        }
        totals
    }

    /// Stall shares since the previous call, over `window_s` seconds; failed reads are
    /// counted in `errors`.
    pub fn window(&mut self, window_s: f64, errors: &mut ReadErrors) -> PsiWindow {
        let current = self.read(errors);
        self.advance(current, window_s)
    }

    /// The window ending with totals `current`, which become the next window's start. A
    /// total missing at either end leaves its share missing: never computed across a gap.
    pub fn advance(&mut self, current: PsiTotals, window_s: f64) -> PsiWindow {
        let previous = std::mem::replace(&mut self.previous, current);
        let pct = |index: usize| {
            let stalled_us = delta_across(previous[index], current[index])?;
            if window_s <= 0.0 {
                return Some(0.0);
            }
            Some((stalled_us as f64 / 1e6 / window_s * 100.0).min(100.0))
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
    /// The last scan; `None` when it failed (the next good scan is only a baseline).
    previous: Option<HashMap<PathBuf, (u64, u64)>>,
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
            previous: None,
        };
        // The first scan is the baseline: throttling before we started is not this window's.
        reader.previous = reader.scan().ok();
        reader
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// Every cgroup's counters. A cgroup removed during the scan is no error; any other
    /// failed read (out of descriptors, say) fails the scan, since a cgroup missing from it
    /// would count from zero in the next window.
    fn scan(&self) -> Result<HashMap<PathBuf, (u64, u64)>, (PathBuf, std::io::Error)> {
        let (root, v2) = match &self.layout {
            CgroupLayout::V2(root) => (root, true),
            CgroupLayout::V1(root) => (root, false),
            CgroupLayout::None => return Ok(HashMap::new()),
        };
        // ENOENT, and ENODEV from a cgroup file whose cgroup is being removed.
        let gone = |err: &std::io::Error| {
            err.kind() == std::io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENODEV)
        };
        let mut found = HashMap::new();
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if found.len() >= MAX_CGROUPS {
                break;
            }
            let stat = dir.join("cpu.stat");
            match fs::read_to_string(&stat) {
                Ok(text) => {
                    if let Some(counters) = parse_cpu_stat(&text, v2) {
                        found.insert(dir.clone(), counters);
                    }
                }
                Err(err) if gone(&err) => {}
                Err(err) => return Err((stat, err)),
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if gone(&err) => continue,
                Err(err) => return Err((dir, err)),
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) if gone(&err) => continue,
                    Err(err) => return Err((dir, err)),
                };
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        Ok(found)
    }

    /// Throttling since the previous call; `None` (missing) when this scan or the previous
    /// one failed (counted in `errors`).
    pub fn window(&mut self, errors: &mut ReadErrors) -> Option<ThrottlingWindow> {
        let current = match self.scan() {
            Ok(current) => {
                errors.ok(source::CGROUP_CPU_STAT);
                Some(current)
            }
            Err((path, err)) => {
                errors.failed(source::CGROUP_CPU_STAT, &path, &err);
                None
            }
        };
        let previous = std::mem::replace(&mut self.previous, current);
        let (previous, current) = (previous?, self.previous.as_ref()?);
        let mut window = ThrottlingWindow::default();
        for (cgroup, &(periods, time_ns)) in current {
            // A cgroup born during the window counts from zero.
            let (previous_periods, previous_ns) = previous.get(cgroup).copied().unwrap_or((0, 0));
            let delta_periods = counter_delta(previous_periods, periods);
            window.throttled_periods += delta_periods;
            window.throttled_ns += counter_delta(previous_ns, time_ns);
            if delta_periods > 0 {
                window.throttled_cgroups += 1;
            }
        }
        Some(window)
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
        let mut errors = ReadErrors::default();
        let window = reader.window(2.0, &mut errors);
        assert!(
            (window.cpu_some_pct.unwrap() - 25.0).abs() < 1e-9,
            "{window:?}"
        );
        assert_eq!(window.io_some_pct, Some(100.0));
        assert!(
            (window.io_full_pct.unwrap() - 60.0).abs() < 1e-9,
            "{window:?}"
        );
        assert_eq!(window.memory_some_pct, Some(0.0));
        assert!(errors.total.is_empty());
    }

    #[test]
    fn a_kernel_without_psi_has_missing_pressure_not_zeros() {
        let mut reader = PsiReader::new("/nonexistent/pressure");
        let window = reader.window(5.0, &mut ReadErrors::default());
        assert_eq!(window, PsiWindow::default());
        assert_eq!(window.cpu_some_pct, None);
    }

    #[test]
    fn a_failed_psi_read_is_missing_and_the_next_read_only_sets_the_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let line = |total: u64| {
            format!(
                "some avg10=0 avg60=0 avg300=0 total={total}\nfull avg10=0 avg60=0 avg300=0 total=0\n"
            )
        };
        for name in ["io", "memory"] {
            fs::write(dir.path().join(name), line(0)).unwrap();
        }
        // cpu cannot be read at first: a directory opens, but a read on it fails.
        fs::create_dir(dir.path().join("cpu")).unwrap();
        let mut reader = PsiReader::new(dir.path());
        let mut errors = ReadErrors::default();
        let window = reader.window(1.0, &mut errors);
        assert_eq!(window.cpu_some_pct, None, "missing, never 0");
        assert_eq!(window.io_some_pct, Some(0.0), "the other files still read");
        assert_eq!(errors.total[source::PSI], 1);
        assert!(errors.reopens[source::PSI] >= 1);
        // It reads again with 900 s of stall since boot: that only sets the baseline.
        fs::remove_dir(dir.path().join("cpu")).unwrap();
        fs::write(dir.path().join("cpu"), line(900_000_000)).unwrap();
        let window = reader.window(1.0, &mut errors);
        assert_eq!(window.cpu_some_pct, None, "no share across the gap");
        fs::write(dir.path().join("cpu"), line(900_250_000)).unwrap();
        let window = reader.window(1.0, &mut errors);
        assert!(
            (window.cpu_some_pct.unwrap() - 25.0).abs() < 1e-9,
            "{window:?}"
        );
        assert_eq!(errors.total[source::PSI], 1, "counted once per failed read");
    }

    #[test]
    fn psi_shares_skip_windows_with_a_failed_end() {
        let mut reader = PsiReader::new("/nonexistent/pressure");
        let totals = |cpu: Option<u64>| [cpu, Some(0), Some(0), Some(0), Some(0)];
        reader.advance(totals(Some(1_000_000)), 1.0);
        assert_eq!(reader.advance(totals(None), 1.0).cpu_some_pct, None);
        assert_eq!(
            reader.advance(totals(Some(90_000_000)), 1.0).cpu_some_pct,
            None
        );
        assert_eq!(
            reader.advance(totals(Some(90_500_000)), 1.0).cpu_some_pct,
            Some(50.0)
        );
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
        let mut errors = ReadErrors::default();
        let window = reader.window(&mut errors).expect("a good scan");
        assert_eq!(window.throttled_periods, 6 + 2);
        assert_eq!(window.throttled_ns, 3_000_000 + 100_000);
        assert_eq!(window.throttled_cgroups, 2);
        assert_eq!(
            reader.window(&mut errors),
            Some(ThrottlingWindow::default())
        );
        // A cpu.stat that cannot be read fails the scan: missing, and the scan after it is
        // only a baseline (pod-a would otherwise count its whole history in one window).
        fs::remove_file(root.join("kubepods/pod-a/cpu.stat")).unwrap();
        fs::create_dir(root.join("kubepods/pod-a/cpu.stat")).unwrap();
        assert_eq!(reader.window(&mut errors), None);
        assert_eq!(errors.total[source::CGROUP_CPU_STAT], 1);
        fs::remove_dir(root.join("kubepods/pod-a/cpu.stat")).unwrap();
        stat(&root.join("kubepods/pod-a"), 30, 9000);
        assert_eq!(reader.window(&mut errors), None);
        stat(&root.join("kubepods/pod-a"), 31, 9100);
        let window = reader.window(&mut errors).expect("a good scan");
        assert_eq!(window.throttled_periods, 1);
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
