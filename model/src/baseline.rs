//! The embedded default: started without a model file, the daemon learns its node's own
//! baseline from the first windows, then judges; it refreshes the baseline from windows
//! judged healthy, in bounded memory.
//!
//! Three minutes of a node's life is not its normal: a nightly backup or a build must not page
//! anyone the first time it runs. So the baseline widens as it sees more:
//! - **A reservoir across hours.** Half of the windows kept are the most recent ones; the other
//!   half is a uniform sample (reservoir sampling, Vitter's algorithm R) of every older window
//!   judged healthy, so last night's backup stays in the baseline next to the last hour.
//!   Each refresh retrains the model and refits the tail from both halves.
//! - **A streaming tail.** Between refreshes, the threshold is DSPOT's ([`crate::spot`]),
//!   updated by every window judged healthy, never by one judged anomalous (once the floor
//!   below is lifted).
//! - **Sooner refreshes while young.** A baseline of minutes has seen one or two of a node's
//!   moods; the first build after it is judged against three minutes of idle. So the first
//!   refreshes come when the windows seen have doubled since the last training (after twice
//!   the learning, four times, …; never sooner than [`MIN_REFRESH_SECONDS`] after the last)
//!   until they are [`BaselineOptions::refresh_every`] apart: each early refresh at least
//!   doubles what the baseline knows, and a grown baseline is not retrained more often than
//!   asked.
//! - **An incident's onset is not learned.** A window just under the threshold is judged
//!   healthy and kept; if it is the rising edge of an incident (connections piling up, a
//!   disk filling), the next refresh learns it and the threshold climbs with each such
//!   incident (the soak saw 5.4 → 12.9 → 18.7 from bursts scoring just under it). So a run
//!   of windows over the tail's level that ends in a window judged anomalous is one episode,
//!   as the tail fit declusters them: none of its windows is learned (those kept are
//!   forgotten, all are counted in [`BaselineStatus::windows_forgotten`]) and it never
//!   becomes a peak. A run that stays under the threshold (a build) is learned as before.
//!   Likewise the learning windows the first model places in a degraded cluster (a small
//!   cluster of them, taken for outliers) are forgotten at that training: they were never
//!   judged, and the refreshes take every kept window for healthy.
//! - **A conservative floor until enough windows.** One false episode a day at 5 s windows
//!   is 6e-5 per window: a tail fitted to a few dozen windows cannot place that. Until
//!   [`BaselineOptions::floor_windows`] windows were seen and a tail could be fitted, the
//!   threshold is the trained model's own (the percentile rule at those sizes), never below
//!   [`BaselineOptions::floor_threshold`] (the built-in model's minimum threshold, over its
//!   widened floors); the tail is fitted and updated meanwhile but sets nothing. The floor
//!   belongs to those wide floors: a young model still judging once the tail sets the
//!   threshold (until the first training after `floor_windows`) is held at it too.
//! - **Wide floors while young.** A spread measured on minutes of an idle node is too narrow
//!   for its busy hours, so until then every feature's spread is floored
//!   [`BaselineOptions::train`]'s `floor_scale` (5) times as wide as a `model train` model's.
//!   A training made once [`BaselineOptions::floor_windows`] windows were seen measures the
//!   node's own spreads over hours, and floors them as `model train` does
//!   ([`BaselineOptions::mature_floor_scale`]): the wide floors hid faults within them (a
//!   CPU saturation in a busy mode, a broken correlation) from a learner that had seen enough.
//! - **Pressure, not latency, judges a young model's disk.** A young model has not seen its
//!   node's bulk writers: a backup's writeback took the disk's p99 from 1-3 ms to 60 ms
//!   while hardly a task waited, and that latency led most of the young baselines'
//!   episodes in the soaks, on their first backups and builds. A latency that harms is waited
//!   on, and waiting is I/O pressure, which every recorded disk fault raised to 50-76 %. So
//!   a young model that judges `psi_io_*` leaves its latencies out (`/state`:
//!   `latencies_judged`); a mature one judges them against the node's own spreads, and a
//!   node without I/O pressure keeps them.
//! - **Across restarts.** What a restart needs is what a refresh trains from: the kept windows
//!   and the counts ([`BaselineLearner::state`], [`BaselineState`]). A learner
//!   [`BaselineLearner::restore`]d from them retrains at once and judges the next window, mature
//!   again if it had seen [`BaselineOptions::floor_windows`]; without it every restart of the
//!   daemon (a rollout, a reboot) learned its node from minutes again and was young for a
//!   thousand windows, the phase most of the soaks' episodes came in.
//! - **A mode's own long tail is its normal.** A refresh learns from windows judged healthy,
//!   so each cluster's spread there covers the cluster's tail, not only its bulk
//!   ([`TrainOptions::spread_covers_tail`]): measured in the MAD alone, a build's minutes of
//!   CPU pressure scored up to 33 within the busy mode and the tail fitted to them set 63
//!   (soak 13; 16.8 with it, and 14-15 of the 16 recorded faults paging after every joining of
//!   soaks 12 and 13 replayed, 12-15 after every repeat, BENCHMARKS.md).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::{
    error::{ModelError, Result},
    input::{Table, WindowFields},
    model::{Assessment, HealthState, Model, TrainOptions},
    spot::{Spot, SpotOptions},
};

mod learned;
mod options;
mod saved;

use crate::signals::is_latency;

use learned::{Draws, Kept, LearnedModel, impute_latencies, leaves_latencies_out};
pub use options::{
    BaselineOptions, BaselineStatus, DEFAULT_FLOOR_SCALE, DEFAULT_FLOOR_THRESHOLD,
    DEFAULT_FLOOR_WINDOWS, DEFAULT_LEARN_WINDOWS, DEFAULT_MATURE_FLOOR_SCALE, DEFAULT_MAX_KEPT,
    DEFAULT_REFRESH_EVERY, MIN_REFRESH_SECONDS,
};
pub use saved::{BaselineState, STATE_FORMAT};

/// Learns, then judges, then refreshes. Feed it every window with [`BaselineLearner::observe`].
/// A clone learns on from where the original is (`cargo xtask soak-replay --faults` judges
/// each fault with a copy of the same baseline).
#[derive(Debug, Clone)]
pub struct BaselineLearner {
    options: BaselineOptions,
    /// The numeric fields of the first window: the baseline's columns for good.
    columns: Option<Vec<String>>,
    /// Partial windows seen before the columns were fixed (see
    /// [`BaselineLearner::observe_partial`]).
    partial_before_columns: usize,
    /// The most recent windows judged healthy (all windows while learning).
    recent: VecDeque<Kept>,
    /// A uniform sample of the windows that left `recent`.
    sampled: Vec<Kept>,
    /// Windows that left `recent` so far (algorithm R's count).
    left_recent: u64,
    draws: Draws,
    /// Complete windows seen.
    seen: u64,
    model: Option<LearnedModel>,
    spot: Option<Spot>,
    /// Windows since the last (attempted) training.
    since_training: usize,
    /// Windows seen at the last (attempted) training.
    seen_at_training: u64,
    /// The first window (its position in the stream) of the current run of judged windows
    /// over the tail's level; `None` after a window under it.
    run_start: Option<u64>,
    /// The current run had a window judged anomalous: the rest of it is not learned.
    run_degraded: bool,
    forgotten: u64,
    trainings: usize,
    last_error: Option<String>,
    /// Started from a saved state whose fields the first complete window has not yet
    /// confirmed (see [`BaselineLearner::restore`]).
    unconfirmed_restore: bool,
    /// Partial windows in a row since the restore, before a complete one confirmed it.
    partial_since_restore: usize,
    /// Started from a saved state (and still on it).
    restored: bool,
    /// Why a restored state was dropped for learning afresh, once it was.
    restore_dropped: Option<String>,
}

impl BaselineLearner {
    pub fn new(options: BaselineOptions) -> Self {
        Self {
            recent: VecDeque::with_capacity(options.recent_capacity().min(4096)),
            sampled: Vec::new(),
            left_recent: 0,
            draws: Draws(options.train.seed),
            seen: 0,
            options,
            columns: None,
            partial_before_columns: 0,
            model: None,
            spot: None,
            since_training: 0,
            seen_at_training: 0,
            run_start: None,
            run_degraded: false,
            forgotten: 0,
            trainings: 0,
            last_error: None,
            unconfirmed_restore: false,
            partial_since_restore: 0,
            restored: false,
            restore_dropped: None,
        }
    }

    /// What a restart needs to go on from here ([`BaselineLearner::restore`]): the kept
    /// windows and the counts. `None` before the first training (nothing learned yet worth
    /// more than learning again).
    ///
    /// The windows of a run over the tail's level still open are left out: whether they are
    /// an incident's onset (to be forgotten) is known only when the run ends, and a restored
    /// learner, which starts outside any run, would learn them.
    pub fn state(&self) -> Option<BaselineState> {
        self.model.as_ref()?;
        let settled = |(at, _): &&Kept| self.run_start.is_none_or(|start| *at < start);
        Some(BaselineState {
            format: STATE_FORMAT,
            window_s: self.options.window_s,
            columns: self.columns.clone()?,
            windows_seen: self.seen,
            windows_forgotten: self.forgotten,
            trainings: self.trainings,
            left_recent: self.left_recent,
            draws: self.draws.0,
            recent: self.recent.iter().filter(settled).cloned().collect(),
            sampled: self.sampled.clone(),
        })
    }

    /// A learner that goes on from a saved state: it retrains its model and tail from the
    /// saved windows at once (a refresh, as if one came at the restart) and judges the next
    /// window, with what it had seen counted (so a baseline past
    /// [`BaselineOptions::floor_windows`] is mature again at once). Refused, with the reason,
    /// when the state does not fit these options (another window length or layout, rows that
    /// do not match their fields) or no model trains from it; the caller then learns afresh.
    /// A state holding more windows than these options keep is cut to them, the oldest
    /// recent ones and the last sampled ones left out.
    ///
    /// The fields are checked against the first complete window: if the node's windows no
    /// longer have exactly the saved fields (another version of the collector, other
    /// `--baseline-fields`), the state is dropped there and the learner learns afresh from
    /// that window on ([`BaselineLearner::restore_dropped`] says why).
    ///
    /// `origin` names the state in errors (the file it was read from).
    pub fn restore(options: BaselineOptions, state: BaselineState, origin: &Path) -> Result<Self> {
        let refused = |message: String| ModelError::BaselineState {
            path: origin.to_path_buf(),
            message,
        };
        if let Some(reason) = state.refusal(options.window_s) {
            return Err(refused(reason));
        }
        let mut learner = Self::new(options);
        let mut recent = state.recent;
        let over = recent
            .len()
            .saturating_sub(learner.options.recent_capacity());
        recent.drain(..over);
        let mut sampled = state.sampled;
        sampled.truncate(learner.options.sampled_capacity());
        learner.columns = Some(state.columns);
        learner.recent = recent.into();
        learner.sampled = sampled;
        learner.left_recent = state.left_recent;
        learner.draws = Draws(state.draws);
        learner.seen = state.windows_seen;
        learner.forgotten = state.windows_forgotten;
        learner.trainings = state.trainings;
        learner.train();
        if learner.model.is_none() {
            return Err(refused(format!(
                "no model trained from it: {}",
                learner.last_error.as_deref().unwrap_or("unknown error")
            )));
        }
        learner.unconfirmed_restore = true;
        learner.restored = true;
        Ok(learner)
    }

    /// Why a restored state was dropped at the first complete window (its fields were not
    /// the window's), if it was.
    pub fn restore_dropped(&self) -> Option<&str> {
        self.restore_dropped.as_deref()
    }

    /// Drops a restored state whose fields are not this window's, to learn afresh.
    fn confirm_restore(&mut self, record: &impl WindowFields) {
        self.unconfirmed_restore = false;
        let mut fields = record.feature_fields();
        fields.sort();
        let mut columns = self.columns.clone().unwrap_or_default();
        columns.sort();
        if fields == columns {
            return;
        }
        let missing: Vec<&String> = columns.iter().filter(|c| !fields.contains(c)).collect();
        let new: Vec<&String> = fields.iter().filter(|f| !columns.contains(f)).collect();
        let reason = format!(
            "the saved baseline's fields are not this node's windows' (saved only: {}; windows \
             only: {}): learning afresh",
            list(&missing),
            list(&new)
        );
        *self = Self::new(self.options.clone());
        self.restore_dropped = Some(reason);
    }

    /// The current model, once learned (save it with [`Model::save`] to reuse it).
    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref().map(|learned| &learned.model)
    }

    /// Windows still needed before the first judgement (0 once judging).
    pub fn windows_to_go(&self) -> usize {
        if self.model.is_some() {
            0
        } else {
            self.learn_windows().saturating_sub(self.recent.len())
        }
    }

    /// Learning can last no longer than memory holds windows.
    fn learn_windows(&self) -> usize {
        self.options
            .learn_windows
            .min(self.options.recent_capacity())
            .max(1)
    }

    /// Windows held for the next refresh (never more than `max_kept`, or the learning
    /// windows when that is more).
    pub fn kept(&self) -> usize {
        self.recent.len() + self.sampled.len()
    }

    /// Trainings done so far (the first one and the refreshes).
    pub fn trainings(&self) -> usize {
        self.trainings
    }

    /// Why the last training failed, if it did (the learner then keeps its previous model).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The spreads' floor scale of trainings before `floor_windows` windows were seen.
    fn young_floor_scale(&self) -> f64 {
        self.options.train.floor_scale
    }

    /// The spreads' floor scale of the model judging now (the young one before a training).
    pub fn floor_scale(&self) -> f64 {
        self.model
            .as_ref()
            .map_or(self.young_floor_scale(), |learned| learned.floor_scale)
    }

    /// Whether the conservative floor still holds the threshold up: until the tail sets it,
    /// and under the tail while a young model (trained before `floor_windows` windows were
    /// seen, with the wide floors the floor belongs to) judges.
    pub fn floor_applies(&self) -> bool {
        !self.tail_sets_threshold() || self.model.as_ref().is_some_and(|learned| !learned.mature)
    }

    /// Whether the streaming tail sets the threshold: once a tail is fitted and
    /// [`BaselineOptions::floor_windows`] windows were seen. Before, a tail fitted on a few
    /// hundred windows is an extrapolation to 6e-5 per window from a handful of episodes
    /// (on the scenario recordings' 270 windows it put the threshold at 17.9, over most of
    /// their faults), so the trained model's own threshold (the percentile rule at such
    /// sizes) serves, held at the floor.
    fn tail_sets_threshold(&self) -> bool {
        self.spot.is_some() && self.seen >= self.options.floor_windows as u64
    }

    /// The threshold windows are judged against now (0 while learning).
    pub fn threshold(&self) -> f64 {
        let Some(learned) = &self.model else {
            return 0.0;
        };
        let own = match &self.spot {
            Some(spot) if self.tail_sets_threshold() => spot.threshold(),
            _ => learned.model.threshold.value,
        };
        // The floor is the built-in model's minimum over spreads floored as widely as a young
        // model's: it holds before the tail sets the threshold, and under the tail as long as
        // a young model judges (on soak 14 the young model's tail sat at 2.5-2.6 from window
        // 1,000 to the first mature training, and eight backup episodes came in it;
        // BENCHMARKS.md).
        let own = if self.floor_applies() {
            own.max(self.options.floor_threshold)
        } else {
            own
        };
        // The smallest threshold worth reporting, as in training: a tenth of a deviation.
        own.max(0.1)
    }

    /// How much the baseline has seen.
    pub fn status(&self) -> BaselineStatus {
        let (first, last) = self
            .recent
            .iter()
            .chain(&self.sampled)
            .fold((u64::MAX, 0), |(lo, hi), (at, _)| {
                (lo.min(*at), hi.max(*at))
            });
        let hours_covered = if first <= last {
            (last - first + 1) as f64 * self.options.window_s / 3600.0
        } else {
            0.0
        };
        BaselineStatus {
            windows_seen: self.seen,
            windows_kept: self.kept(),
            windows_recent: self.recent.len(),
            windows_sampled: self.sampled.len(),
            hours_covered,
            trainings: self.trainings,
            windows_forgotten: self.forgotten,
            floor_applies: self.floor_applies(),
            floor_threshold: self.options.floor_threshold,
            floor_scale: self.floor_scale(),
            clusters: self
                .model
                .as_ref()
                .map_or(0, |learned| learned.model.clusters.len()),
            threshold_rule: if self.tail_sets_threshold() {
                "tail"
            } else {
                "percentile"
            },
            tail_peaks: self.spot.as_ref().map_or(0, Spot::peaks),
            tail_shape: self.spot.as_ref().map(|spot| spot.gpd().shape),
            tail_scale: self.spot.as_ref().map(|spot| spot.gpd().scale),
            threshold: self.threshold(),
            restored: self.restored,
            latencies_judged: self
                .model
                .as_ref()
                .is_some_and(|learned| !learned.latencies_left_out()),
        }
    }

    fn gather(&mut self, record: &impl WindowFields) -> Result<Vec<f64>> {
        let columns = self.columns.get_or_insert_with(|| record.feature_fields());
        if columns.is_empty() {
            // Nothing to learn from: do not fix the columns on a record without numbers.
            self.columns = None;
            return Err(ModelError::InvalidRecord(
                "no numeric fields (a window record is a JSON object of numbers)".into(),
            ));
        }
        columns
            .iter()
            .map(|column| match record.field(column) {
                Some(value) if value.is_finite() => Ok(value),
                _ => Err(ModelError::InvalidRecord(format!(
                    "field `{column}`, present in the baseline's first window, is missing or \
                     not a finite number"
                ))),
            })
            .collect()
    }

    /// Keeps a window: in the recent half; the one it pushes out goes to the sample, where
    /// each window that ever left the recent half has the same chance to be.
    fn keep(&mut self, row: Vec<f64>) {
        self.recent.push_back((self.seen, row));
        if self.recent.len() <= self.options.recent_capacity() {
            return;
        }
        let Some(old) = self.recent.pop_front() else {
            return;
        };
        self.left_recent += 1;
        let capacity = self.options.sampled_capacity();
        if self.sampled.len() < capacity {
            self.sampled.push(old);
        } else if capacity > 0 {
            let slot = (self.draws.uniform() * self.left_recent as f64) as u64;
            if let Some(place) = self.sampled.get_mut(slot as usize) {
                *place = old;
            }
        }
    }

    /// Judged windows from one training to the next: as many as were seen before the last
    /// one (so each refresh of a young baseline doubles what it was learned from), at least
    /// the learning windows and [`MIN_REFRESH_SECONDS`] of windows, at most `refresh_every`.
    pub fn refresh_interval(&self) -> usize {
        let every = self.options.refresh_every.max(1);
        let doubling = usize::try_from(self.seen_at_training).unwrap_or(usize::MAX);
        let minimum = (MIN_REFRESH_SECONDS / self.options.window_s.max(1e-3)).ceil() as usize;
        doubling.max(self.learn_windows()).max(minimum).min(every)
    }

    /// Forgets the kept windows from position `start` on (an incident's onset) and the tail's
    /// episode in progress.
    fn forget_since(&mut self, start: u64) {
        while self.recent.back().is_some_and(|(at, _)| *at >= start) {
            self.recent.pop_back();
            self.forgotten += 1;
        }
        if let Some(spot) = &mut self.spot {
            spot.forget_episode();
        }
    }

    fn train(&mut self) {
        self.since_training = 0;
        self.seen_at_training = self.seen;
        let columns = self.columns.clone().unwrap_or_default();
        // In stream order, so that the tail fit's episodes are runs of windows.
        let mut rows: Vec<&Kept> = self.sampled.iter().chain(&self.recent).collect();
        rows.sort_by_key(|(at, _)| *at);
        let values = impute_latencies(&columns, &mut self.draws, &rows);
        let table = Table {
            values,
            lines: (1..=rows.len()).collect(),
            timestamps: vec![None; rows.len()],
            files: vec![(PathBuf::from("<baseline>"), 0..rows.len())],
            columns,
            labels: None,
        };
        let mature = self.seen >= self.options.floor_windows as u64;
        let floor_scale = if mature {
            self.options.mature_floor_scale
        } else {
            self.young_floor_scale()
        };
        let options = TrainOptions {
            k: self.options.train.k.min(rows.len() / 10).max(1),
            // Choosing k from the windows (off by default: `cargo xtask soak-replay
            // --choose-k-up-to` measures it, BENCHMARKS.md "Choosing k") is for a baseline
            // that has seen hours, several of its node's moods; a young one has seen minutes
            // and trains `k` clusters (chosen on the scenario recordings' 270 windows, k fell
            // to 2 and the healthy windows flagged rose from 2.3% to 7.1%).
            choose_k_up_to: self
                .options
                .train
                .choose_k_up_to
                .filter(|_| mature)
                .map(|most| most.min(rows.len() / 10).max(1)),
            floor_scale,
            // The threshold is the learner's own (tail, floor): none from training.
            min_threshold: 0.0,
            // After the first training every window kept was judged healthy (the learning
            // windows the first model called outliers are forgotten): a small cluster is an
            // hour seen rarely (a backup), not outliers.
            min_healthy_share: if self.trainings == 0 {
                self.options.train.min_healthy_share
            } else {
                0.0
            },
            // A refresh learns from windows judged healthy: a mode's long tail there is the
            // node's own (a build's CPU pressure), not an incident's (see
            // [`TrainOptions::spread_covers_tail`]).
            spread_covers_tail: self.trainings > 0,
            ..self.options.train.clone()
        };
        match Model::train(&table, &options) {
            Ok(mut model) => {
                // Saturation, error and latency signals: only a rise is evidence, and a
                // latency without a sample is left out (see [`LearnedModel::masked`]), as is
                // every latency of a young model that can judge the disk by its pressure.
                model.judge_signals();
                let young_left_out = leaves_latencies_out(mature, &model);
                let positions: Vec<usize> = model
                    .required_fields()
                    .iter()
                    .map(|f| table.columns.iter().position(|c| c == f).unwrap_or(0))
                    .collect();
                let left_out: Vec<usize> = positions
                    .iter()
                    .enumerate()
                    .filter(|&(_, &p)| {
                        is_latency(&table.columns[p])
                            && (young_left_out || rows.iter().all(|(_, row)| row[p] == 0.0))
                    })
                    .map(|(slot, _)| slot)
                    .collect();
                let learned = LearnedModel {
                    model,
                    positions,
                    left_out,
                    floor_scale,
                    mature,
                };
                // The kept windows scored as live ones are: with their own missing samples.
                // Those the new model places in a degraded cluster (only the first training
                // has any: a cluster of under `min_healthy_share` of the learning windows)
                // are the learning period's outliers, judged so by the model itself: they are
                // forgotten, as an incident judged live is, and set no tail. Kept, the first
                // refresh (which takes every cluster for healthy) learned them, and the tail's
                // first fit counted them: on the `contaminated` set the learning part's
                // incidents held the streaming threshold at 44.85 (6.87 without them,
                // EVALUATION.md).
                let mut outliers: Vec<u64> = Vec::new();
                let scores: Vec<f64> = rows
                    .iter()
                    .filter_map(|(at, row)| {
                        let inputs: Vec<f64> = learned.positions.iter().map(|&p| row[p]).collect();
                        let assessment = learned
                            .model
                            .score_inputs_partial(&inputs, &learned.masked(&inputs))
                            .ok()?;
                        if learned.model.clusters[assessment.cluster].state == HealthState::Degraded
                        {
                            outliers.push(*at);
                            return None;
                        }
                        Some(assessment.score)
                    })
                    .collect();
                if !outliers.is_empty() {
                    outliers.sort_unstable();
                    let outlier = |(at, _): &Kept| outliers.binary_search(at).is_ok();
                    self.recent.retain(|kept| !outlier(kept));
                    self.sampled.retain(|kept| !outlier(kept));
                    self.forgotten += outliers.len() as u64;
                }
                // A level low enough to leave some 50 windows over it (a few tens of
                // episodes), at most the asked quantile: a small baseline still gets a tail.
                let enough = 2.5 * crate::tail::MIN_PEAKS as f64 / scores.len().max(1) as f64;
                let spot_options = SpotOptions {
                    false_alarm: (self.options.window_s / 86_400.0).clamp(1e-9, 0.5),
                    level_quantile: self.options.spot.level_quantile.min(1.0 - enough),
                    ..self.options.spot
                };
                self.spot = Spot::initialize(&scores, spot_options);
                self.model = Some(learned);
                self.trainings += 1;
                self.last_error = None;
            }
            Err(err) => self.last_error = Some(err.to_string()),
        }
    }

    /// The model's assessment against the learner's threshold.
    fn rejudge(&self, mut assessment: Assessment) -> Assessment {
        let Some(learned) = &self.model else {
            return assessment;
        };
        let threshold = self.threshold();
        let cluster_degraded = learned
            .model
            .clusters
            .get(assessment.cluster)
            .is_some_and(|c| c.state == HealthState::Degraded);
        assessment.threshold = threshold;
        assessment.state = if assessment.score > threshold || cluster_degraded {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        };
        assessment
    }

    /// Feeds one window: a JSON window record (`&serde_json::Value`) or its named values
    /// (`BTreeMap<String, f64>`). `Ok(None)` while learning; otherwise the judgement of the
    /// current model. The first window fixes the baseline's fields; a later one without them
    /// is an error (and is not kept). Training happens inside this call, every
    /// [`BaselineLearner::refresh_interval`] windows: milliseconds for the default sizes.
    pub fn observe(&mut self, record: impl WindowFields) -> Result<Option<Assessment>> {
        self.observe_partial(record, &[])
    }

    /// [`BaselineLearner::observe`] for a window in which the fields named in `absent` are
    /// missing values (reads the collector could not make). Such a window is judged on what
    /// it has (as [`Model::score`] judges a window with missing values) and never learned
    /// from: it is not kept for a (re)training and does not fix the baseline's fields. While
    /// learning it is skipped.
    ///
    /// Only the baseline's own fields count: a missing field the baseline does not judge (not
    /// among its columns) leaves the window whole. And a field missing from every window
    /// before the fields are fixed is one this node does not have (a kernel booted without
    /// PSI reports no pressure, ever): after [`BaselineOptions::learn_windows`] such windows
    /// in a row, the fields are fixed on those the windows have, and learning goes on. Before,
    /// the learner skipped every window of such a node and never left learning.
    pub fn observe_partial(
        &mut self,
        record: impl WindowFields,
        absent: &[String],
    ) -> Result<Option<Assessment>> {
        let partial = match &self.columns {
            Some(columns) => absent.iter().any(|name| columns.contains(name)),
            None => {
                if !absent.is_empty() {
                    self.partial_before_columns += 1;
                }
                // Missing so long: never read on this node. The fields are fixed without it.
                !absent.is_empty() && self.partial_before_columns < self.learn_windows()
            }
        };
        if partial && self.unconfirmed_restore {
            // A saved field this node no longer reads (PSI off after a reboot): as a new
            // learner fixes its fields without one missing from every window, a restored
            // state whose fields no window has had for as long as learning lasts is dropped.
            self.partial_since_restore += 1;
            if self.partial_since_restore >= self.learn_windows() {
                let columns = self.columns.clone().unwrap_or_default();
                let gone: Vec<&String> = columns.iter().filter(|c| absent.contains(c)).collect();
                let reason = format!(
                    "the saved baseline's fields {} have been missing from every window since \
                     the restart: learning afresh",
                    list(&gone)
                );
                *self = Self::new(self.options.clone());
                self.restore_dropped = Some(reason);
                return self.observe_partial(record, absent);
            }
        }
        if partial {
            let Some(columns) = &self.columns else {
                return Ok(None);
            };
            let Some(learned) = &self.model else {
                return Ok(None);
            };
            let mut missing = Vec::new();
            let mut inputs = Vec::with_capacity(learned.positions.len());
            for (slot, &position) in learned.positions.iter().enumerate() {
                let name = &columns[position];
                match record.field(name) {
                    Some(value) => inputs.push(value),
                    None if absent.contains(name) => {
                        missing.push(slot);
                        inputs.push(0.0);
                    }
                    None => {
                        return Err(ModelError::InvalidRecord(format!(
                            "field `{name}`, present in the baseline's first window, is missing"
                        )));
                    }
                }
            }
            for slot in &learned.left_out {
                if !missing.contains(slot) {
                    missing.push(*slot);
                }
            }
            learned.model.leave_out_unsampled(&inputs, &mut missing);
            let assessment = learned.model.score_inputs_partial(&inputs, &missing)?;
            return Ok(Some(self.rejudge(assessment)));
        }
        if self.unconfirmed_restore {
            self.confirm_restore(&record);
        }
        let row = self.gather(&record)?;
        self.since_training += 1;
        self.seen += 1;
        let Some(learned) = &self.model else {
            self.keep(row);
            let retry_after = (self.learn_windows() / 4).max(1);
            if self.recent.len() >= self.learn_windows()
                && (self.trainings == 0 && self.last_error.is_none()
                    || self.since_training >= retry_after)
            {
                self.train();
            }
            return Ok(None);
        };
        let inputs: Vec<f64> = learned.positions.iter().map(|&p| row[p]).collect();
        let assessment = self.rejudge(
            learned
                .model
                .score_inputs_partial(&inputs, &learned.masked(&inputs))?,
        );
        // Only windows judged healthy feed the refresh and the tail, so an incident does not
        // become the new normal. (A slow drift still can: the refresh is meant to follow it.)
        let in_tail = self
            .spot
            .as_ref()
            .is_some_and(|spot| assessment.score > spot.level());
        if !in_tail {
            self.run_start = None;
            self.run_degraded = false;
        } else if self.run_start.is_none() {
            self.run_start = Some(self.seen);
        }
        if assessment.state == HealthState::Degraded {
            if let Some(start) = self.run_start {
                self.run_degraded = true;
                self.forget_since(start);
            }
        } else if self.run_degraded {
            // The rest of an incident's run, under the threshold again: not learned either.
            self.forgotten += 1;
        } else {
            if let Some(spot) = &mut self.spot {
                spot.learn(assessment.score);
            }
            self.keep(row);
        }
        if self.since_training >= self.refresh_interval() {
            self.train();
        }
        Ok(Some(assessment))
    }
}

/// A short list of names for a message, "none" when empty.
fn list(names: &[&String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let mut shown: Vec<&str> = names.iter().take(5).map(|n| n.as_str()).collect();
    let more = names.len().saturating_sub(shown.len());
    let more = (more > 0).then(|| format!("and {more} more"));
    shown.extend(more.as_deref());
    shown.join(", ")
}

#[cfg(test)]
mod saved_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod widening_tests;
