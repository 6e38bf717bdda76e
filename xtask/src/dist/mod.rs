//! `cargo xtask dist`: everything a release needs, under `target/dist/`.
//!
//! Per architecture: static binaries (`collector`, `model`) built for musl, each with the eBPF
//! object embedded (collector's build.rs builds it for the architecture being built); a tarball
//! with them, the docs, licences, deploy manifests, alert rules, Grafana dashboard, built-in
//! model, shell completions and man pages; a `.deb` with a systemd unit and a default config;
//! an OCI image archive built from scratch as `cargo xtask image` builds it. Then a multi-arch
//! OCI index, a CycloneDX SBOM and SHA256SUMS.
//!
//! Why musl: a statically linked binary runs on any distribution's libc (old glibc included),
//! in a `FROM scratch` image with nothing beside it, and in the VM tests' busybox initramfs.
//! The only C and assembly in the graph (ring's, psm's) needs no C library beyond musl's; Debian's
//! gcc for the target (a cross gcc for aarch64) compiles it (see [`Arch::c_toolchain`]).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{cargo, output, run, target_dir, workspace_root};

mod check;
pub use check::check;

/// An architecture we release for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(name = "aarch64", alias = "arm64")]
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The Rust target of the release binaries.
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's and OCI's name for it.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    /// The C toolchain of a build for this architecture: Debian's gcc for it (native, or
    /// the cross compiler `gcc-aarch64-linux-gnu`). The `cc` crate would look for
    /// `x86_64-linux-musl-gcc` / `aarch64-linux-musl-gcc`, which Debian does not package, to
    /// compile the C and assembly of ring and psm; their few libc headers come from glibc's
    /// (`libc6-dev-arm64-cross` for aarch64). Rust's musl targets bring their own C runtime
    /// and libc (self-contained), so the same gcc links them; the linker is set only for a
    /// cross build (natively cargo's default `cc` is that gcc).
    fn c_toolchain(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Arch::X86_64 => (
                "x86_64-linux-gnu-gcc",
                "x86_64-linux-gnu-ar",
                "CC_x86_64_unknown_linux_musl",
                "AR_x86_64_unknown_linux_musl",
            ),
            Arch::Aarch64 => (
                "aarch64-linux-gnu-gcc",
                "aarch64-linux-gnu-ar",
                "CC_aarch64_unknown_linux_musl",
                "AR_aarch64_unknown_linux_musl",
            ),
        }
    }

    /// Cargo's variable for this target's linker.
    fn linker_variable(self) -> &'static str {
        match self {
            Arch::X86_64 => "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER",
            Arch::Aarch64 => "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
        }
    }

    /// How this machine runs the architecture's binaries: directly on its own, else under
    /// qemu's user-mode emulator (Debian's `qemu-user-static`).
    pub fn runner(self) -> Option<&'static str> {
        if self.name() == std::env::consts::ARCH {
            None
        } else {
            Some(match self {
                Arch::X86_64 => "qemu-x86_64-static",
                Arch::Aarch64 => "qemu-aarch64-static",
            })
        }
    }
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// The release binary of `name` built for `arch`.
pub fn binary(arch: Arch, name: &str) -> PathBuf {
    target_dir().join(arch.triple()).join("release").join(name)
}

fn git(args: &[&str]) -> Option<String> {
    output(Command::new("git").args(args).current_dir(workspace_root()))
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

/// Builds every artifact for `arches` into `target/dist/` (emptied first), then checks them.
pub fn dist(arches: &[Arch], image: bool) -> anyhow::Result<()> {
    let out = dist_dir();
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    fs::create_dir_all(&out)?;
    // Timestamps in the archives are the last commit's, so two builds of one commit match.
    let epoch = git(&["log", "-1", "--format=%ct"]).unwrap_or_else(|| "0".into());
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());

    for &arch in arches {
        build(arch, &revision)?;
    }
    // Completions and man pages come from the real clap commands, so from a binary this
    // machine runs: the first architecture built for this host.
    let host = arches
        .iter()
        .copied()
        .find(|arch| arch.name() == std::env::consts::ARCH)
        .context("dist needs this machine's own architecture among --arch (it runs the binaries to generate completions and man pages)")?;
    let staging = tempfile::tempdir()?;
    let docs = staging.path().join("docs");
    generate_docs(host, &docs)?;

    let mut images = Vec::new();
    for &arch in arches {
        tarball(arch, &docs, &out, &epoch, staging.path())?;
        deb(arch, &docs, &out, &epoch, staging.path())?;
        if image {
            images.push(oci_image(arch, &out)?);
        }
    }
    if image {
        oci_index(&images, &out)?;
    }
    sbom(&out)?;
    sha256sums(&out)?;
    eprintln!("xtask dist: artifacts in {}", out.display());
    check(&out, arches)
}

fn build(arch: Arch, revision: &str) -> anyhow::Result<()> {
    eprintln!(
        "xtask dist: building collector and model for {}",
        arch.triple()
    );
    let mut command = cargo();
    command
        .args(["build", "--release", "--locked", "--target", arch.triple()])
        .args(["-p", "collector", "--bin", "collector"])
        .args(["-p", "model-cli", "--bin", "model"])
        .env("NODESTATE_REVISION", revision);
    let (cc, ar, cc_variable, ar_variable) = arch.c_toolchain();
    for tool in [cc, ar] {
        if which::which(tool).is_err() {
            bail!(
                "{tool} not found: `cargo xtask setup` installs it (Debian packages gcc, \
                 gcc-aarch64-linux-gnu and libc6-dev-arm64-cross)"
            );
        }
    }
    command.env(cc_variable, cc).env(ar_variable, ar);
    if arch.name() != std::env::consts::ARCH {
        command.env(arch.linker_variable(), cc);
    }
    run(&mut command)
}

/// `completions/` and `man/man1/` for both commands.
fn generate_docs(host: Arch, docs: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(docs.join("completions"))?;
    fs::create_dir_all(docs.join("man/man1"))?;
    for name in ["collector", "model"] {
        let binary = binary(host, name);
        for (shell, file) in [
            ("bash", format!("{name}.bash")),
            ("zsh", format!("_{name}")),
            ("fish", format!("{name}.fish")),
        ] {
            let script = capture(Command::new(&binary).args(["completions", shell]))?;
            fs::write(docs.join("completions").join(file), script)?;
        }
        let page = capture(Command::new(&binary).arg("man"))?;
        fs::write(docs.join("man/man1").join(format!("{name}.1")), page)?;
    }
    Ok(())
}

fn capture(command: &mut Command) -> anyhow::Result<Vec<u8>> {
    let result = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !result.status.success() || result.stdout.is_empty() {
        bail!(
            "{command:?} failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(result.stdout)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> anyhow::Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if skip.iter().any(|skip| name == *skip) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name), skip)?;
        } else {
            copy(&path, &to.join(&name))?;
        }
    }
    Ok(())
}

const LICENCES: [&str; 3] = ["LICENSE-MIT", "LICENSE-APACHE", "LICENSE-GPL2"];

pub fn tarball_name(arch: Arch) -> String {
    format!("nodestate-{VERSION}-{}-linux-musl", arch.name())
}

/// `nodestate-VERSION-ARCH-linux-musl.tar.gz`.
fn tarball(arch: Arch, docs: &Path, out: &Path, epoch: &str, staging: &Path) -> anyhow::Result<()> {
    let root = workspace_root();
    let name = tarball_name(arch);
    let tree = staging.join(&name);
    for binary_name in ["collector", "model"] {
        copy(
            &binary(arch, binary_name),
            &tree.join("bin").join(binary_name),
        )?;
    }
    for file in ["README.md", "CHANGELOG.md"].into_iter().chain(LICENCES) {
        copy(&root.join(file), &tree.join(file))?;
    }
    // The manifests, alert rules, dashboard, image recipe and host unit; not the checker crate.
    copy_tree(&root.join("deploy"), &tree.join("deploy"), &["check"])?;
    copy(
        &root.join("datasets/default-model.json"),
        &tree.join("model/default-model.json"),
    )?;
    copy_tree(docs, &tree, &[])?;
    let archive = out.join(format!("{name}.tar.gz"));
    run(Command::new("sh")
        .arg("-c")
        .arg(
            "tar --sort=name --mtime=@\"$1\" --owner=0 --group=0 --numeric-owner -C \"$2\" -cf - \"$3\" | gzip -n -9 > \"$4\"",
        )
        .args(["tar", epoch])
        .arg(staging)
        .arg(&name)
        .arg(&archive))
}

pub fn deb_name(arch: Arch) -> String {
    format!("nodestate_{VERSION}_{}.deb", arch.debian())
}

/// `nodestate_VERSION_ARCH.deb`: the binaries, a systemd unit, `/etc/nodestate/config.toml`
/// (a conffile), man pages, completions and the shipped model, rules and dashboard.
fn deb(arch: Arch, docs: &Path, out: &Path, epoch: &str, staging: &Path) -> anyhow::Result<()> {
    let root = workspace_root();
    let tree = staging.join(format!("deb-{}", arch.debian()));
    for name in ["collector", "model"] {
        copy(&binary(arch, name), &tree.join("usr/bin").join(name))?;
    }
    copy(
        &root.join("deploy/host/nodestate.service"),
        &tree.join("lib/systemd/system/nodestate.service"),
    )?;
    copy(
        &root.join("deploy/host/config.toml"),
        &tree.join("etc/nodestate/config.toml"),
    )?;
    let share = tree.join("usr/share");
    copy(
        &root.join("datasets/default-model.json"),
        &share.join("nodestate/default-model.json"),
    )?;
    copy(
        &root.join("deploy/alerts/nodestate.rules.yaml"),
        &share.join("nodestate/nodestate.rules.yaml"),
    )?;
    copy(
        &root.join("deploy/grafana-dashboard.json"),
        &share.join("nodestate/grafana-dashboard.json"),
    )?;
    let doc = share.join("doc/nodestate");
    copy(&root.join("README.md"), &doc.join("README.md"))?;
    copy(&root.join("CHANGELOG.md"), &doc.join("CHANGELOG.md"))?;
    let mut copyright = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: nodestate\n\n\
         Files: *\nLicense: MIT or Apache-2.0\n\n\
         Files: collector-ebpf/*\nComment: the kernel programs embedded in /usr/bin/collector\n\
         License: MIT or GPL-2\n\n",
    );
    for licence in LICENCES {
        copyright.push_str(&format!("License: {licence}\n"));
        for line in fs::read_to_string(root.join(licence))?.lines() {
            copyright.push_str(if line.trim().is_empty() { " ." } else { " " });
            copyright.push_str(line.trim_end());
            copyright.push('\n');
        }
        copyright.push('\n');
    }
    fs::write(doc.join("copyright"), copyright)?;
    for name in ["collector", "model"] {
        let page = fs::read(docs.join(format!("man/man1/{name}.1")))?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &page)?;
        let man = share.join(format!("man/man1/{name}.1.gz"));
        fs::create_dir_all(man.parent().expect("has a parent"))?;
        fs::write(man, gz.finish()?)?;
        copy(
            &docs.join(format!("completions/{name}.bash")),
            &share.join(format!("bash-completion/completions/{name}")),
        )?;
        copy(
            &docs.join(format!("completions/_{name}")),
            &share.join(format!("zsh/vendor-completions/_{name}")),
        )?;
        copy(
            &docs.join(format!("completions/{name}.fish")),
            &share.join(format!("fish/vendor_completions.d/{name}.fish")),
        )?;
    }
    let installed_kib = du_kib(&tree)?;
    let control = tree.join("DEBIAN");
    fs::create_dir_all(&control)?;
    fs::write(
        control.join("control"),
        format!(
            "Package: nodestate\n\
             Version: {VERSION}\n\
             Architecture: {arch}\n\
             Maintainer: The nodestate authors <nodestate@users.noreply.github.com>\n\
             Installed-Size: {installed_kib}\n\
             Section: admin\n\
             Priority: optional\n\
             Homepage: https://github.com/nodestate/nodestate\n\
             Description: eBPF node-health collector and anomaly judge\n \
             nodestate's collector loads eBPF programs that count block I/O, scheduler,\n \
             syscall, network and process events, cuts time into windows, judges each\n \
             window healthy or degraded and serves the state as Prometheus metrics.\n \
             The binaries are static (musl) with the eBPF object embedded.\n",
            arch = arch.debian()
        ),
    )?;
    fs::write(control.join("conffiles"), "/etc/nodestate/config.toml\n")?;
    // No systemd as PID 1 (containers, our test machines): then there is nothing to reload.
    let scripts = [
        (
            "postinst",
            "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n    systemctl daemon-reload || true\nfi\n",
        ),
        (
            "prerm",
            "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n    systemctl stop nodestate.service || true\nfi\n",
        ),
        (
            "postrm",
            "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n    systemctl daemon-reload || true\nfi\n",
        ),
    ];
    for (name, text) in scripts {
        let path = control.join(name);
        fs::write(&path, text)?;
        run(Command::new("chmod").arg("0755").arg(&path))?;
    }
    run(Command::new("chmod").args(["-R", "go-w"]).arg(&tree))?;
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(out.join(deb_name(arch)))
        .env("SOURCE_DATE_EPOCH", epoch))
}

fn du_kib(tree: &Path) -> anyhow::Result<u64> {
    let text = output(Command::new("du").args(["-sk"]).arg(tree)).context("du failed")?;
    text.split_whitespace()
        .next()
        .and_then(|kib| kib.parse().ok())
        .context("du printed no size")
}

pub fn oci_name(arch: Arch) -> String {
    format!("nodestate-collector-{VERSION}-{}.oci.tar", arch.debian())
}

pub const OCI_INDEX: &str = "nodestate-collector-oci-index.tar";

/// The collector's image for `arch`, from deploy/Containerfile's runtime stage (as `cargo
/// xtask image` builds it), saved as an OCI archive; returns the local image name.
fn oci_image(arch: Arch, out: &Path) -> anyhow::Result<String> {
    let root = workspace_root();
    let text = fs::read_to_string(root.join("deploy/Containerfile"))?;
    let local = crate::image::local_containerfile(&text)?;
    let context = tempfile::tempdir()?;
    run(Command::new("sh")
        .arg(root.join("deploy/image/rootfs.sh"))
        .arg(binary(arch, "collector"))
        .arg(context.path().join("rootfs")))?;
    fs::write(context.path().join("Containerfile"), local)?;
    let name = format!("localhost/nodestate/collector:{VERSION}-{}", arch.debian());
    run(Command::new("buildah")
        .args(["build", "--quiet", "--layers=false"])
        .args(["--platform", &format!("linux/{}", arch.debian())])
        .args(["--timestamp", "0"])
        .args([
            "--label",
            &format!("org.opencontainers.image.version={VERSION}"),
        ])
        .args([
            "--label",
            "org.opencontainers.image.licenses=MIT OR Apache-2.0",
        ])
        .arg("--file")
        .arg(context.path().join("Containerfile"))
        .args(["--tag", &name])
        .arg(context.path()))?;
    run(Command::new("buildah")
        .args(["push", "--quiet", "--format", "oci", &name])
        .arg(format!(
            "oci-archive:{}",
            out.join(oci_name(arch)).display()
        )))?;
    Ok(name)
}

/// A multi-arch index over the per-architecture images.
fn oci_index(images: &[String], out: &Path) -> anyhow::Result<()> {
    let list = format!("localhost/nodestate/collector:{VERSION}");
    let _ = Command::new("buildah")
        .args(["manifest", "rm", &list])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let _ = Command::new("buildah")
        .args(["rmi", &list])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    run(Command::new("buildah").args(["manifest", "create", &list]))?;
    for image in images {
        run(Command::new("buildah").args(["manifest", "add", &list, image]))?;
    }
    run(Command::new("buildah")
        .args([
            "manifest", "push", "--quiet", "--all", "--format", "oci", &list,
        ])
        .arg(format!("oci-archive:{}", out.join(OCI_INDEX).display())))?;
    let _ = Command::new("buildah")
        .args(["manifest", "rm", &list])
        .stdout(std::process::Stdio::null())
        .status();
    Ok(())
}

pub const SBOM: &str = "nodestate.cdx.json";

/// A CycloneDX SBOM of the two shipped binaries' dependency graphs (cargo-cyclonedx, installed
/// by `cargo xtask setup`). It writes one file per workspace member beside its Cargo.toml;
/// we keep the collector's and the model command's and delete the rest.
fn sbom(out: &Path) -> anyhow::Result<()> {
    const NAME: &str = "nodestate-dist-sbom";
    let scratch = tempfile::tempdir()?;
    let result = run(cargo()
        .args(["cyclonedx", "--format", "json", "--spec-version", "1.5"])
        .args(["--override-filename", NAME])
        .args(["--target", Arch::X86_64.triple()]))
    .context("cargo cyclonedx (run `cargo xtask setup` to install cargo-cyclonedx)");
    let metadata =
        crate::util::output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))
            .context("cargo metadata")?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let Some(manifest) = package["manifest_path"].as_str() else {
            continue;
        };
        let written = Path::new(manifest).with_file_name(format!("{NAME}.json"));
        if !written.exists() {
            continue;
        }
        let name = package["name"].as_str().unwrap_or_default();
        if name == "collector" || name == "model-cli" {
            fs::rename(&written, scratch.path().join(format!("{name}.json")))?;
        } else {
            fs::remove_file(&written)?;
        }
    }
    result?;
    // One document: the collector's, with the model command's components added.
    let read = |name: &str| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&fs::read(
            scratch.path().join(format!("{name}.json")),
        )?)?)
    };
    let mut document = read("collector")?;
    let model = read("model-cli")?;
    let components = document["components"]
        .as_array_mut()
        .context("the SBOM has no components")?;
    let known: std::collections::HashSet<String> = components
        .iter()
        .filter_map(|c| c["bom-ref"].as_str().map(String::from))
        .collect();
    for component in model["components"].as_array().into_iter().flatten() {
        if component["bom-ref"]
            .as_str()
            .is_some_and(|bom_ref| !known.contains(bom_ref))
        {
            components.push(component.clone());
        }
    }
    fs::write(out.join(SBOM), serde_json::to_vec_pretty(&document)?)?;
    Ok(())
}

fn sha256sums(out: &Path) -> anyhow::Result<()> {
    let mut names: Vec<String> = fs::read_dir(out)?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "SHA256SUMS")
        .collect();
    names.sort();
    let sums = capture(Command::new("sha256sum").args(&names).current_dir(out))?;
    fs::write(out.join("SHA256SUMS"), sums)?;
    Ok(())
}
