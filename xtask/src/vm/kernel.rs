//! The guest kernels: Debian's stock kernel packages for a series and an architecture, found in
//! this machine's apt lists, downloaded with `apt-get download` and unpacked once under
//! target/vm/, with the modules the guest's virtio disk needs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{output, run};

/// A kernel series the matrix boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    V6_1,
    V6_12,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// Debian's metapackage that depends on the newest kernel of the series: bookworm's own
    /// kernel (6.1) is plain `linux-image-ARCH`; 6.12 comes as `linux-image-6.12-ARCH`.
    fn metapackage(self, arch: Arch) -> String {
        match self {
            Series::V6_1 => format!("linux-image-{}", arch.debian()),
            Series::V6_12 => format!("linux-image-6.12-{}", arch.debian()),
        }
    }
}

/// A guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Debian's name of the architecture.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// How apt names a package of this architecture on this (amd64) machine.
    pub fn apt_name(self, package: &str) -> String {
        match self {
            Arch::X86_64 => package.to_string(),
            Arch::Arm64 => format!("{package}:arm64"),
        }
    }
}

/// An unpacked kernel package.
pub struct GuestKernel {
    /// e.g. "linux-image-6.12.118+deb12-amd64".
    pub package: String,
    pub image: PathBuf,
    /// The package's `lib/modules/<release>/` directory.
    pub modules: PathBuf,
}

/// The newest kernel of `series` for `arch` in the apt lists, unpacked under `dir`.
pub fn guest_kernel(dir: &Path, series: Series, arch: Arch) -> anyhow::Result<GuestKernel> {
    let metapackage = series.metapackage(arch);
    let package = match kernel_package(&metapackage, arch) {
        Some(package) => package,
        None => {
            // Package lists may be missing on a machine where set-up had nothing to install.
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            kernel_package(&metapackage, arch).with_context(|| {
                format!(
                    "no {} in Debian's package lists{}",
                    arch.apt_name(&metapackage),
                    if arch == Arch::Arm64 {
                        " (run `cargo xtask setup`: it adds the arm64 architecture to dpkg)"
                    } else {
                        ""
                    }
                )
            })?
        }
    };
    let prefix = format!("linux-image-{}.", series.name());
    if !package.starts_with(&prefix) {
        bail!(
            "{metapackage} depends on {package}, not a {} kernel",
            series.name()
        );
    }
    let unpacked = unpack(dir, &package, arch)?;
    let image = find_prefixed(&unpacked.join("boot"), "vmlinuz")
        .context("the kernel package holds no boot/vmlinuz")?;
    let modules = fs::read_dir(unpacked.join("lib/modules"))
        .context("the kernel package holds no lib/modules")?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.is_dir())
        .context("the kernel package holds no lib/modules/<release>")?;
    Ok(GuestKernel {
        package,
        image,
        modules,
    })
}

/// "linux-image-6.1.0-57-amd64": the kernel package the metapackage depends on.
fn kernel_package(metapackage: &str, arch: Arch) -> Option<String> {
    let depends = output(Command::new("apt-cache").args(["depends", &arch.apt_name(metapackage)]))?;
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends: ")?;
        let name = name.split(':').next()?;
        name.starts_with("linux-image-").then(|| name.to_string())
    })
}

/// Downloads `package` (of `arch`) and unpacks it into `dir/<package>`, once.
pub fn unpack(dir: &Path, package: &str, arch: Arch) -> anyhow::Result<PathBuf> {
    let unpacked = dir.join(format!("{package}_{}", arch.debian()));
    let done = unpacked.join(".unpacked");
    if done.exists() {
        return Ok(unpacked);
    }
    let downloads = dir.join("downloads");
    fs::create_dir_all(&downloads)?;
    eprintln!("xtask vm-test: downloading {}", arch.apt_name(package));
    run(Command::new("apt-get")
        .args(["download", "-qq", &arch.apt_name(package)])
        .current_dir(&downloads))?;
    let deb_prefix = format!("{package}_");
    let deb_suffix = format!("_{}.deb", arch.debian());
    let deb = fs::read_dir(&downloads)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name().is_some_and(|name| {
                let name = name.to_string_lossy();
                name.starts_with(&deb_prefix) && name.ends_with(&deb_suffix)
            })
        })
        .with_context(|| format!("apt-get download left no {package} .deb"))?;
    let _ = fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let _ = fs::remove_file(&deb);
    fs::write(&done, b"")?;
    Ok(unpacked)
}

fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
        })
}

/// Debian builds the virtio drivers as modules: the guest's disk needs these (with their
/// dependencies), PCI transport on x86, MMIO transport on the arm64 `virt` machine.
pub fn disk_modules(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["virtio_pci", "virtio_blk"],
        Arch::Arm64 => &["virtio_mmio", "virtio_blk"],
    }
}

/// A module to load in the guest: its name and its (uncompressed) bytes.
pub struct Module {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// `wanted` and what they depend on, dependencies first, uncompressed (busybox's insmod cannot
/// read `.ko.xz`). A module the kernel has built in has no file and is skipped.
pub fn modules_with_dependencies(
    modules_dir: &Path,
    wanted: &[&str],
) -> anyhow::Result<Vec<Module>> {
    let mut files = std::collections::HashMap::new();
    index_modules(&modules_dir.join("kernel"), &mut files)?;
    let mut ordered: Vec<Module> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in wanted {
        add_module(name, &files, &mut seen, &mut ordered)?;
    }
    Ok(ordered)
}

fn add_module(
    name: &str,
    files: &std::collections::HashMap<String, PathBuf>,
    seen: &mut std::collections::HashSet<String>,
    ordered: &mut Vec<Module>,
) -> anyhow::Result<()> {
    let name = name.replace('-', "_");
    if !seen.insert(name.clone()) {
        return Ok(());
    }
    let Some(path) = files.get(&name) else {
        // Built into the kernel (or absent: the guest's log then says what is missing).
        return Ok(());
    };
    let bytes = read_module(path)?;
    for dependency in module_depends(&bytes) {
        add_module(&dependency, files, seen, ordered)?;
    }
    ordered.push(Module { name, bytes });
    Ok(())
}

fn index_modules(
    dir: &Path,
    files: &mut std::collections::HashMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, files)?;
        } else if let Some(name) = path.file_name().map(|name| name.to_string_lossy()) {
            let stem = ["ko", "ko.xz", "ko.zst", "ko.gz"]
                .iter()
                .find_map(|ext| name.strip_suffix(&format!(".{ext}")));
            if let Some(stem) = stem {
                files.insert(stem.replace('-', "_"), path.clone());
            }
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| format!("running {tool} to unpack {}", path.display()))?;
            if !out.status.success() {
                bail!("{tool} -dc {} failed", path.display());
            }
            Ok(out.stdout)
        }
    }
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated `key=value` strings).
fn module_depends(bytes: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = bytes.windows(KEY.len()).position(|window| window == KEY) else {
        return Vec::new();
    };
    let value = &bytes[start + KEY.len()..];
    let end = value.iter().position(|&byte| byte == 0).unwrap_or(0);
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_depends_reads_the_modinfo_entry() {
        let bytes = b"\x7fELF junk\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(module_depends(bytes), ["virtio", "virtio_ring"]);
        assert!(module_depends(b"\0depends=\0name=virtio\0").is_empty());
        assert!(module_depends(b"no modinfo here").is_empty());
    }
}
