//! Per-cgroup attribution on the real kernel (issue 20). The test makes two cgroups: in one, a
//! culprit reads a loop device with O_DIRECT, fails opens with EMFILE and exits non-zero; in
//! the other, a neighbour only computes. The daemon's per-cgroup table (`/debug/cgroups`) must
//! charge each its own events, keyed by the cgroup directory's inode. The culprit starts
//! before the daemon (found by the start-up /proc scan, its children by the fork hook), the
//! neighbour after (found by `cgroup_attach_task`, or in unified mode by its current cgroup).
//! Both paths: cgroup v1 (this machine's memory hierarchy) and the cgroup2 hierarchy wherever
//! it is mounted. The loop device reads its backing file with direct I/O, from the loop
//! driver's worker, a kernel thread: that I/O is unattributed, never charged to a workload (on
//! cgroup2 kernel threads sit in the root cgroup, on v1 in no cgroup the task table knows).

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use collector::kernel::{
    Attribution, AttributionChoice, KernelCollector, KernelConfig, cgroups::cgroup_id,
};
use collector_common::CGROUP_UNATTRIBUTED;
use integration_test::{LoopDevice, daemon::Daemon, http::get_json, privileged};
use serde_json::Value;

/// A cgroup the test made; on drop its remaining tasks go back to the root and it is removed.
struct TestCgroup {
    path: PathBuf,
    root: PathBuf,
}

impl TestCgroup {
    fn new(root: &Path, role: &str) -> Self {
        let path = root.join(format!("nodestate-attr-{}-{role}", std::process::id()));
        fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("creating the test cgroup {}: {err}", path.display()));
        Self {
            path,
            root: root.to_path_buf(),
        }
    }

    fn id(&self) -> u64 {
        cgroup_id(&self.path).expect("stat on the test cgroup")
    }

    fn procs(&self) -> String {
        self.path.join("cgroup.procs").display().to_string()
    }

    fn holds(&self, pid: u32) -> bool {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|line| line.trim() == pid.to_string()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove the test cgroup {}", self.path.display());
    }
}

/// A shell that moves itself into `cgroup`, then runs `script`; stdin piped.
fn shell_in(cgroup: &TestCgroup, script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo $$ > {} && {script}", cgroup.procs()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a shell")
}

/// The user plus system CPU time of the shell itself, in ns, from the first line of the
/// `times` builtin (`0m0.390000s 0m0.010000s`; bash prints fewer decimals).
fn shell_cpu_ns(times: &str) -> Option<u64> {
    let mut total = 0.0;
    for field in times.lines().next()?.split_whitespace() {
        let (minutes, seconds) = field.strip_suffix('s')?.split_once('m')?;
        total += minutes.parse::<f64>().ok()? * 60.0 + seconds.parse::<f64>().ok()?;
    }
    Some((total * 1e9) as u64)
}

fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The row of `cgroup` in the totals of `/debug/cgroups`.
fn row(table: &Value, cgroup: u64) -> Option<&Value> {
    table["totals"]
        .as_array()?
        .iter()
        .find(|row| row["cgroup_id"].as_u64() == Some(cgroup))
}

fn number(row: &Value, field: &str) -> u64 {
    row[field].as_u64().unwrap_or(0)
}

fn emfile(row: &Value) -> u64 {
    row["errors"]["EMFILE"].as_u64().unwrap_or(0)
}

const DIRECT_READS: u64 = 256;
const BLOCK: u64 = 4096;
const FAILED_OPENS: u64 = 100;

fn culprit_and_neighbour_are_told_apart(test: &str, choice: AttributionChoice, flag: &str) {
    if !privileged(test) {
        return;
    }
    let attribution = collector::kernel::cgroups::decide(choice);
    let root = match (&attribution, choice) {
        (Attribution::V1 { root, .. }, AttributionChoice::V1)
        | (Attribution::Unified { root }, AttributionChoice::Unified) => root.clone(),
        (other, _) => {
            // Skips loudly; a run that requires privileged tests must have both hierarchies.
            let reason = format!("{test}: attribution {flag} is {}", other.describe());
            if std::env::var_os(integration_test::REQUIRE_PRIVILEGED_TESTS).is_some() {
                panic!("{reason}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPING {reason}");
            return;
        }
    };
    let culprit = TestCgroup::new(&root, "culprit");
    let neighbour = TestCgroup::new(&root, "neighbour");
    let device = LoopDevice::with_direct_backing_io(8 << 20);

    // Started before the daemon: only the /proc scan can place it.
    let mut culprit_shell = shell_in(
        &culprit,
        &format!(
            "read go; dd if={} of=/dev/null iflag=direct bs={BLOCK} count={DIRECT_READS} \
             status=none; exec 2>/dev/null; ulimit -n 3; i=0; while [ $i -lt {FAILED_OPENS} ]; \
             do true < /dev/null; i=$((i+1)); done; exit 3",
            device.path.display()
        ),
    );
    wait_until(Duration::from_secs(10), "the culprit in its cgroup", || {
        culprit.holds(culprit_shell.id())
    });

    let daemon = Daemon::builder()
        .args(&["--cgroup-attribution", flag, "--hook-budget", "0"])
        .start();
    let address = daemon.address();
    let log = daemon.wait_for_log(Duration::from_secs(10), "cgroup attribution:");
    assert!(!log.contains("off ("), "attribution is off: {log}");

    // The neighbour reports its own CPU time (the shell's `times`) for the check below.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let neighbour_times = scratch.path().join("neighbour-times");
    let neighbour_shell = shell_in(
        &neighbour,
        &format!(
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; times > {}; exit 0",
            neighbour_times.display()
        ),
    );
    culprit_shell
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"go\n")
        .expect("starting the culprit");
    let culprit_status = culprit_shell.wait().expect("waiting for the culprit");
    let neighbour_status = neighbour_shell
        .wait_with_output()
        .expect("waiting for the neighbour")
        .status;
    assert_eq!(
        culprit_status.code(),
        Some(3),
        "the culprit's script failed"
    );
    assert_eq!(
        neighbour_status.code(),
        Some(0),
        "the neighbour's script failed"
    );

    let (culprit_id, neighbour_id) = (culprit.id(), neighbour.id());
    let times = fs::read_to_string(&neighbour_times).expect("the neighbour's times");
    let neighbour_cpu_ns =
        shell_cpu_ns(&times).unwrap_or_else(|| panic!("cannot read the shell's times: {times:?}"));
    let mut table = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    // The windows after both exited hold everything they did.
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let Some(answer) = get_json(&address, "/debug/cgroups") else {
            continue;
        };
        table = answer;
        if row(&table, culprit_id).is_some_and(|row| number(row, "exits_nonzero") >= 1)
            && row(&table, neighbour_id)
                .is_some_and(|row| number(row, "oncpu_ns") >= neighbour_cpu_ns / 2)
        {
            break;
        }
    }
    let log = daemon.stop();
    let context = format!("table: {table:#}\ndaemon log:\n{log}");
    let expected_mode = match attribution {
        Attribution::V1 { controller, .. } => format!("v1_{controller}"),
        _ => "unified".to_string(),
    };
    assert_eq!(table["mode"], expected_mode.as_str(), "{context}");
    let culprit_row = row(&table, culprit_id)
        .unwrap_or_else(|| panic!("no row for the culprit's cgroup {culprit_id}: {context}"));
    let neighbour_row = row(&table, neighbour_id)
        .unwrap_or_else(|| panic!("no row for the neighbour's cgroup {neighbour_id}: {context}"));

    // The culprit's block I/O (submitted by dd, a child the fork hook placed), its latency,
    // its failed opens and its exit.
    assert!(
        number(culprit_row, "io_ops") >= DIRECT_READS,
        "culprit io_ops: {context}"
    );
    assert!(
        number(culprit_row, "io_bytes") >= DIRECT_READS * BLOCK,
        "culprit io_bytes: {context}"
    );
    assert!(
        number(culprit_row, "io_latency_ns") > 0,
        "culprit io latency: {context}"
    );
    assert!(
        emfile(culprit_row) >= FAILED_OPENS,
        "culprit EMFILE: {context}"
    );
    assert!(
        number(culprit_row, "exits_nonzero") >= 1,
        "culprit exit: {context}"
    );
    // The neighbour ran, and none of that is charged to it. Most of its CPU time is its own,
    // also when nothing preempted it and all of it ran in one stretch ending at its exit,
    // after which the task table no longer knows it (the charge at exit). Half: the shell's
    // `times` counts in clock ticks, the programs in nanoseconds.
    assert!(
        number(neighbour_row, "oncpu_ns") >= neighbour_cpu_ns / 2,
        "neighbour on-CPU time below half of the {neighbour_cpu_ns} ns its shell used: {context}"
    );
    assert_eq!(emfile(neighbour_row), 0, "neighbour EMFILE: {context}");
    assert_eq!(
        number(neighbour_row, "exits_nonzero"),
        0,
        "neighbour exits: {context}"
    );
    assert!(
        number(neighbour_row, "io_bytes") < DIRECT_READS * BLOCK,
        "neighbour charged with the culprit's I/O: {context}"
    );
    // Each of the culprit's direct reads of the loop device became a read of the backing file
    // on the disk beneath, submitted by the loop driver's worker (a kworker): unattributed, not
    // the culprit's, not the root cgroup's (there it is only the kernel threads' home, and
    // naming it would blame the node's own machinery). Without the kernel-thread check on
    // cgroup2, none of the node's I/O is ever unattributed.
    match device.backing_io_reaches_a_disk() {
        Ok(()) => {
            let unattributed = row(&table, CGROUP_UNATTRIBUTED)
                .map_or(0, |unattributed| number(unattributed, "io_ops"));
            assert!(
                unattributed >= DIRECT_READS,
                "the loop worker's {DIRECT_READS} reads of the backing file are not \
                 unattributed ({unattributed}): {context}"
            );
        }
        Err(why) => {
            let reason =
                format!("{test}: the kernel-thread check needs the loop worker's I/O: {why}");
            if std::env::var_os(integration_test::REQUIRE_PRIVILEGED_TESTS).is_some() {
                panic!("{reason}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPING {reason}");
        }
    }
}

#[test]
fn cgroup_v1_culprit_and_neighbour_are_charged_their_own_events() {
    culprit_and_neighbour_are_told_apart(
        "cgroup_v1_culprit_and_neighbour_are_charged_their_own_events",
        AttributionChoice::V1,
        "v1",
    );
}

#[test]
fn cgroup_v2_culprit_and_neighbour_are_charged_their_own_events() {
    culprit_and_neighbour_are_told_apart(
        "cgroup_v2_culprit_and_neighbour_are_charged_their_own_events",
        AttributionChoice::Unified,
        "unified",
    );
}

/// The table keeps no entry of a cgroup that is gone: the sweep finds its directory missing
/// and removes it, and counts it.
#[test]
fn entries_of_removed_cgroups_are_swept() {
    if !privileged("entries_of_removed_cgroups_are_swept") {
        return;
    }
    let mut kernel = KernelCollector::load(&KernelConfig {
        cgroup_attribution: AttributionChoice::V1,
        ..KernelConfig::default()
    })
    .expect("loading the programs");
    let Some(root) = kernel.attribution().root().map(Path::to_path_buf) else {
        let reason = format!("attribution is {}", kernel.attribution().describe());
        if std::env::var_os(integration_test::REQUIRE_PRIVILEGED_TESTS).is_some() {
            panic!("{reason}");
        }
        let _ = writeln!(std::io::stderr(), "SKIPPING: {reason}");
        return;
    };
    let id = {
        let cgroup = TestCgroup::new(&root, "swept");
        // Fails 20 opens and exits 1: events charged to the new cgroup.
        let status = shell_in(
            &cgroup,
            "exec 2>/dev/null; ulimit -n 3; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 \
             17 18 19 20; do true < /dev/null; done; exit 1",
        )
        .wait()
        .expect("waiting for the shell");
        assert_eq!(status.code(), Some(1));
        let id = cgroup.id();
        let snapshot = kernel.cgroup_snapshot().expect("reading the table");
        assert!(
            snapshot.iter().any(|(key, stats)| *key == id
                && stats.errors[collector_common::cgroup_errno::EMFILE] >= 20),
            "cgroup {id} not charged: {snapshot:?}"
        );
        id
        // The cgroup is removed here.
    };
    assert!(
        !fs::exists(root.join(format!("nodestate-attr-{}-swept", std::process::id()))).unwrap()
    );
    let removed = kernel.remove_dead_cgroups();
    assert!(removed >= 1, "nothing removed");
    let snapshot = kernel.cgroup_snapshot().expect("reading the table");
    assert!(
        !snapshot.iter().any(|(key, _)| *key == id),
        "the removed cgroup {id} is still in the table"
    );
    // The special keys stay.
    for key in [
        collector_common::CGROUP_UNATTRIBUTED,
        collector_common::CGROUP_REFUSED,
    ] {
        assert!(snapshot.iter().any(|(k, _)| *k == key), "key {key:#x} gone");
    }
    let counters = kernel
        .attribution_counters()
        .expect("attribution on")
        .expect("reading the counters");
    assert_eq!(counters.removed, removed as u64);
}

/// Loads the programs with v1 attribution (and `entries` table entries); `None` (after saying
/// why, or panicking in a run that requires privileged tests) where there is no v1 hierarchy.
fn load_v1(test: &str, entries: u32) -> Option<(KernelCollector, PathBuf)> {
    if !privileged(test) {
        return None;
    }
    let kernel = KernelCollector::load(&KernelConfig {
        cgroup_attribution: AttributionChoice::V1,
        cgroup_table_entries: entries,
        ..KernelConfig::default()
    })
    .expect("loading the programs");
    let Some(root) = kernel.attribution().root().map(Path::to_path_buf) else {
        let reason = format!("{test}: attribution is {}", kernel.attribution().describe());
        if std::env::var_os(integration_test::REQUIRE_PRIVILEGED_TESTS).is_some() {
            panic!("{reason}");
        }
        let _ = writeln!(std::io::stderr(), "SKIPPING {reason}");
        return None;
    };
    Some((kernel, root))
}

/// A table with room for nothing but its two special keys: every cgroup is refused, and what
/// its tasks did is charged to `CGROUP_REFUSED` and counted, not lost.
#[test]
fn a_full_table_charges_refused_events_and_counts_them() {
    let Some((mut kernel, root)) =
        load_v1("a_full_table_charges_refused_events_and_counts_them", 2)
    else {
        return;
    };
    let before = kernel.cgroup_snapshot().expect("reading the table");
    let refused_emfile = |rows: &[(u64, collector_common::CgroupStats)]| {
        rows.iter()
            .find(|(key, _)| *key == collector_common::CGROUP_REFUSED)
            .map_or(0, |(_, stats)| {
                stats.errors[collector_common::cgroup_errno::EMFILE]
            })
    };
    let cgroup = TestCgroup::new(&root, "refused");
    let status = shell_in(
        &cgroup,
        "exec 2>/dev/null; ulimit -n 3; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 \
         19 20; do true < /dev/null; done; exit 1",
    )
    .wait()
    .expect("waiting for the shell");
    assert_eq!(status.code(), Some(1));
    let after = kernel.cgroup_snapshot().expect("reading the table");
    assert_eq!(after.len(), 2, "only the special keys fit: {after:?}");
    assert!(
        refused_emfile(&after) >= refused_emfile(&before) + 20,
        "the refused cgroup's 20 failed opens are not under CGROUP_REFUSED: {after:?}"
    );
    let counters = kernel
        .attribution_counters()
        .expect("attribution on")
        .expect("reading the counters");
    assert!(counters.refused_events >= 20, "{counters:?}");
}

/// TCP events in softirq context (a refused connect's reset and failure) are charged to the
/// cgroup that connected, learnt when it called connect(); so is connect()'s ECONNREFUSED
/// (blocking connects, so the errno is the syscall's, not a later getsockopt's).
#[test]
fn refused_connects_are_charged_to_the_connecting_cgroup() {
    let Some((mut kernel, root)) = load_v1(
        "refused_connects_are_charged_to_the_connecting_cgroup",
        4096,
    ) else {
        return;
    };
    // A loopback port nobody listens on: bound once to learn a free one, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port")
        .port();
    const CONNECTS: u64 = 20;
    let cgroup = TestCgroup::new(&root, "connects");
    let status = shell_in(
        &cgroup,
        &format!(
            "exec /usr/bin/python3 -c 'import socket\nfor _ in range({CONNECTS}):\n    \
             try:\n        socket.create_connection((\"127.0.0.1\", {port}))\n    \
             except ConnectionRefusedError:\n        pass\n'"
        ),
    )
    .wait()
    .expect("waiting for the connects");
    assert_eq!(status.code(), Some(0));
    let id = cgroup.id();
    let snapshot = kernel.cgroup_snapshot().expect("reading the table");
    let stats = snapshot
        .iter()
        .find(|(key, _)| *key == id)
        .map(|(_, stats)| *stats)
        .unwrap_or_else(|| panic!("no row for cgroup {id}: {snapshot:?}"));
    assert!(stats.tcp_connect_failures >= CONNECTS, "{stats:?}");
    assert!(stats.tcp_resets >= CONNECTS, "{stats:?}");
    assert!(
        stats.errors[collector_common::cgroup_errno::ECONNREFUSED] >= CONNECTS,
        "{stats:?}"
    );
}
