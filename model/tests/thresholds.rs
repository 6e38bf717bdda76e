//! The percentile threshold and the minimum threshold (the tail rule: `tail_threshold.rs`).

use model::{Model, TrainOptions};

mod common;
use common::two_blobs;

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
