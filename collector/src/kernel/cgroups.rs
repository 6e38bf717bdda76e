//! Per-cgroup attribution, the kernel stage's user-space side (issue 20): which cgroup id the
//! programs charge (decided before load), the tracepoint fields they read, the start-up scan
//! of `/proc` that seeds their task → cgroup table, reading the per-cgroup table each window,
//! and removing the entries of cgroups that no longer exist.
//!
//! Memory the kernel side holds for it (bounded, allocated at load): the per-cgroup table,
//! 4096 entries × 152 bytes per CPU (608 KiB per CPU: 1.2 MiB on 2 CPUs, 38 MiB on 64) plus
//! the hash's own ~100 bytes per entry; the task table, 65,536 × (4 + 8 bytes + ~100 of
//! overhead) ≈ 7 MiB; the socket table 16,384 entries ≈ 2 MiB; the bio-origin array 8192 × 24
//! bytes = 192 KiB.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use collector_common::{
    ABSENT, CGROUP_REFUSED, CGROUP_UNATTRIBUTED, CgroupStats, CgroupTracepointLayout,
    cgroup_counter, cgroup_errno, cgroup_mode,
};
use tracing::{info, warn};

use super::tracefs::Tracefs;

/// What the operator asked for (`--cgroup-attribution`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttributionChoice {
    /// cgroup v2 when `/sys/fs/cgroup` is cgroup2, else the v1 memory hierarchy, else cpu.
    #[default]
    Auto,
    /// The cgroup2 hierarchy wherever it is mounted (e.g. `/sys/fs/cgroup/unified` beside v1
    /// controllers): useful only where tasks are placed in it.
    Unified,
    /// The v1 memory hierarchy, else cpu, even where cgroup2 is mounted at `/sys/fs/cgroup`.
    V1,
    /// No per-cgroup counting (the programs' attribution paths are pruned at load).
    Off,
}

/// What the programs charge events to, decided before load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    /// The default hierarchy's id (`bpf_get_current_cgroup_id`); `root` is its mount.
    Unified { root: PathBuf },
    /// The task's cgroup in one v1 hierarchy.
    V1 {
        /// `memory` or `cpu`.
        controller: &'static str,
        /// Its hierarchy id in `/proc/cgroups` (what `cgroup_attach_task` reports as root).
        hierarchy_id: u32,
        root: PathBuf,
    },
    /// Nothing is charged per cgroup; `reason` says why.
    Off { reason: String },
}

impl Attribution {
    /// The `CGROUP_MODE` the programs get.
    pub fn mode(&self) -> u32 {
        match self {
            Self::Unified { .. } => cgroup_mode::UNIFIED,
            Self::V1 { .. } => cgroup_mode::V1,
            Self::Off { .. } => cgroup_mode::OFF,
        }
    }

    /// The hierarchy's mount, where cgroup directories (and so their ids) are found.
    pub fn root(&self) -> Option<&Path> {
        match self {
            Self::Unified { root } | Self::V1 { root, .. } => Some(root),
            Self::Off { .. } => None,
        }
    }

    /// One line for the start-up log and `collector probes`.
    pub fn describe(&self) -> String {
        match self {
            Self::Unified { root } => format!(
                "cgroup v2 (default hierarchy at {}, bpf_get_current_cgroup_id)",
                root.display()
            ),
            Self::V1 {
                controller,
                hierarchy_id,
                root,
            } => format!(
                "cgroup v1 {controller} hierarchy (id {hierarchy_id}, at {}; task table fed by \
                 cgroup_attach_task, forks and a /proc scan)",
                root.display()
            ),
            Self::Off { reason } => format!("off ({reason})"),
        }
    }
}

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we pass; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// Decides what to charge, from the operator's choice and what this node mounts.
pub fn decide(choice: AttributionChoice) -> Attribution {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mountinfo = read("/proc/self/mountinfo");
    let default_root = Path::new("/sys/fs/cgroup");
    let v1 = || {
        let cgroups = read("/proc/cgroups");
        for controller in ["memory", "cpu"] {
            let Some(hierarchy_id) = v1_hierarchy_id(&cgroups, controller) else {
                continue;
            };
            if let Some(root) = v1_mount(&mountinfo, controller) {
                return Attribution::V1 {
                    controller,
                    hierarchy_id,
                    root,
                };
            }
        }
        Attribution::Off {
            reason: "no cgroup v1 memory or cpu hierarchy is mounted".into(),
        }
    };
    match choice {
        AttributionChoice::Off => Attribution::Off {
            reason: "--cgroup-attribution off".into(),
        },
        AttributionChoice::Auto if is_cgroup2(default_root) => Attribution::Unified {
            root: default_root.to_path_buf(),
        },
        AttributionChoice::Auto | AttributionChoice::V1 => v1(),
        AttributionChoice::Unified => {
            let root = if is_cgroup2(default_root) {
                Some(default_root.to_path_buf())
            } else {
                cgroup2_mount(&mountinfo)
            };
            match root {
                Some(root) => Attribution::Unified { root },
                None => Attribution::Off {
                    reason: "--cgroup-attribution unified, but no cgroup2 file system is mounted"
                        .into(),
                },
            }
        }
    }
}

/// The hierarchy id of an enabled v1 `controller` in `/proc/cgroups`
/// (`#subsys_name hierarchy num_cgroups enabled`); `None` if absent, disabled, or bound to
/// the unified hierarchy (id 0).
pub fn v1_hierarchy_id(proc_cgroups: &str, controller: &str) -> Option<u32> {
    proc_cgroups
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[0] != controller || fields[3] != "1" {
                return None;
            }
            fields[1].parse().ok().filter(|id| *id != 0)
        })
}

/// Splits a mountinfo line into (mount point, file system type, super options).
fn mountinfo_fields(line: &str) -> Option<(&str, &str, &str)> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let _source = after.next()?;
    let options = after.next().unwrap_or("");
    Some((mount_point, fstype, options))
}

/// Where the v1 hierarchy holding `controller` is mounted (`/proc/self/mountinfo`).
pub fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount_point, fstype, options) = mountinfo_fields(line)?;
        (fstype == "cgroup" && options.split(',').any(|option| option == controller))
            .then(|| PathBuf::from(unescape_mount_point(mount_point)))
    })
}

/// Where a cgroup2 file system is mounted.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount_point, fstype, _) = mountinfo_fields(line)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_point(mount_point)))
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape_mount_point(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\'
            && index + 3 < bytes.len()
            && let Ok(value) = u8::from_str_radix(&text[index + 1..index + 4], 8)
        {
            out.push(value);
            index += 4;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The task's cgroup path in `/proc/PID/cgroup` (`hierarchy-id:controllers:path` lines):
/// the v1 line whose controllers include `controller`, or with `None` the unified line
/// (`0::path`). Paths are relative to the reader's cgroup namespace root.
pub fn task_cgroup_path<'a>(proc_cgroup: &'a str, controller: Option<&str>) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let matches = match controller {
            Some(controller) => controllers.split(',').any(|name| name == controller),
            None => id == "0" && controllers.is_empty(),
        };
        (matches && path.starts_with('/')).then_some(path)
    })
}

/// The field offsets the attribution programs read; missing ones are [`ABSENT`] and listed.
pub fn tracepoint_layout(tracefs: &Tracefs) -> (CgroupTracepointLayout, Vec<String>) {
    let mut absent = Vec::new();
    let mut offset = |category: &str, name: &str, field: &str, size: u32| -> u32 {
        match tracefs
            .event_format(category, name)
            .and_then(|format| format.offset(field, size))
        {
            Ok(offset) => offset,
            Err(_) => {
                absent.push(format!("{category}:{name} {field}"));
                ABSENT
            }
        }
    };
    let layout = CgroupTracepointLayout {
        attach_dst_root: offset("cgroup", "cgroup_attach_task", "dst_root", 4),
        attach_dst_id: offset("cgroup", "cgroup_attach_task", "dst_id", 8),
        attach_pid: offset("cgroup", "cgroup_attach_task", "pid", 4),
        fork_parent_pid: offset("sched", "sched_process_fork", "parent_pid", 4),
        fork_child_pid: offset("sched", "sched_process_fork", "child_pid", 4),
        victim_pid: offset("oom", "mark_victim", "pid", 4),
        signal_pid: offset("signal", "signal_generate", "pid", 4),
        bio_dev: offset("block", "block_bio_queue", "dev", 4),
        bio_sector: offset("block", "block_bio_queue", "sector", 8),
        bio_nr_sector: offset("block", "block_bio_queue", "nr_sector", 4),
        set_state_skaddr: offset("sock", "inet_sock_set_state", "skaddr", 8),
        retransmit_skaddr: offset("tcp", "tcp_retransmit_skb", "skaddr", 8),
        receive_reset_skaddr: offset("tcp", "tcp_receive_reset", "skaddr", 8),
        send_reset_skaddr: offset("tcp", "tcp_send_reset", "skaddr", 8),
        // Not a tracepoint field: set from the kernel's BTF at load, in unified mode only.
        task_flags: ABSENT,
    };
    (layout, absent)
}

/// The cgroup id of a cgroup directory: its inode number, which on 64-bit kernels is the
/// kernfs node id the kernel reports (`cgroup_attach_task`'s `dst_id`,
/// `bpf_get_current_cgroup_id`).
pub fn cgroup_id(dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// Whether `/proc/PID/stat` is a kernel thread's (its flags, the 9th field, carry
/// `PF_KTHREAD`). The command name in parentheses may hold spaces and parentheses: the fields
/// are counted after the last `)`.
pub fn is_kernel_thread(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, fields)| fields.split_whitespace().nth(6))
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_some_and(|flags| flags & u64::from(collector_common::PF_KTHREAD) != 0)
}

/// Every thread's cgroup id, read from `/proc/PID/task/TID/cgroup` (threads of one process
/// may sit in different v1 cgroups). Threads that exit during the scan are skipped.
///
/// Kernel threads are left out: they sit in the root cgroup but work on behalf of no one in
/// it (the loop driver's workers write a container's I/O to the backing file, kswapd
/// reclaims for everyone), so their events count as unattributed, not as the root
/// workload's. Kernel threads started later are children of kthreadd, which is not in the
/// table either, so the fork program does not add them.
pub fn scan_tasks(attribution: &Attribution) -> Vec<(u32, u64)> {
    let (controller, root) = match attribution {
        Attribution::Unified { root } => (None, root),
        Attribution::V1 {
            controller, root, ..
        } => (Some(*controller), root),
        Attribution::Off { .. } => return Vec::new(),
    };
    let mut ids: HashMap<String, Option<u64>> = HashMap::new();
    let mut tasks = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return tasks;
    };
    for process in processes.flatten() {
        let Some(_pid) = process
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        match std::fs::read_to_string(process.path().join("stat")) {
            Ok(stat) if !is_kernel_thread(&stat) => {}
            // A kernel thread, or gone.
            _ => continue,
        }
        let Ok(threads) = std::fs::read_dir(process.path().join("task")) else {
            continue;
        };
        for thread in threads.flatten() {
            let Some(tid) = thread
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(thread.path().join("cgroup")) else {
                continue;
            };
            let Some(path) = task_cgroup_path(&text, controller) else {
                continue;
            };
            let id = *ids
                .entry(path.to_string())
                .or_insert_with(|| cgroup_id(&root.join(path.trim_start_matches('/'))).ok());
            if let Some(id) = id {
                tasks.push((tid, id));
            }
        }
    }
    tasks
}

/// Ids of every cgroup directory under `root` (bounded: [`MAX_CGROUPS`] directories).
pub fn live_cgroup_ids(root: &Path) -> std::io::Result<HashSet<u64>> {
    let mut ids = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    ids.insert(cgroup_id(root)?);
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            if let Ok(metadata) = entry.metadata() {
                ids.insert(metadata.ino());
            }
            if ids.len() >= MAX_CGROUPS {
                return Ok(ids);
            }
            stack.push(entry.path());
        }
    }
    Ok(ids)
}

/// The sweep stops walking after this many cgroups (and then removes nothing it did not see
/// only if the walk finished: see [`CgroupTables::remove_dead`]).
pub const MAX_CGROUPS: usize = 200_000;

/// Sums the per-CPU copies of one cgroup's counters.
pub fn sum_cgroup_cpus<'a>(per_cpu: impl IntoIterator<Item = &'a CgroupStats>) -> CgroupStats {
    let mut total = CgroupStats::default();
    for stats in per_cpu {
        total.oncpu_ns += stats.oncpu_ns;
        total.runq_wait_ns += stats.runq_wait_ns;
        total.io_ops += stats.io_ops;
        total.io_bytes += stats.io_bytes;
        total.io_latency_ns += stats.io_latency_ns;
        for slot in 0..cgroup_errno::COUNT {
            total.errors[slot] += stats.errors[slot];
        }
        total.exits_nonzero += stats.exits_nonzero;
        total.fatal_signals += stats.fatal_signals;
        total.oom_victims += stats.oom_victims;
        total.reclaim_stall_ns += stats.reclaim_stall_ns;
        total.tcp_retransmits += stats.tcp_retransmits;
        total.tcp_resets += stats.tcp_resets;
        total.tcp_connect_failures += stats.tcp_connect_failures;
    }
    total
}

/// Attribution's own counters, cumulative (for `nodestate_cgroup_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttributionCounters {
    /// Events charged to the "refused" key because the table was full.
    pub refused_events: u64,
    /// Events whose cgroup was unknown.
    pub unattributed_events: u64,
    /// Threads the task table had no room for.
    pub task_table_full: u64,
    /// Entries of the per-cgroup table in use (the two special keys included).
    pub entries: u64,
    /// Entries of cgroups that no longer exist, removed by the daemon.
    pub removed: u64,
}

/// The per-cgroup maps, held by the kernel collector while attribution is on.
pub struct CgroupTables {
    pub(super) stats: PerCpuHashMap<MapData, u64, CgroupStats>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) removed: u64,
    pub(super) entries: u64,
}

impl CgroupTables {
    /// Takes the maps and inserts the two special keys, so a full table can always charge
    /// `CGROUP_REFUSED` and unknown cgroups `CGROUP_UNATTRIBUTED`.
    pub(super) fn new(
        mut stats: PerCpuHashMap<MapData, u64, CgroupStats>,
        counters: PerCpuArray<MapData, u64>,
    ) -> anyhow::Result<Self> {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| err)?;
        for key in [CGROUP_UNATTRIBUTED, CGROUP_REFUSED] {
            let zeros = PerCpuValues::try_from(vec![CgroupStats::default(); cpus])?;
            stats
                .insert(key, zeros, 0)
                .with_context(|| format!("inserting key {key:#x} into the per-cgroup table"))?;
        }
        Ok(Self {
            stats,
            counters,
            removed: 0,
            entries: 2,
        })
    }

    /// Cumulative counters of every cgroup in the table, summed over CPUs.
    pub fn snapshot(&mut self) -> anyhow::Result<Vec<(u64, CgroupStats)>> {
        let mut rows = Vec::new();
        for entry in self.stats.iter() {
            let (id, per_cpu) = entry.context("reading the per-cgroup table")?;
            rows.push((id, sum_cgroup_cpus(per_cpu.iter())));
        }
        self.entries = rows.len() as u64;
        Ok(rows)
    }

    pub fn counters(&self) -> anyhow::Result<AttributionCounters> {
        let slot = |index: u32| -> anyhow::Result<u64> {
            Ok(self
                .counters
                .get(&index, 0)
                .context("reading the attribution counters")?
                .iter()
                .sum())
        };
        Ok(AttributionCounters {
            refused_events: slot(cgroup_counter::REFUSED_EVENTS)?,
            unattributed_events: slot(cgroup_counter::UNATTRIBUTED_EVENTS)?,
            task_table_full: slot(cgroup_counter::TASK_TABLE_FULL)?,
            entries: self.entries,
            removed: self.removed,
        })
    }

    /// Removes the entries of cgroups no longer under `root`; returns how many. The keys are
    /// listed before the walk, so every key's cgroup existed before it started: one the walk
    /// does not find was removed. A walk cut short at [`MAX_CGROUPS`] removes nothing.
    pub fn remove_dead(&mut self, root: &Path) -> usize {
        let keys: Vec<u64> = self
            .stats
            .keys()
            .filter_map(Result::ok)
            .filter(|key| *key != CGROUP_UNATTRIBUTED && *key != CGROUP_REFUSED)
            .collect();
        let live = match live_cgroup_ids(root) {
            Ok(live) if live.len() < MAX_CGROUPS => live,
            Ok(_) => {
                warn!(
                    root = %root.display(),
                    "more than {MAX_CGROUPS} cgroups: dead ones are not removed from the \
                     per-cgroup table"
                );
                return 0;
            }
            Err(err) => {
                warn!(root = %root.display(), "cannot walk the cgroup tree: {err}");
                return 0;
            }
        };
        let mut removed = 0;
        for key in keys.into_iter().filter(|key| !live.contains(key)) {
            if self.stats.remove(&key).is_ok() {
                removed += 1;
            }
        }
        self.removed += removed as u64;
        if removed > 0 {
            info!(
                removed,
                "per-cgroup table: entries of removed cgroups dropped"
            );
        }
        removed as usize
    }
}

impl super::KernelCollector {
    /// What the programs charge events to.
    pub fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// Cumulative per-cgroup counters (summed over CPUs); empty while attribution is off.
    pub fn cgroup_snapshot(&mut self) -> anyhow::Result<Vec<(u64, CgroupStats)>> {
        match self.cgroups.as_mut() {
            Some(tables) => tables.snapshot(),
            None => Ok(Vec::new()),
        }
    }

    /// Attribution's own counters; `None` while it is off.
    pub fn attribution_counters(&self) -> Option<anyhow::Result<AttributionCounters>> {
        self.cgroups.as_ref().map(CgroupTables::counters)
    }

    /// Drops the entries of cgroups that no longer exist (see [`CgroupTables::remove_dead`]).
    pub fn remove_dead_cgroups(&mut self) -> usize {
        match (self.cgroups.as_mut(), self.attribution.root()) {
            (Some(tables), Some(root)) => tables.remove_dead(root),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
        cpuset\t3\t3\t1\ncpu\t1\t3\t1\nmemory\t4\t16\t1\nnet_cls\t0\t2\t1\nblkio\t7\t3\t0\n";

    #[test]
    fn kernel_threads_are_told_by_their_stat_flags() {
        // kthreadd and a kworker (flags 0x208040), a shell (0x400100), a command with
        // parentheses and spaces in its name.
        assert!(is_kernel_thread(
            "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0"
        ));
        assert!(is_kernel_thread(
            "93 (kworker/u4:3-loop0) I 2 0 0 0 -1 2129984 0 0 0 0 3 9 0 0 20 0"
        ));
        assert!(!is_kernel_thread(
            "412 (sh) S 1 412 412 34816 412 4194560 301 0 0 0 0 0 0 0 20 0 1 0"
        ));
        assert!(!is_kernel_thread(
            "77 (a) b (c) S 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0"
        ));
        assert!(!is_kernel_thread(""));
        assert!(!is_kernel_thread("5 (x) S"));
        // This machine's own: pid 2 is kthreadd, this test is not a kernel thread, and a
        // scan of the v1 memory hierarchy (where there is one) lists no kernel thread.
        let stat = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(is_kernel_thread(&stat("2")));
        assert!(!is_kernel_thread(&stat("self")));
        let memory = Path::new("/sys/fs/cgroup/memory");
        if memory.join("memory.limit_in_bytes").exists() {
            let tasks = scan_tasks(&Attribution::V1 {
                controller: "memory",
                hierarchy_id: 0,
                root: memory.to_path_buf(),
            });
            assert!(!tasks.is_empty());
            let own = std::process::id();
            assert!(
                tasks.iter().any(|(tid, _)| *tid == own),
                "this test is scanned"
            );
            assert!(tasks.iter().all(|(tid, _)| *tid != 2), "kthreadd is not");
        }
    }

    #[test]
    fn hierarchy_ids_come_from_proc_cgroups_enabled_and_not_unified() {
        assert_eq!(v1_hierarchy_id(PROC_CGROUPS, "memory"), Some(4));
        assert_eq!(v1_hierarchy_id(PROC_CGROUPS, "cpu"), Some(1));
        // On the unified hierarchy (id 0), or disabled: no v1 hierarchy.
        assert_eq!(v1_hierarchy_id(PROC_CGROUPS, "net_cls"), None);
        assert_eq!(v1_hierarchy_id(PROC_CGROUPS, "blkio"), None);
        assert_eq!(v1_hierarchy_id(PROC_CGROUPS, "pids"), None);
        assert_eq!(v1_hierarchy_id("", "memory"), None);
    }

    const MOUNTINFO: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,pids
";

    #[test]
    fn mounts_are_found_by_controller_and_type() {
        assert_eq!(
            v1_mount(MOUNTINFO, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        // A controller co-mounted with another, and not confused with `cpuacct`.
        assert_eq!(
            v1_mount(MOUNTINFO, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            v1_mount(MOUNTINFO, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/my dir"))
        );
        assert_eq!(v1_mount(MOUNTINFO, "blkio"), None);
        assert_eq!(
            cgroup2_mount(MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
    }

    #[test]
    fn a_tasks_path_is_read_from_its_hierarchys_line() {
        let text = "12:pids:/user.slice\n5:memory:/kubepods/burstable/pod1/abc\n\
                    4:cpu,cpuacct:/kubepods/burstable/pod1/abc\n1:name=systemd:/x\n0::/unified/y\n";
        assert_eq!(
            task_cgroup_path(text, Some("memory")),
            Some("/kubepods/burstable/pod1/abc")
        );
        assert_eq!(
            task_cgroup_path(text, Some("cpu")),
            Some("/kubepods/burstable/pod1/abc")
        );
        assert_eq!(task_cgroup_path(text, None), Some("/unified/y"));
        assert_eq!(task_cgroup_path(text, Some("blkio")), None);
        // A path holding ':' stays whole; malformed lines are skipped.
        assert_eq!(task_cgroup_path("garbage\n0::/a:b\n", None), Some("/a:b"));
        assert_eq!(task_cgroup_path("", None), None);
    }

    #[test]
    fn per_cpu_copies_sum_field_by_field() {
        let mut one = CgroupStats {
            oncpu_ns: 5,
            io_ops: 1,
            tcp_resets: 2,
            ..CgroupStats::default()
        };
        one.errors[cgroup_errno::EMFILE] = 3;
        let two = CgroupStats {
            oncpu_ns: 7,
            oom_victims: 1,
            ..one
        };
        let total = sum_cgroup_cpus([&one, &two]);
        assert_eq!(total.oncpu_ns, 12);
        assert_eq!(total.io_ops, 2);
        assert_eq!(total.tcp_resets, 4);
        assert_eq!(total.oom_victims, 1);
        assert_eq!(total.errors[cgroup_errno::EMFILE], 6);
    }

    #[test]
    fn the_root_and_a_new_directory_are_live_cgroups_by_inode() {
        let dir = std::env::temp_dir().join(format!("nodestate-cg-walk-{}", std::process::id()));
        let child = dir.join("a/b");
        std::fs::create_dir_all(&child).unwrap();
        let live = live_cgroup_ids(&dir).unwrap();
        assert!(live.contains(&cgroup_id(&dir).unwrap()));
        assert!(live.contains(&cgroup_id(&child).unwrap()));
        assert_eq!(live.len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
