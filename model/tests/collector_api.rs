//! The calls the collector (`collector/src/judge/mod.rs`, `cli/`) and the integration tests
//! make, written the way they make them: if this stops compiling, so do they.

use std::collections::BTreeMap;

use model::{BaselineLearner, BaselineOptions, HealthState, Hysteresis, Model};

/// The record's numeric top-level fields, as named values (the collector's record gives the
/// model the same names through `WindowFields`).
fn window_values(record: &serde_json::Value) -> BTreeMap<String, f64> {
    model::input::Row::from_json(record, 0)
        .map(|row| row.values)
        .unwrap_or_default()
}

// The collector's own enum, as it is.
#[allow(clippy::large_enum_variant, reason = "as the collector's enum is")]
enum Judge {
    File { model: Model },
    Baseline(BaselineLearner),
}

fn judge(
    judge: &mut Judge,
    values: BTreeMap<String, f64>,
) -> Result<Option<model::Assessment>, String> {
    let assessment = match judge {
        Judge::File { model, .. } => model.score(&values).map(Some),
        Judge::Baseline(learner) => learner.observe(values),
    };
    assessment.map_err(|err| format!("window not judged: {err}"))
}

#[test]
fn the_collectors_calls_compile_and_work() {
    let records = model::synthetic::window_records(3, 120, 100..110);
    // As the integration test's `write_model`: rows of named values.
    let features = window_values(&records[0]);
    let rows: Vec<model::input::Row> = (0..40)
        .map(|index| model::input::Row {
            values: features
                .keys()
                .map(|name| (name.clone(), (index % 7) as f64))
                .collect(),
            timestamp_s: None,
            label: None,
            line: index,
        })
        .collect();
    let trained = model::Model::train(
        &rows,
        &model::TrainOptions {
            k: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    trained.save(&path).unwrap();
    let loaded = Model::load(&path).unwrap();

    // As the judge's `check_model`: every field the model reads is one the record has, derived
    // features included (they are computed from fields, not read).
    let missing: Vec<&str> = loaded
        .features
        .iter()
        .filter(|feature| !features.contains_key(*feature))
        .map(String::as_str)
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
    assert!(loaded.features.len() >= 50);
    assert_eq!(loaded.centroids.len(), 2);
    assert_eq!(loaded.version.to_string(), "1");
    assert!(!loaded.trained_at.clone().is_empty());

    let options = BaselineOptions {
        learn_windows: 60,
        refresh_every: 360,
        ..BaselineOptions::default()
    };
    let mut hysteresis = Hysteresis::new(
        model::hysteresis::DEFAULT_ENTER_AFTER,
        model::hysteresis::DEFAULT_LEAVE_AFTER,
    );
    for mut judge_with in [
        Judge::File { model: loaded },
        Judge::Baseline(BaselineLearner::new(options)),
    ] {
        let mut judged = 0;
        for record in &records {
            if let Some(assessment) = judge(&mut judge_with, window_values(record)).unwrap() {
                judged += 1;
                let anomalous = assessment.state == HealthState::Degraded;
                let state = hysteresis.update(anomalous);
                assert!(["healthy", "degraded"].contains(&state.as_str()));
                let _: Vec<(String, f64)> = assessment
                    .explanation
                    .into_iter()
                    .map(|c| (c.feature, c.z))
                    .collect();
            }
        }
        assert!(judged >= 60);
        if let Judge::Baseline(learner) = &judge_with {
            assert_eq!(learner.model().unwrap().centroids.len(), 3);
            assert_eq!(learner.status().clusters, 3);
        }
    }
}
