//! The learned baseline's model and its training rows: what a [`super::BaselineLearner`]
//! judges with (the latencies it leaves out: never sampled, or judged by a young model on a
//! node with I/O pressure) and how it fills a latency a window had no sample of before
//! k-means sees it.

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
    /// Of those (in the same order), the latencies left out of every score, as missing
    /// values are:
    /// - those no kept window had a sample of (0 in every one), until a refresh has seen
    ///   them: a latency with no history has no normal to be compared with, and a node's
    ///   first fsync would otherwise be "infinitely" slower than none;
    /// - every latency of a young model (trained before `floor_windows` windows were seen)
    ///   that judges I/O pressure: see [`leaves_latencies_out`].
    pub(super) left_out: Vec<usize>,
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
        let mut masked = self.left_out.clone();
        self.model.leave_out_unsampled(inputs, &mut masked);
        masked
    }

    /// Its latencies are all left out: young, it judges the disk by its pressure.
    pub(super) fn latencies_left_out(&self) -> bool {
        leaves_latencies_out(self.mature, &self.model)
    }
}

/// Whether `model` leaves its latencies out: while young (not `mature`), when it judges I/O
/// pressure (`psi_io_*`), which says whether tasks waited on the disk.
///
/// A young model has seen minutes of its node, not the node's bulk writers: under a backup's
/// writeback the disk's p99 rose from 1-3 ms to 60 ms while hardly a task waited
/// (`psi_io_some_pct` z = +1.4), and `block_latency_p99_us` (z = +3.0 to +4.7 over the
/// young floors) led most of the young baselines' episodes in soaks 15-17, on their first
/// backups and builds (BENCHMARKS.md). A latency that harms is waited on, and a wait is
/// pressure: in every recorded disk fault (a slow disk, a throttled one, a noisy neighbour)
/// `psi_io_some_pct` rose from about 1 % to 50-76 %. So until the model is trained on a
/// node's hours, pressure judges the disk and the latencies are left out; a mature model
/// judges them again against the node's own spreads. A node without I/O pressure (a kernel
/// booted without PSI) keeps its latencies: they are all it has.
pub(super) fn leaves_latencies_out(mature: bool, model: &Model) -> bool {
    !mature
        && model
            .required_fields()
            .iter()
            .any(|field| field.starts_with("psi_io_"))
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
