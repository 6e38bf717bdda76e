//! The drop list's two clocks: rules expire on CLOCK_BOOTTIME (the kernel's, which
//! suspend does not stop), people and the pins read wall-clock seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds of CLOCK_BOOTTIME, the clock of `bpf_ktime_get_boot_ns` (see
/// `Rule::expires_boot_ns` for why this clock).
pub(crate) fn boot_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_BOOTTIME exists since 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn boot_time_moves_forward() {
        let first = boot_ns();
        std::thread::sleep(Duration::from_millis(5));
        assert!(boot_ns() >= first + 5_000_000);
    }
}
