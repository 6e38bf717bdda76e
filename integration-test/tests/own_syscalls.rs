//! The daemon's own syscalls are not the node's: a daemon kept busy by a scraper must not see
//! its own upkeep in `syscalls_per_s` (a full drop list once made a node `degraded` so), while
//! every other process's syscalls still count, and its own are counted apart.
//!
//! Two collectors watch the same node: a `collector run` daemon the test floods with HTTP
//! requests, and a `collector record` beside it. The recorder counts the daemon's syscalls
//! (another process to it); the daemon does not. Both count the test's own (the client side
//! of the flood) and everything else on the machine, which cancels in the difference.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_test::{
    daemon::Daemon,
    http::{free_port, get, get_json},
    privileged,
    process::wait_for,
    read_windows, workspace_binary,
};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The daemon's `nodestate_own_syscalls_total`, if it exports one.
fn own_syscalls(address: &str) -> Option<f64> {
    let (status, body) = get(address, "/metrics")?;
    if status != 200 {
        return None;
    }
    // `nodestate_own_syscalls_total{node="…"} 1234`
    body.lines()
        .find(|line| line.starts_with("nodestate_own_syscalls_total{"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.trim().parse().ok())
}

/// Mean `syscalls_per_s` of the windows that lie wholly within `[from_ms, to_ms]`, and how
/// many there were.
fn mean_rate_within(windows: &[serde_json::Value], from_ms: u64, to_ms: u64) -> (f64, usize) {
    let rates: Vec<f64> = windows
        .iter()
        .filter(|window| {
            let end = window["unix_ms"].as_u64().unwrap();
            let start = end.saturating_sub((window["window_s"].as_f64().unwrap() * 1000.0) as u64);
            start >= from_ms && end <= to_ms
        })
        .map(|window| window["syscalls_per_s"].as_f64().unwrap())
        .collect();
    (
        rates.iter().sum::<f64>() / rates.len().max(1) as f64,
        rates.len(),
    )
}

#[test]
fn the_daemons_own_syscalls_are_left_out_of_the_node_and_counted_apart() {
    if !privileged("the_daemons_own_syscalls_are_left_out_of_the_node_and_counted_apart") {
        return;
    }
    let address = format!("127.0.0.1:{}", free_port());
    // The syscall hook on all the time (no budget), so every window counts every syscall.
    let daemon = Daemon::builder()
        .listen(&address)
        .args(&["--hook-budget", "0"])
        .start();
    wait_for(Duration::from_secs(20), "the daemon's /healthz", || {
        get(&address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("windows.jsonl");
    let mut recorder = Command::new(workspace_binary("collector"))
        .args(["record", "--window", "1s", "--duration", "10s"])
        .args(["--hook-budget", "0", "--out"])
        .arg(&recording)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting collector record");
    // Loading and attaching takes the recorder under a second or two; its first windows are
    // not used.
    std::thread::sleep(Duration::from_secs(2));
    // Let a window of the daemon close, so the counter read here is from before the flood.
    std::thread::sleep(Duration::from_millis(1100));
    let own_before = own_syscalls(&address).unwrap_or(0.0);

    // The flood: one request after another, each on a new connection. The daemon serves each
    // with at least four syscalls (accept, read, write, close); the test makes about as many.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let flood_from = unix_ms();
    let flood = {
        let (stop, requests, address) = (stop.clone(), requests.clone(), address.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                if get(&address, "/healthz").is_some() {
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let flood_to = unix_ms();
    let requests = requests.load(Ordering::Relaxed) as f64;
    let request_rate = requests / ((flood_to - flood_from) as f64 / 1000.0);

    let status = recorder.wait().expect("waiting for the recorder");
    assert!(status.success(), "collector record failed: {status}");
    // The daemon's windows from its /state (the last 12: the whole flood at 1 s each); the
    // counter after a window has closed past the flood's end.
    std::thread::sleep(Duration::from_millis(1100));
    let own_after = own_syscalls(&address);
    let state = get_json(&address, "/state").expect("the daemon's /state answers 200");
    let daemon_windows = state["windows"].as_array().unwrap().clone();
    let recorder_windows = read_windows(&recording);
    drop(daemon);

    let (daemon_rate, daemon_count) = mean_rate_within(&daemon_windows, flood_from, flood_to);
    let (recorder_rate, recorder_count) = mean_rate_within(&recorder_windows, flood_from, flood_to);
    let report = format!(
        "{requests} requests ({request_rate:.0}/s); syscalls/s during the flood: recorder \
         {recorder_rate:.0} over {recorder_count} windows, daemon {daemon_rate:.0} over \
         {daemon_count} windows; daemon's own counter {own_before} -> {own_after:?}"
    );
    eprintln!("{report}");
    assert!(
        daemon_count >= 4 && recorder_count >= 4,
        "too few windows inside the flood: {report}"
    );
    // A flood too slow to tell would prove nothing (a loaded machine manages thousands).
    assert!(request_rate > 300.0, "{report}");
    // The daemon leaves out at least one syscall per request it served (of the four or more
    // it made), which the recorder counts: on a daemon that counts itself the two rates are
    // the same up to noise.
    assert!(
        recorder_rate - daemon_rate >= request_rate,
        "the daemon counted its own syscalls: {report}"
    );
    // It still counts other processes: the client side of the flood alone makes a few
    // syscalls per request.
    assert!(
        daemon_rate >= 2.0 * request_rate,
        "the daemon lost other processes' syscalls: {report}"
    );
    // And its own are counted apart, not lost: at least two per request over a span that
    // covers the flood.
    let own = own_after.expect("nodestate_own_syscalls_total in /metrics") - own_before;
    assert!(
        own >= 2.0 * requests,
        "{own} own syscalls counted for {requests} requests: {report}"
    );
}
