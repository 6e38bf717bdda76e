//! Each system signal, caused for real by the test, must move its feature by at least what was
//! caused (before/after deltas, never absolute values that depend on the machine).

use std::{
    collections::BTreeMap,
    fs,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use collector::{
    kernel::{HookOutcome, KernelCollector, KernelConfig},
    window::system::{SyscallSampling, SystemFeatures, SystemSnapshot, system_features},
};
use integration_test::privileged;

/// Loads every program, runs `cause`, and returns the features of that span.
fn features_of(test: &str, cause: impl FnOnce()) -> Option<SystemFeatures> {
    features_with(test, &KernelConfig::default(), cause)
}

/// [`features_of`] with the programs loaded with `config`.
fn features_with(
    test: &str,
    config: &KernelConfig,
    cause: impl FnOnce(),
) -> Option<SystemFeatures> {
    if !privileged(test) {
        return None;
    }
    let kernel = KernelCollector::load(config).expect("loading programs");
    let before = SystemSnapshot::read(&kernel).expect("snapshot");
    let started = std::time::Instant::now();
    cause();
    let after = SystemSnapshot::read(&kernel).expect("snapshot");
    let window_s = started.elapsed().as_secs_f64();
    // Every process exit since load (the test's and the node's) was read in full: a failed
    // read of an exit status or a process start is counted, never silent, and none is
    // expected on a kernel whose BTF gave the offsets.
    let unreadable = kernel.accounting().expect("accounting").exit_unreadable;
    assert_eq!(unreadable, 0, "process exits the programs could not read");
    let features = system_features(
        &before,
        &after,
        window_s,
        SyscallSampling::whole(window_s),
        &BTreeMap::new(),
    );
    // Turn rates back into counts so assertions compare with what the test did.
    Some(SystemFeatures {
        syscall_errors_by_errno: features.syscall_errors_by_errno.clone(),
        ..scale(&features, window_s)
    })
}

/// Multiplies every per-second feature by the window length.
fn scale(features: &SystemFeatures, window_s: f64) -> SystemFeatures {
    let mut value = serde_json::to_value(features).unwrap();
    for (name, field) in value.as_object_mut().unwrap() {
        if name.ends_with("_per_s")
            && let Some(rate) = field.as_f64()
        {
            *field = serde_json::json!((rate * window_s).round());
        }
    }
    serde_json::from_value(value).unwrap()
}

#[test]
fn every_signal_attaches_or_says_why() {
    if !privileged("every_signal_attaches_or_says_why") {
        return;
    }
    let kernel = KernelCollector::load(&KernelConfig::default()).expect("loading programs");
    let reports = kernel.attach_reports();
    assert_eq!(reports.len(), collector::kernel::probes::SIGNALS.len());
    for report in reports {
        // On our kernels every signal has a hook; a kprobe may have fallen back.
        assert_eq!(report.outcome, HookOutcome::Attached, "{report:?}");
    }
    // The kprobe signals: their kprobe where the kernel has kprobes, else the tracepoint
    // fallback, with the failed kprobe attempt reported (`cargo xtask vm-test` proves the
    // kprobe side on a kernel that has them).
    let kprobes_here = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    for signal in ["file opens", "fsync latency"] {
        let report = reports.iter().find(|r| r.signal == signal).unwrap();
        if kprobes_here {
            assert_eq!(report.kind, "kprobe", "{report:?}");
        } else {
            assert_eq!(report.kind, "tracepoint", "{report:?}");
            assert!(
                report.tried.len() == 1 && report.tried[0].starts_with("kprobe "),
                "{report:?}"
            );
        }
    }
}

#[test]
fn forks_and_non_zero_exits_are_counted() {
    const FAILING: u64 = 20;
    const SUCCEEDING: u64 = 30;
    let Some(features) = features_of("forks_and_non_zero_exits_are_counted", || {
        for _ in 0..FAILING {
            let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
            assert_eq!(status.code(), Some(3));
        }
        for _ in 0..SUCCEEDING {
            assert!(
                Command::new("sh")
                    .args(["-c", "exit 0"])
                    .status()
                    .unwrap()
                    .success()
            );
        }
    }) else {
        return;
    };
    let children = (FAILING + SUCCEEDING) as f64;
    assert!(features.proc_forks_per_s >= children, "{features:?}");
    assert!(features.proc_exits_per_s >= children, "{features:?}");
    // The failing ones, and not the successful ones: were those counted too, there would be
    // at least FAILING + SUCCEEDING. The gap tolerates other processes of the node failing
    // meanwhile. Each lived a few milliseconds: brief commands, not programs that failed.
    let brief = features.proc_brief_exits_nonzero_per_s;
    assert!(
        (FAILING as f64..children).contains(&brief),
        "{brief} brief non-zero exits for {FAILING} failing and {SUCCEEDING} successful \
         children: {features:?}"
    );
    let programs = features.proc_exits_nonzero_per_s;
    assert!(
        programs < FAILING as f64,
        "{programs} non-zero exits counted as programs' for {FAILING} brief failing children"
    );
}

/// Compiles `source` (C) with the C compiler every Rust build has (`cc`, its linker) into
/// `dir/name`, and returns the program's path.
fn compile_c(dir: &std::path::Path, name: &str, source: &str) -> PathBuf {
    let source_path = dir.join(format!("{name}.c"));
    fs::write(&source_path, source).unwrap();
    let program = dir.join(name);
    let status = Command::new("cc")
        .arg("-pthread")
        .arg("-o")
        .arg(&program)
        .arg(&source_path)
        .status()
        .expect("cc (the C compiler Rust links with)");
    assert!(status.success(), "cc failed on {}", source_path.display());
    program
}

#[test]
fn a_program_that_ran_before_failing_is_not_a_brief_command() {
    // A short limit keeps the test short; the default (1 s) is the same comparison.
    let config = KernelConfig {
        brief_exit_ns: 300_000_000,
        ..KernelConfig::default()
    };
    const RAN: u64 = 3;
    const BRIEF: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let leader_gone = compile_c(
        dir.path(),
        "leader_gone",
        "#include <pthread.h>\n#include <stdlib.h>\n#include <unistd.h>\n\
         static void *last(void *unused) { usleep(100000); exit(4); }\n\
         int main(void) { pthread_t t; usleep(400000); pthread_create(&t, 0, last, 0); \
         pthread_exit(0); }\n",
    );
    let Some(features) = features_with(
        "a_program_that_ran_before_failing_is_not_a_brief_command",
        &config,
        || {
            for _ in 0..RAN {
                let status = Command::new("sh")
                    .args(["-c", "sleep 0.4; exit 3"])
                    .status()
                    .unwrap();
                assert_eq!(status.code(), Some(3));
            }
            // The process ran 0.5 s, but the thread that ends it (its last: the first one
            // left) started 0.1 s before: the process's start is its first thread's, so this
            // is a program's failure too.
            let status = Command::new(&leader_gone).status().unwrap();
            assert_eq!(status.code(), Some(4));
            for _ in 0..BRIEF {
                let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
                assert_eq!(status.code(), Some(3));
            }
        },
    ) else {
        return;
    };
    // At least ours; fewer than ours and the brief ones (other processes of the node may fail
    // meanwhile, but not ten of them in a second).
    let programs = features.proc_exits_nonzero_per_s;
    assert!(
        ((RAN + 1) as f64..(RAN + 1 + BRIEF) as f64).contains(&programs),
        "{programs} programs' non-zero exits for {} that ran 0.4 s or more: {features:?}",
        RAN + 1
    );
    let brief = features.proc_brief_exits_nonzero_per_s;
    assert!(
        (BRIEF as f64..(BRIEF + RAN + 1) as f64).contains(&brief),
        "{brief} brief non-zero exits for {BRIEF} brief children: {features:?}"
    );
}

#[test]
fn crashing_children_are_fatal_signals() {
    const CRASHES: u64 = 5;
    let Some(features) = features_of("crashing_children_are_fatal_signals", || {
        for _ in 0..CRASHES {
            let status = Command::new("sh")
                .args(["-c", "kill -SEGV $$"])
                .status()
                .unwrap();
            assert!(status.code().is_none(), "the child should die of SIGSEGV");
        }
    }) else {
        return;
    };
    assert!(
        features.proc_fatal_signals_per_s >= CRASHES as f64,
        "{features:?}"
    );
}

#[test]
fn thread_ping_pong_shows_context_switches_and_runqueue_latency() {
    const ROUNDS: u64 = 2000;
    let Some(features) = features_of(
        "thread_ping_pong_shows_context_switches_and_runqueue_latency",
        || {
            let (to_peer, from_main) = std::sync::mpsc::channel::<u64>();
            let (to_main, from_peer) = std::sync::mpsc::channel::<u64>();
            let peer = std::thread::spawn(move || {
                for value in from_main {
                    to_main.send(value).unwrap();
                }
            });
            for round in 0..ROUNDS {
                to_peer.send(round).unwrap();
                assert_eq!(from_peer.recv().unwrap(), round);
            }
            drop(to_peer);
            peer.join().unwrap();
        },
    ) else {
        return;
    };
    // Every hand-off blocks one thread and wakes the other.
    assert!(
        features
            .sched_context_switches_per_s
            .expect("/proc/stat reads")
            >= ROUNDS as f64,
        "{features:?}"
    );
    assert!(features.sched_runqueue_latency_p50_us > 0.0, "{features:?}");
}

#[test]
fn failing_opens_are_counted_with_their_errno() {
    const OPENS: u64 = 500;
    let Some(features) = features_of("failing_opens_are_counted_with_their_errno", || {
        for index in 0..OPENS {
            assert!(fs::File::open(format!("/nonexistent/nodestate/{index}")).is_err());
        }
    }) else {
        return;
    };
    assert!(features.file_opens_per_s >= OPENS as f64, "{features:?}");
    assert!(
        features.file_open_errors_per_s >= OPENS as f64,
        "{features:?}"
    );
    assert!(
        features.syscall_errors_per_s >= OPENS as f64,
        "{features:?}"
    );
    assert!(
        features.syscall_errors_by_errno["ENOENT"] >= OPENS,
        "{features:?}"
    );
}

#[test]
fn running_out_of_file_descriptors_shows_as_emfile() {
    const FAILURES: u64 = 300;
    let Some(features) = features_of("running_out_of_file_descriptors_shows_as_emfile", || {
        // Lower our own soft limit (tests run one at a time), fill it, fail, restore.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid pointer to an rlimit.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let highest_open = fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(2);
        let tight = libc::rlimit {
            rlim_cur: highest_open + 16,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: valid pointer to an rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) }, 0);
        let mut held = Vec::new();
        let mut failures = 0;
        while failures < FAILURES {
            match fs::File::open("/dev/null") {
                Ok(file) => held.push(file),
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
                    failures += 1;
                }
            }
        }
        drop(held);
        // SAFETY: restoring the limit read above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }) else {
        return;
    };
    assert!(
        features.syscall_emfile_per_s >= FAILURES as f64,
        "{features:?}"
    );
    assert!(features.syscall_errors_by_errno["EMFILE"] >= FAILURES);
}

#[test]
fn fsync_latency_is_measured() {
    const SYNCS: u64 = 20;
    let Some(features) = features_of("fsync_latency_is_measured", || {
        let file = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        for _ in 0..SYNCS {
            std::io::Write::write_all(&mut file.as_file(), &[7u8; 4096]).unwrap();
            file.as_file().sync_all().unwrap();
        }
    }) else {
        return;
    };
    assert!(features.fsyncs_per_s >= SYNCS as f64, "{features:?}");
    assert!(features.fsync_latency_p99_us > 0.0, "{features:?}");
}

/// A memory cgroup made by the test with a hard limit, removed on drop.
struct MemoryCgroup {
    path: PathBuf,
}

impl MemoryCgroup {
    fn new(limit_bytes: u64) -> Self {
        let name = format!("nodestate-test-mem-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let (path, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), "memory.limit_in_bytes")
        } else {
            (PathBuf::from("/sys/fs/cgroup").join(name), "memory.max")
        };
        fs::create_dir(&path).expect("creating the memory cgroup");
        fs::write(path.join(limit_file), limit_bytes.to_string()).expect("setting the limit");
        Self { path }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_memory_hog_over_its_cgroup_limit_is_oom_killed() {
    let mut cgroup = None;
    let Some(features) = features_of("a_memory_hog_over_its_cgroup_limit_is_oom_killed", || {
        let memory = MemoryCgroup::new(32 << 20);
        // `tail` keeps the whole "last line" of a newline-free stream in memory.
        let script = format!(
            "echo $$ > {}/cgroup.procs && head -c 256M /dev/zero | tail > /dev/null",
            memory.path.display()
        );
        let status = Command::new("sh")
            .args(["-c", &script])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the hog should have been killed");
        cgroup = Some(memory);
    }) else {
        return;
    };
    drop(cgroup);
    assert!(features.mem_oom_kills >= 1, "{features:?}");
    assert!(features.mem_reclaims_per_s >= 1.0, "{features:?}");
}

/// Two network namespaces joined by a veth pair, deleted on drop.
struct VethPair {
    client: String,
    server: String,
}

const CLIENT_ADDRESS: &str = "10.201.0.1";
const SERVER_ADDRESS: &str = "10.201.0.2";

impl VethPair {
    fn new() -> Self {
        let id = std::process::id();
        let pair = Self {
            client: format!("nodestate-c-{id}"),
            server: format!("nodestate-s-{id}"),
        };
        let ip = |args: &str| {
            let status = Command::new("ip")
                .args(args.split_whitespace())
                .status()
                .expect("running ip");
            assert!(status.success(), "ip {args} failed");
        };
        ip(&format!("netns add {}", pair.client));
        ip(&format!("netns add {}", pair.server));
        ip(&format!(
            "link add nsveth-c netns {} type veth peer name nsveth-s netns {}",
            pair.client, pair.server
        ));
        for (ns, device, address) in [
            (&pair.client, "nsveth-c", CLIENT_ADDRESS),
            (&pair.server, "nsveth-s", SERVER_ADDRESS),
        ] {
            ip(&format!("-n {ns} addr add {address}/24 dev {device}"));
            ip(&format!("-n {ns} link set {device} up"));
            ip(&format!("-n {ns} link set lo up"));
        }
        pair
    }

    /// Runs `work` on a thread that lives in namespace `ns`.
    fn in_namespace<T: Send + 'static>(
        ns: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let netns = fs::File::open(&path).expect("opening the namespace");
            // SAFETY: setns on this thread only, with a namespace file descriptor we hold.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
    }

    /// Drops `percent`% of packets arriving in the server namespace, at random.
    fn random_loss(&self, percent: u32) {
        let rules = format!(
            "table inet nodestate_loss {{\n chain input {{\n  type filter hook input priority 0;\n  \
             numgen random mod 100 < {percent} drop\n }}\n}}\n"
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &self.server, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("running nft (nftables)");
        std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
        assert!(nft.wait().unwrap().success(), "nft failed on:\n{rules}");
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn tcp_over_a_lossy_link_retransmits_and_refused_connects_fail() {
    const BYTES: usize = 4 << 20;
    let mut pair = None;
    let Some(features) = features_of(
        "tcp_over_a_lossy_link_retransmits_and_refused_connects_fail",
        || {
            let veth = VethPair::new();
            veth.random_loss(10);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let server = VethPair::in_namespace(&veth.server, move || {
                let listener = std::net::TcpListener::bind((SERVER_ADDRESS, 7000)).unwrap();
                ready_tx.send(()).unwrap();
                let (mut stream, _) = listener.accept().unwrap();
                let mut received = Vec::new();
                std::io::Read::read_to_end(&mut stream, &mut received).unwrap();
                received.len()
            });
            ready_rx.recv().unwrap();
            let client = VethPair::in_namespace(&veth.client, move || {
                let mut stream = std::net::TcpStream::connect((SERVER_ADDRESS, 7000)).unwrap();
                std::io::Write::write_all(&mut stream, &vec![1u8; BYTES]).unwrap();
                drop(stream);
                // Nobody listens on 7001: the server's kernel answers with a reset, and a
                // blocking connect returns ECONNREFUSED from the syscall itself. With 10%
                // loss the SYN may need a retry (1 s), which is still bounded.
                let refused = std::net::TcpStream::connect((SERVER_ADDRESS, 7001));
                refused.unwrap_err().kind()
            });
            let refused = client.join().unwrap();
            assert_eq!(server.join().unwrap(), BYTES);
            assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
            pair = Some(veth);
        },
    ) else {
        return;
    };
    drop(pair);
    assert!(features.tcp_retransmits_per_s >= 1.0, "{features:?}");
    assert!(features.tcp_connects_per_s >= 1.0, "{features:?}");
    assert!(features.tcp_accepts_per_s >= 1.0, "{features:?}");
    assert!(features.tcp_connect_failures_per_s >= 1.0, "{features:?}");
    assert!(features.tcp_resets_per_s >= 1.0, "{features:?}");
    assert!(features.syscall_econnrefused_per_s >= 1.0, "{features:?}");
    // 4 MiB in ≤ 64 KiB segments (GSO) is at least 64 packets each way on the veth.
    assert!(features.net_rx_packets_per_s >= 64.0, "{features:?}");
    assert!(features.net_tx_packets_per_s >= 64.0, "{features:?}");
    assert!(features.net_rx_bytes_per_s >= BYTES as f64, "{features:?}");
    assert!(features.net_drops_per_s >= 1.0, "{features:?}");
}

/// A network namespace of the test's own with only its loopback up, deleted on drop.
struct LoopbackNamespace(String);

impl LoopbackNamespace {
    fn new() -> Self {
        let ns = Self(format!("nodestate-lo-{}", std::process::id()));
        for args in [
            vec!["netns", "add", &ns.0],
            vec!["-n", &ns.0, "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("running ip");
            assert!(status.success(), "ip {args:?} failed");
        }
        ns
    }

    /// Applies nftables `rules` inside the namespace.
    fn nft(&self, rules: &str) {
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("running nft (nftables)");
        std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
        assert!(nft.wait().unwrap().success(), "nft failed on:\n{rules}");
    }

    /// The packets counted by the one `counter` of nftables table `inet <table>`.
    fn nft_counted(&self, table: &str) -> u64 {
        let output = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "list", "table", "inet", table,
            ])
            .output()
            .expect("running nft (nftables)");
        assert!(output.status.success(), "nft list table {table} failed");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_once("counter packets ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|packets| packets.parse().ok())
            .unwrap_or_else(|| panic!("no packet counter in:\n{text}"))
    }
}

impl Drop for LoopbackNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Under connection churn where the server closes first, segments that reach a socket in
/// TIME_WAIT are handled there (ACKed, or ignored when old) and then freed by `tcp_v4_rcv`
/// with reason `NOT_SPECIFIED`: about one per thousand connections, measured on 6.18, which
/// made a burst of connections look like loss. The programs tell them apart by `rx_sk`'s
/// state: they show as `TCP_TIME_WAIT` and are not drops. Organic ones are too rare to count
/// on in a short test, so the namespace also loses a tenth of the server's bare ACKs (the
/// one answering the client's FIN, the loss TIME_WAIT exists for): each loss makes the
/// client retransmit its FIN into the server's TIME_WAIT socket, a count the kernel's own
/// nftables counter gives.
#[test]
fn segments_handled_in_time_wait_are_not_counted_as_drops() {
    const TEST: &str = "segments_handled_in_time_wait_are_not_counted_as_drops";
    const CONNECTIONS: usize = 20_000;
    const CLIENTS: usize = 4;
    const LONGEST: Duration = Duration::from_secs(20);
    const PORT: u16 = 7100;
    if !privileged(TEST) {
        return;
    }
    let tracefs = collector::kernel::tracefs::Tracefs::find_or_mount().expect("tracefs");
    let format = tracefs
        .event_format("skb", "kfree_skb")
        .expect("reading the skb:kfree_skb format");
    if format.field("rx_sk").is_err() {
        let why = "skb:kfree_skb has no rx_sk field on this kernel (Linux 6.12+)";
        if std::env::var_os("NODESTATE_REQUIRE_PRIVILEGED_TESTS").is_some() {
            panic!("{TEST}: required in this run but {why}");
        }
        eprintln!("SKIPPING {TEST}: {why}");
        return;
    }
    let names = format.symbolic_names;
    let kernel = KernelCollector::load(&KernelConfig::default()).expect("loading programs");
    let ns = LoopbackNamespace::new();
    ns.nft(&format!(
        "table inet nodestate_tw {{\n chain output {{\n  type filter hook output priority 0;\n  \
         tcp sport {PORT} tcp flags == ack numgen random mod 100 < 10 counter drop\n }}\n}}\n"
    ));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server_stop = stop.clone();
    let server = VethPair::in_namespace(&ns.0, move || {
        let listener = std::net::TcpListener::bind(("127.0.0.1", PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let mut served = 0usize;
        for stream in listener.incoming() {
            if server_stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            // Answer and close first: this side's socket ends in TIME_WAIT.
            let mut stream = stream.unwrap();
            let _ = std::io::Write::write_all(&mut stream, b"bye");
            served += 1;
        }
        served
    });
    ready_rx.recv().unwrap();

    let before = SystemSnapshot::read(&kernel).expect("snapshot");
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            VethPair::in_namespace(&ns.0, move || {
                let mut made = 0usize;
                while made < CONNECTIONS / CLIENTS && started.elapsed() < LONGEST {
                    let mut stream = std::net::TcpStream::connect(("127.0.0.1", PORT)).unwrap();
                    let mut answer = Vec::new();
                    std::io::Read::read_to_end(&mut stream, &mut answer).unwrap();
                    assert_eq!(answer, b"bye");
                    made += 1;
                }
                made
            })
        })
        .collect();
    let made: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    // Wake the server's accept with one last connection.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    VethPair::in_namespace(&ns.0, move || {
        std::net::TcpStream::connect(("127.0.0.1", PORT)).unwrap();
    })
    .join()
    .unwrap();
    let served = server.join().unwrap();
    // The clients' FIN retransmissions back off from 200 ms; three losses in a row (one in a
    // thousand) are done within 1.4 s.
    std::thread::sleep(Duration::from_secs(3));
    let after = SystemSnapshot::read(&kernel).expect("snapshot");
    let window_s = started.elapsed().as_secs_f64();
    let lost_acks = ns.nft_counted("nodestate_tw");
    drop(ns);
    assert_eq!(made, served);

    let features = system_features(
        &before,
        &after,
        window_s,
        SyscallSampling::whole(window_s),
        &names,
    );
    let by_reason = &features.net_drops_by_reason;
    let time_wait = by_reason.get("TCP_TIME_WAIT").copied().unwrap_or(0);
    let not_specified = by_reason.get("NOT_SPECIFIED").copied().unwrap_or(0);
    eprintln!(
        "{made} connections in {window_s:.1} s, {lost_acks} ACKs lost: {time_wait} segments \
         handled in TIME_WAIT, {not_specified} NOT_SPECIFIED drops, {by_reason:?}"
    );
    assert!(made >= 1000, "only {made} connections in {LONGEST:?}");
    assert!(
        lost_acks > 0,
        "the rule lost no ACK over {made} connections"
    );
    // Each lost ACK brings a FIN back into a TIME_WAIT socket. Measured on 6.18: 96.4 to
    // 98.8% of the losses showed up (the rest is not explained yet, and no other drop reason
    // grew); a few organic ones, here or elsewhere on the host, may add to them.
    assert!(
        time_wait * 10 >= lost_acks * 9 && time_wait <= lost_acks * 2,
        "{lost_acks} ACKs lost but {time_wait} segments handled in TIME_WAIT: {by_reason:?}"
    );
    // Were they still counted as NOT_SPECIFIED too, that count would be at least theirs.
    assert!(
        not_specified < time_wait,
        "{not_specified} NOT_SPECIFIED drops for {time_wait} TIME_WAIT segments: {by_reason:?}"
    );
}
