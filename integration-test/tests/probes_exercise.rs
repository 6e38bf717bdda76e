//! `collector probes --exercise` on this host's kernel, as a user runs it: the real binary
//! causes each signal (block reads on a loop device the test made, opens, fsyncs, forks, a
//! non-zero exit, a crash, loopback connects) and every caused event must have been counted.

use std::process::Command;

use integration_test::{LoopDevice, privileged, workspace_binary};

/// Signals the exercise must cause and check here (the block ones because a device is given).
const EXERCISED: [&str; 14] = [
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

#[test]
fn every_caused_event_is_counted() {
    if !privileged("every_caused_event_is_counted") {
        return;
    }
    let device = LoopDevice::new(8 << 20);
    let output = Command::new(workspace_binary("collector"))
        .args([
            "--log-level",
            "warn",
            "probes",
            "--exercise",
            "--block-device",
        ])
        .arg(&device.path)
        .args(["--output", "json"])
        .output()
        .expect("running collector probes --exercise");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}\nstderr: {stderr}"));
    let lines = report["exercise"]["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no exercise lines: {report}"));

    for id in EXERCISED {
        assert!(
            lines.iter().any(|line| line["id"] == id),
            "{id} was not exercised: {report}"
        );
    }
    for line in lines {
        let caused = line["caused"].as_u64().expect("caused");
        let counted = line["counted"].as_u64().expect("counted");
        assert!(caused > 0, "nothing caused for {line}");
        // Counts are node-wide: other work may add to them, never take away.
        assert!(
            counted >= caused,
            "{} caused {caused}, counted {counted} (hook {}): {line}",
            line["what"],
            line["hook"]
        );
        assert_eq!(line["result"], "counted", "{line}");
    }
    // The block lines are the loop device's reads: 64 blocks of 4 KiB fit in 8 MiB.
    let reads = lines
        .iter()
        .find(|line| line["id"] == "block-issue")
        .expect("block-issue line");
    assert_eq!(reads["caused"], 64, "{reads}");
    assert_eq!(report["exercise"]["all_counted"], true, "{report}");
    assert!(
        output.status.success(),
        "exit status {:?} with every event counted; stderr: {stderr}",
        output.status
    );
}

#[test]
fn a_block_device_that_is_not_one_is_refused() {
    if !privileged("a_block_device_that_is_not_one_is_refused") {
        return;
    }
    let file = tempfile::NamedTempFile::new().expect("temporary file");
    let output = Command::new(workspace_binary("collector"))
        .args([
            "--log-level",
            "warn",
            "probes",
            "--exercise",
            "--block-device",
        ])
        .arg(file.path())
        .output()
        .expect("running collector probes --exercise");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a regular file was accepted");
    assert!(stderr.contains("not a block device"), "stderr: {stderr}");
}
