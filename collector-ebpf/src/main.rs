//! nodestate's kernel programs, built into one object the daemon embeds.
//!
//! The kernel side only counts: every program aggregates into per-CPU maps and hands user space
//! nothing per event except rare, bounded records through a ring buffer.
#![no_std]
#![no_main]

mod block;
mod cgroup;
mod system;
mod util;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called in a loaded program.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The architecture this object is for, as [`collector_common::EBPF_ARCH_MARKER`] describes.
/// Exported (`no_mangle`), so the linker keeps it although no program reads it.
#[unsafe(no_mangle)]
static EBPF_TARGET_ARCH: [u8; collector_common::EBPF_ARCH_MARKER_BYTES] = arch_marker();

#[cfg(bpf_target_arch = "x86_64")]
const ARCH: &[u8] = b"x86_64";
#[cfg(bpf_target_arch = "aarch64")]
const ARCH: &[u8] = b"aarch64";
#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
const ARCH: &[u8] = b"unknown";

const fn arch_marker() -> [u8; collector_common::EBPF_ARCH_MARKER_BYTES] {
    let prefix = collector_common::EBPF_ARCH_MARKER;
    let mut marker = [0u8; collector_common::EBPF_ARCH_MARKER_BYTES];
    let mut at = 0;
    while at < prefix.len() {
        marker[at] = prefix[at];
        at += 1;
    }
    let mut index = 0;
    // The last byte stays NUL.
    while index < ARCH.len() && at + 1 < marker.len() {
        marker[at] = ARCH[index];
        at += 1;
        index += 1;
    }
    marker
}
