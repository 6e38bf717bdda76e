use anyhow::Context as _;
use collector::{
    cli::{Cli, Command, LogFormat, OutputFormat},
    daemon::{self, CollectOptions, RunFor, SinkSpec},
};
use tracing_subscriber::EnvFilter;

fn init_logging(level: &str, given: bool, format: LogFormat) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let level = collector::cli::log_filter(level, given, rust_log.as_deref());
    let filter = EnvFilter::try_new(&level).with_context(|| {
        format!(
            "--log-level (or NODESTATE_LOG, RUST_LOG) `{level}` is not a level or tracing filter"
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not for log files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Writes `bytes` to standard output; a reader that closed the pipe early is not an error.
fn print_ignoring_closed_pipe(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

/// `detect`'s exit code when the node is still learning its baseline (README "Exit codes").
const DETECT_STILL_LEARNING: i32 = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = collector::config::merge_config_file(std::env::args_os().collect())?;
    let (cli, log_level_given) = Cli::parse_with_sources(args);
    init_logging(&cli.log_level, log_level_given, cli.log_format)?;
    match cli.command {
        Command::Run(args) => {
            args.collect.validate().map_err(anyhow::Error::msg)?;
            let builtin = args
                .model
                .as_deref()
                .is_some_and(|m| m.as_os_str() == collector::judge::BUILTIN_MODEL);
            if builtin && args.collect.window != collector::judge::BUILTIN_MODEL_WINDOW {
                tracing::warn!(
                    window_s = args.collect.window.as_secs_f64(),
                    "the builtin model was trained on 2 s windows and some of its features are \
                     counts per window (OOM kills, slow requests): run it with --window 2s"
                );
            }
            args.auto_block
                .validate(&args.collect)
                .map_err(anyhow::Error::msg)?;
            let options = CollectOptions {
                window: args.collect.window,
                kernel: args.collect.kernel_config(),
                xdp: args.collect.xdp_options(),
                node: daemon::node_name(),
                listen: Some(args.listen),
                metrics: args.metrics,
                assessor: Some(args.assessor_options()),
                auto_block: args.auto_block.policy(),
                kube_api: args.kube_api(),
            };
            daemon::run(options, SinkSpec::LogOnly, RunFor::UntilSignalled).await
        }
        Command::Blocklist(args) => collector::xdp::cli::run(args),
        Command::Probes(args) => {
            let options = collector::kernel::exercise::ExerciseOptions {
                block_device: args.block_device.clone(),
            };
            let report =
                collector::kernel::probe_report::probe_report(args.exercise.then_some(&options))?;
            match args.output {
                OutputFormat::Table => print!("{report}"),
                OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
            }
            match &report.exercise {
                Some(exercise) if !exercise.all_counted => {
                    let missed: Vec<String> = exercise
                        .lines
                        .iter()
                        .filter(|line| line.result != "counted")
                        .map(|line| format!("{} ({})", line.what, line.result))
                        .collect();
                    anyhow::bail!("caused but not counted: {}", missed.join(", "))
                }
                _ => Ok(()),
            }
        }
        Command::Detect(args) => {
            args.prometheus_client.install()?;
            let answer = match &args.prometheus {
                Some(prometheus) => cluster::detect::cluster_answer(prometheus, &args.range)?,
                None => {
                    cluster::detect::answer_from_state(&cluster::detect::node_state(&args.node)?)?
                }
            };
            if args.output == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({"answer": answer.word(), "learning": answer.word().is_none()})
                );
            }
            let Some(word) = answer.word() else {
                eprintln!(
                    "the node is still learning its baseline: it cannot tell yet{}",
                    if args.submit.is_some() {
                        " (nothing submitted)"
                    } else {
                        ""
                    }
                );
                std::process::exit(DETECT_STILL_LEARNING);
            };
            if args.output == OutputFormat::Table {
                println!("{word}");
            }
            if let Some(url) = &args.submit {
                let conductor = cluster::conductor::Conductor::locate(url)?;
                let patience = cluster::conductor::Patience {
                    wait: args.wait,
                    busy_for: args.busy_for,
                    ..Default::default()
                };
                let kind = cluster::conductor::AnswerKind::Detection;
                // Blocking HTTP with sleeps between retries: off the async runtime's threads.
                let submitted = tokio::task::spawn_blocking(move || {
                    conductor
                        .submit(kind, word, patience)
                        .map(|reply| (conductor, reply))
                })
                .await?;
                match submitted {
                    Ok((conductor, reply)) => {
                        eprintln!("submitted {word} to {}: {}", conductor.base(), reply.trim())
                    }
                    Err(refusal) => {
                        eprintln!("error: {refusal}");
                        std::process::exit(refusal.exit_code().into());
                    }
                }
            }
            Ok(())
        }
        Command::Diagnose(args) => {
            args.prometheus_client.install()?;
            let conductor = match &args.submit {
                Some(url) => Some(cluster::conductor::Conductor::locate(url)?),
                None => None,
            };
            let diagnosis = tokio::task::spawn_blocking(move || {
                let findings = match &args.prometheus {
                    Some(prometheus) => {
                        cluster::diagnose::cluster_findings(prometheus, &args.range)?
                    }
                    None => cluster::diagnose::node_findings(&args.node)?,
                };
                let mut namespaces = args.namespace.clone();
                if namespaces.is_empty()
                    && let Some(conductor) = &conductor
                {
                    // The application's namespaces scope the culprits; a conductor that cannot
                    // say them costs the scope, not the answer.
                    match conductor.app_namespaces() {
                        Ok(found) => namespaces = found,
                        Err(err) => tracing::warn!(
                            "{err:#}: the diagnosis is not scoped to the application's namespaces"
                        ),
                    }
                }
                let diagnosis = cluster::diagnose::diagnose(&findings, &namespaces);
                let all_learning = findings.nodes.is_empty() && !findings.learning.is_empty();
                anyhow::Ok((diagnosis, all_learning, args, conductor))
            })
            .await??;
            let (diagnosis, all_learning, args, conductor) = diagnosis;
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&diagnosis)?),
                OutputFormat::Table => println!("{}", diagnosis.text()),
            }
            if let Some(conductor) = conductor {
                if all_learning {
                    eprintln!(
                        "every node is still learning its baseline: it cannot tell yet (nothing submitted)"
                    );
                    std::process::exit(DETECT_STILL_LEARNING);
                }
                let patience = cluster::conductor::Patience {
                    wait: args.wait,
                    busy_for: args.busy_for,
                    ..Default::default()
                };
                let text = diagnosis.text();
                let kind = cluster::conductor::AnswerKind::Diagnosis;
                let submitted = tokio::task::spawn_blocking(move || {
                    conductor
                        .submit(kind, &text, patience)
                        .map(|reply| (conductor, reply))
                })
                .await?;
                match submitted {
                    Ok((conductor, reply)) => {
                        eprintln!(
                            "submitted the diagnosis to {}: {}",
                            conductor.base(),
                            reply.trim()
                        )
                    }
                    Err(refusal) => {
                        eprintln!("error: {refusal}");
                        std::process::exit(refusal.exit_code().into());
                    }
                }
            }
            Ok(())
        }
        Command::Top(args) => {
            let options = args.options();
            tokio::task::spawn_blocking(move || collector::top::run(&options)).await?
        }
        Command::Rank(args) => {
            if args.json {
                eprintln!("warning: --json is deprecated: use --output json");
            }
            let options = args.options();
            tokio::task::spawn_blocking(move || cluster::rank::run(&options)).await?
        }
        Command::Mcp(args) => {
            args.prometheus_client.install()?;
            let sources = cluster::mcp::Sources {
                node: args.node,
                prometheus: args.prometheus,
            };
            match args.http {
                Some(listen) => cluster::mcp::serve_http(sources, listen).await,
                None => cluster::mcp::serve_stdio(sources).await,
            }
        }
        Command::Extender(args) => {
            args.prometheus_client.install()?;
            let options = args.options().map_err(anyhow::Error::msg)?;
            cluster::extender::run(args.listen, options).await
        }
        Command::Record(args) => {
            args.collect.validate().map_err(anyhow::Error::msg)?;
            let windows = args
                .duration
                .as_secs_f64()
                .div_euclid(args.collect.window.as_secs_f64())
                .max(1.0) as u64;
            let options = CollectOptions {
                window: args.collect.window,
                kernel: args.collect.kernel_config(),
                xdp: args.collect.xdp_options(),
                node: daemon::node_name(),
                listen: None,
                metrics: collector::export::MetricSet::Default,
                assessor: None,
                auto_block: None,
                kube_api: None,
            };
            daemon::run(
                options,
                SinkSpec::JsonLines(args.out),
                RunFor::Windows(windows),
            )
            .await
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Into memory first: clap_complete panics when its writer fails (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "collector", &mut script);
            print_ignoring_closed_pipe(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            print_ignoring_closed_pipe(&page)
        }
    }
}
