use anyhow::Context as _;

use crate::util::{cargo, is_root, run};

/// Set by `cargo xtask test` when it runs as root: a kernel-facing test that finds itself
/// unable to run then fails instead of skipping, so CI cannot pass without running them.
pub const REQUIRE_PRIVILEGED_TESTS: &str = "NODESTATE_REQUIRE_PRIVILEGED_TESTS";

pub fn test_all() -> anyhow::Result<()> {
    // Fast unit tests first: they need no root and fail fast.
    run(cargo().args([
        "test",
        "--release",
        "--workspace",
        // Built for the bpf target by collector's build.rs, never for the host.
        "--exclude",
        "collector-ebpf",
        "--exclude",
        "integration-test",
    ]))
    .context("unit tests failed")?;

    let mut integration = cargo();
    integration.args(["test", "--release", "-p", "integration-test", "--"]);
    // One at a time: the tests attach to the same tracepoints, make loop devices and network
    // namespaces, and measure deltas that a neighbour's traffic would blur.
    integration.arg("--test-threads=1");
    if is_root() {
        integration.env(REQUIRE_PRIVILEGED_TESTS, "1");
    } else {
        eprintln!(
            "xtask test: NOT ROOT: the kernel-facing integration tests will skip (each says so); \
             run `cargo xtask test` as root to run them"
        );
    }
    run(&mut integration).context("integration tests failed")?;

    // The container image (deploy/): assembled from scratch and started once.
    if is_root() {
        crate::image::image_test().context("image test failed")?;
    } else {
        eprintln!(
            "xtask test: NOT ROOT: skipping the image test (buildah and podman store images as \
             root here); run `cargo xtask test` or `cargo xtask image` as root"
        );
    }

    // Two short fault scenarios end to end: a real fault must be answered "Yes", a benign
    // burst "No".
    if is_root() {
        crate::evaluate::ci_check().context("scenario check failed")?;
    } else {
        eprintln!("xtask test: NOT ROOT: skipping the scenario check (it needs root)");
    }

    // The soak's short form: the learned baseline under one cycle of benign work, and its
    // verdicts reproduced by `soak-replay`.
    if is_root() {
        crate::soak::ci_check().context("soak check failed")?;
    } else {
        eprintln!("xtask test: NOT ROOT: skipping the soak check (the daemon needs root)");
    }

    // The kprobe path, in a VM whose kernel has kprobes (ours has none).
    crate::vm::vm_test(&crate::vm::VmOptions::default()).context("vm-test failed")?;
    println!("xtask test: unit, integration, image and vm tests passed");
    Ok(())
}
