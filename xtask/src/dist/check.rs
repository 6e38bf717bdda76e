//! `cargo xtask dist --check`: what the release artifacts under `target/dist/` must be.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use super::{Arch, SBOM, VERSION, capture, deb_name, tarball_name};
use crate::util::run;

/// The checks the release test makes on `target/dist/`: every artifact present, binaries for
/// the right machine, statically linked, with the eBPF object embedded; checksums match; the
/// SBOM parses and lists components.
pub fn check(out: &Path, arches: &[Arch]) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    let sums = fs::read_to_string(out.join("SHA256SUMS")).context("no SHA256SUMS")?;
    let verified = Command::new("sha256sum")
        .args(["--check", "--strict", "--quiet", "SHA256SUMS"])
        .current_dir(out)
        .status()?;
    if !verified.success() {
        failures.push("SHA256SUMS does not match the files".to_string());
    }
    let mut expected = vec![SBOM.to_string()];
    for &arch in arches {
        expected.push(format!("{}.tar.gz", tarball_name(arch)));
        expected.push(deb_name(arch));
    }
    for name in &expected {
        if !sums
            .lines()
            .any(|line| line.ends_with(&format!("  {name}")))
        {
            failures.push(format!("{name} is missing (or not in SHA256SUMS)"));
        }
    }
    for &arch in arches {
        let unpacked = tempfile::tempdir()?;
        run(Command::new("tar")
            .arg("-xzf")
            .arg(out.join(format!("{}.tar.gz", tarball_name(arch))))
            .arg("-C")
            .arg(unpacked.path()))?;
        let tree = unpacked.path().join(tarball_name(arch));
        for file in [
            "bin/collector",
            "bin/model",
            "README.md",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "CHANGELOG.md",
            "deploy/base/daemonset.yaml",
            "deploy/alerts/nodestate.rules.yaml",
            "deploy/grafana-dashboard.json",
            "deploy/host/nodestate.service",
            "model/default-model.json",
            "completions/collector.bash",
            "completions/_model",
            "man/man1/collector.1",
            "man/man1/model.1",
        ] {
            if !tree.join(file).is_file() {
                failures.push(format!("{} lacks {file}", tarball_name(arch)));
            }
        }
        for name in ["collector", "model"] {
            let path = tree.join("bin").join(name);
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            if let Err(err) = check_elf(&bytes, arch) {
                failures.push(format!("{}/{name}: {err}", arch.name()));
            }
            if name == "collector" && !contains(&bytes, b"sys_exit_raw") {
                failures.push(format!(
                    "{}/collector: no eBPF object embedded (no program name sys_exit_raw)",
                    arch.name()
                ));
            }
            if name == "collector" {
                let embedded = embedded_ebpf_arches(&bytes);
                if embedded != [arch.name()] {
                    failures.push(format!(
                        "{}/collector: embeds eBPF objects for {embedded:?}, expected exactly \
                         one for {}",
                        arch.name(),
                        arch.name()
                    ));
                }
            }
            // A cross build can link and still not run (a wrong C toolchain, a libc mix-up):
            // run it, under qemu's user-mode emulator when it is not this machine's.
            if let Err(err) = reports_version(&path, arch, name) {
                failures.push(format!("{}/{name}: {err:#}", arch.name()));
            }
        }
        let fields = capture(
            Command::new("dpkg-deb")
                .args(["--field"])
                .arg(out.join(deb_name(arch)))
                .args(["Package", "Version", "Architecture"]),
        )?;
        let fields = String::from_utf8_lossy(&fields);
        for field in [
            "Package: nodestate".to_string(),
            format!("Version: {VERSION}"),
            format!("Architecture: {}", arch.debian()),
        ] {
            if !fields.contains(&field) {
                failures.push(format!("{}: no `{field}` in {fields}", deb_name(arch)));
            }
        }
    }
    match fs::read(out.join(SBOM))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    {
        Some(sbom) => {
            let components = sbom["components"].as_array().map_or(0, Vec::len);
            let names: Vec<&str> = sbom["components"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            if sbom["bomFormat"] != "CycloneDX" || components < 20 || !names.contains(&"aya") {
                failures.push(format!(
                    "the SBOM is not a CycloneDX document listing our dependencies ({components} components)"
                ));
            }
        }
        None => failures.push(format!("{SBOM} is not JSON")),
    }
    if failures.is_empty() {
        eprintln!(
            "xtask dist: checked {} artifacts for {:?}",
            sums.lines().count(),
            arches.iter().map(|arch| arch.name()).collect::<Vec<_>>()
        );
        Ok(())
    } else {
        bail!(
            "the release artifacts fail their checks:\n  {}",
            failures.join("\n  ")
        )
    }
}

/// The architectures named by the eBPF objects embedded in `binary` (see
/// `collector_common::EBPF_ARCH_MARKER`), sorted, without repeats.
pub fn embedded_ebpf_arches(binary: &[u8]) -> Vec<String> {
    let marker = collector_common::EBPF_ARCH_MARKER;
    let mut arches: Vec<String> = binary
        .windows(marker.len())
        .enumerate()
        .filter(|(_, window)| *window == marker)
        .map(|(at, _)| {
            let start = at + marker.len();
            let end = (at + collector_common::EBPF_ARCH_MARKER_BYTES).min(binary.len());
            let name = &binary[start..end];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            String::from_utf8_lossy(name).into_owned()
        })
        .collect();
    arches.sort();
    arches.dedup();
    arches
}

/// Runs `binary --version` (through [`Arch::runner`]) and checks it prints this release's.
fn reports_version(binary: &Path, arch: Arch, name: &str) -> anyhow::Result<()> {
    let mut command = match arch.runner() {
        Some(emulator) => {
            if which::which(emulator).is_err() {
                bail!(
                    "cannot run it: {emulator} not found (`cargo xtask setup` installs Debian's \
                     qemu-user-static)"
                );
            }
            let mut command = Command::new(emulator);
            command.arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command.arg("--version");
    let printed = capture(&mut command)?;
    let printed = String::from_utf8_lossy(&printed);
    let expected = format!("{name} {VERSION}");
    if printed.trim() != expected {
        bail!(
            "`--version` printed {:?}, expected {expected:?}",
            printed.trim()
        );
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A 64-bit little-endian ELF executable for `arch` with no program interpreter (static).
pub fn check_elf(bytes: &[u8], arch: Arch) -> anyhow::Result<()> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        bail!("not an ELF file");
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        bail!("not a 64-bit little-endian ELF");
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != arch.elf_machine() {
        bail!(
            "e_machine {machine}, expected {} ({})",
            arch.elf_machine(),
            arch.name()
        );
    }
    // Program headers: e_phoff at 32 (u64), e_phentsize at 54, e_phnum at 56.
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    let phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as usize;
    let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        let kind = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        // PT_INTERP = 3: a dynamic loader is named, so the binary is not static.
        if kind == Some(3) {
            bail!("dynamically linked (has a PT_INTERP program header)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_check_tells_machines_and_dynamic_binaries_apart() {
        // This test binary is a dynamically linked executable for the host.
        let own = fs::read(std::env::current_exe().unwrap()).unwrap();
        let host = if cfg!(target_arch = "x86_64") {
            Arch::X86_64
        } else {
            Arch::Aarch64
        };
        let other = if host == Arch::X86_64 {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        let err = check_elf(&own, other).unwrap_err().to_string();
        assert!(err.contains("e_machine"), "{err}");
        if cfg!(target_env = "gnu") {
            let err = check_elf(&own, host).unwrap_err().to_string();
            assert!(err.contains("dynamically linked"), "{err}");
        }
        assert!(check_elf(b"#!/bin/sh\n", host).is_err());
    }

    #[test]
    fn ebpf_arch_markers_are_found_and_told_apart() {
        let marker = |arch: &[u8]| {
            let mut bytes = collector_common::EBPF_ARCH_MARKER.to_vec();
            bytes.extend_from_slice(arch);
            bytes.resize(collector_common::EBPF_ARCH_MARKER_BYTES, 0);
            bytes
        };
        let mut binary = b"\x7fELF some code".to_vec();
        assert!(embedded_ebpf_arches(&binary).is_empty());
        binary.extend(marker(b"aarch64"));
        binary.extend_from_slice(b"more code");
        assert_eq!(embedded_ebpf_arches(&binary), ["aarch64"]);
        binary.extend(marker(b"x86_64"));
        assert_eq!(embedded_ebpf_arches(&binary), ["aarch64", "x86_64"]);
        // A marker cut short by the end of the file still reads.
        let mut cut = b"code".to_vec();
        cut.extend_from_slice(&marker(b"x86_64")[..collector_common::EBPF_ARCH_MARKER.len() + 3]);
        assert_eq!(embedded_ebpf_arches(&cut), ["x86"]);
    }
}
