//! One boot's result (which hook every signal got, whether each caused event was counted) and
//! the table of all boots that goes into the README.

use std::path::Path;

use anyhow::Context as _;

use super::kernel::{Arch, Series};

const RESULT_MARKER: &str = "NODESTATE-VM-RESULT ";

/// The signals that have a kprobe and must get it inside the guest: Debian's kernels have
/// kprobes, so a tracepoint fallback there would mean the kprobe path is broken.
const KPROBE_SIGNALS: [&str; 2] = ["opens", "fsync"];

/// One boot of the matrix.
#[derive(Debug, Clone)]
pub struct Row {
    /// The guest's `uname -r`, or the series when it did not boot.
    pub kernel: String,
    pub arch: &'static str,
    /// "pass", or why not.
    pub result: String,
    /// (signal id, cell): the hook the signal got and whether what was caused was counted.
    pub cells: Vec<(String, String)>,
}

impl Row {
    pub fn not_run(series: Series, arch: Arch, why: String) -> Self {
        Self {
            kernel: series.name().to_string(),
            arch: arch.name(),
            result: why,
            cells: Vec::new(),
        }
    }

    pub fn failed(series: Series, arch: Arch, why: String) -> Self {
        Self::not_run(series, arch, format!("fail: {why}"))
    }

    pub fn passed(&self) -> bool {
        self.result == "pass"
    }
}

/// Reads the guest's result from its console and judges it.
pub fn check(
    series: Series,
    arch: Arch,
    package: &str,
    console: &str,
    log: &Path,
) -> anyhow::Result<Row> {
    let result = console
        .lines()
        .find_map(|line| line.trim_end_matches('\r').split_once(RESULT_MARKER))
        .map(|(_, json)| json.trim())
        .with_context(|| {
            format!(
                "no result line from the guest ({package}); see {}",
                log.display()
            )
        })?;
    if result.is_empty() {
        let why = console
            .lines()
            .skip_while(|line| !line.contains("NODESTATE-VM-EXIT"))
            .take(6)
            .collect::<Vec<_>>()
            .join(" | ");
        return Ok(Row::failed(
            series,
            arch,
            format!("the collector printed nothing: {why}"),
        ));
    }
    let report: serde_json::Value = serde_json::from_str(result)
        .with_context(|| format!("the guest's result is not JSON: {result}"))?;
    Ok(judge(arch, &report))
}

/// A row from the guest's `probes --exercise --output json` report.
fn judge(arch: Arch, report: &serde_json::Value) -> Row {
    let kernel = report["kernel"].as_str().unwrap_or("?").to_string();
    let empty = Vec::new();
    let probes = report["probes"].as_array().unwrap_or(&empty);
    let lines = report["exercise"]["lines"].as_array().unwrap_or(&empty);
    let mut problems = Vec::new();
    let mut cells = Vec::new();
    for probe in probes {
        let id = probe["id"].as_str().unwrap_or("?").to_string();
        let hook = match probe["outcome"].as_str().unwrap_or("?") {
            "attached" => probe["kind"].as_str().unwrap_or("?").to_string(),
            outcome if outcome.starts_with("disabled") => "off".to_string(),
            outcome if outcome.starts_with("missing") => "missing".to_string(),
            outcome => {
                problems.push(format!("{id} {outcome}"));
                "failed".to_string()
            }
        };
        if KPROBE_SIGNALS.contains(&id.as_str()) && hook != "kprobe" {
            problems.push(format!("{id} got {hook}, not its kprobe"));
        }
        let exercised: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|line| line["id"] == id.as_str())
            .collect();
        let cell = if exercised.is_empty() {
            hook
        } else {
            let missed: Vec<String> = exercised
                .iter()
                .filter(|line| line["result"] != "counted")
                .map(|line| {
                    format!(
                        "{} {}/{}",
                        line["what"].as_str().unwrap_or("?"),
                        line["counted"],
                        line["caused"]
                    )
                })
                .collect();
            if missed.is_empty() {
                format!("{hook}, counted")
            } else {
                problems.push(format!("{id}: {}", missed.join(", ")));
                format!("{hook}, NOT counted: {}", missed.join(", "))
            }
        };
        cells.push((id, cell));
    }
    if probes.is_empty() {
        problems.push("no probes in the report".to_string());
    }
    if lines.is_empty() {
        problems.push("no exercise in the report".to_string());
    }
    let result = if problems.is_empty() {
        "pass".to_string()
    } else {
        format!("fail: {}", problems.join("; "))
    };
    Row {
        kernel,
        arch: arch.name(),
        result,
        cells,
    }
}

/// A Markdown table with one column per boot and one row per signal.
pub fn table(rows: &[Row], date: &str) -> String {
    let mut out = format!(
        "Kernel matrix (`cargo xtask vm-test`, {date}): each boot loads \
         the whole program set and runs `collector probes --exercise` with a virtio disk. A \
         cell is the hook the signal got (`off`: turned off, as the per-cgroup signals are \
         when attribution is off) and, for the signals the exercise causes, whether every caused event was \
         counted.\n\n"
    );
    out.push_str("| signal |");
    for row in rows {
        out.push_str(&format!(" {} ({}) |", row.kernel, row.arch));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(rows.len()));
    out.push_str("\n| **result** |");
    for row in rows {
        out.push_str(&format!(" {} |", escape(&row.result)));
    }
    out.push('\n');
    let mut ids: Vec<&str> = Vec::new();
    for row in rows {
        for (id, _) in &row.cells {
            if !ids.contains(&id.as_str()) {
                ids.push(id);
            }
        }
    }
    for id in ids {
        out.push_str(&format!("| {id} |"));
        for row in rows {
            let cell = row
                .cells
                .iter()
                .find(|(cell_id, _)| cell_id == id)
                .map_or("", |(_, cell)| cell.as_str());
            out.push_str(&format!(" {} |", escape(cell)));
        }
        out.push('\n');
    }
    out
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(fsync_kind: &str, fsync_counted: u64) -> serde_json::Value {
        serde_json::json!({
            "kernel": "6.1.0-57-amd64",
            "probes": [
                {"id": "opens", "kind": "kprobe", "outcome": "attached"},
                {"id": "fsync", "kind": fsync_kind, "outcome": "attached"},
                {"id": "oom", "kind": "tracepoint", "outcome": "attached"},
                {"id": "block-submit", "kind": "none", "outcome": "disabled by configuration"},
            ],
            "exercise": {"lines": [
                {"id": "opens", "what": "file opens", "caused": 200, "counted": 204, "result": "counted"},
                {"id": "fsync", "what": "fsyncs", "caused": 20, "counted": fsync_counted,
                 "result": if fsync_counted >= 20 { "counted" } else { "not counted" }},
            ]},
        })
    }

    #[test]
    fn a_boot_passes_when_everything_caused_was_counted() {
        let row = judge(Arch::X86_64, &report("kprobe", 20));
        assert_eq!(row.result, "pass");
        assert_eq!(row.cells[0], ("opens".into(), "kprobe, counted".into()));
        assert_eq!(row.cells[2], ("oom".into(), "tracepoint".into()));
        assert_eq!(row.cells[3], ("block-submit".into(), "off".into()));
    }

    #[test]
    fn a_missed_count_or_a_lost_kprobe_fails_the_boot() {
        let row = judge(Arch::X86_64, &report("kprobe", 3));
        assert!(!row.passed());
        assert!(row.result.contains("fsyncs 3/20"), "{}", row.result);
        let row = judge(Arch::X86_64, &report("tracepoint", 20));
        assert!(
            row.result.contains("fsync got tracepoint"),
            "{}",
            row.result
        );
    }

    #[test]
    fn the_table_has_a_column_per_boot_and_a_row_per_signal() {
        let rows = [
            judge(Arch::X86_64, &report("kprobe", 20)),
            Row::not_run(Series::V6_1, Arch::Arm64, "not run: no arm64 build".into()),
        ];
        let table = table(&rows, "2026-12-04");
        assert!(
            table.contains("| signal | 6.1.0-57-amd64 (x86_64) | 6.1 (arm64) |"),
            "{table}"
        );
        assert!(
            table.contains("| **result** | pass | not run: no arm64 build |"),
            "{table}"
        );
        assert!(table.contains("| fsync | kprobe, counted |  |"), "{table}");
    }
}
