//! The kernel's per-program run-time statistics: when they are on (they cost every program
//! run two clock reads) and what each loaded program cost so far.

use tracing::warn;

use super::KernelCollector;

/// Per-program run-time statistics cost every program run two clock reads (~90 ns per run
/// measured on our VMs), so by default they are on for one window in
/// [`ProgramStatsMode::SAMPLE_EVERY`]: enough to see what each hook costs, at a twelfth of
/// the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgramStatsMode {
    Always,
    #[default]
    Sampled,
    Off,
}

impl ProgramStatsMode {
    pub const SAMPLE_EVERY: u64 = 12;

    /// Whether statistics should be on during window number `index` (0-based).
    pub fn on_in_window(self, index: u64) -> bool {
        match self {
            Self::Always => true,
            Self::Sampled => index.is_multiple_of(Self::SAMPLE_EVERY),
            Self::Off => false,
        }
    }
}

/// A loaded program's cost so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

impl KernelCollector {
    /// Turns the kernel's per-program run-time statistics on or off (they stay on while any
    /// process holds the file descriptor `BPF_ENABLE_STATS` returned).
    pub fn set_program_stats(&mut self, on: bool) {
        if on && self.stats.is_none() {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => self.stats = Some(fd),
                Err(err) => warn!("BPF run-time statistics unavailable: {err}"),
            }
        } else if !on {
            self.stats = None;
        }
    }

    pub fn program_stats_mode(&self) -> ProgramStatsMode {
        self.program_stats
    }

    pub fn program_stats_on(&self) -> bool {
        self.stats.is_some()
    }

    /// Run count and total run time (ns) of every loaded program, by name, as far as the
    /// kernel counted them (only while statistics were on).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let Some(ebpf) = &self.ebpf else {
            return Vec::new();
        };
        ebpf.programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats {
                    name: name.to_string(),
                    runs: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }
}

impl KernelCollector {
    /// Runs the kernel skipped, per loaded program, by name (`recursion_misses` in the
    /// program's fdinfo; counted whether statistics are on or not). A tracepoint program does
    /// not run while another tracepoint or kprobe program, of any process, runs on the same
    /// CPU, nor while a process reads or updates a map there through the `bpf` syscall: a
    /// block completion or a packet handled in an interrupt at that moment is not seen, and
    /// only this count says so. Programs whose fdinfo shows no such line (older kernels) are
    /// left out; kernels before 6.7 or so show the line but do not count tracepoint programs'
    /// skipped runs in it.
    pub fn program_runs_skipped(&self) -> Vec<(String, u64)> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let Some(ebpf) = &self.ebpf else {
            return Vec::new();
        };
        ebpf.programs()
            .filter_map(|(name, program)| {
                let fd = program.fd().ok()?.as_fd().as_raw_fd();
                let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
                Some((name.to_string(), parse_recursion_misses(&fdinfo)?))
            })
            .collect()
    }
}

/// The `recursion_misses:` line of a BPF program's fdinfo.
fn parse_recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo.lines().find_map(|line| {
        line.strip_prefix("recursion_misses:")
            .and_then(|value| value.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursion_misses_are_read_from_a_programs_fdinfo() {
        // As /proc/self/fdinfo shows a tracepoint program on 6.18.
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2081\nprog_type:\t5\n\
                      prog_jited:\t1\nprog_tag:\t3b185187f1855c4c\nmemlock:\t4096\n\
                      prog_id:\t23496\nrun_time_ns:\t0\nrun_cnt:\t902\n\
                      recursion_misses:\t3\nverified_insns:\t112\n";
        assert_eq!(parse_recursion_misses(fdinfo), Some(3));
        assert_eq!(parse_recursion_misses("prog_type:\t5\nrun_cnt:\t1\n"), None);
        assert_eq!(parse_recursion_misses("recursion_misses:\tlots\n"), None);
    }

    #[test]
    fn program_statistics_are_sampled_one_window_in_twelve() {
        let on: Vec<u64> = (0..36)
            .filter(|&index| ProgramStatsMode::Sampled.on_in_window(index))
            .collect();
        assert_eq!(on, vec![0, 12, 24]);
        assert!((0..36).all(|index| ProgramStatsMode::Always.on_in_window(index)));
        assert!(!(0..36).any(|index| ProgramStatsMode::Off.on_in_window(index)));
    }
}
