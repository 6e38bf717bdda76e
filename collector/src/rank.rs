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

/// One line of OpenLava's (and LSF's) external load information manager protocol: the number
/// of indices, then name/value pairs.
pub fn elim_line(rank: f64) -> String {
    format!("1 rank {rank:.1}")
}

/// How `collector rank` reads and prints.
#[derive(Debug, Clone)]
pub struct RankOptions {
    /// The node's daemon, e.g. `http://127.0.0.1:9464`.
    pub node: String,
    /// Print `1 rank <value>` lines forever (or `count` of them) instead of one value.
    pub elim: bool,
    pub interval: std::time::Duration,
    /// Lines to print in `elim` mode before exiting; `None`: forever.
    pub count: Option<u64>,
    /// What `elim` mode reports while the daemon cannot be read.
    pub unreachable_rank: f64,
    /// Print the daemon's whole `/rank` JSON (one-shot mode).
    pub json: bool,
}

/// A daemon's `/rank` answer and the rank in it. Only `rank` must be there: the other
/// fields are shown as they come (a NaN score is `null` in JSON).
struct Reading {
    body: serde_json::Value,
    rank: f64,
}

fn read_rank(node: &str, timeout: std::time::Duration) -> anyhow::Result<Reading> {
    let body = crate::promql::get_json(node, "/rank", timeout)?;
    let rank = body["rank"]
        .as_f64()
        .filter(|rank| (0.0..=100.0).contains(rank))
        .ok_or_else(|| anyhow::anyhow!("{node}/rank holds no rank from 0 to 100: {body}"))?;
    Ok(Reading { body, rank })
}

/// `collector rank`. One-shot: the rank (or JSON), an error if the node cannot be read.
/// `--elim`: one line per interval on stdout, flushed; a node that cannot be read reports
/// `unreachable_rank` (a warning on stderr when it goes and when it comes back), since LIM
/// expects a value every interval and an elim that exits is restarted and logged as broken.
/// Ends quietly when stdout closes (LIM went away).
pub fn run(options: &RankOptions) -> anyhow::Result<()> {
    use std::io::Write as _;
    let timeout = options.interval.clamp(
        std::time::Duration::from_secs(1),
        crate::detect::HTTP_TIMEOUT,
    );
    if !options.elim {
        let reading = read_rank(&options.node, crate::detect::HTTP_TIMEOUT)?;
        if options.json {
            println!("{}", serde_json::to_string(&reading.body)?);
        } else {
            println!("{:.1}", reading.rank);
        }
        return Ok(());
    }
    let mut failing = false;
    let mut printed = 0u64;
    loop {
        let started = std::time::Instant::now();
        let rank = match read_rank(&options.node, timeout) {
            Ok(reading) => {
                if failing {
                    tracing::info!(node = %options.node, "rank readable again");
                    failing = false;
                }
                reading.rank
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(
                        "cannot read the rank, reporting {} until it comes back: {err:#}",
                        options.unreachable_rank
                    );
                    failing = true;
                }
                options.unreachable_rank
            }
        };
        let mut out = std::io::stdout().lock();
        let written = writeln!(out, "{}", elim_line(rank)).and_then(|()| out.flush());
        drop(out);
        if let Err(err) = written {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(anyhow::Error::new(err).context("writing to stdout"));
        }
        printed += 1;
        if options.count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
        std::thread::sleep(options.interval.saturating_sub(started.elapsed()));
    }
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

    #[test]
    fn elim_lines_have_the_count_then_name_value_pairs() {
        assert_eq!(elim_line(42.0), "1 rank 42.0");
        assert_eq!(elim_line(87.349), "1 rank 87.3");
        let line = elim_line(rank("degraded", 8.0, 4.0));
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[0].parse::<usize>().unwrap() * 2, fields.len() - 1);
        assert_eq!(fields[1], "rank");
        assert!(fields[2].parse::<f64>().unwrap() < 40.0, "{line}");
    }
}
