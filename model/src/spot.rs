//! The streaming tail: DSPOT (Siffer et al., "Anomaly Detection in Streams with Extreme Value
//! Theory", KDD 2017), on top of [`crate::tail`]'s fit.
//!
//! [`crate::tail::pot_threshold`] fits the tail once. A daemon judges windows for weeks, and
//! the tail of its healthy scores moves: a node gets busier, a new service starts. SPOT keeps
//! the peaks set and refits the tail as windows judged normal arrive, so the threshold follows;
//! DSPOT first takes off a moving average of the last normal scores, so that a slow drift of
//! the whole level moves the threshold with it. Only windows judged normal update anything: a
//! window over the threshold (a fault, or a false alarm) never enters the peaks or the average,
//! so a fault is never learned as normal. What can still creep in is a change slower than the
//! average's depth that never crosses the threshold: that is what "drift" means here.
//!
//! The threshold extrapolates the fitted tail only as far as its peaks reach, past them as an
//! exponential ([`crate::tail::Gpd::quantile_excess_within`]), and a heavy fit over many peaks
//! is refitted over their median peak first ([`crate::tail::threshold_tail`]). Without these
//! the streaming tail ratchets: a heavy fitted shape puts the threshold far past anything
//! seen, every window under it is learned as healthy, the big ones fit a heavier tail, and the
//! threshold climbs again (soak 10: to 124.8; soak 12's hour replayed three times, with the
//! continuation alone: to 156 at one refresh, over every recorded fault).
//!
//! Memory is bounded: at most `max_peaks` peaks (the oldest go first, and the window count is
//! scaled down with them so the rate of peaks per window stays what it was) and `depth` scores.

use std::collections::VecDeque;

use crate::tail::{Gpd, MIN_PEAKS, ThresholdTail, decluster, threshold_tail};

/// Settings of a [`Spot`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpotOptions {
    /// Per-window probability of a false episode asked for.
    pub false_alarm: f64,
    /// Quantile of the initial scores the peaks are counted over.
    pub level_quantile: f64,
    /// Windows over the level closer than this are one episode (see [`decluster`]).
    pub episode_gap: usize,
    /// Normal scores the moving average (DSPOT's drift) is taken over; 0: plain SPOT.
    pub depth: usize,
    /// At most this many peaks are kept.
    pub max_peaks: usize,
}

/// An hour of 5 s windows: a drift slower than this moves the threshold; a change faster than
/// it has to cross the threshold first, and then it is judged, not learned.
pub const DEFAULT_DEPTH: usize = 720;
/// Peaks kept: at the 98th percentile and one episode per few windows over it, some days of
/// windows; 8 KB.
pub const DEFAULT_MAX_PEAKS: usize = 1000;

impl Default for SpotOptions {
    fn default() -> Self {
        Self {
            false_alarm: crate::model::DEFAULT_FALSE_ALARM_RATE,
            level_quantile: crate::model::TAIL_LEVEL_QUANTILE,
            episode_gap: crate::model::TAIL_EPISODE_GAP,
            depth: DEFAULT_DEPTH,
            max_peaks: DEFAULT_MAX_PEAKS,
        }
    }
}

/// The streaming threshold. Make it with [`Spot::initialize`], then give it every judged window
/// with [`Spot::observe`].
#[derive(Debug, Clone)]
pub struct Spot {
    options: SpotOptions,
    /// The level `t` excesses are counted over, in drift-free units (score - moving average).
    level: f64,
    /// Excesses over `level` of the episodes seen (declustered), oldest first.
    peaks: VecDeque<f64>,
    /// Normal windows behind `peaks` (scaled down when old peaks are dropped).
    windows: f64,
    /// The last normal scores, and their sum: the moving average.
    recent: VecDeque<f64>,
    sum: f64,
    /// The episode being built: its largest excess so far, and normal windows under the level
    /// since its last peak.
    episode: Option<f64>,
    below: usize,
    tail: ThresholdTail,
    /// In drift-free units: the threshold is `average + excess_threshold`.
    excess_threshold: f64,
    /// Peaks added and windows skipped as anomalous since the start.
    updates: usize,
    skipped: usize,
}

impl Spot {
    /// The initial fit over `scores` in time order (SPOT's calibration step); `None` when they
    /// hold too few episodes over the level to fit a tail (the caller keeps its conservative
    /// rule until they do).
    pub fn initialize(scores: &[f64], options: SpotOptions) -> Option<Self> {
        let scores: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
        if scores.is_empty() || !(options.false_alarm > 0.0 && options.false_alarm < 1.0) {
            return None;
        }
        // The drift-free start: the initial scores around their own mean, and the moving
        // average seeded with the last `depth` of them (the most recent level).
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        let centred: Vec<f64> = if options.depth == 0 {
            scores.clone()
        } else {
            scores.iter().map(|s| s - mean).collect()
        };
        let mut sorted = centred.clone();
        sorted.sort_by(f64::total_cmp);
        let index = ((options.level_quantile.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round()
            as usize)
            .min(sorted.len() - 1);
        let level = sorted[index];
        let mut peaks: VecDeque<f64> = decluster(&centred, level, options.episode_gap)
            .into_iter()
            .map(|p| p - level)
            .collect();
        let tail = threshold_tail(peaks.make_contiguous())?;
        let recent: VecDeque<f64> = scores[scores.len().saturating_sub(options.depth)..]
            .iter()
            .copied()
            .collect();
        let mut spot = Self {
            options,
            level,
            peaks,
            windows: scores.len() as f64,
            sum: recent.iter().sum(),
            recent,
            episode: None,
            below: 0,
            tail,
            excess_threshold: 0.0,
            updates: 0,
            skipped: 0,
        };
        spot.trim();
        spot.excess_threshold = spot.quantile()?;
        Some(spot)
    }

    /// The moving average the threshold is counted from (0 for plain SPOT).
    fn average(&self) -> f64 {
        if self.options.depth == 0 || self.recent.is_empty() {
            0.0
        } else {
            self.sum / self.recent.len() as f64
        }
    }

    /// The current threshold on scores.
    pub fn threshold(&self) -> f64 {
        self.average() + self.excess_threshold
    }

    /// The level peaks are counted over, in scores: a window over it is in the tail.
    pub fn level(&self) -> f64 {
        self.average() + self.level
    }

    /// Drops the episode being built (its windows turned out to be an incident's onset, the
    /// caller judged a later one anomalous): it never becomes a peak.
    pub fn forget_episode(&mut self) {
        self.episode = None;
        self.below = 0;
    }

    /// The excess over the drift-free level a healthy window passes with the asked probability.
    fn quantile(&self) -> Option<f64> {
        let value = self.level + self.tail.excess(self.options.false_alarm, self.windows);
        value.is_finite().then_some(value)
    }

    fn trim(&mut self) {
        while self.peaks.len() > self.options.max_peaks.max(MIN_PEAKS) {
            // Keep the rate of episodes per window: drop the windows the peak stood for.
            self.windows *= (self.peaks.len() - 1) as f64 / self.peaks.len() as f64;
            self.peaks.pop_front();
        }
    }

    /// One judged window's score. Returns whether it is over the threshold (then nothing is
    /// learned from it). Under it, it updates the average and, over the level, the peaks, and
    /// the tail is refitted when an episode closes.
    pub fn observe(&mut self, score: f64) -> bool {
        if !score.is_finite() {
            return false;
        }
        if score > self.threshold() {
            self.skipped += 1;
            return true;
        }
        self.learn(score);
        false
    }

    /// Learns `score` as a normal window's, whatever the threshold: for a caller whose own
    /// judgement (a conservative floor above this threshold) called the window normal.
    pub fn learn(&mut self, score: f64) {
        if !score.is_finite() {
            return;
        }
        let excess = score - self.average() - self.level;
        self.windows += 1.0;
        if excess > 0.0 {
            self.episode = Some(self.episode.map_or(excess, |e| e.max(excess)));
            self.below = 0;
        } else if let Some(peak) = self.episode {
            self.below += 1;
            if self.below >= self.options.episode_gap.max(1) {
                self.episode = None;
                self.add_peak(peak);
            }
        }
        if self.options.depth > 0 {
            self.recent.push_back(score);
            self.sum += score;
            if self.recent.len() > self.options.depth
                && let Some(old) = self.recent.pop_front()
            {
                self.sum -= old;
            }
        }
    }

    fn add_peak(&mut self, excess: f64) {
        self.peaks.push_back(excess);
        self.trim();
        self.updates += 1;
        if let Some(tail) = threshold_tail(self.peaks.make_contiguous()) {
            self.tail = tail;
        }
        if let Some(value) = self.quantile() {
            self.excess_threshold = value;
        }
    }

    /// Episodes in the peaks set.
    pub fn peaks(&self) -> usize {
        self.peaks.len()
    }

    /// Peaks added since the initial fit, and windows skipped as over the threshold.
    pub fn updates(&self) -> (usize, usize) {
        (self.updates, self.skipped)
    }

    /// The tail the threshold is extrapolated from (over the median peak when the fit over all
    /// of them was heavy, see [`threshold_tail`]).
    pub fn gpd(&self) -> Gpd {
        self.tail.gpd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Noise;

    /// Healthy-looking scores: a level plus the square root of a chi-squared with 8 degrees
    /// of freedom, scaled (a distance in 8 standardized dimensions).
    fn score(noise: &mut Noise, level: f64) -> f64 {
        level + (0..8).map(|_| noise.normal().powi(2)).sum::<f64>().sqrt()
    }

    fn options() -> SpotOptions {
        SpotOptions {
            false_alarm: 1e-3,
            depth: 500,
            ..SpotOptions::default()
        }
    }

    #[test]
    fn the_threshold_follows_a_slow_drift_of_the_level() {
        let mut noise = Noise::new(3);
        let initial: Vec<f64> = (0..5000).map(|_| score(&mut noise, 2.0)).collect();
        let mut spot = Spot::initialize(&initial, options()).expect("a tail");
        let start = spot.threshold();
        // The level climbs by 3 over 60,000 windows (three days of 5 s windows, slowly).
        let n = 60_000;
        let mut alarms_late = 0;
        for i in 0..n {
            let level = 2.0 + 3.0 * i as f64 / n as f64;
            let over = spot.observe(score(&mut noise, level));
            if i >= n - 20_000 && over {
                alarms_late += 1;
            }
        }
        let end = spot.threshold();
        assert!(
            (end - start - 3.0).abs() < 0.75,
            "the threshold moved {start:.2} → {end:.2}, the level by 3"
        );
        // The initial threshold would flag a share of the late windows; the followed one
        // stays near the rate asked for (episodes, counted as windows here: a few times 1e-3).
        let static_alarms = {
            let mut noise = Noise::new(4);
            (0..20_000)
                .filter(|_| score(&mut noise, 4.5) > start)
                .count()
        };
        assert!(
            alarms_late < 100 && static_alarms > 1000,
            "late alarms {alarms_late} (followed) vs {static_alarms} (static)"
        );
    }

    #[test]
    fn a_burst_of_fault_scores_does_not_raise_the_threshold() {
        let mut noise = Noise::new(5);
        let initial: Vec<f64> = (0..5000).map(|_| score(&mut noise, 2.0)).collect();
        let mut spot = Spot::initialize(&initial, options()).expect("a tail");
        for _ in 0..2000 {
            spot.observe(score(&mut noise, 2.0));
        }
        let before = spot.threshold();
        let (peaks, skipped) = (spot.peaks(), spot.updates().1);
        // A fault: 500 windows far over the threshold, each one flagged and learned from not
        // at all.
        for i in 0..500 {
            assert!(spot.observe(before * 3.0 + f64::from(i % 7)), "window {i}");
        }
        assert_eq!(spot.threshold(), before);
        assert_eq!(spot.peaks(), peaks);
        assert_eq!(spot.updates().1, skipped + 500);
        // Healthy again: still judged against the same bar, and it moves only with them.
        for _ in 0..1000 {
            spot.observe(score(&mut noise, 2.0));
        }
        assert!(
            (spot.threshold() - before).abs() < 0.15 * before,
            "{before} → {}",
            spot.threshold()
        );
    }

    #[test]
    fn too_few_scores_fit_no_tail_and_memory_is_bounded() {
        assert!(Spot::initialize(&[1.0; 50], options()).is_none());
        assert!(Spot::initialize(&[], options()).is_none());
        let mut noise = Noise::new(9);
        let initial: Vec<f64> = (0..5000).map(|_| score(&mut noise, 2.0)).collect();
        let mut spot = Spot::initialize(
            &initial,
            SpotOptions {
                max_peaks: 30,
                ..options()
            },
        )
        .unwrap();
        for _ in 0..20_000 {
            spot.observe(score(&mut noise, 2.0));
        }
        assert!(spot.peaks() <= 30);
        assert!(spot.recent.len() <= 500);
        // Dropping old peaks keeps the episode rate: the threshold stays sane.
        assert!(spot.threshold() > 2.0 && spot.threshold() < 12.0);
    }
}
