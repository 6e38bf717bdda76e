use std::process::Command;

use anyhow::bail;

use crate::util::{cargo, is_root, run};

/// Builds every default member in release, the eBPF object included (collector's build.rs).
pub fn build_release() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--bins"]))
}

pub fn run_collector(args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the daemon loads kernel programs: run `cargo xtask run` as root");
    }
    let binary = crate::util::release_binary("collector");
    let mut command = Command::new(binary);
    command.arg("run").args(args);
    run(&mut command)
}
