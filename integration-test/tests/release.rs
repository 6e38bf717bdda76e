//! One version everywhere: what Cargo's metadata says is what `collector --version`,
//! `model --version`, the shipped manifests' image tag and a scrape's `nodestate_build_info`
//! say.

use std::{path::Path, process::Command};

use integration_test::{daemon::Daemon, http::get, privileged, workspace_binary};

fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The version of each workspace package as `cargo metadata` reports it.
fn cargo_version(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{output:?}");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package} in cargo metadata"))["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn version_line(binary: &str) -> String {
    let output = Command::new(workspace_binary(binary))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success(), "{binary} --version: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn every_binary_and_manifest_carries_the_cargo_version() {
    let version = cargo_version("collector");
    assert_eq!(cargo_version("model-cli"), version, "one workspace version");
    assert_eq!(version_line("collector"), format!("collector {version}"));
    assert_eq!(version_line("model"), format!("model {version}"));

    // Every image reference we ship names this version.
    let mut seen = 0;
    for file in [
        "deploy/base/daemonset.yaml",
        "deploy/scheduler-extender.yaml",
        "deploy/components/xdp-blocklist/daemonset-patch.yaml",
        "deploy/Containerfile",
        "deploy/README.md",
    ] {
        let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
        for (at, _) in text.match_indices("nodestate/collector:") {
            let tag: String = text[at + "nodestate/collector:".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || ".-".contains(*c))
                .collect();
            if tag == "VERSION" {
                continue;
            }
            assert_eq!(tag, version, "{file} names image tag {tag}");
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} image references found");
}

#[test]
fn a_scrape_reports_the_build_it_serves() {
    if !privileged("a_scrape_reports_the_build_it_serves") {
        return;
    }
    let version = cargo_version("collector");
    let daemon = Daemon::builder().start();
    let address = daemon.address();
    let (status, body) = get(&address, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    let line = body
        .lines()
        .find(|line| line.starts_with("nodestate_build_info{"))
        .unwrap_or_else(|| panic!("no nodestate_build_info:\n{body}"));
    assert!(line.contains(&format!("version=\"{version}\"")), "{line}");
    assert!(line.contains("rustc=\"rustc "), "{line}");
    // Built from this checkout: the revision is git's HEAD (or what NODESTATE_REVISION said).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    if let (Some(head), None) = (head, std::env::var_os("NODESTATE_REVISION")) {
        assert!(line.contains(&format!("revision=\"{head}\"")), "{line}");
    }
    let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
    assert_eq!(value, 1.0, "{line}");
    daemon.stop();
}

/// Runs `binary args` with its standard output a pipe nobody reads (closed before it starts).
fn run_into_closed_pipe(binary: &str, args: &[&str]) -> std::process::Output {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is the read end pipe(2) just made; closing it makes every write fail.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is the pipe's write end, owned by nothing else.
    let write_end = unsafe { std::process::Stdio::from_raw_fd(fds[1]) };
    Command::new(workspace_binary(binary))
        .args(args)
        .stdout(write_end)
        .output()
        .unwrap()
}

#[test]
fn completions_and_man_pages_come_from_the_clap_commands() {
    for (binary, shell, marker) in [
        ("collector", "bash", "_collector()"),
        ("collector", "zsh", "#compdef collector"),
        ("collector", "fish", "complete -c collector"),
        ("model", "bash", "_model()"),
        ("model", "zsh", "#compdef model"),
    ] {
        let output = Command::new(workspace_binary(binary))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{binary} completions {shell}: {output:?}"
        );
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains(marker), "{binary} {shell}: no {marker}");
    }
    // Subcommands of the real command appear in its completion and its man page.
    let bash = Command::new(workspace_binary("collector"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bash.stdout).contains("blocklist"));
    for (binary, subcommand) in [("collector", "blocklist"), ("model", "train")] {
        let output = Command::new(workspace_binary(binary))
            .arg("man")
            .output()
            .unwrap();
        assert!(output.status.success(), "{binary} man: {output:?}");
        let page = String::from_utf8(output.stdout).unwrap();
        assert!(page.contains(&format!(".TH {binary} 1")), "{page}");
        assert!(
            page.contains(subcommand),
            "{binary}'s man page lacks {subcommand}"
        );
    }
    // A reader that goes away (`collector completions bash | head`) is no crash.
    for (binary, args) in [
        ("collector", &["completions", "bash"][..]),
        ("collector", &["man"][..]),
        ("model", &["completions", "bash"][..]),
        ("model", &["man"][..]),
    ] {
        let output = run_into_closed_pipe(binary, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains("panicked"),
            "{binary} {args:?} into a closed pipe: {}\n{stderr}",
            output.status
        );
    }
}

/// The eBPF object is built per architecture (`struct pt_regs` differs): the collector must
/// embed the one built for its own. The object names its architecture in a marker
/// (`collector_common::EBPF_ARCH_MARKER`); `cargo xtask dist --check` makes the same check on
/// every architecture's release binary.
#[test]
fn the_collector_embeds_the_ebpf_object_of_its_own_architecture() {
    let binary = std::fs::read(workspace_binary("collector")).unwrap();
    let marker = collector_common::EBPF_ARCH_MARKER;
    let mut arches: Vec<String> = binary
        .windows(marker.len())
        .enumerate()
        .filter(|(_, window)| *window == marker)
        .map(|(at, _)| {
            let name = &binary[at + marker.len()..at + collector_common::EBPF_ARCH_MARKER_BYTES];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        })
        .collect();
    arches.dedup();
    assert_eq!(
        arches,
        [std::env::consts::ARCH],
        "the collector embeds eBPF objects for {arches:?} (none: built without bpf-linker?)"
    );
}
