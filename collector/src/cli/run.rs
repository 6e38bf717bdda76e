//! Options of the commands that load the kernel programs and collect windows: `run` (with
//! automatic flood blocking) and `record`, which share [`CollectArgs`]; and the checks clap
//! cannot make.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::parse_duration;
use crate::kernel::{KernelConfig, ProgramStatsMode};

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
    /// A young baseline is retrained sooner: each time the windows seen have doubled since
    /// its last training (after twice the learning time, four times, …; at least 5 minutes
    /// apart) until this often.
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

    /// Without --model: keep the learned baseline in this file across restarts (the windows
    /// it keeps and its counts, a few MB; written after each training and at exit, by a
    /// thread of its own). A restarted daemon then judges at once with what it had learned
    /// instead of learning afresh; a file from another window length, other fields or a
    /// damaged one is logged, shown in /state and replaced after the first training. The
    /// DaemonSet keeps it under /var/lib/nodestate on the node. Default: not kept.
    #[arg(long, env = "NODESTATE_BASELINE_STATE", value_name = "FILE")]
    pub baseline_state: Option<PathBuf>,

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

    /// A process that exits non-zero within this long of its start is a brief command (a
    /// build's compiler probe, `grep` finding nothing, a check answering "no"): counted in
    /// `proc_brief_exits_nonzero_per_s`, which explains a verdict but by default makes none, and
    /// not in `proc_exits_nonzero_per_s` (a program that ran and failed), which is judged.
    /// Every failing process of two cold builds of this project lived under 0.13 s. "0s"
    /// counts every non-zero exit as a program's.
    #[arg(long, env = "NODESTATE_BRIEF_EXIT", default_value = "1s", value_parser = parse_duration)]
    pub brief_exit: Duration,

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

    /// How the daemon judges windows, from the flags.
    pub fn assessor_options(&self) -> crate::judge::AssessorOptions {
        crate::judge::AssessorOptions {
            model_file: self.model.clone(),
            baseline: model::BaselineOptions::covering(
                self.collect.window,
                self.learn_for,
                self.refresh_every,
            ),
            baseline_fields: self.baseline_fields.clone(),
            baseline_state: self.baseline_state.clone(),
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
            brief_exit_ns: u64::try_from(self.brief_exit.as_nanos()).unwrap_or(u64::MAX),
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
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

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
    fn the_learning_flags_become_window_counts_rounded_up() {
        let baseline = run_args(&[]).unwrap().assessor_options().baseline;
        // 3 minutes and 30 minutes of 5 s windows.
        assert_eq!((baseline.learn_windows, baseline.refresh_every), (36, 360));
        let baseline = run_args(&["--window=7s", "--learn-for=100s", "--refresh-every=30s"])
            .unwrap()
            .assessor_options()
            .baseline;
        // 14.3 windows need 15; 4.3 are raised to the least of 10.
        assert_eq!((baseline.learn_windows, baseline.refresh_every), (15, 10));
        assert_eq!(baseline.window_s, 7.0);
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
        assert_eq!(
            args.collect.kernel_config().brief_exit_ns,
            collector_common::BRIEF_EXIT_NS
        );
    }
}
