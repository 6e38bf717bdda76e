//! `cargo xtask vm-test`: the programs on kernels other than this machine's. Boots Debian's
//! stock kernels (6.1 and 6.12 series, x86_64 and arm64) under qemu (software emulation: no
//! KVM needed) with a tiny initramfs holding busybox and the collector, runs `collector probes
//! --exercise` inside with a virtio disk, and checks that the whole program set as shipped
//! loaded, that the kprobes attached (Debian's kernels have them, ours has not), and that every
//! signal the exercise caused was counted. One file per job: `kernel` (packages), `initramfs`,
//! `qemu` (boot), `matrix` (results and the table).

mod initramfs;
mod kernel;
mod matrix;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

pub use self::kernel::{Arch, Series};
use self::matrix::Row;

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub kernels: Vec<Series>,
    pub arches: Vec<Arch>,
    /// Prebuilt collector binaries; each serves the architecture its ELF header names.
    pub collectors: Vec<PathBuf>,
}

impl Default for VmOptions {
    /// What `cargo xtask test` runs: one x86 kernel, so CI time does not grow with the matrix.
    fn default() -> Self {
        Self {
            kernels: vec![Series::V6_1],
            arches: vec![Arch::X86_64],
            collectors: Vec::new(),
        }
    }
}

/// Parses `--kernel` (6.1, 6.12 or all).
pub fn parse_kernels(value: &str) -> Result<Vec<Series>, String> {
    match value {
        "all" => Ok(Series::ALL.to_vec()),
        _ => Series::ALL
            .into_iter()
            .find(|series| series.name() == value)
            .map(|series| vec![series])
            .ok_or_else(|| format!("unknown kernel series {value:?}: 6.1, 6.12 or all")),
    }
}

/// Parses `--arch` (x86_64, arm64 or all; amd64 and aarch64 as aliases).
pub fn parse_arches(value: &str) -> Result<Vec<Arch>, String> {
    match value {
        "all" => Ok(Arch::ALL.to_vec()),
        "x86_64" | "amd64" => Ok(vec![Arch::X86_64]),
        "arm64" | "aarch64" => Ok(vec![Arch::Arm64]),
        _ => Err(format!(
            "unknown architecture {value:?}: x86_64, arm64 or all"
        )),
    }
}

pub fn vm_test(options: &VmOptions) -> anyhow::Result<()> {
    let dir = crate::util::target_dir().join("vm");
    fs::create_dir_all(&dir)?;
    let collectors = collectors_by_arch(&options.collectors)?;
    let mut rows = Vec::new();
    for &arch in &options.arches {
        for &series in &options.kernels {
            let row = match collectors.iter().find(|(a, _)| *a == arch) {
                None => Row::not_run(
                    series,
                    arch,
                    format!("not run: no {} build of the collector", arch.name()),
                ),
                Some((_, collector)) => boot_one(&dir, series, arch, collector)
                    .unwrap_or_else(|err| Row::failed(series, arch, format!("{err:#}"))),
            };
            eprintln!("xtask vm-test: {} {}: {}", row.kernel, row.arch, row.result);
            rows.push(row);
        }
    }
    let table = matrix::table(&rows, &today());
    let table_path = dir.join("matrix.md");
    fs::write(&table_path, &table)?;
    println!("{table}");
    eprintln!("xtask vm-test: table written to {}", table_path.display());
    let bad: Vec<String> = rows
        .iter()
        .filter(|row| !row.passed())
        .map(|row| format!("{} {}: {}", row.kernel, row.arch, row.result))
        .collect();
    if !bad.is_empty() {
        bail!(
            "{} of {} boots did not pass:\n{}",
            bad.len(),
            rows.len(),
            bad.join("\n")
        );
    }
    Ok(())
}

/// Which collector binary each architecture boots: those given, else this workspace's builds
/// (the host build for x86_64; the aarch64 musl build of `cargo xtask dist` for arm64).
fn collectors_by_arch(given: &[PathBuf]) -> anyhow::Result<Vec<(Arch, PathBuf)>> {
    let mut found = Vec::new();
    for path in given {
        let arch = elf_arch(path)?;
        if found.iter().any(|(a, _)| *a == arch) {
            bail!("--collector given twice for {}", arch.name());
        }
        found.push((arch, path.clone()));
    }
    let defaults = [
        (Arch::X86_64, crate::util::release_binary("collector")),
        (
            Arch::Arm64,
            crate::util::target_dir().join("aarch64-unknown-linux-musl/release/collector"),
        ),
    ];
    for (arch, path) in defaults {
        if !found.iter().any(|(a, _)| *a == arch) && path.exists() {
            found.push((arch, path));
        }
    }
    Ok(found)
}

/// The architecture an ELF binary is for, from its header's `e_machine`.
fn elf_arch(path: &Path) -> anyhow::Result<Arch> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        bail!("{} is not an ELF binary", path.display());
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    Arch::ALL
        .into_iter()
        .find(|arch| arch.elf_machine() == machine)
        .with_context(|| {
            format!(
                "{}: ELF machine {machine} is neither x86_64 nor arm64",
                path.display()
            )
        })
}

fn boot_one(dir: &Path, series: Series, arch: Arch, collector: &Path) -> anyhow::Result<Row> {
    let kernel = kernel::guest_kernel(dir, series, arch)?;
    let modules = kernel::modules_with_dependencies(&kernel.modules, kernel::disk_modules(arch))?;
    let busybox = match arch {
        Arch::X86_64 => ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .context("busybox not found (the busybox-static package)")?,
        Arch::Arm64 => kernel::unpack(dir, "busybox-static", arch)?.join("bin/busybox"),
    };
    let name = format!("{}-{}", series.name(), arch.name());
    let initramfs = dir.join(format!("initramfs-{name}.cpio"));
    initramfs::build(
        &initramfs,
        collector,
        &busybox,
        &modules,
        arch == Arch::X86_64,
    )?;
    let disk = dir.join(format!("disk-{name}.img"));
    fs::File::create(&disk)?.set_len(qemu::DISK_BYTES)?;
    eprintln!(
        "xtask vm-test: booting {} ({}) under qemu (TCG, no KVM) with {}",
        kernel.package,
        arch.name(),
        collector.display()
    );
    let console = qemu::boot(arch, &kernel.image, &initramfs, &disk)?;
    let log = dir.join(format!("console-{name}.log"));
    fs::write(&log, &console)?;
    let _ = fs::remove_file(&disk);
    matrix::check(series, arch, &kernel.package, &console, &log)
}

fn today() -> String {
    crate::util::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .map(|date| date.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_arch_choices_parse() {
        assert_eq!(parse_kernels("all").unwrap(), Series::ALL);
        assert_eq!(parse_kernels("6.12").unwrap(), [Series::V6_12]);
        assert!(parse_kernels("5.10").is_err());
        assert_eq!(parse_arches("aarch64").unwrap(), [Arch::Arm64]);
        assert!(parse_arches("riscv64").is_err());
    }

    #[test]
    fn elf_arch_reads_the_machine_field() {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[18..20].copy_from_slice(&183u16.to_le_bytes());
        let file = tempfile_path("elf-arm64");
        fs::write(&file, &header).unwrap();
        assert_eq!(elf_arch(&file).unwrap(), Arch::Arm64);
        fs::write(&file, b"#!/bin/sh\n").unwrap();
        assert!(elf_arch(&file).is_err());
        let _ = fs::remove_file(&file);
    }

    fn tempfile_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xtask-vm-{name}-{}", std::process::id()))
    }
}
