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
