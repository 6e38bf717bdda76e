//! `model bench`'s report as text for people.

use model::bench::BenchReport;

pub(crate) fn bench_text(report: &BenchReport) -> String {
    use std::fmt::Write as _;
    let best = |s: &[f64]| s.iter().copied().fold(f64::INFINITY, f64::min);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "training: {} rows x {} features, k = {}, n_init = {}, max_iter = {}",
        report.rows, report.dims, report.k, report.n_init, report.max_iterations
    );
    let _ = writeln!(
        out,
        "  model train:               best {:.3} s of {:?}, inertia {:.4}, threads {}",
        best(&report.rust_seconds),
        report
            .rust_seconds
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>(),
        report.rust_inertia,
        report.threads
    );
    match (&report.sklearn, report.speedup) {
        (Some(sklearn), Some(speedup)) => {
            let _ = writeln!(
                out,
                "  scikit-learn {} KMeans: best {:.3} s of {:?}, inertia {:.4}, threads {}",
                sklearn.sklearn_version,
                best(&sklearn.seconds),
                sklearn
                    .seconds
                    .iter()
                    .map(|s| format!("{s:.3}"))
                    .collect::<Vec<_>>(),
                sklearn.inertia,
                sklearn.threads.map_or("?".into(), |t| t.to_string())
            );
            let _ = writeln!(
                out,
                "  ratio sklearn / model train: {speedup:.2} ({})",
                if speedup > 1.0 {
                    "model train is faster"
                } else {
                    "scikit-learn is faster"
                }
            );
        }
        _ => {
            let _ = writeln!(out, "  scikit-learn: skipped");
        }
    }
    let _ = writeln!(
        out,
        "inference: {} fields per window; {:.2} µs per window (parsed record), {:.2} µs with \
         JSON parsing",
        report.inference_fields,
        report.inference_us_per_window,
        report.parse_and_score_us_per_window
    );
    let _ = writeln!(
        out,
        "baseline refresh: {:.1} ms to retrain on {} windows (default baseline options)",
        report.baseline_refresh_ms,
        model::baseline::DEFAULT_MAX_KEPT
    );
    out
}
