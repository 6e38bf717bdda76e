//! Scoring windows: scores and explanations, every way in agreeing, and windows the model
//! cannot judge.

use model::{HealthState, Model, ModelError, TrainOptions, read_table};
use serde_json::json;

mod common;
use common::{two_blobs, write};

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
