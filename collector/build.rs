use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The file the daemon embeds (`kernel::EBPF_OBJECT`); aya-build names it after the package.
const OBJECT: &str = "collector-ebpf";

/// Builds `collector-ebpf` for the bpf target with the nightly toolchain and bpf-linker (both
/// installed by `cargo xtask setup`); the daemon embeds the resulting object.
///
/// Without bpf-linker (or with `AYA_BUILD_SKIP=1`) it embeds an empty stub instead, with a
/// warning, as aya's own tree does: the workspace still checks, lints and runs the tests that
/// load no program, and the built daemon refuses to load programs with an error saying why.
fn main() -> anyhow::Result<()> {
    build_identity();
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = std::env::var("AYA_BUILD_SKIP")
        .is_ok_and(|value| value == "1" || value.eq_ignore_ascii_case("true"));
    if skip || which::which("bpf-linker").is_err() {
        println!("cargo:rerun-if-env-changed=PATH");
        println!(
            "cargo:warning=building collector with an EMPTY eBPF object stub ({}): it cannot load \
             programs; run `cargo xtask setup` and build again",
            if skip {
                "AYA_BUILD_SKIP is set"
            } else {
                "bpf-linker not found on PATH"
            }
        );
        let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
        std::fs::write(out_dir.join(OBJECT), []).context("writing the stub object")?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == OBJECT)
        .ok_or_else(|| anyhow!("{OBJECT} package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir: manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
            .as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
}

/// What `nodestate_build_info` and `collector --version` report besides the package version:
/// the git revision built (`NODESTATE_REVISION` overrides it, e.g. in a build from a tarball
/// without `.git`; "unknown" when neither says) and the compiler's version.
fn build_identity() {
    println!("cargo:rerun-if-env-changed=NODESTATE_REVISION");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
            .filter(|text| !text.is_empty())
    };
    let revision = std::env::var("NODESTATE_REVISION")
        .ok()
        .filter(|revision| !revision.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves (a commit, a checkout), so the revision never goes stale.
            for path in ["HEAD", "logs/HEAD"] {
                if let Some(file) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={file}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NODESTATE_REVISION={revision}");
    println!("cargo:rustc-env=NODESTATE_RUSTC_VERSION={rustc_version}");
}
