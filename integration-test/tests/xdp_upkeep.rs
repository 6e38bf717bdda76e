//! The daemon's per-window work on the drop list: its cost does not grow with the number of
//! rules, and its windows never wait on the list's edit lock. The daemon runs with
//! `--xdp-iface` on a veth pair between two namespaces made here.

use std::{
    io::Write as _,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use integration_test::{
    daemon::Daemon,
    http::get,
    netns::{TestPinDir, VethPair, in_netns},
    privileged,
    process::wait_for,
    xdp_daemon::{blocklist_ok, ticks_per_s},
};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn fetch(veth: &VethPair, address: &str, path: &'static str) -> String {
    let address = address.to_string();
    let (status, body) = in_netns(&veth.receiver.name, move || get(&address, path))
        .unwrap_or_else(|| panic!("no answer from {path}"));
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The value of an unlabelled-but-for-node series in the exposition.
fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with('{'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn daemon_windows_keep_their_length_while_another_process_holds_the_drop_list_lock() {
    if !privileged(
        "daemon_windows_keep_their_length_while_another_process_holds_the_drop_list_lock",
    ) {
        return;
    }
    const HOLD_S: u64 = 6;
    let veth = VethPair::new("fixa-lock");
    let pins = TestPinDir::new("fixa-lock");
    let daemon = Daemon::builder().xdp(&veth, &pins.path).start();
    let address = daemon.address();
    // Due during the hold, so the daemon's sweep wants the lock while it is held.
    blocklist_ok(&pins.path, &["add", "192.0.2.9", "--ttl", "2s"]);
    std::thread::sleep(Duration::from_millis(1500));

    let hold_start = unix_ms();
    let status = Command::new("flock")
        .arg("-x")
        .arg(&pins.path)
        .args(["sleep", &HOLD_S.to_string()])
        .status()
        .expect("running flock");
    assert!(status.success());
    let hold_end = unix_ms();
    std::thread::sleep(Duration::from_millis(2500));

    let state: serde_json::Value =
        serde_json::from_str(&fetch(&veth, &address, "/state")).expect("/state is JSON");
    let windows = state["windows"].as_array().expect("windows");
    let lengths: Vec<(u64, f64)> = windows
        .iter()
        .map(|w| {
            (
                w["unix_ms"].as_u64().unwrap(),
                w["window_s"].as_f64().unwrap(),
            )
        })
        .collect();
    // Windows that ended while the lock was held (the first one after the hold began may
    // have started before it).
    let during: Vec<&(u64, f64)> = lengths
        .iter()
        .filter(|(end, _)| (hold_start + 1000..=hold_end).contains(end))
        .collect();
    assert!(
        during.len() as u64 >= HOLD_S - 2,
        "only {} windows ended during a {HOLD_S} s hold of the lock: {lengths:?}",
        during.len()
    );
    // Every recent window, during and after the hold, is as long as asked (1 s), give or
    // take scheduling on a shared machine: no 7 s window, no tiny one after it.
    for (end, length) in &lengths {
        assert!(
            (0.7..=1.5).contains(length),
            "a window of {length} s ending at {end} (hold {hold_start}..{hold_end}): {lengths:?}"
        );
    }
    let metrics = fetch(&veth, &address, "/metrics");
    let postponed = metric(&metrics, "nodestate_xdp_sweeps_postponed_total")
        .expect("nodestate_xdp_sweeps_postponed_total");
    assert!(postponed >= 1.0, "no postponed sweep counted:\n{metrics}");
    // Once the lock is free the rule goes.
    wait_for(
        Duration::from_secs(5),
        "the expired rule to be removed",
        || {
            let listed = blocklist_ok(&pins.path, &["list"]);
            (!String::from_utf8_lossy(&listed.stdout).contains("192.0.2.9")).then_some(())
        },
    );
    assert!(daemon.log().contains("drop-list rule expired and removed"));
    daemon.terminate();
}

/// CPU seconds the daemon used per window over `windows` 1 s windows.
fn cpu_per_window(daemon: &Daemon, windows: u64) -> f64 {
    let before = daemon.cpu_ticks();
    std::thread::sleep(Duration::from_secs(windows));
    (daemon.cpu_ticks() - before) as f64 / ticks_per_s() / windows as f64
}

#[test]
fn daemon_cpu_per_window_does_not_grow_with_a_full_drop_list() {
    if !privileged("daemon_cpu_per_window_does_not_grow_with_a_full_drop_list") {
        return;
    }
    const RULES: u32 = 131_070;
    const WINDOWS: u64 = 8;
    let veth = VethPair::new("fixa-cpu");
    let pins = TestPinDir::new("fixa-cpu");
    let daemon = Daemon::builder().xdp(&veth, &pins.path).start();
    let address = daemon.address();
    std::thread::sleep(Duration::from_secs(2));
    let empty = cpu_per_window(&daemon, WINDOWS);

    // 131,070 /32s from 100.64.0.0/10 (shared address space: never these namespaces').
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for i in 0..RULES {
        let addr = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + i);
        writeln!(file, "{addr}").unwrap();
    }
    file.flush().unwrap();
    blocklist_ok(&pins.path, &["import", file.path().to_str().unwrap()]);
    // The daemon reads the whole list once after the edit (about half a second for 131k
    // rules), in the next window; measure from the one after.
    std::thread::sleep(Duration::from_secs(3));
    let full = cpu_per_window(&daemon, WINDOWS);
    eprintln!(
        "daemon CPU per 1 s window: {:.4} s with no rule, {:.4} s with {RULES} rules",
        empty, full
    );
    // Walking every rule (and reading each one's hits) every window cost 0.36 s of CPU per
    // 1 s window at this size on our 2-core test machine (0.75 s in issue 18's report).
    // Without a walk the window's drop-list work is a handful of syscalls; 30 ms allows for
    // the 10 ms tick granularity of /proc/PID/stat and a machine shared with other tests, and
    // is still 12 times under the old cost.
    assert!(
        full - empty < 0.030,
        "with {RULES} rules the daemon used {full:.4} s of CPU per window, {empty:.4} s without"
    );
    let metrics = fetch(&veth, &address, "/metrics");
    assert_eq!(
        metric(&metrics, "nodestate_xdp_rules"),
        Some(f64::from(RULES)),
        "the daemon does not see the rules:\n{metrics}"
    );
    daemon.terminate();
}
