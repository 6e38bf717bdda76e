//! The learned baseline's model and its training rows: what a [`super::BaselineLearner`]
//! judges with (the latencies it leaves out) and how it fills a latency a window had no
//! sample of before k-means sees it.

use crate::{model::Model, signals::is_latency};

/// splitmix64: the reservoir's choices, seeded, so the same windows keep the same sample.
#[derive(Debug, Clone)]
pub(super) struct Draws(pub(super) u64);

impl Draws {
    /// Uniform in [0, 1).
    pub(super) fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A window kept for retraining, with its position in the stream (windows seen before it).
pub(super) type Kept = (u64, Vec<f64>);

#[derive(Debug, Clone)]
pub(super) struct LearnedModel {
    pub(super) model: Model,
    /// Position in `columns` of each of the model's required fields.
    pub(super) positions: Vec<usize>,
    /// Of those (in the same order), the latencies no kept window had a sample of (0 in
    /// every one): a latency with no history has no normal to be compared with, and a
    /// node's first fsync would otherwise be "infinitely" slower than none. They are left
    /// out of the score, as missing values are, until a refresh has seen them.
    pub(super) unseen: Vec<usize>,
    /// The floor scale it was trained with.
    pub(super) floor_scale: f64,
    /// Trained once `floor_windows` windows were seen (with the mature floors).
    pub(super) mature: bool,
}

impl LearnedModel {
    /// The slots of `inputs` left out of its score: the latencies never sampled in the kept
    /// windows, and those with no sample in this window. 0 is not a latency but "nothing
    /// happened": a node whose only fsyncs are an occasional commit has mostly zeros, and
    /// against that normal its next 8 ms fsync was z = +6.7, a false alarm in the soak. The
    /// samples are compared with the samples. If that would leave nothing to score (a
    /// baseline of latencies only, in an idle window), the zeros stay in. The rule is the
    /// model's own ([`Model::judge_signals`]), so the built-in model and the learned baseline
    /// leave out the same latencies.
    pub(super) fn masked(&self, inputs: &[f64]) -> Vec<usize> {
        let mut masked = self.unseen.clone();
        self.model.leave_out_unsampled(inputs, &mut masked);
        masked
    }
}

/// The kept rows' values for a training, row after row. A latency of 0 is a window without a
/// sample of it (see [`LearnedModel::masked`]); k-means needs a value there, so it takes the
/// sample of another kept window, drawn at random (hot-deck imputation): the feature's spread
/// is then the samples' own, not squeezed by a repeated value or widened by zeros. A latency
/// never sampled stays 0 (and unseen).
pub(super) fn impute_latencies(columns: &[String], draws: &mut Draws, rows: &[&Kept]) -> Vec<f64> {
    let mut values: Vec<f64> = rows.iter().flat_map(|(_, row)| row).copied().collect();
    let width = columns.len();
    for (p, column) in columns.iter().enumerate() {
        if !is_latency(column) {
            continue;
        }
        let samples: Vec<f64> = rows
            .iter()
            .map(|(_, row)| row[p])
            .filter(|v| *v != 0.0)
            .collect();
        if samples.is_empty() {
            continue;
        }
        for r in 0..rows.len() {
            if values[r * width + p] == 0.0 {
                let pick = (draws.uniform() * samples.len() as f64) as usize;
                values[r * width + p] = samples[pick.min(samples.len() - 1)];
            }
        }
    }
    values
}
