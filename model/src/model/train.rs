//! Training: the scaler, k-means, each cluster's state and the threshold, fitted on the
//! training windows, with rounds that trim unlabelled incidents out of them.

use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand_xoshiro::{Xoshiro256Plus, rand_core::SeedableRng};

use super::{
    Cluster, HealthState, MODEL_FORMAT, MODEL_FORMAT_VERSION, Model, Prepared, Scaler, TailFit,
    Threshold, TrainingInfo,
    distance::{RowEuclidean, nearest, nearest_of, simplified_silhouette},
    options::{
        MIN_MODE_WINDOWS, MODE_TAIL_QUANTILE, MODE_TAIL_Z, MULTIMODAL_SHARE, TAIL_EPISODE_GAP,
        TAIL_LEVEL_QUANTILE, TRIM_CUTOFF_SPREADS, TRIM_ROUNDS, ThresholdRule, TrainOptions,
    },
    percentile,
};
use crate::{
    error::{ModelError, Result},
    features::{FeatureSchema, columns_of, positions_in, std_floor},
    input::{Table, TrainingData},
};

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
        // Each feature's floor, in standardized units: no cluster's own spread is below it.
        let mut floors = Vec::with_capacity(width);
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
            floors.push(floor / s);
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
        let most = options.choose_k_up_to.unwrap_or(0).max(options.k);
        let distinct = {
            let mut seen: Vec<&[f64]> = Vec::with_capacity(most);
            for row in scaled.outer_iter() {
                let row = row.to_slice().expect("rows are contiguous");
                if !seen.contains(&row) {
                    seen.push(row);
                    if seen.len() == most {
                        break;
                    }
                }
            }
            seen.len()
        };
        let mut silhouettes = Vec::new();
        let mut chosen: Option<(usize, Array2<f64>, f64)> = None;
        if let Some(most) = options.choose_k_up_to {
            let mut best_silhouette = f64::NEG_INFINITY;
            for k in options.k.max(2)..=most.min(distinct) {
                let (centroids, inertia) =
                    fit_kmeans(&scaled, k, scaled_variance, options, progress)?;
                // A mood is a cluster of at least MIN_MODE_WINDOWS windows: what a cluster
                // needs to measure its own spread, and longer than the incidents a training
                // part may hide. A k that leaves a smaller cluster is not a choice: on
                // windows that take a few exact values (an idle node's error counters at 1 s)
                // every window sits on a centroid and the silhouette is near 1 for as many
                // clusters as values, each a handful of windows; the soak's first training
                // split its idle minutes so, and the clusters under the outlier share paged.
                let mut sizes = vec![0usize; k];
                for window in scaled.outer_iter() {
                    sizes[nearest(&centroids, window.as_slice().expect("contiguous")).0] += 1;
                }
                if sizes.iter().any(|&size| size < MIN_MODE_WINDOWS) {
                    silhouettes.push((k, None));
                    continue;
                }
                let silhouette = simplified_silhouette(&centroids, &scaled);
                silhouettes.push((k, Some(silhouette)));
                // Strictly better: on a tie the fewer clusters.
                if silhouette > best_silhouette {
                    best_silhouette = silhouette;
                    chosen = Some((k, centroids, inertia));
                }
            }
        }
        // k as given: asked for, or no k chose (too few windows for two moods).
        let (k, centroids, inertia) = match chosen {
            Some(chosen) => chosen,
            None => {
                let k = options.k.min(distinct);
                let (centroids, inertia) =
                    fit_kmeans(&scaled, k, scaled_variance, options, progress)?;
                (k, centroids, inertia)
            }
        };
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

        let measured: Vec<Option<ModeSpread>> = (0..k)
            .map(|cluster| {
                (options.spread_per_mode && sizes[cluster] >= MIN_MODE_WINDOWS).then(|| {
                    mode_spread(
                        &scaled,
                        &assignment,
                        cluster,
                        &floors,
                        options.spread_covers_tail,
                    )
                })
            })
            .collect();
        let spreads = spreads_where_modes_are_apart(measured, &sizes, &states);

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
                    spread: spreads[c].clone(),
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
                silhouettes,
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
                    whole_shape: fit.whole_shape,
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
}

/// A cluster's spread per feature, measured two ways (standardized units, each at least the
/// feature's floor; a feature most of whose windows share one value keeps the scaler's, 1).
#[derive(Debug, Clone)]
struct ModeSpread {
    /// 1.4826 times the median absolute deviation from the cluster's median: the standard
    /// deviation for normal data, blind to a tail. Whether a feature's modes lie apart is
    /// decided on it ([`MULTIMODAL_SHARE`]).
    bulk: Vec<f64>,
    /// The bulk spread, or wider where the cluster's tail is: the
    /// [`MODE_TAIL_QUANTILE`] of the absolute deviations over the normal's own
    /// ([`MODE_TAIL_Z`]), which for normal data is the same standard deviation. Scores are
    /// measured in it.
    scoring: Vec<f64>,
}

/// Per feature, the spreads per mode are kept only where the feature's healthy modes are
/// apart ([`MULTIMODAL_SHARE`], on their bulk spreads); elsewhere every cluster uses the
/// scaler's spread (1).
fn spreads_where_modes_are_apart(
    measured: Vec<Option<ModeSpread>>,
    sizes: &[usize],
    states: &[HealthState],
) -> Vec<Option<Vec<f64>>> {
    let healthy: Vec<usize> = (0..measured.len())
        .filter(|&c| states[c] == HealthState::Healthy && measured[c].is_some())
        .collect();
    let Some(features) = healthy
        .first()
        .and_then(|&c| measured[c].as_ref())
        .map(|m| m.bulk.len())
    else {
        // No healthy cluster measured its own: nothing to compare, each keeps what it measured.
        return measured
            .into_iter()
            .map(|spread| spread.map(|spread| spread.scoring))
            .collect();
    };
    let weight: f64 = healthy.iter().map(|&c| sizes[c] as f64).sum();
    let apart: Vec<bool> = (0..features)
        .map(|f| {
            let within: f64 = healthy
                .iter()
                .filter_map(|&c| measured[c].as_ref().map(|m| m.bulk[f] * sizes[c] as f64))
                .sum::<f64>()
                / weight.max(1.0);
            healthy.len() >= 2 && within < MULTIMODAL_SHARE
        })
        .collect();
    measured
        .into_iter()
        .map(|spread| {
            spread.map(|spread| {
                spread
                    .scoring
                    .iter()
                    .zip(&apart)
                    .map(|(&value, &apart)| if apart { value } else { 1.0 })
                    .collect()
            })
        })
        .collect()
}

/// A cluster's own spread per feature in standardized units ([`ModeSpread`]). A machine with
/// a busy and a quiet mode has a scaler spread that spans both (CPU 55 % and 15 %): measured
/// so, a CPU at 97 % is two spreads from busy and looks healthy, while within the busy mode
/// it is many. The median and MAD ignore the few incident windows a cluster may hold, where a
/// standard deviation would widen with them; the scoring spread's quantile ignores up to a
/// tenth of them too, but not a healthy mode's own long tail: a build's CPU pressure spans
/// 1-15 % where its MAD says 2, and measured in the MAD its healthy windows scored up to 33,
/// which set the learned threshold (soak 13: 63, BENCHMARKS.md).
fn mode_spread(
    scaled: &Array2<f64>,
    assignment: &[usize],
    cluster: usize,
    floors: &[f64],
    covers_tail: bool,
) -> ModeSpread {
    let members: Vec<usize> = (0..assignment.len())
        .filter(|&row| assignment[row] == cluster)
        .collect();
    let mut column = Vec::with_capacity(members.len());
    let (mut bulk, mut scoring) = (Vec::with_capacity(floors.len()), Vec::new());
    for (feature, &floor) in floors.iter().enumerate() {
        column.clear();
        column.extend(members.iter().map(|&row| scaled[[row, feature]]));
        column.sort_by(f64::total_cmp);
        let median = percentile(&column, 50.0);
        for value in column.iter_mut() {
            *value = (*value - median).abs();
        }
        column.sort_by(f64::total_cmp);
        let mad = 1.4826 * percentile(&column, 50.0);
        // Half the mode's windows or more share one value (a counter that is mostly 0):
        // its MAD says nothing of how far the rest spread, and the floor alone would make
        // a first error many spreads away. Such a feature keeps the scaler's spread.
        if mad == 0.0 {
            bulk.push(1.0);
            scoring.push(1.0);
            continue;
        }
        let tail = if covers_tail {
            percentile(&column, MODE_TAIL_QUANTILE * 100.0) / MODE_TAIL_Z
        } else {
            0.0
        };
        bulk.push(mad.max(floor));
        // Never wider than the scaler's spread (1), which spans every mode: a cluster that
        // straddles two modes in a feature (one made by another feature's spike, in busy and
        // quiet windows alike) would otherwise take in anything between them.
        scoring.push(mad.max(tail.min(1.0)).max(floor));
    }
    ModeSpread { bulk, scoring }
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
    use super::*;

    fn measured(bulk: &[f64], scoring: &[f64]) -> Option<ModeSpread> {
        Some(ModeSpread {
            bulk: bulk.to_vec(),
            scoring: scoring.to_vec(),
        })
    }

    #[test]
    fn modes_apart_are_decided_on_the_bulk_and_scored_in_the_tail_covering_spread() {
        use HealthState::{Degraded, Healthy};
        // Feature 0 lies apart (bulk 0.2 and 0.3 of the scaler's), feature 1 does not (0.9):
        // feature 0 is scored in each cluster's covering spread, feature 1 in the scaler's.
        let spreads = spreads_where_modes_are_apart(
            vec![
                measured(&[0.2, 0.9], &[0.45, 0.95]),
                measured(&[0.3, 0.9], &[0.3, 0.9]),
                None,
            ],
            &[100, 100, 10],
            &[Healthy, Healthy, Degraded],
        );
        assert_eq!(
            spreads,
            vec![Some(vec![0.45, 1.0]), Some(vec![0.3, 1.0]), None]
        );
        // Covering the tail does not decide the modes: a bulk under the share with a wide
        // tail is still apart.
        let spreads = spreads_where_modes_are_apart(
            vec![measured(&[0.4], &[0.9]), measured(&[0.4], &[0.4])],
            &[100, 100],
            &[Healthy, Healthy],
        );
        assert_eq!(spreads, vec![Some(vec![0.9]), Some(vec![0.4])]);
    }

    #[test]
    fn without_a_healthy_cluster_that_measured_its_own_each_keeps_what_it_measured() {
        // A large degraded cluster (labelled faults) beside healthy ones too small to measure:
        // its spreads stay whole, one per feature (never an empty list that would score 0).
        let spreads = spreads_where_modes_are_apart(
            vec![measured(&[0.2, 0.3], &[0.4, 0.3]), None],
            &[200, 30],
            &[HealthState::Degraded, HealthState::Healthy],
        );
        assert_eq!(spreads, vec![Some(vec![0.4, 0.3]), None]);
    }
}
