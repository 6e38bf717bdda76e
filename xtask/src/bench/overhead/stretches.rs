//! The stretches of a workload's run and what is measured from them: which configuration
//! runs beside the workload in each round, and each configured stretch's rate against the
//! stretches without the collector on either side of it.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};

use super::workload::{Slice, rate_between};
use crate::bench::block::median;

/// What runs beside the workload during a stretch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Config {
    Without,
    /// Only the empty program on `sys_exit`.
    Floor,
    /// `collector run` with every hook on all the time (`--hook-budget 0`).
    AlwaysOn,
    /// `collector run` as it ships (5 s windows).
    Default,
    /// `collector run --window 1s`: five times the sampler's cycles.
    OneSecondWindows,
    /// `collector run --cgroup-attribution off`: as shipped but for the per-cgroup counting
    /// (its paths pruned at load), so the attribution's own share is the difference.
    AttributionOff,
}

/// The configurations other than the shipped one, one of them per round in turn.
const OTHERS: [Config; 4] = [
    Config::Floor,
    Config::AlwaysOn,
    Config::OneSecondWindows,
    Config::AttributionOff,
];

/// The configurations of round `round`, in order; a stretch without the collector follows
/// each.
pub(super) fn round_configs(round: usize) -> [Config; 3] {
    [
        Config::Default,
        OTHERS[round % OTHERS.len()],
        Config::Default,
    ]
}

/// A counted stretch of the workload's run: `from`..`to`, ms since the epoch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stretch {
    pub(super) config: Config,
    pub(super) from: f64,
    pub(super) to: f64,
}

/// Rates of the stretches without the collector, and each configuration's ratios (keyed by
/// `Config as usize`).
pub(super) type Ratios = (Vec<f64>, BTreeMap<usize, Vec<f64>>);

/// Each configured stretch's rate as a ratio to the mean of the stretches without on either
/// side of it (which cancels the host's drift between them), grouped by configuration in
/// the order of [`Config`]; and the rates without.
pub(super) fn sandwiched_ratios(stretches: &[Stretch], slices: &[Slice]) -> anyhow::Result<Ratios> {
    let rates: Vec<f64> = stretches
        .iter()
        .map(|stretch| {
            rate_between(slices, stretch.from, stretch.to).with_context(|| {
                format!(
                    "the workload reported nothing between {} and {} ms",
                    stretch.from, stretch.to
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut without = Vec::new();
    let mut ratios: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (i, stretch) in stretches.iter().enumerate() {
        if stretch.config == Config::Without {
            without.push(rates[i]);
            continue;
        }
        let neighbours = [i.checked_sub(1), Some(i + 1)].map(|j| {
            j.filter(|&j| {
                stretches
                    .get(j)
                    .is_some_and(|s| s.config == Config::Without)
            })
        });
        let [Some(before), Some(after)] = neighbours else {
            bail!(
                "stretch {i} ({:?}) has no stretch without on both sides",
                stretch.config
            );
        };
        ratios
            .entry(stretch.config as usize)
            .or_default()
            .push(rates[i] / ((rates[before] + rates[after]) / 2.0));
    }
    Ok((without, ratios))
}

/// The median of `ratios` and their range.
pub(super) fn summary(ratios: &[f64]) -> (f64, f64, f64) {
    let (low, high) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &r| {
            (l.min(r), h.max(r))
        });
    (median(ratios), low, high)
}

/// A 95% confidence interval for the median of `ratios`, free of any assumption about their
/// distribution: the order statistics the binomial distribution (normal approximation) puts
/// either side of the median.
pub(super) fn median_interval(ratios: &[f64]) -> (f64, f64) {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let half_width = 1.96 * n.sqrt() / 2.0;
    let lower = ((n / 2.0 - half_width).round() as usize).clamp(1, sorted.len());
    let upper = ((n / 2.0 + 1.0 + half_width).round() as usize).clamp(1, sorted.len());
    (sorted[lower - 1], sorted[upper - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::overhead::workload::tests::slice;

    #[test]
    fn the_median_interval_is_the_order_statistics_either_side() {
        // Shuffled, so the function must sort.
        let twelve: Vec<f64> = (1..=12).rev().map(f64::from).collect();
        assert_eq!(median_interval(&twelve), (3.0, 10.0));
        let thirty: Vec<f64> = (1..=30).map(|i| f64::from((i * 7) % 31)).collect();
        assert_eq!(median_interval(&thirty), (10.0, 21.0));
        assert_eq!(median_interval(&[0.9]), (0.9, 0.9));
    }
    #[test]
    fn each_stretch_is_measured_against_the_stretches_without_either_side() {
        // Without runs at 100, then 120 (the host sped up), then 80; the configured
        // stretches ran at 99 both: 0.9 and 0.99 of their neighbours' means.
        let rates = [100.0, 99.0, 120.0, 99.0, 80.0];
        let configs = [
            Config::Without,
            Config::Default,
            Config::Without,
            Config::Floor,
            Config::Without,
        ];
        let slices: Vec<Slice> = rates
            .iter()
            .enumerate()
            .map(|(i, rate)| slice((i as f64 + 1.0) * 100.0, rate / 10.0))
            .collect();
        let stretches: Vec<Stretch> = configs
            .iter()
            .enumerate()
            .map(|(i, &config)| Stretch {
                config,
                from: i as f64 * 100.0,
                to: (i as f64 + 1.0) * 100.0,
            })
            .collect();
        let (without, ratios) = sandwiched_ratios(&stretches, &slices).expect("ratios");
        assert_eq!(without.len(), 3);
        let close = |got: &[f64], want: f64| got.len() == 1 && (got[0] - want).abs() < 1e-9;
        assert!(
            close(&ratios[&(Config::Default as usize)], 0.9),
            "{ratios:?}"
        );
        assert!(
            close(&ratios[&(Config::Floor as usize)], 0.99),
            "{ratios:?}"
        );
        // A configured stretch with no stretch without after it is a bench bug, not a ratio.
        assert!(sandwiched_ratios(&stretches[..2], &slices).is_err());
    }
}
