//! How to train a model: [`TrainOptions`], how features are scaled ([`Scaling`]), how the
//! threshold is set ([`ThresholdRule`]), and the defaults with the measurements behind them.

use serde::{Deserialize, Serialize};

use super::percentile;

/// Settings of [`Model::train`](super::Model::train). The defaults are the CLI's.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Number of clusters (the fewest, when [`TrainOptions::choose_k_up_to`] chooses).
    pub k: usize,
    /// Choose the number of clusters from the windows instead: each k from `k` (at least 2)
    /// to this is fitted and, of those whose every cluster holds at least [`MIN_MODE_WINDOWS`] windows
    /// (a mood, not an incident or a handful of equal windows), the one whose clusters are
    /// best separated is kept (the highest simplified silhouette, see
    /// [`crate::model::simplified_silhouette`]; the smaller k on a tie). When none qualifies
    /// (too few windows), `k` as given. `None` (the default): `k` as given. The daemon's
    /// learned baseline leaves it unset (measured, it cost detection on the synthetic sets and
    /// paged an idle node: BENCHMARKS.md, "Choosing k"); `cargo xtask soak-replay
    /// --choose-k-up-to` replays a soak with it.
    pub choose_k_up_to: Option<usize>,
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
    /// Measure each cluster's own spread (see [`MIN_MODE_WINDOWS`]) in the features whose
    /// healthy modes lie apart ([`crate::model::MULTIMODAL_SHARE`]) and score distances to a
    /// healthy centroid in it; `false`: in the scaler's spread alone. On by default for
    /// `model train`. Trained on the synthetic sets' training parts (seeds 11-13) and judged
    /// on held-out training parts (seeds 100-104), it finds the `contaminated` set's CPU
    /// saturations (600 of 600 incident windows, 400 without it) and flags 4 of 43,200
    /// healthy ones (0 without); `heavy-tails` and `shapes` have no feature whose modes lie
    /// apart and are judged as without it (4 and 112 of 45,000 flagged); `drift`'s growth
    /// looks like modes and it flags 13 of 45,000 (5 without), none two in a row. Measured in
    /// every feature (before the feature test), it flagged 25 on `heavy-tails` and 158 on
    /// `shapes`. On for the daemon's learned baseline (`baseline::BaselineOptions`); the
    /// built-in model is trained without it.
    pub spread_per_mode: bool,
    /// A cluster's own spread (with [`TrainOptions::spread_per_mode`]) covers its tail: in
    /// each feature at least the [`MODE_TAIL_QUANTILE`] of its windows' absolute deviations
    /// over a normal's ([`MODE_TAIL_Z`]), the same as the MAD's for normal data, wider for a
    /// mode whose healthy windows spread far (a build's CPU pressure). Whether the modes lie
    /// apart is still decided on the MAD. Off for `model train` (its training windows are not
    /// known clean: a tenth of a cluster's windows may be an incident's); on for the learned
    /// baseline's refreshes, whose every window was judged healthy.
    pub spread_covers_tail: bool,
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
/// trimmed (see `Model::far_tail`), so none of them is dropped
/// now. The planted incidents of `tests/robust_training.rs` (episodes of 10 windows) all go.
pub const TRIM_CUTOFF_SPREADS: f64 = 4.0;
/// Rounds of fit-trim-refit at most. On the planted 5 % of `tests/robust_training.rs` the first
/// round finds 193 of the 200 incident windows and the second the rest (the first fit's
/// spreads were widened by them).
pub const TRIM_ROUNDS: usize = 3;

/// A cluster measures its own spread (median absolute deviation per feature) only with at
/// least this many training windows; a smaller one keeps the scaler's. The MAD of n windows
/// has a relative standard error of about 1.1 / sqrt(n) for normal data: 50 windows give
/// about 16 %, while 10 would give 35 %, and a spread estimated 35 % too small makes its
/// healthy windows score half as far again. It is also about four minutes of 5 s windows,
/// longer than the incidents a training part may hide (the `contaminated` set's run 10).
pub const MIN_MODE_WINDOWS: usize = 50;

/// A feature's healthy modes are apart when its spread within them (their size-weighted mean)
/// is under this share of its scaler spread: the scaler's spread is then mostly the distance
/// between modes, and a window is measured within its mode. From the synthetic sets' training
/// parts (seed 11, no labels): `contaminated`'s busy/quiet features are at 0.20-0.47 (its
/// CPU 0.20); `heavy-tails`' single-mode, long-tailed features at 0.56-1.03 and `shapes`'
/// at 0.62-1.0 keep the scaler's spread (measured within the bulk of their own cluster, their
/// healthy tails were many spreads out and flagged). `drift`'s growth reads as modes
/// (0.27-0.45).
pub const MULTIMODAL_SHARE: f64 = 0.5;

/// A cluster's scoring spread is at least this quantile of its windows' absolute deviations
/// from its median, over [`MODE_TAIL_Z`] (`model::train`'s `ModeSpread`).
pub const MODE_TAIL_QUANTILE: f64 = 0.9;
/// The absolute deviation of a normal's [`MODE_TAIL_QUANTILE`] in standard deviations
/// (its 0.95 quantile): for normal data the scoring spread is the bulk's.
pub const MODE_TAIL_Z: f64 = 1.6449;

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
            choose_k_up_to: None,
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
            spread_per_mode: true,
            spread_covers_tail: false,
        }
    }
}
