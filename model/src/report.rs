//! What the CLI prints: the training summary, `inspect`, score rows and the evaluation.

use std::{fmt::Write as _, io};

use serde::Serialize;

use crate::{
    eval::{Evaluation, HysteresisResult},
    model::{Assessment, HealthState, Model, Scaling},
};

/// Clusters, sizes, states and the features that set each cluster apart.
pub fn summary(model: &Model) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} windows, {} features, k = {} (best of {} k-means++ runs, seed {}), inertia {:.3}",
        model.training.windows,
        model.schema.features.len(),
        model.clusters.len(),
        model.training.n_runs,
        model.training.seed,
        model.training.inertia,
    );
    let _ = writeln!(
        text,
        "{}; {}",
        match model.scaler.method {
            Scaling::Robust =>
                "robust scaling (median, spread of the values clipped to their \
                                1st-99th percentiles)",
            Scaling::Standard => "standard scaling (mean, standard deviation)",
        },
        if model.training.trim > 0.0 {
            format!(
                "{} of {} training windows trimmed as incidents in the far tail (at most {:.0}%)",
                model.training.trimmed,
                model.training.windows,
                100.0 * model.training.trim
            )
        } else {
            "no trimming".to_string()
        }
    );
    // Spreads per mode: the features measured within their cluster (any cluster's spread
    // other than the scaler's 1), named so a reader sees why a score is what it is.
    let per_mode: Vec<&str> = (0..model.schema.features.len())
        .filter(|&f| {
            model.clusters.iter().any(|c| {
                c.state == HealthState::Healthy
                    && c.spread
                        .as_ref()
                        .is_some_and(|s| s.get(f).is_some_and(|v| *v != 1.0))
            })
        })
        .map(|f| model.schema.features[f].name.as_str())
        .collect();
    if !per_mode.is_empty() {
        let _ = writeln!(
            text,
            "spreads per mode (each healthy cluster of {}+ windows) in {} feature(s) whose healthy \
             modes lie apart: {}",
            crate::model::MIN_MODE_WINDOWS,
            per_mode.len(),
            per_mode.join(", ")
        );
    }
    let calibration = match &model.threshold.tail {
        Some(tail) => format!(
            "tail rule: the tail of {} healthy training scores, for a false-alarm rate of {:.2e} \
             per window asked; {} episodes over the level {:.3}, generalized Pareto shape \
             {:.3} scale {:.3}{}",
            model.threshold.calibration_windows,
            tail.false_alarm,
            tail.peaks,
            tail.level,
            tail.shape,
            tail.scale,
            match tail.whole_shape {
                Some(shape) => format!(
                    " (refitted over the median peak: over the high quantile the shape was \
                     {shape:.3}, heavy, as a mix of small and large excursions reads)"
                ),
                None => String::new(),
            }
        ),
        None => format!(
            "p{} of {} healthy training scores x {}{}",
            model.threshold.percentile,
            model.threshold.calibration_windows,
            model.threshold.margin,
            match model.threshold.tail_fallback {
                Some(rate) => format!(
                    " (percentile rule: the tail rule, asked for a false-alarm rate of \
                     {rate:.2e} per window, found fewer than {} episodes to fit a tail)",
                    crate::tail::MIN_PEAKS
                ),
                None => String::new(),
            }
        ),
    };
    let _ = match model.threshold.raised_from {
        Some(calibrated) => writeln!(
            text,
            "threshold {:.3} = the minimum asked for ({calibration} is only {calibrated:.3})",
            model.threshold.value,
        ),
        None => writeln!(
            text,
            "threshold {:.3} = {calibration}",
            model.threshold.value
        ),
    };
    let _ = writeln!(
        text,
        "{:>7}  {:>6}  {:>6}  {:<8}  top features (centroid z: degraded vs nearest healthy, \
         healthy vs training mean)",
        "cluster", "size", "share", "state"
    );
    for (index, cluster) in model.clusters.iter().enumerate() {
        let top: Vec<String> = model
            .cluster_top_features(index, 3)
            .into_iter()
            .map(|(feature, z)| format!("{feature} {z:+.2}"))
            .collect();
        let labelled = cluster
            .labelled_faults
            .map(|f| format!(" ({f} labelled faulty)"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "{index:>7}  {:>6}  {:>5.1}%  {:<8}  {}{labelled}",
            cluster.size,
            100.0 * cluster.size as f64 / model.training.windows.max(1) as f64,
            cluster.state.as_str(),
            top.join(", ")
        );
    }
    text
}

/// Everything a model holds, for people; `model inspect --json` gives the file itself.
pub fn inspect(model: &Model) -> String {
    let mut text = format!(
        "{} format version {}, trained {}{}\n",
        model.format,
        model.version,
        model.trained_at,
        if model.training.labelled {
            ", with labels"
        } else {
            ""
        }
    );
    text += &summary(model);
    let _ = writeln!(
        text,
        "\n{:<40}  {:<9}  {:>10}  {:>9}  source",
        "feature", "transform", "mean", "std"
    );
    for (index, feature) in model.schema.features.iter().enumerate() {
        let source = match &feature.source {
            crate::Source::Field { field } if *field == feature.name => "field".to_string(),
            crate::Source::Field { field } => format!("field {field}"),
            crate::Source::Fraction {
                numerator,
                denominator,
            } => format!("{} / ({})", numerator.join(" + "), denominator.join(" + ")),
            crate::Source::Ratio {
                numerator,
                denominator,
            } => format!("({numerator} + 1) / ({denominator} + 1)"),
        };
        let _ = writeln!(
            text,
            "{:<40}  {:<9}  {:>10.4}  {:>9.4}  {source}",
            feature.name,
            format!("{:?}", feature.transform).to_lowercase(),
            model.scaler.mean[index],
            model.scaler.std[index],
        );
    }
    text
}

/// Output format of `model score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreFormat {
    /// `score,cluster,state,explanation` with a header row.
    Csv,
    /// One [`Assessment`] object per line.
    JsonLines,
}

/// `feature=+1.23 feature=-0.50 …`
pub fn explanation_text(assessment: &Assessment) -> String {
    assessment
        .explanation
        .iter()
        .map(|c| format!("{}={:+.2}", c.feature, c.z))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One output row per assessment.
pub fn write_scores(
    assessments: &[Assessment],
    format: ScoreFormat,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    match format {
        ScoreFormat::Csv => {
            writeln!(out, "score,cluster,state,explanation")?;
            for a in assessments {
                writeln!(
                    out,
                    "{:.6},{},{},{}",
                    a.score,
                    a.cluster,
                    a.state.as_str(),
                    explanation_text(a)
                )?;
            }
        }
        ScoreFormat::JsonLines => {
            for a in assessments {
                serde_json::to_writer(&mut *out, a)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()
}

/// `model eval`'s result: the model's own verdicts, the node state after the default
/// hysteresis, and the hysteresis sweep.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub windows: Evaluation,
    pub hysteresis: (u32, u32),
    pub with_hysteresis: Evaluation,
    pub sweep: Vec<HysteresisResult>,
}

fn scores_line(name: &str, e: &Evaluation) -> String {
    format!(
        "{name:<28} precision {:.3}  recall {:.3}  F1 {:.3}  point-adjusted F1 {:.3}  \
         segments detected {}/{}",
        e.point_wise.precision,
        e.point_wise.recall,
        e.point_wise.f1,
        e.point_adjusted.f1,
        e.segments_detected,
        e.segments.len()
    )
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = &self.windows;
        writeln!(
            f,
            "{} windows, {} labelled faulty, {} flagged",
            w.rows, w.fault_rows, w.flagged_rows
        )?;
        writeln!(f, "{}", scores_line("per window:", w))?;
        let (enter, leave) = self.hysteresis;
        writeln!(
            f,
            "{}",
            scores_line(
                &format!("node state (enter {enter}, leave {leave}):"),
                &self.with_hysteresis
            )
        )?;
        writeln!(f, "\nfault segment (rows)   detected after (windows, s)")?;
        for (own, debounced) in w.segments.iter().zip(&self.with_hysteresis.segments) {
            let describe =
                |s: &crate::eval::Segment| match (s.detected_after_windows, s.detected_after_s) {
                    (Some(w), Some(s)) => format!("{w} ({s:.0} s)"),
                    (Some(w), None) => format!("{w}"),
                    _ => "never".into(),
                };
            writeln!(
                f,
                "{:>9}..{:<9}  window: {:<14} node state: {}",
                own.rows.start,
                own.rows.end,
                describe(own),
                describe(debounced)
            )?;
        }
        writeln!(
            f,
            "\nhysteresis sweep (enter after N anomalous, leave after M normal windows)"
        )?;
        writeln!(
            f,
            "{:>2} {:>2}  {:>6}  {:>8}  {:>8}  {:>12}  {:>15}",
            "N", "M", "F1", "PA-F1", "detected", "mean delay", "false incidents"
        )?;
        for r in &self.sweep {
            writeln!(
                f,
                "{:>2} {:>2}  {:>6.3}  {:>8.3}  {:>8}  {:>12}  {:>15}",
                r.enter_after,
                r.leave_after,
                r.point_wise_f1,
                r.point_adjusted_f1,
                r.segments_detected,
                r.mean_windows_to_detect
                    .map_or("-".into(), |d| format!("{d:.2} windows")),
                r.false_incidents
            )?;
        }
        Ok(())
    }
}

/// Builds the evaluation report from per-window verdicts.
pub fn eval_report(
    assessments: &[Assessment],
    truth: &[bool],
    times: &[Option<f64>],
    hysteresis: (u32, u32),
) -> EvalReport {
    let anomalous: Vec<bool> = assessments
        .iter()
        .map(|a| a.state == HealthState::Degraded)
        .collect();
    let debounced = crate::eval::debounce(&anomalous, hysteresis.0, hysteresis.1);
    EvalReport {
        windows: crate::eval::evaluate(&anomalous, truth, times),
        hysteresis,
        with_hysteresis: crate::eval::evaluate(&debounced, truth, times),
        sweep: crate::eval::sweep_hysteresis(&anomalous, truth, 4),
    }
}
