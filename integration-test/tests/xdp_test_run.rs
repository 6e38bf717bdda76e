//! The XDP drop-list program on crafted frames through BPF_PROG_TEST_RUN: verdicts and every
//! counter, without any network device.

use std::net::{Ipv4Addr, Ipv6Addr};

use collector::xdp::{IpNet, Totals, XdpBlocklist};
use integration_test::{netns::TestPinDir, privileged};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn ethernet(ethertype: u16, tags: &[u16]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for tpid in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&100u16.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// IPv4 + UDP with 8 bytes of payload.
fn ipv4(source: Ipv4Addr, tags: &[u16]) -> Vec<u8> {
    let mut frame = ethernet(0x0800, tags);
    let total: u16 = 20 + 8 + 8;
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&[10, 200, 0, 2]);
    frame.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 16, 0, 0]);
    frame.extend_from_slice(b"nodestat");
    frame
}

/// IPv6 + UDP with 8 bytes of payload.
fn ipv6(source: Ipv6Addr, tags: &[u16]) -> Vec<u8> {
    let mut frame = ethernet(0x86DD, tags);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&16u16.to_be_bytes());
    frame.extend_from_slice(&[17, 64]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&"fd00:200::2".parse::<Ipv6Addr>().unwrap().octets());
    frame.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 16, 0, 0]);
    frame.extend_from_slice(b"nodestat");
    frame
}

fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

fn nets(rules: &[&str]) -> Vec<IpNet> {
    rules
        .iter()
        .map(|rule| collector::xdp::rules::parse_rule(rule).unwrap())
        .collect()
}

fn hits(xdp: &XdpBlocklist, rule: &str) -> (u64, u64) {
    let listed = xdp.blocklist.list().unwrap();
    let rule = listed
        .iter()
        .find(|listed| listed.rule == rule)
        .unwrap_or_else(|| panic!("{rule} not listed"));
    (rule.packets, rule.bytes)
}

fn delta(before: Totals, after: Totals) -> Totals {
    Totals {
        passed: after.passed - before.passed,
        dropped: after.dropped - before.dropped,
        malformed: after.malformed - before.malformed,
        non_ip: after.non_ip - before.non_ip,
        expired: after.expired - before.expired,
    }
}

#[test]
fn xdp_verdicts_longest_prefix_vlan_and_counters() {
    if !privileged("xdp_verdicts_longest_prefix_vlan_and_counters") {
        return;
    }
    let pins = TestPinDir::new("verdicts");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(
            &nets(&[
                "10.200.0.0/16",
                "10.200.1.0/24",
                "2001:db8::/32",
                "2001:db8:1::5",
            ]),
            Some("test"),
            None,
        )
        .unwrap();
    let before = xdp.blocklist.totals().unwrap();

    let cases = [
        (
            ipv4(v4("10.200.1.9"), &[]),
            XDP_DROP,
            "10.200.1.0/24 wins over /16",
        ),
        (ipv4(v4("10.200.2.9"), &[]), XDP_DROP, "in the /16 only"),
        (ipv4(v4("10.201.0.1"), &[]), XDP_PASS, "outside"),
        (ipv6(v6("2001:db8:1::5"), &[]), XDP_DROP, "the /128"),
        (ipv6(v6("2001:db8:2::1"), &[]), XDP_DROP, "in the /32"),
        (ipv6(v6("2001:db9::1"), &[]), XDP_PASS, "outside"),
        (ipv4(v4("10.200.2.9"), &[0x8100]), XDP_DROP, "802.1Q"),
        (ipv4(v4("10.200.2.9"), &[0x88A8]), XDP_DROP, "802.1ad"),
        (
            ipv6(v6("2001:db8:2::1"), &[0x8100]),
            XDP_DROP,
            "802.1Q IPv6",
        ),
        (
            ipv4(v4("10.201.0.1"), &[0x8100]),
            XDP_PASS,
            "802.1Q outside",
        ),
    ];
    for (frame, verdict, why) in &cases {
        assert_eq!(xdp.test_run(frame).unwrap(), *verdict, "{why}");
    }
    let v4_frame = ipv4(v4("10.200.1.9"), &[]).len() as u64;
    let v4_tagged = v4_frame + 4;
    let v6_frame = ipv6(v6("2001:db8:1::5"), &[]).len() as u64;
    assert_eq!(hits(&xdp, "10.200.1.0/24"), (1, v4_frame));
    assert_eq!(hits(&xdp, "10.200.0.0/16"), (3, v4_frame + 2 * v4_tagged));
    assert_eq!(hits(&xdp, "2001:db8:1::5/128"), (1, v6_frame));
    assert_eq!(hits(&xdp, "2001:db8::/32"), (2, 2 * v6_frame + 4));
    let counted = delta(before, xdp.blocklist.totals().unwrap());
    assert_eq!(
        counted,
        Totals {
            passed: 3,
            dropped: 7,
            malformed: 0,
            non_ip: 0,
            expired: 0,
        }
    );

    // Ethernet padding after a short datagram is not a reason to let it through.
    let mut padded = ipv4(v4("10.200.1.9"), &[]);
    padded.resize(60, 0);
    assert_eq!(xdp.test_run(&padded).unwrap(), XDP_DROP);

    // Non-IP and what we do not parse (two tags) pass and are counted as such.
    let before = xdp.blocklist.totals().unwrap();
    let mut arp = ethernet(0x0806, &[]);
    arp.resize(42, 0);
    assert_eq!(xdp.test_run(&arp).unwrap(), XDP_PASS);
    assert_eq!(
        xdp.test_run(&ipv4(v4("10.200.2.9"), &[0x88A8, 0x8100]))
            .unwrap(),
        XDP_PASS
    );
    let counted = delta(before, xdp.blocklist.totals().unwrap());
    assert_eq!(
        counted,
        Totals {
            passed: 2,
            dropped: 0,
            malformed: 0,
            non_ip: 2,
            expired: 0,
        }
    );
}

#[test]
fn xdp_truncated_and_malformed_frames_pass_and_are_counted() {
    if !privileged("xdp_truncated_and_malformed_frames_pass_and_are_counted") {
        return;
    }
    let pins = TestPinDir::new("truncated");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(&nets(&["10.200.0.0/16", "2001:db8::/32"]), None, None)
        .unwrap();
    let listed = [
        ipv4(v4("10.200.1.9"), &[]),
        ipv6(v6("2001:db8::9"), &[]),
        ipv4(v4("10.200.1.9"), &[0x8100]),
        ipv6(v6("2001:db8::9"), &[0x88A8]),
    ];
    let mut expected_malformed = 0;
    let before = xdp.blocklist.totals().unwrap();
    for frame in &listed {
        assert_eq!(xdp.test_run(frame).unwrap(), XDP_DROP);
        // The kernel refuses test frames shorter than an Ethernet header; from there on,
        // every cut (inside a VLAN tag, the IP header, or the datagram it announces) passes.
        for len in 14..frame.len() {
            assert_eq!(
                xdp.test_run(&frame[..len]).unwrap(),
                XDP_PASS,
                "frame cut to {len} of {} bytes",
                frame.len()
            );
            expected_malformed += 1;
        }
    }
    // Headers that lie: wrong version, IHL under 5, total length under the header.
    let mut bad = Vec::new();
    for (offset, value) in [(14, 0x65u8), (14, 0x44), (17, 10)] {
        let mut frame = ipv4(v4("10.200.1.9"), &[]);
        frame[offset] = value;
        if offset == 17 {
            frame[16] = 0;
        }
        bad.push(frame);
    }
    let mut wrong_v6 = ipv6(v6("2001:db8::9"), &[]);
    wrong_v6[14] = 0x40;
    bad.push(wrong_v6);
    for frame in &bad {
        assert_eq!(xdp.test_run(frame).unwrap(), XDP_PASS);
        expected_malformed += 1;
    }
    let counted = delta(before, xdp.blocklist.totals().unwrap());
    assert_eq!(counted.malformed, expected_malformed);
    assert_eq!(counted.dropped, listed.len() as u64);
    assert_eq!(counted.passed, expected_malformed);
}

#[test]
fn xdp_replace_switches_the_whole_list_at_once() {
    if !privileged("xdp_replace_switches_the_whole_list_at_once") {
        return;
    }
    let pins = TestPinDir::new("replace");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(&nets(&["10.200.0.0/16"]), None, None)
        .unwrap();
    let old = ipv4(v4("10.200.1.9"), &[]);
    let new = ipv6(v6("2001:db8::9"), &[]);
    assert_eq!(xdp.test_run(&old).unwrap(), XDP_DROP);
    assert_eq!(xdp.test_run(&new).unwrap(), XDP_PASS);
    xdp.blocklist
        .replace(&nets(&["2001:db8::/32", "192.0.2.0/24"]), None)
        .unwrap();
    assert_eq!(xdp.test_run(&old).unwrap(), XDP_PASS);
    assert_eq!(xdp.test_run(&new).unwrap(), XDP_DROP);
    let rules: Vec<String> = xdp
        .blocklist
        .list()
        .unwrap()
        .into_iter()
        .map(|rule| rule.rule)
        .collect();
    assert_eq!(rules, vec!["192.0.2.0/24", "2001:db8::/32"]);
    // And back: the other set is reused, empty.
    xdp.blocklist
        .replace(&nets(&["10.200.1.0/24"]), None)
        .unwrap();
    assert_eq!(xdp.test_run(&old).unwrap(), XDP_DROP);
    assert_eq!(xdp.test_run(&new).unwrap(), XDP_PASS);
    assert_eq!(xdp.blocklist.list().unwrap().len(), 1);
}

#[test]
fn xdp_expired_rules_are_swept_and_metrics_are_bounded() {
    if !privileged("xdp_expired_rules_are_swept_and_metrics_are_bounded") {
        return;
    }
    let pins = TestPinDir::new("expire");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(
            &nets(&["10.200.1.0/24"]),
            None,
            Some(std::time::Duration::from_secs(1)),
        )
        .unwrap();
    xdp.blocklist
        .add(
            &nets(&["10.200.2.0/24", "10.200.3.0/24", "10.200.4.0/24"]),
            None,
            None,
        )
        .unwrap();
    for (third, times) in [(1u8, 5), (2, 3), (3, 2), (4, 1)] {
        for _ in 0..times {
            let frame = ipv4(Ipv4Addr::new(10, 200, third, 1), &[]);
            assert_eq!(xdp.test_run(&frame).unwrap(), XDP_DROP);
        }
    }
    let metrics = xdp.blocklist.drop_metrics(2).unwrap();
    let top: Vec<(&str, u64)> = metrics
        .top
        .iter()
        .map(|(r, p, _)| (r.as_str(), *p))
        .collect();
    assert_eq!(top, vec![("10.200.1.0/24", 5), ("10.200.2.0/24", 3)]);
    assert_eq!(metrics.other_packets, 3);
    assert_eq!(metrics.totals.dropped, 11);

    assert!(xdp.expire().unwrap().is_empty(), "nothing expired yet");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let expired = xdp.expire().unwrap();
    assert_eq!(expired, nets(&["10.200.1.0/24"]));
    assert_eq!(
        xdp.test_run(&ipv4(v4("10.200.1.1"), &[])).unwrap(),
        XDP_PASS
    );
    assert_eq!(xdp.blocklist.list().unwrap().len(), 3);
}

fn source_count(xdp: &XdpBlocklist, prefix: &str) -> (u64, u64) {
    let prefix: IpNet = prefix.parse().unwrap();
    xdp.source_counts()
        .unwrap()
        .iter()
        .find(|count| count.prefix == prefix)
        .map_or((0, 0), |count| (count.packets, count.bytes))
}

#[test]
fn xdp_counts_passed_traffic_per_source_prefix_and_not_listed_sources() {
    if !privileged("xdp_counts_passed_traffic_per_source_prefix_and_not_listed_sources") {
        return;
    }
    let pins = TestPinDir::new("sources");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(&nets(&["10.200.9.0/24", "2001:db8:9::/48"]), None, None)
        .unwrap();
    let passed_v4 = ipv4(v4("10.200.1.9"), &[]);
    // Off until the daemon asks: a passed frame counts nowhere.
    assert_eq!(xdp.test_run(&passed_v4).unwrap(), XDP_PASS);
    assert!(xdp.source_counts().unwrap().is_empty(), "counted while off");

    xdp.count_sources(24, 64).unwrap();
    let frames = [
        (ipv4(v4("10.200.1.9"), &[]), XDP_PASS),
        (ipv4(v4("10.200.1.200"), &[0x8100]), XDP_PASS),
        (ipv4(v4("10.200.2.1"), &[]), XDP_PASS),
        (ipv6(v6("2001:db8:1:2:3::1"), &[]), XDP_PASS),
        (ipv6(v6("2001:db8:1:2:ffff::9"), &[]), XDP_PASS),
        (ipv6(v6("2001:db8:1:3::1"), &[]), XDP_PASS),
        // Listed sources are dropped and never counted as passed.
        (ipv4(v4("10.200.9.1"), &[]), XDP_DROP),
        (ipv6(v6("2001:db8:9::1"), &[]), XDP_DROP),
    ];
    for (frame, verdict) in &frames {
        assert_eq!(xdp.test_run(frame).unwrap(), *verdict);
    }
    let v4_len = passed_v4.len() as u64;
    let v6_len = ipv6(v6("2001:db8::1"), &[]).len() as u64;
    assert_eq!(source_count(&xdp, "10.200.1.0/24"), (2, 2 * v4_len + 4));
    assert_eq!(source_count(&xdp, "10.200.2.0/24"), (1, v4_len));
    assert_eq!(source_count(&xdp, "2001:db8:1:2::/64"), (2, 2 * v6_len));
    assert_eq!(source_count(&xdp, "2001:db8:1:3::/64"), (1, v6_len));
    assert_eq!(source_count(&xdp, "10.200.9.0/24"), (0, 0));
    assert_eq!(
        xdp.source_counts().unwrap().len(),
        4,
        "only the passed prefixes"
    );

    // The prefix lengths come from user space: /16 and /48 now.
    xdp.count_sources(16, 48).unwrap();
    assert_eq!(
        xdp.test_run(&ipv4(v4("10.200.77.1"), &[])).unwrap(),
        XDP_PASS
    );
    assert_eq!(
        xdp.test_run(&ipv6(v6("2001:db8:1:7::1"), &[])).unwrap(),
        XDP_PASS
    );
    assert_eq!(source_count(&xdp, "10.200.0.0/16"), (1, v4_len));
    assert_eq!(source_count(&xdp, "2001:db8:1::/48"), (1, v6_len));
}

#[test]
fn xdp_automatic_rules_drop_like_any_and_are_listed_as_automatic() {
    if !privileged("xdp_automatic_rules_drop_like_any_and_are_listed_as_automatic") {
        return;
    }
    let pins = TestPinDir::new("automatic");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(&nets(&["10.200.1.0/24"]), Some("by hand"), None)
        .unwrap();
    xdp.blocklist
        .add_from(
            &nets(&["10.200.2.0/24"]),
            Some("auto: net_rx_packets_per_s z=+9.0"),
            Some(std::time::Duration::from_secs(60)),
            collector::xdp::Origin::Automatic,
        )
        .unwrap();
    for third in [1u8, 2] {
        let frame = ipv4(Ipv4Addr::new(10, 200, third, 1), &[]);
        assert_eq!(xdp.test_run(&frame).unwrap(), XDP_DROP, "10.200.{third}.1");
    }
    let listed = xdp.blocklist.list().unwrap();
    let by: Vec<(&str, bool, &str)> = listed
        .iter()
        .map(|rule| (rule.rule.as_str(), rule.automatic, rule.comment.as_str()))
        .collect();
    assert_eq!(
        by,
        vec![
            ("10.200.1.0/24", false, "by hand"),
            ("10.200.2.0/24", true, "auto: net_rx_packets_per_s z=+9.0"),
        ]
    );
    assert!(listed[1].expires_unix_s.is_some());
    assert_eq!(xdp.blocklist.drop_metrics(10).unwrap().automatic_rules, 1);
}

#[test]
fn xdp_passes_a_source_whose_rule_expired_with_no_daemon_to_remove_it() {
    if !privileged("xdp_passes_a_source_whose_rule_expired_with_no_daemon_to_remove_it") {
        return;
    }
    let pins = TestPinDir::new("fixa-expired-in-kernel");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(
            &nets(&["10.200.5.0/24", "fd00:205::/64"]),
            None,
            Some(std::time::Duration::from_secs(1)),
        )
        .unwrap();
    xdp.blocklist
        .add(&nets(&["10.200.6.0/24"]), None, None)
        .unwrap();
    let listed_v4 = ipv4(v4("10.200.5.1"), &[]);
    let listed_v6 = ipv6(v6("fd00:205::1"), &[]);
    let permanent = ipv4(v4("10.200.6.1"), &[]);
    assert_eq!(xdp.test_run(&listed_v4).unwrap(), XDP_DROP);
    assert_eq!(xdp.test_run(&listed_v6).unwrap(), XDP_DROP);
    let before = xdp.blocklist.totals().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    // Nothing swept: the rules are still listed, and the program itself lets them go.
    assert_eq!(xdp.blocklist.list().unwrap().len(), 3);
    assert_eq!(xdp.test_run(&listed_v4).unwrap(), XDP_PASS);
    assert_eq!(xdp.test_run(&listed_v6).unwrap(), XDP_PASS);
    assert_eq!(xdp.test_run(&permanent).unwrap(), XDP_DROP);
    let counted = delta(before, xdp.blocklist.totals().unwrap());
    assert_eq!(
        counted,
        Totals {
            passed: 2,
            dropped: 1,
            malformed: 0,
            non_ip: 0,
            expired: 2,
        }
    );
    assert_eq!(hits(&xdp, "10.200.5.0/24"), (1, 50));
}

#[test]
fn window_upkeep_matches_list_and_postpones_its_sweep_while_the_lock_is_held() {
    if !privileged("window_upkeep_matches_list_and_postpones_its_sweep_while_the_lock_is_held") {
        return;
    }
    let pins = TestPinDir::new("fixa-upkeep");
    let mut xdp = XdpBlocklist::load(&pins.path).expect("loading the XDP program");
    xdp.blocklist
        .add(
            &nets(&["10.200.1.0/24"]),
            None,
            Some(std::time::Duration::from_secs(1)),
        )
        .unwrap();
    xdp.blocklist
        .add(
            &nets(&[
                "10.200.2.0/24",
                "10.200.3.0/24",
                "10.200.4.0/24",
                "fd00:207::/64",
            ]),
            None,
            None,
        )
        .unwrap();
    for (frame, times) in [
        (ipv4(v4("10.200.1.1"), &[]), 5),
        (ipv4(v4("10.200.2.1"), &[]), 3),
        (ipv6(v6("fd00:207::9"), &[]), 4),
        (ipv4(v4("10.200.4.1"), &[]), 1),
    ] {
        for _ in 0..times {
            assert_eq!(xdp.test_run(&frame).unwrap(), XDP_DROP);
        }
    }
    // The batch-read upkeep agrees with the rule-by-rule reading of `list`, except that it
    // leaves out rules that never dropped anything.
    let walked = xdp.blocklist.drop_metrics(2).unwrap();
    let upkeep = xdp.window_upkeep(2).unwrap();
    assert_eq!(upkeep.top, walked.top);
    assert_eq!(
        upkeep.top,
        vec![
            ("10.200.1.0/24".to_string(), 5, 250),
            ("fd00:207::/64".to_string(), 4, 280)
        ]
    );
    assert_eq!((upkeep.other_packets, upkeep.other_bytes), (4, 200));
    assert_eq!(upkeep.other_packets, walked.other_packets);
    assert_eq!(upkeep.totals, walked.totals);
    assert_eq!(upkeep.rules, 5);
    assert_eq!(upkeep.sweeps_postponed, 0);
    let rescans = xdp.upkeep.rescans;
    xdp.window_upkeep(2).unwrap();
    assert_eq!(
        xdp.upkeep.rescans, rescans,
        "read the rules again without an edit"
    );
    xdp.blocklist
        .add(&nets(&["10.200.8.0/24"]), None, None)
        .unwrap();
    assert_eq!(xdp.window_upkeep(2).unwrap().rules, 6);
    assert_eq!(xdp.upkeep.rescans, rescans + 1, "missed an edit");

    // Due, but another process holds the edit lock: nothing waits, the sweep is put off.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // --no-fork: the process we kill below is the one holding the lock.
    let mut holder = std::process::Command::new("flock")
        .args(["-x", "--no-fork"])
        .arg(&pins.path)
        .args(["sleep", "30"])
        .spawn()
        .expect("running flock");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let held = xdp.window_upkeep(2).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "waited for the lock"
    );
    assert_eq!(held.sweeps_postponed, 1);
    assert_eq!(held.rules, 6);
    let _ = holder.kill();
    let _ = holder.wait();
    let freed = xdp.window_upkeep(2).unwrap();
    assert_eq!(freed.rules, 5);
    assert!(
        !xdp.blocklist
            .list()
            .unwrap()
            .iter()
            .any(|rule| rule.rule == "10.200.1.0/24")
    );
    // Its own removal did not cost a walk of the list.
    assert_eq!(xdp.upkeep.rescans, rescans + 1);

    // The daemon's own adds (automatic blocking) use the cache too, and keep it current.
    xdp.add_nowait(
        &nets(&["10.200.9.0/24"]),
        Some("flood"),
        Some(std::time::Duration::from_secs(600)),
        collector::xdp::Origin::Automatic,
    )
    .unwrap();
    let err = xdp
        .add_nowait(
            &nets(&["10.200.9.0/24"]),
            None,
            None,
            collector::xdp::Origin::Automatic,
        )
        .unwrap_err();
    assert!(err.to_string().contains("already listed"), "{err}");
    assert_eq!(
        xdp.test_run(&ipv4(v4("10.200.9.1"), &[])).unwrap(),
        XDP_DROP
    );
    let after_add = xdp.window_upkeep(2).unwrap();
    assert_eq!((after_add.rules, after_add.automatic_rules), (6, 1));
    assert_eq!(xdp.upkeep.rescans, rescans + 1, "walked the list to add");
    let listed = xdp.blocklist.list().unwrap();
    let mut ids: Vec<u32> = listed.iter().map(|rule| rule.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), listed.len(), "two rules share an id: {listed:?}");
    let added = listed
        .iter()
        .find(|rule| rule.rule == "10.200.9.0/24")
        .unwrap();
    assert!(added.automatic && added.comment == "flood" && added.packets == 1);
    // An edit by another process since the cache was read: the add takes the walking path.
    xdp.blocklist
        .add(&nets(&["10.200.10.0/24"]), None, None)
        .unwrap();
    xdp.add_nowait(
        &nets(&["10.200.11.0/24"]),
        None,
        None,
        collector::xdp::Origin::Automatic,
    )
    .unwrap();
    assert_eq!(xdp.window_upkeep(2).unwrap().rules, 8);
}
