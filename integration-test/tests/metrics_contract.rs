//! What a Prometheus user relies on from `/metrics`, checked on a running daemon: counters
//! never decrease (across a drop rule's expiry too), the default set stays within the series
//! count docs/metrics.md documents, `promtool check metrics` accepts the classic text format
//! of both sets (OpenMetrics only for a scraper that asks), and the page at `/` shows the
//! state and a score chart in a real browser (headless Chromium).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use integration_test::{
    REQUIRE_PRIVILEGED_TESTS,
    daemon::Daemon,
    netns::{TestPinDir, VethPair, in_netns},
    privileged,
    process::wait_for,
    xdp_daemon::blocklist_ok,
};

/// Status, headers and body of `GET path` with an `Accept` header (None: no header).
fn get_with_accept(address: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).expect("connecting to the daemon");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept = accept.map_or(String::new(), |accept| format!("Accept: {accept}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    // Small bodies come whole; a chunked one (hyper chunks large responses) is joined here.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Every sample of a counter in a text-format scrape: counters' `_total` series and
/// histograms' `_bucket`, `_count` and `_sum`, by series (name and labels).
fn counter_samples(scrape: &str) -> BTreeMap<String, f64> {
    let mut counters = Vec::new();
    let mut histograms = Vec::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.rsplit_once(' ') {
                Some((name, "counter")) => counters.push(name.to_string()),
                Some((name, "histogram")) => histograms.push(name.to_string()),
                _ => {}
            }
        }
    }
    assert!(!counters.is_empty(), "no counter in the scrape:\n{scrape}");
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            let counted = counters.iter().any(|c| c == name)
                || histograms.iter().any(|h| {
                    ["_bucket", "_count", "_sum"]
                        .iter()
                        .any(|suffix| name == format!("{h}{suffix}"))
                });
            counted.then(|| (series.to_string(), value.parse().expect("a number")))
        })
        .collect()
}

fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn counters_never_decrease_across_a_drop_rule_expiry() {
    if !privileged("counters_never_decrease_across_a_drop_rule_expiry") {
        return;
    }
    let veth = VethPair::new("m23-exp");
    let pins = TestPinDir::new("m23-exp");
    let daemon = Daemon::builder()
        .xdp(&veth, &pins.path)
        .env("NODE_NAME", "m23-exp")
        .start();
    let address = daemon.address();
    let receiver = veth.receiver.name.clone();
    let scrape = || {
        let address = address.clone();
        in_netns(&receiver, move || {
            get_with_accept(&address, "/metrics", Some("text/plain"))
        })
    };
    // Eleven sources, eleven rules: the last sends least, so it is the one outside the top
    // ten (rule="other"), and it expires.
    let sources: Vec<String> = (10..=20).map(|host| format!("10.200.0.{host}")).collect();
    for source in &sources {
        veth.sender.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{source}/24"),
            "dev",
            "tx0",
            "nodad",
        ]);
    }
    for source in &sources[..10] {
        blocklist_ok(&pins.path, &["add", &format!("{source}/32")]);
    }
    blocklist_ok(
        &pins.path,
        &["add", &format!("{}/32", sources[10]), "--ttl", "15s"],
    );
    let send = |source: &str, count: u32| {
        veth.sender.try_exec(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.01",
            "-W",
            "1",
            "-I",
            source,
            "10.200.0.2",
        ]);
    };
    // At once: each ping waits a second for replies the drop list never lets come.
    std::thread::scope(|scope| {
        for source in &sources[..10] {
            scope.spawn(|| send(source, 5));
        }
    });
    // After a window has seen the ten, so the eleventh is never among the top rules: its
    // drops are counted only in rule="other".
    std::thread::sleep(Duration::from_millis(1500));
    send(&sources[10], 2);
    let other = r#"nodestate_xdp_rule_dropped_packets_total{node="m23-exp",rule="other"}"#;
    // A window after the packets, the expiring rule's drops show as "other".
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let (_, _, body) = scrape();
        if value(&body, other).is_some_and(|dropped| dropped >= 2.0) {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no drops of rule=\"other\" within 10 s:\n{body}\n{}",
            String::from_utf8_lossy(&blocklist_ok(&pins.path, &["list"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let listed = |rule: &str| {
        String::from_utf8_lossy(&blocklist_ok(&pins.path, &["list"]).stdout).contains(rule)
    };
    assert!(listed(&sources[10]), "the expiring rule is still listed");
    wait_for(Duration::from_secs(25), "the rule to expire", || {
        (!listed(&sources[10])).then_some(())
    });
    // Two windows after the sweep.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, _, after) = scrape();
    let before_samples = counter_samples(&before);
    let after_samples = counter_samples(&after);
    let mut compared = 0;
    for (series, was) in &before_samples {
        if let Some(now) = after_samples.get(series) {
            assert!(
                now >= was,
                "{series} went down from {was} to {now} across the rule's expiry:\nbefore:\n{before}\nafter:\n{after}"
            );
            compared += 1;
        }
    }
    assert!(
        compared >= 20,
        "only {compared} counters compared:\n{after}"
    );
    assert!(value(&after, other).is_some(), "{after}");
    daemon.terminate();
}

/// The default set's documented ceiling: docs/metrics.md's line
/// "The default set: at most **N** series per node".
fn documented_default_series() -> usize {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = std::fs::read_to_string(&docs).expect("reading docs/metrics.md");
    let marker = "The default set without the XDP drop list: at most **";
    let at = text
        .find(marker)
        .expect("docs/metrics.md names the default set's ceiling");
    text[at + marker.len()..]
        .split("**")
        .next()
        .and_then(|number| number.replace(',', "").parse().ok())
        .expect("a number of series")
}

fn series_lines(scrape: &str) -> Vec<&str> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .collect()
}

/// A daemon with `--metrics SET`, scraped once it judged a window (features and devices
/// are in).
fn scrape_set(set: &str) -> (Daemon, String) {
    let daemon = Daemon::builder()
        .args(&["--metrics", set, "--learn-for", "3s"])
        .env("NODE_NAME", &format!("m23-{set}"))
        .start();
    let address = daemon.address();
    daemon.wait_ready(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    let (status, _, body) = get_with_accept(&address, "/metrics", Some("text/plain"));
    assert_eq!(status, 200, "{body}");
    (daemon, body)
}

#[test]
fn the_default_set_stays_within_the_documented_series_count() {
    if !privileged("the_default_set_stays_within_the_documented_series_count") {
        return;
    }
    let ceiling = documented_default_series();
    let (daemon, default) = scrape_set("default");
    let series = series_lines(&default);
    // What this scrape has, for the record (docs/metrics.md's table comes from this).
    eprintln!("default set: {} series", series.len());
    assert!(
        series.len() <= ceiling,
        "the default set serves {} series, docs/metrics.md promises at most {ceiling}:\n{default}",
        series.len()
    );
    for needed in [
        "nodestate_state{",
        "nodestate_anomaly_score{",
        "nodestate_anomaly_threshold{",
        "nodestate_rank{",
        "nodestate_events_lost_total{",
        "process_cpu_seconds_total{",
    ] {
        assert!(default.contains(needed), "{needed} missing:\n{default}");
    }
    // The judged features (fleet training reads them), not the volumes.
    assert!(
        default.contains(",feature=\"psi_cpu_some_pct\"}"),
        "{default}"
    );
    assert!(
        !default.contains(",feature=\"syscalls_per_s\"}"),
        "{default}"
    );
    daemon.terminate();
    let (daemon, full) = scrape_set("full");
    eprintln!("full set: {} series", series_lines(&full).len());
    assert!(full.contains(",feature=\"syscalls_per_s\"}"), "{full}");
    // Every window feature, not only the judged ones, and the per-program costs. (Not a
    // fixed margin of series: the per-device histograms are there only for devices that did
    // I/O in the window, which on a quiet machine may be none.)
    let features = |scrape: &str| {
        series_lines(scrape)
            .iter()
            .filter(|line| line.starts_with("nodestate_feature{"))
            .count()
    };
    assert!(
        features(&full) > features(&default) + 20,
        "full: {} features, default: {}\n{full}",
        features(&full),
        features(&default)
    );
    assert!(full.contains("nodestate_program_runs_total{"), "{full}");
    assert!(
        !default.contains("nodestate_program_runs_total{"),
        "{default}"
    );
    daemon.terminate();
}

/// promtool, or `None` after saying why (a panic when the run demands every test).
fn promtool() -> Option<PathBuf> {
    tool("promtool", "Debian's `prometheus` package")
}

fn tool(name: &str, package: &str) -> Option<PathBuf> {
    match which(name) {
        Some(path) => Some(path),
        None if std::env::var_os(REQUIRE_PRIVILEGED_TESTS).is_some()
            || std::env::var_os("CI").is_some() =>
        {
            panic!("{name} is not installed ({package}; `cargo xtask setup` installs it)")
        }
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPING: {name} is not installed ({package}; `cargo xtask setup` installs it)"
            );
            None
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

fn promtool_check_metrics(promtool: &Path, scrape: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_text_format_of_both_sets_and_prometheus_gets_openmetrics() {
    if !privileged("promtool_accepts_the_text_format_of_both_sets_and_prometheus_gets_openmetrics")
    {
        return;
    }
    let Some(promtool) = promtool() else { return };
    for set in ["default", "full"] {
        let (daemon, scrape) = scrape_set(set);
        let (ok, said) = promtool_check_metrics(&promtool, &scrape);
        assert!(
            ok,
            "promtool check metrics refuses the {set} set: {said}\n{scrape}"
        );
        assert!(!scrape.contains("# EOF"), "{scrape}");
        let address = daemon.address();
        // What Prometheus 2.x sends: OpenMetrics first.
        let (_, head, openmetrics) = get_with_accept(
            &address,
            "/metrics",
            Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        // curl's */* and no header at all: the classic format.
        for accept in [Some("*/*"), None] {
            let (_, head, _) = get_with_accept(&address, "/metrics", accept);
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: text/plain; version=0.0.4"),
                "{accept:?}: {head}"
            );
        }
        daemon.terminate();
    }
}

#[test]
fn the_page_shows_the_state_and_a_score_chart_in_headless_chromium() {
    if !privileged("the_page_shows_the_state_and_a_score_chart_in_headless_chromium") {
        return;
    }
    let Some(chromium) = tool("chromium", "Debian's `chromium` package") else {
        return;
    };
    let daemon = Daemon::builder()
        .args(&["--learn-for", "3s"])
        .env("NODE_NAME", "m23-page")
        .start();
    let address = daemon.address();
    daemon.wait_ready(Duration::from_secs(60));
    // A few judged windows, so the chart has a path.
    std::thread::sleep(Duration::from_secs(3));
    let state: serde_json::Value =
        serde_json::from_str(&get_with_accept(&address, "/state", None).2).expect("/state is JSON");
    let expected_state = state["state"].as_str().expect("a state").to_string();
    let url = format!("http://{address}/");
    let profile = tempfile::tempdir().expect("a profile directory");
    let chromium_run = |extra: &[&str]| {
        let output = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("running chromium");
        assert!(
            output.status.success(),
            "chromium {extra:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dom = chromium_run(&["--dump-dom"]);
    assert!(
        dom.contains(&format!(
            r#"<span id="state" class="state {expected_state}">{expected_state}</span>"#
        )),
        "the page does not show the state {expected_state}:\n{dom}"
    );
    assert!(dom.contains("m23-page"), "{dom}");
    // The score's path has at least two points (a move and a line).
    let path = dom
        .split(r#"<path id="score" d=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no score path in the page:\n{dom}"));
    assert!(
        path.starts_with('M') && path.matches('L').count() >= 1,
        "{path}"
    );
    assert!(dom.contains(r#"<table id="probes">"#), "{dom}");
    // The picture, for a person to look at (not committed).
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/page-screenshot.png");
    chromium_run(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,1400",
    ]);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    daemon.terminate();
}
