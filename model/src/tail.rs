//! Thresholds from the tail of the healthy scores: peaks over threshold (POT).
//!
//! A percentile of the training scores (today's rule) can only place a threshold inside the
//! scores it has seen: it says nothing of how often a healthy window scores beyond the largest
//! one, which is what a false alarm is. Extreme-value theory does: above a high enough level
//! `t`, the excesses `s - t` of almost any distribution follow a generalized Pareto
//! distribution (Pickands–Balkema–de Haan), so fitting one to them extrapolates the tail to
//! the probability asked for. This is SPOT's initial step (Siffer et al., "Anomaly Detection
//! in Streams with Extreme Value Theory", KDD 2017).
//!
//! Two things differ from the paper, both because window scores are not independent:
//! - Peaks are **declustered** first (runs declustering): consecutive windows over `t` are one
//!   episode, represented by its largest score. A fault, or a busy minute, is one episode, not
//!   a dozen peaks, and the probability asked for is then per window of an *episode starting*,
//!   which is what a person paged counts.
//! - The fit is the maximum-likelihood one (Grimshaw's reparametrisation, `θ = ξ/σ`, searched
//!   over a bounded grid and refined), with the probability-weighted-moments estimate as a
//!   fallback: no root finding that can miss on a small sample.

/// A fitted generalized Pareto tail: `P(S > t + y | S > t) = (1 + ξ y / σ)^(-1/ξ)`
/// (`exp(-y/σ)` for `ξ = 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gpd {
    /// Shape: > 0 heavy tail, 0 exponential, < 0 bounded (at `σ / -ξ`).
    pub shape: f64,
    /// Scale, > 0.
    pub scale: f64,
}

/// |ξ| below this is taken as the exponential limit (the formulas divide by ξ).
const EXPONENTIAL: f64 = 1e-9;

impl Gpd {
    /// The log-likelihood of excesses `ys` (all >= 0); `-inf` outside the support.
    pub fn log_likelihood(&self, ys: &[f64]) -> f64 {
        let (xi, sigma) = (self.shape, self.scale);
        if sigma.is_nan() || sigma <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let n = ys.len() as f64;
        if xi.abs() < EXPONENTIAL {
            return -n * sigma.ln() - ys.iter().sum::<f64>() / sigma;
        }
        let mut sum = 0.0;
        for &y in ys {
            let z = 1.0 + xi * y / sigma;
            if z <= 0.0 {
                return f64::NEG_INFINITY;
            }
            sum += z.ln();
        }
        -n * sigma.ln() - (1.0 / xi + 1.0) * sum
    }

    /// The excess `y` with `P(Y > y) = p` (0 < p <= 1).
    pub fn quantile_excess(&self, p: f64) -> f64 {
        let (xi, sigma) = (self.shape, self.scale);
        if xi.abs() < EXPONENTIAL {
            -sigma * p.ln()
        } else {
            sigma / xi * (p.powf(-xi) - 1.0)
        }
    }

    /// The excess `y` with `P(Y > y) = p`, trusting the fitted shape only as far as the peaks it
    /// was fitted to reach: down to `reach`, the probability of the rarest of them (`1 /
    /// peaks`). Past it, a heavy fitted tail (`ξ > 0`) is continued as an exponential with the
    /// fitted tail's own slope there (its hazard `1 / (σ + ξ y)` at `reach`); a light one
    /// (`ξ <= 0`) already falls faster than that and is kept.
    ///
    /// Why: the shape is the least certain of the fit's figures (its standard error is about
    /// `(1 + ξ) / sqrt(peaks)`, 0.17 from 90 peaks), and past the data the quantile grows as
    /// `p^-ξ`: a shape of +0.64 fitted to 93 peaks put the one-a-day score of a soak's node at
    /// 2.5 times the largest it had seen (BENCHMARKS.md, soak 10). Within the peaks the fit is
    /// what the data say; beyond them the exponential (Gumbel) tail is the one extreme-value
    /// practice falls back on when the shape cannot be told, and the only one that does not
    /// bet on the shape. There is no constant in this rule: `reach` is the data's own.
    pub fn quantile_excess_within(&self, p: f64, reach: f64) -> f64 {
        let fitted = self.quantile_excess(p);
        if !(p < reach && reach <= 1.0) || self.shape <= 0.0 {
            return fitted;
        }
        let at_reach = self.quantile_excess(reach);
        let continued = at_reach + (self.scale + self.shape * at_reach) * (reach / p).ln();
        fitted.min(continued)
    }

    /// `P(Y > y)` for an excess `y >= 0`.
    pub fn survival(&self, y: f64) -> f64 {
        let (xi, sigma) = (self.shape, self.scale);
        if xi.abs() < EXPONENTIAL {
            (-y / sigma).exp()
        } else {
            let z = 1.0 + xi * y / sigma;
            if z <= 0.0 { 0.0 } else { z.powf(-1.0 / xi) }
        }
    }
}

/// Probability-weighted-moments estimate (Hosking & Wallis 1987): closed form, valid for
/// `ξ < 1/2`, the start and the fallback of the likelihood fit.
fn pwm(sorted: &[f64]) -> Option<Gpd> {
    let n = sorted.len() as f64;
    let a0 = sorted.iter().sum::<f64>() / n;
    let a1 = sorted
        .iter()
        .enumerate()
        .map(|(i, y)| (1.0 - (i as f64 + 0.65) / n) * y)
        .sum::<f64>()
        / n;
    let d = a0 - 2.0 * a1;
    if !(d > 0.0 && a0 > 0.0) {
        return None;
    }
    let gpd = Gpd {
        shape: 2.0 - a0 / d,
        scale: 2.0 * a0 * a1 / d,
    };
    (gpd.scale > 0.0 && gpd.shape.is_finite()).then_some(gpd)
}

/// Grimshaw's profile: for `θ = ξ/σ`, the likelihood is maximised by `ξ = mean(ln(1 + θ y))`.
fn profile(theta: f64, ys: &[f64]) -> Option<(Gpd, f64)> {
    let n = ys.len() as f64;
    let gpd = if theta.abs() < EXPONENTIAL {
        Gpd {
            shape: 0.0,
            scale: ys.iter().sum::<f64>() / n,
        }
    } else {
        let mut sum = 0.0;
        for &y in ys {
            let z = 1.0 + theta * y;
            if z <= 0.0 {
                return None;
            }
            sum += z.ln();
        }
        let xi = sum / n;
        Gpd {
            shape: xi,
            scale: xi / theta,
        }
    };
    let ll = gpd.log_likelihood(ys);
    ll.is_finite().then_some((gpd, ll))
}

/// Maximum-likelihood fit of a GPD to excesses (all >= 0, at least [`MIN_PEAKS`]); `None`
/// when they carry no tail (all equal, or too few).
pub fn fit(excesses: &[f64]) -> Option<Gpd> {
    let mut ys: Vec<f64> = excesses
        .iter()
        .copied()
        .filter(|y| y.is_finite() && *y >= 0.0)
        .collect();
    if ys.len() < MIN_PEAKS {
        return None;
    }
    ys.sort_by(f64::total_cmp);
    let (mean, max) = (ys.iter().sum::<f64>() / ys.len() as f64, ys[ys.len() - 1]);
    if mean.is_nan() || mean <= 0.0 {
        return None;
    }
    // θ lives in (-1/max, ∞); its scale is 1/mean. Search a log-spaced grid on both sides of
    // 0 (and 0 itself), then refine around the best point by golden section.
    let mut candidates = vec![0.0];
    for k in 0..60 {
        let magnitude = 1e-3 * 1.25f64.powi(k) / mean;
        candidates.push(magnitude);
        if magnitude < 1.0 / max {
            candidates.push(-magnitude);
        }
    }
    candidates.push(-(1.0 - 1e-6) / max);
    let mut best: Option<(f64, Gpd, f64)> = None;
    for &theta in &candidates {
        if let Some((gpd, ll)) = profile(theta, &ys)
            && best.is_none_or(|(_, _, b)| ll > b)
        {
            best = Some((theta, gpd, ll));
        }
    }
    let (theta, mut gpd, ll) = best?;
    // Refine between the grid neighbours of the best θ.
    let neighbours: Vec<f64> = {
        let mut sorted = candidates.clone();
        sorted.sort_by(f64::total_cmp);
        let i = sorted.iter().position(|c| *c == theta).unwrap_or(0);
        vec![
            sorted[i.saturating_sub(1)],
            sorted[(i + 1).min(sorted.len() - 1)],
        ]
    };
    let (mut lo, mut hi) = (neighbours[0], neighbours[1]);
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let a = hi - golden * (hi - lo);
        let b = lo + golden * (hi - lo);
        let la = profile(a, &ys).map_or(f64::NEG_INFINITY, |p| p.1);
        let lb = profile(b, &ys).map_or(f64::NEG_INFINITY, |p| p.1);
        if la > lb { hi = b } else { lo = a }
    }
    if let Some((refined, refined_ll)) = profile((lo + hi) / 2.0, &ys)
        && refined_ll > ll
    {
        gpd = refined;
    }
    // A likelihood that prefers a shape far outside what scores can have (a bounded tail
    // ending at the largest peak, or an infinite mean) is a small sample talking: take the
    // moments' answer, which is steadier there.
    if !(-0.5..1.0).contains(&gpd.shape) {
        return pwm(&ys).or(Some(gpd));
    }
    Some(gpd)
}

/// The tail a threshold is extrapolated from (see [`threshold_tail`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdTail {
    /// The tail over `offset`.
    pub gpd: Gpd,
    /// Where the tail starts, as an excess over the level: 0, or the median peak's when the
    /// fit over all the peaks was heavy and the tail was refitted over it.
    pub offset: f64,
    /// Peaks over `offset`: how rare the tail's start is.
    pub peaks: usize,
    /// The heavy shape fitted over all the peaks, when the tail was refitted over their median.
    pub whole_shape: Option<f64>,
}

impl ThresholdTail {
    /// The excess over the level a healthy window passes with probability `false_alarm`, the
    /// peaks standing for `windows` windows (`offset` when the tail's start is rarer already).
    /// Past the rarest peak, a heavy tail goes on as an exponential
    /// ([`Gpd::quantile_excess_within`]).
    pub fn excess(&self, false_alarm: f64, windows: f64) -> f64 {
        let conditional = false_alarm * windows.max(1.0) / self.peaks.max(1) as f64;
        if conditional >= 1.0 {
            self.offset
        } else {
            self.offset
                + self
                    .gpd
                    .quantile_excess_within(conditional, 1.0 / self.peaks.max(1) as f64)
        }
    }
}

/// The tail a threshold is extrapolated from: [`fit`]'s over all the excesses, unless its shape
/// is heavy (`ξ > 0`) and there are peaks enough for a second fit over their median
/// ([`MIN_PEAKS`] over it) and that fit is lighter: then the fit over the median peak.
///
/// Why: the GPD holds over a level high enough, and a heavy shape over a low one is often the
/// peaks' mix: a node's common small excursions (at 1 s an idle node's scores take a few exact
/// values, and dozens of peaks share one) beside its rarer large ones (a build). The GPD reads
/// the mix as a heavy tail, and past the peaks even the exponential continuation goes on with
/// the heavy fit's slope: soak 12's hour replayed three times fitted 0.62 at one refresh and
/// the threshold went from 25 to 156, over every recorded fault (BENCHMARKS.md). Raising the
/// level, extreme-value practice's remedy, leaves the small excursions behind: over the median
/// peak a mix of exponentials fits as its widest one, while a tail that truly is heavy keeps
/// its shape (a GPD over a higher level is the same GPD). On generated scores with known tails
/// (`tests`): the rate stays within a few times the one asked for on exponential tails, on such
/// mixes (where the heavy shape extrapolated gave a hundredth of it) and on truly heavy ones
/// (where keeping the lighter of the two fits costs a little: 1.76 to 2.03 times the rate asked
/// at 6e-5, 4.46 to 5.23 at 1e-5). No constant: the median is the peaks' own, and
/// [`MIN_PEAKS`] is what any fit needs.
pub fn threshold_tail(excesses: &[f64]) -> Option<ThresholdTail> {
    let gpd = fit(excesses)?;
    let mut ys: Vec<f64> = excesses
        .iter()
        .copied()
        .filter(|y| y.is_finite() && *y >= 0.0)
        .collect();
    let whole = ThresholdTail {
        gpd,
        offset: 0.0,
        peaks: ys.len(),
        whole_shape: None,
    };
    if gpd.shape <= 0.0 || ys.len() < 2 * MIN_PEAKS {
        return Some(whole);
    }
    ys.sort_by(f64::total_cmp);
    let median = ys[ys.len() / 2];
    let over: Vec<f64> = ys
        .iter()
        .filter(|y| **y > median)
        .map(|y| y - median)
        .collect();
    // Too few over the median (many peaks share its value): no second fit, the whole one.
    let Some(upper) = fit(&over) else {
        return Some(whole);
    };
    // The refit is there to leave a mass of small excursions behind, the mass that made the
    // whole fit heavy; over it the tail is lighter. When it comes out heavier, the median
    // sat inside such a mass (at 1 s, dozens of peaks a hair apart: 25 of soak 12's 62 peaks
    // within 0.12 of 1.37 after a few hours), so the peaks over it are the mass's upper half
    // beside the large ones, the mix again: a shape of 0.6-0.9 where the whole fit said 0.25,
    // and a threshold of 80-100 over windows that scored at most 26. The whole fit is kept.
    if upper.shape >= gpd.shape {
        return Some(whole);
    }
    Some(ThresholdTail {
        gpd: upper,
        offset: median,
        peaks: over.len(),
        whole_shape: Some(gpd.shape),
    })
}

/// Fewer peaks than this fit no tail (SPOT's authors use some tens; so do we).
pub const MIN_PEAKS: usize = 20;

/// Indices of episode maxima: runs of consecutive values over `level` (gaps of at most
/// `run - 1` values under it still join a run), each represented by its largest value.
pub fn decluster(scores: &[f64], level: f64, run: usize) -> Vec<f64> {
    let mut peaks = Vec::new();
    let mut current: Option<f64> = None;
    let mut below = 0usize;
    for &score in scores {
        if score > level {
            current = Some(current.map_or(score, |c: f64| c.max(score)));
            below = 0;
        } else if let Some(peak) = current {
            below += 1;
            if below >= run.max(1) {
                peaks.push(peak);
                current = None;
            }
        }
    }
    if let Some(peak) = current {
        peaks.push(peak);
    }
    peaks
}

/// A threshold from the tail, and what it was made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TailThreshold {
    pub threshold: f64,
    /// The level the tail starts at: a high quantile of the scores, or the median peak over
    /// it when the fit over all the peaks was heavy ([`threshold_tail`]).
    pub level: f64,
    pub gpd: Gpd,
    /// Episodes (declustered peaks) over `level`, and windows seen.
    pub peaks: usize,
    pub windows: usize,
    /// The heavy shape fitted over the quantile's peaks, when the tail was refitted over
    /// their median.
    pub whole_shape: Option<f64>,
}

/// The score a healthy window exceeds with probability `false_alarm` (per window, of an
/// episode starting), from `scores` in time order: peaks over the `level_quantile` of the
/// scores, declustered with `run`, fitted with a GPD. `None` when the scores hold too few
/// episodes to fit a tail (the caller keeps a conservative rule until they do).
pub fn pot_threshold(
    scores: &[f64],
    false_alarm: f64,
    level_quantile: f64,
    run: usize,
) -> Option<TailThreshold> {
    let finite: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    if finite.is_empty() || !(false_alarm > 0.0 && false_alarm < 1.0) {
        return None;
    }
    let mut sorted = finite.clone();
    sorted.sort_by(f64::total_cmp);
    let index = ((level_quantile.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round() as usize)
        .min(sorted.len() - 1);
    let level = sorted[index];
    let peaks = decluster(&finite, level, run);
    let excesses: Vec<f64> = peaks.iter().map(|p| p - level).collect();
    let tail = threshold_tail(&excesses)?;
    let windows = finite.len();
    let threshold = level + tail.excess(false_alarm, windows as f64);
    threshold.is_finite().then_some(TailThreshold {
        threshold,
        level: level + tail.offset,
        gpd: tail.gpd,
        peaks: tail.peaks,
        windows,
        whole_shape: tail.whole_shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Noise;

    fn draw(gpd: Gpd, n: usize, seed: u64) -> Vec<f64> {
        let mut noise = Noise::new(seed);
        (0..n)
            .map(|_| gpd.quantile_excess(noise.uniform()))
            .collect()
    }

    #[test]
    fn the_fit_recovers_known_parameters() {
        for (shape, scale) in [(0.0, 1.0), (0.2, 2.0), (-0.2, 0.5), (0.4, 1.0)] {
            let truth = Gpd { shape, scale };
            let fitted = fit(&draw(truth, 5000, 7)).unwrap();
            assert!(
                (fitted.shape - shape).abs() < 0.06,
                "{truth:?} fitted as {fitted:?}"
            );
            assert!(
                (fitted.scale / scale - 1.0).abs() < 0.08,
                "{truth:?} fitted as {fitted:?}"
            );
        }
    }

    #[test]
    fn past_the_peaks_a_heavy_tail_goes_on_as_an_exponential() {
        let heavy = Gpd {
            shape: 0.6,
            scale: 0.7,
        };
        let reach = 1.0 / 90.0;
        // Within the peaks' reach, the fit as it is.
        for p in [0.5, 0.1, reach] {
            assert_eq!(
                heavy.quantile_excess_within(p, reach),
                heavy.quantile_excess(p)
            );
        }
        // Past it: continuous at the reach, under the heavy fit, and exponential (each factor
        // e rarer adds the same excess, the fitted tail's 1 / hazard at the reach).
        let at_reach = heavy.quantile_excess(reach);
        let step = heavy.scale + heavy.shape * at_reach;
        let just_past = heavy.quantile_excess_within(reach * (1.0 - 1e-9), reach);
        assert!(
            (just_past - at_reach).abs() < 1e-6,
            "{just_past} vs {at_reach}"
        );
        for k in 1..6 {
            let p = reach * (-(k as f64)).exp();
            let within = heavy.quantile_excess_within(p, reach);
            assert!((within - (at_reach + step * k as f64)).abs() < 1e-9);
            assert!(within < heavy.quantile_excess(p));
        }
        // A light or exponential tail falls at least as fast already: kept as fitted.
        for shape in [0.0, -0.3] {
            let light = Gpd { shape, scale: 2.0 };
            assert_eq!(
                light.quantile_excess_within(1e-6, reach),
                light.quantile_excess(1e-6)
            );
        }
    }

    /// The median peak and the excesses over it, as the refit's definition says: the tests'
    /// oracle, written apart from [`threshold_tail`] so that it can disagree with it.
    fn over_the_median(excesses: &[f64]) -> (f64, Vec<f64>) {
        let mut sorted = excesses.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let over = sorted
            .iter()
            .filter(|y| **y > median)
            .map(|y| y - median)
            .collect();
        (median, over)
    }

    #[test]
    fn a_heavy_fit_over_a_mix_is_refitted_over_the_median_peak() {
        // A node's excursions: many small ones (a few exact values, as 1 s windows of an idle
        // node give) and rarer large ones, an exponential of mean 8 (its quantiles, so the
        // figures are exact).
        let mut excesses: Vec<f64> = (0..40).map(|i| [0.1, 0.2, 0.4, 0.7][i % 4]).collect();
        excesses.extend((0..30).map(|i| -8.0 * (1.0 - (i as f64 + 0.5) / 30.0).ln()));
        let whole = fit(&excesses).expect("a fit");
        assert!(whole.shape > 0.3, "the mix reads as heavy: {whole:?}");
        let tail = threshold_tail(&excesses).expect("a tail");
        let (median, over) = over_the_median(&excesses);
        assert_eq!(tail.offset, median);
        assert_eq!(tail.peaks, over.len());
        assert_eq!(tail.whole_shape, Some(whole.shape));
        assert_eq!(tail.gpd, fit(&over).unwrap());
        // Over the median the large excursions alone: about exponential, of about their scale.
        assert!(tail.gpd.shape.abs() < 0.2, "{tail:?}");
        assert!((5.0..12.0).contains(&tail.gpd.scale), "{tail:?}");
        // The excess asked for: the median, then the refitted tail's quantile over it, far
        // under the heavy fit's.
        let (asked, windows) = (1e-4, 3000.0);
        let conditional = asked * windows / over.len() as f64;
        let expected = median
            + tail
                .gpd
                .quantile_excess_within(conditional, 1.0 / over.len() as f64);
        assert!((tail.excess(asked, windows) - expected).abs() < 1e-9);
        let heavy = whole.quantile_excess_within(asked * windows / 70.0, 1.0 / 70.0);
        assert!(
            tail.excess(asked, windows) < 0.7 * heavy,
            "{tail:?} {heavy}"
        );
        // A light fit is kept whole; so is a heavy one with too few peaks for a second fit.
        let light = draw(
            Gpd {
                shape: -0.2,
                scale: 2.0,
            },
            500,
            4,
        );
        let kept = threshold_tail(&light).expect("a tail");
        assert!(kept.gpd.shape <= 0.0, "{kept:?}");
        assert_eq!(
            (kept.offset, kept.peaks, kept.whole_shape),
            (0.0, 500, None)
        );
        assert_eq!(kept.gpd, fit(&light).unwrap());
        let few = &excesses[excesses.len() - 2 * MIN_PEAKS + 1..];
        let kept = threshold_tail(few).expect("a tail");
        assert_eq!((kept.offset, kept.whole_shape), (0.0, None));
        assert_eq!(kept.gpd, fit(few).unwrap());
    }

    #[test]
    fn a_refit_heavier_than_the_whole_fit_is_not_kept() {
        // Soak 12's peaks (excesses over the level, in drift-free units) at one refit after
        // three hours of its windows: a mass of 25 within 0.12 of 1.37, where the median falls,
        // beside the builds' large ones.
        let excesses = [
            0.0, 0.0, 0.01, 0.04, 0.06, 0.06, 0.3, 0.38, 0.38, 0.83, 0.93, 1.16, 1.16, 1.23, 1.3,
            1.31, 1.31, 1.31, 1.31, 1.31, 1.33, 1.33, 1.33, 1.33, 1.33, 1.33, 1.33, 1.35, 1.35,
            1.37, 1.37, 1.37, 1.38, 1.38, 1.39, 1.39, 1.39, 1.41, 1.42, 1.43, 1.43, 1.56, 1.73,
            2.02, 2.39, 2.41, 2.41, 2.42, 2.44, 2.44, 2.47, 2.55, 2.55, 2.89, 2.9, 3.23, 3.65,
            5.63, 11.54, 11.54, 11.54, 20.97,
        ];
        let whole = fit(&excesses).expect("a fit");
        assert!(whole.shape > 0.0, "heavy, so a refit is tried: {whole:?}");
        let (median, over) = over_the_median(&excesses);
        let refit = fit(&over).expect("enough peaks over the median");
        assert!(
            refit.shape > whole.shape + 0.2,
            "over the median the mass's upper half and the large ones: {refit:?} {whole:?}"
        );
        let tail = threshold_tail(&excesses).expect("a tail");
        assert_eq!(
            (tail.gpd, tail.offset, tail.peaks, tail.whole_shape),
            (whole, 0.0, excesses.len(), None)
        );
        // One a day at 1 s from 4096 windows: an excess of 25.1 where the refit sets 35.2.
        let (asked, windows) = (1.0 / 86_400.0, 4096.0);
        let refitted = ThresholdTail {
            gpd: refit,
            offset: median,
            peaks: over.len(),
            whole_shape: Some(whole.shape),
        };
        assert!(
            tail.excess(asked, windows) < 0.8 * refitted.excess(asked, windows),
            "{} against {}",
            tail.excess(asked, windows),
            refitted.excess(asked, windows)
        );
    }

    /// The threshold the fit over all the peaks extrapolated would set, for comparison.
    fn extrapolated(scores: &[f64], asked: f64) -> f64 {
        let mut sorted = scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        let level = sorted[(0.98 * (sorted.len() - 1) as f64).round() as usize];
        let excesses: Vec<f64> = decluster(scores, level, 1)
            .iter()
            .map(|p| p - level)
            .collect();
        let gpd = fit(&excesses).unwrap();
        level + gpd.quantile_excess(asked * scores.len() as f64 / excesses.len() as f64)
    }

    /// Median over 41 trainings of the true rate of the threshold over the one asked for, ours
    /// and the extrapolated one, on `n` scores drawn by `sample` whose survival is `survival`
    /// (exact, not sampled).
    fn median_ratios(
        sample: impl Fn(&mut Noise) -> f64,
        survival: impl Fn(f64) -> f64,
        n: usize,
        asked: f64,
    ) -> (f64, f64) {
        let (mut ours, mut heavy): (Vec<f64>, Vec<f64>) = (0..41)
            .map(|seed| {
                let mut noise = Noise::new(seed + 100);
                let scores: Vec<f64> = (0..n).map(|_| sample(&mut noise)).collect();
                let tail = pot_threshold(&scores, asked, 0.98, 1).unwrap();
                (
                    survival(tail.threshold) / asked,
                    survival(extrapolated(&scores, asked)) / asked,
                )
            })
            .unzip();
        ours.sort_by(f64::total_cmp);
        heavy.sort_by(f64::total_cmp);
        (ours[20], heavy[20])
    }

    fn exponential(noise: &mut Noise, mean: f64) -> f64 {
        -mean * (1.0 - noise.uniform()).ln()
    }

    /// Scores as an idle node's are: 90% quiet (0), 8% small excursions, 2% large ones
    /// (exponentials of mean 1 and 6), and their exact survival.
    fn mixed(noise: &mut Noise) -> f64 {
        let u = noise.uniform();
        if u < 0.9 {
            0.0
        } else if u < 0.98 {
            exponential(noise, 1.0)
        } else {
            exponential(noise, 6.0)
        }
    }

    fn mixed_survival(x: f64) -> f64 {
        0.08 * (-x).exp() + 0.02 * (-x / 6.0).exp()
    }

    /// What the refit is for: on tails our scores can have (exponential, and a mix of small and
    /// large excursions, also on a lattice of values as 1 s windows give), the rate stays within
    /// a few times the one asked, at one a day of 5 s windows from 3000 windows and of 1 s
    /// windows from 4096 (the learner's reservoir). The heavy shape the mix is fitted with over
    /// all the peaks, extrapolated, put the threshold where a hundredth of the asked rate
    /// passes: the climb. Measured when written, median rate over asked (ours, the whole fit
    /// extrapolated), 3000 windows then 4096: exponential 1.44 / 1.31 and 1.79 / 1.11, mixed
    /// 1.72 / 0.26 and 2.71 / 0.01, mixed on a lattice 2.65 / 1.25 and 4.13 / 0.44.
    #[test]
    fn on_tails_scores_can_have_the_rate_stays_near_the_one_asked_for() {
        let lattice = |x: f64| (x / 0.5).ceil() * 0.5;
        for (n, asked) in [(3000, 6e-5), (4096, 1.2e-5)] {
            let (ours, heavy) =
                median_ratios(|noise| exponential(noise, 1.0), |x| (-x).exp(), n, asked);
            eprintln!("exponential, {n} at {asked}: {ours:.2} (extrapolated {heavy:.2})");
            assert!((0.5..5.0).contains(&ours), "exponential: {ours}");
            let (ours, heavy) = median_ratios(mixed, mixed_survival, n, asked);
            eprintln!("mixed, {n} at {asked}: {ours:.2} (extrapolated {heavy:.2})");
            assert!((0.5..5.0).contains(&ours), "mixed: {ours}");
            assert!(
                heavy < 0.3,
                "the heavy extrapolation over-shoots the mix: {heavy}"
            );
            let (ours, heavy) = median_ratios(
                |noise| lattice(mixed(noise)),
                |x| mixed_survival((x / 0.5).floor() * 0.5),
                n,
                asked,
            );
            eprintln!("mixed on a lattice, {n} at {asked}: {ours:.2} (extrapolated {heavy:.2})");
            assert!((0.5..5.0).contains(&ours), "mixed on a lattice: {ours}");
        }
    }

    /// The price of not betting on a heavy fitted shape past the data (the exponential
    /// continuation past the rarest peak): on scores whose tail truly is that heavy (a GPD of
    /// shape 0.4 from 0, the Pareto latencies of the synthetic `heavy-tails` set), the
    /// threshold passes more often than asked. One training's fitted shape is 0.4 give or take
    /// 0.2, so the figure is the median over 41 trainings of 3000 windows (60 peaks, refitted
    /// over the median when heavy and the refit is lighter). Measured when written, median rate
    /// over asked (ours, the whole fit extrapolated): 1e-4 1.66 / 1.03, 6e-5 (one a day at 5 s)
    /// 2.03 / 1.13, 1e-5 (one a day at 1 s) 5.23 / 1.08 (1.44, 1.76 and 4.46 when a heavier
    /// refit was kept too).
    #[test]
    fn on_a_truly_heavy_tail_the_rate_is_a_small_multiple_of_the_one_asked_for() {
        let truth = Gpd {
            shape: 0.4,
            scale: 1.0,
        };
        for (asked, at_most) in [(1e-4, 2.5), (6e-5, 2.5), (1e-5, 6.0)] {
            let (ours, heavy) = median_ratios(
                |noise| truth.quantile_excess(1.0 - noise.uniform()),
                |x| truth.survival(x),
                3000,
                asked,
            );
            eprintln!("asked {asked}: median rate / asked {ours:.2} (extrapolated {heavy:.2})");
            assert!(
                ours >= heavy && ours > 1.0 && ours < at_most,
                "asked {asked}: median true rate {ours} times the one asked for \
                 (extrapolated {heavy})"
            );
        }
    }

    #[test]
    fn moments_and_likelihood_agree_on_an_exponential_tail() {
        let ys = {
            let mut ys = draw(
                Gpd {
                    shape: 0.0,
                    scale: 3.0,
                },
                4000,
                11,
            );
            ys.sort_by(f64::total_cmp);
            ys
        };
        let (by_moments, by_likelihood) = (pwm(&ys).unwrap(), fit(&ys).unwrap());
        assert!((by_moments.shape - by_likelihood.shape).abs() < 0.05);
        assert!((by_moments.scale / by_likelihood.scale - 1.0).abs() < 0.05);
    }

    #[test]
    fn too_few_or_flat_excesses_fit_nothing() {
        assert_eq!(fit(&[1.0; 5]), None);
        assert_eq!(fit(&[0.0; 100]), None);
        assert_eq!(fit(&[]), None);
    }

    #[test]
    fn runs_of_peaks_are_one_episode() {
        let scores = [0.0, 5.0, 7.0, 0.0, 6.0, 0.0, 0.0, 0.0, 9.0, 0.0];
        // One window under the level does not end an episode when `run` is 2.
        assert_eq!(decluster(&scores, 1.0, 2), vec![7.0, 9.0]);
        assert_eq!(decluster(&scores, 1.0, 1), vec![7.0, 6.0, 9.0]);
        assert_eq!(decluster(&scores, 1.0, 5), vec![9.0]);
    }

    /// Healthy scores: the square root of a chi-squared with 8 degrees of freedom (a distance
    /// to a centroid in 8 standardized dimensions), whose tail is lighter than exponential.
    fn healthy_scores(n: usize, seed: u64) -> Vec<f64> {
        let mut noise = Noise::new(seed);
        (0..n)
            .map(|_| (0..8).map(|_| noise.normal().powi(2)).sum::<f64>().sqrt())
            .collect()
    }

    #[test]
    fn the_false_alarm_rate_is_the_one_asked_for() {
        let train = healthy_scores(20_000, 1);
        let test = healthy_scores(400_000, 2);
        for asked in [1e-3, 1e-4] {
            let tail = pot_threshold(&train, asked, 0.98, 1).unwrap();
            let rate =
                test.iter().filter(|s| **s > tail.threshold).count() as f64 / test.len() as f64;
            // Within a factor of 2.5 of what was asked, on data it never saw; a percentile
            // cannot even express 1e-4 from 20,000 windows.
            assert!(
                rate > asked / 2.5 && rate < asked * 2.5,
                "asked {asked}, got {rate} (threshold {tail:?})"
            );
        }
    }
}
