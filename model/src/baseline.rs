//! The embedded default: with no model file, learn this node's own baseline from its first
//! windows, then judge; refresh the baseline from windows judged healthy, in bounded memory.

use std::collections::{BTreeMap, VecDeque};

use crate::{
    input::Row,
    model::{Assessment, HealthState, Model, TrainOptions},
};

#[derive(Debug, Clone)]
pub struct BaselineOptions {
    /// Windows to learn from before judging (default: 3 minutes of 5 s windows).
    pub learn_windows: usize,
    /// Retrain every this many windows from the healthy ones kept (default: 30 minutes).
    pub refresh_every: usize,
    /// At most this many healthy windows are kept for refreshing (default: 6 hours of 5 s
    /// windows is too many for a node daemon; 720 windows is one hour).
    pub max_kept: usize,
    pub k: usize,
    pub seed: u64,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        Self {
            learn_windows: 36,
            refresh_every: 360,
            max_kept: 720,
            k: 3,
            seed: 42,
        }
    }
}

/// Learns, then judges, then refreshes.
#[derive(Debug)]
pub struct BaselineLearner {
    options: BaselineOptions,
    kept: VecDeque<Row>,
    model: Option<Model>,
    since_refresh: usize,
}

impl BaselineLearner {
    pub fn new(options: BaselineOptions) -> Self {
        Self {
            kept: VecDeque::with_capacity(options.max_kept.min(4096)),
            options,
            model: None,
            since_refresh: 0,
        }
    }

    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    /// Windows still needed before the first judgement.
    pub fn windows_to_go(&self) -> usize {
        self.options.learn_windows.saturating_sub(self.kept.len())
    }

    fn keep(&mut self, values: BTreeMap<String, f64>) {
        if self.kept.len() == self.options.max_kept {
            self.kept.pop_front();
        }
        self.kept.push_back(Row {
            values,
            timestamp_s: None,
            label: None,
            line: 0,
        });
    }

    fn fit(&mut self) -> Result<(), String> {
        let rows: Vec<Row> = self.kept.iter().cloned().collect();
        let options = TrainOptions {
            k: self.options.k.min(rows.len() / 10).max(1),
            seed: self.options.seed,
            ..TrainOptions::default()
        };
        let mut model = Model::train(&rows, &options).map_err(|err| err.to_string())?;
        // Everything the baseline learned from was (judged) healthy: no outlier clusters.
        for state in &mut model.cluster_states {
            *state = HealthState::Healthy;
        }
        self.model = Some(model);
        self.since_refresh = 0;
        Ok(())
    }

    /// Feeds one window. `None` while learning; otherwise the model's judgement. Errors
    /// (a training failure) leave the learner as it was and are returned as text.
    pub fn observe(&mut self, values: BTreeMap<String, f64>) -> Result<Option<Assessment>, String> {
        let Some(model) = &self.model else {
            self.keep(values);
            if self.kept.len() >= self.options.learn_windows {
                self.fit()?;
            }
            return Ok(None);
        };
        let assessment = model.assess(&values)?;
        if assessment.state == HealthState::Healthy {
            self.keep(values);
        }
        self.since_refresh += 1;
        if self.since_refresh >= self.options.refresh_every {
            self.fit()?;
        }
        Ok(Some(assessment))
    }
}
