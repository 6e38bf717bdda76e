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

#[cfg(test)]
mod tests {
    use super::*;

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
