//! The `model` command: parses the command line ([`cli`]), sets up logging and runs the
//! subcommand; the work itself is in the `model` library.

mod bench;
mod cli;
mod files;

use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use clap::Parser as _;
use model::{
    Labels, Model, TrainOptions,
    bench::BenchOptions,
    read_table, read_tables,
    report::{self, ScoreFormat},
};

use crate::{
    bench::bench_text,
    cli::{Cli, Command, Format, Output, RuleArg, ScalingArg},
    files::{refuse_overwriting, save_records, write_synthetic, write_whole},
};

/// The note an old spelling of `--output` gets (it still works, for one release).
fn deprecated(old: &str, new: &str) {
    eprintln!("warning: {old} is deprecated: use {new}");
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `model score … | head` closes the pipe early: not an error worth a message.
        Err(err)
            if err
                .chain()
                .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
                .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints to standard output, returning (not panicking on) a closed pipe.
fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The model file, judged as signals (`--signals`: as the daemon judges its built-in model)
/// or both ways, as stored.
fn load_judging(path: &std::path::Path, signals: bool) -> anyhow::Result<Model> {
    let mut model = Model::load(path)?;
    if signals {
        model.judge_signals();
    }
    Ok(model)
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match Cli::parse().command {
        Command::Train {
            input,
            prometheus,
            since,
            selector,
            step,
            node_label,
            save_windows,
            out,
            k,
            labels,
            seed,
            runs,
            max_iterations,
            threshold_percentile,
            threshold_margin,
            min_healthy_share,
            features,
            floor_scale,
            min_threshold,
            threshold_rule,
            false_alarm_rate,
            trim,
            scaling,
            spread_per_mode,
            output,
            prometheus_client,
        } => {
            // In JSON mode stdout holds the one JSON document; the text goes to stderr.
            let say = |text: &str| -> std::io::Result<()> {
                match output {
                    Output::Table => emit(text),
                    Output::Json => {
                        eprint!("{text}");
                        Ok(())
                    }
                }
            };
            let mut fleet = None;
            // Before any work: a model written over its own training data (or labels) would
            // destroy them.
            let mut sources: Vec<(&str, &Path)> =
                input.iter().map(|p| ("input", p.as_path())).collect();
            if let Some(path) = &labels {
                sources.push(("labels", path));
            }
            if let Some(path) = &save_windows {
                sources.push(("--save-windows", path));
            }
            refuse_overwriting("--out", &out, &sources)?;
            let table = match &prometheus {
                Some(prometheus) => {
                    prometheus_client.install()?;
                    let mut query = cluster::fleet::FleetQuery::new(
                        prometheus,
                        since.context(
                            "--since is required with --prometheus (how far back to read, e.g. 6h)",
                        )?,
                    );
                    query.selector = selector;
                    query.step = step;
                    query.node_label = node_label;
                    let windows = cluster::fleet::fetch(&query)?;
                    say(&windows.summary(prometheus))?;
                    fleet = Some(windows.summary(prometheus));
                    if let Some(path) = &save_windows {
                        save_records(path, &windows.records)?;
                    }
                    windows.table
                }
                None => {
                    // clap drops `requires = "prometheus"` once --input (which conflicts with
                    // it) is given, so these are checked here.
                    for (given, flag) in [
                        (since.is_some(), "--since"),
                        (selector.is_some(), "--selector"),
                        (step.is_some(), "--step"),
                        (save_windows.is_some(), "--save-windows"),
                    ] {
                        if given {
                            anyhow::bail!("{flag} reads from Prometheus: it needs --prometheus");
                        }
                    }
                    let (table, dropped) = read_tables(&input)?;
                    if !dropped.is_empty() {
                        tracing::warn!(
                            "columns not in every input file, left out: {}",
                            dropped.join(", ")
                        );
                    }
                    table
                }
            };
            let labels = match &labels {
                Some(path) => Some(Labels::read(path)?.per_row(&table, path)?),
                None => table.labels.clone(),
            };
            let options = TrainOptions {
                k,
                seed,
                n_runs: runs,
                max_iterations,
                threshold_percentile,
                threshold_margin,
                min_healthy_share,
                labels,
                features,
                floor_scale,
                min_threshold,
                threshold_rule: match threshold_rule {
                    RuleArg::Percentile => model::model::ThresholdRule::Percentile,
                    RuleArg::Tail => model::model::ThresholdRule::Tail {
                        false_alarm: false_alarm_rate,
                    },
                },
                trim,
                scaling: match scaling {
                    ScalingArg::Robust => model::model::Scaling::Robust,
                    ScalingArg::Standard => model::model::Scaling::Standard,
                },
                spread_per_mode,
                ..TrainOptions::default()
            };
            let bar = indicatif::ProgressBar::new(runs as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "k-means++ runs {bar:30} {pos}/{len} ({elapsed})",
                )
                .expect("a valid template"),
            );
            // Short fits finish before a bar would help; indicatif hides it when stderr is
            // not a terminal.
            let model = Model::train_with_progress(&table, &options, |done, _| {
                bar.set_position(done as u64)
            });
            bar.finish_and_clear();
            let model = model?;
            model.save(&out)?;
            if model.threshold.calibration_windows < model::model::MIN_CALIBRATION_WINDOWS {
                tracing::warn!(
                    "the threshold is set on only {} healthy training windows: it is barely \
                     measured; train on more healthy windows",
                    model.threshold.calibration_windows
                );
            }
            say(&report::summary(&model))?;
            say(&format!("model written to {}\n", out.display()))?;
            if output == Output::Json {
                let document = serde_json::json!({
                    "out": out.display().to_string(),
                    "fleet": fleet,
                    "model": serde_json::from_str::<serde_json::Value>(&model.to_json())?,
                });
                emit(&(document.to_string() + "\n"))?;
            }
        }
        Command::Score {
            model,
            input,
            out,
            output,
            format,
            signals,
        } => {
            if format.is_some() {
                deprecated("--format", "--output (csv or json)");
            }
            let format = format.unwrap_or(output);
            if let Some(path) = &out {
                refuse_overwriting(
                    "--out",
                    path,
                    &[("--model", model.as_path()), ("--input", input.as_path())],
                )?;
            }
            let model = load_judging(&model, signals)?;
            let table = read_table(&input)?;
            let assessments = model.score_table(&table)?;
            let format = match format {
                Format::Csv => ScoreFormat::Csv,
                Format::Json => ScoreFormat::JsonLines,
            };
            match &out {
                Some(path) => {
                    write_whole(path, |out| report::write_scores(&assessments, format, out))?
                }
                None => report::write_scores(
                    &assessments,
                    format,
                    &mut std::io::BufWriter::new(std::io::stdout().lock()),
                )
                .context("writing standard output")?,
            }
        }
        Command::Eval {
            model,
            input,
            labels,
            enter_after,
            leave_after,
            output,
            json,
            signals,
        } => {
            if json {
                deprecated("--json", "--output json");
            }
            let model = load_judging(&model, signals)?;
            let table = read_table(&input)?;
            let truth = Labels::read(&labels)?.per_row(&table, &labels)?;
            let assessments = model.score_table(&table)?;
            let report = report::eval_report(
                &assessments,
                &truth,
                &table.timestamps,
                (enter_after, leave_after),
            );
            if json || output == Output::Json {
                emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                emit(&report.to_string())?;
            }
        }
        Command::Inspect {
            model,
            output,
            json,
        } => {
            if json {
                deprecated("--json", "--output json");
            }
            let model = Model::load(&model)?;
            if json || output == Output::Json {
                emit(&model.to_json())?;
            } else {
                emit(&report::inspect(&model))?;
            }
        }
        Command::Synth { out, seed, set } => write_synthetic(&out, seed, set)?,
        Command::Bench {
            rows,
            dims,
            k,
            n_init,
            max_iterations,
            repeats,
            threads,
            no_sklearn,
            python,
        } => {
            let defaults = BenchOptions::default();
            let options = BenchOptions {
                rows,
                dims,
                k,
                n_init,
                max_iterations,
                repeats,
                threads,
                python,
                sklearn_script: if no_sklearn {
                    None
                } else {
                    defaults.sklearn_script.clone()
                },
                ..defaults
            };
            let report = model::bench::run(&options)?;
            emit(&bench_text(&report))?;
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "model", &mut script);
            emit(&String::from_utf8_lossy(&script))?;
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            emit(&String::from_utf8_lossy(&page))?;
        }
    }
    Ok(())
}
