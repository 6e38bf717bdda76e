use std::{collections::BTreeMap, path::Path, process::Command};

use model::{
    BaselineLearner, BaselineOptions, HealthState, Model, ModelError, TrainOptions,
    input::{Labels, Row, read_rows},
};

/// A tiny deterministic generator (xorshift) so the tests need no RNG crate of their own.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 10_000) as f64 / 10_000.0 - 0.5
    }
}

fn row(values: &[(&str, f64)]) -> Row {
    Row {
        values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        timestamp_s: None,
        label: None,
        line: 0,
    }
}

/// Healthy windows around (100 ops/s, 500 µs); faults around (100, 20000 µs).
fn windows(noise: &mut Noise, count: usize, latency_us: f64) -> Vec<Row> {
    (0..count)
        .map(|_| {
            row(&[
                ("ops_per_s", 100.0 * (1.0 + 0.1 * noise.next())),
                ("latency_p99_us", latency_us * (1.0 + 0.1 * noise.next())),
                ("psi_io_some_pct", 2.0 + noise.next()),
            ])
        })
        .collect()
}

#[test]
fn recovers_two_clusters_and_maps_labels_to_states() {
    let mut noise = Noise(7);
    let mut rows = windows(&mut noise, 200, 500.0);
    rows.extend(windows(&mut noise, 100, 20_000.0));
    let labels: Vec<bool> = (0..300).map(|i| i >= 200).collect();
    let model = Model::train(
        &rows,
        &TrainOptions {
            k: 2,
            labels: Some(labels),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        model.features,
        vec!["latency_p99_us", "ops_per_s", "psi_io_some_pct"]
    );
    let mut sizes = model.cluster_sizes.clone();
    sizes.sort();
    assert_eq!(sizes, vec![100, 200]);
    for (cluster, size) in model.cluster_sizes.iter().enumerate() {
        let expected = if *size == 100 {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        };
        assert_eq!(model.cluster_states[cluster], expected);
    }
    // The degraded centroid sits at high latency (positive z on latency).
    let degraded = model.cluster_sizes.iter().position(|s| *s == 100).unwrap();
    assert!(model.centroids[degraded][0] > 0.5);
}

#[test]
fn scores_grow_with_distance_and_the_threshold_comes_from_training() {
    let mut noise = Noise(11);
    let rows = windows(&mut noise, 300, 500.0);
    let model = Model::train(
        &rows,
        &TrainOptions {
            k: 2,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    // Without labels every sizeable cluster is healthy.
    assert!(
        model
            .cluster_states
            .iter()
            .all(|s| *s == HealthState::Healthy)
    );
    // Threshold: p99.5 of training scores x 1.25, so (nearly) no training window is above it.
    let above = rows
        .iter()
        .filter(|r| model.assess(&r.values).unwrap().state == HealthState::Degraded)
        .count();
    assert!(above <= 1, "{above} training windows flagged");
    let at = |latency: f64| {
        model
            .assess(
                &row(&[
                    ("ops_per_s", 100.0),
                    ("latency_p99_us", latency),
                    ("psi_io_some_pct", 2.0),
                ])
                .values,
            )
            .unwrap()
    };
    let (normal, slow, slower) = (at(500.0), at(5_000.0), at(50_000.0));
    assert!(normal.score < slow.score && slow.score < slower.score);
    assert_eq!(normal.state, HealthState::Healthy);
    assert_eq!(slower.state, HealthState::Degraded);
    // The explanation names the feature that moved, with a positive z.
    assert_eq!(slower.explanation[0].feature, "latency_p99_us");
    assert!(slower.explanation[0].z > 3.0);
    assert_eq!(slower.explanation.len(), 3);
}

#[test]
fn training_is_reproducible_with_a_seed() {
    let mut noise = Noise(3);
    let mut rows = windows(&mut noise, 100, 500.0);
    rows.extend(windows(&mut noise, 50, 8_000.0));
    let options = TrainOptions {
        k: 3,
        seed: 9,
        ..TrainOptions::default()
    };
    let a = Model::train(&rows, &options).unwrap();
    let b = Model::train(&rows, &options).unwrap();
    assert_eq!(a.centroids, b.centroids);
    assert_eq!(a.threshold, b.threshold);
}

#[test]
fn model_files_round_trip_and_bad_files_are_refused_by_name() {
    let mut noise = Noise(5);
    let rows = windows(&mut noise, 50, 500.0);
    let model = Model::train(
        &rows,
        &TrainOptions {
            k: 2,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    model.save(&path).unwrap();
    let mut back = Model::load(&path).unwrap();
    back.trained_at = model.trained_at.clone();
    assert_eq!(back, model);

    let text = std::fs::read_to_string(&path).unwrap();
    let cases = [
        ("truncated", text[..text.len() / 2].to_string(), "line"),
        (
            "version",
            text.replace("\"version\": 1", "\"version\": 99"),
            "version 99",
        ),
        ("format", text.replace("nodestate-model", "other"), "format"),
        (
            "nan",
            text.replacen("\"threshold\": ", "\"threshold\": NaN, \"x\": ", 1),
            "line",
        ),
        (
            "shapes",
            text.replacen("\"std\": [", "\"std\": [1.0, ", 1),
            "different lengths",
        ),
    ];
    for (name, content, expected) in cases {
        let bad = dir.path().join(format!("{name}.json"));
        std::fs::write(&bad, content).unwrap();
        let err = Model::load(&bad).unwrap_err().to_string();
        assert!(err.contains(&*bad.to_string_lossy()), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
    }
    assert!(matches!(
        Model::load(&dir.path().join("missing.json")),
        Err(ModelError::Io { .. })
    ));
}

#[test]
fn bad_inputs_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ragged = write("ragged.csv", "a,b\n1,2\n3\n");
    let err = read_rows(&ragged).unwrap_err().to_string();
    assert!(err.contains("ragged.csv:3"), "{err}");
    let not_number = write("nan.csv", "a,b\n1,2\n1,x\n");
    let err = read_rows(&not_number).unwrap_err().to_string();
    assert!(
        err.contains("nan.csv:3") && err.contains("not a number"),
        "{err}"
    );
    let infinite = write("inf.csv", "a,b\n1,inf\n");
    assert!(
        read_rows(&infinite)
            .unwrap_err()
            .to_string()
            .contains("not finite")
    );
    let bad_json = write("w.jsonl", "{\"a\": 1}\n{not json\n");
    let err = read_rows(&bad_json).unwrap_err().to_string();
    assert!(err.contains("w.jsonl:2"), "{err}");
    let empty = write("empty.csv", "a,b\n");
    assert!(read_rows(&empty).unwrap().is_empty());
    assert!(matches!(
        Model::train(&[], &TrainOptions::default()),
        Err(ModelError::Training(_))
    ));

    // A model whose features the input lacks.
    let mut noise = Noise(1);
    let model = Model::train(
        &windows(&mut noise, 30, 500.0),
        &TrainOptions {
            k: 1,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let other = write("other.csv", "x,y\n1,2\n");
    let rows = read_rows(&other).unwrap();
    let err = model.check_features(&rows, &other).unwrap_err().to_string();
    assert!(
        err.contains("other.csv") && err.contains("latency_p99_us"),
        "{err}"
    );
}

#[test]
fn json_lines_windows_skip_bookkeeping_and_nested_fields() {
    let line = r#"{"timestamp":"2026-11-25T08:00:05.000Z","unix_ms":1,"window_s":5.0,"node":"n","schema":1,"a_per_s":2.5,"block_devices":{"vda":{"reads":3}}}"#;
    let row = Row::from_json(&serde_json::from_str(line).unwrap(), 1).unwrap();
    assert_eq!(row.values, BTreeMap::from([("a_per_s".to_string(), 2.5)]));
    assert!(row.timestamp_s.unwrap() > 1.7e9);
}

#[test]
fn the_baseline_learns_then_judges_then_refreshes_in_bounded_memory() {
    let mut noise = Noise(13);
    let mut learner = BaselineLearner::new(BaselineOptions {
        learn_windows: 40,
        refresh_every: 30,
        max_kept: 50,
        k: 2,
        seed: 1,
    });
    for row in windows(&mut noise, 40, 500.0) {
        assert_eq!(learner.observe(row.values).unwrap(), None);
    }
    assert!(learner.model().is_some());
    let trained_on = learner.model().unwrap().training_windows;
    assert_eq!(trained_on, 40);
    let fault = windows(&mut noise, 1, 30_000.0).remove(0);
    assert_eq!(
        learner.observe(fault.values).unwrap().unwrap().state,
        HealthState::Degraded
    );
    for row in windows(&mut noise, 29, 500.0) {
        assert_eq!(
            learner.observe(row.values).unwrap().unwrap().state,
            HealthState::Healthy
        );
    }
    // Refreshed after 30 judged windows, from at most 50 kept healthy ones (not the fault).
    assert_eq!(learner.model().unwrap().training_windows, 50);
}

/// A dataset shaped like the public server-metric anomaly sets (numeric CSV: an unlabelled
/// training part, a labelled test part with fault segments), made here with a seed.
fn public_shaped_dataset(
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut noise = Noise(2026);
    let mut train = String::from("timestamp,cpu,mem,disk_io,net_in\n");
    for t in 0..300 {
        train += &format!(
            "{t},{:.3},{:.3},{:.3},{:.3}\n",
            40.0 + 5.0 * noise.next(),
            60.0 + 3.0 * noise.next(),
            200.0 + 30.0 * noise.next(),
            1000.0 + 100.0 * noise.next()
        );
    }
    let mut test = String::from("timestamp,cpu,mem,disk_io,net_in,label\n");
    for t in 300..500 {
        let fault = (350..370).contains(&t) || (430..445).contains(&t);
        let disk = if fault { 4000.0 } else { 200.0 };
        test += &format!(
            "{t},{:.3},{:.3},{:.3},{:.3},{}\n",
            40.0 + 5.0 * noise.next(),
            60.0 + 3.0 * noise.next(),
            disk + 30.0 * noise.next(),
            1000.0 + 100.0 * noise.next(),
            u8::from(fault)
        );
    }
    let train_path = dir.join("train.csv");
    let test_path = dir.join("test.csv");
    let labels_path = dir.join("labels.csv");
    std::fs::write(&train_path, train).unwrap();
    std::fs::write(&labels_path, "start,end\n350,369\n430,444\n").unwrap();
    std::fs::write(&test_path, test).unwrap();
    (train_path, test_path, labels_path)
}

#[test]
fn a_public_shaped_set_runs_through_train_score_and_eval_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, labels) = public_shaped_dataset(dir.path());
    let model_path = dir.path().join("model.json");
    let binary = env!("CARGO_BIN_EXE_model");
    let run = |args: &[&std::ffi::OsStr]| {
        let output = Command::new(binary).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let summary = run(&[
        "train".as_ref(),
        "--input".as_ref(),
        train.as_os_str(),
        "--out".as_ref(),
        model_path.as_os_str(),
        "--k".as_ref(),
        "3".as_ref(),
    ]);
    assert!(summary.contains("cluster  size  state"), "{summary}");
    // Scoring the test part: the label column is not a feature, so features match.
    let scores = run(&[
        "score".as_ref(),
        "--model".as_ref(),
        model_path.as_os_str(),
        "--input".as_ref(),
        test.as_os_str(),
    ]);
    let lines: Vec<&str> = scores.lines().collect();
    assert_eq!(lines[0], "score,cluster,state,explanation");
    assert_eq!(lines.len(), 201);
    // Both label forms give the same evaluation: per-row column and fault segments.
    let evaluation = run(&[
        "eval".as_ref(),
        "--model".as_ref(),
        model_path.as_os_str(),
        "--input".as_ref(),
        test.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
    ]);
    let evaluation: serde_json::Value = serde_json::from_str(&evaluation).unwrap();
    assert_eq!(evaluation["time_to_detect"].as_array().unwrap().len(), 2);
    assert!(evaluation["recall"].as_f64().unwrap() > 0.9, "{evaluation}");
    assert!(
        evaluation["precision"].as_f64().unwrap() > 0.9,
        "{evaluation}"
    );
    assert_eq!(evaluation["time_to_detect"][0], 0.0);
    let rows = read_rows(&test).unwrap();
    let from_segments = Labels::read(&labels)
        .unwrap()
        .per_row(&rows, &test)
        .unwrap();
    let from_column: Vec<bool> = rows.iter().map(|r| r.label.unwrap()).collect();
    assert_eq!(from_segments, from_column);
    let inspect = run(&["inspect".as_ref(), model_path.as_os_str()]);
    assert!(
        inspect.contains("features: cpu, disk_io, mem, net_in"),
        "{inspect}"
    );
}
