//! Faults carried onto a node's own windows (`cargo xtask soak-replay --faults`): each
//! recorded scenario's fault (`datasets/`) as the change it made to the judged signals, the
//! median over its fault windows less the median over the healthy windows before it (a
//! latency, which does not add, as the fault's own median), applied to windows the node
//! recorded and judged by the baseline the replay left, a copy of it for each fault.
//!
//! A soak shows that a learned baseline pages on nothing benign; this asks whether it would
//! still page on a fault. It is not a fault on this node: the changes were measured on the
//! scenario VM (2 s windows, its own background) and arrive here as rates and levels, so read
//! a fault found or missed as the baseline's reach, not as a detection rate.

use anyhow::Context as _;
use model::signals::{is_judged, is_latency};
use serde_json::Value;

use crate::{
    evaluate,
    scenario::Kind,
    util::{median, workspace_root},
};

/// How a fault moved one judged field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// A rate or a level: this much more (the result never under 0, a percentage never over
    /// 100).
    Add(f64),
    /// A latency: at least this (a window slower already stays as it was).
    AtLeast(f64),
}

/// One scenario's fault as changes to the judged fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub scenario: &'static str,
    /// How long the fault lasted in its recording (the windows at least half inside it).
    pub seconds: f64,
    pub changes: Vec<(String, Change)>,
}

/// The signature of the fault in `records` (in time order; `truth[i]`: window `i` is the
/// fault's). The healthy windows are those before the fault's first. `None` without a fault
/// window or a healthy one. Fields that did not move are left out.
pub fn signature(scenario: &'static str, records: &[Value], truth: &[bool]) -> Option<Signature> {
    let first_fault = truth.iter().position(|&t| t)?;
    if first_fault == 0 {
        return None;
    }
    let healthy = &records[..first_fault];
    let fault: Vec<&Value> = records
        .iter()
        .zip(truth)
        .filter(|(_, t)| **t)
        .map(|(r, _)| r)
        .collect();
    // The median of a field over the rows that could read it; `None` if none could.
    let median_of = |rows: &[&Value], field: &str| -> Option<f64> {
        let values: Vec<f64> = rows.iter().filter_map(|r| r[field].as_f64()).collect();
        (!values.is_empty()).then(|| median(&values))
    };
    let healthy: Vec<&Value> = healthy.iter().collect();
    let fields: Vec<&String> = records[0]
        .as_object()?
        .keys()
        .filter(|name| is_judged(name))
        .collect();
    let mut changes = Vec::new();
    for field in fields {
        let (Some(during), Some(before)) = (median_of(&fault, field), median_of(&healthy, field))
        else {
            continue;
        };
        let change = if is_latency(field) {
            Change::AtLeast(during)
        } else {
            Change::Add(during - before)
        };
        let moved = match change {
            Change::Add(delta) => delta != 0.0,
            Change::AtLeast(level) => level > before,
        };
        if moved {
            changes.push((field.clone(), change));
        }
    }
    let window_s = |r: &Value| r["window_s"].as_f64().unwrap_or(0.0);
    Some(Signature {
        scenario,
        seconds: fault.iter().map(|r| window_s(r)).sum(),
        changes,
    })
}

/// `window` with the fault's changes; a field the window does not have (or could not read)
/// is left as it is.
pub fn apply(window: &mut Value, signature: &Signature) {
    for (field, change) in &signature.changes {
        let Some(value) = window[field.as_str()].as_f64() else {
            continue;
        };
        let changed = match *change {
            Change::Add(delta) => {
                let sum = (value + delta).max(0.0);
                if field.ends_with("_pct") {
                    sum.min(100.0)
                } else {
                    sum
                }
            }
            Change::AtLeast(level) => value.max(level),
        };
        window[field.as_str()] = Value::from(changed);
    }
}

/// The signatures of every recorded fault scenario in `datasets/`.
pub fn recorded_signatures() -> anyhow::Result<Vec<Signature>> {
    let dir = workspace_root().join("datasets");
    let mut signatures = Vec::new();
    for scenario in crate::scenario::SCENARIOS {
        if scenario.kind != Kind::Fault {
            continue;
        }
        let Some(recorded) = evaluate::load(&dir, scenario)? else {
            continue;
        };
        let records = recorded
            .records()
            .with_context(|| format!("reading the recording of {}", scenario.name))?;
        if let Some(signature) = signature(scenario.name, &records, &recorded.truth()) {
            signatures.push(signature);
        }
    }
    if signatures.is_empty() {
        anyhow::bail!("no recorded fault scenarios in datasets/ (`cargo xtask scenarios`)");
    }
    Ok(signatures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn window(psi: f64, latency: Option<f64>, syscalls: f64) -> Value {
        json!({
            "window_s": 2.0,
            "psi_cpu_some_pct": psi,
            "block_latency_p99_us": latency,
            "syscalls_per_s": syscalls,
        })
    }

    #[test]
    fn a_signature_is_the_fault_median_less_the_healthy_median_of_judged_fields() {
        let records = vec![
            window(4.0, Some(300.0), 1000.0),
            window(6.0, Some(500.0), 1000.0),
            window(5.0, Some(400.0), 1000.0),
            window(60.0, Some(9000.0), 5000.0),
            window(70.0, None, 5000.0),
            window(80.0, Some(7000.0), 5000.0),
            window(5.0, Some(400.0), 1000.0),
        ];
        let truth = [false, false, false, true, true, true, false];
        let signature = signature("test", &records, &truth).unwrap();
        assert_eq!(signature.seconds, 6.0);
        // Pressure: 70 during, 5 before. The latency: the fault's median of the windows that
        // had one (8000). Syscalls are a volume, not judged.
        assert_eq!(
            signature.changes,
            vec![
                ("block_latency_p99_us".to_string(), Change::AtLeast(8000.0)),
                ("psi_cpu_some_pct".to_string(), Change::Add(65.0)),
            ]
        );
        // No healthy window before the fault, or no fault: no signature.
        assert!(super::signature("test", &records[3..], &truth[3..]).is_none());
        assert!(super::signature("test", &records, &[false; 7]).is_none());
    }

    #[test]
    fn applied_changes_stay_within_a_fields_range() {
        let signature = Signature {
            scenario: "test",
            seconds: 2.0,
            changes: vec![
                ("psi_cpu_some_pct".into(), Change::Add(65.0)),
                ("block_latency_p99_us".into(), Change::AtLeast(8000.0)),
                ("tcp_retransmits_per_s".into(), Change::Add(-50.0)),
            ],
        };
        let mut busy = json!({
            "psi_cpu_some_pct": 50.0,
            "block_latency_p99_us": 20000.0,
            "tcp_retransmits_per_s": 10.0,
        });
        apply(&mut busy, &signature);
        assert_eq!(busy["psi_cpu_some_pct"], 100.0);
        assert_eq!(busy["block_latency_p99_us"], 20000.0);
        assert_eq!(busy["tcp_retransmits_per_s"], 0.0);
        // A field the window could not read stays unread.
        let mut partial = json!({"psi_cpu_some_pct": null, "block_latency_p99_us": 100.0});
        apply(&mut partial, &signature);
        assert!(partial["psi_cpu_some_pct"].is_null());
        assert_eq!(partial["block_latency_p99_us"], 8000.0);
    }
}
