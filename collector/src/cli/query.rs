//! Options of the commands that read what daemons serve (a node's HTTP endpoints, or a
//! Prometheus that scrapes them) rather than the kernel: `top`, `rank`, `extender`, `detect`,
//! `diagnose` and `mcp`.

use std::time::Duration;

use clap::Args;

use super::{OutputFormat, parse_duration};

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

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use clap::Parser as _;

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
}
