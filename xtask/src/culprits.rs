//! The "culprit named first" column of EVALUATION.md: what the daemon as shipped (`collector
//! run --model builtin`, run beside the recorder, see scenario/shipped.rs) named during each
//! fault, graded against the workload that caused it.
//!
//! The rule: among the daemon's degraded windows at least half inside the fault's labelled
//! span (the windows the evaluation counts as the fault's), take the first that names any
//! culprit; the answer is "yes" when its first culprit is the
//! workload the scenario expects. A degraded window naming no one is passed over (the ranker
//! names no one when no workload rose beyond its own noise, e.g. the first window, whose
//! verdict can come before the fault's volume shows); naming the wrong one first is a "no".

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

/// One window as the daemon judged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The window's end, seconds since the epoch.
    pub end_s: f64,
    pub window_s: f64,
    pub degraded: bool,
    /// The culprits' names, first first.
    pub culprits: Vec<String>,
}

/// Reads `NAME.culprits.jsonl.gz`; `None` when the run has no such file (recorded before the
/// daemon ran beside the recorder).
pub fn load(path: &Path) -> anyhow::Result<Option<Vec<Judged>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::util::read_gz(path)?;
    let mut windows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let row: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), number + 1))?;
        windows.push(Judged {
            end_s: row["unix_ms"].as_f64().context("unix_ms")? / 1000.0,
            window_s: row["window_s"].as_f64().context("window_s")?,
            degraded: row["state"] == "degraded",
            culprits: row["culprits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|blame| blame["name"].as_str().map(str::to_string))
                .collect(),
        });
    }
    Ok(Some(windows))
}

/// The answer for one scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum First {
    /// No workload on the node causes this fault.
    NoCulprit,
    /// The run has no culprits file.
    NotRecorded,
    Yes,
    /// The first culprit named was another workload.
    Wrong(String),
    /// Degraded during the fault, but no window named anyone.
    NoneNamed,
    /// The daemon never said degraded during the fault.
    NotDegraded,
}

impl std::fmt::Display for First {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            First::NoCulprit => f.write_str("—"),
            First::NotRecorded => f.write_str("not recorded"),
            First::Yes => f.write_str("yes"),
            First::Wrong(name) => write!(f, "**no** ✗ (`{name}` first)"),
            First::NoneNamed => f.write_str("**no** ✗ (no one named)"),
            First::NotDegraded => f.write_str("**no** ✗ (never degraded)"),
        }
    }
}

/// One scenario's culprit grade.
#[derive(Debug, Clone, PartialEq)]
pub struct Grade {
    pub first: First,
    /// Degraded windows (at least half) inside the fault, and how many of them named the service (the
    /// healthy neighbour) among their culprits.
    pub degraded: usize,
    pub service_named: usize,
}

/// Grades the daemon's windows against the fault span `[start_s, end_s]`: see the module's
/// rule. `expected` is the culprit's name (`None`: no culprit workload), `service` the
/// neighbour's.
pub fn grade(
    windows: &[Judged],
    start_s: f64,
    end_s: f64,
    expected: Option<&str>,
    service: &str,
) -> Grade {
    let inside = |w: &Judged| {
        let overlap = (w.end_s.min(end_s) - (w.end_s - w.window_s).max(start_s)).max(0.0);
        overlap >= 0.5 * w.window_s
    };
    let degraded: Vec<&Judged> = windows.iter().filter(|w| w.degraded && inside(w)).collect();
    let service_named = degraded
        .iter()
        .filter(|w| w.culprits.iter().any(|name| name == service))
        .count();
    let first = match expected {
        None => First::NoCulprit,
        Some(_) if degraded.is_empty() => First::NotDegraded,
        Some(expected) => match degraded.iter().find_map(|w| w.culprits.first()) {
            Some(name) if name == expected => First::Yes,
            Some(name) => First::Wrong(name.clone()),
            None => First::NoneNamed,
        },
    };
    Grade {
        first,
        degraded: degraded.len(),
        service_named,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(end_s: f64, degraded: bool, culprits: &[&str]) -> Judged {
        Judged {
            end_s,
            window_s: 2.0,
            degraded,
            culprits: culprits.iter().map(|c| c.to_string()).collect(),
        }
    }

    const SERVICE: &str = "/service";

    #[test]
    fn the_first_degraded_window_naming_anyone_decides() {
        // Fault from 10 to 20. A false alarm before it (naming the service) does not count;
        // the first degraded window inside names no one and is passed over; the next names
        // the job first.
        let windows = [
            window(6.0, true, &[SERVICE]),
            window(10.0, false, &[]),
            window(12.0, true, &[]),
            window(14.0, true, &["/job", SERVICE]),
            window(16.0, true, &[SERVICE, "/job"]),
            window(18.0, false, &[]),
        ];
        let grade = grade(&windows, 10.0, 20.0, Some("/job"), SERVICE);
        assert_eq!(grade.first, First::Yes);
        assert_eq!(grade.degraded, 3);
        assert_eq!(grade.service_named, 2);
    }

    #[test]
    fn the_wrong_workload_first_is_a_no_even_if_the_right_one_follows() {
        let windows = [
            window(12.0, true, &[SERVICE, "/job"]),
            window(14.0, true, &["/job"]),
        ];
        let grade = grade(&windows, 10.0, 20.0, Some("/job"), SERVICE);
        assert_eq!(grade.first, First::Wrong(SERVICE.into()));
        assert_eq!(grade.service_named, 1);
        assert_eq!(grade.first.to_string(), "**no** ✗ (`/service` first)");
    }

    #[test]
    fn windows_at_least_half_inside_the_span_count_and_others_do_not() {
        // A window mostly before the fault (the node may have been degraded for another
        // reason then) or after it does not count; one half inside does.
        let mostly_before = [
            window(10.5, true, &[SERVICE]),
            window(12.0, true, &["/job"]),
        ];
        assert_eq!(
            grade(&mostly_before, 10.0, 20.0, Some("/job"), SERVICE).first,
            First::Yes
        );
        let at_start = [window(10.0, true, &["/job"])];
        assert_eq!(
            grade(&at_start, 10.0, 20.0, Some("/job"), SERVICE).first,
            First::NotDegraded
        );
        let after_end = [window(22.0, true, &["/job"])];
        assert_eq!(
            grade(&after_end, 10.0, 20.0, Some("/job"), SERVICE).first,
            First::NotDegraded
        );
        let straddling = [
            window(11.0, true, &["/job"]),
            window(21.0, true, &[SERVICE]),
        ];
        let grade = grade(&straddling, 10.0, 20.0, Some("/job"), SERVICE);
        assert_eq!((grade.first, grade.degraded), (First::Yes, 2));
    }

    #[test]
    fn no_culprit_none_named_and_never_degraded_are_told_apart() {
        let quiet = [window(12.0, true, &[]), window(14.0, true, &[])];
        assert_eq!(
            grade(&quiet, 10.0, 20.0, Some("/job"), SERVICE).first,
            First::NoneNamed
        );
        assert_eq!(
            grade(&quiet, 10.0, 20.0, None, SERVICE).first,
            First::NoCulprit
        );
        let healthy = [window(12.0, false, &["/job"])];
        assert_eq!(
            grade(&healthy, 10.0, 20.0, Some("/job"), SERVICE).first,
            First::NotDegraded
        );
        // Without a culprit workload the service is still counted when named.
        let blamed = [window(12.0, true, &[SERVICE])];
        let grade = grade(&blamed, 10.0, 20.0, None, SERVICE);
        assert_eq!((grade.degraded, grade.service_named), (1, 1));
        assert_eq!(grade.first.to_string(), "—");
    }
}
