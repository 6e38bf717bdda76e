//! `collector probes`: which hook each signal gets on this kernel, and (with `--exercise`)
//! proof that the attached programs count: the command causes the signals itself (see
//! [`crate::kernel::exercise`]) and reports, per signal, caused against counted.

use serde::Serialize;

use crate::kernel::{
    HookOutcome, KernelCollector, KernelConfig,
    exercise::{Exercise, ExerciseOptions},
};

#[derive(Debug, Serialize)]
pub struct ProbeLine {
    pub id: String,
    pub signal: String,
    pub program: String,
    pub hook: String,
    pub kind: String,
    pub outcome: String,
    pub tried: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub kernel: String,
    /// Per-cgroup attribution: `unified`, `v1` or `off` (`cgroup_mode::*`), and in words.
    pub cgroup_mode: String,
    pub cgroup_attribution: String,
    pub probes: Vec<ProbeLine>,
    pub exercise: Option<Exercise>,
}

/// Loads the programs, reports each signal's hook, and with `exercise` causes the signals and
/// reports what was counted.
pub fn probe_report(exercise: Option<&ExerciseOptions>) -> anyhow::Result<ProbeReport> {
    let kernel = KernelCollector::load(&KernelConfig::default())?;
    let probes = kernel
        .attach_reports()
        .iter()
        .zip(crate::kernel::probes::SIGNALS)
        .map(|(report, plan)| ProbeLine {
            id: plan.id.to_string(),
            signal: report.signal.to_string(),
            program: report.program.to_string(),
            hook: report.hook.clone(),
            kind: report.kind.to_string(),
            outcome: match &report.outcome {
                HookOutcome::Attached => "attached".into(),
                other => other.to_string(),
            },
            tried: report.tried.clone(),
        })
        .collect();
    let exercise = exercise
        .map(|options| crate::kernel::exercise::run(&kernel, options))
        .transpose()?;
    let cgroup_mode = match kernel.attribution() {
        crate::kernel::Attribution::Unified { .. } => "unified".to_string(),
        crate::kernel::Attribution::V1 { controller, .. } => format!("v1_{controller}"),
        crate::kernel::Attribution::Off { .. } => "off".to_string(),
    };
    Ok(ProbeReport {
        cgroup_mode,
        cgroup_attribution: kernel.attribution().describe(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        probes,
        exercise,
    })
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "kernel {}", self.kernel)?;
        writeln!(f, "cgroup attribution: {}", self.cgroup_attribution)?;
        writeln!(
            f,
            "{:<16} {:<36} {:<11} {:<52} result",
            "id", "signal", "kind", "hook"
        )?;
        for probe in &self.probes {
            writeln!(
                f,
                "{:<16} {:<36} {:<11} {:<52} {}",
                probe.id, probe.signal, probe.kind, probe.hook, probe.outcome
            )?;
            for attempt in &probe.tried {
                writeln!(f, "{:<53} tried first: {attempt}", "")?;
            }
        }
        if let Some(exercise) = &self.exercise {
            writeln!(f)?;
            writeln!(
                f,
                "{:<16} {:<28} {:<15} {:>7} {:>8}  result",
                "id", "exercised", "hook", "caused", "counted"
            )?;
            for line in &exercise.lines {
                writeln!(
                    f,
                    "{:<16} {:<28} {:<15} {:>7} {:>8}  {}",
                    line.id, line.what, line.hook, line.caused, line.counted, line.result
                )?;
            }
            for skipped in &exercise.not_caused {
                writeln!(f, "{:<16} not caused: {}", skipped.id, skipped.why)?;
            }
            writeln!(
                f,
                "exercise: {}",
                if exercise.all_counted {
                    "every caused event was counted"
                } else {
                    "some caused events were NOT counted"
                }
            )?;
        }
        Ok(())
    }
}
