//! The model: a feature schema, a scaler, k-means clusters with a state each, and an anomaly
//! threshold calibrated on the training windows. Its serde form is the model file.

use std::path::{Path, PathBuf};

use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use linfa_nn::distance::Distance;
use ndarray::{Array2, ArrayView, Dimension};
use rand_xoshiro::{Xoshiro256Plus, rand_core::SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ModelError, Result},
    features::{CompiledSchema, FeatureSchema, columns_of, positions_in, std_floor},
    input::{Table, TrainingData, WindowFields},
};

/// What the `format` field of every model file says.
pub const MODEL_FORMAT: &str = "nodestate-model";
/// Version of the model file format: bumped on any change an older reader would misread.
pub const MODEL_FORMAT_VERSION: u32 = 1;
/// Number of features named in an [`Assessment`]'s explanation.
pub const EXPLANATION_LENGTH: usize = 3;

/// A window's state, or the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Settings of [`Model::train`]. The defaults are the CLI's.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Number of clusters.
    pub k: usize,
    /// Seed of the k-means++ initialisations: the same data, options and seed give the same
    /// model.
    pub seed: u64,
    /// Independent k-means++ initialisations; the run with the lowest inertia is kept.
    pub n_runs: usize,
    pub max_iterations: u64,
    /// A run stops when the centroids move at most this far in one iteration (Euclidean norm
    /// over all centroids, in standard deviations; precisely: the squared norm at most this
    /// squared times the mean variance of the standardized features, which is 1 unless a
    /// deviation was floored). That is scikit-learn's rule with `tol` = this squared: the
    /// default, 0.01, is its default `tol=1e-4`. Finer centroids would change no verdict.
    pub tolerance: f64,
    /// Threads the k-means runs are spread over; 0 (the default) = the machine's available
    /// parallelism. The model does not depend on it.
    pub threads: usize,
    /// The threshold is this percentile of the healthy training windows' scores…
    pub threshold_percentile: f64,
    /// …times this margin.
    pub threshold_margin: f64,
    /// Without labels, a cluster with less than this share of the training windows is taken
    /// for a cluster of outliers, i.e. degraded.
    pub min_healthy_share: f64,
    /// Per training row: is it a fault? Clusters then take the state of their majority, and
    /// the threshold is calibrated on the rows labelled healthy only.
    pub labels: Option<Vec<bool>>,
    /// Only the features these patterns name (`*` wildcards, derived features included);
    /// empty: every feature. The model then needs only their source fields.
    pub features: Vec<String>,
    /// Multiplies the smallest spread each feature is given (`features::std_floor`: a tenth
    /// of a log unit, one point of a `_pct` share, 0.01 of a fraction). 1 (the default) suits
    /// a model of the node its windows came from; a model for other nodes wants a wider idea
    /// of normal than one quiet lab's, so that a few points of pressure more is not a fault.
    pub floor_scale: f64,
    /// The threshold is at least this (in standardized units, i.e. floors or standard
    /// deviations from the nearest healthy centroid), whatever the training windows' own
    /// spread: a model for other nodes must not flag what is within any node's normal.
    pub min_threshold: f64,
    /// How the threshold is set from the healthy training scores.
    pub threshold_rule: ThresholdRule,
    /// How each feature's centre and spread are measured.
    pub scaling: Scaling,
    /// At most this share of the training windows is dropped as unlabelled incidents before
    /// the model is fitted again (see [`DEFAULT_TRIM`]); 0: no trimming.
    pub trim: f64,
}

/// How training measures a feature's centre and spread (the scaler), before the floors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Mean and standard deviation (every model before robust scaling: an older model file
    /// without a `method` is read as this). One window a thousand times the others moves
    /// both, and every other window then looks closer to normal than it is.
    #[default]
    Standard,
    /// Median, and the standard deviation of the values clipped to their 1st and 99th
    /// percentiles (winsorized): a few windows far out, up to one in a hundred, cannot widen
    /// a feature's spread beyond what the 99th percentile allows. Not the median absolute
    /// deviation: a counter that is 0 in most windows (5xx, retransmits, exits) has a MAD of
    /// 0, and its ordinary spikes would all score as faults.
    Robust,
}

/// Share of the values clipped at each end by [`Scaling::Robust`].
pub const ROBUST_CLIP: f64 = 0.01;

impl Scaling {
    /// (centre, spread) of one feature's training values (not yet floored).
    pub fn center_and_spread(self, column: &[f64]) -> (f64, f64) {
        let n = column.len() as f64;
        match self {
            Self::Standard => {
                let m = column.iter().sum::<f64>() / n;
                let variance = column.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
                (m, variance.sqrt())
            }
            Self::Robust => {
                let mut sorted = column.to_vec();
                sorted.sort_by(f64::total_cmp);
                let last = sorted.len().saturating_sub(1);
                // Order statistics rounded inwards, so that with few windows (a hundred or
                // less) the largest one is still clipped to the next.
                let low = sorted[((ROBUST_CLIP * last as f64).ceil() as usize).min(last)];
                let high = sorted[((1.0 - ROBUST_CLIP) * last as f64).floor() as usize];
                let clipped = || column.iter().map(|v| v.clamp(low, high));
                let m = clipped().sum::<f64>() / n;
                let variance = clipped().map(|v| (v - m).powi(2)).sum::<f64>() / n;
                (percentile(&sorted, 50.0), variance.sqrt())
            }
        }
    }
}

/// How training turns the healthy training windows' scores into a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    /// [`TrainOptions::threshold_percentile`] of the scores times
    /// [`TrainOptions::threshold_margin`] (as the model did before the tail rule).
    Percentile,
    /// From the tail ([`crate::tail`]): the score a healthy window exceeds with this
    /// probability (per window, of an episode starting). Falls back to the percentile rule
    /// when the scores hold too few episodes to fit a tail (about a thousand windows needed).
    Tail { false_alarm: f64 },
}

/// One false degraded episode per node-day at 5 s windows: 5 / 86,400 per window. What a
/// person on call accepts (issue text: "at most one false degraded episode per node-day").
pub const DEFAULT_FALSE_ALARM_RATE: f64 = 5.0 / 86_400.0;
/// The tail is fitted to the episodes over this quantile of the healthy scores: high enough
/// for the excesses to be GPD-like, low enough to leave some tens of episodes in a day of
/// windows (SPOT's authors use 0.98 too).
pub const TAIL_LEVEL_QUANTILE: f64 = 0.98;
/// Windows over the level with fewer than this many under it between them are one episode:
/// the daemon's hysteresis leaves degraded after 3 normal windows
/// (`hysteresis::DEFAULT_LEAVE_AFTER`, which a test holds equal), so closer peaks would be one
/// degraded episode anyway.
pub const TAIL_EPISODE_GAP: usize = 3;

/// The default rule: the tail, for one false episode per node-day.
impl Default for ThresholdRule {
    fn default() -> Self {
        Self::Tail {
            false_alarm: DEFAULT_FALSE_ALARM_RATE,
        }
    }
}

/// Default of [`TrainOptions::trim`]: at most 5 % of the training windows are dropped as
/// incidents. The "a few percent" of unlabelled incidents in real training data, and
/// the `contaminated` synthetic set's 4 %, fit under it. The cap binds only when more windows
/// than that are beyond [`TRIM_CUTOFF_SPREADS`]; on the clean synthetic training parts and on
/// the scenario recordings' healthy windows under 1 % are.
pub const DEFAULT_TRIM: f64 = 0.05;
/// A training window is an incident to trim when its score is more than this many times the
/// distance from the median healthy score to the 90th percentile beyond the median. For a
/// distance in a few standardized dimensions, that is past the 99.99th percentile of healthy
/// scores; for an exponential tail (a log-transformed heavy-tailed feature), about the 99.9th.
/// Checked on training data only (`cargo xtask calibration`'s "windows trimmed"): of the clean
/// training parts it found 0.2 % (`heavy-tails`), 0 (`drift`), 0.6 % (`shapes`) and 1 of the
/// scenarios' 255 healthy windows far; all of those were lone windows, which are no longer
/// trimmed (see [`Model::far_tail`]), so none of them is dropped now. The planted incidents of
/// `tests/robust_training.rs` (episodes of 10 windows) all go.
pub const TRIM_CUTOFF_SPREADS: f64 = 4.0;
/// Rounds of fit-trim-refit at most. On the planted 5 % of `tests/robust_training.rs` the first
/// round finds 193 of the 200 incident windows and the second the rest (the first fit's
/// spreads were widened by them).
pub const TRIM_ROUNDS: usize = 3;

/// Default percentile of the calibration (see [`TrainOptions::threshold_percentile`]).
pub const DEFAULT_THRESHOLD_PERCENTILE: f64 = 99.0;
/// Default margin over it (see [`TrainOptions::threshold_margin`]).
pub const DEFAULT_THRESHOLD_MARGIN: f64 = 1.2;
/// Below this many healthy windows to calibrate on, training warns that the threshold is
/// barely measured (a 99th percentile of fewer than ten values is their maximum).
pub const MIN_CALIBRATION_WINDOWS: usize = 10;
/// Default outlier-cluster share (see [`TrainOptions::min_healthy_share`]).
pub const DEFAULT_MIN_HEALTHY_SHARE: f64 = 0.05;

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            k: 4,
            seed: 42,
            n_runs: 10,
            max_iterations: 300,
            tolerance: 1e-2,
            threads: 0,
            threshold_percentile: DEFAULT_THRESHOLD_PERCENTILE,
            threshold_margin: DEFAULT_THRESHOLD_MARGIN,
            min_healthy_share: DEFAULT_MIN_HEALTHY_SHARE,
            labels: None,
            features: Vec::new(),
            floor_scale: 1.0,
            min_threshold: 0.0,
            threshold_rule: ThresholdRule::default(),
            scaling: Scaling::Robust,
            trim: DEFAULT_TRIM,
        }
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

#[inline]
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    squared_distance_unrolled(a, b)
}

impl Model {
    /// Fits the scaler and k-means on the training windows (a [`Table`], or a slice of
    /// [`crate::input::Row`]) and calibrates the threshold.
    pub fn train<T: TrainingData + ?Sized>(data: &T, options: &TrainOptions) -> Result<Self> {
        Self::train_with_progress(data, options, |_, _| {})
    }

    /// [`Model::train`], calling `progress(runs_done, runs)` after each k-means run.
    pub fn train_with_progress<T: TrainingData + ?Sized>(
        data: &T,
        options: &TrainOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let table = data.to_table();
        let table: &Table = &table;
        let options = &TrainOptions {
            // Labels given with the options win; otherwise the input's own `label` column.
            labels: options.labels.clone().or_else(|| table.labels.clone()),
            ..options.clone()
        };
        let rows = table.len();
        if rows == 0 || table.columns.is_empty() {
            return Err(ModelError::Empty {
                path: table.path().to_path_buf(),
                what: "no rows with numeric features to train on".into(),
            });
        }
        if options.k == 0 || options.k > rows {
            return Err(ModelError::Training(format!(
                "k = {} needs between 1 and {rows} (the number of training windows)",
                options.k
            )));
        }
        if !(options.min_threshold.is_finite() && options.min_threshold >= 0.0) {
            return Err(ModelError::Training(format!(
                "the minimum threshold must be a number of 0 or more, not {}",
                options.min_threshold
            )));
        }
        if !(0.0..=0.5).contains(&options.trim) {
            return Err(ModelError::Training(format!(
                "the trimmed share must be between 0 and 0.5 (a share of the training windows), \
                 not {}",
                options.trim
            )));
        }
        if !(options.floor_scale.is_finite() && options.floor_scale > 0.0) {
            return Err(ModelError::Training(format!(
                "the floor scale must be a positive number, not {}",
                options.floor_scale
            )));
        }
        if let Some(labels) = &options.labels
            && labels.len() != rows
        {
            return Err(ModelError::Training(format!(
                "{} labels for {rows} training windows",
                labels.len()
            )));
        }
        // Scores are distances from healthy and the threshold is a percentile of the healthy
        // windows' own: with none, the threshold would be a floor picked from nothing and the
        // model would flag every window. No option allows it, since no such model is usable.
        if let Some(labels) = &options.labels
            && labels.iter().all(|&fault| fault)
        {
            return Err(ModelError::Training(format!(
                "all {rows} training windows are labelled faulty (label 1): a model needs healthy \
                 windows (label 0) to learn what normal is and to set its threshold; train on \
                 windows that include healthy ones, or without labels"
            )));
        }
        let mut schema = FeatureSchema::decide(&table.columns, &table.values);
        schema
            .retain_matching(&options.features)
            .map_err(|why| ModelError::Training(format!("features: {why}")))?;
        let compiled = schema.compile();
        let width = compiled.len();
        let positions = positions_in(&table.columns, &compiled.inputs);
        let mut transformed = Array2::<f64>::zeros((rows, width));
        let mut gathered = vec![0.0; positions.len()];
        for (row, mut out) in transformed.outer_iter_mut().enumerate() {
            let values = table.row(row);
            for (slot, &position) in gathered.iter_mut().zip(&positions) {
                *slot = values[position];
            }
            compiled.extract(&gathered, out.as_slice_mut().expect("rows are contiguous"));
        }

        let mut kept: Vec<usize> = (0..rows).collect();
        let mut model = Self::fit_rows(&schema, &transformed, &kept, options, &mut progress)?;
        // Fit, drop the windows in the far tail, fit again. A few rounds: the first fit's
        // spreads are widened by the incidents themselves, so some of them only stand out
        // once the others are gone. The rounds together drop at most `trim` of the windows.
        let most = (options.trim * rows as f64).floor() as usize;
        let mut trimmed = 0;
        for _ in 0..TRIM_ROUNDS {
            let far = model.far_tail(&transformed, &kept, options, most - trimmed);
            if far.is_empty() {
                break;
            }
            trimmed += far.len();
            kept.retain(|row| far.binary_search(row).is_err());
            // Scaler, clusters and threshold all learn from the windows that remain. The
            // first fit's clusters already keep a small cluster of incident windows out of
            // the calibration; trimming also keeps them out of the scaler and the centroids,
            // and catches incidents that no cluster of their own took in.
            model = Self::fit_rows(&schema, &transformed, &kept, options, &mut progress)?;
            model.training.trimmed = trimmed;
        }
        Ok(model)
    }

    /// Of the training windows `kept` (ascending), those (ascending) the model scores in the
    /// far tail: over [`TRIM_CUTOFF_SPREADS`] times the spread of their scores beyond the
    /// median (and over the minimum threshold), the highest first, at most `budget`, and only
    /// those with a neighbour in time that is far too (or was trimmed already): an incident
    /// lasts, a lone far window is the healthy tail. Windows labelled faulty, or nearest a
    /// degraded cluster, are never trimmed: their clusters are what makes states degraded.
    fn far_tail(
        &self,
        transformed: &Array2<f64>,
        kept: &[usize],
        options: &TrainOptions,
        budget: usize,
    ) -> Vec<usize> {
        if budget == 0 {
            return Vec::new();
        }
        let mut scaled = vec![0.0; transformed.ncols()];
        let mut scored: Vec<(usize, f64)> = kept
            .iter()
            .copied()
            .filter(|&row| !options.labels.as_ref().is_some_and(|labels| labels[row]))
            .map(|row| {
                for ((slot, value), (center, spread)) in scaled
                    .iter_mut()
                    .zip(transformed.row(row))
                    .zip(self.scaler.mean.iter().zip(&self.scaler.std))
                {
                    *slot = (value - center) / spread;
                }
                let in_healthy = self.clusters[nearest_of(&self.clusters, &scaled).0].state
                    == HealthState::Healthy;
                (row, in_healthy, self.nearest_healthy(&scaled).1)
            })
            // A window nearest a degraded cluster is already an outlier the model knows: it
            // sets no threshold, and its cluster flags the windows like it (on the
            // `contaminated` set such clusters find the test part's faults of the same kind;
            // trimming them lost that).
            .filter(|&(_, in_healthy, _)| in_healthy)
            .map(|(row, _, score)| (row, score))
            .collect();
        let mut sorted: Vec<f64> = scored.iter().map(|(_, score)| *score).collect();
        sorted.sort_by(f64::total_cmp);
        let median = percentile(&sorted, 50.0);
        // Never under the smallest threshold the model may have: a window it would not flag
        // whatever the calibration is no incident.
        let cutoff = (median + TRIM_CUTOFF_SPREADS * (percentile(&sorted, 90.0) - median))
            .max(options.min_threshold.max(0.1));
        scored.retain(|(_, score)| *score > cutoff);
        // An incident lasts; a healthy machine's heavy tail comes in single windows. A far
        // window is trimmed only when a neighbour (in time) is far too, or was trimmed
        // already: the daemon enters degraded only after
        // [`crate::hysteresis::DEFAULT_ENTER_AFTER`] anomalous windows in a row, so a lone one
        // is no incident to it. Trimming lone far windows cut the `heavy-tails` training
        // parts' own tail (12-21 windows of 3000, seeds 11-13): the tail fitted to what was
        // left looked bounded (shape -0.2 to -0.37) and 0.4-0.6 % of held-out healthy
        // windows then went over its threshold. Kept, the fitted shape is 0.27-0.56 (a heavy
        // tail, as the data has) and 1 to 4 of 60,000 held-out healthy windows (the training
        // parts of seeds 100-119) went over it: at most 6.7e-5 per window, 5.8e-5 asked.
        let far_rows: Vec<usize> = scored.iter().map(|(row, _)| *row).collect();
        let near = |row: usize| {
            far_rows.binary_search(&row).is_ok()
                || (row < transformed.nrows() && kept.binary_search(&row).is_err())
        };
        scored.retain(|&(row, _)| (row > 0 && near(row - 1)) || near(row + 1));
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(budget);
        let mut far: Vec<usize> = scored.into_iter().map(|(row, _)| row).collect();
        far.sort_unstable();
        far
    }

    /// Scaler, k-means, states and threshold, fitted on the training windows `subset`
    /// (indices into `transformed`, ascending: the tail rule reads them in time order).
    fn fit_rows(
        schema: &FeatureSchema,
        transformed: &Array2<f64>,
        subset: &[usize],
        options: &TrainOptions,
        progress: &mut impl FnMut(usize, usize),
    ) -> Result<Self> {
        let width = transformed.ncols();
        let rows = subset.len();
        let is_fault = |index: usize| {
            options
                .labels
                .as_ref()
                .is_some_and(|labels| labels[subset[index]])
        };
        let mut selected = Array2::<f64>::zeros((rows, width));
        for (mut out, &row) in selected.outer_iter_mut().zip(subset) {
            out.assign(&transformed.row(row));
        }
        let mut mean = Vec::with_capacity(width);
        let mut std = Vec::with_capacity(width);
        // Variance of each standardized feature: 1, or less where the deviation was floored.
        let mut scaled_variance = 0.0;
        let columns = columns_of(
            selected.as_slice().expect("a new array is contiguous"),
            width,
        );
        for (feature, column) in schema.features.iter().zip(&columns) {
            let (center, spread) = options.scaling.center_and_spread(column);
            let floor = std_floor(feature, column) * options.floor_scale;
            let s = spread.max(floor);
            let variance = column.iter().map(|v| (v - center).powi(2)).sum::<f64>() / rows as f64;
            mean.push(center);
            std.push(s);
            scaled_variance += variance / (s * s) / width as f64;
        }
        drop(columns);
        if let Some(index) = (0..width).find(|&i| !(mean[i].is_finite() && std[i].is_finite())) {
            return Err(ModelError::Training(format!(
                "feature `{}` has values too large to average (beyond ±1e300?)",
                schema.features[index].name
            )));
        }
        let mut scaled = selected;
        for mut row in scaled.outer_iter_mut() {
            for ((value, m), s) in row.iter_mut().zip(&mean).zip(&std) {
                *value = (*value - m) / s;
            }
        }

        // k-means++ cannot place more centroids than there are distinct windows (an idle
        // node's windows can all be equal): ask for no more. Collecting up to k distinct rows
        // usually stops within the first few.
        let distinct = {
            let mut seen: Vec<&[f64]> = Vec::with_capacity(options.k);
            for row in scaled.outer_iter() {
                let row = row.to_slice().expect("rows are contiguous");
                if !seen.contains(&row) {
                    seen.push(row);
                    if seen.len() == options.k {
                        break;
                    }
                }
            }
            seen.len()
        };
        let k = options.k.min(distinct);
        let (centroids, inertia) = fit_kmeans(&scaled, k, scaled_variance, options, progress)?;
        let assignment: Vec<usize> = scaled
            .outer_iter()
            .map(|x| nearest(&centroids, x.as_slice().expect("contiguous")).0)
            .collect();
        let mut sizes = vec![0usize; k];
        let mut faults = vec![0usize; k];
        for (row, &cluster) in assignment.iter().enumerate() {
            sizes[cluster] += 1;
            if is_fault(row) {
                faults[cluster] += 1;
            }
        }
        let mut states: Vec<HealthState> = (0..k)
            .map(|cluster| {
                let degraded = match &options.labels {
                    Some(_) => faults[cluster] * 2 > sizes[cluster],
                    None => (sizes[cluster] as f64) < options.min_healthy_share * rows as f64,
                };
                if degraded {
                    HealthState::Degraded
                } else {
                    HealthState::Healthy
                }
            })
            .collect();
        // Scores are distances to healthy: there must be one. The largest cluster is the
        // best guess at normal.
        if !states.contains(&HealthState::Healthy) {
            let largest = (0..k).max_by_key(|&c| sizes[c]).unwrap_or(0);
            states[largest] = HealthState::Healthy;
        }
        // Part of training on unclean data (issue 24), as trimming is: `trim` 0 keeps the
        // size rule alone, as the model had it before.
        if options.labels.is_none() && options.trim > 0.0 {
            scattered_modes_are_healthy(&assignment, &mut states);
        }

        let mut model = Self {
            format: MODEL_FORMAT.into(),
            version: MODEL_FORMAT_VERSION,
            trained_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            schema: schema.clone(),
            scaler: Scaler {
                mean,
                std,
                method: options.scaling,
            },
            clusters: (0..k)
                .map(|c| Cluster {
                    centroid: centroids.row(c).to_vec(),
                    state: states[c],
                    size: sizes[c],
                    labelled_faults: options.labels.as_ref().map(|_| faults[c]),
                })
                .collect(),
            threshold: Threshold {
                value: 0.0,
                percentile: options.threshold_percentile,
                margin: options.threshold_margin,
                calibration_windows: 0,
                raised_from: None,
                tail: None,
                tail_fallback: None,
            },
            training: TrainingInfo {
                windows: transformed.nrows(),
                k,
                seed: options.seed,
                n_runs: options.n_runs.max(1),
                max_iterations: options.max_iterations,
                inertia,
                labelled: options.labels.is_some(),
                trimmed: 0,
                trim: options.trim,
            },
            features: Vec::new(),
            centroids: Vec::new(),
            prepared: Prepared::default(),
        };
        model.prepare();

        // Calibrate on the windows that are healthy by every account we have: not labelled
        // faulty, and nearest to a healthy cluster. An outlier cluster's windows would
        // otherwise set the bar as high as the outliers.
        let is_calibration_row =
            |row: usize| !is_fault(row) && states[assignment[row]] == HealthState::Healthy;
        let mut scores: Vec<f64> = (0..rows)
            .filter(|&row| is_calibration_row(row))
            .map(|row| {
                model
                    .nearest_healthy(scaled.row(row).as_slice().expect("contiguous"))
                    .1
            })
            .collect();
        if scores.is_empty() {
            let healthy_labelled = options.labels.as_ref().map_or(rows, |labels| {
                labels.iter().filter(|&&fault| !fault).count()
            });
            let rows = model.training.windows;
            return Err(ModelError::Training(format!(
                "no training window is both labelled healthy and nearest to a healthy cluster \
                 ({healthy_labelled} of {rows} are labelled healthy, but every cluster they \
                 fall in is mostly faulty): there is nothing to set the threshold on; add \
                 healthy windows, or train with a larger --k so that they get clusters of \
                 their own"
            )));
        }
        // The tail rule needs the scores in time order (episodes are runs of windows).
        let tail = match options.threshold_rule {
            ThresholdRule::Percentile => None,
            ThresholdRule::Tail { false_alarm } => crate::tail::pot_threshold(
                &scores,
                false_alarm,
                TAIL_LEVEL_QUANTILE,
                TAIL_EPISODE_GAP,
            )
            .map(|fit| {
                let kept = TailFit {
                    false_alarm,
                    level: fit.level,
                    peaks: fit.peaks,
                    shape: fit.gpd.shape,
                    scale: fit.gpd.scale,
                };
                (kept, fit.threshold)
            }),
        };
        scores.sort_by(f64::total_cmp);
        let value = match &tail {
            Some((_, threshold)) => *threshold,
            None => percentile(&scores, options.threshold_percentile) * options.threshold_margin,
        };
        model.threshold.tail = tail.map(|(fit, _)| fit);
        if let ThresholdRule::Tail { false_alarm } = options.threshold_rule
            && model.threshold.tail.is_none()
        {
            model.threshold.tail_fallback = Some(false_alarm);
        }
        // A threshold of 0 (all training windows identical) would flag any change at all; the
        // smallest one worth reporting is a tenth of a standard deviation, or what was asked.
        let minimum = options.min_threshold.max(0.1);
        model.threshold.value = value.max(minimum);
        if value < options.min_threshold {
            model.threshold.raised_from = Some(value);
        }
        model.threshold.calibration_windows = scores.len();
        Ok(model)
    }

    /// Builds what scoring precomputes.
    fn prepare(&mut self) {
        self.centroids = self.clusters.iter().map(|c| c.centroid.clone()).collect();
        self.prepared = Prepared {
            schema: self.schema.compile(),
            inverse_std: self.scaler.std.iter().map(|s| 1.0 / s).collect(),
            healthy: (0..self.clusters.len())
                .filter(|&c| self.clusters[c].state == HealthState::Healthy)
                .collect(),
        };
        self.features = self.prepared.schema.inputs.clone();
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
            let d = squared_distance(x, &self.clusters[c].centroid);
            if d < best.1 {
                best = (c, d);
            }
        }
        (best.0, best.1.sqrt())
    }

    /// Judges one window: anything with named fields ([`WindowFields`]: the collector's
    /// window record, a JSON record, a `BTreeMap<String, f64>`, a `[(String, f64)]`). With
    /// [`Model::score_table`] (many rows), the one way to score.
    ///
    /// Every field of [`Model::required_fields`] must be there: an absent one is an error,
    /// never a silent 0, which would read as an idle (or a broken) node; so is a value that is
    /// not finite. A field the window marks missing ([`WindowFields::is_missing`]: a read the
    /// collector could not make, `null` in a JSON record) is left out: every feature computed
    /// from it is left out of the score, the distances and the explanation, never read as 0.
    /// Distances over fewer features are never larger, so the threshold calibrated on whole
    /// windows stays a conservative bound. A window in which every feature is missing is an
    /// error.
    pub fn score(&self, window: &impl WindowFields) -> Result<Assessment> {
        let (inputs, missing) = self.gather(window)?;
        self.score_partial_checked(&inputs, &missing)
    }

    /// A window's feature vector, standardized, in [`Model::feature_names`] order (what the
    /// score is computed from; for export or debugging). A missing value is an error here.
    pub fn feature_vector(&self, window: &impl WindowFields) -> Result<Vec<f64>> {
        let (inputs, missing) = self.gather(window)?;
        self.check_missing(&missing)?;
        Ok(self.standardize(&inputs))
    }

    /// The window's raw inputs in [`Model::required_fields`] order (0 in a missing value's
    /// slot) and the positions of its missing values. An absent field, or a value that is not
    /// finite, is an error.
    fn gather(&self, window: &impl WindowFields) -> Result<(Vec<f64>, Vec<usize>)> {
        let names = &self.prepared.schema.inputs;
        let mut inputs = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        let mut absent = Vec::new();
        for (index, name) in names.iter().enumerate() {
            match window.field(name) {
                Some(value) if value.is_finite() => inputs.push(value),
                Some(value) => {
                    return Err(ModelError::InvalidRecord(format!(
                        "field `{name}` is {value}, not finite"
                    )));
                }
                None => {
                    if window.is_missing(name) {
                        missing.push(index);
                    } else {
                        absent.push(index);
                    }
                    inputs.push(0.0);
                }
            }
        }
        self.check_missing(&absent)?;
        Ok((inputs, missing))
    }

    fn standardize(&self, inputs: &[f64]) -> Vec<f64> {
        let mut x = vec![0.0; self.scaler.mean.len()];
        self.prepared.schema.extract(inputs, &mut x);
        for ((value, mean), inverse_std) in x
            .iter_mut()
            .zip(&self.scaler.mean)
            .zip(&self.prepared.inverse_std)
        {
            *value = (*value - mean) * inverse_std;
        }
        x
    }

    /// Judges raw inputs in [`Model::required_fields`] order, those at positions `missing`
    /// being missing values, left out as in [`Model::score`] (their slots in `inputs` are
    /// ignored). The baseline learner's way in: it gathers fields itself.
    pub(crate) fn score_inputs_partial(
        &self,
        inputs: &[f64],
        missing: &[usize],
    ) -> Result<Assessment> {
        let expected = self.prepared.schema.inputs.len();
        if inputs.len() != expected {
            return Err(ModelError::InvalidRecord(format!(
                "{} values given, the model needs {expected}",
                inputs.len()
            )));
        }
        if let Some(index) =
            (0..inputs.len()).find(|index| !missing.contains(index) && !inputs[*index].is_finite())
        {
            return Err(ModelError::InvalidRecord(format!(
                "field `{}` is {}, not finite",
                self.prepared.schema.inputs[index], inputs[index]
            )));
        }
        self.score_partial_checked(inputs, missing)
    }

    fn score_partial_checked(&self, inputs: &[f64], missing: &[usize]) -> Result<Assessment> {
        if missing.is_empty() {
            return Ok(self.score_checked(inputs));
        }
        // Placeholders in the missing slots, so no NaN reaches a masked feature's transform.
        let mut filled = inputs.to_vec();
        for &index in missing {
            filled[index] = 0.0;
        }
        let left_out = self.prepared.schema.features_missing(missing);
        if left_out.iter().all(|&out| out) {
            return Err(ModelError::InvalidRecord(
                "every feature the model uses is missing in this window".into(),
            ));
        }
        Ok(self.assess_masked(&self.standardize(&filled), &left_out))
    }

    /// [`Model::assess_scaled`] over the features not `left_out`.
    fn assess_masked(&self, x: &[f64], left_out: &[bool]) -> Assessment {
        let distance = |centroid: &[f64]| -> f64 {
            x.iter()
                .zip(centroid)
                .zip(left_out)
                .filter(|(_, out)| !**out)
                .map(|((value, center), _)| (value - center) * (value - center))
                .sum::<f64>()
        };
        let mut healthy = (self.prepared.healthy[0], f64::INFINITY);
        for &c in &self.prepared.healthy {
            let d = distance(&self.clusters[c].centroid);
            if d < healthy.1 {
                healthy = (c, d);
            }
        }
        let score = healthy.1.sqrt();
        let mut cluster = (0, f64::INFINITY);
        for (c, candidate) in self.clusters.iter().enumerate() {
            let d = distance(&candidate.centroid);
            if d < cluster.1 {
                cluster = (c, d);
            }
        }
        let cluster = cluster.0;
        let anomalous =
            score > self.threshold.value || self.clusters[cluster].state == HealthState::Degraded;
        let centroid = &self.clusters[healthy.0].centroid;
        let mut contributions: Vec<(usize, f64)> = x
            .iter()
            .zip(centroid)
            .enumerate()
            .filter(|(index, _)| !left_out[*index])
            .map(|(index, (value, center))| (index, value - center))
            .collect();
        contributions.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        Assessment {
            score,
            threshold: self.threshold.value,
            cluster,
            state: if anomalous {
                HealthState::Degraded
            } else {
                HealthState::Healthy
            },
            explanation: contributions
                .into_iter()
                .take(EXPLANATION_LENGTH)
                .map(|(index, z)| Contribution {
                    feature: self.schema.features[index].name.clone(),
                    z,
                })
                .collect(),
        }
    }

    fn check_missing(&self, missing: &[usize]) -> Result<()> {
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing
            .iter()
            .map(|&i| self.prepared.schema.inputs[i].as_str())
            .collect();
        Err(ModelError::InvalidRecord(format!(
            "missing or non-numeric field(s) the model needs: {}",
            names.join(", ")
        )))
    }

    /// Scores inputs known to be complete and finite.
    fn score_checked(&self, inputs: &[f64]) -> Assessment {
        self.assess_scaled(&self.standardize(inputs))
    }

    fn assess_scaled(&self, x: &[f64]) -> Assessment {
        let (healthy, score) = self.nearest_healthy(x);
        let (cluster, _) = nearest_of(&self.clusters, x);
        let anomalous =
            score > self.threshold.value || self.clusters[cluster].state == HealthState::Degraded;
        // Top |z| by a small insertion sort: no allocation beyond the three names.
        let centroid = &self.clusters[healthy].centroid;
        let mut top: [(usize, f64); EXPLANATION_LENGTH] = [(usize::MAX, 0.0); EXPLANATION_LENGTH];
        for (index, (value, center)) in x.iter().zip(centroid).enumerate() {
            let z = value - center;
            if top[EXPLANATION_LENGTH - 1].0 != usize::MAX
                && z.abs() <= top[EXPLANATION_LENGTH - 1].1.abs()
            {
                continue;
            }
            let mut slot = EXPLANATION_LENGTH - 1;
            top[slot] = (index, z);
            while slot > 0 && (top[slot - 1].0 == usize::MAX || z.abs() > top[slot - 1].1.abs()) {
                top.swap(slot, slot - 1);
                slot -= 1;
            }
        }
        let explanation = top
            .iter()
            .filter(|(index, _)| *index != usize::MAX)
            .map(|&(index, z)| Contribution {
                feature: self.schema.features[index].name.clone(),
                z,
            })
            .collect();
        Assessment {
            score,
            threshold: self.threshold.value,
            cluster,
            state: if anomalous {
                HealthState::Degraded
            } else {
                HealthState::Healthy
            },
            explanation,
        }
    }

    /// Scores every row of a table read from a file. A model whose fields the file lacks is a
    /// [`ModelError::FeatureMismatch`] naming the file.
    pub fn score_table(&self, table: &Table) -> Result<Vec<Assessment>> {
        let missing = self.missing_fields(&table.columns);
        if !missing.is_empty() {
            return Err(ModelError::FeatureMismatch {
                path: table.path().to_path_buf(),
                line: 1,
                missing: missing.into_iter().map(str::to_string).collect(),
            });
        }
        let positions = positions_in(&table.columns, self.required_fields());
        let mut inputs = vec![0.0; positions.len()];
        Ok((0..table.len())
            .map(|row| {
                let values = table.row(row);
                for (slot, &position) in inputs.iter_mut().zip(&positions) {
                    *slot = values[position];
                }
                self.score_checked(&inputs)
            })
            .collect())
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

    /// The model file's text (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model always serializes") + "\n"
    }

    /// Writes the model file; through a temporary file (`PATH.tmp`) and a rename, so a reader
    /// (the daemon) never sees half a model. On failure the temporary file is removed: a
    /// failed `model train` leaves nothing behind.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let written = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            std::io::Write::write_all(&mut file, self.to_json().as_bytes())?;
            // On disk before the rename makes it the model: a crash then leaves the old
            // model or the new one, never an empty file.
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(io)
    }

    /// Reads and checks a model file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and checks a model file's bytes; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let corrupt = |line: usize, message: String| ModelError::CorruptModel {
            path: origin.to_path_buf(),
            line,
            message,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
            let what = if err.is_eof() {
                "the file ends early (truncated?)".to_string()
            } else {
                format!("not JSON: {err}")
            };
            corrupt(err.line(), what)
        })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(MODEL_FORMAT) => {}
            other => {
                return Err(corrupt(
                    1,
                    format!("`format` is {other:?}, expected \"{MODEL_FORMAT}\""),
                ));
            }
        }
        let version = value
            .get("version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(1, "no `version`".into()))?;
        if version != u64::from(MODEL_FORMAT_VERSION) {
            return Err(ModelError::UnsupportedVersion {
                path: origin.to_path_buf(),
                found: version,
                supported: MODEL_FORMAT_VERSION,
            });
        }
        let mut model: Self =
            serde_json::from_value(value).map_err(|err| corrupt(1, err.to_string()))?;
        model.validate().map_err(|message| corrupt(1, message))?;
        model.prepare();
        Ok(model)
    }

    /// The consistency a hand-edited or damaged (but still parseable) file may lack.
    fn validate(&self) -> std::result::Result<(), String> {
        let width = self.schema.features.len();
        if width == 0 || self.clusters.is_empty() {
            return Err("no features or no clusters".into());
        }
        let mut names: Vec<&str> = self.schema.names().collect();
        names.sort_unstable();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("two features have the same name".into());
        }
        if self.scaler.mean.len() != width
            || self.scaler.std.len() != width
            || self.clusters.iter().any(|c| c.centroid.len() != width)
        {
            return Err(format!(
                "{width} features, but the scaler or a centroid has another length"
            ));
        }
        let numbers = self
            .scaler
            .mean
            .iter()
            .chain(&self.scaler.std)
            .chain(self.clusters.iter().flat_map(|c| &c.centroid));
        if numbers.clone().any(|v| !v.is_finite()) {
            return Err("non-finite number in the scaler or a centroid".into());
        }
        if self.scaler.std.iter().any(|s| *s <= 0.0) {
            return Err("a standard deviation is not positive".into());
        }
        if !(self.threshold.value.is_finite() && self.threshold.value > 0.0) {
            return Err("the threshold is not a positive number".into());
        }
        if !self
            .clusters
            .iter()
            .any(|c| c.state == HealthState::Healthy)
        {
            return Err("no healthy cluster to measure from".into());
        }
        Ok(())
    }
}

/// Without labels, a cluster of less than [`TrainOptions::min_healthy_share`] of the windows
/// is taken for unlabelled incidents. It may instead be a rare mode of a healthy machine:
/// windows with an error or two, scattered through the day. Calling that degraded flags every
/// window like it, ever after: on the `heavy-tails` training parts (seeds 11-13) the windows
/// with a few errors formed such a cluster (2-3 % of the windows), and it flagged 2.4-2.9 % of
/// the held-out healthy windows, over 400 times the false-alarm rate asked for. Their distance
/// does not tell them apart (a first error is many spreads from none); time does: an
/// incident lasts, and the daemon enters degraded only after
/// [`crate::hysteresis::DEFAULT_ENTER_AFTER`] anomalous windows in a row. A small cluster
/// most of whose windows (in time order, as training reads them) are not in runs of at least
/// that many windows of the same cluster is a scattered normal mode: it becomes healthy, and
/// its windows are judged by their distance like any others, if it recurs (at least
/// [`crate::tail::MIN_PEAKS`] separate episodes). (The `contaminated` set's incidents come in
/// runs of 10, and the default server-metric set's one stalled-disk window is one episode:
/// both stay degraded clusters.)
fn scattered_modes_are_healthy(assignment: &[usize], states: &mut [HealthState]) {
    let run = crate::hysteresis::DEFAULT_ENTER_AFTER as usize;
    for (cluster, state) in states.iter_mut().enumerate() {
        if *state != HealthState::Degraded {
            continue;
        }
        let (mut windows, mut in_runs, mut episodes) = (0usize, 0usize, 0usize);
        let mut length = 0usize;
        for (row, &assigned) in assignment.iter().enumerate() {
            if assigned == cluster {
                windows += 1;
                length += 1;
            }
            let ends = assigned != cluster || row + 1 == assignment.len();
            if ends && length > 0 {
                episodes += 1;
                if length >= run {
                    in_runs += length;
                }
                length = 0;
            }
        }
        // A mode recurs: a cluster of a few lone windows (one stalled disk, once) is an
        // outlier, not part of normal. As many separate episodes as a tail fit needs.
        if episodes >= crate::tail::MIN_PEAKS && 2 * in_runs < windows {
            *state = HealthState::Healthy;
        }
    }
}

fn nearest(centroids: &Array2<f64>, x: &[f64]) -> (usize, f64) {
    centroids
        .outer_iter()
        .enumerate()
        .map(|(c, centroid)| {
            (
                c,
                squared_distance(x, centroid.as_slice().expect("contiguous")),
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f64::INFINITY))
}

fn nearest_of(clusters: &[Cluster], x: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (c, cluster) in clusters.iter().enumerate() {
        let d = squared_distance(x, &cluster.centroid);
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

/// Euclidean distance for linfa's k-means, the same metric as its `L2Dist`. linfa measures
/// every (window, centroid) pair through this trait; `L2Dist` goes through ndarray-stats'
/// shape-checked generic iteration, while rows of a standard-layout matrix are plain slices that
/// a tight loop with independent sums (which the compiler vectorizes) walks several times
/// faster. That pair loop is nearly all of a fit's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowEuclidean;

impl Distance<f64> for RowEuclidean {
    #[inline]
    fn distance<D: Dimension>(&self, a: ArrayView<f64, D>, b: ArrayView<f64, D>) -> f64 {
        self.rdistance(a, b).sqrt()
    }

    #[inline]
    fn rdistance<D: Dimension>(&self, a: ArrayView<f64, D>, b: ArrayView<f64, D>) -> f64 {
        match (a.as_slice(), b.as_slice()) {
            (Some(a), Some(b)) => squared_distance_unrolled(a, b),
            _ => a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum(),
        }
    }

    #[inline]
    fn rdist_to_dist(&self, rdist: f64) -> f64 {
        rdist.sqrt()
    }

    #[inline]
    fn dist_to_rdist(&self, dist: f64) -> f64 {
        dist * dist
    }
}

/// Squared Euclidean distance with four independent running sums, so the additions need not
/// wait for each other (floating-point order rules forbid the compiler from doing this itself).
#[inline]
fn squared_distance_unrolled(a: &[f64], b: &[f64]) -> f64 {
    let mut sums = [0.0f64; 4];
    let (a_chunks, b_chunks) = (a.chunks_exact(4), b.chunks_exact(4));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..4 {
            let d = x[lane] - y[lane];
            sums[lane] += d * d;
        }
    }
    let mut total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    for (x, y) in a_rest.iter().zip(b_rest) {
        total += (x - y) * (x - y);
    }
    total
}

/// k-means with `n_runs` initialisations, best inertia kept. Each run (greedy k-means++
/// seeding, then Lloyd iterations with Hamerly's bounds, see [`crate::kmeans`]) draws from the
/// seeded generator jumped as many times as its index, and runs go to as many threads as the
/// options allow, so the result depends only on data, options and seed. linfa-clustering's
/// `KMeans` then fits from the best run's centroids (a precomputed initialisation) with the same
/// stopping rule, for what is left of that run's iteration budget (at least one iteration): its
/// centroids and inertia are the model's.
fn fit_kmeans(
    scaled: &Array2<f64>,
    k: usize,
    mean_variance: f64,
    options: &TrainOptions,
    progress: &mut impl FnMut(usize, usize),
) -> Result<(Array2<f64>, f64)> {
    // scikit-learn's rule: the squared move of all centroids together at most `tol` times the
    // mean feature variance (1 for standardized data; less when a deviation was floored).
    let shift_tolerance = options.tolerance * options.tolerance * mean_variance;
    let settings = crate::kmeans::Settings {
        k,
        runs: options.n_runs.max(1),
        max_iterations: options.max_iterations.max(1),
        shift_tolerance,
        seed: options.seed,
        threads: options.threads,
    };
    let best = crate::kmeans::best_run(scaled, &settings, progress);
    let seeds = Array2::from_shape_vec((k, scaled.ncols()), best.centroids)
        .map_err(|err| ModelError::Training(err.to_string()))?;
    let fitted = KMeans::params_with(k, Xoshiro256Plus::seed_from_u64(options.seed), RowEuclidean)
        .n_runs(1)
        .max_n_iterations(
            settings
                .max_iterations
                .saturating_sub(best.iterations)
                .max(1),
        )
        // linfa stops when the norm of the move is below its tolerance, which must be
        // positive (it is 0 when every window is the same).
        .tolerance(shift_tolerance.sqrt().max(f64::MIN_POSITIVE))
        .init_method(KMeansInit::Precomputed(seeds))
        .fit(&DatasetBase::from(scaled.view()))
        .map_err(|err| ModelError::Training(err.to_string()))?;
    Ok((fitted.centroids().clone(), fitted.inertia()))
}

#[cfg(test)]
mod tests {
    use super::percentile;
    use super::*;
    use crate::input::Row;
    use std::collections::BTreeMap;

    /// A model of a steady node: ~1000 context switches/s, ~20 % CPU pressure.
    fn steady_model() -> Model {
        let rows: Vec<Row> = (0..200)
            .map(|i| Row {
                values: BTreeMap::from([
                    (
                        "sched_context_switches_per_s".to_string(),
                        1000.0 + f64::from(i % 7) * 10.0,
                    ),
                    ("psi_cpu_some_pct".to_string(), 20.0 + f64::from(i % 5)),
                ]),
                line: i as usize + 1,
                ..Row::default()
            })
            .collect();
        Model::train(
            &rows,
            &TrainOptions {
                k: 1,
                ..TrainOptions::default()
            },
        )
        .expect("trains")
    }

    #[test]
    fn a_missing_value_is_left_out_of_the_score_not_read_as_zero() {
        let model = steady_model();
        // A missing value is a `null` (as the daemon writes one), or a field the collector's
        // record marks missing: both reach the model through `WindowFields::is_missing`.
        let window = |cs: f64| serde_json::json!({"sched_context_switches_per_s": cs, "psi_cpu_some_pct": null});
        // Read as 0 % (what a failed read used to give), a steady node looks degraded.
        let mut as_zero = BTreeMap::from([("sched_context_switches_per_s".to_string(), 1020.0)]);
        as_zero.insert("psi_cpu_some_pct".into(), 0.0);
        assert_eq!(model.score(&as_zero).unwrap().state, HealthState::Degraded);
        // Left out, it is judged on what was read.
        let partial = model.score(&window(1020.0)).unwrap();
        assert_eq!(partial.state, HealthState::Healthy, "{partial:?}");
        assert!(
            partial
                .explanation
                .iter()
                .all(|c| c.feature != "psi_cpu_some_pct"),
            "{partial:?}"
        );
        // What was read still counts: a burst of context switches is still a fault.
        let burst = model.score(&window(16_700_000.0)).unwrap();
        assert_eq!(burst.state, HealthState::Degraded);
        assert_eq!(burst.explanation[0].feature, "sched_context_switches_per_s");
        // A field missing without being declared missing is still an error, and so is a
        // window with nothing left to judge.
        let undeclared = BTreeMap::from([("sched_context_switches_per_s".to_string(), 1020.0)]);
        assert!(model.score(&undeclared).is_err());
        let nothing =
            serde_json::json!({"sched_context_switches_per_s": null, "psi_cpu_some_pct": null});
        assert!(model.score(&nothing).is_err());
        // The same through positions (the baseline learner's way in), NaN in a missing slot
        // ignored.
        let position = model
            .required_fields()
            .iter()
            .position(|f| f == "psi_cpu_some_pct")
            .unwrap();
        let mut inputs = vec![1020.0; 2];
        inputs[position] = f64::NAN;
        let by_position = model.score_inputs_partial(&inputs, &[position]).unwrap();
        assert_eq!(by_position.score, partial.score);
    }

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
