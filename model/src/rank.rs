//! A node's rank for schedulers: one number, 0–100, higher is healthier.
//!
//! The formula (also in the README):
//!
//! ```text
//! r    = score / threshold            (how far the last window is, in thresholds)
//! rank = band + 40 / (1 + r)          band = 60 for healthy, 0 for degraded
//! rank = 50                           learning, or any state we do not know
//! ```
//!
//! So a healthy node ranks 60–100 (100 when its window sits on a healthy centroid, 80 at the
//! threshold, 60 only for an infinite score), a degraded one 0–40, and a node still learning
//! its baseline gets the neutral 50: every degraded node ranks below every learning one, and every learning one below
//! every healthy one, whatever the scores. Within a band the rank falls as the score grows.
//!
//! Bad numbers never escape: a negative score counts as 0, an infinite or NaN score as
//! infinitely far (the bottom of the band), and a threshold that is not a positive finite
//! number (nothing to compare with) as `r = 1`, the middle of the band.

/// What a node we know nothing about ranks: learning, unknown to Prometheus, unreachable.
pub const NEUTRAL_RANK: f64 = 50.0;

/// Lowest rank of a healthy node (reached only by an infinite or NaN score).
pub const HEALTHY_FLOOR: f64 = 60.0;

/// Width of the healthy and the degraded bands.
const BAND: f64 = 40.0;

/// The rank of a node in `state` whose last window scored `score` against `threshold`.
pub fn rank(state: &str, score: f64, threshold: f64) -> f64 {
    let floor = match state {
        "healthy" => HEALTHY_FLOOR,
        "degraded" => 0.0,
        _ => return NEUTRAL_RANK,
    };
    floor + BAND / (1.0 + distance(score, threshold))
}

/// `score / threshold`, made total: 0 and up, possibly infinite, never NaN.
fn distance(score: f64, threshold: f64) -> f64 {
    if !(threshold.is_finite() && threshold > 0.0) {
        return 1.0;
    }
    if score.is_nan() {
        return f64::INFINITY;
    }
    score.max(0.0) / threshold
}

/// The kube-scheduler extender score for a rank: 0..=10 (`MaxExtenderPriority`).
pub fn extender_score(rank: f64) -> i64 {
    if rank.is_nan() {
        return (NEUTRAL_RANK / 10.0).round() as i64;
    }
    (rank.clamp(0.0, 100.0) / 10.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCORES: [f64; 9] = [0.0, 0.1, 0.5, 1.0, 2.0, 3.9, 4.0, 10.0, 1e6];

    #[test]
    fn rank_falls_as_the_score_grows_within_each_state() {
        for state in ["healthy", "degraded"] {
            let ranks: Vec<f64> = SCORES.iter().map(|&s| rank(state, s, 4.0)).collect();
            for pair in ranks.windows(2) {
                assert!(pair[0] > pair[1], "{state}: {ranks:?} is not decreasing");
            }
        }
        assert_eq!(rank("healthy", 0.0, 4.0), 100.0);
        assert_eq!(rank("healthy", 4.0, 4.0), 80.0);
        assert_eq!(rank("degraded", 4.0, 4.0), 20.0);
    }

    #[test]
    fn every_degraded_node_ranks_below_every_learning_and_healthy_one() {
        let worst_healthy = SCORES
            .iter()
            .map(|&s| rank("healthy", s, 4.0))
            .fold(f64::INFINITY, f64::min);
        let best_degraded = SCORES
            .iter()
            .map(|&s| rank("degraded", s, 4.0))
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(best_degraded <= 40.0, "{best_degraded}");
        assert!(best_degraded < NEUTRAL_RANK && NEUTRAL_RANK < worst_healthy);
        assert!(worst_healthy > HEALTHY_FLOOR, "{worst_healthy}");
        assert_eq!(rank("learning", 99.0, 1.0), NEUTRAL_RANK);
        assert_eq!(rank("something new", 0.0, 1.0), NEUTRAL_RANK);
    }

    #[test]
    fn bad_numbers_stay_in_bounds_and_in_their_band() {
        let odd = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        for state in ["healthy", "degraded", "learning"] {
            for &score in &odd {
                for &threshold in &odd {
                    let value = rank(state, score, threshold);
                    assert!(
                        (0.0..=100.0).contains(&value),
                        "{state} {score} {threshold}: {value}"
                    );
                    let band = match state {
                        "healthy" => HEALTHY_FLOOR..=100.0,
                        "degraded" => 0.0..=40.0,
                        _ => NEUTRAL_RANK..=NEUTRAL_RANK,
                    };
                    assert!(
                        band.contains(&value),
                        "{state} {score} {threshold}: {value}"
                    );
                }
            }
        }
        // No threshold to compare with: the middle of the band.
        assert_eq!(rank("healthy", 3.0, 0.0), 80.0);
        assert_eq!(rank("degraded", 3.0, f64::NAN), 20.0);
        // A score that is not a number is as far as it gets.
        assert_eq!(rank("healthy", f64::NAN, 4.0), HEALTHY_FLOOR);
    }

    #[test]
    fn extender_scores_span_zero_to_ten() {
        assert_eq!(extender_score(100.0), 10);
        assert_eq!(extender_score(0.0), 0);
        assert_eq!(extender_score(NEUTRAL_RANK), 5);
        assert_eq!(extender_score(84.9), 8);
        assert_eq!(extender_score(250.0), 10);
        assert_eq!(extender_score(-3.0), 0);
        assert_eq!(extender_score(f64::NAN), 5);
    }
}
