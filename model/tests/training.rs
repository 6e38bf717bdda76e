//! Training on synthetic data with known answers: clusters and their states, determinism,
//! chosen features, floor scales, progress, and training data that cannot make a model.

use model::{HealthState, Model, ModelError, TrainOptions, synthetic::Noise};
use serde_json::json;

mod common;
use common::{COLUMNS, blob, table, two_blobs};

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

/// A node's moods are groups of windows of very different sizes (a long idle, a build, a
/// backup, …): with k chosen from the windows, each group gets a centroid of its own, and no
/// more centroids than groups.
#[test]
fn k_chosen_from_the_windows_is_the_number_of_their_modes() {
    let centers = [
        [10.0, 200.0],
        [1000.0, 200.0],
        [10.0, 50_000.0],
        [1000.0, 50_000.0],
        [100_000.0, 2_000.0],
    ];
    let sizes = [600, 200, 120, 80, 60];
    for modes in 2..=centers.len() {
        let mut noise = Noise::new(modes as u64);
        let mut rows = Vec::new();
        for (center, &size) in centers.iter().zip(&sizes).take(modes) {
            rows.extend(blob(&mut noise, size, center));
        }
        let model = Model::train(
            &table(&["reads_per_s", "wait_us"], &rows),
            &TrainOptions {
                k: 2,
                choose_k_up_to: Some(8),
                ..TrainOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            model.clusters.len(),
            modes,
            "silhouettes {:?}",
            model.training.silhouettes
        );
        let tried: Vec<usize> = model.training.silhouettes.iter().map(|&(k, _)| k).collect();
        assert_eq!(tried, (2..=8).collect::<Vec<_>>());
        // Each group's windows are in one cluster of their own size.
        let mut got: Vec<usize> = model.clusters.iter().map(|c| c.size).collect();
        got.sort_unstable();
        let mut want: Vec<usize> = sizes[..modes].to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}

#[test]
fn a_given_k_is_kept_and_no_silhouette_is_measured() {
    let model = Model::train(
        &two_blobs(200, 50),
        &TrainOptions {
            k: 3,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(model.clusters.len(), 3);
    assert!(model.training.silhouettes.is_empty());
    // Not written to the file either: a model file of a given k reads as before.
    assert!(!model.to_json().contains("silhouettes"));
}

/// An idle node's windows at 1 s take a few exact values (an error counter at 0 or 1): every
/// window then sits on a centroid whatever k, and the silhouette alone would give each value
/// a cluster of its own, however few its windows. Only moods of at least `MIN_MODE_WINDOWS`
/// windows are clusters.
#[test]
fn a_handful_of_equal_windows_is_no_mood_of_its_own() {
    let mut rows = Vec::new();
    for (value, count) in [(10.0, 300), (20.0, 6), (40.0, 5), (1000.0, 200)] {
        rows.extend((0..count).map(|_| vec![value, 200.0]));
    }
    let model = Model::train(
        &table(&["reads_per_s", "wait_us"], &rows),
        &TrainOptions {
            k: 2,
            choose_k_up_to: Some(8),
            trim: 0.0,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let sizes: Vec<usize> = model.clusters.iter().map(|c| c.size).collect();
    assert_eq!(
        model.clusters.len(),
        2,
        "{sizes:?} {:?}",
        model.training.silhouettes
    );
    assert!(
        sizes
            .iter()
            .all(|&size| size >= model::model::MIN_MODE_WINDOWS),
        "{sizes:?}"
    );
    // k = 4 puts each value in a cluster of its own (silhouette 1): not a choice.
    assert!(
        model.training.silhouettes.contains(&(4, None)),
        "{:?}",
        model.training.silhouettes
    );
}

/// Too few windows for two moods: k as given.
#[test]
fn with_too_few_windows_for_two_moods_k_is_as_given() {
    let mut noise = Noise::new(5);
    let mut rows = blob(&mut noise, 60, &[10.0, 200.0]);
    rows.extend(blob(&mut noise, 20, &[1000.0, 200.0]));
    let model = Model::train(
        &table(&["reads_per_s", "wait_us"], &rows),
        &TrainOptions {
            k: 3,
            choose_k_up_to: Some(8),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(model.clusters.len(), 3);
    assert!(model.training.silhouettes.iter().all(|(_, s)| s.is_none()));
}
