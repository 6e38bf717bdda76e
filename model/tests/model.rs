//! The library on synthetic data with known answers, the model file, and every bad input.

use std::{path::Path, path::PathBuf};

use model::{
    BaselineLearner, BaselineOptions, HealthState, Labels, Model, ModelError, Table, TrainOptions,
    read_table, read_tables,
    synthetic::{self, Noise},
};
use serde_json::json;

mod common;
use common::table;

/// `count` rows around `center` (relative noise 5 %).
fn blob(noise: &mut Noise, count: usize, center: &[f64]) -> Vec<Vec<f64>> {
    (0..count)
        .map(|_| center.iter().map(|c| noise.around(*c, 0.05)).collect())
        .collect()
}

const COLUMNS: [&str; 3] = ["ops_per_s", "latency_p99_us", "psi_io_some_pct"];

fn two_blobs(healthy: usize, faulty: usize) -> Table {
    let mut noise = Noise::new(11);
    let mut rows = blob(&mut noise, healthy, &[100.0, 500.0, 2.0]);
    rows.extend(blob(&mut noise, faulty, &[100.0, 20_000.0, 30.0]));
    table(&COLUMNS, &rows)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn recovers_the_centroids_of_known_clusters() {
    let mut noise = Noise::new(3);
    let centers = [[10.0, 200.0], [1000.0, 200.0], [10.0, 50_000.0]];
    let mut rows = Vec::new();
    for center in &centers {
        rows.extend(blob(&mut noise, 100, center));
    }
    let model = Model::train(
        &table(&["reads_per_s", "wait_us"], &rows),
        &TrainOptions {
            k: 3,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        model.feature_names().collect::<Vec<_>>(),
        vec!["reads_per_s", "wait_us"]
    );
    let recovered: Vec<Vec<f64>> = (0..3)
        .map(|c| {
            model
                .centroid_values(c)
                .into_iter()
                .map(|(_, v)| v)
                .collect()
        })
        .collect();
    for want in &centers {
        let relative_error = |got: &Vec<f64>| {
            got.iter()
                .zip(want)
                .map(|(g, w)| (g / w - 1.0).abs())
                .fold(0.0, f64::max)
        };
        let closest = recovered
            .iter()
            .min_by(|a, b| relative_error(a).total_cmp(&relative_error(b)))
            .unwrap();
        assert!(
            relative_error(closest) < 0.05,
            "expected a centroid near {want:?}, got {recovered:?}"
        );
    }
    assert!(model.clusters.iter().all(|c| c.size == 100));
    assert!(
        model
            .clusters
            .iter()
            .all(|c| c.state == HealthState::Healthy)
    );
}

#[test]
fn labels_decide_cluster_states() {
    let data = two_blobs(200, 100);
    let labels: Vec<bool> = (0..300).map(|i| i >= 200).collect();
    let model = Model::train(
        &data,
        &TrainOptions {
            k: 2,
            labels: Some(labels),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let mut by_size: Vec<(usize, HealthState, Option<usize>)> = model
        .clusters
        .iter()
        .map(|c| (c.size, c.state, c.labelled_faults))
        .collect();
    by_size.sort_by_key(|c| c.0);
    assert_eq!(
        by_size,
        vec![
            (100, HealthState::Degraded, Some(100)),
            (200, HealthState::Healthy, Some(0))
        ]
    );
    // Windows near the degraded cluster are degraded even when the threshold alone would
    // not say so.
    let fault = json!({"ops_per_s": 100.0, "latency_p99_us": 20_000.0, "psi_io_some_pct": 30.0});
    assert_eq!(model.score(&fault).unwrap().state, HealthState::Degraded);
}

#[test]
fn without_labels_the_bulk_is_healthy_and_small_clusters_are_degraded() {
    let data = two_blobs(290, 10);
    let model = Model::train(
        &data,
        &TrainOptions {
            k: 2,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    for cluster in &model.clusters {
        let expected = if cluster.size == 10 {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        };
        assert_eq!(cluster.state, expected, "cluster of {}", cluster.size);
    }
    // The outliers do not raise the threshold: it is calibrated on the healthy bulk.
    assert_eq!(model.threshold.calibration_windows, 290);
}

#[test]
fn scores_grow_with_distance_from_healthy() {
    let model = Model::train(&two_blobs(300, 0), &TrainOptions::default()).unwrap();
    let scores: Vec<f64> = [500.0, 1000.0, 3000.0, 10_000.0, 100_000.0]
        .iter()
        .map(|latency| {
            model
                .score(
                    &json!({"ops_per_s": 100.0, "latency_p99_us": latency, "psi_io_some_pct": 2.0}),
                )
                .unwrap()
                .score
        })
        .collect();
    assert!(
        scores.windows(2).all(|pair| pair[0] < pair[1]),
        "{scores:?}"
    );
    let far = model
        .score(&json!({"ops_per_s": 100.0, "latency_p99_us": 100_000.0, "psi_io_some_pct": 2.0}))
        .unwrap();
    assert_eq!(far.state, HealthState::Degraded);
    assert_eq!(far.explanation.len(), 3);
    assert_eq!(far.explanation[0].feature, "latency_p99_us");
    assert!(far.explanation[0].z > 10.0, "{:?}", far.explanation);
    let near = model
        .score(&json!({"ops_per_s": 100.0, "latency_p99_us": 500.0, "psi_io_some_pct": 2.0}))
        .unwrap();
    assert_eq!(near.state, HealthState::Healthy);
}

#[test]
fn threshold_is_the_documented_percentile_of_training_scores() {
    let data = two_blobs(400, 0);
    let options = TrainOptions {
        threshold_percentile: 95.0,
        threshold_margin: 1.0,
        n_runs: 3,
        ..TrainOptions::default()
    };
    let model = Model::train(&data, &options).unwrap();
    let mut scores: Vec<f64> = model
        .score_table(&data)
        .unwrap()
        .iter()
        .map(|a| a.score)
        .collect();
    scores.sort_by(f64::total_cmp);
    // 95th percentile of 400 values: rank 0.95 × 399 = 379.05.
    let expected = scores[379] + 0.05 * (scores[380] - scores[379]);
    assert!((model.threshold.value - expected).abs() < 1e-9);
    let above = scores
        .iter()
        .filter(|s| **s > model.threshold.value)
        .count();
    assert_eq!(above, 20, "5 % of 400 windows above the 95th percentile");
    // The margin multiplies it.
    let wider = Model::train(
        &data,
        &TrainOptions {
            threshold_margin: 1.5,
            ..options
        },
    )
    .unwrap();
    assert!((wider.threshold.value - 1.5 * expected).abs() < 1e-9);
}

#[test]
fn the_same_seed_gives_the_same_model() {
    let data = two_blobs(200, 100);
    let train = |seed| {
        let mut model = Model::train(
            &data,
            &TrainOptions {
                k: 3,
                seed,
                ..TrainOptions::default()
            },
        )
        .unwrap();
        model.trained_at.clear();
        model
    };
    assert_eq!(train(5), train(5));
}

#[test]
fn the_model_does_not_depend_on_the_number_of_threads() {
    let data = two_blobs(300, 60);
    let train = |threads| {
        let mut model = Model::train(
            &data,
            &TrainOptions {
                k: 5,
                seed: 9,
                threads,
                ..TrainOptions::default()
            },
        )
        .unwrap();
        model.trained_at.clear();
        model
    };
    let one = train(1);
    for threads in [2, 3, 16, 0] {
        assert_eq!(train(threads), one, "{threads} threads");
    }
}

#[test]
fn identical_windows_train_without_panicking() {
    let rows = vec![vec![0.0, 0.0, 1.0]; 50];
    let model = Model::train(
        &table(&COLUMNS, &rows),
        &TrainOptions {
            k: 4,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(model.clusters.len(), 1, "one distinct window, one cluster");
    let same = model
        .score(&json!({"ops_per_s": 0.0, "latency_p99_us": 0.0, "psi_io_some_pct": 1.0}))
        .unwrap();
    assert_eq!(same.state, HealthState::Healthy);
    let moved = model
        .score(&json!({"ops_per_s": 50.0, "latency_p99_us": 0.0, "psi_io_some_pct": 1.0}))
        .unwrap();
    assert_eq!(moved.state, HealthState::Degraded);
    assert_eq!(moved.explanation[0].feature, "ops_per_s");
}

#[test]
fn model_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::train(&two_blobs(100, 20), &TrainOptions::default()).unwrap();
    let path = dir.path().join("model.json");
    model.save(&path).unwrap();
    let loaded = Model::load(&path).unwrap();
    assert_eq!(loaded, model);
    let record = json!({"ops_per_s": 90.0, "latency_p99_us": 7000.0, "psi_io_some_pct": 9.0});
    assert_eq!(
        loaded.score(&record).unwrap(),
        model.score(&record).unwrap()
    );
    assert_eq!(
        Model::from_bytes(model.to_json().as_bytes(), &path).unwrap(),
        model
    );
}

#[test]
fn bad_model_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::train(&two_blobs(100, 20), &TrainOptions::default()).unwrap();
    let text = model.to_json();

    let truncated = write(dir.path(), "truncated.json", &text[..text.len() / 2]);
    match Model::load(&truncated).unwrap_err() {
        ModelError::CorruptModel {
            path,
            line,
            message,
        } => {
            assert_eq!(path, truncated);
            assert!(line > 1, "the line where it stops");
            assert!(message.contains("truncated"), "{message}");
        }
        other => panic!("{other}"),
    }

    let garbage = write(
        dir.path(),
        "garbage.json",
        "{\"format\": \"nodestate-model\",\n oops",
    );
    let err = Model::load(&garbage).unwrap_err();
    assert!(
        matches!(err, ModelError::CorruptModel { line: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:", garbage.display()))
    );

    let binary = dir.path().join("binary.json");
    std::fs::write(&binary, [0xff, 0x00, 0x13]).unwrap();
    assert!(matches!(
        Model::load(&binary).unwrap_err(),
        ModelError::CorruptModel { .. }
    ));

    let newer = write(
        dir.path(),
        "newer.json",
        &text.replacen("\"version\": 1", "\"version\": 99", 1),
    );
    assert!(matches!(
        Model::load(&newer).unwrap_err(),
        ModelError::UnsupportedVersion {
            found: 99,
            supported: 1,
            ..
        }
    ));

    let other = write(dir.path(), "other.json", "{\"format\": \"something else\"}");
    assert!(matches!(
        Model::load(&other).unwrap_err(),
        ModelError::CorruptModel { .. }
    ));

    // Parseable but inconsistent: a centroid one value short.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["clusters"][0]["centroid"]
        .as_array_mut()
        .unwrap()
        .pop();
    let short = write(dir.path(), "short.json", &value.to_string());
    let err = Model::load(&short).unwrap_err();
    assert!(err.to_string().contains("another length"), "{err}");

    // A deviation of 0 would divide by zero at scoring time.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["scaler"]["std"][0] = json!(0.0);
    let zero = write(dir.path(), "zero.json", &value.to_string());
    assert!(
        Model::load(&zero)
            .unwrap_err()
            .to_string()
            .contains("not positive")
    );

    // A null where a number belongs (what a NaN would have become).
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["scaler"]["mean"][0] = serde_json::Value::Null;
    let null = write(dir.path(), "null.json", &value.to_string());
    assert!(matches!(
        Model::load(&null).unwrap_err(),
        ModelError::CorruptModel { .. }
    ));

    let missing = dir.path().join("absent.json");
    assert!(matches!(
        Model::load(&missing).unwrap_err(),
        ModelError::Io { .. }
    ));
}

#[test]
fn bad_inputs_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let nan = write(dir.path(), "nan.csv", "a,b\n1,2\n3,NaN\n");
    match read_table(&nan).unwrap_err() {
        ModelError::NonFinite {
            path, line, column, ..
        } => assert_eq!((path, line, column.as_str()), (nan.clone(), 3, "b")),
        other => panic!("{other}"),
    }
    let inf = write(dir.path(), "inf.csv", "a,b\n1,inf\n");
    assert!(matches!(
        read_table(&inf).unwrap_err(),
        ModelError::NonFinite { line: 2, .. }
    ));
    let ragged = write(dir.path(), "ragged.csv", "a,b\n1,2\n3,4,5\n");
    let err = read_table(&ragged).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Ragged {
                line: 3,
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("{}:3: 3 fields, but the header has 2", ragged.display())
    );
    let short = write(dir.path(), "short.csv", "a,b\n1\n");
    assert!(matches!(
        read_table(&short).unwrap_err(),
        ModelError::Ragged { line: 2, .. }
    ));
    let text = write(dir.path(), "text.csv", "a,b\n1,fast\n");
    assert!(
        read_table(&text)
            .unwrap_err()
            .to_string()
            .contains("text.csv:2: column `b`: `fast` is not a number")
    );
    let header_only = write(dir.path(), "empty.csv", "a,b\n");
    assert!(matches!(
        read_table(&header_only).unwrap_err(),
        ModelError::Empty { .. }
    ));
    let nothing = write(dir.path(), "empty.jsonl", "\n\n");
    assert!(matches!(
        read_table(&nothing).unwrap_err(),
        ModelError::Empty { .. }
    ));
    let no_numbers = write(dir.path(), "strings.jsonl", "{\"node\": \"a\"}\n");
    assert!(matches!(
        read_table(&no_numbers).unwrap_err(),
        ModelError::Empty { .. }
    ));
    let bad_json = write(dir.path(), "bad.jsonl", "{\"a\": 1}\n{\"a\": \n");
    assert!(matches!(
        read_table(&bad_json).unwrap_err(),
        ModelError::Input { line: 2, .. }
    ));
    let lacking = write(
        dir.path(),
        "lacking.jsonl",
        "{\"a\": 1, \"b\": 2}\n{\"a\": 1}\n",
    );
    let err = read_table(&lacking).unwrap_err();
    assert!(
        err.to_string().contains("lacking.jsonl:2: field `b`"),
        "{err}"
    );
    let absent = dir.path().join("absent.csv");
    assert!(matches!(
        read_table(&absent).unwrap_err(),
        ModelError::Io { .. }
    ));
}

#[test]
fn training_on_chosen_features_needs_only_their_fields() {
    let columns = [
        "io_read_ops_per_s",
        "io_errors_per_s",
        "latency_p99_us",
        "psi_io_some_pct",
        "context_switches_per_s",
    ];
    let mut noise = Noise::new(5);
    let rows = blob(&mut noise, 100, &[100.0, 1.0, 500.0, 2.0, 3000.0]);
    let options = |features: &[&str]| TrainOptions {
        features: features.iter().map(|f| f.to_string()).collect(),
        ..TrainOptions::default()
    };
    let model = Model::train(
        &table(&columns, &rows),
        &options(&["psi_*", "*_fraction", "latency_p99_us"]),
    )
    .unwrap();
    // The derived error fraction counts as a feature; its sources become required fields.
    assert_eq!(
        model.feature_names().collect::<Vec<_>>(),
        vec!["latency_p99_us", "psi_io_some_pct", "io_error_fraction"]
    );
    let mut required = model.required_fields().to_vec();
    required.sort();
    assert_eq!(
        required,
        vec![
            "io_errors_per_s",
            "io_read_ops_per_s",
            "latency_p99_us",
            "psi_io_some_pct"
        ]
    );
    // A window that moves only a left-out field (a thousandfold) is not judged by it, and
    // needs no left-out field at all.
    let busy = json!({"io_read_ops_per_s": 100.0, "io_errors_per_s": 1.0,
                      "latency_p99_us": 500.0, "psi_io_some_pct": 2.0});
    let busier = json!({"io_read_ops_per_s": 100.0, "io_errors_per_s": 1.0,
                        "latency_p99_us": 500.0, "psi_io_some_pct": 2.0,
                        "context_switches_per_s": 3e6});
    assert_eq!(
        model.score(&busy).unwrap().score,
        model.score(&busier).unwrap().score
    );
    // A pattern that matches nothing is an error naming it, not a smaller model.
    let err = Model::train(&table(&columns, &rows), &options(&["psi_*", "pis_*"])).unwrap_err();
    assert!(matches!(err, ModelError::Training(_)), "{err}");
    assert!(
        err.to_string().contains("`pis_*` matches no feature"),
        "{err}"
    );
}

#[test]
fn the_floor_scale_widens_only_the_spreads_at_their_floor() {
    // A rate that never moved (at its floor of 0.1 log units), a share that moved a little
    // (at its floor of one point), and a latency with a real spread (above any floor).
    let mut noise = Noise::new(9);
    let rows: Vec<Vec<f64>> = (0..200)
        .map(|_| vec![0.0, noise.around(5.0, 0.02), noise.around(1000.0, 0.5)])
        .collect();
    let data = table(
        &["oom_kills_per_s", "psi_cpu_some_pct", "latency_p99_us"],
        &rows,
    );
    let train = |floor_scale: f64| {
        Model::train(
            &data,
            &TrainOptions {
                // One cluster: the threshold then reflects the latency's whole spread.
                k: 1,
                floor_scale,
                ..TrainOptions::default()
            },
        )
    };
    let (narrow, wide) = (train(1.0).unwrap(), train(3.0).unwrap());
    assert_eq!(narrow.scaler.std[0], 0.1);
    assert_eq!(wide.scaler.std[0], 0.1 * 3.0);
    assert_eq!(narrow.scaler.std[1], 1.0);
    assert_eq!(wide.scaler.std[1], 3.0);
    assert!(narrow.scaler.std[2] > 0.3, "{}", narrow.scaler.std[2]);
    assert_eq!(narrow.scaler.std[2], wide.scaler.std[2]);
    // Five points more pressure: far out for the lab's own model, ordinary for the wide one.
    let busier = json!({"oom_kills_per_s": 0.0, "psi_cpu_some_pct": 10.0,
                        "latency_p99_us": 1000.0});
    assert_eq!(narrow.score(&busier).unwrap().state, HealthState::Degraded);
    assert_eq!(wide.score(&busier).unwrap().state, HealthState::Healthy);
    for bad in [0.0, -1.0, f64::NAN] {
        let err = train(bad).unwrap_err();
        assert!(err.to_string().contains("floor scale"), "{err}");
    }
}

#[test]
fn a_minimum_threshold_raises_a_lower_calibration_and_says_so() {
    let data = two_blobs(200, 0);
    let train = |min_threshold: f64| {
        Model::train(
            &data,
            &TrainOptions {
                min_threshold,
                ..TrainOptions::default()
            },
        )
    };
    let calibrated = train(0.0).unwrap();
    assert_eq!(calibrated.threshold.raised_from, None);
    let raised = train(50.0).unwrap();
    assert_eq!(raised.threshold.value, 50.0);
    assert_eq!(
        raised.threshold.raised_from,
        Some(calibrated.threshold.value)
    );
    assert!(
        model::report::summary(&raised).contains("the minimum asked for"),
        "{}",
        model::report::summary(&raised)
    );
    // Below the calibrated value, the minimum changes nothing.
    let below = train(calibrated.threshold.value / 2.0).unwrap();
    assert_eq!(below.threshold, calibrated.threshold);
    // The file keeps it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    raised.save(&path).unwrap();
    assert_eq!(Model::load(&path).unwrap().threshold, raised.threshold);
    for bad in [-1.0, f64::INFINITY, f64::NAN] {
        assert!(train(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_model_whose_features_the_input_lacks_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::train(&two_blobs(100, 0), &TrainOptions::default()).unwrap();
    let other = write(dir.path(), "other.csv", "ops_per_s,queue_depth\n1,2\n");
    let table = read_table(&other).unwrap();
    match model.score_table(&table).unwrap_err() {
        ModelError::FeatureMismatch {
            path,
            line,
            missing,
        } => {
            assert_eq!((path, line), (other, 1));
            assert_eq!(missing, vec!["latency_p99_us", "psi_io_some_pct"]);
        }
        other => panic!("{other}"),
    }
    // The library's record scoring: a missing field is an error too, never a silent 0.
    let err = model.score(&json!({"ops_per_s": 1.0})).unwrap_err();
    assert!(matches!(err, ModelError::InvalidRecord(_)));
    assert!(err.to_string().contains("latency_p99_us"), "{err}");
    assert!(model.score(&json!([1, 2])).is_err());
}

#[test]
fn labels_per_row_or_as_segments() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.csv",
        "timestamp,a\n2026-11-25T00:00:00Z,1\n2026-11-25T00:00:05Z,1\n2026-11-25T00:00:10Z,9\n",
    );
    let table = read_table(&input).unwrap();
    let per_row = write(dir.path(), "labels.csv", "label\n0\n0\n1\n");
    assert_eq!(
        Labels::read(&per_row)
            .unwrap()
            .per_row(&table, &per_row)
            .unwrap(),
        vec![false, false, true]
    );
    let segments = write(
        dir.path(),
        "segments.csv",
        "start,end\n2026-11-25T00:00:04Z,2026-11-25T00:00:06Z\n",
    );
    assert_eq!(
        Labels::read(&segments)
            .unwrap()
            .per_row(&table, &segments)
            .unwrap(),
        vec![false, true, false]
    );
    let too_few = write(dir.path(), "few.csv", "label\n0\n");
    let err = Labels::read(&too_few)
        .unwrap()
        .per_row(&table, &too_few)
        .unwrap_err();
    assert!(
        err.to_string().contains("1 labels for 3 input rows"),
        "{err}"
    );
    // A time column named the way some public sets name it is a time, not a feature.
    let minutes = write(dir.path(), "minutes.csv", "timestamp_(min),a\n0,1\n1,2\n");
    let minutes = read_table(&minutes).unwrap();
    assert_eq!(minutes.columns, vec!["a"]);
    assert_eq!(minutes.timestamps, vec![Some(0.0), Some(1.0)]);
    let unlabelled = write(dir.path(), "none.csv", "x\n0\n");
    assert!(Labels::read(&unlabelled).is_err());
}

#[test]
fn window_records_become_features_and_nested_detail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<String> = synthetic::window_records(1, 40, 0..0)
        .iter()
        .map(|r| r.to_string())
        .collect();
    let path = write(dir.path(), "windows.jsonl", &(records.join("\n") + "\n"));
    let table = read_table(&path).unwrap();
    assert_eq!(table.len(), 40);
    for ignored in [
        "timestamp",
        "unix_ms",
        "window_s",
        "schema",
        "node",
        "block_devices",
    ] {
        assert!(!table.columns.iter().any(|c| c == ignored), "{ignored}");
    }
    assert!(table.columns.iter().any(|c| c == "block_latency_p99_us"));
    assert!(table.timestamps.iter().all(Option::is_some));
    let model = Model::train(&table, &TrainOptions::default()).unwrap();
    let names: Vec<&str> = model.feature_names().collect();
    for derived in [
        "block_error_fraction",
        "block_latency_p99_over_p50",
        "syscall_error_fraction",
        "file_open_error_fraction",
        "net_tx_error_fraction",
        "tcp_connect_failure_fraction",
        "proc_exits_nonzero_fraction",
        "sched_runqueue_latency_p99_over_p50",
    ] {
        assert!(names.contains(&derived), "{derived} in {names:?}");
    }
    // Several files: only the columns all of them have.
    let other = write(
        dir.path(),
        "other.jsonl",
        "{\"block_read_ops_per_s\": 3, \"extra\": 1}\n",
    );
    let (joined, dropped) = read_tables(&[path, other]).unwrap();
    assert_eq!(joined.columns, vec!["block_read_ops_per_s"]);
    assert_eq!(joined.len(), 41);
    assert!(dropped.contains(&"extra".to_string()));
    assert_eq!(joined.origin(40).1, 1);
}

#[test]
fn baseline_learner_learns_then_judges_then_refreshes_in_bounded_memory() {
    let records = synthetic::window_records(5, 400, 200..215);
    let mut learner = BaselineLearner::new(BaselineOptions {
        learn_windows: 60,
        refresh_every: 100,
        max_kept: 150,
        ..BaselineOptions::default()
    });
    let mut states = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let judged = learner.observe(record).unwrap();
        if index < 59 {
            assert!(judged.is_none(), "still learning at window {index}");
            assert_eq!(learner.windows_to_go(), 59 - index);
        }
        states.push(judged.map(|a| a.state));
        assert!(learner.kept() <= 150);
    }
    assert!(learner.last_error().is_none());
    assert_eq!(learner.windows_to_go(), 0);
    // First training at window 60, refreshes at 160, 260, 360.
    assert_eq!(learner.trainings(), 4);
    let flagged_in_fault = (200..215)
        .filter(|&i| states[i] == Some(HealthState::Degraded))
        .count();
    assert!(
        flagged_in_fault >= 13,
        "{flagged_in_fault} of 15 fault windows flagged"
    );
    let false_alarms = (60..400)
        .filter(|i| !(200..215).contains(i))
        .filter(|&i| states[i] == Some(HealthState::Degraded))
        .count();
    assert!(false_alarms <= 10, "{false_alarms} false alarms");
    let err = learner
        .observe(json!({"block_read_ops_per_s": 1.0}))
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn baseline_durations_become_window_counts() {
    let options = BaselineOptions::for_durations(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(300),
        std::time::Duration::from_secs(1800),
        std::time::Duration::from_secs(7200),
    );
    assert_eq!(
        (
            options.learn_windows,
            options.refresh_every,
            options.max_kept
        ),
        (60, 360, 1440)
    );
}

fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/server-metrics")
}

#[test]
fn the_shipped_server_metric_set_is_the_generators_output() {
    let data = synthetic::server_metrics(7);
    for (name, text) in [
        ("train.csv", &data.train_csv),
        ("test.csv", &data.test_csv),
        ("test_labels.csv", &data.test_labels_csv),
        ("test_segments.csv", &data.test_segments_csv),
    ] {
        let shipped = std::fs::read_to_string(server_dir().join(name))
            .unwrap_or_else(|err| panic!("{name}: {err} (regenerate with `model synth`)"));
        assert_eq!(
            &shipped, text,
            "{name} differs: regenerate with `model synth --out tests/data/server-metrics`"
        );
    }
}

#[test]
fn server_metric_set_faults_are_found_with_the_threshold_from_training_alone() {
    let train = read_table(&server_dir().join("train.csv")).unwrap();
    let test = read_table(&server_dir().join("test.csv")).unwrap();
    let labels_path = server_dir().join("test_labels.csv");
    let truth = Labels::read(&labels_path)
        .unwrap()
        .per_row(&test, &labels_path)
        .unwrap();
    let model = Model::train(&train, &TrainOptions::default()).unwrap();
    let anomalous: Vec<bool> = model
        .score_table(&test)
        .unwrap()
        .iter()
        .map(|a| a.is_anomalous())
        .collect();
    let evaluation = model::eval::evaluate(&anomalous, &truth, &test.timestamps);
    assert_eq!(evaluation.segments_detected, 3, "{evaluation:?}");
    assert!(evaluation.point_adjusted.f1 > 0.9, "{evaluation:?}");
    assert!(evaluation.point_wise.precision > 0.8, "{evaluation:?}");
}

#[test]
fn headerless_numeric_files_and_label_files_read_as_public_sets_ship_them() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped set without its header and timestamps, as `.txt`.
    let strip = |name: &str| -> String {
        std::fs::read_to_string(server_dir().join(name))
            .unwrap()
            .lines()
            .skip(1)
            .map(|line| line.split_once(',').unwrap().1.to_string() + "\n")
            .collect()
    };
    let train = write(dir.path(), "train.txt", &strip("train.csv"));
    let test = write(dir.path(), "test.txt", &strip("test.csv"));
    let labels_text: String = std::fs::read_to_string(server_dir().join("test_labels.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let labels = write(dir.path(), "test_label.txt", &labels_text);

    let train = read_table(&train).unwrap();
    assert_eq!(
        train.columns,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(train.len(), synthetic::SERVER_TRAIN_ROWS);
    let test = read_table(&test).unwrap();
    let truth = Labels::read(&labels)
        .unwrap()
        .per_row(&test, &labels)
        .unwrap();
    assert_eq!(truth.iter().filter(|t| **t).count(), 37);
    let model = Model::train(&train, &TrainOptions::default()).unwrap();
    let anomalous: Vec<bool> = model
        .score_table(&test)
        .unwrap()
        .iter()
        .map(|a| a.is_anomalous())
        .collect();
    let evaluation = model::eval::evaluate(&anomalous, &truth, &test.timestamps);
    assert_eq!(evaluation.segments_detected, 3);
}

#[test]
fn every_way_of_scoring_agrees_and_bad_values_are_errors() {
    let model = Model::train(&two_blobs(100, 0), &TrainOptions::default()).unwrap();
    let record =
        json!({"ops_per_s": 101.0, "latency_p99_us": 510.0, "psi_io_some_pct": 2.0, "node": "n1"});
    let by_record = model.score(&record).unwrap();
    let map: std::collections::BTreeMap<String, f64> = [
        ("ops_per_s", 101.0),
        ("latency_p99_us", 510.0),
        ("psi_io_some_pct", 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(model.score(&map).unwrap(), by_record);
    // The raw fields in `required_fields` order, as named values: one entry point for all.
    let inputs: Vec<(String, f64)> = model
        .required_fields()
        .iter()
        .map(|f| (f.clone(), map[f]))
        .collect();
    assert_eq!(model.score(&inputs).unwrap(), by_record);
    let pairs: Vec<(String, f64)> = map.clone().into_iter().collect();
    assert_eq!(model.score(&pairs).unwrap(), by_record);
    assert_eq!(model.score(&record).unwrap(), by_record);
    assert!(model.score(&pairs[..1].to_vec()).is_err());
    let vector = model.feature_vector(&record).unwrap();
    assert_eq!(vector.len(), model.feature_names().count());
    assert!(model.score(&inputs[..2].to_vec()).is_err());
    let mut not_a_number = inputs.clone();
    not_a_number[0].1 = f64::NAN;
    assert!(model.score(&not_a_number).is_err());
    let mut infinite = map.clone();
    infinite.insert("ops_per_s".into(), f64::INFINITY);
    assert!(model.score(&infinite).is_err());
    assert_eq!(by_record.state.as_str(), "healthy");
    assert_eq!(HealthState::Degraded.as_str(), "degraded");
}

#[test]
fn training_reports_progress_once_per_run() {
    let mut calls = Vec::new();
    Model::train_with_progress(
        &two_blobs(100, 0),
        &TrainOptions {
            n_runs: 4,
            ..TrainOptions::default()
        },
        |done, runs| calls.push((done, runs)),
    )
    .unwrap();
    assert_eq!(calls, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
}

#[test]
fn values_too_large_to_average_are_an_error_not_a_nan_model() {
    let rows = vec![
        vec![1e308, 1.0, 1.0],
        vec![-1e308, 2.0, 1.0],
        vec![1e308, 3.0, 1.0],
    ];
    let err = Model::train(
        &table(&["x", "y", "z"], &rows),
        &TrainOptions {
            k: 1,
            ..TrainOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Training(_)), "{err}");
    assert!(err.to_string().contains("`x`"), "{err}");
}

#[test]
fn a_learning_period_longer_than_memory_ends_when_memory_is_full() {
    let records = synthetic::window_records(9, 40, 0..0);
    let mut learner = BaselineLearner::new(BaselineOptions {
        learn_windows: 1000,
        max_kept: 30,
        ..BaselineOptions::default()
    });
    let judged = records
        .iter()
        .filter(|record| learner.observe(*record).unwrap().is_some())
        .count();
    assert_eq!(judged, 10, "judging from window 31 on");
    assert!(learner.kept() <= 30);
}
