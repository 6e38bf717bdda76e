//! The streaming column of the calibration table: the daemon's on-node learner
//! ([`BaselineLearner`]: a model learned from the first windows, refreshed from the windows it
//! judged healthy, a DSPOT tail between refreshes) fed a set's training part, then its test
//! windows in order, each window's verdict taken as it comes. A static model cannot follow a
//! drift beyond what it was trained on; this column shows whether the learner does, and
//! what it costs elsewhere.
//!
//! Nothing here is tuned: the learner runs at its defaults except the two things the data
//! fixes (how many windows it learns from: the whole training part; the window length, which
//! sets the tail's one-false-episode-a-day rate) and the fields (those the "after" model
//! judges on the same set, so the two columns compare the same inputs).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use model::{BaselineLearner, BaselineOptions, Model, Table, TrainOptions, model::HealthState};

use super::{Judged, judged, judged_after_hysteresis};

/// What the learner's verdicts on the test windows give.
pub struct Streamed {
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    /// Best F1 of any single threshold on the scores the learner gave the test windows
    /// (windows it placed in a degraded cluster stay flagged): an upper bound, not a result.
    pub best: f64,
    /// Share of the healthy test windows flagged.
    pub false_alarms: f64,
    /// The learner's threshold after the last test window, and the trainings it made
    /// (the first one and the refreshes).
    pub threshold: f64,
    pub trainings: usize,
    /// The clusters of the model judging at the end (k, chosen from the windows).
    pub clusters: usize,
    /// The same verdicts after the daemon's hysteresis, and their upper bound.
    pub daemon: Judged,
}

/// The length of a window, in seconds: the median gap between consecutive timestamps
/// (pooled recordings have a long gap between runs; the median does not see it).
pub fn window_length(table: &Table) -> Option<f64> {
    let stamps: Vec<f64> = table.timestamps.iter().flatten().copied().collect();
    let mut gaps: Vec<f64> = stamps
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .filter(|gap| *gap > 0.0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    Some(gaps[gaps.len() / 2])
}

/// Row `index` of `table`, as the named values of the `fields` (columns `positions`).
fn window(
    table: &Table,
    index: usize,
    fields: &[String],
    positions: &[usize],
) -> BTreeMap<String, f64> {
    let row = table.row(index);
    fields
        .iter()
        .zip(positions)
        .map(|(field, &position)| (field.clone(), row[position]))
        .collect()
}

/// Where each of `fields` is among `table`'s columns.
fn positions(table: &Table, fields: &[String]) -> anyhow::Result<Vec<usize>> {
    fields
        .iter()
        .map(|field| {
            table
                .columns
                .iter()
                .position(|c| c == field)
                .with_context(|| format!("the windows have no `{field}` field"))
        })
        .collect()
}

/// Per cluster of the learner's current model: is it degraded?
fn degraded_clusters(learner: &BaselineLearner) -> Vec<bool> {
    learner.model().map_or_else(Vec::new, |model| {
        model
            .clusters
            .iter()
            .map(|c| c.state == HealthState::Degraded)
            .collect()
    })
}

/// Feeds `train`'s windows to a learner at its defaults (learning from all of them), then
/// every window of `tests` in order. `after` is the static model of the same set: the
/// learner reads its fields, and `features` are its feature patterns (empty: every feature).
pub fn stream(
    train: &Table,
    tests: &[(Table, Vec<bool>)],
    after: &Model,
    features: &[String],
) -> anyhow::Result<Streamed> {
    let defaults = BaselineOptions::default();
    if train.len() > defaults.max_kept {
        bail!(
            "{} training windows: more than the learner keeps ({}), it could not learn from \
             all of them",
            train.len(),
            defaults.max_kept
        );
    }
    let options = BaselineOptions {
        learn_windows: train.len(),
        window_s: window_length(train).context("the training windows have no timestamps")?,
        train: TrainOptions {
            features: features.to_vec(),
            ..defaults.train.clone()
        },
        ..defaults
    };
    let fields = after.required_fields().to_vec();
    let mut learner = BaselineLearner::new(options);
    let columns = positions(train, &fields)?;
    for index in 0..train.len() {
        if let Some(judged) = learner.observe(window(train, index, &fields, &columns))? {
            bail!("the learner judged training window {index} ({judged:?}) while learning");
        }
    }
    if learner.model().is_none() {
        bail!(
            "the learner did not learn from {} windows: {}",
            train.len(),
            learner.last_error().unwrap_or("no reason given")
        );
    }
    // The cluster states of the model that judges the next window: a refresh happens after
    // a window is judged, so they are read again only when a training was made.
    let mut degraded = degraded_clusters(&learner);
    let mut trainings = learner.trainings();
    let (mut own, mut truth, mut scored) = (Vec::new(), Vec::new(), Vec::new());
    let mut runs = Vec::new();
    for (table, labels) in tests {
        runs.push(labels.len().min(table.len()));
        let columns = positions(table, &fields)?;
        for (index, &label) in labels.iter().enumerate().take(table.len()) {
            let assessment = learner
                .observe(window(table, index, &fields, &columns))?
                .context("the learner stopped judging")?;
            let in_degraded = degraded.get(assessment.cluster).copied().unwrap_or(false);
            let flagged = assessment.state == HealthState::Degraded;
            // The sweep below relies on the learner's rule: degraded = over its threshold
            // or nearest a degraded cluster. Checked, not assumed.
            if flagged != (assessment.score > assessment.threshold || in_degraded) {
                bail!("a verdict the learner's rule does not explain: {assessment:?}");
            }
            own.push(flagged);
            truth.push(label);
            scored.push((assessment.score, in_degraded, label));
            if learner.trainings() != trainings {
                trainings = learner.trainings();
                degraded = degraded_clusters(&learner);
            }
        }
    }
    let daemon = judged_after_hysteresis(&own, &truth, &scored, &runs);
    let Judged {
        precision,
        recall,
        f1,
        false_alarms,
        best,
    } = judged(&own, &truth, scored);
    Ok(Streamed {
        f1,
        precision,
        recall,
        best,
        false_alarms,
        threshold: learner.threshold(),
        trainings: learner.trainings(),
        clusters: learner.status().clusters,
        daemon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(stamps: &[Option<f64>]) -> Table {
        Table {
            columns: vec!["x".into()],
            values: vec![1.0; stamps.len()],
            lines: (1..=stamps.len()).collect(),
            timestamps: stamps.to_vec(),
            ..Table::default()
        }
    }

    /// `rows` windows of 5 s: pressure around 5% and latency around 400 µs; the windows
    /// in `faulty` are a stall (pressure 60%, latency 50 ms).
    fn windows(noise: &mut model::synthetic::Noise, rows: usize, faulty: &[usize]) -> Table {
        let mut values = Vec::new();
        for row in 0..rows {
            let stall = faulty.contains(&row);
            values.push(if stall { 60.0 } else { noise.around(5.0, 0.1) });
            values.push(if stall {
                50_000.0
            } else {
                noise.around(400.0, 0.1)
            });
        }
        Table {
            columns: vec!["psi_io_some_pct".into(), "block_latency_p99_us".into()],
            values,
            lines: (1..=rows).collect(),
            timestamps: (0..rows).map(|row| Some(5.0 * row as f64)).collect(),
            ..Table::default()
        }
    }

    #[test]
    fn the_learner_flags_a_stall_it_never_saw_and_nothing_else() {
        let mut noise = model::synthetic::Noise::new(5);
        let train = windows(&mut noise, 300, &[]);
        let faulty: Vec<usize> = (100..110).collect();
        let test = windows(&mut noise, 200, &faulty);
        let labels: Vec<bool> = (0..200).map(|row| faulty.contains(&row)).collect();
        let after = Model::train(&train, &TrainOptions::default()).unwrap();
        let streamed = stream(&train, &[(test, labels)], &after, &[]).unwrap();
        assert_eq!(streamed.f1, 1.0, "recall {}", streamed.recall);
        assert_eq!(streamed.best, 1.0);
        assert_eq!(streamed.false_alarms, 0.0);
        // Learned once; no refresh within 200 windows (one every 360).
        assert_eq!(streamed.trainings, 1);
    }

    #[test]
    fn the_window_length_is_the_median_gap_and_ignores_the_gaps_between_runs() {
        // Two runs of 2 s windows, an hour apart.
        let stamps = [0.0, 2.0, 4.0, 6.0, 3606.0, 3608.0, 3610.1]
            .map(Some)
            .to_vec();
        assert_eq!(window_length(&table(&stamps)), Some(2.0));
        assert_eq!(window_length(&table(&[Some(5.0)])), None);
        assert_eq!(window_length(&table(&[None, None, None])), None);
    }
}
