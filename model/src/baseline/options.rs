//! What a [`super::BaselineLearner`] is asked (its options and their defaults, with where
//! each comes from) and what it says of itself ([`BaselineStatus`]).

use std::time::Duration;

use crate::{model::TrainOptions, spot::SpotOptions};

/// Settings of a [`super::BaselineLearner`], in windows.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineOptions {
    /// Windows to learn from before the first judgement.
    pub learn_windows: usize,
    /// Retrain every this many judged windows, from the healthy windows kept (sooner while
    /// the baseline is young: see [`super::BaselineLearner::refresh_interval`]).
    pub refresh_every: usize,
    /// At most this many windows are kept, half the most recent and half a sample of the
    /// older ones: the memory bound, about `max_kept × fields × 8` bytes.
    pub max_kept: usize,
    /// Length of a window, in seconds: for the hours the baseline covers and the per-window
    /// false-alarm probability (one false episode per day).
    pub window_s: f64,
    /// The floor holds until this many windows were seen…
    pub floor_windows: usize,
    /// …and the threshold is never below this until then, nor while a model trained before
    /// then judges (standardized units).
    pub floor_threshold: f64,
    /// The spreads' floor scale of a training made once `floor_windows` windows were seen
    /// (before, `train.floor_scale`'s wider floors hold).
    pub mature_floor_scale: f64,
    /// k-means settings of every (re)training. `k` is lowered to a tenth of the windows
    /// available, so a short baseline is not cut into clusters of one window.
    pub train: TrainOptions,
    /// The streaming tail; its `false_alarm` is set from `window_s` (one episode a day).
    pub spot: SpotOptions,
}

/// 5 minutes of 5 s windows: long enough to see a node's usual short cycles (cron, scrapes,
/// GC) and short enough that a new node is judged soon.
pub const DEFAULT_LEARN_WINDOWS: usize = 60;
/// 30 minutes of 5 s windows.
pub const DEFAULT_REFRESH_EVERY: usize = 360;
/// A young baseline's early refreshes come no sooner than this after the last training: a
/// refresh a minute after learning would retrain on a minute of windows and move the
/// threshold under a short-lived job (with 1 s windows, the attribution tests' fault and its
/// end saw two refreshes, and the new models named a neighbour). Soak 1's first false
/// episodes came 10, 17 and 24 minutes in: refreshes at 8 and 16 minutes still precede them.
pub const MIN_REFRESH_SECONDS: f64 = 300.0;
/// 2,048 recent windows (2.8 hours of 5 s windows) and a sample of 2,048 older ones: with
/// the 21 judged fields about 700 KB (2 MB with every field). Enough windows for a tail fit
/// (some 80 over the 98th percentile) and a training that takes tens of milliseconds.
pub const DEFAULT_MAX_KEPT: usize = 4096;
/// "Order of a thousand" windows: 1.4 hours of 5 s windows. Below it a tail of 6e-5 per
/// window cannot be placed from the node's own windows.
pub const DEFAULT_FLOOR_WINDOWS: usize = 1000;
/// The built-in model's minimum threshold (`cargo xtask evaluate`, BUILTIN_MIN_THRESHOLD),
/// over spreads floored as widely as its own ([`DEFAULT_FLOOR_SCALE`]): three floors from
/// normal, 15 points of pressure on their own. Every fault of EVALUATION.md is further out.
pub const DEFAULT_FLOOR_THRESHOLD: f64 = 3.0;
/// The built-in model's floor scale (BUILTIN_FLOOR_SCALE): a 65% change of a rate is one
/// standard deviation at the least, whatever a quiet hour's own spread.
pub const DEFAULT_FLOOR_SCALE: f64 = 5.0;
/// `model train`'s floor scale (`TrainOptions::default`), for trainings made once
/// [`DEFAULT_FLOOR_WINDOWS`] windows were seen. Not chosen here: the learner then trains as
/// `model train` would on the node's own hours. What it gives: EVALUATION.md's streaming table
/// (`contaminated` 0.65 to 0.90, `shapes` 0.02 to 0.55 on seed 7).
pub const DEFAULT_MATURE_FLOOR_SCALE: f64 = 1.0;

impl Default for BaselineOptions {
    fn default() -> Self {
        Self {
            learn_windows: DEFAULT_LEARN_WINDOWS,
            refresh_every: DEFAULT_REFRESH_EVERY,
            max_kept: DEFAULT_MAX_KEPT,
            window_s: 5.0,
            floor_windows: DEFAULT_FLOOR_WINDOWS,
            floor_threshold: DEFAULT_FLOOR_THRESHOLD,
            mature_floor_scale: DEFAULT_MATURE_FLOOR_SCALE,
            train: TrainOptions {
                k: 3,
                n_runs: 5,
                floor_scale: DEFAULT_FLOOR_SCALE,
                // Mean and standard deviation, as the learner was built and soaked with. With
                // the robust scaler `model train` now defaults to, a first baseline learned
                // from a dozen windows set its threshold at 12 and missed a crash loop
                // (z ~11) that the scrape test causes: robust scaling for the on-node
                // baseline needs its own evaluation before it becomes its default.
                scaling: crate::model::Scaling::Standard,
                // Spreads per mode, as `model train` (only in the features whose healthy
                // modes lie apart, so a node with one mode is judged as before): a node whose
                // load grows through the hours is such a feature, and its learner follows it
                // far better with them (calibration `drift`: 0.83 to 0.98, development seeds
                // 11-13 0.83-0.84 to 0.96-0.99). Soaks 6 and 7 replayed with them: every
                // verdict and score the same (`cargo xtask soak-replay`).
                spread_per_mode: true,
                ..TrainOptions::default()
            },
            spot: SpotOptions::default(),
        }
    }
}

impl BaselineOptions {
    /// The daemon's options (`collector run --window --learn-for --refresh-every`, and
    /// `cargo xtask soak-replay`, which must judge as it does): as many windows of length
    /// `window` as cover `learn_for` and `refresh_every`, rounded up and at least 10 each;
    /// the rest are the defaults.
    ///
    /// Rounded up because a span that ends within a window still needs that window: a
    /// `--learn-for` shorter than a window is one window, not none. At least 10 because a
    /// baseline learned from fewer windows would be noise, and so would a retraining.
    ///
    /// `window` must not be zero (the daemon's `--window` is at least 1 s).
    ///
    /// [`BaselineOptions::for_durations`] differs and is kept as it is: it rounds to the
    /// nearest window, refreshes after at least 1 window, treats a window under 1 ms as 1 ms
    /// and also sets the memory bound (`keep`).
    pub fn covering(window: Duration, learn_for: Duration, refresh_every: Duration) -> Self {
        let windows = |span: Duration| (span.as_secs_f64() / window.as_secs_f64()).ceil() as usize;
        Self {
            learn_windows: windows(learn_for).max(10),
            refresh_every: windows(refresh_every).max(10),
            window_s: window.as_secs_f64(),
            ..Self::default()
        }
    }

    /// The options for windows of length `window`: learn for `learn`, refresh every
    /// `refresh`, keep at most `keep` of windows. Each count is at least 1 (learning: 10).
    /// Unlike [`BaselineOptions::covering`] (the daemon's), counts are rounded to the nearest
    /// window.
    pub fn for_durations(
        window: Duration,
        learn: Duration,
        refresh: Duration,
        keep: Duration,
    ) -> Self {
        let windows =
            |span: Duration| (span.as_secs_f64() / window.as_secs_f64().max(1e-3)).round() as usize;
        let learn_windows = windows(learn).max(10);
        Self {
            learn_windows,
            refresh_every: windows(refresh).max(1),
            max_kept: windows(keep).max(learn_windows),
            window_s: window.as_secs_f64(),
            ..Self::default()
        }
    }

    /// Windows of the recent half (never fewer than learning needs).
    pub(super) fn recent_capacity(&self) -> usize {
        (self.max_kept / 2)
            .max(self.learn_windows.min(self.max_kept))
            .max(1)
    }

    /// Windows of the sampled half.
    pub(super) fn sampled_capacity(&self) -> usize {
        self.max_kept.saturating_sub(self.recent_capacity())
    }
}

/// How much the baseline has seen, for the daemon's `/state` and metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BaselineStatus {
    /// Complete windows fed to the learner since the start.
    pub windows_seen: u64,
    /// Windows kept for the next refresh: the recent ones and the sample of older ones.
    pub windows_kept: usize,
    pub windows_recent: usize,
    pub windows_sampled: usize,
    /// From the oldest window kept to the newest.
    pub hours_covered: f64,
    pub trainings: usize,
    /// Windows judged healthy but not learned from: those of runs over the tail's level that
    /// had a window judged anomalous (an incident's onset and its end).
    pub windows_forgotten: u64,
    /// The threshold is held at `floor_threshold` or above: too few windows seen, no tail
    /// fitted yet, or a young model (trained with the wide floors) judging under the tail.
    pub floor_applies: bool,
    pub floor_threshold: f64,
    /// The spreads' floor scale of the model judging now: wide while the baseline is young,
    /// `model train`'s once it was trained on `floor_windows` windows seen.
    pub floor_scale: f64,
    /// Clusters of the model judging now (its k); 0 before the first training.
    pub clusters: usize,
    /// "tail" (the streaming fit) or "percentile" (the trained model's own threshold: fewer
    /// than `floor_windows` windows seen, or no tail could be fitted yet).
    pub threshold_rule: &'static str,
    /// Episodes in the streaming tail's peaks set (0 without a fit).
    pub tail_peaks: usize,
    /// The streaming tail's fitted shape (> 0: heavy, the further the faster the threshold
    /// grows as the rate asked falls) and scale; `None` without a fit. What a climbing
    /// threshold is read from.
    pub tail_shape: Option<f64>,
    pub tail_scale: Option<f64>,
    pub threshold: f64,
    /// The baseline goes on from a state saved before a restart
    /// ([`super::BaselineLearner::restore`]) instead of having learned afresh.
    pub restored: bool,
    /// The model judging now scores its latencies (a sampled latency's rise is evidence).
    /// False while learning, and while a young model judges the disk by its I/O pressure
    /// instead (`model::baseline` says why): the latencies then neither make nor explain a
    /// verdict until the first training on `floor_windows` windows seen.
    pub latencies_judged: bool,
}
