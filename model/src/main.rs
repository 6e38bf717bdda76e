use std::{io::Write as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use model::{
    Model, TrainOptions,
    eval::evaluate,
    input::{Labels, Row, read_rows},
};

/// nodestate's model: train k-means health states on recorded windows, score windows, and
/// evaluate detection against labels.
///
/// Inputs are the daemon's JSON Lines (`collector record`) or CSV with a header row of numeric
/// columns (an optional `timestamp` and `label` column are recognised).
#[derive(Debug, Parser)]
#[command(name = "model", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fit a model on windows and write it (JSON, versioned).
    Train {
        /// Window files (JSON Lines or .csv); all must have the same numeric columns.
        #[arg(long, short, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        #[arg(long, short)]
        out: PathBuf,
        /// Number of clusters.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// 0/1 labels (a `label` column, one row per input row) or fault segments (`start`,
        /// `end`): clusters then take their majority's state.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Seed of k-means++ initialisation: the same seed and data give the same model.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Independent k-means runs; the best is kept.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Score windows: one row per input row with score, cluster, state and explanation.
    Score {
        #[arg(long, short)]
        model: PathBuf,
        #[arg(long, short)]
        input: PathBuf,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
    /// Compare the model's verdicts with labels: precision, recall, F1, point-adjusted F1 and
    /// time to detect per fault segment.
    Eval {
        #[arg(long, short)]
        model: PathBuf,
        #[arg(long, short)]
        input: PathBuf,
        #[arg(long, short)]
        labels: PathBuf,
    },
    /// Show what a model holds.
    Inspect { model: PathBuf },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

fn read_all(inputs: &[PathBuf]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for path in inputs {
        let more = read_rows(path)?;
        if more.is_empty() {
            bail!("{}: no rows", path.display());
        }
        rows.extend(more);
    }
    Ok(rows)
}

fn summary(model: &Model) -> String {
    let mut text = format!(
        "{} windows, {} features, threshold {:.3} (p{} x margin), trained {}\n\
         cluster  size  state     top features (centroid z)\n",
        model.training_windows,
        model.features.len(),
        model.threshold,
        model.threshold_percentile,
        model.trained_at
    );
    for cluster in 0..model.centroids.len() {
        let top: Vec<String> = model
            .cluster_top_features(cluster, 3)
            .into_iter()
            .map(|(feature, z)| format!("{feature} {z:+.2}"))
            .collect();
        text += &format!(
            "{cluster:>7}  {:>4}  {:<8}  {}\n",
            model.cluster_sizes[cluster],
            model.cluster_states[cluster].as_str(),
            top.join(", ")
        );
    }
    text
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train {
            input,
            out,
            k,
            labels,
            seed,
            runs,
        } => {
            let rows = read_all(&input)?;
            let labels = match &labels {
                Some(path) => Some(Labels::read(path)?.per_row(&rows, &input[0])?),
                None => None,
            };
            let progress = indicatif::ProgressBar::new_spinner().with_message(format!(
                "fitting k-means: {} windows, k={k}, {runs} runs",
                rows.len()
            ));
            progress.enable_steady_tick(Duration::from_millis(120));
            let trained = Model::train(
                &rows,
                &TrainOptions {
                    k,
                    seed,
                    n_runs: runs,
                    labels,
                    ..TrainOptions::default()
                },
            );
            progress.finish_and_clear();
            let model = trained?;
            model.save(&out)?;
            print!("{}", summary(&model));
            println!("model written to {}", out.display());
        }
        Command::Score {
            model,
            input,
            out,
            format,
        } => {
            let model = Model::load(&model)?;
            let rows = read_rows(&input)?;
            model.check_features(&rows, &input)?;
            let mut writer: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            if let Format::Csv = format {
                writeln!(writer, "score,cluster,state,explanation")?;
            }
            for row in &rows {
                let assessment = model.assess(&row.values).map_err(|missing| {
                    anyhow::anyhow!(
                        "{}:{}: missing feature {missing}",
                        input.display(),
                        row.line
                    )
                })?;
                match format {
                    Format::Csv => {
                        let explanation: Vec<String> = assessment
                            .explanation
                            .iter()
                            .map(|c| format!("{}={:+.2}", c.feature, c.z))
                            .collect();
                        writeln!(
                            writer,
                            "{:.6},{},{},{}",
                            assessment.score,
                            assessment.cluster,
                            assessment.state.as_str(),
                            explanation.join(" ")
                        )?;
                    }
                    Format::Jsonl => writeln!(writer, "{}", serde_json::to_string(&assessment)?)?,
                }
            }
            writer.flush()?;
        }
        Command::Eval {
            model,
            input,
            labels,
        } => {
            let model = Model::load(&model)?;
            let rows = read_rows(&input)?;
            model.check_features(&rows, &input)?;
            let truth = Labels::read(&labels)?.per_row(&rows, &input)?;
            let predicted: Vec<bool> = rows
                .iter()
                .map(|row| {
                    model
                        .assess(&row.values)
                        .map(|a| a.state == model::HealthState::Degraded)
                        .map_err(|missing| {
                            anyhow::anyhow!(
                                "{}:{}: missing feature {missing}",
                                input.display(),
                                row.line
                            )
                        })
                })
                .collect::<anyhow::Result<_>>()?;
            let times: Vec<Option<f64>> = rows.iter().map(|row| row.timestamp_s).collect();
            let evaluation = evaluate(&predicted, &truth, &times);
            println!("{}", serde_json::to_string_pretty(&evaluation)?);
        }
        Command::Inspect { model } => {
            let model = Model::load(&model)?;
            print!("{}", summary(&model));
            println!("features: {}", model.features.join(", "));
        }
    }
    Ok(())
}
