//! Helpers the drop list's daemon tests share beside the daemon itself (which
//! [`crate::daemon::DaemonBuilder::xdp`] starts): CPU time, the blocklist CLI, ping, and
//! whether XDP is attached.

use std::{
    path::Path,
    process::{Command, Output},
};

use crate::{netns::VethPair, workspace_binary};

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
