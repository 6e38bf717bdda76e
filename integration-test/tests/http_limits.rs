//! Hostile HTTP clients against the running daemon: idle connections must not starve its
//! windows of descriptors, and a client trickling its headers is cut off.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant, SystemTime},
};

use integration_test::{
    daemon::Daemon,
    http::{free_port, get},
    privileged,
    process::wait_for,
};

/// The descriptor limit the daemon runs under: the one the issue reproduced with.
const NOFILE: u64 = 256;
/// Idle connections opened against it: more than its descriptor limit.
const IDLE_CONNECTIONS: usize = 300;

/// The daemon under `ulimit -n limit` (when given), windows of 1 s, listening on `address`.
fn start_daemon(address: &str, limit: Option<u64>) -> Daemon {
    let mut daemon = Daemon::builder()
        .listen(address)
        .env("NODE_NAME", "nodestate-http-limits");
    if let Some(limit) = limit {
        daemon = daemon.nofile(limit);
    }
    daemon.start()
}

fn context_switches() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("ctxt ")?.trim().parse().ok())
        .expect("ctxt in /proc/stat")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The value of the first series of `name` in an OpenMetrics text (labels ignored).
fn metric(body: &str, name: &str, label: &str) -> Option<f64> {
    body.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Lets this test hold `IDLE_CONNECTIONS` sockets whatever its own soft limit.
fn raise_own_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[test]
fn idle_connections_cannot_starve_the_windows_of_descriptors() {
    if !privileged("idle_connections_cannot_starve_the_windows_of_descriptors") {
        return;
    }
    raise_own_nofile();
    let address = format!("127.0.0.1:{}", free_port());
    let daemon = start_daemon(&address, Some(NOFILE));
    wait_for(Duration::from_secs(30), "/healthz", || {
        get(&address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let pid = daemon.pid();
    let span_start_ms = unix_ms();
    let switches_before = context_switches();

    // More idle connections than the daemon has descriptors, held for several windows.
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        match TcpStream::connect(&address) {
            Ok(stream) => idle.push(stream),
            // The backlog is full: enough are open.
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 200, "only {} connections opened", idle.len());
    let mut most_open = 0;
    let flood_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < flood_until {
        most_open = most_open.max(open_descriptors(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cap leaves descriptors for the daemon's own reads (the old server took them all).
    assert!(
        most_open as u64 <= NOFILE - 32,
        "the daemon had {most_open} of its {NOFILE} descriptors open under {} idle connections",
        idle.len()
    );

    // The idle connections time out (or are refused): /metrics answers while the test still
    // holds every one of them.
    let (_, metrics) = wait_for(Duration::from_secs(15), "/metrics while flooded", || {
        get(&address, "/metrics").filter(|(status, _)| *status == 200)
    });
    let refused = metric(&metrics, "nodestate_http_connections_refused_total", "")
        .expect("the refused-connections counter");
    assert!(
        refused > 0.0,
        "{} connections over the cap, none refused",
        idle.len()
    );
    let (status, state) = get(&address, "/state").expect("/state answers");
    assert_eq!(status, 200, "{state}");
    let switches_after = context_switches();
    let span_end_ms = unix_ms();
    drop(idle);

    // Every window wholly inside the span: context switches are a count no larger than the
    // whole span's (never a counter since boot), and never 0 (a machine running this test
    // switches); a value that could not be read is null, listed and counted.
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let span_switches = switches_after - switches_before;
    let mut checked = 0;
    for window in state["windows"].as_array().expect("windows") {
        let end_ms = window["unix_ms"].as_u64().unwrap();
        let window_s = window["window_s"].as_f64().unwrap();
        if end_ms > span_end_ms || end_ms.saturating_sub((window_s * 1000.0) as u64) < span_start_ms
        {
            continue;
        }
        checked += 1;
        let missing: Vec<&str> = window["missing"]
            .as_array()
            .map(|names| names.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        match window["sched_context_switches_per_s"].as_f64() {
            Some(rate) => {
                let count = rate * window_s;
                assert!(
                    count > 0.0 && count <= span_switches as f64,
                    "{count} context switches in a {window_s} s window, {span_switches} in the \
                     whole span: {window}"
                );
            }
            None => {
                assert!(
                    missing.contains(&"sched_context_switches_per_s"),
                    "{window}"
                );
                assert_eq!(window["partial"], serde_json::json!(true), "{window}");
                let errors = metric(&metrics, "nodestate_read_errors_total", "proc_stat");
                assert!(errors.unwrap_or(0.0) > 0.0, "a null not counted: {window}");
            }
        }
        match window["psi_cpu_some_pct"].as_f64() {
            Some(pct) => assert!((0.0..=100.0).contains(&pct), "{window}"),
            None => assert!(missing.contains(&"psi_cpu_some_pct"), "{window}"),
        }
    }
    assert!(
        checked >= 3,
        "only {checked} windows inside the span: {state}"
    );
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Sends `bytes` one by one, `pause` apart, until the server closes the connection or
/// `limit` passes; returns how long the server kept it open (`None`: still open).
fn trickle(address: &str, bytes: &[u8], pause: Duration, limit: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(address).expect("connecting");
    stream.set_read_timeout(Some(pause)).unwrap();
    let started = Instant::now();
    for byte in bytes.iter().cycle() {
        if started.elapsed() > limit {
            return None;
        }
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            return Some(started.elapsed());
        }
        let mut buffer = [0u8; 512];
        match stream.read(&mut buffer) {
            // Closed, or an error response before the close: either way cut off.
            Ok(_) => return Some(started.elapsed()),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    unreachable!("cycle never ends")
}

/// Reads one response to a request on a kept-alive connection (small bodies only).
fn exchange_kept_alive(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .expect("writing the request");
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buffer[..n]);
                if response.ends_with(b"ok\n") {
                    break;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn a_client_trickling_its_headers_is_cut_off_and_an_idle_one_is_not() {
    if !privileged("a_client_trickling_its_headers_is_cut_off_and_an_idle_one_is_not") {
        return;
    }
    let address = format!("127.0.0.1:{}", free_port());
    let daemon = start_daemon(&address, None);
    wait_for(Duration::from_secs(30), "/healthz", || {
        get(&address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let timeout = collector::export::http::HEADER_READ_TIMEOUT;

    // A header that never ends, one byte every 200 ms.
    let kept = trickle(
        &address,
        b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa",
        Duration::from_millis(200),
        timeout * 3,
    );
    let kept = kept.unwrap_or_else(|| {
        panic!(
            "a client trickling its headers was still connected after {:?}",
            timeout * 3
        )
    });
    assert!(
        kept >= timeout - Duration::from_secs(1) && kept <= timeout + Duration::from_secs(3),
        "cut off after {kept:?}, the header timeout is {timeout:?}"
    );

    // An idle keep-alive connection outlives the header timeout (a scraper reuses it).
    let mut stream = TcpStream::connect(&address).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let first = exchange_kept_alive(&mut stream, "/healthz");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    std::thread::sleep(timeout + Duration::from_secs(2));
    let second = exchange_kept_alive(&mut stream, "/healthz");
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "idle {:?} (> the header timeout, < the idle timeout), then: {second:?}",
        timeout + Duration::from_secs(2)
    );
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}
