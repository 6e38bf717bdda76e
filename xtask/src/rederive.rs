//! `cargo xtask rederive-drops`: brings the recorded windows of datasets/ to record schema 2,
//! whose `net_drops_per_s` leaves out the housekeeping drop reasons
//! (`collector_common::HOUSEKEEPING_DROP_REASONS`), so a recording says what today's daemon
//! would have said of the same window.
//!
//! A schema-1 window counted every `skb:kfree_skb`: its rate times its length is that count,
//! whole. Its own `net_drops_by_reason` says how many of them were housekeeping; the new rate is
//! the rest over the same length, computed as the daemon computes it (stopping at 0: the two
//! counts are read one after the other, see collector/src/window/system.rs). Only the two
//! values that change are rewritten in each line (`net_drops_per_s` and `schema`), so every
//! other byte stays as recorded; windows already at schema 2 are left alone, so a second run
//! changes nothing. The culprits files (what the shipped daemon said at the time) are not
//! recordings of windows and are not touched.

use std::path::Path;

use anyhow::{Context as _, bail};
use collector_common::try_housekeeping_drops;

/// The schema whose `net_drops_per_s` counted every drop.
const OLD_SCHEMA: u64 = 1;
/// The schema whose `net_drops_per_s` leaves the housekeeping reasons out.
const NEW_SCHEMA: u64 = 2;

/// Re-derives every `*.jsonl.gz` recording in `dir` (not `*.culprits.jsonl.gz`), printing per
/// file how many windows changed. Files with nothing to change are not rewritten.
pub fn rederive_drops(dir: &Path) -> anyhow::Result<()> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    paths.retain(|path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with(".jsonl.gz") && !name.ends_with(".culprits.jsonl.gz")
    });
    paths.sort();
    if paths.is_empty() {
        bail!("no recordings (*.jsonl.gz) in {}", dir.display());
    }
    for path in &paths {
        let text = crate::util::read_gz(path)?;
        let (rewritten, changed) =
            rederive_text(&text).with_context(|| format!("re-deriving {}", path.display()))?;
        if changed > 0 {
            crate::util::write_gz(path, rewritten.as_bytes())?;
        }
        println!(
            "{}: {changed} of {} windows re-derived",
            path.display(),
            text.lines().count()
        );
    }
    Ok(())
}

/// Every line of a recording re-derived; also how many changed.
fn rederive_text(text: &str) -> anyhow::Result<(String, usize)> {
    let mut out = String::with_capacity(text.len());
    let mut changed = 0;
    for (number, line) in text.lines().enumerate() {
        match rederive_line(line).with_context(|| format!("line {}", number + 1))? {
            Some(new) => {
                out.push_str(&new);
                changed += 1;
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok((out, changed))
}

/// One window at schema 2, or `None` when it already is (or is later: schema 3 changed
/// another field, its drops are schema 2's).
fn rederive_line(line: &str) -> anyhow::Result<Option<String>> {
    let window: serde_json::Value = serde_json::from_str(line).context("not a JSON object")?;
    let schema = window["schema"].as_u64().context("no integer `schema`")?;
    match schema {
        OLD_SCHEMA => {}
        newer if newer >= NEW_SCHEMA => return Ok(None),
        other => bail!("schema {other}: only {OLD_SCHEMA} is re-derived"),
    }
    let window_s = window["window_s"].as_f64().context("no `window_s`")?;
    let rate = window["net_drops_per_s"]
        .as_f64()
        .context("no `net_drops_per_s`")?;
    // Absent in records from before the reasons were counted: nothing known to leave out.
    let by_reason = window["net_drops_by_reason"].as_object();
    let housekeeping =
        try_housekeeping_drops(|reason| match by_reason.and_then(|r| r.get(reason)) {
            None => Ok(0),
            Some(count) => count
                .as_u64()
                .context("a drop count that is not a whole number"),
        })?;
    let drops = rate * window_s;
    if !(drops >= 0.0 && (drops - drops.round()).abs() < 1e-3) {
        bail!("net_drops_per_s {rate} x window_s {window_s} is not a whole count of drops");
    }
    let kept = (drops.round() as u64).saturating_sub(housekeeping);
    // As `collector::window::rate`: the count over the window, 0 for an empty window.
    let new_rate = if window_s > 0.0 {
        kept as f64 / window_s
    } else {
        0.0
    };
    let line = replace_value(line, "net_drops_per_s", &serde_json::to_string(&new_rate)?)?;
    let line = replace_value(&line, "schema", &NEW_SCHEMA.to_string())?;
    Ok(Some(line))
}

/// `line` with the number after the top-level key `"key":` replaced by `value`. The key must
/// appear once: a recording is compact JSON as `collector record` writes it.
fn replace_value(line: &str, key: &str, value: &str) -> anyhow::Result<String> {
    let pattern = format!("\"{key}\":");
    let mut found = line.match_indices(&pattern);
    let (Some((at, _)), None) = (found.next(), found.next()) else {
        bail!("`{pattern}` is not in the line exactly once");
    };
    let start = at + pattern.len();
    let end = line[start..]
        .find([',', '}'])
        .map(|offset| start + offset)
        .with_context(|| format!("no end to the value of `{key}`"))?;
    Ok(format!("{}{value}{}", &line[..start], &line[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(schema: u64, rate: &str, window_s: &str, reasons: &str) -> String {
        format!(
            "{{\"unix_ms\":1,\"window_s\":{window_s},\"schema\":{schema},\"net_rx_packets_per_s\":3.5,\
             \"net_drops_per_s\":{rate},\"tcp_retransmits_per_s\":0.0,\
             \"net_drops_by_reason\":{reasons},\"programs\":{{}}}}"
        )
    }

    #[test]
    fn housekeeping_reasons_leave_the_rate_and_nothing_else_moves() {
        // 100 drops in 2.5 s, 20 purged queues and 5 unread on closed Unix sockets.
        let old = window(
            1,
            "40.0",
            "2.5",
            r#"{"NO_SOCKET":70,"QUEUE_PURGE":20,"SOCKET_CLOSE":5,"TCP_CLOSE":5}"#,
        );
        let new = rederive_line(&old).unwrap().unwrap();
        assert_eq!(
            new,
            window(
                2,
                "30.0",
                "2.5",
                r#"{"NO_SOCKET":70,"QUEUE_PURGE":20,"SOCKET_CLOSE":5,"TCP_CLOSE":5}"#
            )
        );
        // Already re-derived: left alone, so a second run changes nothing.
        assert_eq!(rederive_line(&new).unwrap(), None);
        let (text, changed) = rederive_text(&format!("{old}\n{new}\n")).unwrap();
        assert_eq!(changed, 1);
        assert_eq!(text, format!("{new}\n{new}\n"));
        assert_eq!(rederive_text(&text).unwrap(), (text.clone(), 0));
    }

    #[test]
    fn the_rate_is_the_daemons_and_never_below_zero() {
        // A 1.999 s window with 7 drops, 3 of them purges: 4 / 1.999, as the daemon divides.
        let rate = serde_json::to_string(&(7.0 / 1.999)).unwrap();
        let new = rederive_line(&window(
            1,
            &rate,
            "1.999",
            r#"{"QUEUE_PURGE":3,"NOT_SPECIFIED":4}"#,
        ))
        .unwrap()
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&new).unwrap();
        assert_eq!(value["net_drops_per_s"].as_f64(), Some(4.0 / 1.999));
        // The reasons were read after the total: more purges than drops is 0, not negative.
        let new = rederive_line(&window(1, "5.0", "2.0", r#"{"QUEUE_PURGE":12}"#))
            .unwrap()
            .unwrap();
        assert!(new.contains("\"net_drops_per_s\":0.0,"), "{new}");
        // No reasons (a kernel without them): the count stays whole, only the schema moves.
        let new = rederive_line(&window(1, "5.0", "2.0", "{}"))
            .unwrap()
            .unwrap();
        assert_eq!(new, window(2, "5.0", "2.0", "{}"));
        // Schema 3 changed the exits, not the drops: left alone.
        assert_eq!(rederive_line(&window(3, "0.5", "1.0", "{}")).unwrap(), None);
    }

    #[test]
    fn what_it_cannot_read_is_an_error_not_a_guess() {
        assert!(rederive_line(&window(0, "1.0", "1.0", "{}")).is_err());
        assert!(rederive_line(&window(1, "0.3", "1.0", "{}")).is_err());
        assert!(rederive_line("{\"schema\":1}").is_err());
        assert!(rederive_line("not json").is_err());
        assert!(replace_value(r#"{"a":1,"b":{"a":2}}"#, "a", "3").is_err());
    }
}
