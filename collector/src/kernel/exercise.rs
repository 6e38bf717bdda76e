//! `collector probes --exercise`: cause every signal that is cheap and safe to cause, then
//! compare what was caused with what the kernel programs counted.
//!
//! What it does, all within a few seconds and nothing off loopback:
//! - direct reads (never writes) on a block device named with `--block-device`;
//! - failing opens (no file system state needed) and fsyncs of a temporary file;
//! - forks whose children exit 0, one child that exits 3 and one killed by SIGSEGV;
//! - a TCP connect to a loopback listener it opens, and a refused connect (a loopback port
//!   nobody listens on), which also makes loopback packets, a reset and a dropped SYN.
//!
//! Counts are node-wide (`exclude_tgid` is off), so other work on the node can only add to
//! them: a signal passes when `counted >= caused`.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use collector_common::{BlockDevStats, event, op};
use serde::Serialize;

use crate::kernel::{HookOutcome, KernelCollector, probes::SIGNALS};

/// Failing opens caused (each a syscall error too).
const OPENS: u64 = 200;
const FSYNCS: u64 = 20;
/// Children that exit 0 at once (the exit-3 and SIGSEGV children come on top).
const PLAIN_FORKS: u64 = 8;
/// Direct reads of one block each on `--block-device`, at most (a smaller device gets fewer).
const BLOCK_READS: u64 = 64;
/// 4 KiB: a multiple of every logical block size O_DIRECT may demand.
const BLOCK: usize = 4096;
/// Loopback packets each way the two connects cannot do without: SYN, SYN-ACK and ACK of the
/// accepted connect, SYN and RST of the refused one (closing adds more; those are not needed).
const LOOPBACK_PACKETS: u64 = 5;
/// How long a loopback connect or accept may take before the exercise gives up.
const NET_TIMEOUT: Duration = Duration::from_secs(3);

/// What to exercise beyond the built-in actions.
#[derive(Debug, Clone, Default)]
pub struct ExerciseOptions {
    /// A block device to read from (directly, bypassing the page cache); nothing is written.
    pub block_device: Option<PathBuf>,
}

/// One count the exercise checks.
#[derive(Debug, Clone, Serialize)]
pub struct ExerciseLine {
    /// The signal's id (`collector probes` lists them).
    pub id: String,
    /// What was counted, e.g. "TCP connects".
    pub what: String,
    /// The hook kind the signal got (`kprobe`, `tracepoint`, …) or `missing`.
    pub hook: String,
    pub caused: u64,
    pub counted: u64,
    /// `counted`, `not counted`, or `missing` when the signal has no hook here.
    pub result: String,
}

/// What `--exercise` caused and what the programs counted.
#[derive(Debug, Clone, Serialize)]
pub struct Exercise {
    pub lines: Vec<ExerciseLine>,
    /// Signals the exercise does not cause, and why.
    pub not_caused: Vec<NotCaused>,
    /// True when every caused event was counted.
    pub all_counted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotCaused {
    pub id: String,
    pub why: String,
}

/// Signals not caused, with the reason: causing them is not cheap, not safe, or not exact.
const NOT_CAUSED: &[(&str, &str)] = &[
    (
        "sched",
        "context switches and run-queue waits happen anyway; no exact count to compare",
    ),
    ("oom", "an OOM kill is not safe to cause on a node"),
    ("reclaim", "reclaim needs memory pressure, not cheap"),
    (
        "tcp-retransmits",
        "loopback does not lose packets; making it lose them changes the node's network",
    ),
    (
        "cgroup-moves",
        "moving a task between cgroups changes the node's cgroups",
    ),
    (
        "block-submit",
        "counted per cgroup only (attribution), not as a node count",
    ),
];

/// Which action caused the events a counter counts, and so how many it caused.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// The failing opens (each one a failed syscall too).
    Opens,
    Fsyncs,
    /// Every forked child (each one exits too).
    Forks,
    NonzeroExits,
    Crashes,
    /// The accepted loopback connect.
    Connects,
    /// The refused loopback connect: a failure, a reset and a dropped SYN.
    Refused,
    LoopbackPackets,
}

/// The event counters the exercise checks, one line each as `probes::SIGNALS` lists hooks:
/// the signal's id, what is counted, the counters whose sum counts it, and the action that
/// caused the events. The exercise's failing children are brief commands, counted apart from
/// programs' failures where the kernel says when a process started, with them where not.
// One line per check, as a table reads; rustfmt would spread each over six.
#[rustfmt::skip]
const EVENT_CHECKS: &[(&str, &str, &[u32], Cause)] = &[
    ("opens", "file opens", &[event::OPENS], Cause::Opens),
    ("fsync", "fsyncs", &[event::FSYNCS], Cause::Fsyncs),
    ("syscalls", "failed syscalls", &[event::SYSCALL_ERRORS], Cause::Opens),
    ("fork", "processes created", &[event::FORKS], Cause::Forks),
    ("exit", "processes exited", &[event::EXITS], Cause::Forks),
    ("exit-code", "non-zero exit codes", &[event::EXITS_NONZERO, event::EXITS_NONZERO_BRIEF], Cause::NonzeroExits),
    ("fatal-signal", "fatal signals", &[event::FATAL_SIGNALS], Cause::Crashes),
    ("tcp-states", "TCP connects", &[event::TCP_CONNECTS], Cause::Connects),
    ("tcp-states", "TCP accepts", &[event::TCP_ACCEPTS], Cause::Connects),
    ("tcp-states", "TCP connect failures", &[event::TCP_CONNECT_FAILURES], Cause::Refused),
    ("tcp-resets", "TCP resets received", &[event::TCP_RESETS_RECEIVED], Cause::Refused),
    ("net-tx", "packets sent (loopback)", &[event::TX_PACKETS], Cause::LoopbackPackets),
    ("net-rx", "packets received (loopback)", &[event::RX_PACKETS], Cause::LoopbackPackets),
    // The SYN to a port without a socket is freed as a drop (reason NO_SOCKET).
    ("net-drops", "packets dropped", &[event::SKB_DROPS], Cause::Refused),
];

/// Runs every action, reading the counters before and after.
pub fn run(kernel: &KernelCollector, options: &ExerciseOptions) -> anyhow::Result<Exercise> {
    let device = options
        .block_device
        .as_deref()
        .map(BlockTarget::open)
        .transpose()?;
    let events_before = kernel.events()?;
    let block_before = device
        .as_ref()
        .map(|device| device_stats(kernel, device.kernel_dev))
        .transpose()?;

    let reads = match &device {
        Some(device) => device.read_blocks()?,
        None => 0,
    };
    fail_opens();
    fsync_temp_file()?;
    let children = fork_children()?;
    let net = loopback_connects()?;

    let events_after = kernel.events()?;
    let delta =
        |index: u32| events_after[index as usize].saturating_sub(events_before[index as usize]);
    let mut counts: Vec<(&str, &str, u64, u64)> = Vec::new();
    if let (Some(device), Some(before)) = (&device, block_before) {
        let after = device_stats(kernel, device.kernel_dev)?;
        counts.push((
            "block-issue",
            "block reads issued",
            reads,
            after.ops[op::READ].saturating_sub(before.ops[op::READ]),
        ));
        counts.push((
            "block-complete",
            "block requests completed",
            reads,
            after.completed.saturating_sub(before.completed),
        ));
    }
    counts.extend(EVENT_CHECKS.iter().map(|&(id, what, counters, cause)| {
        let caused = match cause {
            Cause::Opens => OPENS,
            Cause::Fsyncs => FSYNCS,
            Cause::Forks => children.forks,
            Cause::NonzeroExits => children.nonzero_exits,
            Cause::Crashes => children.crashes,
            Cause::Connects => net.connects,
            Cause::Refused => net.refused,
            Cause::LoopbackPackets => LOOPBACK_PACKETS,
        };
        (
            id,
            what,
            caused,
            counters.iter().map(|&counter| delta(counter)).sum(),
        )
    }));
    let lines: Vec<ExerciseLine> = counts
        .into_iter()
        .map(|(id, what, caused, counted)| {
            let hook = hook_kind(kernel, id);
            let result = if hook == "missing" {
                "missing"
            } else if counted >= caused {
                "counted"
            } else {
                "not counted"
            };
            ExerciseLine {
                id: id.to_string(),
                what: what.to_string(),
                hook,
                caused,
                counted,
                result: result.to_string(),
            }
        })
        .collect();
    let mut not_caused: Vec<NotCaused> = NOT_CAUSED
        .iter()
        .map(|(id, why)| NotCaused {
            id: (*id).to_string(),
            why: (*why).to_string(),
        })
        .collect();
    if device.is_none() {
        for id in ["block-issue", "block-complete"] {
            not_caused.push(NotCaused {
                id: id.to_string(),
                why: "no --block-device given".to_string(),
            });
        }
    }
    let all_counted = lines.iter().all(|line| line.result == "counted");
    Ok(Exercise {
        lines,
        not_caused,
        all_counted,
    })
}

/// The kind of hook signal `id` got, or `missing` (not attached, whatever the reason).
fn hook_kind(kernel: &KernelCollector, id: &str) -> String {
    SIGNALS
        .iter()
        .zip(kernel.attach_reports())
        .find(|(plan, _)| plan.id == id)
        .filter(|(_, report)| report.outcome == HookOutcome::Attached)
        .map_or_else(
            || "missing".to_string(),
            |(_, report)| report.kind.to_string(),
        )
}

fn device_stats(kernel: &KernelCollector, dev: u32) -> anyhow::Result<BlockDevStats> {
    Ok(kernel
        .block_snapshot()?
        .get(&dev)
        .copied()
        .unwrap_or(BlockDevStats::ZERO))
}

/// The device to read and the kernel `dev_t` its requests carry.
struct BlockTarget {
    path: PathBuf,
    file: File,
    size_bytes: u64,
    kernel_dev: u32,
}

impl BlockTarget {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let metadata = std::fs::metadata(path)
            .with_context(|| format!("--block-device {}", path.display()))?;
        if !metadata.file_type().is_block_device() {
            bail!("--block-device {}: not a block device", path.display());
        }
        // Read-only: the exercise must never change a device's contents.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .with_context(|| format!("opening {} for direct reads", path.display()))?;
        let size_bytes = {
            use std::io::Seek as _;
            (&file)
                .seek(io::SeekFrom::End(0))
                .with_context(|| format!("size of {}", path.display()))?
        };
        if size_bytes < BLOCK as u64 {
            bail!(
                "--block-device {}: {size_bytes} bytes, too small to read one {BLOCK}-byte block",
                path.display()
            );
        }
        let rdev = metadata.rdev();
        let (major, minor) = whole_disk(libc::major(rdev), libc::minor(rdev));
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size_bytes,
            kernel_dev: super::dev::kernel_dev(major, minor),
        })
    }

    /// Reads distinct blocks from the start of the device: one request each (O_DIRECT, no
    /// read-ahead, nothing cached).
    fn read_blocks(&self) -> anyhow::Result<u64> {
        let count = BLOCK_READS.min(self.size_bytes / BLOCK as u64);
        let mut buffer = AlignedBlock::new();
        for index in 0..count {
            self.file
                .read_exact_at(buffer.as_mut_slice(), index * BLOCK as u64)
                .with_context(|| format!("direct read of {}", self.path.display()))?;
        }
        Ok(count)
    }
}

/// Block tracepoints report the whole disk's device number, so a partition's reads are
/// counted on its disk: sysfs links a partition to its disk as the parent directory.
fn whole_disk(major: u32, minor: u32) -> (u32, u32) {
    let node = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !node.join("partition").exists() {
        return (major, minor);
    }
    std::fs::read_to_string(node.join("../dev"))
        .ok()
        .and_then(|text| {
            let (major, minor) = text.trim().split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .unwrap_or((major, minor))
}

/// One 4 KiB block aligned for O_DIRECT.
struct AlignedBlock(Box<Aligned>);

#[repr(C, align(4096))]
struct Aligned([u8; BLOCK]);

impl AlignedBlock {
    fn new() -> Self {
        Self(Box::new(Aligned([0; BLOCK])))
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0.0
    }
}

fn fail_opens() {
    for index in 0..OPENS {
        // Failing opens: no file system state needed, and they still enter the open path.
        let _ = File::open(format!("/nonexistent/nodestate-probe/{index}"));
    }
}

fn fsync_temp_file() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("nodestate-probe-{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut file = File::create(&path)?;
        for _ in 0..FSYNCS {
            file.write_all(b"nodestate")?;
            file.sync_all()?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("fsyncs on {}", path.display()))
}

struct Children {
    forks: u64,
    nonzero_exits: u64,
    crashes: u64,
}

/// How a forked child ends.
#[derive(Clone, Copy)]
enum ChildEnd {
    Exit(i32),
    Segfault,
}

fn fork_children() -> anyhow::Result<Children> {
    let mut children = Children {
        forks: 0,
        nonzero_exits: 0,
        crashes: 0,
    };
    let ends = std::iter::repeat_n(ChildEnd::Exit(0), PLAIN_FORKS as usize)
        .chain([ChildEnd::Exit(3), ChildEnd::Segfault]);
    for end in ends {
        let status = fork_and_wait(end)?;
        children.forks += 1;
        match end {
            ChildEnd::Exit(code) => {
                if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != code {
                    bail!("a child meant to exit {code} ended with wait status {status:#x}");
                }
                if code != 0 {
                    children.nonzero_exits += 1;
                }
            }
            ChildEnd::Segfault => {
                if !libc::WIFSIGNALED(status) || libc::WTERMSIG(status) != libc::SIGSEGV {
                    bail!("a child meant to die of SIGSEGV ended with wait status {status:#x}");
                }
                children.crashes += 1;
            }
        }
    }
    Ok(children)
}

/// Forks a child that ends as told and reaps it; returns its wait status.
fn fork_and_wait(end: ChildEnd) -> anyhow::Result<i32> {
    // SAFETY: the child makes only plain system calls (setrlimit, signal, raise, _exit), as a
    // child of a possibly multi-threaded process must: no allocation, no locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        match end {
            ChildEnd::Exit(code) => {
                // SAFETY: async-signal-safe; ends the child at once, running no destructors.
                unsafe { libc::_exit(code) }
            }
            ChildEnd::Segfault => {
                // The Rust runtime installs a SIGSEGV handler (stack overflow detection): put
                // the default action back so the signal kills the child like a real crash. No
                // core file: the crash is ours, the node's disk is not the place for it.
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: plain system calls in the child only (no allocation, no locks).
                unsafe {
                    libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                    libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                    libc::raise(libc::SIGSEGV);
                    libc::_exit(120)
                }
            }
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("waiting for a forked child");
        }
    }
}

struct Net {
    connects: u64,
    refused: u64,
}

/// A connect to a listener on loopback that this process opens and accepts from, then a connect
/// to a loopback port with no listener, which the kernel refuses with a reset.
fn loopback_connects() -> anyhow::Result<Net> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("listening on 127.0.0.1 (is the loopback interface up?)")?;
    let address = listener.local_addr()?;
    let client = TcpStream::connect_timeout(&address, NET_TIMEOUT)
        .with_context(|| format!("connecting to our own listener on {address}"))?;
    // Accept so the server side has reached ESTABLISHED before the counters are read.
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let server = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if started.elapsed() > NET_TIMEOUT {
                    bail!("the loopback connection was not accepted within {NET_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(err).context("accepting the loopback connection"),
        }
    };
    drop((client, server, listener));

    let closed: SocketAddr = {
        // A port the kernel just gave us, released again: nobody listens on it.
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        probe.local_addr()?
    };
    match TcpStream::connect_timeout(&closed, NET_TIMEOUT) {
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(err) => return Err(err).with_context(|| format!("refused connect to {closed}")),
        Ok(_) => bail!("{closed} accepted a connection: another process took the port"),
    }
    Ok(Net {
        connects: 1,
        refused: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_is_either_caused_or_says_why_not() {
        let caused = [
            "block-issue",
            "block-complete",
            "opens",
            "fsync",
            "syscalls",
            "fork",
            "exit",
            "exit-code",
            "fatal-signal",
            "tcp-states",
            "tcp-resets",
            "net-tx",
            "net-rx",
            "net-drops",
        ];
        for plan in SIGNALS {
            let not_caused = NOT_CAUSED.iter().any(|(id, _)| *id == plan.id);
            assert!(
                caused.contains(&plan.id) != not_caused,
                "{} must be exactly one of caused / not caused",
                plan.id
            );
        }
    }

    #[test]
    fn children_end_as_told() {
        let children = fork_children().expect("forking");
        assert_eq!(children.forks, PLAIN_FORKS + 2);
        assert_eq!(children.nonzero_exits, 1);
        assert_eq!(children.crashes, 1);
    }

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = BlockTarget::open(file.path()).err().expect("refused");
        assert!(err.to_string().contains("not a block device"), "{err}");
    }
}
