//! `cargo xtask bench`: each benchmark measures against a baseline run side by side in the same
//! run and rewrites its own section of BENCHMARKS.md (between `<!-- bench:NAME -->` markers).

mod block;
mod droplist;
mod http;
mod idle;
mod model;
mod overhead;
mod system;
mod xdp;

pub use overhead::{
    ALL_WORKLOADS as ALL_OVERHEAD_WORKLOADS, DEFAULT_ROUNDS as DEFAULT_OVERHEAD_ROUNDS,
    OverheadWorkload, WorkloadKind, run_workload,
};

use std::fs;

use anyhow::{Context as _, bail};

use crate::util::{is_root, workspace_root};

/// What `cargo xtask bench` was asked for beyond which benchmarks.
pub struct Options {
    /// Rounds of `overhead`.
    pub overhead_rounds: usize,
    /// The workloads `overhead` measures.
    pub overhead_workloads: Vec<OverheadWorkload>,
}

impl Options {
    /// The section a benchmark writes: `overhead` on fewer workloads than all gets a section
    /// of its own, so that it does not replace the full run's.
    fn section(&self, name: &str) -> String {
        if name != "overhead" || self.overhead_workloads == overhead::ALL_WORKLOADS {
            return name.to_string();
        }
        format!(
            "overhead-{}",
            overhead::workload_names(&self.overhead_workloads).join("-")
        )
    }
}

/// A benchmark: its name (the section it owns) and the function producing that section's text.
type Benchmark = (&'static str, fn(&Options) -> anyhow::Result<String>);

const BENCHMARKS: &[Benchmark] = &[
    ("block", |_| block::run()),
    ("overhead", |options| {
        overhead::run(options.overhead_rounds, &options.overhead_workloads)
    }),
    ("http", |_| http::run()),
    ("model", |_| model::run_bench()),
    ("xdp", |_| xdp::run()),
    ("droplist", |_| droplist::run()),
    ("idle", |_| idle::run()),
];

pub fn run(filter: Option<&str>, options: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the benchmarks load kernel programs and make loop devices: run as root");
    }
    let selected: Vec<_> = BENCHMARKS
        .iter()
        .filter(|(name, _)| filter.is_none_or(|filter| name.contains(filter)))
        .collect();
    if selected.is_empty() {
        bail!("no benchmark matches {filter:?}");
    }
    for (name, benchmark) in selected {
        eprintln!("xtask bench: running {name}");
        let section = benchmark(options).with_context(|| format!("benchmark {name}"))?;
        write_section(&options.section(name), &section)?;
    }
    Ok(())
}

/// Replaces the text between this benchmark's markers in BENCHMARKS.md (appending the section
/// if it is new), leaving the other sections as they are.
fn write_section(name: &str, body: &str) -> anyhow::Result<()> {
    let path = workspace_root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{section}{}", &text[..start], &text[stop + end.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))
}
