//! The kernel programs: runs and run time while statistics were on, and each signal's hook.

use prometheus_client::{encoding::DescriptorEncoder, registry::Unit};

use super::{counters, gauges};
use crate::export::ExporterState;

/// `nodestate_program_runs`, `nodestate_program_run_seconds`, `nodestate_probe`.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    // Per-program cost is detail (two series per program): the default set keeps the
    // daemon's whole cost (`process_cpu_seconds_total`) and leaves it to `--metrics full`.
    let program_totals = match state.metric_set {
        crate::export::MetricSet::Full => &state.program_totals,
        crate::export::MetricSet::Default => &std::collections::BTreeMap::new(),
    };
    let runs: Vec<_> = program_totals
        .iter()
        .map(|(name, (runs, _))| (vec![("program", name.clone())], *runs as f64))
        .collect();
    counters(
        encoder,
        "nodestate_program_runs",
        "Runs of each kernel program while run-time statistics were on (see --program-stats)",
        None,
        &runs,
    )?;
    let run_time: Vec<_> = program_totals
        .iter()
        .map(|(name, (_, ns))| (vec![("program", name.clone())], *ns as f64 / 1e9))
        .collect();
    counters(
        encoder,
        "nodestate_program_run",
        "Run time of each kernel program while run-time statistics were on",
        Some(&Unit::Seconds),
        &run_time,
    )?;
    let probes: Vec<_> = state
        .probes
        .iter()
        .map(|(id, _, kind, outcome)| {
            (
                vec![
                    ("signal", id.clone()),
                    ("kind", kind.clone()),
                    ("outcome", outcome.clone()),
                ],
                1.0,
            )
        })
        .collect();
    gauges(
        encoder,
        "nodestate_probe",
        "Each signal's hook on this kernel: kind (kprobe, tracepoint, raw_tracepoint, none) and outcome",
        None,
        &probes,
    )?;
    Ok(())
}
