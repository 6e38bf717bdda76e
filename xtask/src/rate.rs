//! A rate's honest interval: what a count of episodes over some hours does and does not show
//! (`cargo xtask soak` and `soak-replay` report it beside every rate).

/// The smallest rate λ (events per unit of exposure) with P(N ≤ k | λ·exposure) ≤ 0.05: the
/// one-sided 95% upper bound on a Poisson rate after `k` events.
pub fn poisson_upper_95(k: usize, exposure: f64) -> f64 {
    let cdf = |mean: f64| {
        let mut term = (-mean).exp();
        let mut sum = term;
        for i in 1..=k {
            term *= mean / i as f64;
            sum += term;
        }
        sum
    };
    let (mut lo, mut hi) = (0.0, k as f64 + 50.0);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) > 0.05 { lo = mid } else { hi = mid }
    }
    hi / exposure.max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poisson_bound_is_the_textbook_one() {
        // Zero events: -ln(0.05) = 3.00 per unit of exposure; one event: 4.74; five: 10.51.
        assert!((poisson_upper_95(0, 1.0) - 2.996).abs() < 0.01);
        assert!((poisson_upper_95(1, 1.0) - 4.744).abs() < 0.01);
        assert!((poisson_upper_95(5, 2.0) - 10.513 / 2.0).abs() < 0.01);
    }
}
