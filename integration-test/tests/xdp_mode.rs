//! `--xdp-mode native|skb`: the drop list attaches in the mode asked for (as xdp-filter's
//! `--mode`), shown by `ip link` and the daemon's log, and drops listed sources in either.

use integration_test::{
    daemon::Daemon,
    netns::{TestPinDir, VethPair},
    privileged,
    xdp_daemon::{blocklist_ok, ping},
};

/// The receiving end as `ip link show` describes it.
fn link(veth: &VethPair) -> String {
    let output = veth.receiver.exec(&["ip", "link", "show", &veth.rx]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn attaches_in_mode_and_drops(mode: &str, tag: &str, logged: &str, link_word: &str) {
    let veth = VethPair::new(tag);
    let pins = TestPinDir::new(tag);
    let daemon = Daemon::builder()
        .xdp(&veth, &pins.path)
        .args(&["--xdp-mode", mode])
        .start();
    let log = daemon.log();
    assert!(log.contains("XDP drop list attached"), "{log}");
    assert!(log.contains(logged), "--xdp-mode {mode}: {log}");
    let shown = link(&veth);
    // `ip link` says "xdp" for a driver (native) program and "xdpgeneric" for a generic one.
    assert!(
        shown.split_whitespace().any(|word| word == link_word),
        "--xdp-mode {mode}: {shown}"
    );
    blocklist_ok(&pins.path, &["add", "10.200.0.1"]);
    assert!(
        !ping(&veth, "10.200.0.1", "10.200.0.2", 2),
        "--xdp-mode {mode}: a listed source pinged"
    );
    assert!(
        ping(&veth, "10.200.0.3", "10.200.0.2", 2),
        "--xdp-mode {mode}: an unlisted source was dropped"
    );
    daemon.stop();
}

#[test]
fn xdp_mode_skb_attaches_generic_and_drops() {
    if !privileged("xdp_mode_skb_attaches_generic_and_drops") {
        return;
    }
    attaches_in_mode_and_drops("skb", "x23s", "mode=generic", "xdpgeneric");
}

#[test]
fn xdp_mode_native_attaches_in_the_driver_and_drops() {
    if !privileged("xdp_mode_native_attaches_in_the_driver_and_drops") {
        return;
    }
    // veth has native XDP (since Linux 4.19).
    attaches_in_mode_and_drops("native", "x23n", "mode=native", "xdp");
}

#[test]
fn xdp_mode_native_fails_clearly_where_the_driver_has_none() {
    if !privileged("xdp_mode_native_fails_clearly_where_the_driver_has_none") {
        return;
    }
    // Loopback (the namespace's own) has no driver XDP: native alone must fail, not fall
    // back to generic.
    let veth = VethPair::new("x23d");
    let pins = TestPinDir::new("x23d");
    let daemon = Daemon::builder()
        .xdp(&veth, &pins.path)
        .args(&["--xdp-iface", "lo", "--xdp-mode", "native"])
        .spawn();
    let log = daemon.wait_exit(std::time::Duration::from_secs(60));
    assert!(log.contains("lo in native mode (--xdp-mode)"), "{log}");
    assert!(log.contains("--xdp-mode skb"), "{log}");
}
