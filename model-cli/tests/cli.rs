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

/// The training set with a `label` column: `label(row)` for each of its 320 rows.
fn labelled_train(dir: &Path, name: &str, label: impl Fn(usize) -> String) -> String {
    let text = std::fs::read_to_string(data("train.csv")).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{},label\n", lines.next().unwrap());
    for (row, line) in lines.enumerate() {
        out.push_str(&format!("{line},{}\n", label(row)));
    }
    let file = dir.join(name);
    std::fs::write(&file, out).unwrap();
    file.display().to_string()
}

#[test]
fn labels_other_than_0_and_1_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = path(dir.path(), "model.json");
    // Row 5 (line 7, after the header) says 2: a class number, not a fault flag.
    let input = labelled_train(dir.path(), "two.csv", |row| {
        if row == 5 { "2" } else { "0" }.into()
    });
    fails_with(
        &["train", "--input", &input, "--out", &out],
        &format!("{input}:7: `label` is 2: a label is 0 (healthy) or 1 (fault)"),
    );
    // A labels file given apart: line 4 says -1.
    let rows = std::fs::read_to_string(data("train.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    let mut text = "label\n".to_string();
    for row in 0..rows {
        text.push_str(if row == 2 { "-1\n" } else { "0\n" });
    }
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, text).unwrap();
    let labels = labels.display().to_string();
    fails_with(
        &[
            "train",
            "--input",
            &data("train.csv"),
            "--labels",
            &labels,
            "--out",
            &out,
        ],
        &format!("{labels}:4: `label` is -1"),
    );
    // JSON Lines records likewise.
    let jsonl = dir.path().join("windows.jsonl");
    std::fs::write(
        &jsonl,
        "{\"a_per_s\":1,\"label\":0}\n{\"a_per_s\":2,\"label\":0.5}\n",
    )
    .unwrap();
    let jsonl = jsonl.display().to_string();
    fails_with(
        &["train", "--input", &jsonl, "--out", &out],
        &format!("{jsonl}:2: `label` is 0.5"),
    );
    assert!(!Path::new(&out).exists(), "a model was written");
    // 0 and 1 (also written 0.0, 1.0) still train.
    let fine = labelled_train(dir.path(), "fine.csv", |row| {
        if row % 50 == 0 { "1.0" } else { "0" }.into()
    });
    stdout(&model(&["train", "--input", &fine, "--out", &out]));
}

#[test]
fn a_model_without_healthy_training_windows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = path(dir.path(), "model.json");
    let input = labelled_train(dir.path(), "all-faulty.csv", |_| "1".into());
    fails_with(
        &["train", "--input", &input, "--out", &out],
        "all 320 training windows are labelled faulty",
    );
    assert!(!Path::new(&out).exists(), "a model was written");
    assert!(
        !Path::new(&format!("{out}.tmp")).exists(),
        "a temporary file was left"
    );
}

/// The `model` binary with its written files capped at `max_bytes` (RLIMIT_FSIZE, SIGXFSZ
/// ignored): a write past it fails with EFBIG, as on a full disk.
fn model_with_file_size_limit(args: &[&str], max_bytes: u64) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_model"));
    command.args(args);
    // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: max_bytes,
                rlim_max: max_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("the model binary runs")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_write_leaves_no_output_behind() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("out");
    std::fs::create_dir(&work).unwrap();
    let model_file = path(dir.path(), "model.json");
    stdout(&model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &model_file,
    ]));
    let size = std::fs::metadata(&model_file).unwrap().len();
    assert!(size > 2000, "a model of {size} bytes");

    // The model file cannot be written whole: no model, and no `.tmp` beside it.
    let out = path(&work, "model.json");
    let output = model_with_file_size_limit(
        &["train", "--input", &data("train.csv"), "--out", &out],
        1000,
    );
    assert!(!output.status.success(), "{output:?}");
    assert!(entries(&work).is_empty(), "left: {:?}", entries(&work));

    // The scores cannot be written whole: no output file, neither empty nor cut off.
    let scores = path(&work, "scores.csv");
    let output = model_with_file_size_limit(
        &[
            "score",
            "--model",
            &model_file,
            "--input",
            &data("test.csv"),
            "--out",
            &scores,
        ],
        1000,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&scores), "{stderr}");
    assert!(entries(&work).is_empty(), "left: {:?}", entries(&work));

    // An earlier output stays as it was when a new one fails.
    std::fs::write(&scores, "earlier\n").unwrap();
    let output = model_with_file_size_limit(
        &[
            "score",
            "--model",
            &model_file,
            "--input",
            &data("test.csv"),
            "--out",
            &scores,
        ],
        1000,
    );
    assert!(!output.status.success());
    assert_eq!(std::fs::read_to_string(&scores).unwrap(), "earlier\n");
    assert_eq!(entries(&work), vec!["scores.csv"]);

    // A model path that is a directory: the rename fails, and the temporary file goes.
    let taken = work.join("taken");
    std::fs::create_dir(&taken).unwrap();
    let output = model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &taken.display().to_string(),
    ]);
    assert!(!output.status.success());
    assert_eq!(entries(&work), vec!["scores.csv", "taken"]);
}

#[test]
fn outputs_never_overwrite_the_model_or_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let model_file = path(dir.path(), "model.json");
    stdout(&model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &model_file,
    ]));
    let input = path(dir.path(), "test.csv");
    std::fs::copy(data("test.csv"), &input).unwrap();
    let model_before = std::fs::read(&model_file).unwrap();
    let input_before = std::fs::read(&input).unwrap();

    fails_with(
        &[
            "score",
            "--model",
            &model_file,
            "--input",
            &input,
            "--out",
            &input,
        ],
        &format!("--out {input} is the --input file"),
    );
    fails_with(
        &[
            "score",
            "--model",
            &model_file,
            "--input",
            &input,
            "-o",
            &model_file,
        ],
        &format!("--out {model_file} is the --model file"),
    );
    // Another spelling of the same file: through `..`, and a hard link.
    let roundabout = format!("{}/../{}/test.csv", dir.path().display(), {
        dir.path().file_name().unwrap().to_string_lossy()
    });
    fails_with(
        &[
            "score",
            "--model",
            &model_file,
            "--input",
            &input,
            "-o",
            &roundabout,
        ],
        "is the --input file",
    );
    let link = path(dir.path(), "link.csv");
    std::fs::hard_link(&input, &link).unwrap();
    fails_with(
        &[
            "score",
            "--model",
            &model_file,
            "--input",
            &link,
            "-o",
            &input,
        ],
        "is the --input file",
    );
    fails_with(
        &["train", "--input", &input, "--out", &input],
        &format!("--out {input} is the input file"),
    );
    let labels = path(dir.path(), "labels.csv");
    std::fs::copy(data("test_labels.csv"), &labels).unwrap();
    fails_with(
        &[
            "train", "--input", &input, "--labels", &labels, "--out", &labels,
        ],
        "is the labels file",
    );
    assert_eq!(std::fs::read(&model_file).unwrap(), model_before);
    assert_eq!(std::fs::read(&input).unwrap(), input_before);
    assert_eq!(
        std::fs::read(&labels).unwrap(),
        std::fs::read(data("test_labels.csv")).unwrap()
    );
    // Overwriting an earlier model with a new one is what --out is for.
    stdout(&model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &model_file,
    ]));
}

#[test]
fn train_sets_the_threshold_from_the_tail_by_default_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("contaminated");
    let set_dir = set.display().to_string();
    stdout(&model(&[
        "synth",
        "--set",
        "contaminated",
        "--out",
        &set_dir,
    ]));
    let train = path(&set, "train.csv");
    let out = path(dir.path(), "model.json");
    // Defaults: tail rule (3000 windows hold enough episodes), robust scaling, trimming on.
    let summary = stdout(&model(&["train", "--input", &train, "--out", &out]));
    assert!(summary.contains("= tail rule:"), "{summary}");
    assert!(summary.contains("generalized Pareto shape"), "{summary}");
    assert!(summary.contains("robust scaling"), "{summary}");
    assert!(summary.contains("(at most 5%)"), "{summary}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(saved["threshold"]["tail"]["peaks"].as_u64().unwrap() >= 20);
    assert_eq!(saved["scaler"]["method"], "robust");
    // The rule before: percentile, no trimming, mean and standard deviation.
    let summary = stdout(&model(&[
        "train",
        "--input",
        &train,
        "--out",
        &out,
        "--threshold-rule",
        "percentile",
        "--trim",
        "0",
        "--scaling",
        "standard",
    ]));
    assert!(summary.contains("= p99 of"), "{summary}");
    assert!(summary.contains("no trimming"), "{summary}");
    assert!(summary.contains("standard scaling"), "{summary}");
    // Too few windows for a tail: the percentile rule, and the summary says why.
    let summary = stdout(&model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &out,
    ]));
    assert!(
        summary.contains("found fewer than 20 episodes to fit a tail"),
        "{summary}"
    );
    fails_with(
        &["train", "--input", &train, "--out", &out, "--trim", "0.9"],
        "not a share between 0 and 0.5",
    );
    fails_with(
        &["synth", "--set", "nope", "--out", &set_dir],
        "the sets are heavy-tails, contaminated, drift, shapes",
    );
}

/// `--output json` on every command a script reads (train, score, eval, inspect) prints JSON
/// on stdout (JSON Lines for score: one object a window); the old spellings still work, with
/// a deprecation note on stderr.
#[test]
fn output_json_parses_on_every_command_and_old_spellings_warn() {
    let dir = tempfile::tempdir().unwrap();
    let model_file = path(dir.path(), "model.json");
    let parse = |text: &str| -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
    };
    let trained = parse(&stdout(&model(&[
        "train",
        "--input",
        &data("train.csv"),
        "--out",
        &model_file,
        "--output",
        "json",
    ])));
    assert_eq!(trained["out"], model_file.as_str());
    assert!(trained["model"]["clusters"].is_array(), "{trained}");

    let scores = stdout(&model(&[
        "score",
        "--model",
        &model_file,
        "--input",
        &data("test.csv"),
        "--output",
        "json",
    ]));
    assert_eq!(scores.lines().count(), 240, "one object per input row");
    for line in scores.lines() {
        assert!(parse(line)["score"].is_number(), "{line}");
    }
    let evaluation = parse(&stdout(&model(&[
        "eval",
        "--model",
        &model_file,
        "--input",
        &data("test.csv"),
        "--labels",
        &data("test_labels.csv"),
        "--output",
        "json",
    ])));
    assert_eq!(evaluation["windows"]["segments_detected"], 3);
    let inspected = parse(&stdout(&model(&[
        "inspect",
        &model_file,
        "--output",
        "json",
    ])));
    assert_eq!(inspected, trained["model"]);

    for (args, old) in [
        (vec!["inspect", model_file.as_str(), "--json"], "--json"),
        (
            vec![
                "score",
                "--model",
                &model_file,
                "--input",
                &data("test.csv"),
                "--format",
                "jsonl",
            ],
            "--format",
        ),
    ] {
        let output = model(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(stderr.contains(&format!("{old} is deprecated")), "{stderr}");
        let text = stdout(&output);
        // inspect prints one pretty document; score one object a line.
        match old {
            "--json" => parse(&text),
            _ => parse(text.lines().next().unwrap_or_default()),
        };
    }
}
