//! The `model` binary end to end: the shipped server-metric set through train, score, eval and
//! inspect unchanged, and bad input as a message naming file and line (never a panic).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn model(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_model"))
        .args(args)
        .output()
        .expect("the model binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/data/server-metrics")
        .join(name)
        .display()
        .to_string()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn train_score_eval_and_inspect_the_server_metric_set() {
    let dir = tempfile::tempdir().unwrap();
    let model_file = path(dir.path(), "model.json");
    let summary = stdout(&model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &model_file,
        "--k",
        "4",
    ]));
    assert!(summary.contains("cluster"), "{summary}");
    assert!(summary.contains("healthy"), "{summary}");

    let scores = stdout(&model(&[
        "score",
        "--model",
        &model_file,
        "--input",
        &data("test.csv"),
    ]));
    let lines: Vec<&str> = scores.lines().collect();
    assert_eq!(lines[0], "score,cluster,state,explanation");
    assert_eq!(lines.len(), 241, "one row per input row");
    // Row 30 of the test part is the first of a disk stall.
    assert!(
        lines[31].contains(",degraded,disk_await_ms=+"),
        "{}",
        lines[31]
    );

    let out_file = path(dir.path(), "scores.jsonl");
    stdout(&model(&[
        "score",
        "--model",
        &model_file,
        "--input",
        &data("test.csv"),
        "--format",
        "jsonl",
        "--out",
        &out_file,
    ]));
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out_file)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["state"], "healthy");
    assert_eq!(first["explanation"].as_array().unwrap().len(), 3);

    let evaluation = stdout(&model(&[
        "eval",
        "--model",
        &model_file,
        "--input",
        &data("test.csv"),
        "--labels",
        &data("test_labels.csv"),
        "--json",
    ]));
    let evaluation: serde_json::Value = serde_json::from_str(&evaluation).unwrap();
    assert_eq!(evaluation["windows"]["segments_detected"], 3);
    assert!(
        evaluation["windows"]["point_adjusted"]["f1"]
            .as_f64()
            .unwrap()
            > 0.9
    );
    assert_eq!(
        evaluation["windows"]["segments"][0]["detected_after_s"],
        0.0
    );

    let by_segments = stdout(&model(&[
        "eval",
        "--model",
        &model_file,
        "--input",
        &data("test.csv"),
        "--labels",
        &data("test_segments.csv"),
    ]));
    assert!(
        by_segments.contains("segments detected 3/3"),
        "{by_segments}"
    );
    assert!(by_segments.contains("hysteresis sweep"), "{by_segments}");

    let inspect = stdout(&model(&["inspect", &model_file]));
    assert!(
        inspect.contains("nodestate-model format version 1"),
        "{inspect}"
    );
    assert!(inspect.contains("disk_await_ms"), "{inspect}");
    let dump = stdout(&model(&["inspect", "--json", &model_file]));
    assert_eq!(dump, std::fs::read_to_string(&model_file).unwrap());
}

fn fails_with(args: &[&str], expected: &str) {
    let output = model(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should fail: {args:?}");
    assert!(
        stderr.contains(expected),
        "expected `{expected}` in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_fails_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    };
    let model_file = path(dir.path(), "model.json");
    stdout(&model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &model_file,
    ]));

    let ragged = write("ragged.csv", "a,b\n1,2\n1\n");
    let ragged = ragged.display().to_string();
    fails_with(
        &[
            "train",
            "--input",
            &ragged,
            "--out",
            &path(dir.path(), "x.json"),
        ],
        &format!("{ragged}:3: 1 fields"),
    );

    let nan = write("nan.csv", "a,b\n1,NaN\n").display().to_string();
    fails_with(
        &[
            "train",
            "--input",
            &nan,
            "--out",
            &path(dir.path(), "x.json"),
        ],
        &format!("{nan}:2: `b` is NaN"),
    );

    let other = write("other.csv", "cpu_pct,x\n1,2\n").display().to_string();
    fails_with(
        &["score", "--model", &model_file, "--input", &other],
        &format!("{other}:1: the model needs fields that the input lacks: mem_pct, load1"),
    );

    let text = std::fs::read_to_string(&model_file).unwrap();
    let truncated = write("truncated.json", &text[..text.len() - 40])
        .display()
        .to_string();
    fails_with(
        &["score", "--model", &truncated, "--input", &data("test.csv")],
        "the file ends early",
    );

    let empty = write("empty.jsonl", "").display().to_string();
    fails_with(
        &["score", "--model", &model_file, "--input", &empty],
        &format!("{empty}: no data rows"),
    );

    let few = write("few.csv", "label\n1\n").display().to_string();
    fails_with(
        &[
            "eval",
            "--model",
            &model_file,
            "--input",
            &data("test.csv"),
            "--labels",
            &few,
        ],
        "1 labels for 240 input rows",
    );
}

#[test]
fn fleet_training_flags_need_prometheus_and_an_unreachable_one_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model_file = path(dir.path(), "model.json");
    let train = data("train.csv");
    for flag in [
        ["--since", "2m"],
        ["--selector", "node=\"a\""],
        ["--step", "5s"],
    ] {
        let output = model(&[
            "train",
            "--input",
            &train,
            "--out",
            &model_file,
            flag[0],
            flag[1],
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{flag:?} accepted without --prometheus"
        );
        assert!(stderr.contains("--prometheus"), "{flag:?}: {stderr}");
    }
    let output = model(&[
        "train",
        "--prometheus",
        "http://127.0.0.1:9",
        "--out",
        &model_file,
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--since"),
        "{output:?}"
    );
    // A port just released: nothing listens, the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let output = model(&[
        "train",
        "--prometheus",
        &nowhere,
        "--since",
        "10m",
        "--out",
        &model_file,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("Prometheus {nowhere}")),
        "{stderr}"
    );
    assert!(!Path::new(&model_file).exists(), "a model was written");
}
