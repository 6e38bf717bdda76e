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
        assert_eq!(window["schema"], 3);
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

/// `--output json` on the commands a script reads from a node (`probes`, `rank`, `detect`):
/// each prints one JSON document; the old `rank --json` still works, with a deprecation note.
#[test]
fn node_commands_print_json_with_output_json() {
    if !integration_test::privileged("node_commands_print_json_with_output_json") {
        return;
    }
    let collector = workspace_binary("collector");
    let json = |args: &[&str]| -> (Option<i32>, serde_json::Value, String) {
        let output = Command::new(&collector)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("running collector");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "{args:?} printed no JSON ({err}): {}\n{stderr}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        (output.status.code(), value, stderr)
    };
    let (code, probes, stderr) = json(&["probes", "--output", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(probes.is_object() || probes.is_array(), "{probes}");

    let daemon = integration_test::daemon::Daemon::builder()
        .free_port()
        .args(&["--learn-for", "10m", "--disable-signals", "syscalls"])
        .start();
    let node = format!("http://{}", daemon.address());
    let (code, rank, stderr) = json(&["rank", "--node", &node, "--output", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(rank["state"], "learning", "{rank}");
    assert!(rank["rank"].is_number(), "{rank}");
    let (code, old, stderr) = json(&["rank", "--node", &node, "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(old["rank"], rank["rank"]);
    assert!(
        stderr.contains("--json is deprecated: use --output json"),
        "{stderr}"
    );
    // Still learning: no answer, exit 5 as without --output json, and a document saying so.
    let (code, detect, stderr) = json(&["detect", "--node", &node, "--output", "json"]);
    assert_eq!(code, Some(5), "{stderr}");
    assert_eq!(
        detect,
        serde_json::json!({"answer": null, "learning": true})
    );
}

/// `RUST_LOG` is honoured when neither `--log-level` nor `NODESTATE_LOG` is given, which
/// win over it.
#[test]
fn rust_log_sets_the_level_unless_log_level_or_nodestate_log_is_given() {
    let collector = workspace_binary("collector");
    // `rank` against nothing logs at debug (ureq's connection attempts) only when asked to.
    let stderr = |env: &[(&str, &str)], args: &[&str]| {
        let port = integration_test::http::free_port();
        let mut command = Command::new(&collector);
        command
            .args(["rank", "--node", &format!("http://127.0.0.1:{port}")])
            .args(args)
            .env_remove("NODESTATE_LOG")
            .env_remove("RUST_LOG");
        for (key, value) in env {
            command.env(key, value);
        }
        String::from_utf8_lossy(&command.output().unwrap().stderr).into_owned()
    };
    let debug = |text: &str| text.contains("DEBUG") || text.contains("TRACE");
    assert!(!debug(&stderr(&[], &[])));
    let with_rust_log = stderr(&[("RUST_LOG", "trace")], &[]);
    assert!(debug(&with_rust_log), "{with_rust_log}");
    assert!(!debug(&stderr(
        &[("RUST_LOG", "trace"), ("NODESTATE_LOG", "warn")],
        &[]
    )));
    assert!(!debug(&stderr(
        &[("RUST_LOG", "trace")],
        &["--log-level", "info"]
    )));
}
