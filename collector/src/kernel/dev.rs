//! Block devices as the kernel's block tracepoints name them.

/// The kernel's internal `dev_t` (as block tracepoints report it) packs the minor number in the
/// low 20 bits (`MINORBITS`), unlike the userspace `dev_t` that `stat` returns.
pub fn split_kernel_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

/// The kernel's `dev_t` of `major:minor` (the inverse of [`split_kernel_dev`]).
pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & ((1 << 20) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_round_trips() {
        assert_eq!(split_kernel_dev(kernel_dev(254, 0)), (254, 0));
        assert_eq!(split_kernel_dev(kernel_dev(7, 1_048_575)), (7, 1_048_575));
        assert_eq!(kernel_dev(8, 1), (8 << 20) | 1);
    }
}
