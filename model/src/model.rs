//! The model: named features, a scaler, k-means centroids with a state each, and an anomaly
//! threshold calibrated on the training windows.

use std::{collections::BTreeMap, path::Path};

use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::{Array1, Array2, ArrayView1, Axis};
use rand_xoshiro::{Xoshiro256Plus, rand_core::SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ModelError, Result},
    input::Row,
};

/// Version of the model file format; bumped on any change a reader must know about.
pub const MODEL_FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "nodestate-model";

/// Standard deviations are floored at this (in transformed units), so a feature that never
/// moved during training (OOM kills: always 0) makes a clear z-distance the first time it
/// does, instead of an infinite or zero one.
pub const STD_FLOOR: f64 = 0.1;
/// The threshold is this percentile of the training windows' scores…
pub const THRESHOLD_PERCENTILE: f64 = 99.5;
/// …times this margin, so that the busiest healthy minute seen in training does not sit right
/// on the line.
pub const THRESHOLD_MARGIN: f64 = 1.25;
/// Without labels, a cluster holding less than this share of the training windows is taken
/// for an outlier cluster (degraded); the bulk is healthy.
pub const MIN_HEALTHY_CLUSTER_SHARE: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Healthy,
    Degraded,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
        }
    }
}

/// How a raw value becomes a model input before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// `ln(1 + max(x, 0))`: rates, counts, latencies and bytes are heavy-tailed and
    /// non-negative; the log keeps one burst from dominating the distance.
    Log1p,
    /// Shares in percent (`*_pct`) are bounded: kept as they are.
    Linear,
}

impl Transform {
    pub fn for_feature(name: &str) -> Self {
        if name.ends_with("_pct") {
            Self::Linear
        } else {
            Self::Log1p
        }
    }

    pub fn apply(self, value: f64) -> f64 {
        match self {
            Self::Log1p => value.max(0.0).ln_1p(),
            Self::Linear => value,
        }
    }
}

/// One feature's contribution to a window's distance from healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub feature: String,
    /// Signed distance from the nearest healthy centroid, in training standard deviations.
    pub z: f64,
}

/// The model's judgement of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub score: f64,
    pub threshold: f64,
    /// Nearest centroid of any state.
    pub cluster: usize,
    pub state: HealthState,
    /// Top three features by |z|.
    pub explanation: Vec<Contribution>,
}

/// Options of `Model::train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub k: usize,
    pub seed: u64,
    pub n_runs: usize,
    pub max_iterations: u64,
    /// Per-row labels (true = fault); clusters then take the state of their majority.
    pub labels: Option<Vec<bool>>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            k: 4,
            seed: 42,
            n_runs: 10,
            max_iterations: 300,
            labels: None,
        }
    }
}

/// A trained model. Its serialized form is the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: String,
    pub version: u32,
    /// RFC 3339.
    pub trained_at: String,
    /// Feature names, in the order of every vector below.
    pub features: Vec<String>,
    pub transforms: Vec<Transform>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// k centroids in scaled space, each `features.len()` long.
    pub centroids: Vec<Vec<f64>>,
    pub cluster_states: Vec<HealthState>,
    pub cluster_sizes: Vec<usize>,
    pub threshold: f64,
    pub threshold_percentile: f64,
    pub seed: u64,
    pub training_windows: usize,
}

fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent / 100.0 * (sorted.len() - 1) as f64).clamp(0.0, (sorted.len() - 1) as f64);
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

impl Model {
    /// The features of a training set: every numeric column present in all rows, sorted.
    pub fn feature_names(rows: &[Row]) -> Vec<String> {
        let Some(first) = rows.first() else {
            return Vec::new();
        };
        first
            .values
            .keys()
            .filter(|name| rows.iter().all(|row| row.values.contains_key(*name)))
            .cloned()
            .collect()
    }

    /// Fits the scaler and k-means on `rows` and calibrates the threshold.
    pub fn train(rows: &[Row], options: &TrainOptions) -> Result<Self> {
        let features = Self::feature_names(rows);
        if rows.is_empty() || features.is_empty() {
            return Err(ModelError::Training("no rows with numeric features".into()));
        }
        let transforms: Vec<Transform> =
            features.iter().map(|f| Transform::for_feature(f)).collect();
        let raw = Array2::from_shape_fn((rows.len(), features.len()), |(r, c)| {
            transforms[c].apply(rows[r].values[&features[c]])
        });
        let mean = raw.mean_axis(Axis(0)).expect("rows is not empty");
        let std = raw.std_axis(Axis(0), 0.0).mapv(|s| s.max(STD_FLOOR));
        let scaled = (&raw - &mean) / &std;

        let k = options.k.clamp(1, rows.len());
        let rng = Xoshiro256Plus::seed_from_u64(options.seed);
        let dataset = DatasetBase::from(scaled.clone());
        let kmeans = KMeans::params_with_rng(k, rng)
            .n_runs(options.n_runs.max(1))
            .max_n_iterations(options.max_iterations)
            .tolerance(1e-6)
            .init_method(KMeansInit::KMeansPlusPlus)
            .fit(&dataset)
            .map_err(|err| ModelError::Training(err.to_string()))?;
        let centroids = kmeans.centroids().clone();
        let assignment = kmeans.predict(&scaled);

        let mut sizes = vec![0usize; k];
        let mut faults = vec![0usize; k];
        for (row, &cluster) in assignment.iter().enumerate() {
            sizes[cluster] += 1;
            if options.labels.as_ref().is_some_and(|labels| labels[row]) {
                faults[cluster] += 1;
            }
        }
        let mut states: Vec<HealthState> = (0..k)
            .map(|cluster| {
                let degraded = match &options.labels {
                    Some(_) => faults[cluster] * 2 > sizes[cluster],
                    None => (sizes[cluster] as f64) < MIN_HEALTHY_CLUSTER_SHARE * rows.len() as f64,
                };
                if degraded {
                    HealthState::Degraded
                } else {
                    HealthState::Healthy
                }
            })
            .collect();
        // A model needs somewhere healthy to measure from: the largest cluster at least.
        if !states.contains(&HealthState::Healthy) {
            let largest = (0..k).max_by_key(|&c| sizes[c]).unwrap_or(0);
            states[largest] = HealthState::Healthy;
        }

        let mut model = Self {
            format: FORMAT_NAME.into(),
            version: MODEL_FORMAT_VERSION,
            trained_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            features,
            transforms,
            mean: mean.to_vec(),
            std: std.to_vec(),
            centroids: centroids.outer_iter().map(|c| c.to_vec()).collect(),
            cluster_states: states,
            cluster_sizes: sizes,
            threshold: 0.0,
            threshold_percentile: THRESHOLD_PERCENTILE,
            seed: options.seed,
            training_windows: rows.len(),
        };
        // Calibrate on the healthy training windows (by label when there are labels).
        let mut scores: Vec<f64> = scaled
            .outer_iter()
            .enumerate()
            .filter(|(row, _)| !options.labels.as_ref().is_some_and(|labels| labels[*row]))
            .map(|(_, x)| model.nearest_healthy(x).1)
            .collect();
        scores.sort_by(f64::total_cmp);
        model.threshold = (percentile(&scores, THRESHOLD_PERCENTILE) * THRESHOLD_MARGIN).max(1e-9);
        Ok(model)
    }

    fn distance(a: ArrayView1<f64>, b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// (index, distance) of the nearest healthy centroid.
    fn nearest_healthy(&self, x: ArrayView1<f64>) -> (usize, f64) {
        self.centroids
            .iter()
            .enumerate()
            .filter(|(c, _)| self.cluster_states[*c] == HealthState::Healthy)
            .map(|(c, centroid)| (c, Self::distance(x, centroid)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f64::INFINITY))
    }

    /// The scaled vector of a row; `None` names a feature the row lacks.
    pub fn scale(
        &self,
        values: &BTreeMap<String, f64>,
    ) -> std::result::Result<Array1<f64>, String> {
        let mut x = Array1::zeros(self.features.len());
        for (index, name) in self.features.iter().enumerate() {
            let value = values.get(name).ok_or_else(|| name.clone())?;
            x[index] = (self.transforms[index].apply(*value) - self.mean[index]) / self.std[index];
        }
        Ok(x)
    }

    /// Judges one window (its named values). A missing feature is an error naming it.
    pub fn assess(
        &self,
        values: &BTreeMap<String, f64>,
    ) -> std::result::Result<Assessment, String> {
        let x = self.scale(values)?;
        let (healthy, score) = self.nearest_healthy(x.view());
        let cluster = self
            .centroids
            .iter()
            .enumerate()
            .map(|(c, centroid)| (c, Self::distance(x.view(), centroid)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(c, _)| c);
        let anomalous =
            score > self.threshold || self.cluster_states[cluster] == HealthState::Degraded;
        let mut contributions: Vec<Contribution> = self
            .features
            .iter()
            .enumerate()
            .map(|(index, feature)| Contribution {
                feature: feature.clone(),
                z: x[index] - self.centroids[healthy][index],
            })
            .collect();
        contributions.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()));
        contributions.truncate(3);
        Ok(Assessment {
            score,
            threshold: self.threshold,
            cluster,
            state: if anomalous {
                HealthState::Degraded
            } else {
                HealthState::Healthy
            },
            explanation: contributions,
        })
    }

    /// Checks that `rows` carry every feature of the model.
    pub fn check_features(&self, rows: &[Row], path: &Path) -> Result<()> {
        let Some(first) = rows.first() else {
            return Err(ModelError::Empty {
                path: path.to_path_buf(),
                purpose: "score",
            });
        };
        let missing: Vec<&str> = self
            .features
            .iter()
            .filter(|name| !first.values.contains_key(*name))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ModelError::FeatureMismatch {
                path: path.to_path_buf(),
                missing: missing.join(", "),
            })
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model always serializes")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json() + "\n").map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses and validates a model file: format, version, shapes and finite numbers.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::BadModel {
            path: path.to_path_buf(),
            message,
        };
        let model: Self = serde_json::from_str(text).map_err(|err| {
            bad(format!(
                "line {} column {}: {err}",
                err.line(),
                err.column()
            ))
        })?;
        if model.format != FORMAT_NAME {
            return Err(bad(format!(
                "format is `{}`, expected `{FORMAT_NAME}`",
                model.format
            )));
        }
        if model.version != MODEL_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} (this build reads {MODEL_FORMAT_VERSION})",
                model.version
            )));
        }
        let n = model.features.len();
        let k = model.centroids.len();
        if n == 0 || k == 0 {
            return Err(bad("no features or no centroids".into()));
        }
        if model.transforms.len() != n
            || model.mean.len() != n
            || model.std.len() != n
            || model.centroids.iter().any(|c| c.len() != n)
            || model.cluster_states.len() != k
            || model.cluster_sizes.len() != k
        {
            return Err(bad(
                "vectors of different lengths (truncated or edited file?)".into(),
            ));
        }
        let numbers = model
            .mean
            .iter()
            .chain(&model.std)
            .chain(model.centroids.iter().flatten())
            .chain(std::iter::once(&model.threshold));
        if numbers.clone().any(|v| !v.is_finite()) || model.std.iter().any(|s| *s <= 0.0) {
            return Err(bad("non-finite numbers or non-positive deviations".into()));
        }
        if !model.cluster_states.contains(&HealthState::Healthy) {
            return Err(bad("no healthy cluster".into()));
        }
        Ok(model)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// The features that set each cluster apart from the overall mean (the training set's,
    /// 0 in scaled space), for the summary table.
    pub fn cluster_top_features(&self, cluster: usize, count: usize) -> Vec<(String, f64)> {
        let mut features: Vec<(String, f64)> = self
            .features
            .iter()
            .cloned()
            .zip(self.centroids[cluster].iter().copied())
            .collect();
        features.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        features.truncate(count);
        features
    }
}
