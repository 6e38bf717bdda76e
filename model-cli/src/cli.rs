//! The command line: every subcommand and flag, with the help text `--help` and the man page
//! show, and the parsers that check a value before any work starts.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use model::{
    hysteresis::{DEFAULT_ENTER_AFTER, DEFAULT_LEAVE_AFTER},
    model::{DEFAULT_MIN_HEALTHY_SHARE, DEFAULT_THRESHOLD_MARGIN, DEFAULT_THRESHOLD_PERCENTILE},
};

/// nodestate's model: train k-means health states on recorded windows, score windows, and
/// evaluate detection against labels.
///
/// `train --prometheus URL --since 6h` reads the windows of a whole node pool from the
/// Prometheus that scrapes the daemons instead of files.
///
/// Inputs are the daemon's JSON Lines (`collector record`; `.jsonl`, `.json`, `.ndjson`, or
/// any file starting with `{`) or CSV with a header row of numeric columns (a first row of
/// numbers means no header: columns are then named 0, 1, …); a `timestamp` column (RFC 3339
/// or epoch seconds) and a `label` column (0/1) are recognised and are not features.
#[derive(Debug, Parser)]
#[command(name = "model", version, about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

// Parsed once per run: the size of its largest variant costs nothing.
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once; boxing the big variant buys nothing"
)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Fit a model on windows and write it (versioned JSON).
    Train {
        /// Window files (JSON Lines or .csv). With several, the columns all have are used.
        #[arg(long, short, num_args = 1.., required_unless_present = "prometheus", conflicts_with = "prometheus")]
        input: Vec<PathBuf>,
        /// Fleet training: read the windows of every node a Prometheus scrapes (their
        /// `nodestate_feature` series) instead of files, e.g. http://prometheus:9090. One model
        /// for the whole node pool; rows per node are printed before the model summary.
        #[arg(long)]
        prometheus: Option<String>,
        #[command(flatten)]
        prometheus_client: cluster::promql::PrometheusClientArgs,
        /// With --prometheus: how far back to read, e.g. "6h", "30m".
        #[arg(long, value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// With --prometheus: PromQL label matchers choosing the nodes, e.g.
        /// 'node=~"pool-a.*"' or 'job="nodestate",cluster="eu-1"'.
        #[arg(long)]
        selector: Option<String>,
        /// With --prometheus: one row per node every step; set it to the daemons' --window.
        /// Default: the largest window the selected daemons report (`window_s`, to 100 ms).
        #[arg(long, value_parser = parse_duration)]
        step: Option<std::time::Duration>,
        /// With --prometheus: the label that names the node.
        #[arg(long, default_value = "node")]
        node_label: String,
        /// With --prometheus: also write the rows read as JSON Lines (window records with a
        /// `node` field); `model train --input` on that file trains the same model.
        #[arg(long)]
        save_windows: Option<PathBuf>,
        /// The model file to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Number of clusters.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// Labels for the training rows: a CSV with a 0/1 `label` column (one row per input
        /// row) or `start`,`end` fault segments. Clusters then take their majority's state.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Seed of the k-means++ initialisations: the same data and seed give the same model.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Independent k-means++ initialisations; the lowest inertia wins.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Most Lloyd iterations of one k-means run before it stops unconverged.
        #[arg(long, default_value_t = 300)]
        max_iterations: u64,
        /// With `--threshold-rule percentile` (or when the tail rule falls back): the
        /// percentile of the healthy training windows' scores that sets the threshold.
        #[arg(long, default_value_t = DEFAULT_THRESHOLD_PERCENTILE)]
        threshold_percentile: f64,
        /// Factor over that percentile.
        #[arg(long, default_value_t = DEFAULT_THRESHOLD_MARGIN)]
        threshold_margin: f64,
        /// Without labels, clusters with less than this share of the windows are degraded.
        #[arg(long, default_value_t = DEFAULT_MIN_HEALTHY_SHARE)]
        min_healthy_share: f64,
        /// Train on these features only, e.g. 'psi_*,*_errors_per_s,mem_oom_kills' (`*`
        /// matches any run of characters; derived features such as *_fraction count). The
        /// model then needs only their fields. Default: every numeric field.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// Multiply the smallest spread each feature is given (0.1 log units, about 10%; one
        /// point of a *_pct share; 0.01 of a fraction) by this. Above 1 for a model meant for
        /// other nodes than the one its windows came from: their normal is wider.
        #[arg(long, default_value_t = 1.0)]
        floor_scale: f64,
        /// The threshold is at least this many standard deviations (or floors) from the
        /// nearest healthy centroid, whatever the training windows' own spread. Default: no
        /// minimum beyond 0.1.
        #[arg(long, default_value_t = 0.0)]
        min_threshold: f64,
        /// How the threshold is set: `tail` (the default: a generalized Pareto fit to the
        /// episodes in the healthy scores' tail, for --false-alarm-rate; falls back to the
        /// percentile with fewer than about a thousand training windows, and the summary says
        /// so) or `percentile` (--threshold-percentile times --threshold-margin).
        #[arg(long, value_enum, default_value_t = RuleArg::Tail)]
        threshold_rule: RuleArg,
        /// With `--threshold-rule tail`: the probability, per window, that a healthy window
        /// starts a false alarm. Default: one per day of 5 s windows.
        #[arg(long, default_value_t = model::model::DEFAULT_FALSE_ALARM_RATE, value_parser = parse_probability)]
        false_alarm_rate: f64,
        /// At most this share of the training windows is dropped as unlabelled incidents
        /// (windows far in the tail of the first fit's scores) before fitting again; 0 turns
        /// trimming off. The summary says how many were dropped.
        #[arg(long, default_value_t = model::model::DEFAULT_TRIM, value_parser = parse_trim)]
        trim: f64,
        /// How each feature's centre and spread are measured before the floors: `robust`
        /// (median; spread of the values clipped to their 1st-99th percentiles, so a few
        /// windows far out cannot widen it) or `standard` (mean and standard deviation).
        #[arg(long, value_enum, default_value_t = ScalingArg::Robust)]
        scaling: ScalingArg,
        /// Measure each cluster's own spread (median absolute deviation per feature, within
        /// clusters of 50 windows or more) in the features whose healthy modes lie apart (a
        /// busy and a quiet half), and score distances to a healthy centroid in it, so a
        /// window far from its own mode stands out (a CPU at 97% beside a busy mode at 55%
        /// and a quiet one at 15%). On by default; `--spread-per-mode=false`: the scaler's
        /// spread alone, as models before it.
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        spread_per_mode: bool,
        /// "json" prints one JSON object on stdout ({"out", "model", and with --prometheus
        /// "fleet": what was read}) instead of the text summary, which then goes to stderr.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Score windows: one output row per input row (score, cluster, state, explanation).
    Score {
        /// The model file (`model train --out`).
        #[arg(long, short)]
        model: PathBuf,
        /// The windows to score (JSON Lines or .csv).
        #[arg(long, short)]
        input: PathBuf,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// "csv" (a header row, then one row per window) or "json" (JSON Lines: one object
        /// per window).
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        output: Format,
        /// Deprecated spelling of --output (`--format jsonl` is `--output json`).
        #[arg(long, value_enum, hide = true, conflicts_with = "output")]
        format: Option<Format>,
        /// Judge as the daemon judges a model of saturation, error and latency signals (its
        /// built-in model): only a rise of such a signal is evidence, and a latency of 0 (no
        /// sample in the window) is left out of that window's score.
        #[arg(long)]
        signals: bool,
    },
    /// Compare the model's verdicts with labels: precision, recall, F1, point-adjusted F1,
    /// time to detect per fault segment, and a hysteresis sweep.
    Eval {
        /// The model file (`model train --out`).
        #[arg(long, short)]
        model: PathBuf,
        /// The windows to judge (JSON Lines or .csv), in time order.
        #[arg(long, short)]
        input: PathBuf,
        /// A CSV with a 0/1 `label` column (one row per input row) or `start`,`end` fault
        /// segments (timestamps; the input rows then need a timestamp).
        #[arg(long, short)]
        labels: PathBuf,
        /// Hysteresis for the node-state line: enter degraded after N anomalous windows.
        #[arg(long, default_value_t = DEFAULT_ENTER_AFTER)]
        enter_after: u32,
        /// …and leave after M normal ones.
        #[arg(long, default_value_t = DEFAULT_LEAVE_AFTER)]
        leave_after: u32,
        /// "table" for people; "json" prints the report as one JSON object.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Deprecated spelling of `--output json` (kept for one release).
        #[arg(long, hide = true, conflicts_with = "output")]
        json: bool,
        /// Judge as the daemon judges a model of saturation, error and latency signals (its
        /// built-in model): only a rise of such a signal is evidence, and a latency of 0 (no
        /// sample in the window) is left out of that window's score.
        #[arg(long)]
        signals: bool,
    },
    /// Show what a model holds.
    Inspect {
        /// The model file to show.
        model: PathBuf,
        /// "table" for people; "json" prints the model file's JSON (normalized).
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Deprecated spelling of `--output json` (kept for one release).
        #[arg(long, hide = true, conflicts_with = "output")]
        json: bool,
    },
    /// Write the synthetic server-metric data set (train.csv, test.csv, test_labels.csv,
    /// test_segments.csv) used by the tests and the README's examples, or with --set one of
    /// the sets with what real data has (3000 training and 2000 test windows each):
    /// heavy-tails (Pareto latencies, log-normal rates, bursty errors), contaminated (4%
    /// unlabelled incidents in the training part), drift (load, memory and latency growing
    /// through train and test), shapes (24 correlated features of very different scales).
    Synth {
        /// Directory to write the CSV files into (created if missing).
        #[arg(long, short)]
        out: PathBuf,
        /// Seed of the generator: the same seed writes the same data.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// A named set instead of the default small one.
        #[arg(long, value_parser = parse_set)]
        set: Option<model::synthetic::SyntheticSet>,
    },
    /// Training time against scikit-learn and per-window inference time.
    #[command(hide = true)]
    Bench {
        /// Rows of the synthetic training set.
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// Features (columns) of each row.
        #[arg(long, default_value_t = 16)]
        dims: usize,
        /// Number of clusters.
        #[arg(long, default_value_t = 8)]
        k: usize,
        /// k-means++ initialisations per fit.
        #[arg(long, default_value_t = 10)]
        n_init: usize,
        /// Most Lloyd iterations per run.
        #[arg(long, default_value_t = 300)]
        max_iterations: u64,
        /// Fits timed per side; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Threads for each side (`model train`'s k-means runs; scikit-learn's OpenMP and BLAS
        /// pools); 0 = the machine's available parallelism.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Skip the scikit-learn side.
        #[arg(long)]
        no_sklearn: bool,
        /// The Python interpreter with scikit-learn.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Print a shell completion script for this command (the release packages ship them).
    #[command(hide = true)]
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
    /// Print this command's man page (roff; the release packages ship it).
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A header row, then one row per window.
    Csv,
    /// JSON Lines: one object per window.
    #[value(alias = "jsonl")]
    Json,
}

/// How a command prints what it reports (`--output`), as `collector`'s commands do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Text for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

/// `model train --threshold-rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RuleArg {
    Percentile,
    Tail,
}

/// `model train --scaling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScalingArg {
    Robust,
    Standard,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("`{text}` is not a duration ({err}); write e.g. 30s, 10m, 6h"))
}

fn parse_set(text: &str) -> Result<model::synthetic::SyntheticSet, String> {
    model::synthetic::SyntheticSet::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = model::synthetic::SyntheticSet::ALL
            .iter()
            .map(|set| set.name())
            .collect();
        format!("no set named {text:?}; the sets are {}", names.join(", "))
    })
}

fn parse_trim(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|err| format!("{text}: {err}"))?;
    if (0.0..=0.5).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{text} is not a share between 0 and 0.5 of the training windows (0: no trimming)"
        ))
    }
}

fn parse_probability(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|err| format!("{text}: {err}"))?;
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(format!(
            "{text} is not a probability between 0 and 1 (exclusive)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every subcommand, hidden ones too (clap's own `help` aside), with its path.
    fn commands() -> Vec<(String, clap::Command)> {
        let mut root = Cli::command();
        root.build();
        let mut out = Vec::new();
        let mut stack = vec![("model".to_string(), root)];
        while let Some((path, command)) = stack.pop() {
            for sub in command
                .get_subcommands()
                .filter(|sub| sub.get_name() != "help")
            {
                stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
            }
            out.push((path, command));
        }
        out
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_and_command_has_help_text() {
        let mut missing = Vec::new();
        for (path, command) in commands() {
            if command.get_about().is_none() {
                missing.push(format!("{path} (the command itself)"));
            }
            for argument in command.get_arguments() {
                if matches!(argument.get_id().as_str(), "help" | "version") {
                    continue;
                }
                if argument
                    .get_help()
                    .is_none_or(|help| help.to_string().trim().is_empty())
                {
                    missing.push(format!("{path}: {}", argument.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    /// Commands whose output no script reads: `synth` writes files, `bench` is for people,
    /// `completions` and `man` print a script and a page in formats of their own.
    const NO_MACHINE_OUTPUT: [&str; 4] = [
        "model synth",
        "model bench",
        "model completions",
        "model man",
    ];

    #[test]
    fn every_command_a_script_reads_has_output_json_and_no_other_spelling() {
        let mut wrong = Vec::new();
        for (path, command) in commands() {
            if command.has_subcommands() || NO_MACHINE_OUTPUT.contains(&path.as_str()) {
                continue;
            }
            match command
                .get_arguments()
                .find(|argument| argument.get_long() == Some("output"))
            {
                Some(output)
                    if output
                        .get_possible_values()
                        .iter()
                        .any(|value| value.get_name() == "json") => {}
                _ => wrong.push(format!("{path}: no --output json")),
            }
            for argument in command.get_arguments() {
                if matches!(argument.get_long(), Some("json" | "format")) && !argument.is_hide_set()
                {
                    wrong.push(format!("{path}: visible --{}", argument.get_id()));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn old_spellings_still_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.command);
        let Command::Score { output, format, .. } =
            parse(&["model", "score", "-m", "m", "-i", "i", "--format", "jsonl"]).unwrap()
        else {
            panic!("expected score")
        };
        assert_eq!((output, format), (Format::Csv, Some(Format::Json)));
        let Command::Score { output, .. } =
            parse(&["model", "score", "-m", "m", "-i", "i", "--output", "json"]).unwrap()
        else {
            panic!("expected score")
        };
        assert_eq!(output, Format::Json);
        assert!(parse(&["model", "inspect", "m", "--json"]).is_ok());
        assert!(parse(&["model", "inspect", "m", "--json", "--output", "json"]).is_err());
        assert!(parse(&["model", "eval", "-m", "m", "-i", "i", "-l", "l", "--json"]).is_ok());
    }
}
