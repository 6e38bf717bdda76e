//! `model train` against scikit-learn's `KMeans` on the same data, same k and inits, in one
//! run, and the daemon's inference time per window: `model bench` measures, this records.

use std::process::Command;

use anyhow::Context as _;

use crate::util::{output, release_binary, run};

pub fn run_bench() -> anyhow::Result<String> {
    // scikit-learn is the baseline; it comes from PyPI, only for this benchmark.
    let has_sklearn = output(Command::new("python3").args(["-c", "import sklearn"])).is_some();
    if !has_sklearn {
        eprintln!("xtask bench: installing scikit-learn (PyPI) for the k-means baseline");
        run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "scikit-learn"]))?;
    }
    let model = release_binary("model");
    let mut sections = Vec::new();
    for args in [
        vec!["bench", "--repeats", "3"],
        vec![
            "bench",
            "--repeats",
            "3",
            "--rows",
            "17280",
            "--dims",
            "64",
            "--k",
            "4",
        ],
    ] {
        let text = output(Command::new(&model).args(&args))
            .with_context(|| format!("`model {}` failed", args.join(" ")))?;
        sections.push(format!("`model {}`:\n\n```\n{}```\n", args.join(" "), text));
    }
    Ok(format!(
        "## Model: training against scikit-learn, inference per window\n\n\
         `cargo xtask bench model` runs `model bench`: the same generated data, k, number of \
         initialisations and iteration cap for `model train` (linfa) and scikit-learn's \
         `KMeans`, alternated; both reach the same inertia. Both use the machine's 2 threads; \
         thread for thread scikit-learn is faster (see model/README.md).\n\n{}",
        sections.join("\n")
    ))
}
