//! `model train` against scikit-learn's `KMeans` on the same data, same k and inits, in one
//! run, and the daemon's inference time per window: `model bench` measures, this records.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{output, release_binary, run};

pub fn run_bench() -> anyhow::Result<String> {
    // scikit-learn is the baseline; it comes from PyPI, only for this benchmark.
    let has_sklearn = || output(Command::new("python3").args(["-c", "import sklearn"])).is_some();
    if !has_sklearn() {
        eprintln!("xtask bench: installing scikit-learn (PyPI) for the k-means baseline");
        let pip =
            run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "scikit-learn"]));
        // Debian's own python3 refuses pip into the system ("externally-managed-environment",
        // PEP 668): its package is the way there.
        if let Err(err) = pip {
            eprintln!("xtask bench: {err:#}; trying Debian's python3-sklearn");
            let _ = run(Command::new("apt-get").args(["install", "-y", "python3-sklearn"]));
        }
        if !has_sklearn() {
            bail!(
                "bench model needs scikit-learn for `python3` and could not install it: run \
                 `python3 -m pip install scikit-learn` (in a venv if pip calls the system \
                 python externally managed) or `apt-get install python3-sklearn`"
            );
        }
    }
    let model = release_binary("model");
    let mut sections = Vec::new();
    let day = ["--rows", "17280", "--dims", "64", "--k", "4"];
    for (threads, data) in [
        ("0", &[][..]),
        ("0", &day[..]),
        ("1", &[][..]),
        ("1", &day[..]),
    ] {
        let mut args = vec!["bench", "--repeats", "5"];
        if threads != "0" {
            args.extend(["--threads", threads]);
        }
        args.extend(data);
        let text = output(Command::new(&model).args(&args))
            .with_context(|| format!("`model {}` failed", args.join(" ")))?;
        sections.push(format!("`model {}`:\n\n```\n{}```\n", args.join(" "), text));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(format!(
        "## Model: training against scikit-learn, inference per window\n\n\
         `cargo xtask bench model` runs `model bench`: the same generated data, k, number of \
         initialisations, iteration cap and stopping rule for `model train` and scikit-learn's \
         `KMeans` (greedy k-means++, Lloyd), alternated, best of 5 each; both reach the same \
         inertia. First with the machine's threads on both sides, then one thread each \
         (`--threads 1`; scikit-learn limited through threadpoolctl). Load average when the \
         run ended: {load}. How `model train` fits is in model/README.md.\n\n{}",
        sections.join("\n")
    ))
}
