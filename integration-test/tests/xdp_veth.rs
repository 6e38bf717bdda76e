//! The drop list on real traffic: two namespaces joined by a veth pair made here, the daemon
//! attaching XDP to the receiving end, ping and UDP/TCP streams from listed and unlisted
//! sources. Only addresses inside these namespaces are used (10.200.0.0/24, fd00:200::/64).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use integration_test::{
    daemon::Daemon,
    netns::{TestPinDir, VethPair, in_netns},
    privileged, workspace_binary,
};

const UDP_DATAGRAMS: u64 = 50;
const PINGS: u64 = 3;

fn blocklist(pins: &Path, args: &[&str]) {
    let output = Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(pins)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn hits(pins: &Path, rule: &str) -> u64 {
    let output = Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(pins)
        .args(["list", "--output", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .map_or(0, |r| r["packets"].as_u64().unwrap())
}

/// Whether `count` pings from `source` to `target` all came back (false if none did).
fn ping(veth: &VethPair, source: &str, target: &str) -> bool {
    let count = PINGS.to_string();
    let output = veth.sender.try_exec(&[
        "ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", "-I", source, target,
    ]);
    output.status.success()
}

/// Sends `UDP_DATAGRAMS` from `source` and returns how many arrived.
fn udp(veth: &VethPair, source: &str, target: &str) -> u64 {
    let target_addr: SocketAddr = target.parse().unwrap();
    let receiver = in_netns(&veth.receiver.name, move || UdpSocket::bind(target_addr))
        .expect("binding the UDP receiver");
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let source: SocketAddr = source.parse().unwrap();
    let sender =
        in_netns(&veth.sender.name, move || UdpSocket::bind(source)).expect("binding the sender");
    for n in 0..UDP_DATAGRAMS {
        sender.send_to(&n.to_be_bytes(), target_addr).unwrap();
    }
    let mut received = 0;
    let mut buffer = [0u8; 64];
    while receiver.recv_from(&mut buffer).is_ok() {
        received += 1;
    }
    received
}

/// Connects from the sender's default source (10.200.0.1) and streams 64 KiB; false if the
/// connection could not be made.
fn tcp(veth: &VethPair) -> bool {
    let listener = in_netns(&veth.receiver.name, || {
        TcpListener::bind("10.200.0.2:40001")
    })
    .expect("binding the TCP listener");
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        if let Ok((mut stream, _)) = listener.accept() {
            let mut all = Vec::new();
            let _ = stream.read_to_end(&mut all);
            return all.len();
        }
        0
    });
    let connected = in_netns(&veth.sender.name, || {
        match TcpStream::connect_timeout(
            &"10.200.0.2:40001".parse().unwrap(),
            Duration::from_millis(800),
        ) {
            Ok(mut stream) => {
                stream.write_all(&[7u8; 65536]).unwrap();
                true
            }
            Err(_) => false,
        }
    });
    if connected {
        assert_eq!(server.join().unwrap(), 65536, "the stream arrived whole");
    } else {
        // Unblock the accept so the thread ends.
        let _ = in_netns(&veth.receiver.name, || {
            TcpStream::connect("10.200.0.2:40001")
        });
        let _ = server.join();
    }
    connected
}

#[test]
fn xdp_drops_listed_sources_on_a_veth_pair_and_survives_a_restart() {
    if !privileged("xdp_drops_listed_sources_on_a_veth_pair_and_survives_a_restart") {
        return;
    }
    if Command::new("ping").arg("-V").output().is_err() {
        panic!("ping (iputils-ping) is missing: run `cargo xtask setup`");
    }
    let veth = VethPair::new("xdp");
    let pins = TestPinDir::new("veth");
    let daemon = Daemon::builder().xdp(&veth, &pins.path).start();
    let log = daemon.log();
    assert!(log.contains("XDP drop list attached"), "{log}");
    assert!(log.contains("mode=native"), "veth has native XDP: {log}");

    // Before any rule everything passes.
    assert!(ping(&veth, "10.200.0.1", "10.200.0.2"));
    assert_eq!(
        udp(&veth, "10.200.0.1:0", "10.200.0.2:40000"),
        UDP_DATAGRAMS
    );

    blocklist(
        &pins.path,
        &["add", "10.200.0.1", "fd00:200::1", "--comment", "test"],
    );
    assert!(
        !ping(&veth, "10.200.0.1", "10.200.0.2"),
        "listed IPv4 source pinged"
    );
    assert!(
        !ping(&veth, "fd00:200::1", "fd00:200::2"),
        "listed IPv6 source pinged"
    );
    assert!(
        ping(&veth, "10.200.0.3", "10.200.0.2"),
        "unlisted IPv4 source dropped"
    );
    assert!(
        ping(&veth, "fd00:200::3", "fd00:200::2"),
        "unlisted IPv6 source dropped"
    );
    assert_eq!(udp(&veth, "10.200.0.1:0", "10.200.0.2:40000"), 0);
    assert_eq!(udp(&veth, "[fd00:200::1]:0", "[fd00:200::2]:40000"), 0);
    assert_eq!(
        udp(&veth, "10.200.0.3:0", "10.200.0.2:40000"),
        UDP_DATAGRAMS
    );
    assert_eq!(hits(&pins.path, "10.200.0.1/32"), PINGS + UDP_DATAGRAMS);
    assert_eq!(hits(&pins.path, "fd00:200::1/128"), PINGS + UDP_DATAGRAMS);
    assert!(!tcp(&veth), "TCP from a listed source connected");
    assert!(
        hits(&pins.path, "10.200.0.1/32") > PINGS + UDP_DATAGRAMS,
        "SYNs not counted"
    );

    // Removing the rule restores traffic at once.
    blocklist(&pins.path, &["del", "10.200.0.1"]);
    assert!(ping(&veth, "10.200.0.1", "10.200.0.2"));
    assert!(tcp(&veth), "TCP blocked after the rule was removed");

    // A restart keeps the rules (they are pinned) and detaches on exit.
    let stopped = daemon.stop();
    assert!(stopped.contains("XDP drop list detached"), "{stopped}");
    let link = veth.receiver.exec(&["ip", "link", "show", "rx0"]);
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("prog/xdp"), "XDP left attached: {link}");
    assert!(
        ping(&veth, "fd00:200::1", "fd00:200::2"),
        "nothing drops without the daemon"
    );
    let daemon = Daemon::builder().xdp(&veth, &pins.path).start();
    let log = daemon.log();
    assert!(log.contains("rules=1"), "{log}");
    assert!(
        !ping(&veth, "fd00:200::1", "fd00:200::2"),
        "the rule did not survive a restart"
    );
    assert!(ping(&veth, "fd00:200::3", "fd00:200::2"));
    daemon.stop();
}
