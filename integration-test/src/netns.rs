//! Network test helpers: namespaces joined by a veth pair, removed on drop (even on panic),
//! and a throwaway bpffs pin directory so tests never touch the real drop list.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// A pin directory of its own under /sys/fs/bpf, removed with everything pinned in it on drop.
pub struct TestPinDir {
    pub path: PathBuf,
}

impl TestPinDir {
    pub fn new(test: &str) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/nodestate-test-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self { path }
    }
}

impl Drop for TestPinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs a command and panics with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A named network namespace, deleted on drop (which also deletes the veth ends inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// Runs a command inside the namespace, panicking if it fails.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside the namespace and returns its output whatever its status.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("running ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: `sender` (veth end `tx`) → `receiver` (end `rx`),
/// IPv4 10.200.0.1 → 10.200.0.2/24 and IPv6 fd00:200::1 → fd00:200::2/64, plus a second
/// "unlisted" source address on the sender side (10.200.0.3, fd00:200::3).
pub struct VethPair {
    pub sender: Netns,
    pub receiver: Netns,
    /// The receiving end's interface name inside `receiver`.
    pub rx: String,
}

impl VethPair {
    pub fn new(tag: &str) -> Self {
        let sender = Netns::new(&format!("ns-{tag}-tx"));
        let receiver = Netns::new(&format!("ns-{tag}-rx"));
        // Made in the sender namespace so no end ever appears in the host's.
        sender.exec(&[
            "ip",
            "link",
            "add",
            "tx0",
            "type",
            "veth",
            "peer",
            "name",
            "rx0",
            "netns",
            &receiver.name,
        ]);
        for (ns, dev, addrs) in [
            (
                &sender,
                "tx0",
                [
                    "10.200.0.1/24",
                    "10.200.0.3/24",
                    "fd00:200::1/64",
                    "fd00:200::3/64",
                ],
            ),
            (
                &receiver,
                "rx0",
                ["10.200.0.2/24", "", "fd00:200::2/64", ""],
            ),
        ] {
            for addr in addrs.iter().filter(|addr| !addr.is_empty()) {
                ns.exec(&["ip", "addr", "add", addr, "dev", dev, "nodad"]);
            }
            ns.exec(&["ip", "link", "set", dev, "up"]);
        }
        // Static neighbours: no ARP or neighbour discovery in the counts, and none that a
        // rule could drop.
        let rx_mac = mac(&receiver, "rx0");
        let tx_mac = mac(&sender, "tx0");
        for addr in ["10.200.0.2", "fd00:200::2"] {
            sender.exec(&[
                "ip",
                "neigh",
                "replace",
                addr,
                "lladdr",
                &rx_mac,
                "dev",
                "tx0",
                "nud",
                "permanent",
            ]);
        }
        for addr in ["10.200.0.1", "10.200.0.3", "fd00:200::1", "fd00:200::3"] {
            receiver.exec(&[
                "ip",
                "neigh",
                "replace",
                addr,
                "lladdr",
                &tx_mac,
                "dev",
                "rx0",
                "nud",
                "permanent",
            ]);
        }
        Self {
            sender,
            receiver,
            rx: "rx0".to_string(),
        }
    }
}

/// Runs `work` on a thread that has entered the named network namespace (only the network
/// namespace: bpffs and tracefs stay the host's), and returns its result.
pub fn in_netns<T: Send + 'static>(netns: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns on a namespace file we hold open; it changes only this thread,
        // which ends when `work` returns.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        work()
    })
    .join()
    .expect("namespace thread panicked")
}

/// The MAC address of `dev` inside `netns`.
pub fn mac(netns: &Netns, dev: &str) -> String {
    let output = netns.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The path `nsenter --net=` takes for a named namespace: entering only the network namespace
/// (unlike `ip netns exec`, which also remounts /sys and so hides the host's bpffs).
pub fn netns_path(netns: &Netns) -> String {
    format!("/run/netns/{}", netns.name)
}
