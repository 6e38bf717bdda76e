//! Detection quality against labels: point-wise and point-adjusted scores, time to detect per
//! fault segment, and the effect of hysteresis.

use std::ops::Range;

use serde::Serialize;

use crate::{hysteresis::Hysteresis, model::HealthState};

/// Precision, recall and F1 of one way of counting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Scores {
    /// Point-wise scores of `predicted` against `truth` (pairs beyond the shorter are ignored).
    pub fn of(predicted: &[bool], truth: &[bool]) -> Self {
        let count = |p: bool, t: bool| {
            predicted
                .iter()
                .zip(truth)
                .filter(|(a, b)| **a == p && **b == t)
                .count() as f64
        };
        let (tp, fp, fn_) = (count(true, true), count(true, false), count(false, true));
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f1,
        }
    }
}

/// One labelled fault segment (a run of consecutive fault rows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// First and one-past-last row (0-based).
    pub rows: Range<usize>,
    /// Windows from the segment's first to its first flagged one (0: flagged at once).
    pub detected_after_windows: Option<usize>,
    /// The same in seconds, when rows have timestamps.
    pub detected_after_s: Option<f64>,
}

/// How predictions compare with labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub rows: usize,
    pub fault_rows: usize,
    pub flagged_rows: usize,
    /// Every row counted on its own.
    pub point_wise: Scores,
    /// A fault segment flagged at any of its rows counts as flagged at all of them (the usual
    /// convention for segment detection; it rewards detecting, not covering, a fault).
    pub point_adjusted: Scores,
    pub segments: Vec<Segment>,
    pub segments_detected: usize,
}

/// Runs of consecutive `true`.
pub fn fault_segments(truth: &[bool]) -> Vec<Range<usize>> {
    let mut segments = Vec::new();
    let mut index = 0;
    while index < truth.len() {
        if truth[index] {
            let start = index;
            while index < truth.len() && truth[index] {
                index += 1;
            }
            segments.push(start..index);
        } else {
            index += 1;
        }
    }
    segments
}

/// `predicted[i]` and `truth[i]`: "fault here"; `times[i]`: the row's time, when known.
pub fn evaluate(predicted: &[bool], truth: &[bool], times: &[Option<f64>]) -> Evaluation {
    let mut adjusted = predicted.to_vec();
    let segments: Vec<Segment> = fault_segments(truth)
        .into_iter()
        .map(|rows| {
            let first_hit = rows.clone().find(|&i| predicted[i]);
            if first_hit.is_some() {
                adjusted[rows.clone()].fill(true);
            }
            let detected_after_s = first_hit
                .and_then(|hit| Some(times.get(hit).copied()?? - times.get(rows.start).copied()??));
            Segment {
                detected_after_windows: first_hit.map(|hit| hit - rows.start),
                detected_after_s,
                rows,
            }
        })
        .collect();
    Evaluation {
        rows: truth.len(),
        fault_rows: truth.iter().filter(|t| **t).count(),
        flagged_rows: predicted.iter().filter(|p| **p).count(),
        point_wise: Scores::of(predicted, truth),
        point_adjusted: Scores::of(&adjusted, truth),
        segments_detected: segments
            .iter()
            .filter(|s| s.detected_after_windows.is_some())
            .count(),
        segments,
    }
}

/// The node's state after hysteresis, per row.
pub fn debounce(anomalous: &[bool], enter_after: u32, leave_after: u32) -> Vec<bool> {
    let mut hysteresis = Hysteresis::new(enter_after, leave_after);
    anomalous
        .iter()
        .map(|&a| hysteresis.update(a) == HealthState::Degraded)
        .collect()
}

/// One setting of the hysteresis sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HysteresisResult {
    pub enter_after: u32,
    pub leave_after: u32,
    pub point_wise_f1: f64,
    pub point_adjusted_f1: f64,
    pub segments_detected: usize,
    /// Mean over detected segments of windows from fault start to "degraded".
    pub mean_windows_to_detect: Option<f64>,
    /// Degraded episodes that overlap no labelled fault: pages that wake someone for nothing.
    pub false_incidents: usize,
}

/// Evaluates the node's state for every `enter_after`, `leave_after` in `1..=max`.
pub fn sweep_hysteresis(anomalous: &[bool], truth: &[bool], max: u32) -> Vec<HysteresisResult> {
    let mut results = Vec::new();
    for enter_after in 1..=max {
        for leave_after in 1..=max {
            let state = debounce(anomalous, enter_after, leave_after);
            let evaluation = evaluate(&state, truth, &vec![None; truth.len()]);
            let delays: Vec<f64> = evaluation
                .segments
                .iter()
                .filter_map(|s| s.detected_after_windows.map(|w| w as f64))
                .collect();
            let false_incidents = fault_segments(&state)
                .into_iter()
                .filter(|episode| !truth[episode.clone()].iter().any(|t| *t))
                .count();
            results.push(HysteresisResult {
                enter_after,
                leave_after,
                point_wise_f1: evaluation.point_wise.f1,
                point_adjusted_f1: evaluation.point_adjusted.f1,
                segments_detected: evaluation.segments_detected,
                mean_windows_to_detect: (!delays.is_empty())
                    .then(|| delays.iter().sum::<f64>() / delays.len() as f64),
                false_incidents,
            });
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_wise_point_adjusted_and_time_to_detect() {
        let truth = [false, true, true, true, false, true, true, false];
        let predicted = [false, false, true, false, true, false, false, false];
        let times: Vec<Option<f64>> = (0..8).map(|i| Some(i as f64 * 5.0)).collect();
        let e = evaluate(&predicted, &truth, &times);
        // tp 1, fp 1, fn 4.
        assert!((e.point_wise.precision - 0.5).abs() < 1e-9);
        assert!((e.point_wise.recall - 0.2).abs() < 1e-9);
        // Adjusted: the first segment counts fully (tp 3, fp 1, fn 2).
        assert!((e.point_adjusted.f1 - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-9);
        let detected: Vec<Option<f64>> = e.segments.iter().map(|s| s.detected_after_s).collect();
        assert_eq!(detected, vec![Some(5.0), None]);
        assert_eq!(e.segments_detected, 1);
    }

    #[test]
    fn hysteresis_sweep_counts_false_incidents_and_delay() {
        let truth = [false, false, true, true, true, true, false, false, false];
        let anomalous = [true, false, true, true, true, true, false, false, false];
        let results = sweep_hysteresis(&anomalous, &truth, 2);
        let one = &results[0];
        assert_eq!((one.enter_after, one.leave_after), (1, 1));
        assert_eq!(one.false_incidents, 1, "the lone first window");
        assert_eq!(one.mean_windows_to_detect, Some(0.0));
        let two = results
            .iter()
            .find(|r| r.enter_after == 2 && r.leave_after == 1)
            .unwrap();
        assert_eq!(two.false_incidents, 0);
        assert_eq!(two.mean_windows_to_detect, Some(1.0));
    }
}
