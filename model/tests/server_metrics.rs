//! The shipped synthetic server-metric set (`tests/data/server-metrics`): the generator's
//! output, its faults found, and read as public sets ship it.

use std::path::{Path, PathBuf};

use model::{Labels, Model, TrainOptions, read_table, synthetic};

mod common;
use common::write;

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
