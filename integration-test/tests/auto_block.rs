//! Automatic flood blocking end to end: two namespaces joined by a veth pair made here, the
//! daemon (in the receiver's namespace, XDP on its veth end, `--auto-block`) learns a baseline,
//! then a UDP flood from the sender drives the node degraded; the flood's source /24 must be
//! blocked with a TTL and a reason, its packets dropped, the node healthy again, and the rule
//! gone after the TTL. A flood from an allow-listed range is never blocked.
//!
//! The sender runs at one fixed rate for the whole test: while the node learns (and between
//! phases) it sends from a source listed by hand, so XDP drops those packets before the stack
//! sees them; a flood phase only switches the source address. The machine thus does the same
//! sending work throughout, and the one thing a flood changes is what the node receives,
//! which is what the model should blame and what blocking takes away again.
//!
//! Addresses exist only in these namespaces: receiver 10.200.0.2; flood sources 10.201.0.1
//! (blockable), 10.202.0.1 (allow-listed), 10.203.0.1 (listed by hand).

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_test::{
    daemon::Daemon,
    http,
    netns::{TestPinDir, VethPair, in_netns},
    privileged, workspace_binary,
};

/// Datagrams per second the sender keeps up, whatever the source. High enough to stand far
/// out of a busy machine's own traffic, low enough for a shared 2-core machine.
const RATE_PPS: u64 = 20_000;
/// Large datagrams: a flood moves the received bytes even further from the baseline than
/// the packets (the model judges rates on a log scale, so a 200-fold rise in packets alone
/// is within a noisy machine's threshold).
const PAYLOAD_BYTES: usize = 1200;
/// The daemon blocks a prefix passing at least this much: a quarter of the sending rate, so
/// the flood qualifies with room to spare and nothing else on the machine comes near.
const MIN_PPS: u64 = RATE_PPS / 4;
/// Hard bounds on the sender, whatever happens to the test.
const MAX_SENDING: Duration = Duration::from_secs(150);
const LEARN_FOR: &str = "20s";
/// Long enough for the node to be seen healthy again before the rule goes.
const TTL_S: u64 = 25;

const TARGET: &str = "10.200.0.2:40999";
const LISTED: usize = 0;
const BLOCKABLE: usize = 1;
const ALLOWED: usize = 2;
const SOURCES: [&str; 3] = ["10.203.0.1", "10.201.0.1", "10.202.0.1"];
const BLOCKABLE_PREFIX: &str = "10.201.0.0/24";
const ALLOWED_RANGE: &str = "10.202.0.0/24";

/// A rate-limited UDP sender whose source address the test switches.
struct Sender {
    source: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(veth: &VethPair) -> Self {
        // Bound inside the sender's namespace, the sockets stay there whatever thread sends.
        let sockets: Vec<UdpSocket> = SOURCES
            .iter()
            .map(|source| {
                let address: SocketAddr = format!("{source}:0").parse().unwrap();
                in_netns(&veth.sender.name, move || UdpSocket::bind(address))
                    .unwrap_or_else(|err| panic!("binding a sender to {source}: {err}"))
            })
            .collect();
        let target: SocketAddr = TARGET.parse().unwrap();
        let source = Arc::new(AtomicUsize::new(LISTED));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let thread = {
            let (source, stop, sent) = (source.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let payload = [0x5au8; PAYLOAD_BYTES];
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_SENDING {
                    let due = (started.elapsed().as_secs_f64() * RATE_PPS as f64) as u64;
                    // Never more than 10 ms worth at once: a stalled thread catches up
                    // gradually instead of bursting.
                    let burst = due.saturating_sub(count).min(RATE_PPS / 100);
                    let socket = &sockets[source.load(Ordering::Relaxed)];
                    for _ in 0..burst {
                        // A full queue (ENOBUFS) only costs this datagram; the rate check
                        // below shows whether enough got out.
                        if socket.send_to(&payload, target).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    count += burst;
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Self {
            source,
            stop,
            sent,
            started,
            thread: Some(thread),
        }
    }

    fn send_from(&self, source: usize) {
        self.source.store(source, Ordering::Relaxed);
    }

    /// Datagrams sent per second so far.
    fn rate(&self) -> f64 {
        self.sent.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The daemon in the receiver's namespace with automatic blocking on, listening on `listen`
/// (inside that namespace).
fn start_daemon(veth: &VethPair, pins: &Path, listen: &str) -> Daemon {
    let ttl = format!("{TTL_S}s");
    let min_pps = MIN_PPS.to_string();
    Daemon::builder()
        .xdp(veth, pins)
        .listen(listen)
        .args(&[
            "--learn-for",
            LEARN_FOR,
            // The node's health here is also whatever else the machine runs (builds,
            // other tests' CPU, disks and processes): judged on the network fields alone,
            // the test sees the flood and not its neighbours.
            "--baseline-fields",
            "net_*",
            "--signals",
            "net-rx,net-tx,net-drops",
            "--auto-block",
            "--auto-block-allow",
            ALLOWED_RANGE,
            "--auto-block-ttl",
            &ttl,
            "--auto-block-min-pps",
            &min_pps,
        ])
        .start_limit(Duration::from_secs(30))
        .start()
}

/// GET inside the receiver's namespace (where the daemon listens).
fn get(veth: &VethPair, listen: &str, path: &str) -> String {
    let (listen, owned) = (listen.to_string(), path.to_string());
    match in_netns(&veth.receiver.name, move || http::get(&listen, &owned)) {
        Some((200, body)) => body,
        other => panic!("GET {path}: {other:?}"),
    }
}

fn health(veth: &VethPair, listen: &str) -> serde_json::Value {
    let mut state: serde_json::Value =
        serde_json::from_str(&get(veth, listen, "/state")).expect("/state is JSON");
    // The recent windows would only make failure messages unreadable.
    state
        .as_object_mut()
        .expect("/state is an object")
        .remove("windows");
    state
}

/// The value of the one series of `/metrics` whose line starts with `series`.
fn metric(veth: &VethPair, listen: &str, series: &str) -> f64 {
    let metrics = get(veth, listen, "/metrics");
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{metrics}"))
}

fn rules(pins: &Path) -> Vec<serde_json::Value> {
    let output = Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(pins)
        .args(["list", "--output", "json"])
        .output()
        .expect("running collector blocklist list");
    assert!(
        output.status.success(),
        "blocklist list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    listed["rules"].as_array().unwrap().clone()
}

fn rule(pins: &Path, prefix: &str) -> Option<serde_json::Value> {
    rules(pins).into_iter().find(|rule| rule["rule"] == prefix)
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `limit` with `what`
/// and the daemon's log.
fn wait_for<T>(
    daemon: &Daemon,
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; the daemon logged:\n{}",
            daemon.log()
        );
    }
}

/// The first line the daemon logs containing `text` (logging trails the metrics a little).
fn wait_for_log(daemon: &Daemon, text: &str) -> String {
    daemon.wait_for_log(Duration::from_secs(5), text)
}

fn state_is(veth: &VethPair, listen: &str, wanted: &str) -> Option<serde_json::Value> {
    let health = health(veth, listen);
    (health["state"] == wanted).then_some(health)
}

/// The explanation names a receive feature (what automatic blocking acts on).
fn blames_receive(health: &serde_json::Value) -> bool {
    health["explanation"].as_array().is_some_and(|features| {
        features.iter().any(|pair| {
            collector::xdp::autoblock::NET_RECEIVE_FEATURES
                .iter()
                .any(|name| pair[0] == *name)
        })
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_flood_is_blocked_automatically_and_the_rule_expires() {
    if !privileged("a_flood_is_blocked_automatically_and_the_rule_expires") {
        return;
    }
    let veth = VethPair::new("auto");
    for (source, prefix) in SOURCES
        .iter()
        .zip(["10.203.0.1/24", "10.201.0.1/24", "10.202.0.1/24"])
    {
        veth.sender
            .exec(&["ip", "addr", "add", prefix, "dev", "tx0", "nodad"]);
        let subnet = format!("{}.0/24", source.rsplit_once('.').unwrap().0);
        veth.receiver
            .exec(&["ip", "route", "add", &subnet, "dev", &veth.rx]);
    }
    let pins = TestPinDir::new("auto-block");
    let listen = format!(
        "127.0.0.1:{}",
        in_netns(&veth.receiver.name, http::free_port)
    );
    // Listed by hand (as an operator would) before anything runs, so the baseline traffic
    // never reaches the stack.
    let add = Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(&pins.path)
        .args(["add", SOURCES[LISTED], "--comment", "baseline sender"])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let sender = Sender::start(&veth);
    let daemon = start_daemon(&veth, &pins.path, &listen);
    assert!(
        daemon.log().contains("automatic flood blocking on"),
        "{}",
        daemon.log()
    );

    wait_for(
        &daemon,
        Duration::from_secs(45),
        "healthy after learning",
        || state_is(&veth, &listen, "healthy"),
    );
    let rate = sender.rate();
    assert!(
        rate >= MIN_PPS as f64 * 2.0,
        "the sender reached only {rate:.0} datagrams/s of {RATE_PPS}: the machine is too busy \
         for this test to mean anything"
    );

    // An allow-listed source may flood: the node degrades, nothing is blocked, the refusal
    // is counted.
    let refused = r#"nodestate_autoblock_refused_total{node=""#;
    let refused_allowlist = |veth: &VethPair| {
        let metrics = get(veth, &listen, "/metrics");
        metrics
            .lines()
            .find(|line| line.starts_with(refused) && line.contains(r#"reason="allowlist""#))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no allow-list refusals series in:\n{metrics}"))
    };
    assert_eq!(refused_allowlist(&veth), 0.0);
    sender.send_from(ALLOWED);
    let degraded = wait_for(
        &daemon,
        Duration::from_secs(20),
        "degraded by the allow-listed flood, blamed on receive features",
        || state_is(&veth, &listen, "degraded").filter(blames_receive),
    );
    wait_for(
        &daemon,
        Duration::from_secs(10),
        "the allow-listed flood refused and counted",
        || (refused_allowlist(&veth) >= 1.0).then_some(()),
    );
    assert!(
        rules(&pins.path)
            .iter()
            .all(|rule| rule["automatic"] == false),
        "an allow-listed source was blocked ({degraded}): {:?}",
        rules(&pins.path)
    );
    wait_for_log(&daemon, "overlaps an allow-listed range");
    sender.send_from(LISTED);
    wait_for(
        &daemon,
        Duration::from_secs(30),
        "healthy after the allow-listed flood",
        || state_is(&veth, &listen, "healthy"),
    );

    // A flood from anywhere else is blocked: the /24 with a TTL and the reason.
    sender.send_from(BLOCKABLE);
    let blocked_at = unix_now();
    let automatic = wait_for(
        &daemon,
        Duration::from_secs(20),
        "an automatic rule for the flood's /24",
        || rule(&pins.path, BLOCKABLE_PREFIX),
    );
    assert_eq!(automatic["automatic"], true, "{automatic}");
    let comment = automatic["comment"].as_str().unwrap();
    assert!(
        comment.starts_with("auto: net_") && comment.contains(" pps"),
        "the reason names the feature and the rate: {automatic}"
    );
    let expires = automatic["expires_unix_s"]
        .as_u64()
        .unwrap_or_else(|| panic!("an automatic rule has a TTL: {automatic}"));
    assert!(
        (blocked_at..=unix_now() + TTL_S).contains(&expires),
        "expires at {expires}, blocked at about {blocked_at}, TTL {TTL_S} s"
    );
    let health = health(&veth, &listen);
    assert_eq!(health["state"], "degraded", "{health}");
    let table = Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(&pins.path)
        .arg("list")
        .output()
        .expect("running collector blocklist list");
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table
        .lines()
        .find(|line| line.starts_with(BLOCKABLE_PREFIX))
        .unwrap_or_else(|| panic!("no row for the rule:\n{table}"));
    assert!(
        row.contains(" auto ") && row.contains(comment),
        "the table says who added the rule and why: {row}"
    );
    // The flood goes on, and the rule drops it.
    let dropped_before = automatic["packets"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let dropped_after =
        rule(&pins.path, BLOCKABLE_PREFIX).expect("the rule is still there")["packets"]
            .as_u64()
            .unwrap();
    assert!(
        dropped_after - dropped_before >= MIN_PPS / 2,
        "the rule dropped only {} packets in a second of a {RATE_PPS} pps flood",
        dropped_after - dropped_before
    );
    // Absorbed before the stack, the flood no longer hurts: healthy while it still runs.
    wait_for(
        &daemon,
        Duration::from_secs(20),
        "healthy with the flood blocked",
        || state_is(&veth, &listen, "healthy"),
    );
    assert!(
        rule(&pins.path, BLOCKABLE_PREFIX).is_some(),
        "the rule expired before the node was healthy again: raise TTL_S"
    );
    let log_line = wait_for_log(&daemon, "flood source blocked automatically");
    assert!(
        log_line.contains(BLOCKABLE_PREFIX) && log_line.contains("ttl=25s"),
        "{log_line}"
    );
    assert_eq!(
        metric(
            &veth,
            &listen,
            r#"nodestate_autoblock_rules_added_total{node=""#
        ),
        1.0
    );
    assert_eq!(
        metric(&veth, &listen, r#"nodestate_autoblock_active_rules{node=""#),
        1.0
    );

    // The flood ends; the rule goes once its TTL has passed.
    sender.send_from(LISTED);
    wait_for(
        &daemon,
        Duration::from_secs(TTL_S + 10),
        "the automatic rule removed after its TTL",
        || rule(&pins.path, BLOCKABLE_PREFIX).is_none().then_some(()),
    );
    assert!(
        unix_now() >= expires,
        "removed before its TTL ({expires}, now {})",
        unix_now()
    );
    assert!(
        rule(&pins.path, &format!("{}/32", SOURCES[LISTED])).is_some(),
        "the hand-made rule has no TTL and stays"
    );
    wait_for(
        &daemon,
        Duration::from_secs(5),
        "no automatic rule counted as active after the expiry",
        || {
            (metric(&veth, &listen, r#"nodestate_autoblock_active_rules{node=""#) == 0.0)
                .then_some(())
        },
    );
    drop(sender);
    let log = daemon.stop();
    assert!(log.contains("drop-list rule expired and removed"), "{log}");
}
