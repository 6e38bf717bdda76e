//! Detection quality against labels: point-wise and point-adjusted scores, and time to detect.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// F1 after point adjustment: a fault segment detected at any of its windows counts as
    /// detected at all of them (the usual convention for segment-level detection).
    pub point_adjusted_f1: f64,
    /// Per fault segment (consecutive labelled rows): seconds (or rows, without timestamps)
    /// from its first window to the first window flagged; `None` if never flagged.
    pub time_to_detect: Vec<Option<f64>>,
}

fn f1(tp: usize, fp: usize, fn_: usize) -> (f64, f64, f64) {
    let precision = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = if tp + fn_ == 0 {
        0.0
    } else {
        tp as f64 / (tp + fn_) as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f1)
}

/// `predicted[i]` and `truth[i]` are "fault here"; `times[i]` the row's time when known.
pub fn evaluate(predicted: &[bool], truth: &[bool], times: &[Option<f64>]) -> Evaluation {
    let count = |p: bool, t: bool| {
        predicted
            .iter()
            .zip(truth)
            .filter(|(a, b)| **a == p && **b == t)
            .count()
    };
    let (precision, recall, f1_point) =
        f1(count(true, true), count(true, false), count(false, true));

    let mut adjusted = predicted.to_vec();
    let mut time_to_detect = Vec::new();
    let mut index = 0;
    while index < truth.len() {
        if !truth[index] {
            index += 1;
            continue;
        }
        let start = index;
        while index < truth.len() && truth[index] {
            index += 1;
        }
        let segment = start..index;
        let first_hit = segment.clone().find(|&i| predicted[i]);
        if first_hit.is_some() {
            for i in segment.clone() {
                adjusted[i] = true;
            }
        }
        time_to_detect.push(first_hit.map(|hit| match (times[hit], times[start]) {
            (Some(t_hit), Some(t_start)) => t_hit - t_start,
            _ => (hit - start) as f64,
        }));
    }
    let adjusted_count = |p: bool, t: bool| {
        adjusted
            .iter()
            .zip(truth)
            .filter(|(a, b)| **a == p && **b == t)
            .count()
    };
    let (_, _, point_adjusted_f1) = f1(
        adjusted_count(true, true),
        adjusted_count(true, false),
        adjusted_count(false, true),
    );
    Evaluation {
        precision,
        recall,
        f1: f1_point,
        point_adjusted_f1,
        time_to_detect,
    }
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
        assert!((e.precision - 0.5).abs() < 1e-9);
        assert!((e.recall - 0.2).abs() < 1e-9);
        // Adjusted: the first segment counts fully (tp 3, fn 2, fp 1).
        assert!((e.point_adjusted_f1 - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-9);
        assert_eq!(e.time_to_detect, vec![Some(5.0), None]);
    }
}
