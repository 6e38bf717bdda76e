//! ETIMEDOUT means two things. From a timed wait (a futex polled with a timeout, as every
//! `pthread_cond_timedwait` and `Lock.acquire(timeout=…)` does) it is the ordinary outcome;
//! from a TCP connect it is a peer that did not answer. The first is counted apart
//! (`syscall_wait_timeouts_per_s`), the second still in `syscall_etimedout_per_s`: on an idle
//! node the timed waits alone once made the learned baseline call it degraded (z = +6.6).

use std::{
    net::TcpStream,
    process::Command,
    sync::atomic::AtomicU32,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_test::{
    netns::{Netns, in_netns},
    privileged, read_windows, workspace_binary,
};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Timed futex waits of 1 ms on a word nobody wakes, for `span`: how many timed out.
fn futex_timeouts(span: Duration) -> u64 {
    let word = AtomicU32::new(0);
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let deadline = Instant::now() + span;
    let mut timeouts = 0;
    while Instant::now() < deadline {
        // SAFETY: FUTEX_WAIT on a live AtomicU32 of ours, with a valid timespec; the value
        // matches, so the thread sleeps until the timeout.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                &timeout as *const libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
            timeouts += 1;
        }
    }
    timeouts
}

/// The sum of `field` × window length over the windows that lie wholly within
/// `[from_ms, to_ms]` (`wholly`), or that overlap it; and the seconds they cover.
fn total_within(
    windows: &[serde_json::Value],
    field: &str,
    from_ms: u64,
    to_ms: u64,
    wholly: bool,
) -> (f64, f64) {
    let mut total = 0.0;
    let mut seconds = 0.0;
    for window in windows {
        let end = window["unix_ms"].as_u64().unwrap();
        let length = window["window_s"].as_f64().unwrap();
        let start = end.saturating_sub((length * 1000.0) as u64);
        let inside = if wholly {
            start >= from_ms && end <= to_ms
        } else {
            end > from_ms && start < to_ms
        };
        if inside {
            total += window[field].as_f64().unwrap_or_else(|| panic!("{field}")) * length;
            seconds += length;
        }
    }
    (total, seconds)
}

#[test]
fn timed_waits_are_counted_apart_and_a_connect_timeout_still_counts() {
    if !privileged("timed_waits_are_counted_apart_and_a_connect_timeout_still_counts") {
        return;
    }
    // A namespace of ours where SYNs to port 9 vanish and a connect gives up after one retry
    // (about 3 s): a real ETIMEDOUT from connect(2), on loopback.
    let netns = Netns::new("wto");
    netns.exec(&["nft", "add", "table", "inet", "wto"]);
    netns.exec(&[
        "nft",
        "add",
        "chain",
        "inet",
        "wto",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    netns.exec(&[
        "nft", "add", "rule", "inet", "wto", "in", "tcp", "dport", "9", "drop",
    ]);
    netns.exec(&["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"]);

    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("windows.jsonl");
    let mut recorder = Command::new(workspace_binary("collector"))
        .args(["record", "--window", "1s", "--duration", "14s"])
        .args(["--hook-budget", "0", "--out"])
        .arg(&recording)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting collector record");
    // Loading and attaching takes the recorder a second or two.
    std::thread::sleep(Duration::from_millis(2500));

    let waits_from = unix_ms();
    let waits_started = Instant::now();
    let timeouts = futex_timeouts(Duration::from_secs(4));
    let waits_per_s = timeouts as f64 / waits_started.elapsed().as_secs_f64();
    let waits_to = unix_ms();
    assert!(waits_per_s > 100.0, "only {waits_per_s:.0} timed waits/s");

    let connect_from = unix_ms();
    let refused = in_netns(&netns.name, || {
        let threads: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(|| TcpStream::connect("127.0.0.1:9").err()))
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect::<Vec<_>>()
    });
    let connect_to = unix_ms();
    for error in &refused {
        assert_eq!(
            error.as_ref().and_then(std::io::Error::raw_os_error),
            Some(libc::ETIMEDOUT),
            "the connect must time out: {error:?}"
        );
    }
    let status = recorder.wait().expect("waiting for collector record");
    assert!(status.success(), "collector record failed: {status}");
    let windows = read_windows(&recording);

    let (wait_timeouts, seconds) = total_within(
        &windows,
        "syscall_wait_timeouts_per_s",
        waits_from,
        waits_to,
        true,
    );
    assert!(seconds >= 2.0, "{seconds} s of windows within the waits");
    let (etimedout, _) = total_within(
        &windows,
        "syscall_etimedout_per_s",
        waits_from,
        waits_to,
        true,
    );
    // Every one of ours is counted as a wait timeout (and others' too: the machine's own).
    assert!(
        wait_timeouts >= 0.8 * waits_per_s * seconds,
        "{wait_timeouts} wait timeouts counted in {seconds} s, the test made {waits_per_s:.0}/s"
    );
    // The old count took every one of them for a failure.
    assert!(
        etimedout < 0.05 * waits_per_s * seconds,
        "{etimedout} ETIMEDOUT failures counted in {seconds} s of {waits_per_s:.0} timed waits/s"
    );
    // Both connects' ETIMEDOUT, in the windows around them (closed within a second after).
    let (connect_timeouts, _) = total_within(
        &windows,
        "syscall_etimedout_per_s",
        connect_from,
        connect_to + 1000,
        false,
    );
    assert!(
        connect_timeouts >= 1.5,
        "{connect_timeouts} ETIMEDOUT failures counted around 2 timed-out connects"
    );
}
