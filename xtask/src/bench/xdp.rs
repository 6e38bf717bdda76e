//! The XDP drop list against nftables drop sets, side by side in one run: the same veth pair
//! between two namespaces, the same trafgen flood, the same rules.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::util::{output, run as run_command, workspace_root};

const SECONDS_PER_RUN: u64 = 3;
const RULE_COUNTS: [usize; 3] = [1, 1_000, 100_000];
const PIN_DIR: &str = "/sys/fs/bpf/nodestate-bench-xdp";
const TX_NS: &str = "nodestate-bench-tx";
const RX_NS: &str = "nodestate-bench-rx";
/// The flood's source: listed in every drop configuration.
const LISTED: &str = "10.200.0.1";
/// A source in no rule, for the XDP_PASS cost.
const UNLISTED: &str = "10.200.0.3";

/// The two namespaces and the veth pair between them; removed on drop.
struct Testbed {
    rx_mac: String,
    tx_mac: String,
}

impl Testbed {
    fn new() -> anyhow::Result<Self> {
        for ns in [TX_NS, RX_NS] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run_command(Command::new("ip").args(["netns", "add", ns]))?;
        }
        // Built before the first fallible step so a failure still removes the namespaces.
        let mut testbed = Self {
            rx_mac: String::new(),
            tx_mac: String::new(),
        };
        in_ns(
            TX_NS,
            &[
                "ip", "link", "add", "tx0", "type", "veth", "peer", "name", "rx0", "netns", RX_NS,
            ],
        )?;
        in_ns(TX_NS, &["ip", "link", "set", "tx0", "up"])?;
        in_ns(RX_NS, &["ip", "link", "set", "rx0", "up"])?;
        in_ns(RX_NS, &["ip", "link", "set", "lo", "up"])?;
        in_ns(RX_NS, &["ip", "addr", "add", "10.200.0.2/24", "dev", "rx0"])?;
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
        testbed.rx_mac = mac(RX_NS, "rx0")?;
        testbed.tx_mac = mac(TX_NS, "tx0")?;
        Ok(testbed)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in [TX_NS, RX_NS] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(PIN_DIR);
    }
}

fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    run_command(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

fn collector_binary() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("release/collector")
}

/// (system + softirq, all CPUs) jiffies from /proc/stat.
fn kernel_cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq …
    Ok(fields.get(2).copied().unwrap_or(0) + fields.get(6).copied().unwrap_or(0))
}

/// USER_HZ, the unit of /proc/stat (`getconf CLK_TCK`; xtask has no libc dependency).
fn ticks_per_second() -> f64 {
    output(Command::new("getconf").arg("CLK_TCK"))
        .and_then(|ticks| ticks.trim().parse().ok())
        .unwrap_or(100.0)
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

/// One measured flood.
struct Measurement {
    sent_per_s: f64,
    dropped_per_s: f64,
    /// Kernel CPU (system + softirq) per packet: dropped ones, or sent ones when nothing drops.
    cpu_ns_per_packet: f64,
}

/// Floods from `source` for SECONDS_PER_RUN and reads `dropped` (a closure over the
/// configuration's own drop counter) before and after.
fn flood(
    testbed: &Testbed,
    source: &str,
    dropped: &dyn Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<Measurement> {
    let conf = std::env::temp_dir().join("nodestate-bench-xdp.trafgen");
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr={source}, daddr=10.200.0.2, ttl=64), \
             udp(sp=4000, dp=9), fill(0x41, 18) }}\n",
            testbed.rx_mac, testbed.tx_mac
        ),
    )?;
    let sent_before = sysfs_counter(TX_NS, "tx0", "tx_packets");
    let dropped_before = dropped()?;
    let cpu_before = kernel_cpu_ticks()?;
    let started = Instant::now();
    // One sender process on one CPU; -Q: leave IRQ affinity alone.
    let status = Command::new("ip")
        .args(["netns", "exec", TX_NS, "timeout", "-s", "INT"])
        .arg(SECONDS_PER_RUN.to_string())
        .args(["trafgen", "-q", "-Q", "-C", "-P", "1", "-o", "tx0", "-i"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running trafgen (netsniff-ng): run `cargo xtask setup`")?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = kernel_cpu_ticks()? - cpu_before;
    // timeout's 124 is the expected ending.
    if !matches!(status.code(), Some(0 | 124)) {
        bail!("trafgen failed: {status}");
    }
    let sent = sysfs_counter(TX_NS, "tx0", "tx_packets") - sent_before;
    let dropped = dropped()? - dropped_before;
    let cpu_ns = cpu as f64 / ticks_per_second() * 1e9;
    let per = if dropped > 0 { dropped } else { sent.max(1) };
    Ok(Measurement {
        sent_per_s: sent as f64 / elapsed,
        dropped_per_s: dropped as f64 / elapsed,
        cpu_ns_per_packet: cpu_ns / per as f64,
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
        Command::new(collector_binary())
            .args(["blocklist", "--pin-dir", PIN_DIR])
            .args(args),
    )
}

fn xdp_dropped() -> anyhow::Result<u64> {
    let json = output(Command::new(collector_binary()).args([
        "blocklist",
        "--pin-dir",
        PIN_DIR,
        "list",
        "--output",
        "json",
    ]))
    .context("collector blocklist list")?;
    let listed: serde_json::Value = serde_json::from_str(&json)?;
    Ok(listed["totals"]["dropped"].as_u64().unwrap_or(0))
}

/// The daemon with only the XDP drop list on the packet path: the one cheap signal ("oom")
/// and no per-program statistics, so nothing else costs per packet.
fn start_daemon() -> anyhow::Result<Child> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{RX_NS}"))
        .arg(collector_binary())
        .args([
            "run",
            "--window",
            "5s",
            "--signals",
            "oom",
            "--program-stats",
            "off",
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--xdp-iface",
            "rx0",
            "--pin-dir",
            PIN_DIR,
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the collector")?;
    let stderr = child.stderr.take().context("collector stderr")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("collecting") => break,
            Some(Ok(line)) if line.contains("XDP drop list attached") => {
                eprintln!("  {}", line.trim());
            }
            Some(Ok(_)) => continue,
            _ => bail!("the collector exited before attaching"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

fn stop_daemon(child: Child) -> anyhow::Result<()> {
    super::block::stop(child)
}

/// Loads `rules` into an nftables set and a drop rule at `hook`; returns the table's name.
fn nft_load(hook: &str, rules: &[String]) -> anyhow::Result<&'static str> {
    let (table, chain) = match hook {
        "ingress" => (
            "netdev nodestate_bench",
            "type filter hook ingress device rx0 priority -500;",
        ),
        _ => (
            "ip nodestate_bench",
            "type filter hook prerouting priority raw;",
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
    in_ns(RX_NS, &["nft", "-f", &file.to_string_lossy()])?;
    Ok(table)
}

fn nft_dropped() -> anyhow::Result<u64> {
    let text = output(
        Command::new("ip")
            .args(["netns", "exec", RX_NS, "nft", "list", "chain"])
            .args(
                // The table family is whichever is loaded; ask for both, one fails.
                ["netdev", "nodestate_bench", "filter_in"],
            ),
    )
    .or_else(|| {
        output(Command::new("ip").args([
            "netns",
            "exec",
            RX_NS,
            "nft",
            "list",
            "chain",
            "ip",
            "nodestate_bench",
            "filter_in",
        ]))
    })
    .context("reading the nftables counter")?;
    let packets = text
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no counter in the nftables chain")?;
    Ok(packets)
}

fn nft_delete(table: &str) -> anyhow::Result<()> {
    in_ns(
        RX_NS,
        &[
            "nft",
            "delete",
            "table",
            table.split(' ').next().unwrap_or(""),
            "nodestate_bench",
        ],
    )
}

pub fn run() -> anyhow::Result<String> {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(PIN_DIR);
    let testbed = Testbed::new()?;
    let mut rows = Vec::new();
    let none = || Ok(0);

    // The cost of XDP_PASS: unlisted traffic with no program, then through the program
    // holding the largest list.
    let baseline = flood(&testbed, UNLISTED, &none)?;
    eprintln!(
        "  no program, unlisted: {:.0} pps sent",
        baseline.sent_per_s
    );
    rows.push(("no program (unlisted source, passes)".to_string(), baseline));

    let mut xdp_rows = Vec::new();
    for &count in &RULE_COUNTS {
        let list = std::env::temp_dir().join("nodestate-bench-xdp.rules");
        std::fs::write(&list, rules(count).join("\n"))?;
        blocklist(&["import", "--replace", &list.to_string_lossy()])?;
        let daemon = start_daemon()?;
        let measured = flood(&testbed, LISTED, &xdp_dropped);
        let passed = if count == *RULE_COUNTS.last().unwrap_or(&0) {
            Some(flood(&testbed, UNLISTED, &none))
        } else {
            None
        };
        stop_daemon(daemon)?;
        let measured = measured?;
        eprintln!(
            "  XDP {count} rules: {:.0} pps dropped",
            measured.dropped_per_s
        );
        xdp_rows.push((format!("XDP drop, {count} rules"), measured));
        if let Some(passed) = passed {
            rows.push((
                format!("XDP_PASS through {count} rules (unlisted source)"),
                passed?,
            ));
        }
    }
    blocklist(&["flush"])?;

    let mut nft_rows = Vec::new();
    for hook in ["ingress", "prerouting"] {
        for &count in &RULE_COUNTS {
            let table = nft_load(hook, &rules(count))?;
            let measured = flood(&testbed, LISTED, &nft_dropped);
            nft_delete(table)?;
            let measured = measured?;
            eprintln!(
                "  nft {hook} {count} rules: {:.0} pps dropped",
                measured.dropped_per_s
            );
            let name = if hook == "ingress" {
                "nftables netdev ingress"
            } else {
                "nftables ip raw prerouting"
            };
            nft_rows.push((format!("{name}, {count} rules"), measured));
        }
    }

    let mut table = String::from(
        "| configuration | sent (pps) | dropped (pps) | dropped / sent | kernel CPU per packet (ns) |\n\
         |---|---|---|---|---|\n",
    );
    let mut generator_limited = 0;
    let all: Vec<_> = xdp_rows.iter().chain(&nft_rows).collect();
    for (name, m) in &all {
        let share = m.dropped_per_s / m.sent_per_s.max(1.0);
        if share > 0.95 {
            generator_limited += 1;
        }
        let _ = writeln!(
            table,
            "| {name} | {:.0} | {:.0} | {:.2} | {:.0} |",
            m.sent_per_s, m.dropped_per_s, share, m.cpu_ns_per_packet
        );
    }
    for (name, m) in &rows {
        let _ = writeln!(
            table,
            "| {name} | {:.0} | – | – | {:.0} (per packet sent) |",
            m.sent_per_s, m.cpu_ns_per_packet
        );
    }
    let limit = if generator_limited == all.len() {
        "Every drop configuration dropped over 95% of what trafgen sent: **the traffic generator \
         was the limit**, so the drop rates are a floor and the CPU per packet is the better \
         comparison."
            .to_string()
    } else {
        format!(
            "{generator_limited} of {} drop configurations kept up with trafgen (over 95% of the \
             packets sent dropped); the others were the limit themselves (packets the veth ring \
             could not take count as sent, not dropped).",
            all.len()
        )
    };
    Ok(format!(
        "## XDP drop list vs nftables drop sets\n\n\
         `cargo xtask bench xdp`: one veth pair between two namespaces, trafgen (netsniff-ng, \
         one process, 64-byte UDP frames) flooding from the sending end for {SECONDS_PER_RUN} s \
         per configuration, all configurations in one run. XDP: `collector run --xdp-iface` on \
         the receiving end (native mode on veth; only the `oom` signal attached and program \
         statistics off, so nothing else runs per packet). nftables: the same rules in an \
         interval set, `ip saddr @blocked counter drop` in a netdev ingress chain or an ip raw \
         prerouting chain. Rules: the flood's source /32 plus /32s and /24s elsewhere. Kernel CPU \
         = system + softirq time of all CPUs from /proc/stat over the run, divided by the \
         packets dropped (or sent, for the pass rows); it includes trafgen's own send path, the \
         same in every row, so compare rows rather than reading absolutes. One run per row, no \
         repeats: the run-to-run spread is not measured, so read small differences with care.\n\n\
         {table}\n{limit}\n\nWhole benchmark: {:.0} s.\n",
        started.elapsed().as_secs_f64()
    ))
}
