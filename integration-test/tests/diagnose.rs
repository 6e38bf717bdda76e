//! `collector diagnose --submit` against a test conductor that follows SREGym's API
//! (`integration_test::conductor`) and plays the node's `/state`: the statement goes to the
//! diagnosis stage only, is scoped to the application's namespaces from `/get_app`, and the
//! exit codes are detect's.

use std::process::Command;

use integration_test::{conductor::TestConductor, workspace_binary};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn diagnose(conductor: &TestConductor, extra: &[&str]) -> Run {
    let output = Command::new(workspace_binary("collector"))
        .args(["diagnose", "--node", &conductor.url()])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .env_remove("API_HOSTNAME")
        .env_remove("API_PORT")
        .output()
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A degraded node with two culprits in two namespaces, as the daemon's `/state` shows them.
fn degraded_node() -> serde_json::Value {
    serde_json::json!({
        "node": "worker-2",
        "state": "degraded",
        "score": 9.5,
        "threshold": 3.0,
        "since": "2026-12-03T10:00:00Z",
        "explanation": [["syscall_errors_per_s", 4.0], ["syscall_emfile_per_s", 12.5]],
        "culprits": [
            {"workload": {"namespace": "shop", "pod": "cart-7d9f", "container": "cart",
                          "owner": "deployment/cart"},
             "signal": "errors", "share": 0.9},
            {"workload": {"namespace": "batch", "pod": "report-1", "container": "report"},
             "signal": "errors", "share": 0.05}
        ]
    })
}

#[test]
fn a_diagnosis_stage_grades_the_statement_scoped_to_the_apps_namespaces() {
    let conductor = TestConductor::sregym(&["diagnosis", "mitigation", "done"]);
    conductor.serve_node_state_json(degraded_node());
    // The application is the batch namespace: its workload is named first even though the
    // other one has the larger share (the benchmark asks about its application).
    conductor.set_namespaces(&["batch"]);
    let run = diagnose(&conductor, &["--submit", &conductor.url()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let graded = conductor.graded();
    assert_eq!(graded.len(), 1, "{graded:?}");
    let (stage, solution) = &graded[0];
    assert_eq!(stage, "diagnosis");
    assert!(
        solution.starts_with("component: node worker-2 + pod/report-1\nnamespace: batch\n"),
        "{solution}"
    );
    assert!(
        solution.contains("file-descriptor exhaustion"),
        "{solution}"
    );
    assert!(
        solution.contains("since 2026-12-03T10:00:00Z"),
        "{solution}"
    );
    assert_eq!(
        run.stdout,
        solution.trim(),
        "what is printed is what is submitted"
    );
    assert_eq!(conductor.stage(), "mitigation");

    // Without an application scope, the largest share leads; --namespace overrides /get_app.
    let conductor = TestConductor::sregym(&["diagnosis", "done"]);
    conductor.serve_node_state_json(degraded_node());
    conductor.set_namespaces(&["batch"]);
    let run = diagnose(
        &conductor,
        &["--submit", &conductor.url(), "--namespace", "shop"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        conductor.graded()[0]
            .1
            .starts_with("component: node worker-2 + deployment/cart\nnamespace: shop\n"),
        "{:?}",
        conductor.graded()
    );
}

#[test]
fn json_output_has_the_benchmarks_fields_and_the_evidence() {
    let conductor = TestConductor::sregym(&["diagnosis", "done"]);
    conductor.serve_node_state_json(degraded_node());
    let run = diagnose(&conductor, &["--output", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["component"], "node worker-2 + deployment/cart");
    assert_eq!(json["namespace"], "shop");
    let evidence = json["evidence"].as_array().unwrap();
    assert_eq!(
        evidence[0]["signal"], "syscall_emfile_per_s",
        "largest z first"
    );
    assert_eq!(evidence[0]["z"], 12.5);
    assert_eq!(evidence[0]["share"], 0.9);
    assert_eq!(evidence[0]["since"], "2026-12-03T10:00:00Z");
    assert_eq!(conductor.posts(), 0, "nothing submitted without --submit");
}

#[test]
fn a_healthy_node_has_no_component_and_a_learning_one_submits_nothing() {
    let conductor = TestConductor::sregym(&["diagnosis", "done"]);
    conductor.serve_node_state("healthy");
    let run = diagnose(&conductor, &["--output", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["component"], serde_json::Value::Null);
    assert!(json["evidence"].as_array().unwrap().is_empty());

    conductor.serve_node_state("learning");
    let run = diagnose(&conductor, &["--submit", &conductor.url()]);
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("still learning"), "{}", run.stderr);
    assert_eq!(conductor.posts(), 0);
}

#[test]
fn a_detection_stage_or_setup_takes_no_diagnosis() {
    let conductor = TestConductor::with_detection(&["detection", "done"]);
    conductor.serve_node_state_json(degraded_node());
    let run = diagnose(&conductor, &["--submit", &conductor.url()]);
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    assert!(run.stderr.contains("collector detect"), "{}", run.stderr);
    assert_eq!(conductor.posts(), 0);

    let conductor = TestConductor::sregym(&["setup", "diagnosis", "done"]);
    conductor.serve_node_state_json(degraded_node());
    let run = diagnose(&conductor, &["--submit", &conductor.url()]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert_eq!(conductor.posts(), 0);
}
