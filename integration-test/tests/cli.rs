//! The `collector` binary end to end: recording windows to a file, and the errors a user meets.

use std::process::Command;

use integration_test::{LoopDevice, direct_writes, privileged, workspace_binary};

#[test]
fn record_writes_one_json_line_per_window_with_the_io_we_made() {
    if !privileged("record_writes_one_json_line_per_window_with_the_io_we_made") {
        return;
    }
    let device = LoopDevice::new(16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("windows.jsonl");
    let recorder = Command::new(workspace_binary("collector"))
        // Counts exact to the request: on a loop device over a file on disk our 200 writes
        // are ~2,000 block requests and ~5,000 context switches in a fifth of a second,
        // which spends a 1 s window's default hook budget, and the sampler would scale what
        // it saw (sampling has its own tests: hook_sampler.rs, syscall_sampler.rs).
        .args(["record", "--duration", "3s", "--window", "1s"])
        .args(["--hook-budget", "0", "--out"])
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting collector record");
    // Write while the recorder runs (it needs a moment to load its programs).
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let file = device.open_direct();
    direct_writes(&file, 4096, 200);
    let output = recorder
        .wait_with_output()
        .expect("waiting for the recorder");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "collector record failed: {log}");
    assert!(log.contains("probe block_rq_issue: attached"), "{log}");

    let text = std::fs::read_to_string(&out).expect("reading the recording");
    let windows: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect();
    assert_eq!(windows.len(), 3, "3 s of 1 s windows:\n{text}");
    for window in &windows {
        assert!(window["timestamp"].is_string());
        assert!(window["window_s"].as_f64().unwrap() > 0.5);
        assert!(window["block_write_ops_per_s"].is_number());
        assert_eq!(window["schema"], 1);
    }
    // Program statistics are sampled: on in the first window of every twelve, off otherwise.
    let programs = windows[0]["programs"].as_object().expect("programs object");
    assert!(
        programs.values().any(|p| p["runs"].as_u64() > Some(0)),
        "first window has no program statistics: {}",
        windows[0]
    );
    assert!(windows[1]["programs"].as_object().unwrap().is_empty());
    let ours: u64 = windows
        .iter()
        .filter_map(|window| window["block_devices"][device.name()]["writes"].as_u64())
        .sum();
    assert!(
        (200..=216).contains(&ours),
        "{} writes recorded for {}, made 200",
        ours,
        device.name()
    );
}

#[test]
fn bad_arguments_fail_with_a_message_and_no_file() {
    let collector = workspace_binary("collector");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.jsonl");
    for (args, expected) in [
        (vec!["--window", "200ms", "--duration", "5s"], "1s to 1h"),
        (
            vec!["--window", "5s", "--duration", "soon"],
            "not a duration",
        ),
        (
            vec![
                "--window",
                "1s",
                "--duration",
                "2s",
                "--ringbuf-bytes",
                "5000",
            ],
            "power of two",
        ),
    ] {
        let output = Command::new(&collector)
            .arg("record")
            .args(&args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} left {} behind", out.display());
    }
}

#[test]
fn without_privileges_the_daemon_says_what_it_needs() {
    // setpriv (util-linux) drops to nobody with no capabilities; only root can do that.
    if !privileged("without_privileges_the_daemon_says_what_it_needs") {
        return;
    }
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(workspace_binary("collector"))
        .args(["run", "--window", "1s"])
        .output()
        .expect("running setpriv");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("needs root") && stderr.contains("CAP_BPF"),
        "{stderr}"
    );
}

/// A tmpfs of `size` bytes on a temporary directory of ours, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn new(size: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        integration_test::netns::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "nodestate-test-full",
                dir.path().to_str().unwrap(),
            ],
        );
        Self { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

#[test]
fn record_on_a_full_file_system_keeps_whole_lines_only() {
    if !privileged("record_on_a_full_file_system_keeps_whole_lines_only") {
        return;
    }
    // Two pages: a few windows fit, then a write is cut short by ENOSPC.
    let full = SmallTmpfs::new(8192);
    let out = full.dir.path().join("windows.jsonl");
    let started = std::time::Instant::now();
    let output = Command::new(workspace_binary("collector"))
        .args(["record", "--duration", "60s", "--window", "1s", "--out"])
        .arg(&out)
        .output()
        .expect("running collector record");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "record filled the disk and succeeded: {stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(50),
        "the file system never filled"
    );
    assert!(
        stderr.contains("No space left") && stderr.contains("whole window(s)"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&out).expect("reading the recording");
    assert!(!text.is_empty(), "{stderr}");
    assert!(
        text.ends_with('\n'),
        "a partial last line is left: {:?}",
        &text[text.len().saturating_sub(80)..]
    );
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|err| panic!("a line that is not a window ({err}): {line}"));
    }
    let kept = text.lines().count();
    assert!(
        stderr.contains(&format!("keeps the {kept} whole window(s)")),
        "{kept} lines kept: {stderr}"
    );
}
