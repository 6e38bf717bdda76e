//! `cargo xtask …`: set-up, build, run, test and benchmarks for nodestate.

mod bench;
mod build;
mod setup;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    about = "nodestate's tasks: cargo xtask <setup|build|run|test|bench>"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the project needs on this machine (Debian packages, nightly rust-src,
    /// bpf-linker). Idempotent and quick when everything is there.
    Setup,
    /// Set up, then build the eBPF object and every binary (release).
    Build,
    /// Set up, build, and run the daemon on this node (as root). Arguments after `--` go to
    /// `collector run`, e.g. `cargo xtask run -- --window 1s`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test: unit tests, then the kernel-facing integration tests
    /// (which need root and fail, not skip, when run as root and something is missing).
    Test,
    /// Set up, build, and boot Debian's stock kernel under qemu (no KVM) to prove that the
    /// kprobe programs attach and count where kprobes exist. Part of `test`.
    VmTest,
    /// Set up, build and run the benchmarks, writing their sections of BENCHMARKS.md.
    Bench {
        /// Run only the benchmarks whose name contains this.
        filter: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::setup(),
        Command::Build => {
            setup::setup()?;
            build::build_release()
        }
        Command::Run { args } => {
            setup::setup()?;
            build::build_release()?;
            build::run_collector(&args)
        }
        Command::Test => {
            setup::setup()?;
            build::build_release()?;
            test::test_all()
        }
        Command::VmTest => {
            setup::setup()?;
            build::build_release()?;
            vm::vm_test()
        }
        Command::Bench { filter } => {
            setup::setup()?;
            build::build_release()?;
            bench::run(filter.as_deref())
        }
    }
}
