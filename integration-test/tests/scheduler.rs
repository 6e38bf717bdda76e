//! What schedulers get from nodestate, end to end: two real daemons (one judged degraded, one
//! healthy), a real Prometheus scraping both, and on top of it the node rank (`/rank`,
//! `nodestate_rank`, `collector rank --elim`), the kube-scheduler extender answering request
//! bodies shaped as kube-scheduler sends them, and `model train --prometheus` training one
//! model from both nodes' windows.

use std::{path::Path, process::Command, time::Duration};

use integration_test::{
    daemon::Daemon,
    http::{free_port, get, post_json, promql_first_series, series_value},
    privileged,
    process::{Process, prometheus, wait_for},
    workspace_binary, write_synthetic_model,
};

/// `ExtenderArgs` as kube-scheduler marshals it: `nodeCacheCapable: true` sends names only.
const ARGS_NODE_NAMES: &str = include_str!("fixtures/extender-args-node-names.json");
/// … and `nodeCacheCapable: false` whole `v1.Node` objects in a NodeList.
const ARGS_NODE_LIST: &str = include_str!("fixtures/extender-args-node-list.json");

/// The value of an instant PromQL query's first series.
fn query(prometheus: &str, promql: &str) -> Option<f64> {
    series_value(&promql_first_series(prometheus, promql)?)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

fn post(address: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = post_json(address, path, body)
        .unwrap_or_else(|| panic!("no answer from the extender at {address}{path}"));
    (status, json(&text))
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|name| name.as_str().expect("a node name").to_string())
        .collect()
}

fn scores(list: &serde_json::Value) -> std::collections::BTreeMap<String, i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a HostPriorityList: {list}"))
        .iter()
        .map(|entry| {
            (
                entry["Host"].as_str().expect("Host").to_string(),
                entry["Score"].as_i64().expect("Score"),
            )
        })
        .collect()
}

fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `count` lines of `collector rank --elim` at a 200 ms interval, reading `node`.
fn elim_lines(collector: &Path, node: &str, count: u32) -> String {
    let count = count.to_string();
    run(
        collector,
        &[
            "rank",
            "--elim",
            "--interval",
            "200ms",
            "--count",
            &count,
            "--node",
            node,
        ],
    )
}

/// The windows column of `model train --prometheus`'s per-node table.
fn windows_of(summary: &str, node: &str) -> usize {
    summary
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.first() == Some(&node)).then(|| fields[1].parse().expect("a window count"))
        })
        .unwrap_or_else(|| panic!("no row for {node} in:\n{summary}"))
}

#[test]
fn rank_extender_and_fleet_training_against_a_real_prometheus() {
    if !privileged("rank_extender_and_fleet_training_against_a_real_prometheus") {
        return;
    }
    let collector = workspace_binary("collector");
    let model_binary = workspace_binary("model");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let far_model = dir.path().join("far.json");
    // Trained on synthetic windows (every feature 0..6): this machine's real windows are far
    // from all of them, so a daemon using it says degraded.
    write_synthetic_model(&far_model);

    // Two nodes on one kernel: what tells them apart is how each is judged. Syscall hooks
    // are left out to keep two daemons light on a small machine. Each keeps its state for 100
    // windows once there (hysteresis), so a neighbour's load cannot flip them mid-test: what
    // is tested here is what schedulers make of the states, not detection.
    let degraded_address = format!("127.0.0.1:{}", free_port());
    let healthy_address = format!("127.0.0.1:{}", free_port());
    let degraded = Daemon::builder()
        .model(&far_model)
        .args(&["--enter-after", "2", "--leave-after", "100"])
        .args(&["--disable-signals", "syscalls"])
        .listen(&degraded_address)
        .env("NODE_NAME", "pool-a-1")
        // Fleet training below reads their `nodestate_feature` series from the default set.
        .spawn();
    let healthy = Daemon::builder()
        .args(&["--learn-for", "10s", "--enter-after", "100"])
        .args(&["--disable-signals", "syscalls"])
        .listen(&healthy_address)
        .env("NODE_NAME", "pool-a-2")
        // Fleet training below reads their `nodestate_feature` series from the default set.
        .spawn();
    for address in [&degraded_address, &healthy_address] {
        wait_for(Duration::from_secs(30), "the daemons' /healthz", || {
            get(address, "/healthz").filter(|(status, _)| *status == 200)
        });
    }
    let prometheus_address = format!("127.0.0.1:{}", free_port());
    let prometheus_url = format!("http://{prometheus_address}");
    let server = prometheus(
        &[degraded_address.clone(), healthy_address.clone()],
        dir.path(),
        &prometheus_address,
    );
    wait_for(
        Duration::from_secs(60),
        "pool-a-1 degraded and pool-a-2 healthy in Prometheus",
        || {
            assert!(
                !degraded.exited() && !healthy.exited(),
                "a daemon exited:\n{}\n{}",
                degraded.log(),
                healthy.log()
            );
            query(
                &prometheus_address,
                r#"nodestate_state{node="pool-a-1",state="degraded"} == 1"#,
            )?;
            query(
                &prometheus_address,
                r#"nodestate_state{node="pool-a-2",state="healthy"} == 1"#,
            )
        },
    );

    // The rank: bands by state, the same on /rank, in text, and in Prometheus.
    let rank_of = |address: &str| {
        let (status, body) = get(address, "/rank").expect("/rank answers");
        assert_eq!(status, 200, "{body}");
        json(&body)
    };
    let bad = rank_of(&degraded_address);
    let good = rank_of(&healthy_address);
    assert_eq!(bad["node"], "pool-a-1");
    assert_eq!(bad["state"], "degraded", "{bad}");
    assert_eq!(good["state"], "healthy", "{good}");
    let bad_rank = bad["rank"].as_f64().expect("a rank");
    let good_rank = good["rank"].as_f64().expect("a rank");
    assert!((0.0..=40.0).contains(&bad_rank), "{bad}");
    assert!(good_rank > 60.0 && good_rank <= 100.0, "{good}");
    let (_, text) = get(&healthy_address, "/rank?format=text").unwrap();
    let text_rank: f64 = text.trim().parse().expect("a bare number");
    assert!(text_rank > 60.0, "{text}");
    let (status, _) = get(&healthy_address, "/rank?format=xml").unwrap();
    assert_eq!(status, 400);
    let scraped = wait_for(Duration::from_secs(10), "nodestate_rank scraped", || {
        query(&prometheus_address, r#"nodestate_rank{node="pool-a-1"}"#)
    });
    assert!(scraped <= 40.0, "pool-a-1 scraped with rank {scraped}");

    // `collector rank` once: the number, or the whole answer.
    let healthy_url = format!("http://{healthy_address}");
    let once: f64 = run(&collector, &["rank", "--node", &healthy_url])
        .trim()
        .parse()
        .expect("collector rank prints a number");
    assert!(once > 60.0, "pool-a-2 ranks {once}");
    let whole = json(&run(
        &collector,
        &["rank", "--node", &healthy_url, "--json"],
    ));
    assert_eq!(whole["node"], "pool-a-2", "{whole}");
    assert_eq!(whole["state"], "healthy", "{whole}");

    // OpenLava elim lines: "1 rank <value>", one per interval, from the node's daemon…
    let elim = elim_lines(&collector, &format!("http://{degraded_address}"), 3);
    let lines: Vec<&str> = elim.lines().collect();
    assert_eq!(lines.len(), 3, "{elim}");
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[..2], ["1", "rank"], "{line}");
        let value: f64 = fields[2].parse().expect("a rank value");
        assert!(value <= 40.0, "a degraded node reported {line}");
    }
    // …and the neutral rank while the daemon cannot be read, without giving up.
    let elim = elim_lines(&collector, &format!("http://127.0.0.1:{}", free_port()), 2);
    assert_eq!(elim, "1 rank 50.0\n1 rank 50.0\n");

    // The extender, on the recorded kube-scheduler bodies (pool-a-3 has no daemon).
    let extender_address = format!("127.0.0.1:{}", free_port());
    let extender = Process::start(
        &collector,
        &[
            "extender",
            "--listen",
            &extender_address,
            "--prometheus",
            &prometheus_url,
            "--selector",
            r#"job="nodestate""#,
            "--cache-ttl",
            "500ms",
            "--keep-last-for",
            "3s",
        ],
        &[],
    );
    wait_for(Duration::from_secs(10), "the extender's /healthz", || {
        get(&extender_address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let (status, result) = post(&extender_address, "/filter", ARGS_NODE_NAMES);
    assert_eq!(status, 200, "{result}\n{}", extender.log());
    assert_eq!(
        names(&result["NodeNames"]),
        ["pool-a-2", "pool-a-3"],
        "{result}"
    );
    assert!(result["Nodes"].is_null(), "{result}");
    assert_eq!(result["Error"], "");
    let failed = result["FailedAndUnresolvableNodes"]
        .as_object()
        .expect("FailedAndUnresolvableNodes");
    assert_eq!(
        failed.keys().map(String::as_str).collect::<Vec<_>>(),
        ["pool-a-1"],
        "{result}"
    );
    assert!(
        failed["pool-a-1"].as_str().unwrap().contains("degraded"),
        "{result}"
    );

    let (status, result) = post(&extender_address, "/filter", ARGS_NODE_LIST);
    assert_eq!(status, 200, "{result}");
    let sent = json(ARGS_NODE_LIST);
    let kept = result["Nodes"]["items"].as_array().expect("Nodes.items");
    // The Node objects come back as they were sent, minus the degraded one.
    assert_eq!(kept.len(), 2, "{result}");
    assert_eq!(kept[0], sent["Nodes"]["items"][1]);
    assert_eq!(kept[1], sent["Nodes"]["items"][2]);
    assert!(result["NodeNames"].is_null(), "{result}");
    assert!(result["FailedAndUnresolvableNodes"]["pool-a-1"].is_string());

    let (status, list) = post(&extender_address, "/prioritize", ARGS_NODE_LIST);
    assert_eq!(status, 200, "{list}");
    let by_host = scores(&list);
    assert_eq!(by_host.len(), 3, "{list}");
    assert!(by_host["pool-a-1"] <= 4, "{list}");
    assert!(by_host["pool-a-2"] >= 6, "{list}");
    assert_eq!(by_host["pool-a-3"], 5, "unknown nodes are neutral: {list}");

    // Fleet training: one model from both nodes' windows as Prometheus holds them.
    let model_path = dir.path().join("fleet-model.json");
    let windows_path = dir.path().join("fleet-windows.jsonl");
    let summary = run(
        &model_binary,
        &[
            "train",
            "--prometheus",
            &prometheus_url,
            "--since",
            "2m",
            "--selector",
            r#"node=~"pool-a-.*""#,
            "--out",
            model_path.to_str().unwrap(),
            "--save-windows",
            windows_path.to_str().unwrap(),
        ],
    );
    let from_degraded = windows_of(&summary, "pool-a-1");
    let from_healthy = windows_of(&summary, "pool-a-2");
    assert!(
        from_degraded >= 5 && from_healthy >= 5,
        "too few windows:\n{summary}"
    );
    assert!(summary.contains("(step 1s)"), "{summary}");
    assert!(summary.contains("model written to"), "{summary}");
    let total = from_degraded + from_healthy;
    let trained: serde_json::Value =
        json(&std::fs::read_to_string(&model_path).expect("the model file"));
    assert_eq!(trained["training"]["windows"], total, "{summary}");
    // The default set serves the judged features: the fleet's model is made of them, as the
    // built-in model is, and of no volume.
    let features: Vec<&str> = trained["schema"]["features"]
        .as_array()
        .unwrap_or_else(|| panic!("no features in the model: {trained}"))
        .iter()
        .filter_map(|feature| feature["name"].as_str())
        .collect();
    assert!(
        features.contains(&"psi_cpu_some_pct") && features.contains(&"proc_exits_nonzero_per_s"),
        "{features:?}"
    );
    for feature in &features {
        assert!(
            model::signals::is_judged(feature),
            "{feature} is not a judged field: the default set served a volume"
        );
    }

    // The model loads and scores the saved windows, one row each.
    let scored = run(
        &model_binary,
        &[
            "score",
            "--model",
            model_path.to_str().unwrap(),
            "--input",
            windows_path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        scored.lines().count(),
        total + 1,
        "header + rows:\n{scored}"
    );
    // The saved windows train the same model from a file.
    let again_path = dir.path().join("file-model.json");
    run(
        &model_binary,
        &[
            "train",
            "--input",
            windows_path.to_str().unwrap(),
            "--out",
            again_path.to_str().unwrap(),
        ],
    );
    let again = json(&std::fs::read_to_string(&again_path).unwrap());
    for part in ["schema", "scaler", "clusters", "threshold"] {
        assert_eq!(trained[part], again[part], "{part} differs");
    }

    // The pool's model is what a daemon of the pool runs with.
    let pooled_address = format!("127.0.0.1:{}", free_port());
    let pooled = Daemon::builder()
        .model(&model_path)
        .args(&["--disable-signals", "syscalls"])
        .listen(&pooled_address)
        .env("NODE_NAME", "pool-a-3")
        .spawn();
    let (_, state) = wait_for(
        Duration::from_secs(30),
        "a daemon ready with the fleet model",
        || get(&pooled_address, "/readyz").filter(|(status, _)| *status == 200),
    );
    assert!(state.contains("ready"), "{state}\n{}", pooled.log());
    let (_, state) = get(&pooled_address, "/state").expect("/state");
    let state = json(&state);
    assert_eq!(state["model"]["source"], "file", "{state}");
    assert_ne!(state["state"], "learning", "{state}");
    drop(pooled);

    // A selector that matches no daemon is an error that says so, not an empty model.
    let output = Command::new(&model_binary)
        .args([
            "train",
            "--prometheus",
            &prometheus_url,
            "--since",
            "2m",
            "--selector",
            r#"node="pool-b-1""#,
            "--out",
            dir.path().join("none.json").to_str().unwrap(),
        ])
        .output()
        .expect("running model train");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "trained on nothing: {stderr}");
    assert!(stderr.contains("no daemon windows"), "{stderr}");

    // Prometheus gone: the extender answers from its last reading for --keep-last-for, then
    // fails open (everything passes, neutral scores), and counts it.
    let (_, result) = post(&extender_address, "/filter", ARGS_NODE_NAMES);
    assert_eq!(
        names(&result["NodeNames"]),
        ["pool-a-2", "pool-a-3"],
        "{result}"
    );
    drop(server);
    std::thread::sleep(Duration::from_millis(700));
    let (status, result) = post(&extender_address, "/filter", ARGS_NODE_NAMES);
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        names(&result["NodeNames"]),
        ["pool-a-2", "pool-a-3"],
        "the last reading is 1 s old: {result}\n{}",
        extender.log()
    );
    let result = wait_for(Duration::from_secs(10), "the extender to fail open", || {
        let (_, result) = post(&extender_address, "/filter", ARGS_NODE_NAMES);
        (result["NodeNames"].as_array()?.len() == 3).then_some(result)
    });
    assert_eq!(result["Error"], "");
    assert!(
        result["FailedAndUnresolvableNodes"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    let (_, list) = post(&extender_address, "/prioritize", ARGS_NODE_NAMES);
    assert!(scores(&list).values().all(|score| *score == 5), "{list}");
    let (_, metrics) = get(&extender_address, "/metrics").unwrap();
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
            .parse()
            .expect("a counter value")
    };
    assert!(
        counter("nodestate_extender_prometheus_errors_total") >= 2.0,
        "{metrics}"
    );
    assert!(
        counter("nodestate_extender_stale_readings_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        extender.log().contains("cannot read node states"),
        "{}",
        extender.log()
    );
}

#[test]
fn the_extender_fails_open_or_reports_as_told_and_refuses_bad_bodies() {
    let collector = workspace_binary("collector");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let start = |on_error: &str| {
        let address = format!("127.0.0.1:{}", free_port());
        let process = Process::start(
            &collector,
            &[
                "extender",
                "--listen",
                &address,
                "--prometheus",
                &nowhere,
                "--on-prometheus-error",
                on_error,
            ],
            &[],
        );
        wait_for(Duration::from_secs(10), "the extender's /healthz", || {
            get(&address, "/healthz").filter(|(status, _)| *status == 200)
        });
        (address, process)
    };

    let (pass, _pass_process) = start("pass");
    let (status, result) = post(&pass, "/filter", ARGS_NODE_LIST);
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        result["Nodes"]["items"],
        json(ARGS_NODE_LIST)["Nodes"]["items"],
        "every node passes"
    );
    assert_eq!(result["Error"], "");
    let (status, list) = post(&pass, "/prioritize", ARGS_NODE_NAMES);
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        scores(&list).values().copied().collect::<Vec<_>>(),
        [5, 5, 5]
    );

    // Two requests within the cache's 5 s: Prometheus was tried once, and that is counted.
    let (_, metrics) = get(&pass, "/metrics").unwrap();
    for expected in [
        "nodestate_extender_prometheus_queries_total 1\n",
        "nodestate_extender_prometheus_errors_total 1\n",
        "nodestate_extender_requests_total{verb=\"filter\"} 1\n",
        "nodestate_extender_requests_total{verb=\"prioritize\"} 1\n",
    ] {
        assert!(metrics.contains(expected), "no {expected} in:\n{metrics}");
    }

    let (status, result) = post(&pass, "/filter", r#"{"Pod": "#);
    assert_eq!(status, 400);
    assert!(
        result["Error"].as_str().unwrap().contains("ExtenderArgs"),
        "{result}"
    );

    let (error, error_process) = start("error");
    let (status, result) = post(&error, "/filter", ARGS_NODE_NAMES);
    assert_eq!(status, 200, "{result}");
    assert!(
        result["Error"].as_str().unwrap().contains("Prometheus"),
        "{result}"
    );
    assert!(result["NodeNames"].is_null(), "{result}");
    let (status, _) = post_json(&error, "/prioritize", ARGS_NODE_NAMES).unwrap();
    assert_eq!(status, 503, "{}", error_process.log());
}

/// The value of the first `key: value` (or `- --key=value`) line of a YAML text.
fn yaml_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|line| {
            let line = line.trim().trim_start_matches("- ");
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(':').or_else(|| rest.strip_prefix('=')))
        })
        .unwrap_or_else(|| panic!("no `{key}` in deploy/scheduler-extender.yaml"))
        .trim()
}

#[test]
fn the_deployed_scheduler_configuration_calls_what_the_extender_serves() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/scheduler-extender.yaml"),
    )
    .expect("reading deploy/scheduler-extender.yaml");
    let url_prefix = yaml_value(&text, "urlPrefix");
    let listen = yaml_value(&text, "--listen");
    assert_eq!(
        url_prefix
            .trim_start_matches("http://")
            .trim_end_matches('/'),
        listen,
        "kube-scheduler calls {url_prefix}, the extender listens on {listen}"
    );
    assert_eq!(yaml_value(&text, "ignorable"), "true", "it must fail open");
    // The verbs the configuration names answer, on a free port (the same verbs and paths).
    let address = format!("127.0.0.1:{}", free_port());
    let _extender = Process::start(
        &workspace_binary("collector"),
        &[
            "extender",
            "--listen",
            &address,
            "--prometheus",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
        &[],
    );
    wait_for(Duration::from_secs(10), "the extender's /healthz", || {
        get(&address, "/healthz").filter(|(status, _)| *status == 200)
    });
    for verb in ["filterVerb", "prioritizeVerb"] {
        let path = format!("/{}", yaml_value(&text, verb));
        let (status, body) = post_json(&address, &path, ARGS_NODE_NAMES)
            .unwrap_or_else(|| panic!("no answer on {path}"));
        assert_eq!(status, 200, "{verb} {path}: {body}");
    }
}

/// `key` (e.g. `VmRSS`, `VmHWM`) of /proc/PID/status, in bytes.
fn proc_status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    kib * 1024
}

/// Connects and sends a POST's head announcing `length` body bytes, and `body` (all of it,
/// part of it, or nothing yet).
fn post_head(address: &str, path: &str, length: usize, body: &[u8]) -> std::net::TcpStream {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(address).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("sending the head");
    // A server that answered and closed may refuse the rest: that is its right.
    let _ = stream.write_all(body);
    stream
}

/// Status and text of the response on `stream` (read to its end).
fn response(mut stream: std::net::TcpStream) -> (u16, String) {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    (status, text)
}

/// A `nodeCacheCapable` body of `names` node names.
fn names_body(names: usize) -> String {
    let names: Vec<String> = (0..names)
        .map(|i| {
            format!(
                "ip-10-{}-{}-{}.eu-west-1.compute.internal",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    serde_json::json!({"Pod": json(ARGS_NODE_NAMES)["Pod"], "Nodes": null, "NodeNames": names})
        .to_string()
}

#[test]
fn the_extender_bounds_bodies_requests_at_once_and_its_memory() {
    let collector = workspace_binary("collector");
    let address = format!("127.0.0.1:{}", free_port());
    let extender = Process::start(
        &collector,
        &[
            "extender",
            "--listen",
            &address,
            "--prometheus",
            &format!("http://127.0.0.1:{}", free_port()),
            "--max-concurrent-requests",
            "2",
        ],
        &[],
    );
    wait_for(Duration::from_secs(10), "the extender's /healthz", || {
        get(&address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let pid = extender.child.id();
    // One ordinary request first, so the baseline includes a served request.
    let (status, _) = post(&address, "/filter", ARGS_NODE_NAMES);
    assert_eq!(status, 200);
    let rss_before = proc_status_bytes(pid, "VmRSS");

    // Over the 1 MiB cap: refused from the declared length alone, before any body is sent
    // (the old extender waited for the 2 MiB).
    let started = std::time::Instant::now();
    let (status, text) = response(post_head(&address, "/filter", 2 << 20, b""));
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("nodeCacheCapable"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // 16 callers at once, each sending 48 MiB: nothing of it is kept (the old extender
    // buffered all of them: 16 x 63 MiB took it to 1.14 GB).
    let huge = std::sync::Arc::new(vec![b' '; 48 << 20]);
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (address, huge) = (address.clone(), huge.clone());
            std::thread::spawn(move || {
                // A caller whose write was cut short may see the connection reset, not 413.
                let mut stream = post_head(&address, "/prioritize", huge.len(), &huge);
                let _ = std::io::Read::read_to_end(&mut stream, &mut Vec::new());
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    drop(huge);

    // Valid bodies just under the cap (23,000 names), 8 callers at once, 4 rounds: each is
    // answered 200, or 503 at once when 2 are in progress.
    let body = std::sync::Arc::new(names_body(23_000));
    assert!(
        body.len() < 1 << 20 && body.len() > 900_000,
        "{}",
        body.len()
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (address, body) = (address.clone(), body.clone());
                std::thread::spawn(move || {
                    response(post_head(
                        &address,
                        "/prioritize",
                        body.len(),
                        body.as_bytes(),
                    ))
                    .0
                })
            })
            .collect();
        statuses.extend(callers.into_iter().map(|c| c.join().unwrap()));
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");

    // Memory: the peak stays near what two 1 MiB requests need, and what was used goes back.
    let peak = proc_status_bytes(pid, "VmHWM");
    let rss_after = proc_status_bytes(pid, "VmRSS");
    eprintln!(
        "extender RSS before {} KiB, peak {} KiB, after {} KiB",
        rss_before >> 10,
        peak >> 10,
        rss_after >> 10
    );
    assert!(
        peak < rss_before + (48 << 20),
        "peak RSS {peak} bytes, {rss_before} before"
    );
    assert!(
        rss_after < rss_before + (16 << 20),
        "RSS {rss_after} bytes after the bursts, {rss_before} before"
    );

    // Two requests in progress (their bodies half sent) take both slots: a third is answered
    // 503 at once, with Retry-After.
    let half = ARGS_NODE_NAMES.len() / 2;
    let held: Vec<_> = (0..2)
        .map(|_| {
            post_head(
                &address,
                "/filter",
                ARGS_NODE_NAMES.len(),
                &ARGS_NODE_NAMES.as_bytes()[..half],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let (status, text) = response(post_head(
        &address,
        "/filter",
        ARGS_NODE_NAMES.len(),
        ARGS_NODE_NAMES.as_bytes(),
    ));
    assert_eq!(status, 503, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // One finishes its body and is answered; the other never does and is cut off.
    let mut held = held.into_iter();
    let mut finishing = held.next().unwrap();
    std::io::Write::write_all(&mut finishing, &ARGS_NODE_NAMES.as_bytes()[half..]).unwrap();
    let (status, text) = response(finishing);
    assert_eq!(status, 200, "{text}");
    let started = std::time::Instant::now();
    let (status, text) = response(held.next().unwrap());
    assert_eq!(status, 408, "{text}");
    assert!(started.elapsed() < Duration::from_secs(12));
    // Both slots are free again.
    let (status, _) = post(&address, "/filter", ARGS_NODE_NAMES);
    assert_eq!(status, 200);

    let (_, metrics) = get(&address, "/metrics").unwrap();
    for reason in ["busy", "too_large", "slow_body"] {
        let line = format!("nodestate_extender_rejected_requests_total{{reason=\"{reason}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"));
        assert!(count >= 1, "{line}{count}");
    }
}
