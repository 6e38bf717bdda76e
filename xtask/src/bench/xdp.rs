//! The XDP drop list against nftables drop sets, side by side in one run: the same veth pair
//! between two namespaces, the same trafgen flood, the same rules.
//!
//! What is measured is the receiver's CPU time alone. On a plain veth pair the receive path
//! runs in the sender's context (veth_xmit → backlog on the sending CPU), so any CPU-wide
//! count mixes trafgen's send path into every row. Here the receiving veth has NAPI (GRO on,
//! which veth needs for NAPI without an XDP program; native XDP uses the same NAPI), the NAPI
//! runs in its own kthread (`threaded`) pinned to one CPU, and trafgen runs on the other. XDP
//! (in veth_poll, before GRO) and nftables (netdev ingress and ip raw prerouting, both inside
//! netif_receive_skb under the same poll) then run in that one thread, and its run time over
//! the packets dropped is the receiver's cost per dropped packet.
//!
//! trafgen does not send into that pair directly but through a router namespace (IP
//! forwarding, on trafgen's CPU): the router's IP input orphans each skb, so the receiver does
//! not pay for the sender's socket (the packet socket's destructor and the wake-ups of
//! trafgen it does), just as frames from a wire carry no local socket.

use std::{
    fmt::Write as _,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::block::median;
use crate::util::{output, release_binary, run as run_command};

const SECONDS_PER_RUN: f64 = 2.5;
const ROUNDS: usize = 3;
const RULE_COUNTS: [usize; 3] = [1, 1_000, 100_000];
const PIN_DIR: &str = "/sys/fs/bpf/nodestate-bench-xdp";
const TX_NS: &str = "nodestate-bench-tx";
const GW_NS: &str = "nodestate-bench-gw";
const RX_NS: &str = "nodestate-bench-rx";
/// Device names of our own, so the NAPI kthread (`napi/<dev>-<id>`) cannot be another's.
/// trafgen sends on GEN_DEV to GW_IN (router), which forwards out of TX_DEV to RX_DEV.
const GEN_DEV: &str = "nsbgen";
const GW_IN: &str = "nsbgwin";
const TX_DEV: &str = "nsbtx";
const RX_DEV: &str = "nsbrx";
/// trafgen's CPU and the receiving NAPI kthread's CPU.
const TX_CPU: &str = "0";
const RX_CPU: &str = "1";
/// The receiving kthread and trafgen run SCHED_FIFO, so that other work on their CPUs (the
/// machine may be shared) neither preempts the receiver in the middle of a batch nor makes
/// trafgen's rate, and with it the batch sizes, differ from one run to the next. Bounded: one
/// flood at a time, SECONDS_PER_RUN each, and the kernel's RT throttling leaves 5% of a CPU.
const RX_PRIORITY: &str = "50";
const TX_PRIORITY: &str = "40";
/// Receive coalescing, as a NIC's interrupt moderation: after a poll the NAPI is re-armed by a
/// 250 µs timer instead of a wake-up per packet sent. Without it the kthread's wake-ups are a
/// large, configuration-independent share of every packet's cost, and that share depends on
/// how fast trafgen happens to send. 250 µs fill a third of veth's 256-slot ring at the
/// ~300,000 packets/s trafgen sends here; a longer timer overflows the ring whenever the timer
/// fires late.
const GRO_FLUSH_TIMEOUT_NS: &str = "250000";
const NAPI_DEFER_HARD_IRQS: &str = "1000";
/// The flood's source: listed in every drop configuration.
const LISTED: &str = "10.200.0.1";
/// A source in no rule, for the XDP_PASS cost.
const UNLISTED: &str = "10.200.0.3";

/// The three namespaces (trafgen, router, receiver) and the veth pairs between them; removed on
/// drop (the pairs, the NAPI kthread and any nftables table go with the namespaces).
struct Testbed {
    /// The router's MAC on trafgen's side, and trafgen's own.
    gw_mac: String,
    gen_mac: String,
}

impl Testbed {
    fn new() -> anyhow::Result<Self> {
        for ns in [TX_NS, GW_NS, RX_NS] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run_command(Command::new("ip").args(["netns", "add", ns]))?;
        }
        // Built before the first fallible step so a failure still removes the namespaces.
        let mut testbed = Self {
            gw_mac: String::new(),
            gen_mac: String::new(),
        };
        let veth = |ns: &str, dev: &str, peer: &str, peer_ns: &str| {
            in_ns(
                ns,
                &[
                    "ip", "link", "add", dev, "type", "veth", "peer", "name", peer, "netns",
                    peer_ns,
                ],
            )
        };
        veth(TX_NS, GEN_DEV, GW_IN, GW_NS)?;
        veth(GW_NS, TX_DEV, RX_DEV, RX_NS)?;
        // veth queues a sent skb for the peer's NAPI only if the sender has no TSO (attaching
        // XDP turns it off by itself); without this the no-XDP rows would take the backlog path.
        in_ns(GW_NS, &["ethtool", "-K", TX_DEV, "tso", "off"])?;
        // GRO gives the receiving veth a NAPI instance with or without an XDP program.
        in_ns(RX_NS, &["ethtool", "-K", RX_DEV, "gro", "on"])?;
        for (ns, dev) in [
            (TX_NS, GEN_DEV),
            (GW_NS, GW_IN),
            (GW_NS, TX_DEV),
            (RX_NS, RX_DEV),
            (RX_NS, "lo"),
        ] {
            in_ns(ns, &["ip", "link", "set", dev, "up"])?;
        }
        in_ns(
            GW_NS,
            &["ip", "addr", "add", "10.199.0.254/24", "dev", GW_IN],
        )?;
        in_ns(
            GW_NS,
            &["ip", "addr", "add", "10.200.0.254/24", "dev", TX_DEV],
        )?;
        in_ns(
            RX_NS,
            &["ip", "addr", "add", "10.200.0.2/24", "dev", RX_DEV],
        )?;
        // The router forwards whatever source comes in (the flood's sources sit on the far
        // side, which strict reverse-path filtering would refuse).
        in_ns(
            GW_NS,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                &format!("net.ipv4.conf.{GW_IN}.rp_filter=0"),
            ],
        )?;
        // The NAPI exists once both ends are up; then it can get its kthread.
        for (file, value) in [
            ("threaded", "1"),
            ("gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS),
            ("napi_defer_hard_irqs", NAPI_DEFER_HARD_IRQS),
        ] {
            in_ns(
                RX_NS,
                &[
                    "sh",
                    "-c",
                    &format!("echo {value} > /sys/class/net/{RX_DEV}/{file}"),
                ],
            )
            .with_context(|| format!("setting {file} of the receiving veth"))?;
        }
        if napi_threads()?.is_empty() {
            bail!("no napi/{RX_DEV}-* kthread after enabling threaded NAPI on the veth");
        }
        let mac = |ns: &str, dev: &str| {
            output(Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "cat",
                &format!("/sys/class/net/{dev}/address"),
            ]))
            .map(|mac| mac.trim().to_string())
            .context("reading a MAC address")
        };
        let rx_mac = mac(RX_NS, RX_DEV)?;
        in_ns(
            GW_NS,
            &[
                "ip",
                "neigh",
                "replace",
                "10.200.0.2",
                "lladdr",
                &rx_mac,
                "dev",
                TX_DEV,
                "nud",
                "permanent",
            ],
        )?;
        testbed.gw_mac = mac(GW_NS, GW_IN)?;
        testbed.gen_mac = mac(TX_NS, GEN_DEV)?;
        Ok(testbed)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in [TX_NS, GW_NS, RX_NS] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(PIN_DIR);
    }
}

fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    run_command(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null()),
    )
}

/// The pids of the receiving veth's NAPI kthreads (one per receive queue: one here).
fn napi_threads() -> anyhow::Result<Vec<u32>> {
    let prefix = format!("napi/{RX_DEV}-");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.starts_with(&prefix) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Nanoseconds these threads have run on a CPU (first field of /proc/PID/schedstat).
fn run_time_ns(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .with_context(|| format!("reading the schedstat of NAPI kthread {pid}"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .context("unexpected /proc/PID/schedstat")?;
    }
    Ok(total)
}

fn sysfs_counter(ns: &str, dev: &str, counter: &str) -> u64 {
    output(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{dev}/statistics/{counter}"),
    ]))
    .and_then(|value| value.trim().parse().ok())
    .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|load| load.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// One measured flood.
#[derive(Clone, Copy)]
struct Measurement {
    sent: u64,
    sent_per_s: f64,
    /// Packets the configuration's own counter saw (dropped, or passed for the pass rows).
    counted_per_s: f64,
    /// Packets sent that the configuration's counter did not see: refused by a full queue on
    /// the way (the router's backlog, veth's ring).
    lost: u64,
    /// Of those, the ones veth refused because the receiver's ring was full.
    ring_full: u64,
    /// The receiving NAPI kthread's run time per counted packet.
    rx_ns_per_packet: f64,
    /// The share of the run the receiving kthread was on its CPU.
    rx_busy: f64,
}

/// Floods from `source` for SECONDS_PER_RUN and reads `counter` (the configuration's own drop
/// or pass counter) before and after.
fn flood(
    testbed: &Testbed,
    source: &str,
    counter: &dyn Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<Measurement> {
    let conf = std::env::temp_dir().join("nodestate-bench-xdp.trafgen");
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr={source}, daddr=10.200.0.2, ttl=64), \
             udp(sp=4000, dp=9), fill(0x41, 18) }}\n",
            testbed.gw_mac, testbed.gen_mac
        ),
    )?;
    // Found again each time: a kthread exists as long as the NAPI does.
    let threads = napi_threads()?;
    if threads.is_empty() {
        bail!("the receiving veth's NAPI kthread is gone");
    }
    for pid in &threads {
        let pid = pid.to_string();
        run_command(
            Command::new("taskset")
                .args(["-pc", RX_CPU, &pid])
                .stdout(Stdio::null()),
        )?;
        run_command(Command::new("chrt").args(["-f", "-p", RX_PRIORITY, &pid]))?;
    }
    let sent_before = sysfs_counter(TX_NS, GEN_DEV, "tx_packets");
    let ring_full_before = sysfs_counter(GW_NS, TX_DEV, "tx_dropped");
    let counted_before = counter()?;
    let rx_before = run_time_ns(&threads)?;
    let started = Instant::now();
    // One sender process on its own CPU; -q: through the qdisc layer, -Q: leave IRQ affinity
    // alone. -S: a 64 KiB TX ring, because a larger ring outruns the packet socket's send
    // buffer (which trafgen cannot raise from inside a namespace) and trafgen stalls.
    let status = Command::new("ip")
        .args(["netns", "exec", TX_NS, "timeout", "-s", "INT"])
        .arg(SECONDS_PER_RUN.to_string())
        .args(["taskset", "-c", TX_CPU, "chrt", "-f", TX_PRIORITY])
        .args(["trafgen", "-q", "-Q", "-C", "-P", "1", "-S", "64KiB"])
        .args(["-o", GEN_DEV, "-i"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running trafgen (netsniff-ng): run `cargo xtask setup`")?;
    let elapsed = started.elapsed().as_secs_f64();
    let rx_ns = run_time_ns(&threads)? - rx_before;
    // timeout's 124 is the expected ending.
    if !matches!(status.code(), Some(0 | 124)) {
        bail!("trafgen failed: {status}");
    }
    let sent = sysfs_counter(TX_NS, GEN_DEV, "tx_packets") - sent_before;
    let ring_full = sysfs_counter(GW_NS, TX_DEV, "tx_dropped") - ring_full_before;
    let counted = counter()? - counted_before;
    if counted == 0 {
        bail!("no packet reached the configuration under test ({sent} sent)");
    }
    Ok(Measurement {
        sent,
        sent_per_s: sent as f64 / elapsed,
        counted_per_s: counted as f64 / elapsed,
        lost: sent.saturating_sub(counted),
        ring_full,
        rx_ns_per_packet: rx_ns as f64 / counted as f64,
        rx_busy: rx_ns as f64 / 1e9 / elapsed,
    })
}

/// The listed source plus `count - 1` other rules (/32s and /24s in 100.64.0.0/10, which no
/// packet here comes from).
fn rules(count: usize) -> Vec<String> {
    let mut rules = vec![format!("{LISTED}/32")];
    for n in 1..count as u32 {
        let base = 0x6440_0000u32 + n * 256;
        let addr = std::net::Ipv4Addr::from(base);
        rules.push(if n.is_multiple_of(2) {
            format!("{addr}/24")
        } else {
            format!("{}/32", std::net::Ipv4Addr::from(base + 7))
        });
    }
    rules
}

fn blocklist(args: &[&str]) -> anyhow::Result<()> {
    run_command(
        Command::new(release_binary("collector"))
            .args(["blocklist", "--pin-dir", PIN_DIR])
            .args(args)
            .stdout(Stdio::null()),
    )
}

/// One of the XDP program's totals (`dropped`, `passed`).
fn xdp_total(name: &str) -> anyhow::Result<u64> {
    let json = output(Command::new(release_binary("collector")).args([
        "blocklist",
        "--pin-dir",
        PIN_DIR,
        "list",
        "--output",
        "json",
    ]))
    .context("collector blocklist list")?;
    let listed: serde_json::Value = serde_json::from_str(&json)?;
    Ok(listed["totals"][name].as_u64().unwrap_or(0))
}

/// The daemon with only the XDP drop list on the packet path: the one cheap signal ("oom")
/// and no per-program statistics, so nothing else costs per packet. `extra`: more options.
fn start_daemon(extra: &[&str]) -> anyhow::Result<Child> {
    // No window turn (and no rule sweep) while the floods run.
    start_xdp_daemon(RX_NS, RX_DEV, PIN_DIR, "1h", true, extra)
}

/// `collector run` in namespace `ns` with the drop list on `dev`, the one cheap signal ("oom")
/// and no per-program statistics; returns once it collects. `native_only`: fail if XDP fell
/// back to generic mode. Shared by the XDP and drop-list benchmarks.
pub(super) fn start_xdp_daemon(
    ns: &str,
    dev: &str,
    pin_dir: &str,
    window: &str,
    native_only: bool,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(release_binary("collector"))
        .args(["run", "--window", window])
        .args(["--signals", "oom", "--program-stats", "off"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--xdp-iface",
            dev,
            "--pin-dir",
            pin_dir,
        ])
        .args(extra)
        .env("NO_COLOR", "1");
    super::block::start_and_wait(command, |line| {
        (native_only && line.contains("XDP drop list attached") && !line.contains("native"))
            .then(|| format!("XDP was not attached in native mode: {}", line.trim()))
    })
}

/// Loads `rules` into an nftables set and a drop rule at `hook`; returns the table's family.
fn nft_load(hook: Hook, rules: &[String]) -> anyhow::Result<()> {
    let (table, chain) = match hook {
        Hook::Ingress => (
            "netdev nodestate_bench",
            format!("type filter hook ingress device {RX_DEV} priority -500;"),
        ),
        Hook::Prerouting => (
            "ip nodestate_bench",
            "type filter hook prerouting priority raw;".to_string(),
        ),
    };
    let mut script = format!(
        "table {table} {{\n set blocked {{ type ipv4_addr; flags interval; }}\n \
         chain filter_in {{ {chain} ip saddr @blocked counter drop; }}\n}}\n"
    );
    for chunk in rules.chunks(10_000) {
        let _ = writeln!(
            script,
            "add element {table} blocked {{ {} }}",
            chunk.join(", ")
        );
    }
    let file = std::env::temp_dir().join("nodestate-bench-xdp.nft");
    std::fs::write(&file, script)?;
    in_ns(RX_NS, &["nft", "-f", &file.to_string_lossy()])
}

fn nft_dropped(hook: Hook) -> anyhow::Result<u64> {
    let text = output(Command::new("ip").args([
        "netns",
        "exec",
        RX_NS,
        "nft",
        "list",
        "chain",
        hook.family(),
        "nodestate_bench",
        "filter_in",
    ]))
    .context("reading the nftables counter")?;
    let packets = text
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no counter in the nftables chain")?;
    Ok(packets)
}

fn nft_delete(hook: Hook) -> anyhow::Result<()> {
    in_ns(
        RX_NS,
        &["nft", "delete", "table", hook.family(), "nodestate_bench"],
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Hook {
    Ingress,
    Prerouting,
}

impl Hook {
    fn family(self) -> &'static str {
        match self {
            Hook::Ingress => "netdev",
            Hook::Prerouting => "ip",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "nftables netdev ingress",
            Hook::Prerouting => "nftables ip raw prerouting",
        }
    }
}

/// Every configuration's measurements, in the order the table shows them.
#[derive(Default)]
struct Results(Vec<(String, Vec<Measurement>)>);

impl Results {
    fn record(&mut self, name: String, measured: Measurement) {
        eprintln!(
            "  {name}: {:.0} pps sent, {:.0} counted, {:.0} ns/packet on the receiver ({:.0}% busy)",
            measured.sent_per_s,
            measured.counted_per_s,
            measured.rx_ns_per_packet,
            measured.rx_busy * 100.0
        );
        match self.0.iter_mut().find(|(known, _)| *known == name) {
            Some((_, list)) => list.push(measured),
            None => self.0.push((name, vec![measured])),
        }
    }

    fn get(&self, name: &str) -> Option<&[Measurement]> {
        self.0
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, list)| list.as_slice())
    }
}

/// "1 rule", "1,000 rules".
fn rule_label(count: usize) -> String {
    let digits = count.to_string();
    let mut grouped = String::new();
    for (n, digit) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if count == 1 {
        format!("{grouped} rule")
    } else {
        format!("{grouped} rules")
    }
}

fn xdp_name(count: usize) -> String {
    format!("XDP drop, {}", rule_label(count))
}

fn nft_name(hook: Hook, count: usize) -> String {
    format!("{}, {}", hook.name(), rule_label(count))
}

const NO_PROGRAM: &str = "no program (unlisted source, passes)";

fn xdp_pass_name() -> String {
    format!(
        "XDP_PASS through {} (unlisted source)",
        rule_label(RULE_COUNTS[RULE_COUNTS.len() - 1])
    )
}

fn xdp_pass_counting_name() -> String {
    format!(
        "XDP_PASS through {}, passed traffic counted per source /24 (--auto-block)",
        rule_label(RULE_COUNTS[RULE_COUNTS.len() - 1])
    )
}

/// The XDP rows of one round: one daemon, the lists swapped under it.
fn xdp_round(testbed: &Testbed, results: &mut Results) -> anyhow::Result<()> {
    let list = std::env::temp_dir().join("nodestate-bench-xdp.rules");
    std::fs::write(&list, rules(RULE_COUNTS[0]).join("\n"))?;
    blocklist(&["import", "--replace", &list.to_string_lossy()])?;
    let daemon = start_daemon(&[])?;
    let measured = (|| -> anyhow::Result<()> {
        for (n, &count) in RULE_COUNTS.iter().enumerate() {
            if n > 0 {
                std::fs::write(&list, rules(count).join("\n"))?;
                blocklist(&["import", "--replace", &list.to_string_lossy()])?;
            }
            let dropped = || xdp_total("dropped");
            results.record(xdp_name(count), flood(testbed, LISTED, &dropped)?);
        }
        let passed = || xdp_total("passed");
        results.record(xdp_pass_name(), flood(testbed, UNLISTED, &passed)?);
        Ok(())
    })();
    let stopped = super::block::stop(daemon);
    measured?;
    stopped?;
    // The same list, with the per-source counters on. No window turns in the run (1 h
    // windows), so nothing is judged or blocked: only the counting costs.
    let daemon = start_daemon(&["--auto-block"])?;
    let passed = || xdp_total("passed");
    let measured = flood(testbed, UNLISTED, &passed);
    let stopped = super::block::stop(daemon);
    results.record(xdp_pass_counting_name(), measured?);
    stopped?;
    blocklist(&["flush"])
}

fn nft_round(testbed: &Testbed, results: &mut Results) -> anyhow::Result<()> {
    for hook in [Hook::Ingress, Hook::Prerouting] {
        for &count in &RULE_COUNTS {
            nft_load(hook, &rules(count))?;
            let dropped = || nft_dropped(hook);
            let measured = flood(testbed, LISTED, &dropped);
            nft_delete(hook)?;
            results.record(nft_name(hook, count), measured?);
        }
    }
    Ok(())
}

fn no_program_round(testbed: &Testbed, results: &mut Results) -> anyhow::Result<()> {
    let received = || Ok(sysfs_counter(RX_NS, RX_DEV, "rx_packets"));
    results.record(NO_PROGRAM.to_string(), flood(testbed, UNLISTED, &received)?);
    Ok(())
}

/// "median (min–max)" of one field.
fn spread(list: &[Measurement], field: fn(&Measurement) -> f64) -> (f64, f64, f64) {
    let values: Vec<f64> = list.iter().map(field).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(&values), min, max)
}

fn row(table: &mut String, name: &str, list: &[Measurement]) {
    let (ns, ns_min, ns_max) = spread(list, |m| m.rx_ns_per_packet);
    let (busy, _, _) = spread(list, |m| m.rx_busy);
    let (sent, _, _) = spread(list, |m| m.sent_per_s);
    let (counted, _, _) = spread(list, |m| m.counted_per_s);
    let share = |of: fn(&Measurement) -> u64| {
        let total: u64 = list.iter().map(|m| m.sent).sum();
        list.iter().map(of).sum::<u64>() as f64 / total.max(1) as f64 * 100.0
    };
    let _ = writeln!(
        table,
        "| {name} | {sent:.0} | {counted:.0} | {:.1}% ({:.1}%) | {:.0}% | **{ns:.0}** \
         ({ns_min:.0}–{ns_max:.0}) |",
        share(|m| m.lost),
        share(|m| m.ring_full),
        busy * 100.0
    );
}

pub fn run() -> anyhow::Result<String> {
    let started = Instant::now();
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        bail!("the XDP benchmark needs two CPUs: one for trafgen, one for the receiver");
    }
    let load_before = load_average();
    let _ = std::fs::remove_dir_all(PIN_DIR);
    let testbed = Testbed::new()?;
    let mut results = Results::default();
    // Alternate which family goes first, so a drift in the machine's load does not favour one.
    type Group = fn(&Testbed, &mut Results) -> anyhow::Result<()>;
    let groups: [Group; 3] = [xdp_round, nft_round, no_program_round];
    for round in 0..ROUNDS {
        eprintln!("  round {} of {ROUNDS}", round + 1);
        for n in 0..groups.len() {
            groups[(round + n) % groups.len()](&testbed, &mut results)?;
        }
    }
    drop(testbed);
    let load_after = load_average();

    let mut table = String::from(
        "| configuration | sent (pps) | dropped (pps) | lost on the way (at the receiver's ring) | receiver CPU busy | \
         receiver CPU per dropped packet, ns: median (min–max) |\n|---|---|---|---|---|---|\n",
    );
    let mut all = Vec::new();
    for &count in &RULE_COUNTS {
        all.push(xdp_name(count));
    }
    for hook in [Hook::Ingress, Hook::Prerouting] {
        for &count in &RULE_COUNTS {
            all.push(nft_name(hook, count));
        }
    }
    for name in &all {
        row(
            &mut table,
            name,
            results.get(name).context("a configuration not measured")?,
        );
    }
    let mut pass_table = String::from(
        "| configuration | sent (pps) | passed (pps) | lost on the way (at the receiver's ring) | receiver CPU busy | \
         receiver CPU per packet, ns: median (min–max) |\n|---|---|---|---|---|---|\n",
    );
    for name in [
        NO_PROGRAM.to_string(),
        xdp_pass_name(),
        xdp_pass_counting_name(),
    ] {
        row(
            &mut pass_table,
            &name,
            results.get(&name).context("a configuration not measured")?,
        );
    }

    // Median and minimum over the rounds: other work on the machine only ever adds to a
    // packet's cost, so the minimum is the least disturbed run.
    let ns = |name: &str, pick: fn((f64, f64, f64)) -> f64| {
        results
            .get(name)
            .map(|list| pick(spread(list, |m| m.rx_ns_per_packet)))
            .unwrap_or(f64::NAN)
    };
    let median_of = |(median, _, _): (f64, f64, f64)| median;
    let min_of = |(_, min, _): (f64, f64, f64)| min;
    let mut ratios = String::from(
        "| rules | XDP (ns) | best nftables (ns) | XDP / best nftables | \
         same, minima over the rounds |\n|---|---|---|---|---|\n",
    );
    let (mut wins_median, mut wins_min) = (0, 0);
    for &count in &RULE_COUNTS {
        let best = |pick: fn((f64, f64, f64)) -> f64| {
            [Hook::Ingress, Hook::Prerouting]
                .into_iter()
                .map(|hook| (ns(&nft_name(hook, count), pick), hook))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or((f64::NAN, Hook::Ingress))
        };
        let xdp = ns(&xdp_name(count), median_of);
        let (nft, hook) = best(median_of);
        let xdp_min = ns(&xdp_name(count), min_of);
        let (nft_min, hook_min) = best(min_of);
        wins_median += usize::from(xdp < nft);
        wins_min += usize::from(xdp_min < nft_min);
        let short = |hook: Hook| hook.name().trim_start_matches("nftables ");
        let _ = writeln!(
            ratios,
            "| {count} | {xdp:.0} | {nft:.0} ({}) | **{:.2}** | {xdp_min:.0} / {nft_min:.0} ({}) \
             = {:.2} |",
            short(hook),
            xdp / nft,
            short(hook_min),
            xdp_min / nft_min
        );
    }
    let verdict = format!(
        "XDP is cheaper per dropped packet than the better nftables hook at {wins_median} of {} \
         rule counts by the medians, and at {wins_min} of {} by the minima.",
        RULE_COUNTS.len(),
        RULE_COUNTS.len()
    );
    let pass_cost = ns(&xdp_pass_name(), median_of) - ns(NO_PROGRAM, median_of);
    let pass_cost_min = ns(&xdp_pass_name(), min_of) - ns(NO_PROGRAM, min_of);
    let counting_cost = ns(&xdp_pass_counting_name(), median_of) - ns(&xdp_pass_name(), median_of);
    let counting_cost_min = ns(&xdp_pass_counting_name(), min_of) - ns(&xdp_pass_name(), min_of);

    // The generator was the limit when the receiver had CPU time to spare. Packets refused at
    // the receiver's ring while it had time to spare were refused because the coalescing
    // timer fired late, not for want of CPU.
    let mut receiver_limited = Vec::new();
    let (mut busiest, mut most_refused): (f64, f64) = (0.0, 0.0);
    for name in &all {
        let list = results.get(name).unwrap_or(&[]);
        let busy = spread(list, |m| m.rx_busy).0;
        let sent: u64 = list.iter().map(|m| m.sent).sum();
        let ring_full: u64 = list.iter().map(|m| m.ring_full).sum();
        busiest = busiest.max(busy);
        most_refused = most_refused.max(ring_full as f64 / sent.max(1) as f64);
        if busy > 0.9 {
            receiver_limited.push(name.as_str());
        }
    }
    let limit = if receiver_limited.is_empty() {
        format!(
            "**trafgen was the limit** in every drop configuration: the receiving kthread was \
             busy at most {:.0}% of the time (the rest it slept, with the coalescing timer \
             armed). The ring refused at most {:.1}% of the packets of a configuration: packets \
             that arrived while the timer was late, not for want of CPU. So the drop rates are \
             what one trafgen process and the router on one CPU send, not what the filters can \
             take: at the medians above, one CPU would drop about {:.0} (XDP) and {:.0} (best \
             nftables) packets/s with {}. The CPU per dropped packet is the comparison.",
            busiest * 100.0,
            most_refused * 100.0,
            1e9 / ns(&xdp_name(RULE_COUNTS[RULE_COUNTS.len() - 1]), median_of),
            1e9 / [Hook::Ingress, Hook::Prerouting]
                .into_iter()
                .map(|hook| ns(
                    &nft_name(hook, RULE_COUNTS[RULE_COUNTS.len() - 1]),
                    median_of
                ))
                .fold(f64::INFINITY, f64::min),
            rule_label(RULE_COUNTS[RULE_COUNTS.len() - 1])
        )
    } else {
        format!(
            "The receiver, not trafgen, was the limit in: {} (its CPU over 90% busy). \
             Elsewhere trafgen was the limit.",
            receiver_limited.join("; ")
        )
    };

    Ok(format!(
        "## XDP drop list vs nftables drop sets\n\n\
         `cargo xtask bench xdp`: one trafgen process (netsniff-ng, 64-byte UDP frames) \
         floods for {SECONDS_PER_RUN} s per run through a router namespace (IP forwarding) \
         into a veth pair whose far end holds the filter under test; all configurations in \
         one run, {ROUNDS} rounds (each round runs every configuration; the order of XDP, \
         nftables and no program rotates between rounds), medians with the min–max over the \
         rounds.\n\n\
         What is measured is the **receiver's** CPU time only: the receiving veth runs its NAPI \
         in a kthread (`threaded`; GRO on, which veth needs for NAPI without XDP; the router's \
         end has TSO off so that veth hands every frame to that NAPI) pinned to CPU {RX_CPU}, \
         while trafgen and the router's forwarding run on CPU {TX_CPU}. XDP runs in that NAPI \
         poll before GRO, and both nftables hooks run inside the same poll \
         (netif_receive_skb), so everything the receiver does for a packet is that one \
         thread's run time (/proc/PID/schedstat), divided by the packets the configuration's \
         own counter dropped (XDP's `dropped` total, the nftables rule's counter). The sender's \
         cost is on the other CPU and in no row; the router's IP input orphans every skb, so \
         the receiver does not pay for trafgen's socket either, as frames from a wire carry no \
         local socket. Receive coalescing as on a NIC: gro_flush_timeout {} µs with \
         napi_defer_hard_irqs, so the kthread is woken by a timer, not once per packet. The \
         kthread and trafgen run SCHED_FIFO, so that other work on the machine neither \
         preempts the receiver in the middle of a batch nor changes trafgen's rate (and with \
         it the batch sizes) between runs.\n\n\
         XDP: `collector run --xdp-iface` on the receiving end (native mode on veth; only the \
         `oom` signal attached and program statistics off, so nothing else runs per packet). \
         nftables: the same rules in an interval set, `ip saddr @blocked counter drop` in a \
         netdev ingress chain or an ip raw prerouting chain. Rules: the flood's source /32 plus \
         /32s and /24s elsewhere.\n\n\
         {table}\n{ratios}\n{verdict}\n\n\
         The cost of XDP_PASS for unlisted traffic (the packets go on through the stack to a \
         UDP port nobody listens on, the same in both rows):\n\n\
         {pass_table}\nXDP_PASS through {} costs **{pass_cost:.0} ns** per packet more \
         than no program by the medians, {pass_cost_min:.0} ns by the minima. Both rows keep \
         the receiver busy most of the time (the whole stack runs for every packet) and their \
         spread is wide, so read the difference against the min–max columns. On veth that includes copying each frame: a frame that reaches veth as an skb \
         (here: from the router) has neither the 256 bytes of headroom XDP needs nor a linear \
         buffer, so veth copies it into \
         a page of its own before the program runs and builds a new skb after XDP_PASS \
         (drops pay the copy too). A NIC driver with native XDP runs the program on its receive \
         buffer before any skb exists, so neither the copy nor the second skb is part of XDP's \
         cost there. Counting passed traffic per source prefix (`--auto-block`: a per-CPU LRU \
         hash lookup and update per passed packet; the flood has one source, so every lookup \
         finds its entry) changes that by **{counting_cost:+.0} ns** per packet by the \
         medians, {counting_cost_min:+.0} ns by the minima: compare with the spread of the \
         rows, a figure inside it is noise.\n\n\
         {limit}\n\n\
         Load average (1 min) {load_before} at the start and {load_after} at the end, on {} CPUs: \
         other work may share the CPUs. It does not add to a thread's run time, but it takes \
         caches and may slow trafgen; the min–max columns show the spread it caused.\n\n\
         Whole benchmark: {:.0} s.\n",
        GRO_FLUSH_TIMEOUT_NS.parse::<u64>().unwrap_or(0) / 1000,
        rule_label(RULE_COUNTS[RULE_COUNTS.len() - 1]),
        std::thread::available_parallelism().map_or(1, usize::from),
        started.elapsed().as_secs_f64()
    ))
}
