//! The guest's initramfs: /init (a busybox script), busybox, the collector (with the shared
//! libraries a dynamically linked one needs), and the virtio disk's modules.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use super::kernel::Module;
use crate::util::output;

/// Where the guest's disk appears: the first virtio disk.
pub const GUEST_DISK: &str = "/dev/vda";

/// The guest's init: mount what the collector needs (tracefs, bpffs, the unified cgroup
/// hierarchy for per-cgroup attribution), load the disk's modules, bring loopback up for the
/// connects, run the exercise, print its result between markers, power off.
fn init_script(modules: &[Module]) -> String {
    let mut script = String::from(
        r#"#!/bin/busybox sh
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev /tmp
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
$bb mount -t tmpfs tmp /tmp
$bb mount -t tracefs nodev /sys/kernel/tracing
$bb mount -t bpf bpf /sys/fs/bpf
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
"#,
    );
    for module in modules {
        script.push_str(&format!(
            "$bb insmod /modules/{}.ko || echo \"NODESTATE-VM-NOTE insmod {} failed\"\n",
            module.name, module.name
        ));
    }
    script.push_str(&format!(
        r#"$bb ip link set lo up
n=0
while [ ! -b {GUEST_DISK} ] && [ $n -lt 50 ]; do $bb sleep 0.1; n=$((n+1)); done
echo NODESTATE-VM-BEGIN
/collector --log-level warn probes --exercise --block-device {GUEST_DISK} --output json > /tmp/out 2> /tmp/err
echo "NODESTATE-VM-EXIT $?"
echo "NODESTATE-VM-RESULT $($bb cat /tmp/out)"
$bb cat /tmp/err
$bb poweroff -f
"#
    ));
    script
}

/// Writes an uncompressed newc initramfs to `path`.
pub fn build(
    path: &Path,
    collector: &Path,
    busybox: &Path,
    modules: &[Module],
    host_binary: bool,
) -> anyhow::Result<()> {
    let mut archive = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "tmp", "lib", "lib64", "usr", "usr/lib", "modules",
    ] {
        archive.directory(dir);
    }
    // So init has a console before devtmpfs is mounted.
    archive.character_device("dev/console", 5, 1);
    archive.file("init", init_script(modules).as_bytes(), 0o755);
    archive.file(
        "bin/busybox",
        &fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?,
        0o755,
    );
    archive.file(
        "collector",
        &fs::read(collector).with_context(|| format!("reading {}", collector.display()))?,
        0o755,
    );
    for module in modules {
        archive.file(&format!("modules/{}.ko", module.name), &module.bytes, 0o644);
    }
    // A binary built for this host may be dynamically linked: bring its libraries along. A
    // static (musl) binary has none, and `ldd` cannot read another architecture's binary.
    if host_binary {
        for library in shared_libraries(collector) {
            let relative = library.strip_prefix("/").unwrap_or(&library);
            let mut parent = PathBuf::new();
            for component in relative.parent().into_iter().flat_map(Path::components) {
                parent.push(component);
                archive.directory(&parent.to_string_lossy());
            }
            let bytes =
                fs::read(&library).with_context(|| format!("reading {}", library.display()))?;
            archive.file(&relative.to_string_lossy(), &bytes, 0o755);
        }
    }
    fs::write(path, archive.finish()).with_context(|| format!("writing {}", path.display()))
}

/// Absolute paths of the shared objects `binary` loads (its dynamic loader included); none for
/// a static binary (`ldd` fails on those).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let Some(listing) = output(Command::new("ldd").arg(binary)) else {
        return Vec::new();
    };
    listing
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A minimal writer of the "newc" cpio format the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
    directories: std::collections::HashSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.inode += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn directory(&mut self, name: &str) {
        if self.directories.insert(name.to_string()) {
            self.entry(name, 0o040_755, &[], (0, 0));
        }
    }

    fn file(&mut self, name: &str, data: &[u8], permissions: u32) {
        self.entry(name, 0o100_000 | permissions, data, (0, 0));
    }

    fn character_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_loads_modules_before_the_exercise() {
        let modules = [Module {
            name: "virtio_blk".into(),
            bytes: Vec::new(),
        }];
        let script = init_script(&modules);
        let insmod = script
            .find("insmod /modules/virtio_blk.ko")
            .expect("insmod");
        let exercise = script.find("probes --exercise").expect("exercise");
        assert!(insmod < exercise, "{script}");
        assert!(script.contains(&format!("--block-device {GUEST_DISK}")));
    }
}
