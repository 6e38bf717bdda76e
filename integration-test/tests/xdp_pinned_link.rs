//! The drop list outlives its daemon: the XDP link is pinned, so `kill -9` leaves the
//! program dropping listed sources, a restarted daemon adopts the link, a second daemon is
//! told who holds the interface, and `collector blocklist detach` takes it off. Real packets
//! through a veth pair between two namespaces made here.

use std::time::Duration;

use integration_test::{
    daemon::Daemon,
    netns::{TestPinDir, VethPair},
    privileged,
    xdp_daemon::{blocklist, blocklist_ok, ping, xdp_attached},
};

#[test]
fn xdp_keeps_dropping_after_kill_9_and_a_restarted_daemon_adopts_the_link() {
    if !privileged("xdp_keeps_dropping_after_kill_9_and_a_restarted_daemon_adopts_the_link") {
        return;
    }
    let veth = VethPair::new("fixa-pin");
    let pins = TestPinDir::new("fixa-pinned-link");
    let first = Daemon::builder().xdp(&veth, &pins.path).start();
    assert!(
        first.log().contains("XDP drop list attached"),
        "{}",
        first.log()
    );
    blocklist_ok(&pins.path, &["add", "10.200.0.1"]);
    assert!(
        !ping(&veth, "10.200.0.1", "10.200.0.2", 2),
        "listed source got through"
    );
    assert!(
        ping(&veth, "10.200.0.3", "10.200.0.2", 2),
        "unlisted source dropped"
    );

    // A crash: nothing of the daemon's clean-up runs, and the pinned link keeps the program.
    first.kill9();
    assert!(
        xdp_attached(&veth),
        "the program went with the killed daemon"
    );
    assert!(
        !ping(&veth, "10.200.0.1", "10.200.0.2", 2),
        "a listed source got through while no daemon ran"
    );
    assert!(ping(&veth, "10.200.0.3", "10.200.0.2", 2));
    // Edits still apply with no daemon: the program reads the pinned maps.
    blocklist_ok(&pins.path, &["add", "10.200.0.3"]);
    assert!(!ping(&veth, "10.200.0.3", "10.200.0.2", 2));
    blocklist_ok(&pins.path, &["del", "10.200.0.3"]);

    // A restart adopts the link instead of failing on "File exists".
    let second = Daemon::builder().xdp(&veth, &pins.path).start();
    let log = second.log();
    assert!(log.contains("adopted the link"), "{log}");
    assert!(!log.contains("File exists"), "{log}");
    assert!(!ping(&veth, "10.200.0.1", "10.200.0.2", 2));
    assert!(ping(&veth, "10.200.0.3", "10.200.0.2", 2));

    // A second daemon on the same interface and pin directory is told who serves it and
    // leaves the first one's link alone.
    let third = Daemon::builder().xdp(&veth, &pins.path).spawn();
    let refused = third.wait_exit(Duration::from_secs(60));
    assert!(
        refused.contains("another nodestate daemon already serves")
            && refused.contains(&format!("pid {}", second.pid())),
        "{refused}"
    );
    assert!(
        !ping(&veth, "10.200.0.1", "10.200.0.2", 2),
        "the second daemon took the link away"
    );

    // A daemon with another pin directory finds the interface taken by our program.
    let other_pins = TestPinDir::new("fixa-pinned-link-other");
    let fourth = Daemon::builder().xdp(&veth, &other_pins.path).spawn();
    let refused = fourth.wait_exit(Duration::from_secs(60));
    assert!(
        refused.contains("XDP program \"xdp_blocklist\"") && refused.contains("is attached to rx0"),
        "{refused}"
    );
    assert!(!ping(&veth, "10.200.0.1", "10.200.0.2", 2));

    // While a daemon serves the interface, detach refuses (stopping it detaches).
    let output = blocklist(&pins.path, &["detach", "--iface", "rx0"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("a running daemon serves rx0"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Uninstalling after a crash: detach takes the program off; the rules stay.
    second.kill9();
    assert!(!ping(&veth, "10.200.0.1", "10.200.0.2", 2));
    blocklist_ok(&pins.path, &["detach", "--iface", "rx0"]);
    assert!(!xdp_attached(&veth), "detach left the program attached");
    assert!(
        ping(&veth, "10.200.0.1", "10.200.0.2", 2),
        "still dropped after detach"
    );
    let listed = blocklist_ok(&pins.path, &["list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("10.200.0.1/32"));
    let again = blocklist(&pins.path, &["detach", "--iface", "rx0"]);
    assert!(
        !again.status.success(),
        "detaching twice said it did something"
    );

    // SIGTERM is a deliberate stop: it detaches and removes the pin.
    let fifth = Daemon::builder().xdp(&veth, &pins.path).start();
    assert!(!fifth.log().contains("adopted"), "{}", fifth.log());
    assert!(!ping(&veth, "10.200.0.1", "10.200.0.2", 2));
    let log = fifth.terminate();
    assert!(log.contains("XDP drop list detached"), "{log}");
    assert!(!xdp_attached(&veth));
    assert!(!pins.path.join("links/rx0/native").exists());
}
