//! `cargo xtask setup`: everything a fresh machine of ours needs, installed by the project.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{is_root, output, run};

/// Debian packages the tests and benchmarks use, with what for.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("fio", "block I/O benchmark (BENCHMARKS.md)"),
    (
        "util-linux",
        "losetup for the loop devices the block tests make",
    ),
    (
        "iproute2",
        "network namespaces and veth pairs for network tests",
    ),
    (
        "nftables",
        "random packet loss (numgen) in network tests; the drop-set baseline",
    ),
    (
        "qemu-system-x86",
        "vm-test: a stock Debian kernel (with kprobes) under emulation",
    ),
    ("busybox-static", "vm-test: the guest's shell and tools"),
    (
        "prometheus",
        "a real Prometheus server that scrapes the daemon in the exporter test",
    ),
    (
        "iputils-ping",
        "ping through the XDP drop list in the veth test",
    ),
    (
        "netsniff-ng",
        "trafgen: the packet flood of the XDP benchmark",
    ),
    (
        "stress-ng",
        "CPU, memory and crash load of the fault scenarios",
    ),
    ("iperf3", "TCP traffic through the network fault scenarios"),
    (
        "python3",
        "the AIOpsLab agent and its tests (integrations/aiopslab)",
    ),
    ("ethtool", "veth offloads (GRO, TSO) for the XDP benchmark"),
    (
        "chromium",
        "headless Chromium loads the daemon's page at / in the page test",
    ),
    (
        "buildah",
        "cargo xtask image: the container image, assembled from scratch (no registry needed)",
    ),
    (
        "podman",
        "the image test runs the built image (podman run) and checks it prints --help",
    ),
    (
        "gcc-aarch64-linux-gnu",
        "cargo xtask dist: the linker of the aarch64 (arm64) musl binaries",
    ),
    (
        "libc6-dev-arm64-cross",
        "cargo xtask dist: the libc headers the C code of ring and psm needs for aarch64",
    ),
    (
        "qemu-user-static",
        "cargo xtask dist: runs the aarch64 binaries (`--version`) to check the cross build",
    ),
    (
        "qemu-system-arm",
        "vm-test --arch arm64: Debian's arm64 kernel under emulation",
    ),
    (
        "debootstrap",
        "cargo xtask deb-test: a Debian root the .deb is installed into and purged from",
    ),
    ("file", "release checks: what each artifact is"),
    (
        "runc",
        "podman's runtime for the image test: crun 1.8 refuses our hybrid cgroup v1 layout",
    ),
];

pub fn setup() -> anyhow::Result<()> {
    debian_packages()?;
    arm64_package_lists()?;
    nightly_rust_src()?;
    bpf_linker()?;
    release_targets()?;
    cargo_tool("cargo-cyclonedx", "cyclonedx")?;
    Ok(())
}

/// The Rust targets `cargo xtask dist` builds the static release binaries for.
pub const RELEASE_TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

fn release_targets() -> anyhow::Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    let missing: Vec<&str> = RELEASE_TARGETS
        .into_iter()
        .filter(|target| !installed.lines().any(|line| line.trim() == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: adding the Rust targets {missing:?}");
    run(Command::new("rustup")
        .args(["target", "add"])
        .args(&missing))
}

/// A cargo subcommand from crates.io (`cargo install --locked`), when `cargo SUBCOMMAND
/// --version` does not run yet.
fn cargo_tool(package: &str, subcommand: &str) -> anyhow::Result<()> {
    if output(Command::new("cargo").args([subcommand, "--version"])).is_some() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {package} (cargo install, a few minutes)");
    run(Command::new("cargo").args(["install", "--locked", package]))
}

fn is_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.contains("install ok installed"))
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(package, _)| *package)
        .filter(|package| !is_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; run `cargo xtask setup` as root (it installs \
             them with apt-get)"
        );
    }
    eprintln!("xtask setup: installing {missing:?}");
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// `vm-test --arch arm64` downloads Debian's arm64 kernels and busybox (`apt-get download`,
/// nothing is installed): apt lists them once dpkg knows the architecture.
fn arm64_package_lists() -> anyhow::Result<()> {
    let foreign =
        output(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
    if foreign.lines().any(|arch| arch.trim() == "arm64") {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask setup: dpkg lacks the arm64 architecture (vm-test --arch arm64 needs it); \
             run `cargo xtask setup` as root"
        );
        return Ok(());
    }
    eprintln!("xtask setup: adding the arm64 architecture to dpkg (for vm-test's arm64 kernels)");
    run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly_sysroot() -> Option<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .map(|sysroot| PathBuf::from(sysroot.trim()))
}

/// The eBPF crate is built with nightly's `-Z build-std=core`, which needs rust-src.
fn nightly_rust_src() -> anyhow::Result<()> {
    let has_src = nightly_sysroot()
        .is_some_and(|sysroot| sysroot.join("lib/rustlib/src/rust/library/core").is_dir());
    if has_src {
        return Ok(());
    }
    eprintln!("xtask setup: installing the nightly toolchain's rust-src");
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker_works() -> bool {
    // Run on its own (not through rustup) so a binary that only finds its LLVM under rustup
    // counts as broken.
    output(Command::new("bpf-linker").arg("--version")).is_some()
}

/// bpf-linker against the LLVM that ships with nightly (the system's LLVM is too old), with an
/// rpath to that LLVM so the binary runs on its own.
fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let sysroot = nightly_sysroot().context("nightly toolchain missing after set-up")?;
    let lib = sysroot.join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;
    // "libLLVM.so.22.1-rust-1.97.0-nightly" → 22
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let prefix = std::env::temp_dir().join(format!("nodestate-llvm-{major}"));
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(lib.join(&llvm), &link)
        .with_context(|| format!("linking {}", link.display()))?;
    eprintln!("xtask setup: installing bpf-linker against nightly's LLVM {major} (~1-2 min)");
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--no-default-features"])
        .args(["--features", &format!("llvm-{major}")])
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
        ))?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}
