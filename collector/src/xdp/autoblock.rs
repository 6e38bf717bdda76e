//! Automatic flood blocking (`--auto-block`, off by default): when the node is degraded and
//! the model blames network receive features, the heaviest source prefixes of the window's
//! passed XDP traffic go on the drop list with a TTL, unless they touch an allow-listed range.
//!
//! [`decide`] is the whole policy, a pure function of one window's evidence; [`AutoBlocker`]
//! gathers that evidence from the XDP program's per-source counters, adds the rules through
//! the same [`crate::xdp::Blocklist`] path as `collector blocklist add`, logs and counts.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use tracing::{info, warn};

use crate::xdp::{
    BlocklistError, Origin, XdpBlocklist,
    attach::{SourceCount, source_deltas},
};

/// Features whose blame means "too much is arriving": the packet and byte rates the
/// `net:netif_receive_skb` tracepoint counts, and the kernel's packet drops (a flood to a
/// closed port or a full socket buffer is dropped by the stack, and counted there). Transmit
/// features are left out: a node that sends too much is not flooded.
pub const NET_RECEIVE_FEATURES: [&str; 3] = [
    "net_rx_packets_per_s",
    "net_rx_bytes_per_s",
    "net_drops_per_s",
];

/// Never blocked whatever the traffic: loopback and link-local (neighbour discovery, DHCP,
/// cloud metadata services at 169.254.169.254). The node's own addresses are added at each
/// decision.
pub const DEFAULT_ALLOW: [&str; 4] = ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10"];

/// How automatic blocking decides.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoBlockPolicy {
    /// Prefixes never blocked: a candidate overlapping one (either containing the other) is
    /// refused.
    pub allow: Vec<IpNet>,
    /// How long an automatic rule lives.
    pub ttl: Duration,
    /// Automatic rules live at once, at most; rules added by hand do not count.
    pub max_rules: usize,
    /// Prefixes blocked in one window, at most (the heaviest first).
    pub per_window: usize,
    /// A prefix must pass at least this many packets per second in the window...
    pub min_packets_per_s: f64,
    /// ...and at least this share (0..=1) of all packets the XDP program passed in it.
    pub min_share: f64,
    /// The receive feature must stand at least this many standard deviations above healthy.
    pub min_z: f64,
    /// Source prefix lengths the XDP program counts (and so the length of the rules).
    pub v4_prefix_len: u8,
    pub v6_prefix_len: u8,
}

pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_RULES: usize = 64;
pub const DEFAULT_PER_WINDOW: usize = 4;
pub const DEFAULT_MIN_PACKETS_PER_S: f64 = 10_000.0;
pub const DEFAULT_MIN_SHARE: f64 = 0.2;
pub const DEFAULT_MIN_Z: f64 = 3.0;
/// A /24 is the smallest IPv4 block routed on the internet, so a flood's sources rarely
/// spread over less; one IPv6 /64 is one subnet (one host may use any address inside it).
pub const DEFAULT_V4_PREFIX_LEN: u8 = 24;
pub const DEFAULT_V6_PREFIX_LEN: u8 = 64;

impl Default for AutoBlockPolicy {
    fn default() -> Self {
        Self {
            allow: default_allow(),
            ttl: DEFAULT_TTL,
            max_rules: DEFAULT_MAX_RULES,
            per_window: DEFAULT_PER_WINDOW,
            min_packets_per_s: DEFAULT_MIN_PACKETS_PER_S,
            min_share: DEFAULT_MIN_SHARE,
            min_z: DEFAULT_MIN_Z,
            v4_prefix_len: DEFAULT_V4_PREFIX_LEN,
            v6_prefix_len: DEFAULT_V6_PREFIX_LEN,
        }
    }
}

pub fn default_allow() -> Vec<IpNet> {
    DEFAULT_ALLOW
        .iter()
        .map(|net| net.parse().expect("the default allow-list parses"))
        .collect()
}

/// One window as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The node's state after hysteresis ("learning", "healthy", "degraded").
    pub state: &'a str,
    /// The model's top features for this window: (feature, z).
    pub explanation: &'a [(String, f64)],
    pub window_s: f64,
    /// Every packet the XDP program passed in the window.
    pub passed_packets: u64,
    /// Passed packets by source prefix in the window.
    pub sources: &'a [SourceCount],
    /// Rules on the drop list now (any origin).
    pub listed: &'a [IpNet],
    /// Automatic rules on the drop list now.
    pub automatic_rules: usize,
    /// The node's own addresses: never blocked.
    pub own_addresses: &'a [IpAddr],
}

/// A prefix to block, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub prefix: IpNet,
    pub packets_per_s: f64,
    pub share: f64,
    /// Kept as the rule's comment (at most the comment's 64 bytes).
    pub reason: String,
}

/// Why a prefix that qualified was not blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It overlaps this allow-listed range (or the node's own address).
    AllowListed(IpNet),
    /// `max_rules` automatic rules are live already.
    MaxRules,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The receive feature that triggered a look at the sources, with its z; `None`: the
    /// window gave no reason to block anything.
    pub trigger: Option<(String, f64)>,
    pub block: Vec<Block>,
    pub refused: Vec<(IpNet, Refusal)>,
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// "190k", "1.2M": rates in a comment that must stay short.
fn short_rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// Cuts `text` to at most `max` bytes at a char boundary.
fn cut(mut text: String, max: usize) -> String {
    while text.len() > max {
        text.pop();
    }
    text
}

/// What to block after this window. Blocks only when the node is degraded and the
/// explanation names a [`NET_RECEIVE_FEATURES`] feature at `min_z` or more; then takes the
/// prefixes by packets, most first, that pass both `min_packets_per_s` and `min_share`, are
/// not listed yet, and overlap no allow-listed range nor own address, up to `per_window` and
/// the room `max_rules` leaves.
pub fn decide(policy: &AutoBlockPolicy, evidence: &Evidence) -> Decision {
    let trigger = evidence
        .explanation
        .iter()
        .filter(|(feature, z)| {
            NET_RECEIVE_FEATURES.contains(&feature.as_str()) && *z >= policy.min_z
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .cloned();
    let (Some(trigger), "degraded") = (trigger, evidence.state) else {
        return Decision::default();
    };
    let window_s = evidence.window_s.max(1e-3);
    let passed = evidence.passed_packets.max(1) as f64;
    let mut candidates: Vec<&SourceCount> = evidence
        .sources
        .iter()
        .filter(|source| {
            source.packets as f64 / window_s >= policy.min_packets_per_s
                && source.packets as f64 / passed >= policy.min_share
        })
        .collect();
    candidates.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.prefix.cmp(&b.prefix)));
    let own: Vec<IpNet> = evidence
        .own_addresses
        .iter()
        .map(|addr| IpNet::from(*addr))
        .collect();
    let mut decision = Decision {
        trigger: Some(trigger.clone()),
        ..Decision::default()
    };
    let mut room = policy.max_rules.saturating_sub(evidence.automatic_rules);
    for source in candidates {
        if decision.block.len() >= policy.per_window {
            break;
        }
        let prefix = source.prefix;
        if evidence
            .listed
            .iter()
            .any(|listed| listed.contains(&prefix))
        {
            continue;
        }
        if let Some(allowed) = policy
            .allow
            .iter()
            .chain(&own)
            .find(|a| overlaps(a, &prefix))
        {
            decision
                .refused
                .push((prefix, Refusal::AllowListed(*allowed)));
            continue;
        }
        if room == 0 {
            decision.refused.push((prefix, Refusal::MaxRules));
            continue;
        }
        room -= 1;
        let packets_per_s = source.packets as f64 / window_s;
        let share = source.packets as f64 / passed;
        let reason = format!(
            "auto: {} z={:+.1}, {} pps, {:.0}% of passed",
            trigger.0,
            trigger.1,
            short_rate(packets_per_s),
            share * 100.0
        );
        decision.block.push(Block {
            prefix,
            packets_per_s,
            share,
            reason: cut(reason, collector_common::xdp::COMMENT_BYTES),
        });
    }
    decision
}

/// Counters for the exporter, cumulative since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AutoBlockMetrics {
    pub rules_added: u64,
    /// Candidate prefixes refused because they overlap an allow-listed range or an own
    /// address, counted once per window they qualified in.
    pub refused_allowlisted: u64,
    /// Candidates refused because `max_rules` automatic rules were live.
    pub refused_max_rules: u64,
    /// Rules the drop list would not take (full, or a map error): logged.
    pub failed: u64,
    /// Automatic rules on the drop list now (the daemon refreshes it from the drop metrics
    /// every window).
    pub active_rules: u64,
}

/// Cumulative (packets, bytes) per source prefix, as last read.
type SourceTotals = HashMap<IpNet, (u64, u64)>;

/// The daemon's side: per-window evidence from the XDP program, the decision carried out.
pub struct AutoBlocker {
    policy: AutoBlockPolicy,
    previous_sources: SourceTotals,
    previous_passed: u64,
    /// Prefixes refused in the current degraded spell, so each is logged once.
    refused_logged: HashSet<IpNet>,
    pub metrics: AutoBlockMetrics,
}

impl AutoBlocker {
    /// Turns the program's per-source counters on and takes the first reading.
    pub fn start(policy: AutoBlockPolicy, xdp: &mut XdpBlocklist) -> Result<Self, BlocklistError> {
        xdp.count_sources(policy.v4_prefix_len, policy.v6_prefix_len)?;
        let mut blocker = Self {
            policy,
            previous_sources: HashMap::new(),
            previous_passed: xdp.blocklist.totals()?.passed,
            refused_logged: HashSet::new(),
            metrics: AutoBlockMetrics::default(),
        };
        blocker.previous_sources = blocker.read(xdp)?.0;
        info!(
            ttl = %humantime::format_duration(blocker.policy.ttl),
            max_rules = blocker.policy.max_rules,
            min_packets_per_s = blocker.policy.min_packets_per_s,
            min_share = blocker.policy.min_share,
            allow = %blocker.policy.allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "automatic flood blocking on"
        );
        Ok(blocker)
    }

    fn read(&self, xdp: &XdpBlocklist) -> Result<(SourceTotals, Vec<SourceCount>), BlocklistError> {
        let current = xdp.source_counts()?;
        let deltas = source_deltas(&self.previous_sources, &current);
        let map = current
            .iter()
            .map(|count| (count.prefix, (count.packets, count.bytes)))
            .collect();
        Ok((map, deltas))
    }

    /// Once per judged window: reads the window's per-source traffic, decides, adds rules.
    /// A failure is logged and counted, never fatal: the daemon's judging goes on.
    pub fn window(
        &mut self,
        xdp: &mut XdpBlocklist,
        state: &str,
        explanation: &[(String, f64)],
        window_s: f64,
    ) {
        if let Err(err) = self.try_window(xdp, state, explanation, window_s) {
            self.metrics.failed += 1;
            warn!("automatic flood blocking skipped a window: {err}");
        }
    }

    fn try_window(
        &mut self,
        xdp: &mut XdpBlocklist,
        state: &str,
        explanation: &[(String, f64)],
        window_s: f64,
    ) -> Result<(), BlocklistError> {
        let (current, sources) = self.read(xdp)?;
        self.previous_sources = current;
        let passed_now = xdp.blocklist.totals()?.passed;
        let passed = passed_now.saturating_sub(self.previous_passed);
        self.previous_passed = passed_now;
        if state != "degraded" {
            self.refused_logged.clear();
            return Ok(());
        }
        // From the daemon's cache of the list (read again only after an edit), not a walk of
        // every rule and its hits: a full list is 131,072 rules per family.
        let rules = xdp.listed_rules()?;
        let listed: Vec<IpNet> = rules.iter().map(|(net, _)| *net).collect();
        let automatic = rules.iter().filter(|(_, automatic)| *automatic).count();
        self.metrics.active_rules = automatic as u64;
        let own = local_addresses();
        let decision = decide(
            &self.policy,
            &Evidence {
                state,
                explanation,
                window_s,
                passed_packets: passed,
                sources: &sources,
                listed: &listed,
                automatic_rules: automatic,
                own_addresses: &own,
            },
        );
        for (prefix, refusal) in &decision.refused {
            match refusal {
                Refusal::AllowListed(allowed) => {
                    self.metrics.refused_allowlisted += 1;
                    if self.refused_logged.insert(*prefix) {
                        warn!(%prefix, %allowed, "flood source not blocked: it overlaps an allow-listed range");
                    }
                }
                Refusal::MaxRules => {
                    self.metrics.refused_max_rules += 1;
                    if self.refused_logged.insert(*prefix) {
                        warn!(
                            %prefix,
                            max_rules = self.policy.max_rules,
                            "flood source not blocked: the automatic rule limit is reached"
                        );
                    }
                }
            }
        }
        for block in decision.block {
            // Never waits for the edit lock: a window must not stall on another editor.
            match xdp.add_nowait(
                &[block.prefix],
                Some(&block.reason),
                Some(self.policy.ttl),
                Origin::Automatic,
            ) {
                Ok(()) => {
                    self.metrics.rules_added += 1;
                    self.metrics.active_rules += 1;
                    warn!(
                        prefix = %block.prefix,
                        reason = %block.reason,
                        ttl = %humantime::format_duration(self.policy.ttl),
                        "flood source blocked automatically"
                    );
                }
                Err(err) => {
                    self.metrics.failed += 1;
                    warn!(prefix = %block.prefix, "automatic block failed: {err}");
                }
            }
        }
        Ok(())
    }
}

/// The addresses of this network namespace's interfaces; empty if they cannot be read (the
/// allow-list still applies).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return addresses;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            match i32::from(unsafe { (*entry.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: AF_INET addresses are sockaddr_in.
                    let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                    addresses.push(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ));
                }
                libc::AF_INET6 => {
                    // SAFETY: AF_INET6 addresses are sockaddr_in6.
                    let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                    addresses.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn source(prefix: &str, packets: u64) -> SourceCount {
        SourceCount {
            prefix: net(prefix),
            packets,
            bytes: packets * 64,
        }
    }

    fn flood_explanation() -> Vec<(String, f64)> {
        vec![
            ("syscalls_per_s".into(), 9.0),
            ("net_rx_packets_per_s".into(), 18.4),
            ("net_tx_packets_per_s".into(), 17.0),
        ]
    }

    fn policy() -> AutoBlockPolicy {
        AutoBlockPolicy {
            min_packets_per_s: 1000.0,
            min_share: 0.2,
            ..AutoBlockPolicy::default()
        }
    }

    struct Case {
        state: &'static str,
        explanation: Vec<(String, f64)>,
        sources: Vec<SourceCount>,
        listed: Vec<IpNet>,
        automatic: usize,
        own: Vec<IpAddr>,
    }

    impl Case {
        fn flood() -> Self {
            Self {
                state: "degraded",
                explanation: flood_explanation(),
                sources: vec![
                    source("198.51.100.0/24", 190_000),
                    source("203.0.113.0/24", 300),
                    source("2001:db8:1:2::/64", 100),
                ],
                listed: Vec::new(),
                automatic: 0,
                own: vec!["192.0.2.10".parse().unwrap()],
            }
        }

        fn decide(&self, policy: &AutoBlockPolicy) -> Decision {
            let passed = self.sources.iter().map(|s| s.packets).sum();
            decide(
                policy,
                &Evidence {
                    state: self.state,
                    explanation: &self.explanation,
                    window_s: 1.0,
                    passed_packets: passed,
                    sources: &self.sources,
                    listed: &self.listed,
                    automatic_rules: self.automatic,
                    own_addresses: &self.own,
                },
            )
        }
    }

    fn blocked(decision: &Decision) -> Vec<String> {
        decision
            .block
            .iter()
            .map(|b| b.prefix.to_string())
            .collect()
    }

    #[test]
    fn a_degraded_node_blamed_on_receive_blocks_the_heavy_prefix_only() {
        let decision = Case::flood().decide(&policy());
        assert_eq!(blocked(&decision), ["198.51.100.0/24"]);
        assert_eq!(
            decision.trigger,
            Some(("net_rx_packets_per_s".to_string(), 18.4))
        );
        let block = &decision.block[0];
        assert_eq!(
            block.reason,
            "auto: net_rx_packets_per_s z=+18.4, 190k pps, 100% of passed"
        );
        assert!(block.reason.len() <= collector_common::xdp::COMMENT_BYTES);
        assert!(decision.refused.is_empty());
    }

    #[test]
    fn nothing_is_blocked_unless_degraded_and_blamed_on_receive_features() {
        let mut case = Case::flood();
        for state in ["healthy", "learning"] {
            case.state = state;
            assert_eq!(case.decide(&policy()), Decision::default(), "{state}");
        }
        case.state = "degraded";
        case.explanation = vec![
            ("net_tx_packets_per_s".into(), 30.0),
            ("block_write_latency_p99_us".into(), 12.0),
        ];
        assert_eq!(case.decide(&policy()), Decision::default(), "tx only");
        case.explanation = vec![("net_rx_bytes_per_s".into(), 2.0)];
        assert_eq!(case.decide(&policy()), Decision::default(), "z under min_z");
        case.explanation = vec![("net_drops_per_s".into(), -8.0)];
        assert_eq!(case.decide(&policy()), Decision::default(), "fewer drops");
        case.explanation = vec![("net_drops_per_s".into(), 8.0)];
        assert_eq!(blocked(&case.decide(&policy())), ["198.51.100.0/24"]);
    }

    #[test]
    fn rate_and_share_thresholds_both_apply() {
        let mut case = Case::flood();
        case.sources = vec![
            source("198.51.100.0/24", 4_000),
            source("203.0.113.0/24", 3_000),
            source("192.0.2.128/25", 1_500),
            source("2001:db8:1:2::/64", 11_500),
        ];
        // 20 000 passed: 20% is 4 000 packets, so only the first and the IPv6 one qualify.
        let mut rules = blocked(&case.decide(&policy()));
        rules.sort();
        assert_eq!(rules, ["198.51.100.0/24", "2001:db8:1:2::/64"]);
        let strict = AutoBlockPolicy {
            min_packets_per_s: 5_000.0,
            ..policy()
        };
        assert_eq!(blocked(&case.decide(&strict)), ["2001:db8:1:2::/64"]);
    }

    #[test]
    fn allow_listed_ranges_and_own_addresses_are_never_blocked() {
        let mut case = Case::flood();
        case.sources = vec![
            source("198.51.100.0/24", 50_000),
            source("192.0.2.0/24", 40_000),
            source("10.1.2.0/24", 40_000),
            source("127.0.0.0/24", 40_000),
            source("203.0.113.0/24", 40_000),
        ];
        let mut allow = default_allow();
        allow.extend([net("10.0.0.0/8"), net("198.51.100.7/32")]);
        let policy = AutoBlockPolicy {
            allow,
            min_share: 0.1,
            ..policy()
        };
        let decision = case.decide(&policy);
        assert_eq!(blocked(&decision), ["203.0.113.0/24"]);
        assert_eq!(
            decision.refused,
            vec![
                (
                    net("198.51.100.0/24"),
                    Refusal::AllowListed(net("198.51.100.7/32"))
                ),
                (net("10.1.2.0/24"), Refusal::AllowListed(net("10.0.0.0/8"))),
                (
                    net("127.0.0.0/24"),
                    Refusal::AllowListed(net("127.0.0.0/8"))
                ),
                (
                    net("192.0.2.0/24"),
                    Refusal::AllowListed(net("192.0.2.10/32"))
                ),
            ],
            "a /32 inside the prefix protects it, as does a range around it"
        );
    }

    #[test]
    fn listed_prefixes_are_skipped_and_the_rule_limits_hold() {
        let mut case = Case::flood();
        case.sources = (1..=8)
            .map(|third| source(&format!("198.51.{third}.0/24"), 10_000))
            .collect();
        case.listed = vec![net("198.51.1.0/24"), net("198.51.2.0/25")];
        let policy = AutoBlockPolicy {
            min_share: 0.05,
            per_window: 3,
            max_rules: 10,
            ..policy()
        };
        // 198.51.2.0/24 is only partly listed: its passed traffic is still a flood.
        assert_eq!(
            blocked(&case.decide(&policy)),
            ["198.51.2.0/24", "198.51.3.0/24", "198.51.4.0/24"]
        );
        case.automatic = 9;
        let decision = case.decide(&policy);
        assert_eq!(blocked(&decision), ["198.51.2.0/24"]);
        assert_eq!(decision.refused.len(), 6);
        assert!(
            decision
                .refused
                .iter()
                .all(|(_, why)| *why == Refusal::MaxRules)
        );
    }

    #[test]
    fn rates_are_written_short() {
        assert_eq!(short_rate(950.0), "950");
        assert_eq!(short_rate(190_400.0), "190k");
        assert_eq!(short_rate(1_250_000.0), "1.2M");
        assert_eq!(cut("é".repeat(40), 64).len(), 64);
        assert_eq!(cut("é".repeat(40) + "x", 65).len(), 64);
    }

    #[test]
    fn own_addresses_include_loopback() {
        let own = local_addresses();
        assert!(
            own.contains(&"127.0.0.1".parse().unwrap()),
            "getifaddrs gave {own:?}"
        );
    }
}
