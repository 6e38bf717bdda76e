//! Command-line interface of the `collector` binary.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::kernel::{KernelConfig, ProgramStatsMode};

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
pub struct TopArgs {
    /// The node's daemon, e.g. http://127.0.0.1:9464 (its /workloads is read).
    #[arg(long, env = "NODESTATE_NODE", default_value = "http://127.0.0.1:9464")]
    pub node: String,

    /// Sort by this signal, highest first: oncpu_time, io_issued, errors, exits_nonzero,
    /// fatal_signals, oom_victims, tcp_failures, runq_wait, io_latency, reclaim_stall.
    #[arg(long, default_value = "oncpu_time", value_parser = parse_signal)]
    pub sort: crate::judge::culprits::Signal,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// How often a terminal's view refreshes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Show at most this many workloads.
    #[arg(long)]
    pub limit: Option<usize>,
}

impl TopArgs {
    pub fn options(&self) -> crate::top::TopOptions {
        crate::top::TopOptions {
            node: self.node.clone(),
            sort: self.sort,
            output: self.output,
            interval: self.interval,
            limit: self.limit,
        }
    }
}

fn parse_signal(name: &str) -> Result<crate::judge::culprits::Signal, String> {
    crate::judge::culprits::Signal::parse(name).ok_or_else(|| {
        let names: Vec<&str> = crate::judge::culprits::Signal::ALL
            .iter()
            .map(|signal| signal.as_str())
            .collect();
        format!("unknown signal `{name}`: use one of {}", names.join(", "))
    })
}

#[derive(Debug, Args)]
pub struct RankArgs {
    /// The node's daemon, e.g. http://127.0.0.1:9464 (its /rank is read).
    #[arg(long, env = "NODESTATE_NODE", default_value = "http://127.0.0.1:9464")]
    pub node: String,

    /// OpenLava/LSF elim mode: print `1 rank <value>` every --interval, flushed, forever.
    #[arg(long)]
    pub elim: bool,

    /// How often --elim reports, e.g. "15s".
    #[arg(long, default_value = "15s", value_parser = parse_duration, requires = "elim")]
    pub interval: Duration,

    /// With --elim: stop after this many lines (default: until stdout closes).
    #[arg(long, requires = "elim")]
    pub count: Option<u64>,

    /// With --elim: the rank reported while the daemon cannot be read (default: the neutral
    /// rank of a node still learning, so a stopped daemon neither attracts nor repels jobs).
    #[arg(long, default_value_t = model::rank::NEUTRAL_RANK, value_parser = parse_rank, requires = "elim")]
    pub unreachable_rank: f64,

    /// "json" prints the daemon's whole /rank answer as JSON (node, rank, state, score,
    /// threshold); "table" the rank alone.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, conflicts_with = "elim")]
    pub output: OutputFormat,

    /// Deprecated spelling of `--output json` (kept for one release).
    #[arg(long, hide = true, conflicts_with_all = ["elim", "output"])]
    pub json: bool,
}

impl RankArgs {
    pub fn options(&self) -> cluster::rank::RankOptions {
        cluster::rank::RankOptions {
            node: self.node.clone(),
            elim: self.elim,
            interval: self.interval,
            count: self.count,
            unreachable_rank: self.unreachable_rank,
            json: self.json || self.output == OutputFormat::Json,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExtenderArgs {
    /// Address kube-scheduler calls (the urlPrefix of the scheduler configuration).
    #[arg(
        long,
        env = "NODESTATE_EXTENDER_LISTEN",
        default_value = "0.0.0.0:9465"
    )]
    pub listen: std::net::SocketAddr,

    /// The Prometheus that scrapes every node's daemon, e.g. http://prometheus:9090.
    #[arg(long, env = "NODESTATE_PROMETHEUS")]
    pub prometheus: String,

    /// Extra PromQL label matchers for the nodes' series, e.g. 'job="nodestate"'.
    #[arg(long, env = "NODESTATE_SELECTOR")]
    pub selector: Option<String>,

    /// The label of the nodes' series that holds the Kubernetes node name (the daemon sets
    /// `node` from NODE_NAME).
    #[arg(long, default_value = "node")]
    pub node_label: String,

    /// Node states the filter keeps pods off (comma-separated: degraded, learning, healthy,
    /// unknown); "" filters on --min-rank alone.
    #[arg(long, default_value = "degraded", value_delimiter = ',')]
    pub filter_states: Vec<String>,

    /// Also keep pods off nodes ranked below this (0-100).
    #[arg(long, value_parser = parse_rank)]
    pub min_rank: Option<f64>,

    /// How long Prometheus' answer is reused: a burst of pods costs one refresh.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// When Prometheus cannot be read, keep answering from its last reading for this long
    /// (then --on-prometheus-error applies); "0s" never does.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub keep_last_for: Duration,

    /// Ignore series older than this (a node whose daemon stopped is then unknown: neutral).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub max_age: Duration,

    /// Timeout of each Prometheus query; keep it under the scheduler's httpTimeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub prometheus_timeout: Duration,

    /// When Prometheus cannot be read: "pass" lets every node through with equal scores;
    /// "error" reports an error, which kube-scheduler skips for an ignorable extender.
    #[arg(long, value_enum, default_value_t = cluster::extender::OnPrometheusError::Pass)]
    pub on_prometheus_error: cluster::extender::OnPrometheusError,

    /// Largest request body accepted (bytes); larger ones are answered 413 without being
    /// read. 1 MiB holds the node names of 5,000 nodes several times over
    /// (`nodeCacheCapable: true`); without nodeCacheCapable each node costs ~5 kB.
    #[arg(long, default_value_t = cluster::extender::DEFAULT_MAX_BODY_BYTES, value_parser = parse_max_body_bytes)]
    pub max_body_bytes: usize,

    /// Requests read and answered at once; more are answered 503 at once (kube-scheduler
    /// calls an extender one request at a time).
    #[arg(long, default_value_t = cluster::extender::DEFAULT_MAX_CONCURRENT_REQUESTS, value_parser = parse_concurrent_requests)]
    pub max_concurrent_requests: usize,

    #[command(flatten)]
    pub prometheus_client: cluster::promql::PrometheusClientArgs,
}

fn parse_concurrent_requests(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count) if (1..=1024).contains(&count) => Ok(count),
        _ => Err(format!(
            "`{text}` is not a number of requests from 1 to 1024"
        )),
    }
}

fn parse_max_body_bytes(text: &str) -> Result<usize, String> {
    const MIN: usize = 4 << 10;
    const MAX: usize = 256 << 20;
    match text.parse::<usize>() {
        Ok(bytes) if (MIN..=MAX).contains(&bytes) => Ok(bytes),
        _ => Err(format!(
            "`{text}` is not a size in bytes from {MIN} to {MAX} (e.g. 1048576 for 1 MiB)"
        )),
    }
}

impl ExtenderArgs {
    pub fn options(&self) -> Result<cluster::extender::ExtenderOptions, String> {
        const STATES: [&str; 4] = ["healthy", "degraded", "learning", "unknown"];
        let filter_states: Vec<String> = self
            .filter_states
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = filter_states.iter().find(|s| !STATES.contains(&s.as_str())) {
            return Err(format!(
                "--filter-states: unknown state `{bad}` (use {})",
                STATES.join(", ")
            ));
        }
        if self.max_age < Duration::from_secs(1) {
            return Err("--max-age must be at least 1s".into());
        }
        Ok(cluster::extender::ExtenderOptions {
            prometheus: self.prometheus.clone(),
            selector: self.selector.clone(),
            node_label: self.node_label.clone(),
            filter_states,
            min_rank: self.min_rank,
            max_age: self.max_age,
            cache_ttl: self.cache_ttl,
            keep_last_for: self.keep_last_for,
            timeout: self.prometheus_timeout,
            on_error: self.on_prometheus_error,
            max_body_bytes: self.max_body_bytes,
            max_concurrent_requests: self.max_concurrent_requests,
        })
    }
}

fn parse_rank(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rank) if (0.0..=100.0).contains(&rank) => Ok(rank),
        _ => Err(format!("`{text}` is not a rank from 0 to 100")),
    }
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// A node's daemon, e.g. http://127.0.0.1:9464 (its /state is read).
    #[arg(
        long,
        default_value = "http://127.0.0.1:9464",
        conflicts_with = "prometheus"
    )]
    pub node: String,

    /// A Prometheus that scrapes every node's daemon: the answer is Yes if any node was
    /// degraded within --range.
    #[arg(long)]
    pub prometheus: Option<String>,

    /// How far back to look in Prometheus (a PromQL duration).
    #[arg(long, default_value = "5m")]
    pub range: String,

    /// Submit the answer to the benchmark's conductor at this URL (its base, e.g.
    /// http://conductor:8000, or its /submit endpoint); without a URL, at
    /// http://$API_HOSTNAME:$API_PORT (port 8000 if unset), as SREGym's agents find it. The
    /// conductor's stage is asked first: an answer goes only to a detection stage. Exit codes:
    /// 3 the stage takes no answer now (setup, done), 4 refused (a stage for another kind of
    /// answer, or the conductor's 4xx, printed), 5 the node is still learning (nothing
    /// submitted), 6 the conductor stayed busy (503) past --busy-for.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "URL")]
    pub submit: Option<String>,

    /// With --submit: wait up to this long for a stage that takes answers (polling /status)
    /// instead of refusing at once in setup or done.
    #[arg(long, default_value = "0s", value_parser = parse_duration, requires = "submit")]
    pub wait: Duration,

    /// With --submit: retry while the conductor answers 503 (still grading the previous
    /// stage) for up to this long, backing off from 1 s to 8 s.
    #[arg(long, default_value = "3m", value_parser = parse_duration, requires = "submit")]
    pub busy_for: Duration,

    /// "json" prints one object, {"answer": "Yes"|"No"|null, "learning": bool}, instead of
    /// the bare word (the exit codes stay the same).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub prometheus_client: cluster::promql::PrometheusClientArgs,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// A node's daemon, e.g. http://127.0.0.1:9464 (its /state is read).
    #[arg(
        long,
        default_value = "http://127.0.0.1:9464",
        conflicts_with = "prometheus"
    )]
    pub node: String,

    /// A Prometheus that scrapes every node's daemon: every node degraded within --range is
    /// diagnosed.
    #[arg(long)]
    pub prometheus: Option<String>,

    /// How far back to look in Prometheus (a PromQL duration).
    #[arg(long, default_value = "10m")]
    pub range: String,

    /// The application's namespace(s): workloads in them are named first. Repeat or separate
    /// with commas. With --submit and no --namespace, read from the conductor's /get_app.
    #[arg(long, value_delimiter = ',')]
    pub namespace: Vec<String>,

    /// Output format: text (component, namespace, description lines) or one JSON document
    /// {component, namespace, description, evidence: [{signal, z, share, since}], ...}.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Submit the statement to the benchmark's conductor (its base URL or its /submit; without
    /// a URL, http://$API_HOSTNAME:$API_PORT). Its stage is asked first: only a diagnosis
    /// stage takes it. Exit codes: 3 not now (setup, done), 4 refused, 6 busy past --busy-for;
    /// 5 every node is still learning (nothing submitted).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "URL")]
    pub submit: Option<String>,

    /// With --submit: wait up to this long for a stage that takes answers.
    #[arg(long, default_value = "0s", value_parser = parse_duration, requires = "submit")]
    pub wait: Duration,

    /// With --submit: retry while the conductor answers 503 for up to this long.
    #[arg(long, default_value = "3m", value_parser = parse_duration, requires = "submit")]
    pub busy_for: Duration,

    #[command(flatten)]
    pub prometheus_client: cluster::promql::PrometheusClientArgs,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// A node's daemon, read when there is no --prometheus.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    pub node: String,

    /// A Prometheus that scrapes every node's daemon: the tools answer for the cluster.
    #[arg(long)]
    pub prometheus: Option<String>,

    /// Serve MCP's streamable HTTP transport on this address (at /mcp) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub prometheus_client: cluster::promql::PrometheusClientArgs,
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

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read options from this TOML file (keys are the long option names, `window = "1s"`).
    /// Flags and environment variables win over the file.
    #[arg(long, env = "NODESTATE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address for / (a page for people), /metrics (OpenMetrics or the classic text format,
    /// as the scraper asks), /healthz, /readyz and /state.
    #[arg(long, env = "NODESTATE_LISTEN", default_value = "0.0.0.0:9464")]
    pub listen: std::net::SocketAddr,

    /// Which series /metrics serves: "default" (state, score, threshold, rank, explanation,
    /// drops and losses, the daemon's own cost: what a fleet scrapes) or "full" (also every
    /// window feature and per-device block latency histograms, for one node's dashboard or
    /// fleet training). docs/metrics.md counts both.
    #[arg(long, env = "NODESTATE_METRICS", default_value_t = crate::export::MetricSet::Default, value_name = "SET")]
    pub metrics: crate::export::MetricSet,

    /// A model trained with `model train` on windows from `collector record`, or "builtin"
    /// for the one trained on the recorded fault scenarios' healthy windows (datasets/,
    /// 2 s windows). Without one the daemon learns this node's own baseline first (see
    /// --learn-for). SIGHUP reloads a file.
    #[arg(long, env = "NODESTATE_MODEL")]
    pub model: Option<PathBuf>,

    /// Without --model: how long to learn the node's baseline before judging, e.g. "3m".
    #[arg(long, env = "NODESTATE_LEARN_FOR", default_value = "3m", value_parser = parse_duration)]
    pub learn_for: Duration,

    /// Without --model: how often the baseline is retrained from windows judged healthy.
    #[arg(long, env = "NODESTATE_REFRESH_EVERY", default_value = "30m", value_parser = parse_duration)]
    pub refresh_every: Duration,

    /// Without --model: learn and judge only the window fields matching these patterns
    /// (comma-separated, `*` is a wildcard), e.g. "net_*,tcp_*" on a node whose CPU and disk
    /// are busy with work nobody should be alerted for. Default: the saturation, error and
    /// latency signals (pressure, throttling, failing exits, errors, drops, retransmits, I/O
    /// and fsync latency), as the built-in model; volumes (syscalls, packets, bytes, I/O
    /// operations) change with the work a node is given, not with its health. "*" judges
    /// every field.
    #[arg(
        long,
        env = "NODESTATE_BASELINE_FIELDS",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub baseline_fields: Vec<String>,

    /// Consecutive anomalous windows before the node is reported degraded.
    #[arg(long, env = "NODESTATE_ENTER_AFTER", default_value_t = model::hysteresis::DEFAULT_ENTER_AFTER, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub enter_after: u32,

    /// Consecutive normal windows before a degraded node is reported healthy again.
    #[arg(long, env = "NODESTATE_LEAVE_AFTER", default_value_t = model::hysteresis::DEFAULT_LEAVE_AFTER, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub leave_after: u32,

    #[command(flatten)]
    pub auto_block: AutoBlockArgs,

    /// Where pods get their names (namespace, pod, container, owner) for the culprits: the
    /// Kubernetes API at this URL, "in-cluster" (the service account; the default when
    /// KUBERNETES_SERVICE_HOST is set), or "off" (pods are named by their UID). The daemon
    /// watches the pods with spec.nodeName=$NODE_NAME (RBAC: get, list, watch pods).
    #[arg(long, env = "NODESTATE_KUBE_API", value_name = "URL|in-cluster|off")]
    pub kube_api: Option<String>,

    #[command(flatten)]
    pub collect: CollectArgs,
}

/// Automatic flood blocking (docs/blocklist.md).
#[derive(Debug, Args)]
pub struct AutoBlockArgs {
    /// Block flood sources automatically: when the node is degraded and the model blames
    /// network receive features (net_rx_packets_per_s, net_rx_bytes_per_s, net_drops_per_s),
    /// add the heaviest source prefixes of the window's traffic on the --xdp-iface interfaces
    /// to the drop list, with a TTL. Off by default; needs --xdp-iface.
    #[arg(long, env = "NODESTATE_AUTO_BLOCK")]
    pub auto_block: bool,

    /// Never block a prefix overlapping this range (repeat or comma-separate). Added to the
    /// built-in list (loopback, link-local) and the node's own addresses: allow your gateways,
    /// load balancers and anything that sends a lot legitimately.
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_ALLOW", value_delimiter = ',', value_name = "CIDR", value_parser = parse_cidr)]
    pub auto_block_allow: Vec<ipnet::IpNet>,

    /// How long an automatic rule lives, e.g. "10m", "1h".
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_TTL", default_value = "10m", value_parser = parse_ttl)]
    pub auto_block_ttl: Duration,

    /// Automatic rules live at once, at most (rules added by hand do not count). Past it,
    /// flood sources are logged and counted, not blocked.
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_MAX_RULES", default_value_t = crate::xdp::autoblock::DEFAULT_MAX_RULES as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub auto_block_max_rules: u32,

    /// Prefixes blocked in one window, at most (the heaviest first).
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_PER_WINDOW", default_value_t = crate::xdp::autoblock::DEFAULT_PER_WINDOW as u32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub auto_block_per_window: u32,

    /// A prefix is blocked only if it passed at least this many packets per second in the
    /// window...
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_MIN_PPS", default_value_t = crate::xdp::autoblock::DEFAULT_MIN_PACKETS_PER_S, value_parser = parse_non_negative)]
    pub auto_block_min_pps: f64,

    /// ...and at least this share (0 to 1) of all packets passed on the XDP interfaces.
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_MIN_SHARE", default_value_t = crate::xdp::autoblock::DEFAULT_MIN_SHARE, value_parser = parse_share)]
    pub auto_block_min_share: f64,

    /// The blamed receive feature must be at least this many standard deviations above
    /// healthy.
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_MIN_Z", default_value_t = crate::xdp::autoblock::DEFAULT_MIN_Z, value_parser = parse_non_negative)]
    pub auto_block_min_z: f64,

    /// Length of the IPv4 source prefixes counted and blocked (16 to 32).
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_PREFIX_V4", default_value_t = crate::xdp::autoblock::DEFAULT_V4_PREFIX_LEN, value_parser = clap::value_parser!(u8).range(16..=32))]
    pub auto_block_prefix_v4: u8,

    /// Length of the IPv6 source prefixes counted and blocked (32 to 128).
    #[arg(long, env = "NODESTATE_AUTO_BLOCK_PREFIX_V6", default_value_t = crate::xdp::autoblock::DEFAULT_V6_PREFIX_LEN, value_parser = clap::value_parser!(u8).range(32..=128))]
    pub auto_block_prefix_v6: u8,
}

impl AutoBlockArgs {
    /// The policy, when automatic blocking is on.
    pub fn policy(&self) -> Option<crate::xdp::autoblock::AutoBlockPolicy> {
        if !self.auto_block {
            return None;
        }
        let mut allow = crate::xdp::autoblock::default_allow();
        allow.extend(self.auto_block_allow.iter().copied());
        Some(crate::xdp::autoblock::AutoBlockPolicy {
            allow,
            ttl: self.auto_block_ttl,
            max_rules: self.auto_block_max_rules as usize,
            per_window: self.auto_block_per_window as usize,
            min_packets_per_s: self.auto_block_min_pps,
            min_share: self.auto_block_min_share,
            min_z: self.auto_block_min_z,
            v4_prefix_len: self.auto_block_prefix_v4,
            v6_prefix_len: self.auto_block_prefix_v6,
        })
    }

    /// Checks what clap cannot: automatic blocking needs an XDP interface to block on.
    pub fn validate(&self, collect: &CollectArgs) -> Result<(), String> {
        if self.auto_block && collect.xdp_iface.is_empty() {
            return Err(
                "--auto-block needs --xdp-iface: the flood sources are counted and blocked by \
                 the XDP drop list on those interfaces"
                    .to_string(),
            );
        }
        Ok(())
    }
}

fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    crate::xdp::rules::parse_rule(text)
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl < Duration::from_secs(1) {
        return Err(format!("TTL {text} is under one second"));
    }
    Ok(ttl)
}

fn parse_non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("`{text}` is not a non-negative number")),
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!(
            "`{text}` is not a share between 0 and 1 (e.g. 0.2 for 20%)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// File to write the windows to (created or truncated).
    #[arg(long, short)]
    pub out: PathBuf,

    /// How long to record, e.g. "10m", "90s". Rounded up to whole windows.
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Duration,

    #[command(flatten)]
    pub collect: CollectArgs,
}

/// Options shared by everything that collects.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Length of a window, from 1s to 1h, e.g. "5s", "1s", "30s".
    #[arg(long, env = "NODESTATE_WINDOW", default_value = "5s", value_parser = parse_window)]
    pub window: Duration,

    /// Block requests at least this slow (issue → complete) are sent to user space one by one
    /// and counted as slow I/O, e.g. "10ms", "500us". "0s" sends every request (testing only).
    #[arg(long, env = "NODESTATE_SLOW_IO_THRESHOLD", default_value = "10ms", value_parser = parse_duration)]
    pub slow_io_threshold: Duration,

    /// Size in bytes of the kernel → daemon ring buffer for slow-I/O events: a power of two,
    /// at least one page. Events that do not fit are counted as lost, never dropped silently.
    #[arg(long, env = "NODESTATE_RINGBUF_BYTES", default_value_t = 256 * 1024, value_parser = parse_ringbuf_bytes)]
    pub ringbuf_bytes: u32,

    /// Attach only these signals (comma-separated ids; `collector probes` lists them), e.g.
    /// "block-issue,block-complete,oom". Default: all.
    #[arg(long, env = "NODESTATE_SIGNALS", value_delimiter = ',')]
    pub signals: Option<Vec<String>>,

    /// Never attach these signals (comma-separated ids), e.g. "syscalls,sched" on a node where
    /// hooking every syscall or context switch costs too much.
    #[arg(long, env = "NODESTATE_DISABLE_SIGNALS", value_delimiter = ',')]
    pub disable_signals: Vec<String>,

    /// Per-program run counts and run time (the daemon's own cost, in each window's
    /// `programs`). They cost every program run ~90 ns, so "sampled" keeps them on for one
    /// window in 12; "always" for every window; "off" never.
    #[arg(long, env = "NODESTATE_PROGRAM_STATS", value_enum, default_value_t = ProgramStatsMode::Sampled)]
    pub program_stats: ProgramStatsMode,

    /// Share of one CPU the busiest hooks may cost together: the syscall exit (every
    /// syscall, ~140 ns each here), the scheduler (every context switch with its wake-up, ~450
    /// ns here as the per-program statistics of `--metrics full` measure them) and block I/O
    /// (every request, ~1 µs). When their events would cost more than this over a window (at
    /// 0.5%: e.g. above ~36,000 syscalls/s, ~11,000 context switches/s or ~5,000 block
    /// requests/s; the daemon looks at the start of each window and every 100 ms after), the
    /// hooks whose events cost much go off for the rest of the window once they have spent its
    /// share (those whose events are cheap stay on): their rates are per second of the time
    /// they were on and their latencies a sample of it (each window's `syscall_`, `sched_` and
    /// `block_sample_fraction` say how much), and per-workload counts are scaled to the window
    /// alike. Context switches then come from /proc/stat. "0" keeps them on all the time.
    #[arg(long, visible_alias = "syscall-budget", env = "NODESTATE_HOOK_BUDGET", default_value = "0.5%", value_parser = crate::kernel::sampler::parse_budget)]
    pub hook_budget: f64,

    /// Attach the XDP drop list (`collector blocklist`) to this interface; repeat or
    /// comma-separate for several. See --xdp-mode for how. None by
    /// default.
    #[arg(long, env = "NODESTATE_XDP_IFACE", value_delimiter = ',')]
    pub xdp_iface: Vec<String>,

    /// How the XDP drop list attaches (as xdp-filter's --mode): "native" in the driver
    /// (fails where the driver has no XDP), "skb" (generic: works on every interface, after
    /// the kernel built the packet's buffer, so costs more per packet), or "auto": native,
    /// generic where native fails.
    #[arg(long, env = "NODESTATE_XDP_MODE", value_enum, default_value_t = crate::xdp::XdpAttachMode::Auto)]
    pub xdp_mode: crate::xdp::XdpAttachMode,

    /// bpffs directory of the drop list's pinned maps (see `collector blocklist`).
    #[arg(long, env = "NODESTATE_PIN_DIR", default_value = crate::xdp::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,

    /// Per-cgroup attribution (which workload is behind each signal): "auto" charges cgroup
    /// v2 ids where /sys/fs/cgroup is cgroup2, else the v1 memory (or cpu) hierarchy's;
    /// "unified" the cgroup2 hierarchy wherever it is mounted; "v1" the v1 hierarchy even on
    /// a cgroup2 node; "off" nothing (the programs' attribution paths are pruned at load).
    #[arg(long, env = "NODESTATE_CGROUP_ATTRIBUTION", value_enum, default_value_t = crate::kernel::AttributionChoice::Auto)]
    pub cgroup_attribution: crate::kernel::AttributionChoice,
}

impl RunArgs {
    /// How the daemon judges windows, from the flags.
    /// `--kube-api`, with its default.
    pub fn kube_api(&self) -> Option<crate::workload::kube::ApiSource> {
        use crate::workload::kube::ApiSource;
        match self.kube_api.as_deref() {
            Some("off") => None,
            Some("in-cluster") => Some(ApiSource::InCluster),
            Some(url) => Some(ApiSource::Url(url.to_string())),
            None => std::env::var_os("KUBERNETES_SERVICE_HOST").map(|_| ApiSource::InCluster),
        }
    }

    pub fn assessor_options(&self) -> crate::judge::AssessorOptions {
        let windows = |span: Duration| {
            (span.as_secs_f64() / self.collect.window.as_secs_f64()).ceil() as usize
        };
        crate::judge::AssessorOptions {
            model_file: self.model.clone(),
            baseline: model::BaselineOptions {
                // A baseline from fewer than 10 windows would be noise.
                learn_windows: windows(self.learn_for).max(10),
                refresh_every: windows(self.refresh_every).max(10),
                window_s: self.collect.window.as_secs_f64(),
                ..model::BaselineOptions::default()
            },
            baseline_fields: self.baseline_fields.clone(),
            enter_after: self.enter_after,
            leave_after: self.leave_after,
        }
    }
}

impl CollectArgs {
    pub fn xdp_options(&self) -> crate::xdp::XdpOptions {
        crate::xdp::XdpOptions {
            interfaces: self.xdp_iface.clone(),
            pin_dir: self.pin_dir.clone(),
            mode: self.xdp_mode,
        }
    }

    pub fn kernel_config(&self) -> KernelConfig {
        KernelConfig {
            slow_io_threshold_ns: u64::try_from(self.slow_io_threshold.as_nanos())
                .unwrap_or(u64::MAX),
            ringbuf_bytes: self.ringbuf_bytes,
            signals: self.signals.clone(),
            disabled_signals: self.disable_signals.clone(),
            program_stats: self.program_stats,
            hook_budget: self.hook_budget,
            // The daemon (or recorder) itself: its upkeep is not the node's work.
            exclude_tgid: Some(std::process::id()),
            cgroup_attribution: self.cgroup_attribution,
            cgroup_table_entries: collector_common::CGROUP_STATS_ENTRIES,
        }
    }

    /// Checks what clap cannot: that every signal id named exists.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(only) = &self.signals {
            crate::kernel::probes::validate_signal_ids(only)?;
        }
        crate::kernel::probes::validate_signal_ids(&self.disable_signals)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("`{text}` is not a duration ({err}); write e.g. 5s, 250ms, 2m"))
}

fn parse_ringbuf_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a size in bytes"))?;
    crate::kernel::validate_ringbuf_bytes(bytes).map_err(|err| err.to_string())?;
    Ok(bytes)
}

fn parse_window(text: &str) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
        return Err(format!("window {text} is out of range: use 1s to 1h"));
    }
    Ok(window)
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

    #[test]
    fn xdp_mode_defaults_to_auto_and_takes_native_or_skb() {
        assert_eq!(
            run_args(&[]).unwrap().collect.xdp_options().mode,
            crate::xdp::XdpAttachMode::Auto
        );
        for (text, mode) in [
            ("native", crate::xdp::XdpAttachMode::Native),
            ("skb", crate::xdp::XdpAttachMode::Skb),
        ] {
            let args = run_args(&["--xdp-iface", "eth0", "--xdp-mode", text]).unwrap();
            assert_eq!(args.collect.xdp_options().mode, mode);
        }
        let err = run_args(&["--xdp-mode", "offload"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("native") && err.contains("skb"), "{err}");
    }

    #[test]
    fn rank_json_is_a_hidden_alias_of_output_json() {
        for spelling in [&["--output", "json"][..], &["--json"][..]] {
            let mut args = vec!["collector", "rank"];
            args.extend_from_slice(spelling);
            let Command::Rank(rank) = Cli::try_parse_from(args).unwrap().command else {
                panic!("expected rank")
            };
            assert!(rank.options().json, "{spelling:?}");
        }
        let Command::Rank(rank) = Cli::try_parse_from(["collector", "rank"]).unwrap().command
        else {
            panic!("expected rank")
        };
        assert!(!rank.options().json);
        assert!(Cli::try_parse_from(["collector", "rank", "--json", "--output", "json"]).is_err());
    }

    #[test]
    fn windows_out_of_range_and_bad_durations_are_refused() {
        assert!(parse_window("500ms").unwrap_err().contains("1s to 1h"));
        assert!(parse_window("2h").is_err());
        assert_eq!(parse_window("1s").unwrap(), Duration::from_secs(1));
        assert!(
            parse_duration("fast")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut args = vec!["collector", "run"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Run(args) => args,
            _ => panic!("expected run"),
        })
    }

    #[test]
    fn auto_block_is_off_by_default_and_needs_an_xdp_interface() {
        let args = run_args(&[]).unwrap();
        assert_eq!(args.auto_block.policy(), None);
        let args = run_args(&["--auto-block"]).unwrap();
        let err = args.auto_block.validate(&args.collect).unwrap_err();
        assert!(err.contains("--xdp-iface"), "{err}");

        let args = run_args(&[
            "--auto-block",
            "--xdp-iface",
            "eth0",
            "--auto-block-allow",
            "10.0.0.0/8,2001:db8::/32",
            "--auto-block-allow",
            "192.0.2.1",
            "--auto-block-ttl",
            "5m",
            "--auto-block-min-share",
            "0.5",
        ])
        .unwrap();
        args.auto_block.validate(&args.collect).unwrap();
        let policy = args.auto_block.policy().expect("on");
        assert_eq!(policy.ttl, Duration::from_secs(300));
        assert_eq!(policy.min_share, 0.5);
        assert_eq!(policy.v4_prefix_len, 24);
        let allow: Vec<String> = policy.allow.iter().map(ToString::to_string).collect();
        for range in [
            "127.0.0.0/8",
            "fe80::/10",
            "10.0.0.0/8",
            "2001:db8::/32",
            "192.0.2.1/32",
        ] {
            assert!(allow.contains(&range.to_string()), "{range} in {allow:?}");
        }
    }

    #[test]
    fn auto_block_options_come_from_the_config_file_too() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut file,
            b"auto_block = true\nxdp_iface = [\"eth0\"]\nauto_block_allow = [\"10.0.0.0/8\", \"fd00::/8\"]\nauto_block_ttl = \"2m\"\n",
        )
        .unwrap();
        let args: Vec<std::ffi::OsString> = ["collector", "run", "--config"]
            .iter()
            .map(Into::into)
            .chain([file.path().as_os_str().to_owned()])
            .collect();
        let merged = crate::config::merge_config_file(args).unwrap();
        let Command::Run(args) = Cli::try_parse_from(merged).unwrap().command else {
            panic!("expected run")
        };
        let policy = args.auto_block.policy().expect("on from the file");
        assert_eq!(policy.ttl, Duration::from_secs(120));
        assert!(policy.allow.contains(&"fd00::/8".parse().unwrap()));
        assert_eq!(args.collect.xdp_iface, ["eth0"]);
    }

    #[test]
    fn bad_auto_block_values_are_refused() {
        for (flag, value, why) in [
            ("--auto-block-allow", "10.1.2.3/8", "host bits"),
            ("--auto-block-allow", "nope", "not an address"),
            ("--auto-block-min-share", "1.5", "between 0 and 1"),
            ("--auto-block-min-pps", "-3", "non-negative"),
            ("--auto-block-ttl", "500ms", "under one second"),
            ("--auto-block-prefix-v4", "8", "16..=32"),
        ] {
            let err = run_args(&[&format!("{flag}={value}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn record_needs_out_and_duration() {
        let err = Cli::try_parse_from(["collector", "record", "--out", "w.jsonl"]).unwrap_err();
        assert!(err.to_string().contains("--duration"), "{err}");
        let cli = Cli::try_parse_from([
            "collector",
            "record",
            "-o",
            "w.jsonl",
            "-d",
            "1m",
            "--window",
            "2s",
        ])
        .unwrap();
        let Command::Record(args) = cli.command else {
            panic!("expected record")
        };
        assert_eq!(args.duration, Duration::from_secs(60));
        assert_eq!(args.collect.window, Duration::from_secs(2));
        assert_eq!(
            args.collect.kernel_config().slow_io_threshold_ns,
            10_000_000
        );
    }
}
