//! `collector top`: per workload, per signal, the daemon's last window, like `top`. Reads a
//! daemon's `/workloads` (and `/state` for the culprits); without a terminal it prints one
//! snapshot and exits (for scripts and tests), with one it refreshes until interrupted.

use std::{io::IsTerminal as _, time::Duration};

use anyhow::Context as _;

use crate::{export::WorkloadsView, judge::culprits::Signal, output::OutputFormat};

/// What `collector top` was asked.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// The node's daemon, e.g. `http://127.0.0.1:9464`.
    pub node: String,
    /// The signal rows are sorted by, highest first.
    pub sort: Signal,
    pub output: OutputFormat,
    /// How often a terminal's view refreshes.
    pub interval: Duration,
    /// Rows shown (all with `None`).
    pub limit: Option<usize>,
}

/// The columns, in order: (signal, header, scale applied to the rate).
const COLUMNS: [(Signal, &str, f64); 10] = [
    (Signal::OncpuTime, "CPU%", 100.0),
    (Signal::IoIssued, "IO/s", 1.0),
    (Signal::Errors, "ERR/s", 1.0),
    (Signal::ExitsNonzero, "EXIT/s", 1.0),
    (Signal::FatalSignals, "SIG/s", 1.0),
    (Signal::OomVictims, "OOM/s", 1.0),
    (Signal::TcpFailures, "TCPF/s", 1.0),
    (Signal::RunqWait, "RUNQ%", 100.0),
    (Signal::IoLatency, "IOWAIT%", 100.0),
    (Signal::ReclaimStall, "RECL%", 100.0),
];

/// The daemon's last window, sorted.
pub fn read(options: &TopOptions) -> anyhow::Result<(WorkloadsView, Vec<String>)> {
    let timeout = Duration::from_secs(5);
    let body =
        cluster::promql::get_json(&options.node, "/workloads", timeout).with_context(|| {
            format!(
                "reading {}/workloads (a daemon that answers 503 has no per-workload window: \
             attribution is off there, or no window closed yet)",
                options.node
            )
        })?;
    let mut view: WorkloadsView = serde_json::from_value(body)
        .with_context(|| format!("{}/workloads is not a per-workload window", options.node))?;
    sort(&mut view, options.sort);
    if let Some(limit) = options.limit {
        view.workloads.truncate(limit);
    }
    // The culprits are extra: a daemon whose /state cannot be read still shows its table.
    let culprits = cluster::promql::get_json(&options.node, "/state", timeout)
        .ok()
        .and_then(|state| {
            state["culprits_text"].as_array().map(|list| {
                list.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    Ok((view, culprits))
}

/// Highest `signal` first; ties by name, so the order is stable between refreshes.
pub fn sort(view: &mut WorkloadsView, signal: Signal) {
    let rate =
        |row: &crate::export::WorkloadRow| row.rates.get(signal.as_str()).copied().unwrap_or(0.0);
    view.workloads.sort_by(|a, b| {
        rate(b)
            .total_cmp(&rate(a))
            .then_with(|| a.workload.name.cmp(&b.workload.name))
    });
}

/// The aligned text of one snapshot.
pub fn render(view: &WorkloadsView, culprits: &[String], sort: Signal) -> String {
    let mut out = format!(
        "node {}  state {}  window {:.1}s  workloads {}  sorted by {}\n",
        view.node,
        view.state,
        view.window_s,
        view.workloads.len(),
        sort.as_str()
    );
    for culprit in culprits {
        out.push_str(&format!("culprit: {culprit}\n"));
    }
    let cell = |rates: &std::collections::BTreeMap<String, f64>,
                (signal, _, scale): &(Signal, &str, f64)| {
        format!(
            "{:>8.1}",
            rates.get(signal.as_str()).copied().unwrap_or(0.0) * scale
        )
    };
    out.push_str(&format!("{:<48}", "WORKLOAD"));
    for (_, header, _) in &COLUMNS {
        out.push_str(&format!("{header:>8}"));
    }
    out.push('\n');
    let mut line = |name: &str, rates: &std::collections::BTreeMap<String, f64>| {
        let mut name = name.to_string();
        if name.chars().count() > 47 {
            name = format!("{}…", name.chars().take(46).collect::<String>());
        }
        out.push_str(&format!("{name:<48}"));
        for column in &COLUMNS {
            out.push_str(&cell(rates, column));
        }
        out.push('\n');
    };
    for row in &view.workloads {
        line(&row.workload.name, &row.rates);
    }
    if view.unattributed.values().any(|v| *v > 0.0) {
        line("(unattributed)", &view.unattributed);
    }
    if view.refused.values().any(|v| *v > 0.0) {
        line("(refused: table full)", &view.refused);
    }
    out
}

/// `collector top`.
pub fn run(options: &TopOptions) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    loop {
        let (view, culprits) = read(options)?;
        match options.output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string(&serde_json::json!({
                    "node": view.node,
                    "state": view.state,
                    "window_s": view.window_s,
                    "sort": options.sort.as_str(),
                    "culprits": culprits,
                    "workloads": view.workloads,
                    "unattributed": view.unattributed,
                    "refused": view.refused,
                }))?
            ),
            OutputFormat::Table => {
                if terminal {
                    // Clear the screen and go home, as top does.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&view, &culprits, options.sort));
            }
        }
        if !terminal {
            return Ok(());
        }
        std::thread::sleep(options.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{export::WorkloadRow, workload::Workload};

    fn row(name: &str, cpu: f64, io: f64) -> WorkloadRow {
        WorkloadRow {
            workload: Workload {
                namespace: String::new(),
                pod: String::new(),
                container: name.into(),
                name: name.into(),
            },
            cgroups: 1,
            rates: [
                ("oncpu_time".to_string(), cpu),
                ("io_issued".to_string(), io),
            ]
            .into(),
        }
    }

    #[test]
    fn rows_sort_by_the_chosen_signal_and_render_aligned() {
        let mut view = WorkloadsView {
            node: "n1".into(),
            window_s: 2.0,
            state: "degraded".into(),
            workloads: vec![
                row("web", 0.5, 10.0),
                row("db", 0.1, 900.0),
                row("cron", 0.0, 0.0),
            ],
            unattributed: [("io_issued".to_string(), 3.0)].into(),
            refused: Default::default(),
        };
        sort(&mut view, Signal::IoIssued);
        let order: Vec<&str> = view
            .workloads
            .iter()
            .map(|r| r.workload.name.as_str())
            .collect();
        assert_eq!(order, vec!["db", "web", "cron"]);
        sort(&mut view, Signal::OncpuTime);
        let order: Vec<&str> = view
            .workloads
            .iter()
            .map(|r| r.workload.name.as_str())
            .collect();
        assert_eq!(order, vec!["web", "db", "cron"]);
        let text = render(&view, &["90% of I/O issued: db".into()], Signal::OncpuTime);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "culprit: 90% of I/O issued: db");
        assert!(lines[2].starts_with("WORKLOAD"), "{text}");
        assert!(
            lines[3].starts_with("web ") && lines[3].contains("    50.0    10.0"),
            "{text}"
        );
        assert!(lines[6].starts_with("(unattributed)"), "{text}");
        assert_eq!(lines.len(), 7, "{text}");
    }
}
