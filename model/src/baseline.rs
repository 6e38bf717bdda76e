//! The embedded default: started without a model file, the daemon learns its node's own
//! baseline from the first windows, then judges; it refreshes the baseline from windows
//! judged healthy, in bounded memory.

use std::{collections::VecDeque, path::PathBuf, time::Duration};

use crate::{
    error::{ModelError, Result},
    input::{Table, WindowFields},
    model::{Assessment, HealthState, Model, TrainOptions},
};

/// Settings of a [`BaselineLearner`], in windows.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineOptions {
    /// Windows to learn from before the first judgement.
    pub learn_windows: usize,
    /// Retrain every this many judged windows, from the healthy windows kept.
    pub refresh_every: usize,
    /// At most this many windows are kept (the oldest go first): the memory bound, about
    /// `max_kept × fields × 8` bytes.
    pub max_kept: usize,
    /// k-means settings of every (re)training. `k` is lowered to a tenth of the windows
    /// available, so a short baseline is not cut into clusters of one window.
    pub train: TrainOptions,
}

/// 5 minutes of 5 s windows: long enough to see a node's usual short cycles (cron, scrapes,
/// GC) and short enough that a new node is judged soon.
pub const DEFAULT_LEARN_WINDOWS: usize = 60;
/// 30 minutes of 5 s windows.
pub const DEFAULT_REFRESH_EVERY: usize = 360;
/// 2 hours of 5 s windows; with 60 fields, about 700 KB.
pub const DEFAULT_MAX_KEPT: usize = 1440;

impl Default for BaselineOptions {
    fn default() -> Self {
        Self {
            learn_windows: DEFAULT_LEARN_WINDOWS,
            refresh_every: DEFAULT_REFRESH_EVERY,
            max_kept: DEFAULT_MAX_KEPT,
            train: TrainOptions {
                k: 3,
                n_runs: 5,
                ..TrainOptions::default()
            },
        }
    }
}

impl BaselineOptions {
    /// The options for windows of length `window`: learn for `learn`, refresh every
    /// `refresh`, keep at most `keep` of windows. Each count is at least 1 (learning: 10).
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
            ..Self::default()
        }
    }
}

/// Learns, then judges, then refreshes. Feed it every window with [`BaselineLearner::observe`].
#[derive(Debug)]
pub struct BaselineLearner {
    options: BaselineOptions,
    /// The numeric fields of the first window: the baseline's columns for good.
    columns: Option<Vec<String>>,
    kept: VecDeque<Vec<f64>>,
    model: Option<LearnedModel>,
    /// Windows since the last (attempted) training.
    since_training: usize,
    trainings: usize,
    last_error: Option<String>,
}

#[derive(Debug)]
struct LearnedModel {
    model: Model,
    /// Position in `columns` of each of the model's required fields.
    positions: Vec<usize>,
}

impl BaselineLearner {
    pub fn new(options: BaselineOptions) -> Self {
        Self {
            kept: VecDeque::with_capacity(options.max_kept.min(4096)),
            options,
            columns: None,
            model: None,
            since_training: 0,
            trainings: 0,
            last_error: None,
        }
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
            self.learn_windows().saturating_sub(self.kept.len())
        }
    }

    /// Learning can last no longer than memory holds windows.
    fn learn_windows(&self) -> usize {
        self.options
            .learn_windows
            .min(self.options.max_kept.max(1))
            .max(1)
    }

    /// Windows held for the next refresh (never more than `max_kept`).
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// Trainings done so far (the first one and the refreshes).
    pub fn trainings(&self) -> usize {
        self.trainings
    }

    /// Why the last training failed, if it did (the learner then keeps its previous model).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
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

    fn keep(&mut self, row: Vec<f64>) {
        if self.kept.len() >= self.options.max_kept.max(1) {
            self.kept.pop_front();
        }
        self.kept.push_back(row);
    }

    fn train(&mut self) {
        self.since_training = 0;
        let columns = self.columns.clone().unwrap_or_default();
        let table = Table {
            values: self.kept.iter().flatten().copied().collect(),
            lines: (1..=self.kept.len()).collect(),
            timestamps: vec![None; self.kept.len()],
            files: vec![(PathBuf::from("<baseline>"), 0..self.kept.len())],
            columns,
            labels: None,
        };
        let options = TrainOptions {
            k: self.options.train.k.min(self.kept.len() / 10).max(1),
            ..self.options.train.clone()
        };
        match Model::train(&table, &options) {
            Ok(model) => {
                let positions = model
                    .required_fields()
                    .iter()
                    .map(|f| table.columns.iter().position(|c| c == f).unwrap_or(0))
                    .collect();
                self.model = Some(LearnedModel { model, positions });
                self.trainings += 1;
                self.last_error = None;
            }
            Err(err) => self.last_error = Some(err.to_string()),
        }
    }

    /// Feeds one window: a JSON window record (`&serde_json::Value`) or its named values
    /// (`BTreeMap<String, f64>`). `Ok(None)` while learning; otherwise the judgement of the
    /// current model. The first window fixes the baseline's fields; a later one without them
    /// is an error (and is not kept). Training happens inside this call, every
    /// `refresh_every` windows: milliseconds for the default sizes.
    pub fn observe(&mut self, record: impl WindowFields) -> Result<Option<Assessment>> {
        self.observe_partial(record, &[])
    }

    /// [`BaselineLearner::observe`] for a window in which the fields named in `absent` are
    /// missing values (reads the collector could not make). Such a window is judged on what
    /// it has (as [`Model::score`] judges a window with missing values) and never learned
    /// from: it is not kept for a (re)training and does not fix the baseline's fields. While
    /// learning it is skipped.
    pub fn observe_partial(
        &mut self,
        record: impl WindowFields,
        absent: &[String],
    ) -> Result<Option<Assessment>> {
        if !absent.is_empty() {
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
            return learned
                .model
                .score_inputs_partial(&inputs, &missing)
                .map(Some);
        }
        let row = self.gather(&record)?;
        self.since_training += 1;
        let Some(learned) = &self.model else {
            self.keep(row);
            let retry_after = (self.learn_windows() / 4).max(1);
            if self.kept.len() >= self.learn_windows()
                && (self.trainings == 0 && self.last_error.is_none()
                    || self.since_training >= retry_after)
            {
                self.train();
            }
            return Ok(None);
        };
        let inputs: Vec<f64> = learned.positions.iter().map(|&p| row[p]).collect();
        let assessment = learned.model.score_inputs(&inputs)?;
        // Only windows judged healthy feed the refresh, so an incident does not become the
        // new normal. (A slow drift still can: the refresh is meant to follow it.)
        if assessment.state == HealthState::Healthy {
            self.keep(row);
        }
        if self.since_training >= self.options.refresh_every.max(1) {
            self.train();
        }
        Ok(Some(assessment))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn window(cs: f64, psi: Option<f64>) -> BTreeMap<String, f64> {
        let mut values = BTreeMap::from([("sched_context_switches_per_s".to_string(), cs)]);
        if let Some(psi) = psi {
            values.insert("psi_cpu_some_pct".into(), psi);
        }
        values
    }

    #[test]
    fn partial_windows_are_judged_on_what_they_have_and_never_learned_from() {
        let mut learner = BaselineLearner::new(BaselineOptions {
            learn_windows: 20,
            refresh_every: 1000,
            ..BaselineOptions::default()
        });
        let absent = vec!["psi_cpu_some_pct".to_string()];
        // A partial first window neither fixes the fields nor counts toward learning.
        assert_eq!(
            learner
                .observe_partial(window(1000.0, None), &absent)
                .unwrap(),
            None
        );
        assert_eq!(learner.windows_to_go(), 20);
        for i in 0..20 {
            let wobble = f64::from(i % 5);
            assert_eq!(
                learner
                    .observe(window(1000.0 + wobble * 10.0, Some(20.0 + wobble)))
                    .unwrap(),
                None
            );
            // Partial windows while learning are skipped, not kept.
            learner.observe_partial(window(0.0, None), &absent).unwrap();
        }
        assert_eq!(learner.windows_to_go(), 0);
        assert_eq!(learner.kept(), 20, "no partial window was kept");
        let judged = learner
            .observe_partial(window(1010.0, None), &absent)
            .unwrap()
            .expect("judged");
        assert_eq!(judged.state, HealthState::Healthy, "{judged:?}");
        assert_eq!(
            learner.kept(),
            20,
            "a healthy partial window is not kept either"
        );
        let burst = learner
            .observe_partial(window(16_700_000.0, None), &absent)
            .unwrap()
            .expect("judged");
        assert_eq!(burst.state, HealthState::Degraded);
        // A field gone without being declared missing is still an error.
        assert!(learner.observe_partial(window(1010.0, None), &[]).is_err());
    }
}
