use anyhow::Context as _;
use clap::Parser as _;
use collector::{
    cli::{Cli, Command, LogFormat, OutputFormat},
    daemon::{self, CollectOptions, RunFor, SinkSpec},
};
use tracing_subscriber::EnvFilter;

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("--log-level `{level}` is not a level or tracing filter"))?;
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

/// `detect`'s exit code when the node is still learning its baseline (README "Exit codes").
const DETECT_STILL_LEARNING: i32 = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = collector::config::merge_config_file(std::env::args_os().collect())?;
    let cli = Cli::parse_from(args);
    init_logging(&cli.log_level, cli.log_format)?;
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
                assessor: Some(args.assessor_options()),
                auto_block: args.auto_block.policy(),
                kube_api: args.kube_api(),
            };
            daemon::run(options, SinkSpec::LogOnly, RunFor::UntilSignalled).await
        }
        Command::Blocklist(args) => collector::xdp::cli::run(args),
        Command::Probes(args) => {
            let report = collector::kernel::probe_report::probe_report(args.exercise)?;
            match args.output {
                OutputFormat::Table => print!("{report}"),
                OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
            }
            Ok(())
        }
        Command::Detect(args) => {
            let answer = match &args.prometheus {
                Some(prometheus) => cluster::detect::cluster_answer(prometheus, &args.range)?,
                None => {
                    cluster::detect::answer_from_state(&cluster::detect::node_state(&args.node)?)?
                }
            };
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
            println!("{word}");
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
        Command::Top(args) => {
            let options = args.options();
            tokio::task::spawn_blocking(move || collector::top::run(&options)).await?
        }
        Command::Rank(args) => {
            let options = args.options();
            tokio::task::spawn_blocking(move || cluster::rank::run(&options)).await?
        }
        Command::Mcp(args) => {
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
    }
}
