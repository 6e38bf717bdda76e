//! `collector rank`: a node's rank read from its daemon, once or as an OpenLava/LSF elim.
//! The formula itself is [`model::rank`].

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
    use model::rank::rank;

    use super::*;

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
