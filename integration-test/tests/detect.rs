//! `collector detect --submit` against a test conductor that follows SREGym's API (stages,
//! 400/503 bodies, `done`; `integration_test::conductor`) and plays the node's `/state` too.
//! Answers are graded as the oracle does: trimmed, lower-cased, exact.

use std::process::{Command, Output};

use integration_test::{conductor::TestConductor, workspace_binary};

struct Detect {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn detect(node: &TestConductor, extra: &[&str], env: &[(&str, String)]) -> Detect {
    let mut command = Command::new(workspace_binary("collector"));
    command
        .args(["detect", "--node", &node.url()])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .env_remove("API_HOSTNAME")
        .env_remove("API_PORT");
    for (name, value) in env {
        command.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    Detect {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn graded_as_oracle(conductor: &TestConductor, expected: &str) -> bool {
    conductor
        .graded()
        .iter()
        .any(|(stage, solution)| stage == "detection" && solution.trim().to_lowercase() == expected)
}

#[test]
fn a_degraded_node_is_submitted_as_yes_to_a_detection_stage() {
    let conductor = TestConductor::with_detection(&["detection", "done"]);
    conductor.serve_node_state("degraded");
    let submit = format!("{}/submit", conductor.url());
    let run = detect(&conductor, &["--submit", &submit], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "Yes");
    assert!(
        graded_as_oracle(&conductor, "yes"),
        "{:?}",
        conductor.graded()
    );
    assert!(run.stderr.contains("submitted Yes"), "{}", run.stderr);
    assert_eq!(conductor.stage(), "done");
}

#[test]
fn a_healthy_node_is_no_and_the_address_comes_from_api_hostname_and_api_port() {
    let conductor = TestConductor::with_detection(&["detection", "done"]);
    conductor.serve_node_state("healthy");
    let env = [
        ("API_HOSTNAME", "127.0.0.1".to_string()),
        ("API_PORT", conductor.port().to_string()),
    ];
    let run = detect(&conductor, &["--submit"], &env);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "No");
    assert!(
        graded_as_oracle(&conductor, "no"),
        "{:?}",
        conductor.graded()
    );
}

#[test]
fn submit_without_a_url_or_api_hostname_is_a_clear_error() {
    let conductor = TestConductor::with_detection(&["detection"]);
    conductor.serve_node_state("healthy");
    let run = detect(&conductor, &["--submit"], &[]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("API_HOSTNAME"), "{}", run.stderr);
    assert_eq!(conductor.posts(), 0);
}

#[test]
fn a_learning_node_exits_5_prints_no_answer_and_submits_nothing() {
    let conductor = TestConductor::with_detection(&["detection", "done"]);
    conductor.serve_node_state("learning");
    let run = detect(&conductor, &[], &[]);
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert_eq!(run.stdout, "", "no Yes/No when the node cannot tell");
    assert!(run.stderr.contains("still learning"), "{}", run.stderr);

    let run = detect(&conductor, &["--submit", &conductor.url()], &[]);
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert_eq!(conductor.posts(), 0);
    assert_eq!(conductor.stage(), "detection");
}

#[test]
fn setup_and_done_take_no_answer_exit_3_at_once() {
    for stage in ["setup", "done"] {
        let conductor = TestConductor::sregym(&[stage]);
        conductor.serve_node_state("degraded");
        let started = std::time::Instant::now();
        let run = detect(&conductor, &["--submit", &conductor.url()], &[]);
        assert_eq!(run.code, Some(3), "{stage}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("`{stage}`")), "{}", run.stderr);
        assert_eq!(conductor.posts(), 0, "{stage}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{stage}: not at once"
        );
    }
}

#[test]
fn wait_polls_status_until_a_detection_stage_opens() {
    let conductor = std::sync::Arc::new(TestConductor::with_detection(&[
        "setup",
        "detection",
        "done",
    ]));
    conductor.serve_node_state("degraded");
    let opener = conductor.clone();
    let advance = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        opener.advance();
    });
    let run = detect(
        &conductor,
        &["--submit", &conductor.url(), "--wait", "20s"],
        &[],
    );
    advance.join().unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        graded_as_oracle(&conductor, "yes"),
        "{:?}",
        conductor.graded()
    );

    let closed = TestConductor::sregym(&["setup"]);
    closed.serve_node_state("degraded");
    let run = detect(&closed, &["--submit", &closed.url(), "--wait", "2s"], &[]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("waited"), "{}", run.stderr);
    assert_eq!(closed.posts(), 0);
}

#[test]
fn a_diagnosis_or_mitigation_stage_refuses_a_yes_no_with_exit_4() {
    for (stage, hint) in [
        ("diagnosis", "collector diagnose"),
        ("mitigation", "read-only"),
    ] {
        let conductor = TestConductor::sregym(&[stage, "done"]);
        conductor.serve_node_state("degraded");
        let run = detect(&conductor, &["--submit", &conductor.url()], &[]);
        assert_eq!(run.code, Some(4), "{stage}: {}", run.stderr);
        assert!(run.stderr.contains(hint), "{stage}: {}", run.stderr);
        assert_eq!(
            conductor.posts(),
            0,
            "a Yes/No is no diagnosis: never posted"
        );
        assert_eq!(run.stdout, "Yes", "the answer is still printed");
    }
}

#[test]
fn busy_503_is_retried_with_back_off_and_gives_up_with_exit_6() {
    let conductor = TestConductor::with_detection(&["detection", "done"]);
    conductor.serve_node_state("degraded");
    conductor.busy_for(2);
    let run = detect(&conductor, &["--submit", &conductor.url()], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(conductor.posts(), 3, "two 503s, then graded");
    assert!(graded_as_oracle(&conductor, "yes"));

    let conductor = TestConductor::with_detection(&["detection", "done"]);
    conductor.serve_node_state("degraded");
    conductor.busy_for(1000);
    let run = detect(
        &conductor,
        &["--submit", &conductor.url(), "--busy-for", "2s"],
        &[],
    );
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Previous stage is still being evaluated"),
        "the conductor's words are printed: {}",
        run.stderr
    );
    let posts = conductor.posts();
    assert!(
        (2..=3).contains(&posts),
        "1 s then 2 s of back-off in 2 s: {posts} posts"
    );
    assert!(conductor.graded().is_empty());
}

#[test]
fn a_4xx_refusal_prints_the_conductors_body_and_exits_4() {
    let conductor = TestConductor::with_detection(&["detection", "done"]);
    conductor.serve_node_state("healthy");
    conductor.fail_next_grading();
    let run = detect(&conductor, &["--submit", &conductor.url()], &[]);
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    assert!(run.stderr.contains("HTTP 400"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Grading error: the test's grader failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreachable_node_is_an_error_not_an_answer() {
    let port = integration_test::http::free_port();
    let output = Command::new(workspace_binary("collector"))
        .args(["detect", "--node", &format!("http://127.0.0.1:{port}")])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "no Yes/No may be printed without a state"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("/state"));
}
