//! `model synth --set`: each named set has what its name promises.

use model::{
    Model, TrainOptions,
    model::{Scaling, ThresholdRule},
    synthetic::{SET_TEST_ROWS, SET_TRAIN_ROWS, SyntheticSet, synthetic_set},
};

/// A CSV text's rows as numbers (timestamp column left out).
fn rows(csv: &str) -> (Vec<String>, Vec<Vec<f64>>) {
    let mut lines = csv.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .skip(1)
        .map(String::from)
        .collect();
    let values = lines
        .map(|line| {
            line.split(',')
                .skip(1)
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect();
    (header, values)
}

fn column(values: &[Vec<f64>], index: usize) -> Vec<f64> {
    let mut column: Vec<f64> = values.iter().map(|row| row[index]).collect();
    column.sort_by(f64::total_cmp);
    column
}

#[test]
fn every_set_has_its_sizes_labels_and_is_seeded() {
    for set in SyntheticSet::ALL {
        let data = synthetic_set(set, 7);
        assert_eq!(SyntheticSet::from_name(set.name()), Some(set));
        let (header, train) = rows(&data.train_csv);
        let (_, test) = rows(&data.test_csv);
        assert_eq!(train.len(), SET_TRAIN_ROWS, "{set:?}");
        assert_eq!(test.len(), SET_TEST_ROWS, "{set:?}");
        assert!(
            train
                .iter()
                .chain(&test)
                .all(|row| row.len() == header.len())
        );
        let faulty = data.test_labels_csv.lines().filter(|l| *l == "1").count();
        assert_eq!(faulty, 97, "{set:?}");
        assert_eq!(data.test_segments_csv.lines().count(), 1 + 8);
        assert_eq!(synthetic_set(set, 7).train_csv, data.train_csv);
        assert_ne!(synthetic_set(set, 8).train_csv, data.train_csv);
    }
    assert_eq!(SyntheticSet::from_name("nope"), None);
}

#[test]
fn heavy_tails_are_heavy() {
    let (header, train) = rows(&synthetic_set(SyntheticSet::HeavyTails, 7).train_csv);
    let latency = column(
        &train,
        header.iter().position(|c| c == "latency_p99_ms").unwrap(),
    );
    let quantile = |q: f64| latency[(q * (latency.len() - 1) as f64) as usize];
    // A Pareto tail of shape 2.5: the 99.9th percentile over 6 times the median (a normal
    // of the same median and interquartile range would be under 2 times).
    assert!(
        quantile(0.999) > 6.0 * quantile(0.5),
        "median {}, p99.9 {}",
        quantile(0.5),
        quantile(0.999)
    );
}

#[test]
fn contaminated_training_holds_unlabelled_incidents_that_clusters_or_trimming_catch() {
    let data = synthetic_set(SyntheticSet::Contaminated, 7);
    let (header, train) = rows(&data.train_csv);
    let (_, clean) = rows(&synthetic_set(SyntheticSet::Drift, 7).train_csv);
    let await_ms = header.iter().position(|c| c == "disk_await_ms").unwrap();
    let errors = header.iter().position(|c| c == "http_5xx").unwrap();
    // Incident windows: a stalled disk (await 30x) or an error burst (5xx in the tens).
    let incidents = |rows: &[Vec<f64>]| {
        rows.iter()
            .filter(|row| row[await_ms] > 20.0 || row[errors] > 10.0)
            .count()
    };
    // 12 episodes of 10 windows: 4 of them CPU saturation, the other 8 (80 windows) these.
    assert_eq!(incidents(&train), 80);
    assert_eq!(incidents(&clean[..SET_TRAIN_ROWS / 2]), 0);
    // Trained without labels, none of those incidents sets the threshold: each is in a
    // degraded cluster of its own or trimmed.
    let path = std::env::temp_dir().join(format!("synthetic-sets-{}.csv", std::process::id()));
    std::fs::write(&path, &data.train_csv).unwrap();
    let table = model::read_table(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let model = Model::train(
        &table,
        &TrainOptions {
            threshold_rule: ThresholdRule::Percentile,
            scaling: Scaling::Robust,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let degraded: usize = model
        .clusters
        .iter()
        .filter(|c| c.state == model::HealthState::Degraded)
        .map(|c| c.size)
        .sum();
    assert!(
        degraded + model.training.trimmed >= 80,
        "{degraded} in degraded clusters, {} trimmed",
        model.training.trimmed
    );
}
