//! The scenario check of `cargo xtask test` (and `cargo xtask scenario-check`): a short fault
//! and a short benign run recorded for real and judged as the evaluation judges them.

use std::{fs, path::Path};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{ENTER_AFTER, LEAVE_AFTER, Recorded, Scored, load, score, verdict};
use crate::{
    scenario::{self, Kind, Scenario},
    util::workspace_root,
};

/// The CI check (`cargo xtask test`): one fault and one no-fault scenario, short, end to end
/// (recorded for real, then judged by the built-in model with the daemon's hysteresis). The
/// fault must be answered "Yes", the no-fault run "No" throughout.
pub fn ci_check() -> anyhow::Result<()> {
    let work =
        std::env::temp_dir().join(format!("nodestate-scenario-check-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = ci_check_in(&work);
    scenario::remove_worker_exe();
    let _ = fs::remove_dir_all(&work);
    result
}

fn ci_check_in(work: &Path) -> anyhow::Result<()> {
    let model_file = workspace_root().join("datasets/default-model.json");
    let mut failures = Vec::new();
    for name in ["crash-loop", "no-fault-backup"] {
        let scenario = scenario::find(name)?;
        if check_one(scenario, &model_file, work)? {
            continue;
        }
        // The benign backup reads the lab's disk, a loop device over a file on the machine's
        // own disk, whose latency the lab does not control: in one full run out of 35 that
        // disk stalled for two windows halfway through the backup (I/O pressure 18%, block
        // p99 42 ms, against 2% and 1-3 ms in the same run's other windows; the other kept
        // runs' backups scored 1.8 at most), and the built-in model rightly judged a node
        // whose I/O stalls degraded. The
        // scenario's question is whether a backup on a working disk pages: run it once more
        // and fail when it answers Yes again. A model that takes the backup itself for a fault
        // answers Yes both times; a lone stall of the disk is unlikely twice in a row.
        if scenario.kind == Kind::NoFault {
            println!(
                "scenario check {name}: answered Yes where a benign run must answer No; \
                 running it once more (the windows above say whether the disk stalled)"
            );
            if check_one(scenario, &model_file, work)? {
                println!("scenario check {name}: passed on the second run (the first failed)");
                continue;
            }
        }
        failures.push(name);
    }
    if !failures.is_empty() {
        bail!("scenario check failed for {failures:?}");
    }
    Ok(())
}

/// Records one short run of `scenario` and judges it with the built-in model; prints the
/// answers and every window; true when the answers are the expected ones.
fn check_one(scenario: &'static Scenario, model_file: &Path, work: &Path) -> anyhow::Result<bool> {
    let name = scenario.name;
    scenario::run(scenario, scenario::Timing::SHORT, work)?;
    let recorded = load(work, scenario)?.context("the run wrote no dataset")?;
    let scored = score(model_file, &recorded, work)?;
    let v = verdict(&recorded, &scored, ENTER_AFTER, LEAVE_AFTER);
    let expected = if scenario.kind == Kind::Fault {
        "Yes"
    } else {
        "No"
    };
    println!(
        "scenario check {name}: answer during the {} {} (expected {expected}), before it {} \
         (expected No){}",
        if scenario.kind == Kind::Fault {
            "fault"
        } else {
            "benign burst"
        },
        v.during,
        v.before,
        v.detect_s
            .map(|s| format!(", detected after {s:.1} s"))
            .unwrap_or_default()
    );
    // Always: a passing run shows its margin, a failing one what moved.
    print_windows(&recorded, &scored);
    Ok(v.during == expected && v.before == "No")
}

/// Every window of a check: its phase, the node state after it, its score and what moved it,
/// with the raw values of those fields, so a CI log alone tells why a check failed (and how
/// close a passing one came).
fn print_windows(recorded: &Recorded, scored: &Scored) {
    let state = model::eval::debounce(&scored.flags, ENTER_AFTER, LEAVE_AFTER);
    for (i, window) in recorded.windows.iter().enumerate() {
        let phase = if window.end_s <= recorded.start_s {
            "before"
        } else if window.start_s < recorded.end_s {
            "during"
        } else {
            "after"
        };
        let fields: Value = serde_json::from_str(&window.line).unwrap_or(Value::Null);
        // Derived features (fractions, ratios) have no field of their own.
        let raw: Vec<String> = scored.explanations[i]
            .iter()
            .filter_map(|(feature, _)| fields.get(feature).map(|v| format!("{feature}={v}")))
            .collect();
        println!(
            "  window {i:2} {phase:6} node {}: {} [{}]",
            if state[i] { "degraded" } else { "healthy " },
            scored.detail(i),
            raw.join(" ")
        );
    }
    // The first window flagged before the fault or burst, whole: the false alarm to explain.
    if let Some(i) = (0..recorded.windows.len())
        .find(|&i| scored.flags[i] && recorded.windows[i].end_s <= recorded.start_s)
    {
        println!("  window {i} in full: {}", recorded.windows[i].line);
    }
}
