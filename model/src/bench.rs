//! `model bench`: training time against scikit-learn's `KMeans` on the same data with the same
//! settings, and the daemon's per-window inference time.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{ModelError, Result},
    input::{Table, read_table},
    model::{Model, TrainOptions},
    synthetic,
};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rows: usize,
    pub dims: usize,
    pub k: usize,
    pub n_init: usize,
    pub max_iterations: u64,
    pub repeats: usize,
    /// Threads for each side; 0 = the machine's available parallelism.
    pub threads: usize,
    pub seed: u64,
    /// `sklearn_kmeans.py`; `None` skips the scikit-learn side.
    pub sklearn_script: Option<PathBuf>,
    pub python: String,
    /// Windows scored for the inference timing.
    pub inference_windows: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            rows: 20_000,
            dims: 16,
            k: 8,
            n_init: 10,
            max_iterations: 300,
            repeats: 3,
            threads: 0,
            seed: 42,
            sklearn_script: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/sklearn_kmeans.py"),
            ),
            python: "python3".into(),
            inference_windows: 20_000,
        }
    }
}

/// What the scikit-learn script prints (one JSON object).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SklearnResult {
    pub seconds: Vec<f64>,
    pub inertia: f64,
    pub sklearn_version: String,
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub rows: usize,
    pub dims: usize,
    pub k: usize,
    pub n_init: usize,
    pub max_iterations: u64,
    /// Threads `model train` spread its k-means runs over.
    pub threads: usize,
    /// `model train` (log/scale, k-means, calibration) per repeat.
    pub rust_seconds: Vec<f64>,
    /// Mean squared distance to the nearest centroid, standardized space.
    pub rust_inertia: f64,
    pub sklearn: Option<SklearnResult>,
    /// Best sklearn time / best Rust time (> 1: Rust faster).
    pub speedup: Option<f64>,
    pub inference_fields: usize,
    /// Per window, record already parsed (what the daemon does).
    pub inference_us_per_window: f64,
    /// Per window, from the JSON text (parse + score).
    pub parse_and_score_us_per_window: f64,
    /// One retraining of the embedded baseline at its largest (`DEFAULT_MAX_KEPT` windows,
    /// default baseline options): what a daemon pauses for every refresh.
    pub baseline_refresh_ms: f64,
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    let data_path =
        std::env::temp_dir().join(format!("nodestate-model-bench-{}.csv", std::process::id()));
    let text = synthetic::blobs_csv(options.seed, options.rows, options.dims, options.k);
    std::fs::write(&data_path, text).map_err(|source| ModelError::Io {
        path: data_path.clone(),
        source,
    })?;
    let result = run_on(options, &data_path);
    let _ = std::fs::remove_file(&data_path);
    result
}

fn run_on(options: &BenchOptions, data_path: &Path) -> Result<BenchReport> {
    let table = read_table(data_path)?;
    let train_options = TrainOptions {
        k: options.k,
        n_runs: options.n_init,
        max_iterations: options.max_iterations,
        seed: options.seed,
        threads: options.threads,
        ..TrainOptions::default()
    };
    // Rust and scikit-learn runs alternate, so that a change of load on the machine hits both
    // sides alike; each side's best run is compared.
    let mut rust_seconds = Vec::new();
    let mut rust_inertia = 0.0;
    let mut sklearn: Option<SklearnResult> = None;
    for _ in 0..options.repeats.max(1) {
        let start = Instant::now();
        let model = Model::train(&table, &train_options)?;
        rust_seconds.push(start.elapsed().as_secs_f64());
        rust_inertia = model.training.inertia;
        if let Some(script) = &options.sklearn_script {
            let run = run_sklearn(options, script, data_path, &train_options)?;
            match &mut sklearn {
                Some(all) => all.seconds.extend(run.seconds),
                None => sklearn = Some(run),
            }
        }
    }
    let speedup = sklearn
        .as_ref()
        .map(|s| min(&s.seconds) / min(&rust_seconds));

    let (inference_fields, inference_us_per_window, parse_and_score_us_per_window) =
        inference(options)?;
    let baseline_refresh_ms = baseline_refresh(options)?;
    Ok(BenchReport {
        rows: table.len(),
        dims: table.columns.len(),
        k: options.k,
        n_init: options.n_init,
        max_iterations: options.max_iterations,
        threads: match options.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        rust_seconds,
        rust_inertia,
        sklearn,
        speedup,
        inference_fields,
        inference_us_per_window,
        parse_and_score_us_per_window,
        baseline_refresh_ms,
    })
}

fn baseline_refresh(options: &BenchOptions) -> Result<f64> {
    let records = synthetic::window_records(options.seed, crate::baseline::DEFAULT_MAX_KEPT, 0..0);
    let table = Table::from_records(&records)?;
    let train = crate::BaselineOptions::default().train;
    let start = Instant::now();
    Model::train(&table, &train)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn run_sklearn(
    options: &BenchOptions,
    script: &Path,
    data_path: &Path,
    train: &TrainOptions,
) -> Result<SklearnResult> {
    let failed = |message: String| ModelError::Training(format!("scikit-learn side: {message}"));
    // `model train` stops a run when the squared norm of the centroids' move is at most
    // tolerance² times the mean variance of the standardized features: scikit-learn's rule
    // with tol = tolerance².
    let mut command = Command::new(&options.python);
    command
        .arg(script)
        .arg("--input")
        .arg(data_path)
        .args(["--k", &options.k.to_string()])
        .args(["--n-init", &options.n_init.to_string()])
        .args(["--max-iter", &options.max_iterations.to_string()])
        .args(["--tol", &format!("{:e}", train.tolerance * train.tolerance)])
        .args(["--repeats", "1"])
        .args(["--seed", &options.seed.to_string()]);
    if options.threads > 0 {
        command.args(["--threads", &options.threads.to_string()]);
    }
    let output = command
        .output()
        .map_err(|err| failed(format!("running {}: {err}", options.python)))?;
    if !output.status.success() {
        return Err(failed(format!(
            "{} exited with {}: {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout).map_err(|err| {
        failed(format!(
            "unexpected output ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        ))
    })
}

/// Trains on daemon-shaped windows, then times scoring them.
fn inference(options: &BenchOptions) -> Result<(usize, f64, f64)> {
    let training = synthetic::window_records(options.seed, 720, 0..0);
    let model = Model::train(&Table::from_records(&training)?, &TrainOptions::default())?;
    let count = options.inference_windows.max(1);
    let records = synthetic::window_records(options.seed + 1, count, count / 2..count / 2 + 30);
    let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    // Warm up caches and the allocator before timing.
    for record in records.iter().take(100) {
        model.score(record)?;
    }
    let start = Instant::now();
    let mut degraded = 0usize;
    for record in &records {
        degraded += usize::from(model.score(record)?.is_anomalous());
    }
    let scored = start.elapsed().as_secs_f64() * 1e6 / count as f64;
    let start = Instant::now();
    for line in &lines {
        let record: serde_json::Value =
            serde_json::from_str(line).map_err(|err| ModelError::InvalidRecord(err.to_string()))?;
        degraded += usize::from(model.score(&record)?.is_anomalous());
    }
    let parsed = start.elapsed().as_secs_f64() * 1e6 / count as f64;
    std::hint::black_box(degraded);
    Ok((model.required_fields().len(), scored, parsed))
}
