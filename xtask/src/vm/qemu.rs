//! Booting a guest under qemu with software emulation (TCG: `/dev/kvm` here cannot boot a stock
//! kernel, and arm64 needs emulation anyway) and reading its serial console.

use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::kernel::Arch;

/// Emulated arm64 is several times slower than emulated x86; both boot in well under this.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// Size of the guest's scratch disk (sparse; the exercise only reads it).
pub const DISK_BYTES: u64 = 16 << 20;

/// Boots `kernel` with `initramfs` and `disk` as its virtio disk; returns the console output
/// once the guest powers off.
pub fn boot(arch: Arch, kernel: &Path, initramfs: &Path, disk: &Path) -> anyhow::Result<String> {
    let (program, machine, console, drive): (&str, &[&str], &str, Vec<String>) = match arch {
        Arch::X86_64 => (
            "qemu-system-x86_64",
            &[],
            "ttyS0",
            vec![
                "-drive".into(),
                format!("file={},if=virtio,format=raw", disk.display()),
            ],
        ),
        // `virt` with virtio over MMIO (the module `virtio_mmio`): no PCI set-up needed.
        Arch::Arm64 => (
            "qemu-system-aarch64",
            &["-M", "virt", "-cpu", "max"],
            "ttyAMA0",
            vec![
                "-drive".into(),
                format!("file={},if=none,format=raw,id=disk0", disk.display()),
                "-device".into(),
                "virtio-blk-device,drive=disk0".into(),
            ],
        ),
    };
    let mut qemu = Command::new(program)
        .args(machine)
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
        .args([
            "-append",
            &format!("console={console} panic=-1 rdinit=/init quiet"),
        ])
        .args(&drive)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "starting {program} (the {} package)",
                match arch {
                    Arch::X86_64 => "qemu-system-x86",
                    Arch::Arm64 => "qemu-system-arm",
                }
            )
        })?;
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
