//! `cargo xtask vm-test`: prove the kprobe path where kprobes exist. Boots Debian's stock kernel
//! under qemu (software emulation: no KVM needed) with a tiny initramfs holding busybox and the
//! collector, runs `collector probes --exercise` inside, and checks that the kprobe programs
//! attached and counted the opens and fsyncs the guest caused.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util::{output, run};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const RESULT_MARKER: &str = "NODESTATE-VM-RESULT ";

/// The signals that have a kprobe and must get it inside the guest.
const KPROBE_SIGNALS: [&str; 2] = ["file opens", "fsync latency"];

pub fn vm_test() -> anyhow::Result<()> {
    let dir = crate::util::target_dir().join("vm");
    fs::create_dir_all(&dir)?;
    let kernel = guest_kernel(&dir)?;
    let initramfs = dir.join("initramfs.cpio");
    build_initramfs(&initramfs)?;
    eprintln!(
        "xtask vm-test: booting {} under qemu (TCG, no KVM)",
        kernel.display()
    );
    let console = boot(&kernel, &initramfs)?;
    fs::write(dir.join("console.log"), &console)?;
    check(&console, &dir.join("console.log"))
}

/// The stock kernel image of Debian's `linux-image-amd64`, downloaded and unpacked once.
fn guest_kernel(dir: &Path) -> anyhow::Result<PathBuf> {
    let package = match kernel_package() {
        Some(package) => package,
        None => {
            // Package lists may be missing on a machine where set-up had nothing to install.
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            kernel_package().context("no linux-image-amd64 in Debian's package lists")?
        }
    };
    let unpacked = dir.join(&package);
    if let Some(image) = find_vmlinuz(&unpacked) {
        return Ok(image);
    }
    let downloads = dir.join("downloads");
    fs::create_dir_all(&downloads)?;
    eprintln!("xtask vm-test: downloading {package}");
    run(Command::new("apt-get")
        .args(["download", "-qq", &package])
        .current_dir(&downloads))?;
    let deb = fs::read_dir(&downloads)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&package))
        })
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let _ = fs::remove_file(&deb);
    find_vmlinuz(&unpacked).context("the kernel package holds no boot/vmlinuz")
}

/// "linux-image-6.1.0-56-amd64": what the `linux-image-amd64` metapackage depends on.
fn kernel_package() -> Option<String> {
    let depends = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends: ")?;
        name.starts_with("linux-image-").then(|| name.to_string())
    })
}

fn find_vmlinuz(unpacked: &Path) -> Option<PathBuf> {
    fs::read_dir(unpacked.join("boot"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz"))
        })
}

const INIT: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev /tmp
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
$bb mount -t tmpfs tmp /tmp
$bb mount -t tracefs nodev /sys/kernel/tracing
$bb mount -t bpf bpf /sys/fs/bpf
echo NODESTATE-VM-BEGIN
/collector --log-level warn probes --exercise --output json > /tmp/out 2> /tmp/err
echo "NODESTATE-VM-EXIT $?"
echo "NODESTATE-VM-RESULT $($bb cat /tmp/out)"
$bb cat /tmp/err
$bb poweroff -f
"#;

/// An uncompressed newc initramfs: /init, busybox, the collector and the shared libraries it
/// links, and /dev/console so init has a console before devtmpfs is mounted.
fn build_initramfs(path: &Path) -> anyhow::Result<()> {
    let collector = crate::util::release_binary("collector");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .context("busybox not found (the busybox-static package)")?;
    let mut archive = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "tmp", "lib", "lib64", "usr", "usr/lib",
    ] {
        archive.directory(dir);
    }
    archive.character_device("dev/console", 5, 1);
    archive.file("init", INIT.as_bytes(), 0o755);
    archive.file("bin/busybox", &fs::read(&busybox)?, 0o755);
    archive.file("collector", &fs::read(&collector)?, 0o755);
    for library in shared_libraries(&collector)? {
        let relative = library.strip_prefix("/").unwrap_or(&library);
        let mut parent = PathBuf::new();
        for component in relative.parent().into_iter().flat_map(Path::components) {
            parent.push(component);
            archive.directory(&parent.to_string_lossy());
        }
        let bytes = fs::read(&library).with_context(|| format!("reading {}", library.display()))?;
        archive.file(&relative.to_string_lossy(), &bytes, 0o755);
    }
    fs::write(path, archive.finish()).with_context(|| format!("writing {}", path.display()))
}

/// Absolute paths of the shared objects `binary` loads (its dynamic loader included).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listing = output(Command::new("ldd").arg(binary)).context("ldd failed")?;
    Ok(listing
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn boot(kernel: &Path, initramfs: &Path) -> anyhow::Result<String> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/init quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (the qemu-system-x86 package)")?;
    let mut stdout = qemu.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut console = Vec::new();
        let _ = stdout.read_to_end(&mut console);
        console
    });
    let started = Instant::now();
    loop {
        if qemu.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            bail!("the guest did not power off within {BOOT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = reader
        .join()
        .map_err(|_| anyhow::anyhow!("console reader panicked"))?;
    eprintln!(
        "xtask vm-test: guest ran for {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(String::from_utf8_lossy(&console).into_owned())
}

fn check(console: &str, log: &Path) -> anyhow::Result<()> {
    let result = console
        .lines()
        .find_map(|line| line.trim_end_matches('\r').split_once(RESULT_MARKER))
        .map(|(_, json)| json.trim())
        .with_context(|| format!("no result line from the guest; see {}", log.display()))?;
    let report: serde_json::Value = serde_json::from_str(result)
        .with_context(|| format!("the guest's result is not JSON: {result}"))?;
    let kernel = report["kernel"].as_str().unwrap_or("?");
    let probes = report["probes"]
        .as_array()
        .context("no probes in the result")?;
    for signal in KPROBE_SIGNALS {
        let probe = probes
            .iter()
            .find(|probe| probe["signal"] == signal)
            .with_context(|| format!("no report for {signal}"))?;
        if probe["kind"] != "kprobe" || probe["outcome"] != "attached" {
            bail!("in the guest (kernel {kernel}) {signal} did not get its kprobe: {probe}");
        }
    }
    let exercise = &report["exercise"];
    let counted = |name: &str| exercise[name].as_u64().unwrap_or(0);
    for (caused, counted_name) in [
        ("opens_caused", "opens_counted"),
        ("fsyncs_caused", "fsyncs_counted"),
    ] {
        if counted(counted_name) < counted(caused) || counted(caused) == 0 {
            bail!("in the guest the kprobes counted too little: {exercise}");
        }
    }
    eprintln!(
        "xtask vm-test: kernel {kernel}: kprobes attached; {} opens caused, {} counted; {} fsyncs caused, {} counted",
        counted("opens_caused"),
        counted("opens_counted"),
        counted("fsyncs_caused"),
        counted("fsyncs_counted")
    );
    Ok(())
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
