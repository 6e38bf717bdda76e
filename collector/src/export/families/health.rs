//! The node's health: state, score, threshold, rank, transitions, cluster, explanation, and
//! the model in use.

use prometheus_client::{encoding::DescriptorEncoder, registry::Unit};

use super::{counters, gauges};
use crate::export::ExporterState;

fn unix_seconds(time: std::time::SystemTime) -> f64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// `nodestate_state` … `nodestate_model_info`.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    let health = &state.health;
    let none: Vec<(&str, String)> = Vec::new();
    let states: Vec<_> = crate::judge::NodeState::ALL
        .iter()
        .map(|s| {
            (
                vec![("state", s.as_str().to_string())],
                f64::from(u8::from(health.state == *s)),
            )
        })
        .collect();
    gauges(
        encoder,
        "nodestate_state",
        "1 for the node's current health state, 0 for the others",
        None,
        &states,
    )?;
    gauges(
        encoder,
        "nodestate_anomaly_score",
        "Distance of the last window from the nearest healthy centroid (scaled units)",
        None,
        &[(none.clone(), health.score)],
    )?;
    gauges(
        encoder,
        "nodestate_anomaly_threshold",
        "Score above which a window counts as anomalous",
        None,
        &[(none.clone(), health.threshold)],
    )?;
    gauges(
        encoder,
        "nodestate_rank",
        "The node's rank for schedulers, 0-100, higher is healthier: healthy 60-100, learning 50, degraded 0-40",
        None,
        &[(none.clone(), health.rank())],
    )?;
    gauges(
        encoder,
        "nodestate_ready",
        "1 when the daemon is ready (kernel programs attached and a model or learned baseline in place, as /readyz answers), else 0",
        None,
        &[(none.clone(), f64::from(u8::from(state.ready().is_ok())))],
    )?;
    counters(
        encoder,
        "nodestate_state_transitions",
        "Changes of the health state since the daemon started",
        None,
        &[(none.clone(), health.transitions as f64)],
    )?;
    gauges(
        encoder,
        "nodestate_state_last_change_timestamp",
        "When the health state last changed (or the daemon started), seconds since the Unix epoch",
        Some(&Unit::Seconds),
        &[(none.clone(), unix_seconds(health.since_system))],
    )?;
    gauges(
        encoder,
        "nodestate_cluster",
        "Model cluster of the last window (-1 when there is none)",
        None,
        &[(none.clone(), health.cluster.map_or(-1.0, |c| c as f64))],
    )?;
    let explanation: Vec<_> = health
        .explanation
        .iter()
        .enumerate()
        .map(|(rank, (feature, z))| {
            (
                vec![
                    ("rank", (rank + 1).to_string()),
                    ("feature", feature.clone()),
                ],
                *z,
            )
        })
        .collect();
    gauges(
        encoder,
        "nodestate_explanation_z",
        "Top features pushing the last window away from healthy, by rank, as z-distance",
        None,
        &explanation,
    )?;
    counters(
        encoder,
        "nodestate_model_reload_failures",
        "SIGHUP reloads that refused the model file and kept the old model (the log says why)",
        None,
        &[(none.clone(), state.model_reload_failures as f64)],
    )?;
    if let Some(model) = &state.model {
        gauges(
            encoder,
            "nodestate_model_info",
            "The model in use",
            None,
            &[(
                vec![
                    ("source", model.source.clone()),
                    ("version", model.version.clone()),
                    ("k", model.k.to_string()),
                ],
                1.0,
            )],
        )?;
        // The training time is a value, not a label: a label would start a new series at
        // every baseline refresh. A model without a readable time has no series.
        if let Ok(trained) = humantime::parse_rfc3339_weak(&model.trained_at) {
            gauges(
                encoder,
                "nodestate_model_trained_timestamp",
                "When the model in use was trained, seconds since the Unix epoch",
                Some(&Unit::Seconds),
                &[(none.clone(), unix_seconds(trained))],
            )?;
        }
        if let Some(baseline) = &model.baseline {
            for (name, help, value) in [
                (
                    "nodestate_baseline_windows_seen",
                    "Windows the learned baseline has seen since the daemon started",
                    baseline.windows_seen as f64,
                ),
                (
                    "nodestate_baseline_windows_kept",
                    "Windows the learned baseline keeps for its refresh (recent and sampled)",
                    baseline.windows_kept as f64,
                ),
                // In seconds, Prometheus' base unit (promtool's lint refuses hours).
                (
                    "nodestate_baseline_covered_seconds",
                    "Time from the oldest window the learned baseline keeps to the newest, seconds",
                    baseline.hours_covered * 3600.0,
                ),
                (
                    "nodestate_baseline_windows_forgotten",
                    "Windows judged healthy that the learned baseline did not learn from: runs \
                     over its tail's level that had a window judged anomalous (an incident's \
                     onset and end)",
                    baseline.windows_forgotten as f64,
                ),
                (
                    "nodestate_baseline_floor_applies",
                    "1 while the learned baseline's threshold is held at its conservative floor",
                    f64::from(u8::from(baseline.floor_applies)),
                ),
            ] {
                gauges(encoder, name, help, None, &[(none.clone(), value)])?;
            }
        }
        if let Some(saved) = &model.saved_baseline {
            gauges(
                encoder,
                "nodestate_baseline_restored",
                "1 while the learned baseline goes on from the state saved before a restart \
                 (--baseline-state), 0 when it learned afresh",
                None,
                &[(none.clone(), f64::from(u8::from(saved.restored)))],
            )?;
            counters(
                encoder,
                "nodestate_baseline_saves",
                "States of the learned baseline handed to its file (--baseline-state), by \
                 result: written, failed (the log says why; the previous file stays) or \
                 skipped (replaced by a newer state before the writer got to it)",
                None,
                &[
                    (vec![("result", "written".to_string())], saved.saves as f64),
                    (
                        vec![("result", "failed".to_string())],
                        saved.save_errors as f64,
                    ),
                    (
                        vec![("result", "skipped".to_string())],
                        saved.saves_skipped as f64,
                    ),
                ],
            )?;
        }
    }
    Ok(())
}
