//! Command-line interface of the `collector` binary.

//!
//! Split by what the options serve: `run.rs` holds the options of the commands that load the
//! kernel programs and collect (`run`, `record`) and their checks; `query.rs` those of the
//! commands that read what daemons serve (`top`, `rank`, `extender`, `detect`, `diagnose`,
//! `mcp`).
//! Here: the command itself, its subcommands, logging, `probes` and the shared parsers.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod query;
mod run;

pub use query::{DetectArgs, DiagnoseArgs, ExtenderArgs, McpArgs, RankArgs, TopArgs};
pub use run::{AutoBlockArgs, CollectArgs, RecordArgs, RunArgs};

/// nodestate collector: tells, per node and per time window, whether the machine is healthy or
/// degraded, from eBPF programs on the kernel's own tracepoints.
///
/// Needs root (or CAP_BPF + CAP_PERFMON) to load its kernel programs.
#[derive(Debug, Parser)]
#[command(name = "collector", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log level: error, warn, info, debug or trace (or a tracing filter such as
    /// "collector=debug"). Without this flag and NODESTATE_LOG, RUST_LOG is read; the flag
    /// wins over NODESTATE_LOG, which wins over RUST_LOG.
    #[arg(long, global = true, env = "NODESTATE_LOG", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log format: human-readable text, or one JSON object per line for log shippers.
    #[arg(long, global = true, env = "NODESTATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The log filter: `--log-level` (or `NODESTATE_LOG`) when given, else `RUST_LOG` (the
/// variable every Rust program's users know) when set, else the default "info".
/// `log_level_given` says whether `log_level` came from the flag or NODESTATE_LOG rather than
/// the default; `rust_log` is `RUST_LOG`'s value.
pub fn log_filter(log_level: &str, log_level_given: bool, rust_log: Option<&str>) -> String {
    match rust_log.filter(|text| !text.trim().is_empty()) {
        Some(rust_log) if !log_level_given => rust_log.to_string(),
        _ => log_level.to_string(),
    }
}

impl Cli {
    /// Parses `args` (exits with clap's message on an error, as `Parser::parse_from`), and
    /// says whether `--log-level` was given (flag, NODESTATE_LOG or the config file) rather
    /// than defaulted.
    pub fn parse_with_sources(args: Vec<std::ffi::OsString>) -> (Self, bool) {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Self::command().get_matches_from(args);
        let given = !matches!(
            matches.value_source("log_level"),
            None | Some(clap::parser::ValueSource::DefaultValue)
        );
        let cli = Self::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        (cli, given)
    }
}

fn parse_log_level(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|err| format!("`{text}` is not a level or tracing filter ({err})"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon on this node: load the kernel programs, cut time into windows and log a
    /// one-line summary per window, until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Collect windows for a fixed time and write them to a file (JSON Lines, one window per
    /// line) for `model train`.
    Record(RecordArgs),
    /// Show which hook each signal gets on this kernel (kprobe, tracepoint fallback, or
    /// missing) and why, then exit. `--exercise` also causes each signal it safely can and
    /// reports, per signal, caused against counted.
    Probes(ProbesArgs),
    /// Edit the XDP drop list (source addresses and CIDRs dropped on `--xdp-iface`
    /// interfaces), pinned under bpffs; works whether or not the daemon runs. Root only.
    Blocklist(crate::xdp::cli::BlocklistArgs),
    /// Answer a fault-detection oracle: print "Yes" if the node (or, with --prometheus, any
    /// node of the cluster) is degraded, else "No"; a node still learning its baseline prints
    /// nothing and exits 5. --submit asks the benchmark's conductor its stage and POSTs
    /// {"solution": "Yes"|"No"} to a detection stage.
    Detect(DetectArgs),
    /// State the root cause as the fault benchmarks structure one (component, namespace,
    /// description), from evidence: which node(s) are degraded and since when, which signals
    /// moved and by how much, and which workloads drive them. From one node (--node) or a
    /// cluster (--prometheus, over --range). Nothing degraded: component "none", exit 0.
    /// --submit asks the benchmark's conductor its stage and POSTs the text to a diagnosis
    /// stage (exit codes as detect's).
    Diagnose(DiagnoseArgs),
    /// Print the node's rank for schedulers, 0-100, higher is healthier (healthy nodes rank
    /// 60-100, learning ones 50, degraded ones 0-40; README "Schedulers"), read from its
    /// daemon's /rank. --elim prints OpenLava/LSF elim lines, `1 rank <value>`, every
    /// --interval until stdout closes.
    Rank(RankArgs),
    /// Run a kube-scheduler extender: POST /filter keeps pods off degraded nodes, POST
    /// /prioritize scores nodes by rank (0-10), both from the node states in --prometheus.
    /// Fails open when Prometheus cannot be read (see --on-prometheus-error). Example
    /// scheduler configuration: deploy/scheduler-extender.yaml.
    Extender(ExtenderArgs),
    /// Serve the Model Context Protocol so an SRE agent can ask nodestate directly: tools
    /// node_states (every node's state, score, rank), explain_node (why a node is in its
    /// state), detect (the Yes/No of a fault-detection task), diagnose (the root cause with
    /// its evidence) and top_workloads (what each workload does). Read-only: no tool edits
    /// anything. On stdin/stdout by default; --http serves MCP's streamable HTTP at /mcp.
    Mcp(McpArgs),
    /// Print a shell completion script for this command (the release packages ship them).
    #[command(hide = true)]
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
    /// Print this command's man page (roff; the release packages ship it).
    #[command(hide = true)]
    Man,
    /// Per workload (pod and container, container, service or cgroup), per signal, the
    /// daemon's last window, like `top`: on-CPU time, I/O issued, syscall errors, non-zero
    /// exits, fatal signals, OOM kills, TCP failures, and the waits they suffer, with the
    /// culprits while the node is degraded. Read from the daemon's /workloads. Without a
    /// terminal it prints one snapshot and exits; with one it refreshes every --interval.
    Top(TopArgs),
}

#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// Cause the signals that are cheap and safe to cause (failing opens, fsyncs of a temporary
    /// file, forks, a child that exits 3, a child killed by SIGSEGV, a TCP connect to a
    /// loopback listener and a refused loopback connect) and report, per signal, how many were
    /// caused and counted. Takes a few seconds; no traffic leaves loopback. Exits non-zero
    /// when a caused event was not counted.
    #[arg(long)]
    pub exercise: bool,

    /// With --exercise, also read up to 64 blocks of 4 KiB from this block device (direct
    /// I/O, read-only: nothing is written) and check the block programs counted them.
    #[arg(long, value_name = "PATH", requires = "exercise")]
    pub block_device: Option<std::path::PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub use crate::output::OutputFormat;

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("`{text}` is not a duration ({err}); write e.g. 5s, 250ms, 2m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Every subcommand (nested ones too, hidden or not, whoever adds them), depth first,
    /// with its path, e.g. "collector blocklist add".
    fn every_command(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        // clap's own `help` subcommand is not ours to document.
        for sub in command
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help")
        {
            let path = format!("{path} {}", sub.get_name());
            out.push((path.clone(), sub.clone()));
            every_command(sub, &path, out);
        }
    }

    fn commands() -> Vec<(String, clap::Command)> {
        use clap::CommandFactory;
        let mut root = Cli::command();
        root.build();
        let mut out = vec![("collector".to_string(), root.clone())];
        every_command(&root, "collector", &mut out);
        out
    }

    #[test]
    fn every_argument_and_command_has_help_text() {
        let mut missing = Vec::new();
        for (path, command) in commands() {
            if path != "collector" && command.get_about().is_none() {
                missing.push(format!("{path} (the command itself)"));
            }
            for argument in command.get_arguments() {
                if matches!(argument.get_id().as_str(), "help" | "version") {
                    continue;
                }
                let help = argument.get_help().map(ToString::to_string);
                if help.is_none_or(|text| text.trim().is_empty()) {
                    missing.push(format!("{path}: {}", argument.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    /// Commands whose output no script reads: they run until stopped (`run`, `extender`,
    /// `mcp`, `rank --elim` aside) or write a file (`record`). Every other command (one added
    /// later too) must offer `--output json`.
    /// Commands whose output is a service, a file, or a script/page in a format of its own.
    const NO_MACHINE_OUTPUT: [&str; 6] = [
        "collector run",
        "collector record",
        "collector extender",
        "collector mcp",
        "collector completions",
        "collector man",
    ];

    #[test]
    fn every_command_a_script_reads_has_output_json_and_no_other_spelling() {
        let mut wrong = Vec::new();
        for (path, command) in commands() {
            // Groups of subcommands (`blocklist`) print nothing of their own.
            if command.has_subcommands() || NO_MACHINE_OUTPUT.contains(&path.as_str()) {
                continue;
            }
            let output = command
                .get_arguments()
                .find(|argument| argument.get_long() == Some("output"));
            match output {
                None => wrong.push(format!("{path}: no --output")),
                Some(output) => {
                    let values: Vec<String> = output
                        .get_possible_values()
                        .iter()
                        .map(|value| value.get_name().to_string())
                        .collect();
                    if !values.iter().any(|value| value == "json") {
                        wrong.push(format!("{path}: --output takes {values:?}, not json"));
                    }
                }
            }
            // The old spellings stay for one release, hidden: help shows one way.
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
    fn nodestate_log_wins_over_rust_log_which_wins_over_the_default() {
        let given = |args: &[&str]| {
            let args = args.iter().map(std::ffi::OsString::from).collect();
            let (cli, given) = Cli::parse_with_sources(args);
            (cli.log_level, given)
        };
        // These run with the test's environment: only meaningful without NODESTATE_LOG.
        if std::env::var_os("NODESTATE_LOG").is_none() {
            let (level, from_user) = given(&["collector", "probes"]);
            assert!(!from_user);
            assert_eq!(log_filter(&level, from_user, Some("debug")), "debug");
            assert_eq!(log_filter(&level, from_user, None), "info");
            assert_eq!(log_filter(&level, from_user, Some(" ")), "info");
            let (level, from_user) = given(&["collector", "--log-level", "warn", "probes"]);
            assert!(from_user);
            assert_eq!(log_filter(&level, from_user, Some("debug")), "warn");
        }
        // NODESTATE_LOG counts as given, as the flag does.
        let cli = Cli::try_parse_from(["collector", "probes"]).unwrap();
        assert_eq!(
            log_filter(&cli.log_level, true, Some("trace")),
            cli.log_level
        );
    }
}
