//! `cargo xtask …`: set-up, build, run, test and benchmarks for nodestate.

mod bench;
mod build;
mod calibration;
mod culprits;
mod deb_test;
mod dist;
mod episodes;
mod evaluate;
mod image;
mod rate;
mod rederive;
mod scenario;
mod setup;
mod soak;
mod soak_replay;
mod test;
mod transplant;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    about = "nodestate's tasks: cargo xtask <setup|build|run|test|image|bench>"
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
    /// Set up, build, and build the collector's container image with buildah, no registry
    /// needed (localhost/nodestate/collector:VERSION), then run it with podman: `--help`, and
    /// as the rendered DaemonSet runs it (its capabilities, mounts, config). Root; part of
    /// `test`.
    Image,
    /// Set up, then build every release artifact into target/dist/: static (musl) binaries
    /// with the eBPF object embedded, a tarball, a .deb and an OCI image archive per
    /// architecture, a multi-arch OCI index, a CycloneDX SBOM and SHA256SUMS; then check them.
    Dist {
        /// Architectures to build (default: x86_64 and aarch64).
        #[arg(long, value_enum, value_delimiter = ',')]
        arch: Vec<dist::Arch>,
        /// Skip the OCI images (no buildah, or no root for it).
        #[arg(long)]
        no_image: bool,
        /// Only check an existing target/dist/ (what `dist` ends with).
        #[arg(long)]
        check: bool,
    },
    /// As root: install target/dist's x86_64 .deb into a fresh Debian root (debootstrap,
    /// cached under target/deb-test/), verify its systemd unit, run the unit's ExecStart until
    /// it serves /healthz, purge it and check that nothing is left. Run `dist` first.
    DebTest,
    /// Set up, build, and boot Debian's stock kernels under qemu (software emulation, no KVM)
    /// with a virtio disk: each boot loads the whole program set, runs `collector probes
    /// --exercise` and checks that the kprobes attached and every caused event was counted.
    /// Writes the matrix table to target/vm/matrix.md. `test` runs the default (6.1, x86_64).
    VmTest {
        /// Kernel series: 6.1, 6.12 or all (the newest Debian package of each series).
        #[arg(long, default_value = "6.1", value_parser = ["6.1", "6.12", "all"])]
        kernel: String,
        /// Guest architecture: x86_64, arm64 or all.
        #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "arm64", "all"])]
        arch: String,
        /// Use the binaries already built (or given with --collector): no set-up, no build.
        #[arg(long)]
        no_build: bool,
        /// A prebuilt collector to boot; its ELF header says which architecture it serves (for
        /// arm64 the aarch64 musl build). Repeat for both architectures. Default: this
        /// workspace's release build, and for arm64 its aarch64-unknown-linux-musl build.
        #[arg(long, value_name = "PATH")]
        collector: Vec<std::path::PathBuf>,
    },
    /// Set up, build, and run one fault scenario (as root): healthy period, fault, recovery,
    /// recorded by `collector record` into datasets/NAME.{jsonl.gz,labels.csv,json}.
    Scenario {
        /// The scenario (`cargo xtask scenario --list` shows them).
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// List the scenarios and exit.
        #[arg(long)]
        list: bool,
        /// Short phases (16 s healthy, 12 s fault, 6 s recovery) instead of 30/24/12 s.
        #[arg(long)]
        short: bool,
    },
    /// Set up, build, and run every scenario (about 20 minutes), rewriting datasets/.
    Scenarios {
        #[arg(long)]
        short: bool,
    },
    /// Set up, build, and run the scenario check of `test` alone (as root): a short
    /// crash-loop must be answered "Yes", a short benign burst "No", by the built-in model.
    ScenarioCheck,
    /// Train on the recorded datasets' healthy windows, replay every scenario as the daemon
    /// would judge it, write EVALUATION.md and the default model datasets/default-model.json.
    Evaluate,
    /// Bring datasets/'s recorded windows to record schema 2: each `net_drops_per_s` re-derived
    /// from the window's own `net_drops_by_reason`, leaving out the housekeeping reasons as the
    /// daemon now does. Rewrites only the windows still at schema 1 (a second run changes
    /// nothing); run `evaluate` after it.
    RederiveDrops,
    /// Train before/after issue 24's calibration defaults on the named synthetic sets and
    /// the recorded scenarios; write the calibration section of EVALUATION.md (own-threshold
    /// F1 beside the test-tuned upper bound). `evaluate` runs it too.
    Calibration,
    /// A scenario's helper workload (used by the scenarios themselves).
    #[command(hide = true, subcommand)]
    ScenarioWorker(scenario::worker::Worker),
    /// One of `bench overhead`'s workloads, in a process of its own (used by the bench):
    /// prints, every 100 ms, the time (ms since the epoch), the operations done since the
    /// last line and the seconds they took.
    #[command(hide = true)]
    BenchWorkload {
        kind: bench::WorkloadKind,
        /// The page-cached file `pread` reads.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Seconds to run at most (it also stops when its output is no longer read).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Set up, build, and run the daemon with its learned baseline on this machine (as root)
    /// while benign work changes under it (compile loop, package build, backup-like copy,
    /// loopback connections, idle): reports degraded episodes per hour, their explanations,
    /// and a 95% upper bound on the rate; then `soak-replay --check --faults` on its windows
    /// (every verdict reproduced, and whether the baseline it left still pages on the
    /// recorded faults).
    Soak {
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
        learn_for: std::time::Duration,
        /// The JSON report (default target/soak-report.json).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Every window the daemon made, as JSON Lines for `soak-replay` (default
        /// target/soak-windows.jsonl).
        #[arg(long)]
        windows: Option<std::path::PathBuf>,
        /// Go on from this saved baseline (`collector run --baseline-state`'s file, or one
        /// `soak-replay --save-state` made from an earlier soak's windows) instead of
        /// learning afresh: a node's daemon after a restart, its baseline grown. The file is
        /// not changed.
        #[arg(long, value_name = "FILE")]
        baseline_state: Option<std::path::PathBuf>,
        /// Write the state the baseline ended with here (for the next soak's
        /// --baseline-state).
        #[arg(long, value_name = "FILE")]
        save_state: Option<std::path::PathBuf>,
    },
    /// Judge the windows a soak recorded again with this tree's learned baseline, as the
    /// daemon does (its judged fields, defaults and hysteresis): how a change to the learner
    /// fares on the same benign hours, without another soak (in-sample for any rule chosen by
    /// looking at them).
    SoakReplay {
        /// The windows (`cargo xtask soak` writes target/soak-windows.jsonl; a name ending in
        /// `.gz` is read through gzip, as the soaks kept in datasets/soaks/).
        file: std::path::PathBuf,
        /// The soak's window length.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
        learn_for: std::time::Duration,
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        refresh_every: std::time::Duration,
        /// Fail unless every window that carries the daemon's verdict is judged the same.
        #[arg(long)]
        check: bool,
        /// Then judge each recorded scenario's fault (datasets/), carried onto the file's
        /// last idle windows as the change it made to the judged signals, by a copy of the
        /// baseline the file left: whether that baseline would still page on a fault.
        #[arg(long)]
        faults: bool,
        /// Train the baseline's models with this many clusters instead of the daemon's 3
        /// (with --choose-k-up-to: the fewest).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        clusters: Option<u16>,
        /// Let the baseline choose its k from its windows once it has seen enough of them
        /// (as many as lift the floor): of the k from --clusters to this whose every cluster
        /// holds 50 windows or more, the best separated (simplified silhouette). The daemon
        /// does not (BENCHMARKS.md, "Choosing k"): this measures it on recorded windows.
        #[arg(long, value_parser = clap::value_parser!(u16).range(2..=64))]
        choose_k_up_to: Option<u16>,
        /// Restart the daemon after this many windows (its learner and hysteresis anew), as a
        /// rollout or a reboot does: learning afresh, or with --restart-keeps-state going on
        /// from the baseline it saved (`collector run --baseline-state`).
        #[arg(long, value_name = "WINDOWS")]
        restart_at: Option<usize>,
        #[arg(long, requires = "restart_at")]
        restart_keeps_state: bool,
        /// Start from this saved baseline (`collector run --baseline-state`'s file, or one
        /// --save-state wrote) instead of learning afresh.
        #[arg(long, value_name = "FILE")]
        start_state: Option<std::path::PathBuf>,
        /// At the end, write the baseline's state here, in the daemon's layout: what a
        /// daemon that judged these windows would go on from after a restart.
        #[arg(long, value_name = "FILE")]
        save_state: Option<std::path::PathBuf>,
    },
    /// Set up, build and run the benchmarks, writing their sections of BENCHMARKS.md.
    Bench {
        /// Run only the benchmarks whose name contains this.
        filter: Option<String>,
        /// Rounds of `overhead` per workload (each about 40 s: the collector as shipped
        /// twice, one other configuration, each between stretches without it). Fewer for a
        /// quick look; more for tighter intervals.
        #[arg(long, default_value_t = bench::DEFAULT_OVERHEAD_ROUNDS)]
        overhead_rounds: usize,
        /// Workloads `overhead` measures, comma-separated (all four when not given). A
        /// subset writes a section of its own in BENCHMARKS.md, beside the full run's.
        #[arg(long, value_enum, value_delimiter = ',')]
        overhead_workloads: Vec<bench::OverheadWorkload>,
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
        Command::Image => {
            setup::setup()?;
            build::build_release()?;
            image::image_test()
        }
        Command::Dist {
            arch,
            no_image,
            check,
        } => {
            let arches = if arch.is_empty() {
                dist::Arch::ALL.to_vec()
            } else {
                arch
            };
            if check {
                return dist::check(&dist::dist_dir(), &arches);
            }
            setup::setup()?;
            dist::dist(&arches, !no_image)
        }
        Command::DebTest => deb_test::deb_test(),
        Command::VmTest {
            kernel,
            arch,
            no_build,
            collector,
        } => {
            if !no_build {
                setup::setup()?;
                build::build_release()?;
            }
            vm::vm_test(&vm::VmOptions {
                kernels: vm::parse_kernels(&kernel).map_err(anyhow::Error::msg)?,
                arches: vm::parse_arches(&arch).map_err(anyhow::Error::msg)?,
                collectors: collector,
            })
        }
        Command::Scenario { name, list, short } => {
            if list {
                for s in scenario::SCENARIOS {
                    println!("{:22} {}", s.name, s.what);
                }
                return Ok(());
            }
            setup::setup()?;
            build::build_release()?;
            let name = name.expect("clap requires a name without --list");
            scenario::run_named(&[name.as_str()], timing(short))
        }
        Command::Scenarios { short } => {
            setup::setup()?;
            build::build_release()?;
            let names: Vec<&str> = scenario::SCENARIOS.iter().map(|s| s.name).collect();
            scenario::run_named(&names, timing(short))
        }
        Command::ScenarioCheck => {
            setup::setup()?;
            build::build_release()?;
            evaluate::ci_check()
        }
        Command::Evaluate => {
            build::build_release()?;
            let recorded = evaluate::evaluate()?;
            // The calibration section, on the same recordings: here, so that the evaluation
            // does not depend on the calibration that depends on it.
            calibration::write_section(&calibration::section(&recorded)?)
        }
        Command::RederiveDrops => {
            rederive::rederive_drops(&util::workspace_root().join("datasets"))
        }
        Command::Calibration => calibration::calibration(),
        Command::SoakReplay {
            file,
            window,
            learn_for,
            refresh_every,
            check,
            faults,
            clusters,
            choose_k_up_to,
            restart_at,
            restart_keeps_state,
            start_state,
            save_state,
        } => soak_replay::soak_replay(&soak_replay::ReplayOptions {
            file,
            check,
            window,
            learn_for,
            refresh_every,
            faults,
            clusters: clusters.map(usize::from),
            choose_k_up_to: choose_k_up_to.map(usize::from),
            restart_at,
            restart_keeps_state,
            start_state,
            save_state,
        }),
        Command::Soak {
            duration,
            window,
            learn_for,
            out,
            windows,
            baseline_state,
            save_state,
        } => {
            setup::setup()?;
            build::build_release()?;
            soak::soak_then_replay(&soak::SoakOptions {
                duration,
                window,
                learn_for,
                out,
                windows,
                baseline_state,
                save_state,
            })
        }
        Command::ScenarioWorker(worker) => scenario::worker::run(worker),
        Command::BenchWorkload {
            kind,
            file,
            seconds,
        } => bench::run_workload(
            kind,
            file.as_deref(),
            std::time::Duration::from_secs(seconds),
        ),
        Command::Bench {
            filter,
            overhead_rounds,
            overhead_workloads,
        } => {
            setup::setup()?;
            build::build_release()?;
            let overhead_workloads = if overhead_workloads.is_empty() {
                bench::ALL_OVERHEAD_WORKLOADS.to_vec()
            } else {
                overhead_workloads
            };
            bench::run(
                filter.as_deref(),
                &bench::Options {
                    overhead_rounds,
                    overhead_workloads,
                },
            )
        }
    }
}

fn timing(short: bool) -> scenario::Timing {
    if short {
        scenario::Timing::SHORT
    } else {
        scenario::Timing::FULL
    }
}
