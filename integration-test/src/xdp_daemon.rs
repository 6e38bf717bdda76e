//! `collector run --xdp-iface` inside a test's receiving namespace, with the helpers the drop
//! list's daemon tests share: its log, its HTTP address, its CPU time, the CLI beside it.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use crate::{
    netns::{VethPair, netns_path},
    process::{Process, wait_for},
    workspace_binary,
};

/// The daemon, entered into the receiver's network namespace (nsenter execs it, so the
/// child's pid is the daemon's).
pub struct XdpDaemon {
    pub process: Process,
}

impl XdpDaemon {
    /// Starts it and waits for its first "collecting" line; panics with the log if it exits.
    pub fn start(veth: &VethPair, pins: &Path, extra: &[&str]) -> Self {
        let daemon = Self::spawn(veth, pins, extra);
        wait_for(Duration::from_secs(60), "the daemon to start", || {
            let log = daemon.process.log();
            assert!(!daemon.exited(), "the daemon exited while starting:\n{log}");
            log.contains("collecting").then_some(())
        });
        daemon
    }

    /// Starts it without waiting (for a start expected to fail).
    pub fn spawn(veth: &VethPair, pins: &Path, extra: &[&str]) -> Self {
        let net = format!("--net={}", netns_path(&veth.receiver));
        let collector = workspace_binary("collector");
        let mut args = vec![
            net.as_str(),
            collector.to_str().expect("a UTF-8 path"),
            "run",
            "--window",
            "1s",
            "--listen",
            "127.0.0.1:0",
            "--xdp-iface",
            &veth.rx,
            "--pin-dir",
            pins.to_str().expect("a UTF-8 path"),
        ];
        args.extend_from_slice(extra);
        Self {
            process: Process::start(Path::new("/usr/bin/nsenter"), &args, &[("NO_COLOR", "1")]),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether it has exited (reaped here if so).
    pub fn exited(&self) -> bool {
        // SAFETY: waitpid with WNOHANG on our own child; reaping it here is fine, as the
        // Process' drop then finds it gone.
        let mut status = 0;
        let pid = unsafe { libc::waitpid(self.pid() as i32, &mut status, libc::WNOHANG) };
        pid == self.pid() as i32
    }

    /// Waits up to `limit` for it to exit; its log.
    pub fn wait_exit(&self, limit: Duration) -> String {
        wait_for(limit, "the daemon to exit", || self.exited().then_some(()));
        self.log()
    }

    /// `kill -9`: no clean-up of any kind runs.
    pub fn kill9(self) {
        self.process.signal(libc::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(10));
    }

    /// SIGTERM, then its log once it exited.
    pub fn terminate(self) -> String {
        self.process.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// The address its HTTP server bound, from the log.
    pub fn address(&self) -> String {
        wait_for(
            Duration::from_secs(20),
            "the daemon's listen address",
            || {
                let log = self.log();
                let at = log.find("bound=")?;
                let rest = &log[at + "bound=".len()..];
                Some(
                    rest.split_whitespace()
                        .next()?
                        .trim_end_matches(',')
                        .to_string(),
                )
            },
        )
    }

    /// User plus system CPU time it used so far, in clock ticks (/proc/PID/stat).
    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid())
    }
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    // Fields after the command name, which may hold spaces: field 14 (utime) and 15 (stime)
    // are the 12th and 13th after the closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (USER_HZ).
pub fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// `collector blocklist --pin-dir PINS ARGS…`.
pub fn blocklist(pins: &Path, args: &[&str]) -> Output {
    Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(pins)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running collector blocklist")
}

/// As [`blocklist`], panicking with its stderr if it fails.
pub fn blocklist_ok(pins: &Path, args: &[&str]) -> Output {
    let output = blocklist(pins, args);
    assert!(
        output.status.success(),
        "blocklist {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Whether `count` pings from `source` to `target` (inside the pair) all came back.
pub fn ping(veth: &VethPair, source: &str, target: &str, count: u32) -> bool {
    let count = count.to_string();
    veth.sender
        .try_exec(&[
            "ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", "-I", source, target,
        ])
        .status
        .success()
}

/// Whether any XDP program is attached to the receiving end (`ip link` shows `prog/xdp`).
pub fn xdp_attached(veth: &VethPair) -> bool {
    let link = veth.receiver.exec(&["ip", "link", "show", &veth.rx]);
    String::from_utf8_lossy(&link.stdout).contains("prog/xdp")
}
