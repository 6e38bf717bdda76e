//! The daemon as users and the benchmark's agents see it: a real Prometheus server scrapes it,
//! and its HTTP endpoints, signals and configuration errors behave.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use integration_test::{
    daemon::Daemon,
    http::{encode, free_port, get, get_json, promql_first_series, series_value},
    privileged,
    process::{Process, prometheus_with_rules, wait_for},
    workspace_binary, write_synthetic_model,
};

/// The value of an instant PromQL query's first series, with its labels.
fn query(prometheus: &str, promql: &str) -> Option<(serde_json::Value, f64)> {
    let series = promql_first_series(prometheus, promql)?;
    Some((series["metric"].clone(), series_value(&series)?))
}

/// The crash loop a service in trouble makes, until `done`: eight replicas, each failing 1.1 s
/// after it starts (past the daemon's `--brief-exit`, 1 s: a program that ran and failed, not
/// a brief command answering "no") and restarted at once, their starts spread over the second.
fn crash_loop(done: &std::sync::atomic::AtomicBool, limit: Duration) {
    let deadline = Instant::now() + limit;
    std::thread::scope(|scope| {
        for replica in 0..8u64 {
            scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(replica * 140));
                while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    let _ = Command::new("sh")
                        .args(["-c", "sleep 1.1; exit 1"])
                        .status();
                }
            });
        }
    });
}

/// `collector diagnose ... --output json` during the crash loop: the node is the component,
/// the namespace is none (nothing in Kubernetes), and the evidence holds the non-zero exits
/// with a positive z and the time the state changed.
fn diagnosis_names_the_crash_loop(source: &[String]) {
    let output = Command::new(workspace_binary("collector"))
        .arg("diagnose")
        .args(source)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "diagnose {source:?}: {stderr}");
    let diagnosis: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("diagnose {source:?} printed no JSON ({err}): {stderr}"));
    let component = diagnosis["component"].as_str().unwrap_or_default();
    assert!(
        component.starts_with("node nodestate-test-node"),
        "{source:?}: {diagnosis:#}"
    );
    let exits = diagnosis["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|evidence| evidence["signal"] == "proc_exits_nonzero_per_s")
        .unwrap_or_else(|| panic!("{source:?}: no non-zero exits in {diagnosis:#}"));
    assert!(exits["z"].as_f64().unwrap() > 0.0, "{exits}");
    assert!(
        exits["since"]
            .as_str()
            .is_some_and(|since| since.starts_with("20")),
        "{exits}"
    );
    assert!(
        diagnosis["description"]
            .as_str()
            .unwrap()
            .contains("processes exiting with an error"),
        "{diagnosis:#}"
    );
}

const DEGRADED_ALERT_FIRING: &str =
    "ALERTS{alertname=\"NodestateNodeDegraded\",alertstate=\"firing\"} == 1";

#[test]
fn prometheus_scrapes_the_state_and_sees_a_fault_the_test_causes() {
    if !privileged("prometheus_scrapes_the_state_and_sees_a_fault_the_test_causes") {
        return;
    }
    let daemon_address = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::builder()
        .listen(&daemon_address)
        .args(&["--learn-for", "12s"])
        .env("NODE_NAME", "nodestate-test-node")
        .start();
    // The daemon answers /healthz at once and /readyz only once it has a baseline.
    wait_for(Duration::from_secs(20), "/healthz", || {
        get(&daemon_address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let (status, body) = get(&daemon_address, "/readyz").unwrap();
    assert_eq!(status, 503, "ready while still learning: {body}");
    assert!(body.contains("learning"), "{body}");
    // And its metric says the same, for the NodestateNotReady alert.
    let (_, metrics) = get(&daemon_address, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .filter(|line| line.starts_with("nodestate_ready{"))
            .any(|line| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(0.0)),
        "nodestate_ready is not 0 while learning"
    );

    let dir = tempfile::tempdir().unwrap();
    let prometheus_address = format!("127.0.0.1:{}", free_port());
    // With the alerting rules we ship, as a cluster's Prometheus would load them.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/alerts/nodestate.rules.yaml");
    let prometheus = prometheus_with_rules(
        std::slice::from_ref(&daemon_address),
        dir.path(),
        &prometheus_address,
        &[&rules],
    );

    // Learning (12 windows), then healthy, as Prometheus sees it.
    let (labels, _) = wait_for(Duration::from_secs(60), "healthy in Prometheus", || {
        query(
            &prometheus_address,
            "nodestate_state{state=\"healthy\"} == 1",
        )
    });
    assert_eq!(labels["node"], "nodestate-test-node", "{labels}");
    assert_eq!(labels["job"], "nodestate", "{labels}");
    let (_, score) = query(&prometheus_address, "nodestate_anomaly_score").expect("score scraped");
    assert!(score.is_finite() && score >= 0.0, "score {score}");
    let (_, threshold) = query(&prometheus_address, "nodestate_anomaly_threshold").unwrap();
    assert!(threshold > 0.0, "threshold {threshold}");
    let (status, _) = get(&daemon_address, "/readyz").unwrap();
    assert_eq!(status, 200, "not ready after learning:\n{}", daemon.log());
    let (_, ready) =
        query(&prometheus_address, "nodestate_ready").expect("nodestate_ready scraped");
    assert_eq!(ready, 1.0, "nodestate_ready after learning");

    // A crash loop: the daemon must call it degraded, and Prometheus must see that.
    let done = std::sync::atomic::AtomicBool::new(false);
    let degraded = std::thread::scope(|scope| {
        scope.spawn(|| crash_loop(&done, Duration::from_secs(90)));
        let seen = wait_for(Duration::from_secs(40), "degraded in Prometheus", || {
            query(
                &prometheus_address,
                "nodestate_state{state=\"degraded\"} == 1",
            )
        });
        // The shipped alert fires while the fault lasts: the group is evaluated every 10 s
        // and waits 10 s more, so within about 20 s of Prometheus seeing the state.
        let alert = wait_for(
            Duration::from_secs(45),
            "NodestateNodeDegraded firing",
            || query(&prometheus_address, DEGRADED_ALERT_FIRING),
        );
        assert_eq!(alert.0["node"], "nodestate-test-node", "{}", alert.0);
        assert_eq!(alert.0["severity"], "warning", "{}", alert.0);
        // `collector diagnose` states the fault from the same evidence, from Prometheus and
        // from the node itself: the node, since when, and the crash loop's signal.
        for source in [
            vec![
                "--prometheus".to_string(),
                format!("http://{prometheus_address}"),
                "--range".into(),
                "2m".into(),
            ],
            vec!["--node".to_string(), format!("http://{daemon_address}")],
        ] {
            diagnosis_names_the_crash_loop(&source);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        seen
    });
    // And it clears within the 30 s the benchmark's alert oracle waits once the fault is gone
    // (3 healthy windows of 1 s, a scrape, an evaluation every 10 s).
    let fault_ended = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "NodestateNodeDegraded cleared",
        || {
            // `or vector(0)`: an answer either way, so a Prometheus that does not answer is not
            // read as a cleared alert.
            query(
            &prometheus_address,
            "count(ALERTS{alertname=\"NodestateNodeDegraded\",alertstate=\"firing\"}) or vector(0)",
        )
        .filter(|(_, firing)| *firing == 0.0)
        },
    );
    eprintln!(
        "the degraded alert cleared {:?} after the fault",
        fault_ended.elapsed()
    );
    assert_eq!(degraded.0["node"], "nodestate-test-node");
    let (_, transitions) = query(&prometheus_address, "nodestate_state_transitions_total").unwrap();
    assert!(
        transitions >= 2.0,
        "learning → healthy → degraded is two transitions"
    );

    // /state explains it.
    let state = get_json(&daemon_address, "/state").expect("/state answers 200");
    assert_eq!(state["node"], "nodestate-test-node");
    assert!(!state["windows"].as_array().unwrap().is_empty());
    assert_eq!(state["model"]["source"], "baseline");

    dashboard_queries_run(&prometheus_address);
    drop(prometheus);
}

/// Every query of deploy/grafana-dashboard.json, with Grafana's variables filled in, runs in
/// this Prometheus on the daemon's series; the panels about what the daemon always serves
/// show data (XDP and program run time need the drop list and program statistics, which this
/// daemon does not have).
fn dashboard_queries_run(prometheus: &str) {
    fn exprs(panels: &serde_json::Value, found: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    found.push((title.to_string(), expr.to_string()));
                }
            }
            exprs(&panel["panels"], found);
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reading the dashboard"))
            .expect("the dashboard is JSON");
    let mut found = Vec::new();
    exprs(&dashboard["panels"], &mut found);
    assert!(found.len() > 10, "{found:?}");
    let with_data = [
        "Nodes degraded now",
        "Health state per node",
        "Anomaly score",
        "Top features pushing away from healthy",
        "Collector CPU",
        "Collector memory",
    ];
    for (title, expr) in &found {
        let promql = expr
            .replace("$__rate_interval", "30s")
            .replace("$node", "nodestate-test-node");
        let (status, body) = get(
            prometheus,
            &format!("/api/v1/query?query={}", encode(&promql)),
        )
        .unwrap_or_else(|| panic!("panel {title:?}: Prometheus did not answer {promql}"));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            status == 200 && body["status"] == "success",
            "panel {title:?}: {promql} fails in Prometheus: {body}"
        );
        let series = body["data"]["result"].as_array().map_or(0, Vec::len);
        if with_data.contains(&title.as_str()) {
            assert!(series > 0, "panel {title:?}: {promql} returns no series");
        }
    }
}

#[test]
fn sighup_reloads_the_model_and_refuses_a_bad_one() {
    if !privileged("sighup_reloads_the_model_and_refuses_a_bad_one") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.json");
    write_synthetic_model(&model_path);
    let daemon = Daemon::builder().model(&model_path).start();
    let address = daemon.address();
    // With a model file the daemon is ready as soon as a window is judged.
    daemon.wait_ready(Duration::from_secs(20));
    let model_source = || {
        let state = get_json(&address, "/state").expect("/state answers 200");
        state["model"]["source"].as_str().map(str::to_string)
    };
    assert_eq!(model_source().as_deref(), Some("file"));
    let reload_failures = || {
        let (_, metrics) = get(&address, "/metrics").unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("nodestate_model_reload_failures_total{"))
            .and_then(|rest| rest.split_once("} "))
            .and_then(|(_, value)| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no nodestate_model_reload_failures_total in:\n{metrics}"))
    };
    assert_eq!(reload_failures(), 0.0);

    std::fs::write(&model_path, "{ this is not a model").unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        daemon.log().contains("keeping the old model").then_some(())
    });
    assert!(daemon.log().contains("model.json"), "{}", daemon.log());
    // Still serving, still ready, still the old model; the refusal is counted.
    assert_eq!(get(&address, "/readyz").unwrap().0, 200);
    assert_eq!(model_source().as_deref(), Some("file"));
    wait_for(Duration::from_secs(5), "the refusal counted", || {
        (reload_failures() == 1.0).then_some(())
    });
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the second refusal counted", || {
        (reload_failures() == 2.0).then_some(())
    });

    write_synthetic_model(&model_path);
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload in the log", || {
        daemon.log().contains("model reloaded").then_some(())
    });
    assert_eq!(reload_failures(), 2.0, "a good reload is not a failure");
}

#[test]
fn healthz_fails_while_the_window_loop_stalls_and_recovers_after() {
    if !privileged("healthz_fails_while_the_window_loop_stalls_and_recovers_after") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    let address = format!("127.0.0.1:{}", free_port());
    let _daemon = Process::start(
        &workspace_binary("collector"),
        &["run", "--window", "1s", "--listen", &address],
        &[("NODESTATE_TEST_STALL_FILE", stall.to_str().unwrap())],
    );
    let windows = |address: &str| {
        get(address, "/metrics").and_then(|(_, body)| {
            body.lines()
                .find(|line| line.starts_with("nodestate_windows_total"))
                .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        })
    };
    wait_for(Duration::from_secs(20), "a window and /healthz 200", || {
        let ok = get(&address, "/healthz").is_some_and(|(status, _)| status == 200);
        (ok && windows(&address).is_some_and(|n| n >= 1.0)).then_some(())
    });

    // The loop blocks: after three windows' time without one, the probe fails, while the
    // HTTP server still answers (a scrape shows the window count standing still).
    std::fs::write(&stall, b"").unwrap();
    let stalled_at = Instant::now();
    let body = wait_for(
        Duration::from_secs(10),
        "/healthz 503 while stalled",
        || get(&address, "/healthz").and_then(|(status, body)| (status == 503).then_some(body)),
    );
    assert!(
        stalled_at.elapsed() >= Duration::from_secs(2),
        "failed after {:?}, before three windows of 1 s could pass: {body}",
        stalled_at.elapsed()
    );
    assert!(body.contains("stalled"), "{body}");
    let before = windows(&address).expect("/metrics is served while the loop is stalled");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(windows(&address), Some(before), "no window while stalled");

    std::fs::remove_file(&stall).unwrap();
    wait_for(Duration::from_secs(10), "/healthz 200 again", || {
        get(&address, "/healthz").and_then(|(status, _)| (status == 200).then_some(()))
    });
    assert!(windows(&address).unwrap() > before);
}

#[test]
fn sigterm_detaches_and_exits_within_two_seconds() {
    if !privileged("sigterm_detaches_and_exits_within_two_seconds") {
        return;
    }
    let daemon = Daemon::builder().start();
    let address = daemon.address();
    wait_for(Duration::from_secs(20), "/healthz", || {
        get(&address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let sent = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_status(Duration::from_secs(5));
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}: {}", daemon.log());
    assert!(took < Duration::from_secs(2), "took {took:?} to exit");
    assert!(daemon.log().contains("SIGTERM"), "{}", daemon.log());
}

#[test]
fn bad_configuration_fails_at_start_naming_what_is_wrong() {
    let collector = workspace_binary("collector");
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "not a model").unwrap();
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let occupied_address = occupied.local_addr().unwrap().to_string();
    let config = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let unknown_key = config("unknown.toml", "windw = \"2s\"\n");
    let bad_value = config("bad.toml", "window = \"200ms\"\n");
    let bad_syntax = config("syntax.toml", "window = \n");
    let mut cases = vec![
        (
            vec!["run", "--config", &unknown_key],
            "unknown.toml: unknown key `windw`".to_string(),
        ),
        (
            vec!["run", "--config", &bad_value],
            "bad.toml: key `window`".to_string(),
        ),
        (
            vec!["run", "--config", &bad_syntax],
            "syntax.toml".to_string(),
        ),
        (
            vec!["run", "--enter-after", "0"],
            "--enter-after".to_string(),
        ),
        (vec!["run", "--listen", "nowhere"], "--listen".to_string()),
        (
            vec!["run", "--learn-for", "soon"],
            "not a duration".to_string(),
        ),
        (
            vec!["run", "--disable-signals", "sched,bogus"],
            "bogus".to_string(),
        ),
    ];
    if collector::kernel::privileges::check_can_load_programs().is_ok() {
        cases.push((
            vec!["run", "--model", garbage.to_str().unwrap()],
            "garbage.json".to_string(),
        ));
        cases.push((
            vec!["run", "--listen", &occupied_address],
            format!("cannot listen on {occupied_address}"),
        ));
    }
    for (args, expected) in cases {
        let output = Command::new(&collector)
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_config_file_sets_options_and_flags_win_over_it() {
    if !privileged("a_config_file_sets_options_and_flags_win_over_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let from_file = format!("127.0.0.1:{}", free_port());
    let from_flag = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("nodestate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{from_file}\"\nwindow = \"1s\"\ndisable_signals = [\"tcp-resets\"]\nenter_after = 4\n"
        ),
    )
    .unwrap();
    // The file's listen address is overridden by the flag; its other settings apply.
    let daemon = Daemon::builder()
        .no_window()
        .args(&["--config", config.to_str().unwrap()])
        .listen(&from_flag)
        .start();
    let (_, metrics) = wait_for(
        Duration::from_secs(20),
        "/metrics on the flag's address",
        || get(&from_flag, "/metrics").filter(|(status, _)| *status == 200),
    );
    assert!(
        metrics.contains(r#"signal="tcp-resets",kind="none",outcome="disabled""#),
        "{metrics}"
    );
    assert!(
        get(&from_file, "/metrics").is_none(),
        "also listening on the file's address"
    );
    drop(daemon);
}

/// `--baseline-state`: the learned baseline is saved after its training and at SIGTERM, and a
/// daemon started again on the file judges its first window instead of learning afresh; a
/// file from another window length is refused, said so, and the daemon learns.
#[test]
fn a_restarted_daemon_goes_on_from_its_saved_baseline() {
    if !privileged("a_restarted_daemon_goes_on_from_its_saved_baseline") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.json");
    let file_arg = file.to_str().unwrap();
    let state = |address: &str| get_json(address, "/state").expect("/state answers 200");
    let first = Daemon::builder()
        .args(&["--learn-for", "3s", "--baseline-state", file_arg])
        .start();
    let address = first.address();
    wait_for(
        Duration::from_secs(30),
        "the first training's state saved",
        || {
            let saved = &state(&address)["model"]["saved_baseline"];
            (saved["saves"].as_u64() >= Some(1)).then_some(())
        },
    );
    assert_eq!(
        state(&address)["model"]["saved_baseline"]["restored"],
        false
    );
    first.signal(libc::SIGTERM);
    assert!(
        first.wait_status(Duration::from_secs(10)).success(),
        "{}",
        first.log()
    );
    let seen_before = {
        let text = std::fs::read_to_string(&file).unwrap();
        let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
        saved["windows_seen"].as_u64().unwrap()
    };
    assert!(
        seen_before >= 3,
        "saved at exit with every window: {seen_before}"
    );

    // Learning would take a minute here: a restored baseline judges the first window.
    let second = Daemon::builder()
        .args(&["--learn-for", "60s", "--baseline-state", file_arg])
        .start();
    let address = second.address();
    second.wait_ready(Duration::from_secs(15));
    let now = state(&address);
    assert_ne!(now["state"], "learning", "{now}");
    assert_eq!(now["model"]["saved_baseline"]["restored"], true, "{now}");
    // The windows seen go on from the saved count (a partial window is not counted: wait
    // for a complete one).
    wait_for(
        Duration::from_secs(10),
        "windows seen past the saved count",
        || {
            let seen = state(&address)["model"]["baseline"]["windows_seen"].as_u64();
            (seen > Some(seen_before)).then_some(())
        },
    );
    assert!(
        second.log().contains("baseline restored"),
        "{}",
        second.log()
    );
    let (_, metrics) = get(&address, "/metrics").unwrap();
    assert!(
        metrics.contains("nodestate_baseline_restored{"),
        "{metrics}"
    );
    second.terminate();

    // Another window length: refused with the reason, learning afresh.
    let third = Daemon::builder()
        .window("2s")
        .args(&["--baseline-state", file_arg])
        .start();
    let log = third.wait_for_log(Duration::from_secs(15), "learning afresh");
    assert!(
        log.contains("1 s windows, this daemon makes 2 s windows"),
        "{log}"
    );
    // A window later, still learning (a restored baseline judges its first window).
    let address = third.address();
    let after_a_window = wait_for(Duration::from_secs(15), "a window made", || {
        let now = state(&address);
        (now["windows"].as_array().is_some_and(|w| !w.is_empty())).then_some(now)
    });
    assert_eq!(after_a_window["state"], "learning", "{after_a_window}");
    third.terminate();
}
