//! The model file: saved and loaded unchanged, and every damaged file a clear error.

use model::{Model, ModelError, TrainOptions};
use serde_json::json;

mod common;
use common::{two_blobs, write};

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
