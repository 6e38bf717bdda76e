//! `collector probes`: which hook each signal gets on this kernel, and (with `--exercise`)
//! proof that the attached programs count: the command causes file opens and fsyncs itself
//! and reports how many the kernel programs saw.

use collector_common::event;
use serde::Serialize;

use crate::kernel::{HookOutcome, KernelCollector, KernelConfig};

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

/// What `--exercise` caused and what the programs counted.
#[derive(Debug, Serialize)]
pub struct Exercise {
    pub opens_caused: u64,
    pub opens_counted: u64,
    pub fsyncs_caused: u64,
    pub fsyncs_counted: u64,
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

const OPENS: u64 = 200;
const FSYNCS: u64 = 20;

/// Loads the programs, reports each signal's hook, and optionally exercises opens and fsync.
pub fn probe_report(exercise: bool) -> anyhow::Result<ProbeReport> {
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
    let exercise = if exercise {
        Some(run_exercise(&kernel)?)
    } else {
        None
    };
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

fn run_exercise(kernel: &KernelCollector) -> anyhow::Result<Exercise> {
    let before = kernel.events()?;
    for index in 0..OPENS {
        // Failing opens: no file system state needed, and they still enter the open path.
        let _ = std::fs::File::open(format!("/nonexistent/nodestate-probe/{index}"));
    }
    let dir = std::env::temp_dir();
    let path = dir.join(format!("nodestate-probe-{}", std::process::id()));
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path)?;
        for _ in 0..FSYNCS {
            file.write_all(b"nodestate")?;
            file.sync_all()?;
        }
    }
    let _ = std::fs::remove_file(&path);
    let after = kernel.events()?;
    let delta = |index: u32| after[index as usize].saturating_sub(before[index as usize]);
    Ok(Exercise {
        opens_caused: OPENS,
        opens_counted: delta(event::OPENS),
        fsyncs_caused: FSYNCS,
        fsyncs_counted: delta(event::FSYNCS),
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
            writeln!(
                f,
                "exercise: {} opens caused, {} counted; {} fsyncs caused, {} counted",
                exercise.opens_caused,
                exercise.opens_counted,
                exercise.fsyncs_caused,
                exercise.fsyncs_counted
            )?;
        }
        Ok(())
    }
}
