//! The model: a feature schema, a scaler, k-means clusters with a state each, and an anomaly
//! threshold calibrated on the training windows. Its serde form is the model file.
//!
//! This module holds the model's types and what every step reads from them; the steps have a
//! module each: `options` (how to train), `train` (fit and calibrate), `score` (judge a
//! window), `file` (the model file) and `distance` (the one metric all of them measure).

mod distance;
mod file;
pub(crate) use file::write_atomically;
mod options;
mod score;
mod train;

use serde::{Deserialize, Serialize};

use crate::features::{CompiledSchema, FeatureSchema};

pub use distance::simplified_silhouette;
use distance::squared_distance;
pub use options::{
    DEFAULT_FALSE_ALARM_RATE, DEFAULT_MIN_HEALTHY_SHARE, DEFAULT_THRESHOLD_MARGIN,
    DEFAULT_THRESHOLD_PERCENTILE, DEFAULT_TRIM, MIN_CALIBRATION_WINDOWS, MIN_MODE_WINDOWS,
    MODE_TAIL_QUANTILE, MODE_TAIL_Z, MULTIMODAL_SHARE, ROBUST_CLIP, Scaling, TAIL_EPISODE_GAP,
    TAIL_LEVEL_QUANTILE, TRIM_CUTOFF_SPREADS, TRIM_ROUNDS, ThresholdRule, TrainOptions,
};

/// What the `format` field of every model file says.
pub const MODEL_FORMAT: &str = "nodestate-model";
/// Version of the model file format: bumped on any change an older reader would misread.
pub const MODEL_FORMAT_VERSION: u32 = 1;
/// Number of features named in an [`Assessment`]'s explanation.
pub const EXPLANATION_LENGTH: usize = 3;

pub use crate::state::HealthState;

/// One feature's part in a window's distance from healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub feature: String,
    /// Signed distance from the nearest healthy centroid along this feature, in training
    /// standard deviations (positive: higher than healthy).
    pub z: f64,
}

/// The model's judgement of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Euclidean distance to the nearest healthy centroid, in standardized feature space.
    pub score: f64,
    /// The calibrated threshold the score is compared with.
    pub threshold: f64,
    /// The nearest centroid of any state.
    pub cluster: usize,
    /// `Degraded` when the score is above the threshold or the nearest cluster is degraded.
    pub state: HealthState,
    /// The features that push the window furthest from the nearest healthy centroid, largest
    /// |z| first (three of them, fewer if the model has fewer features).
    pub explanation: Vec<Contribution>,
}

impl Assessment {
    pub fn is_anomalous(&self) -> bool {
        self.state == HealthState::Degraded
    }
}

/// Per-feature standardization fitted on the training windows (after the transforms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Each feature's centre: its mean, or its median ([`Scaling::Robust`]).
    pub mean: Vec<f64>,
    /// Each feature's spread, floored (see `features::std_floor`), so always positive.
    pub std: Vec<f64>,
    /// How `mean` and `std` were measured. Scoring uses them the same way either way, so a
    /// reader that does not know this field scores the model exactly.
    #[serde(default)]
    pub method: Scaling,
}

/// One k-means cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// In standardized feature space, one value per feature.
    pub centroid: Vec<f64>,
    pub state: HealthState,
    /// Training windows nearest to it.
    pub size: usize,
    /// Of those, the ones labelled faulty (when trained with labels).
    pub labelled_faults: Option<usize>,
    /// The cluster's own spread per feature, in standardized units (1 is the scaler's
    /// spread), measured within the cluster: distances to this centroid are taken in it.
    /// Absent (older files, or a cluster too small to measure one, see
    /// [`MIN_MODE_WINDOWS`]): the scaler's spread, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Vec<f64>>,
}

/// The anomaly threshold and how it was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub value: f64,
    pub percentile: f64,
    pub margin: f64,
    /// Training windows the percentile was taken over.
    pub calibration_windows: usize,
    /// When the percentile times the margin came out below the minimum asked for
    /// ([`TrainOptions::min_threshold`]): what it came to. `value` is then the minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_from: Option<f64>,
    /// When the threshold came from the tail of the scores (`ThresholdRule::Tail`): the fit.
    /// Absent: the percentile rule set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<TailFit>,
    /// When the tail rule was asked for (with this false-alarm rate) but the healthy scores
    /// held too few episodes to fit a tail, so the percentile rule set the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_fallback: Option<f64>,
}

/// The tail fit behind a threshold (see [`crate::tail`]), as the model file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TailFit {
    /// The per-window false-alarm probability asked for.
    pub false_alarm: f64,
    /// The level the peaks were counted over, and how many episodes went over it.
    pub level: f64,
    pub peaks: usize,
    /// The generalized Pareto distribution fitted to their excesses.
    pub shape: f64,
    pub scale: f64,
    /// The heavy shape fitted over the peaks of the scores' high quantile, when the tail was
    /// refitted over their median peak (then `level` is that peak; see
    /// [`crate::tail::threshold_tail`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_shape: Option<f64>,
}

/// How the model was trained, for `model inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub windows: usize,
    pub k: usize,
    pub seed: u64,
    pub n_runs: usize,
    pub max_iterations: u64,
    /// Mean squared distance of the training windows to their centroid (best run).
    pub inertia: f64,
    pub labelled: bool,
    /// Training windows dropped as unlabelled incidents before the final fit (of `windows`).
    #[serde(default)]
    pub trimmed: usize,
    /// The most that could have been dropped, as a share of `windows` (0: no trimming).
    #[serde(default)]
    pub trim: f64,
    /// When k was chosen from the windows ([`TrainOptions::choose_k_up_to`]): each k tried
    /// and its simplified silhouette (`None`: a cluster of under
    /// [`crate::model::MIN_MODE_WINDOWS`] windows, no choice); empty when k was given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silhouettes: Vec<(usize, Option<f64>)>,
}

/// A trained model. Scoring needs only `&self`; see [`Model::score`].
///
/// The fields are public for reading (`inspect`, the daemon's status page). Scoring uses
/// tables precomputed from them at training or loading, so a changed model must go through
/// [`Model::from_bytes`] (`to_json` and back) to take effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: String,
    pub version: u32,
    /// RFC 3339.
    pub trained_at: String,
    /// The features, in the order of every per-feature vector in the file.
    pub schema: FeatureSchema,
    pub scaler: Scaler,
    pub clusters: Vec<Cluster>,
    pub threshold: Threshold,
    pub training: TrainingInfo,
    /// The record fields the model reads ([`Model::required_fields`]): a window record must
    /// have each. Filled when the model is trained or loaded; not stored in the file.
    #[serde(skip)]
    pub features: Vec<String>,
    /// The cluster centroids (standardized), as in `clusters`; filled like `features`.
    #[serde(skip)]
    pub centroids: Vec<Vec<f64>>,
    /// Everything scoring can compute once, built when the model is trained or loaded.
    #[serde(skip)]
    prepared: Prepared,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Prepared {
    schema: CompiledSchema,
    inverse_std: Vec<f64>,
    /// Indices of the healthy clusters.
    healthy: Vec<usize>,
    /// Per cluster, 1 / its own spread per feature (`None`: the scaler's spread).
    inverse_spread: Vec<Option<Vec<f64>>>,
    /// Per feature, whether only a rise is evidence (see [`Model::judge_rises_only`]); empty:
    /// every deviation is.
    rises_only: Vec<bool>,
    /// Positions among the inputs of the latencies whose 0 is "no sample in this window"
    /// (see [`Model::judge_signals`]); empty: a 0 is a value like any other.
    unsampled_latencies: Vec<usize>,
}

/// Linear-interpolated percentile of sorted values.
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let last = (sorted.len() - 1) as f64;
    let rank = (percent / 100.0 * last).clamp(0.0, last);
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

impl Model {
    /// Builds what scoring precomputes.
    fn prepare(&mut self) {
        self.centroids = self.clusters.iter().map(|c| c.centroid.clone()).collect();
        self.prepared = Prepared {
            schema: self.schema.compile(),
            inverse_std: self.scaler.std.iter().map(|s| 1.0 / s).collect(),
            healthy: (0..self.clusters.len())
                .filter(|&c| self.clusters[c].state == HealthState::Healthy)
                .collect(),
            inverse_spread: self
                .clusters
                .iter()
                .map(|c| {
                    c.spread
                        .as_ref()
                        .map(|spread| spread.iter().map(|s| 1.0 / s).collect())
                })
                .collect(),
            rises_only: Vec::new(),
            unsampled_latencies: Vec::new(),
        };
        self.features = self.prepared.schema.inputs.clone();
    }

    /// Judges the features named by `rises_only` on their rises only: below its normal such
    /// a feature adds nothing to the score or the explanation. For saturation, error and
    /// latency signals less is never a fault (pressure, errors and latency falling under a
    /// busy hour's are the node getting quieter), and two-sided distances made a quiet
    /// window far from a busy mode: in the soak, fsync latency at z = -1.4 tipped an episode
    /// over the threshold. Set by the learned baseline; not stored in the model file (a
    /// model read back judges both ways), and the clusters are still found both ways.
    pub(crate) fn judge_rises_only(&mut self, rises_only: impl Fn(&str) -> bool) {
        let flags: Vec<bool> = self.schema.names().map(rises_only).collect();
        self.prepared.rises_only = if flags.iter().any(|&f| f) {
            flags
        } else {
            Vec::new()
        };
    }

    /// Judges windows as the daemon judges a model of saturation, error and latency signals
    /// (the built-in model; the learned baseline's own models work the same way): only a
    /// rise of such a signal is evidence ([`crate::signals::is_judged`]), and a latency of
    /// 0 (no I/O or fsync sampled in the window: nothing happened) is left out of that
    /// window's score as a missing value is, unless nothing else would be left. The
    /// built-in model's lab always had fsyncs, so on a quiet node that never fsyncs its
    /// `fsync_latency_p99_us` of 0 was z = -6.5: 393 of 408 idle windows of soak 6 judged
    /// anomalous. Not stored in the model file: call it after loading.
    pub fn judge_signals(&mut self) {
        self.judge_rises_only(crate::signals::is_judged);
        self.prepared.unsampled_latencies = self
            .prepared
            .schema
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, name)| crate::signals::is_latency(name))
            .map(|(index, _)| index)
            .collect();
    }

    /// Adds to `missing` the latencies of `inputs` without a sample (see
    /// [`Model::judge_signals`]), unless every feature would then be missing.
    pub(crate) fn leave_out_unsampled(&self, inputs: &[f64], missing: &mut Vec<usize>) {
        let before = missing.len();
        for &index in &self.prepared.unsampled_latencies {
            if inputs.get(index) == Some(&0.0) && !missing.contains(&index) {
                missing.push(index);
            }
        }
        if missing.len() > before
            && self
                .prepared
                .schema
                .features_missing(missing)
                .iter()
                .all(|&out| out)
        {
            missing.truncate(before);
        }
    }

    /// A feature's deviation `z` as evidence: none below normal for a rises-only feature.
    #[inline]
    fn evidence(&self, index: usize, z: f64) -> f64 {
        if z < 0.0 && self.prepared.rises_only.get(index) == Some(&true) {
            0.0
        } else {
            z
        }
    }

    /// Feature names, in model order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.schema.names()
    }

    /// The raw fields a window record must have (top-level numbers, or CSV columns).
    pub fn required_fields(&self) -> &[String] {
        &self.prepared.schema.inputs
    }

    /// Of the fields the model needs, those `present` does not have.
    pub fn missing_fields<'a>(&'a self, present: &[String]) -> Vec<&'a str> {
        // A set, not a search per field: 100,000 columns took minutes.
        let present: std::collections::HashSet<&str> = present.iter().map(String::as_str).collect();
        self.required_fields()
            .iter()
            .filter(|f| !present.contains(f.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// (index, distance) of the nearest healthy centroid.
    fn nearest_healthy(&self, x: &[f64]) -> (usize, f64) {
        let mut best = (self.prepared.healthy[0], f64::INFINITY);
        for &c in &self.prepared.healthy {
            let d = self.mode_distance(c, x);
            if d < best.1 {
                best = (c, d);
            }
        }
        (best.0, best.1.sqrt())
    }

    /// Squared distance from `x` to cluster `c`'s centroid in that cluster's own spread
    /// (the scaler's, for a cluster without one).
    fn mode_distance(&self, c: usize, x: &[f64]) -> f64 {
        let centroid = &self.clusters[c].centroid;
        if !self.prepared.rises_only.is_empty() {
            return (0..x.len())
                .map(|index| self.mode_z(c, index, x[index]).powi(2))
                .sum();
        }
        match &self.prepared.inverse_spread[c] {
            None => squared_distance(x, centroid),
            Some(inverse) => x
                .iter()
                .zip(centroid)
                .zip(inverse)
                .map(|((value, center), inverse)| {
                    let z = (value - center) * inverse;
                    z * z
                })
                .sum(),
        }
    }

    /// `x`'s deviation from cluster `c`'s centroid in feature `index`, in the cluster's own
    /// spread, as evidence ([`Model::judge_rises_only`]): what explanations report.
    fn mode_z(&self, c: usize, index: usize, value: f64) -> f64 {
        let z = value - self.clusters[c].centroid[index];
        let z = match &self.prepared.inverse_spread[c] {
            None => z,
            Some(inverse) => z * inverse[index],
        };
        self.evidence(index, z)
    }

    /// Cluster centroids back in feature units (the transforms undone), for people.
    pub fn centroid_values(&self, cluster: usize) -> Vec<(String, f64)> {
        self.schema
            .features
            .iter()
            .enumerate()
            .map(|(i, feature)| {
                let transformed =
                    self.clusters[cluster].centroid[i] * self.scaler.std[i] + self.scaler.mean[i];
                let value = match feature.transform {
                    crate::features::Transform::Log1p => transformed.exp_m1(),
                    crate::features::Transform::Linear => transformed,
                };
                (feature.name.clone(), value)
            })
            .collect()
    }

    /// The features that set a cluster apart: from the nearest other healthy cluster for a
    /// degraded one, from the training mean for a healthy one. (name, z), largest |z| first.
    pub fn cluster_top_features(&self, cluster: usize, count: usize) -> Vec<(String, f64)> {
        let own = &self.clusters[cluster].centroid;
        let reference: Vec<f64> = if self.clusters[cluster].state == HealthState::Degraded {
            self.clusters[self.nearest_healthy(own).0].centroid.clone()
        } else {
            vec![0.0; own.len()]
        };
        let mut features: Vec<(String, f64)> = self
            .schema
            .names()
            .map(str::to_string)
            .zip(own.iter().zip(&reference).map(|(a, b)| a - b))
            .collect();
        features.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        features.truncate(count);
        features
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_interpolates() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 50.0), 3.0);
        assert_eq!(percentile(&sorted, 100.0), 5.0);
        assert!((percentile(&sorted, 90.0) - 4.6).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
