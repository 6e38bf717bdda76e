//! `GET /`: one HTML page a person opens in a browser to see the node. No script at all: the
//! chart is an inline SVG drawn here, and a meta refresh reloads the page every window (at
//! least every 5 s).
//!
//! It shows the state and since when, the last hour's score against the threshold with the
//! degraded stretches shaded, the current window's top features, the probes table and the
//! XDP drop list's top rules.

use std::{fmt::Write as _, time::SystemTime};

use super::{ExporterState, HistoryPoint};

/// The chart's size in SVG user units (the browser scales it to the page's width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
/// The chart always spans this much time, ending now, so a young daemon's few points sit at
/// the right as they will stay.
const SPAN_MS: f64 = 3_600_000.0;

/// `text` with HTML's special characters escaped (feature, rule and interface names are ours
/// or the kernel's, but the node name comes from the environment).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The chart: degraded stretches as shaded rectangles, the threshold as a dashed path, the
/// score as a path (`id="score"`), over the hour ending at `now_ms`.
pub fn chart(history: &[HistoryPoint], now_ms: u64) -> String {
    let start_ms = now_ms as f64 - SPAN_MS;
    let top = history
        .iter()
        .flat_map(|point| [point.score, point.threshold])
        .filter(|value| value.is_finite())
        .fold(1.0_f64, f64::max)
        * 1.1;
    let x = |ms: u64| ((ms as f64 - start_ms) / SPAN_MS * WIDTH).clamp(0.0, WIDTH);
    let y = |value: f64| {
        let value = if value.is_finite() { value } else { top };
        HEIGHT - (value.clamp(0.0, top) / top * HEIGHT)
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="anomaly score and threshold, last hour"><rect width="{WIDTH}" height="{HEIGHT}" fill="#fafafa" stroke="#ccc"/>"##
    );
    // Each degraded judgement shades from its point to the next one (or to now).
    for (index, point) in history.iter().enumerate() {
        if point.degraded {
            let from = x(point.unix_ms);
            let to = history
                .get(index + 1)
                .map_or(x(now_ms), |next| x(next.unix_ms));
            let _ = write!(
                svg,
                r##"<rect class="degraded" x="{from:.1}" y="0" width="{:.1}" height="{HEIGHT}" fill="#f4b4b4"/>"##,
                (to - from).max(1.0)
            );
        }
    }
    let path = |value: fn(&HistoryPoint) -> f64| -> String {
        history
            .iter()
            .enumerate()
            .map(|(index, point)| {
                let command = if index == 0 { 'M' } else { 'L' };
                format!("{command}{:.1} {:.1}", x(point.unix_ms), y(value(point)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !history.is_empty() {
        let _ = write!(
            svg,
            r##"<path id="threshold" d="{}" fill="none" stroke="#d08000" stroke-width="1.5" stroke-dasharray="6 4"/><path id="score" d="{}" fill="none" stroke="#1f5fbf" stroke-width="2"/>"##,
            path(|point| point.threshold),
            path(|point| point.score),
        );
    }
    let _ = write!(
        svg,
        r##"<text x="4" y="14" font-size="12" fill="#555">{top:.1}</text><text x="4" y="{:.0}" font-size="12" fill="#555">0</text><text x="{:.0}" y="{:.0}" font-size="12" fill="#555" text-anchor="end">now</text><text x="4" y="{:.0}" font-size="12" fill="#555" dx="20">-60 min</text></svg>"##,
        HEIGHT - 4.0,
        WIDTH - 4.0,
        HEIGHT - 4.0,
        HEIGHT - 4.0,
    );
    svg
}

/// The whole page, from the exporter's state, refreshing itself every `refresh_s` seconds.
pub fn render(state: &ExporterState, refresh_s: u64) -> String {
    let now = SystemTime::now();
    let health = &state.health;
    let age_s = health.since_instant.elapsed().as_secs();
    let age = humantime::format_duration(std::time::Duration::from_secs(age_s));
    let node = escape(&state.node);
    let state_name = health.state.as_str();
    let mut html = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nodestate: {node} is {state_name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 60em; }}
h1 {{ font-size: 1.4em; }}
.state {{ padding: 0.1em 0.5em; border-radius: 0.3em; color: #fff; }}
.healthy {{ background: #2e7d32; }} .degraded {{ background: #c62828; }} .learning {{ background: #757575; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.2em 0.8em; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.legend span {{ margin-right: 1.5em; }}
</style></head>
<body>
<h1>{node}: <span id="state" class="state {state_name}">{state_name}</span></h1>
<p id="since">since {since} ({age} ago), {transitions} changes since the daemon started.
Score <b>{score:.2}</b>, threshold {threshold:.2}, rank {rank:.0}.</p>
"#,
        since = escape(&health.since),
        transitions = health.transitions,
        score = health.score,
        threshold = health.threshold,
        rank = health.rank(),
    );
    if let Some(model) = &state.model {
        let _ = writeln!(
            html,
            "<p>Model: {} version {}, trained {}, {} clusters.</p>",
            escape(&model.source),
            escape(&model.version),
            escape(&model.trained_at),
            model.k
        );
    }
    let history: Vec<HistoryPoint> = state.history.iter().copied().collect();
    let _ = writeln!(
        html,
        "<h2>Score, last hour</h2>\n{}\n<p class=\"legend\"><span style=\"color:#1f5fbf\">&#9644; score</span><span style=\"color:#d08000\">- - threshold</span><span style=\"background:#f4b4b4\">&nbsp;degraded&nbsp;</span> {} windows</p>",
        chart(&history, unix_ms(now)),
        history.len()
    );
    html.push_str(
        "<h2>Top features of the last window</h2>\n<table id=\"features\"><tr><th>feature</th><th>z-distance</th></tr>\n",
    );
    for (feature, z) in &health.explanation {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"n\">{z:+.2}</td></tr>",
            escape(feature)
        );
    }
    if health.explanation.is_empty() {
        html.push_str(
            "<tr><td colspan=\"2\">none (nothing stands out, or still learning)</td></tr>\n",
        );
    }
    html.push_str("</table>\n");
    // The workloads behind the top features, while the node is degraded.
    html.push_str(
        "<h2>Culprits</h2>\n<table id=\"culprits\"><tr><th>workload</th><th>share</th><th>of</th></tr>\n",
    );
    for blame in &state.culprits.culprits {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"n\">{:.0}%</td><td>{}</td></tr>",
            escape(&blame.workload.name),
            blame.share * 100.0,
            escape(blame.signal.describe())
        );
    }
    if state.culprits.culprits.is_empty() {
        html.push_str(
            "<tr><td colspan=\"3\">none (named only while the node is degraded, when a workload stands out)</td></tr>\n",
        );
    }
    html.push_str("</table>\n");
    html.push_str(
        "<h2>Probes</h2>\n<table id=\"probes\"><tr><th>signal</th><th>hook</th><th>outcome</th></tr>\n",
    );
    for (id, signal, kind, outcome) in &state.probes {
        let _ = writeln!(
            html,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(id),
            escape(signal),
            escape(kind),
            escape(outcome)
        );
    }
    html.push_str("</table>\n<h2>XDP drop list</h2>\n");
    match &state.xdp {
        None => html.push_str("<p id=\"xdp\">not attached (see --xdp-iface)</p>\n"),
        Some(xdp) => {
            let interfaces: Vec<String> = state
                .xdp_interfaces
                .iter()
                .map(|(interface, mode)| format!("{} ({})", escape(interface), escape(mode)))
                .collect();
            let _ = writeln!(
                html,
                "<p id=\"xdp\">{} rules ({} automatic) on {}; {} packets dropped, {} passed.</p>",
                xdp.rules,
                xdp.automatic_rules,
                interfaces.join(", "),
                xdp.totals.dropped,
                xdp.totals.passed
            );
            html.push_str(
                "<table id=\"rules\"><tr><th>rule</th><th>packets dropped</th><th>bytes dropped</th></tr>\n",
            );
            for (rule, packets, bytes) in &xdp.top {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td class=\"n\">{packets}</td><td class=\"n\">{bytes}</td></tr>",
                    escape(rule)
                );
            }
            let _ = writeln!(
                html,
                "<tr><td>other rules</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n</table>",
                xdp.other_packets, xdp.other_bytes
            );
        }
    }
    html.push_str(
        "<p><a href=\"/metrics\">/metrics</a> · <a href=\"/state\">/state</a> · <a href=\"/rank\">/rank</a> · <a href=\"/readyz\">/readyz</a></p>\n</body></html>\n",
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(unix_ms: u64, score: f64, degraded: bool) -> HistoryPoint {
        HistoryPoint {
            unix_ms,
            score,
            threshold: 4.0,
            degraded,
        }
    }

    #[test]
    fn the_chart_draws_the_score_and_shades_degraded_stretches() {
        let now = 10_000_000;
        let history = [
            point(now - 3_600_000, 1.0, false),
            point(now - 1_800_000, 8.0, true),
            point(now - 900_000, 9.0, true),
            point(now, 2.0, false),
        ];
        let svg = chart(&history, now);
        // The score's path starts at the left edge and ends at the right; 9.9 is the top.
        assert!(
            svg.contains(r#"<path id="score" d="M0.0 179.8 L360.0 38.4 L540.0 18.2 L720.0 159.6""#),
            "{svg}"
        );
        // Two degraded judgements: from 30 min ago to 15 min ago, then to now.
        assert_eq!(svg.matches(r#"class="degraded""#).count(), 2, "{svg}");
        assert!(svg.contains(r#"x="360.0" y="0" width="180.0""#), "{svg}");
        assert!(!chart(&[], now).contains("<path"), "no points, no path");
    }

    #[test]
    fn the_page_escapes_names_and_shows_the_state() {
        let mut state = ExporterState::new("<node&1>".into());
        state.set_health(&crate::judge::Verdict {
            state: crate::judge::NodeState::Degraded,
            score: 9.0,
            threshold: 4.0,
            cluster: None,
            explanation: vec![("proc_exits_nonzero_per_s".into(), 6.5)],
            anomalous: true,
        });
        let page = render(&state, 5);
        assert!(page.contains("&lt;node&amp;1&gt;"), "{page}");
        assert!(!page.contains("<node&1>"), "{page}");
        assert!(
            page.contains(r#"<span id="state" class="state degraded">degraded</span>"#),
            "{page}"
        );
        assert!(page.contains(r#"<meta http-equiv="refresh" content="5">"#));
        assert!(page.contains("proc_exits_nonzero_per_s</td><td class=\"n\">+6.50"));
        assert!(page.contains(r#"<path id="score" d="M"#), "{page}");
        assert!(page.contains("not attached"), "{page}");
        assert!(
            page.contains("<td colspan=\"3\">none"),
            "no culprit yet: {page}"
        );

        // A named culprit is shown with its share, its name escaped.
        state.culprits = crate::judge::culprits::Attribution {
            culprits: vec![crate::judge::culprits::Blame {
                workload: crate::workload::Workload {
                    namespace: "shop".into(),
                    pod: "db-0".into(),
                    container: "postgres".into(),
                    name: "shop/db-0 (<postgres>)".into(),
                },
                signal: crate::judge::culprits::Signal::ALL[0],
                share: 0.87,
                rate: 1.0,
                baseline: 0.1,
            }],
            victims: Vec::new(),
        };
        let page = render(&state, 5);
        let row = format!(
            "<tr><td>shop/db-0 (&lt;postgres&gt;)</td><td class=\"n\">87%</td><td>{}</td></tr>",
            crate::judge::culprits::Signal::ALL[0].describe()
        );
        assert!(page.contains(&row), "{page}");
    }
}
