//! Fleet training data: the windows of many nodes, read back from the Prometheus that scrapes
//! their daemons.
//!
//! Each daemon exports its last window's numeric fields as `nodestate_feature{feature="…"}`
//! (the same top-level fields `model train` reads from `collector record` files): the default
//! set the judged ones (what the built-in model is made of), `--metrics full` every one, so a
//! fleet that scrapes the default set trains a model of the judged features. A
//! `query_range` over `--since` at one `--step` gives, per node and per step, one value per
//! feature: that is one window row. Rows that lack a feature (a scrape missed, a daemon
//! starting) are dropped and counted; features some node never reports are left out for all
//! and named, as for training files with different columns.
//!
//! The step should be the daemons' window: shorter repeats windows, longer skips some. By
//! default it is the largest `window_s` the selected daemons report, to the nearest 100 ms.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use model::{ModelError, input::Table};

/// Why fleet training's windows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Prometheus could not be asked, refused the query, or answered something else.
    #[error("Prometheus {url}: {message}")]
    Prometheus { url: String, message: String },
    /// What was read does not make a training table.
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub type Result<T> = std::result::Result<T, FleetError>;

/// Prometheus refuses a range query of more than 11,000 points per series: ask in chunks.
const MAX_POINTS_PER_QUERY: u64 = 10_000;
/// …and one that loads more than `--query.max-samples` (50 million by default) at once: a
/// large fleet is read in chunks of a fifth of that.
const MAX_SAMPLES_PER_QUERY: u64 = 10_000_000;

/// Where and what to read.
#[derive(Debug, Clone)]
pub struct FleetQuery {
    /// Base URL, e.g. `http://prometheus:9090`.
    pub prometheus: String,
    /// PromQL label matchers added to `nodestate_feature{…}`, e.g. `node=~"pool-a.*"`.
    pub selector: Option<String>,
    /// How far back from `end`.
    pub since: Duration,
    /// `None`: the daemons' window (`window_s`).
    pub step: Option<Duration>,
    pub end: SystemTime,
    /// The label that names the node (the daemon sets `node`).
    pub node_label: String,
    pub timeout: Duration,
}

impl FleetQuery {
    pub fn new(prometheus: &str, since: Duration) -> Self {
        Self {
            prometheus: prometheus.trim_end_matches('/').to_string(),
            selector: None,
            since,
            step: None,
            end: SystemTime::now(),
            node_label: "node".into(),
            timeout: Duration::from_secs(30),
        }
    }

    fn series_selector(&self, extra: &str) -> String {
        format!(
            "nodestate_feature{}",
            label_matchers(self.selector.as_deref(), extra)
        )
    }
}

/// Per node: windows kept and rows dropped as incomplete.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeCount {
    pub windows: usize,
    pub incomplete: usize,
}

/// The windows read, as a training table, with what was kept and dropped.
#[derive(Debug, Clone)]
pub struct FleetWindows {
    pub table: Table,
    /// The rows as window records (`timestamp`, `node`, features): what `--save-windows`
    /// writes, and what `model train --input` reads back into the same table.
    pub records: Vec<serde_json::Value>,
    pub nodes: BTreeMap<String, NodeCount>,
    /// Features not reported by every node, left out.
    pub dropped_features: Vec<String>,
    /// Samples for a (node, time, feature) already seen (two scrape jobs of one node).
    pub duplicate_samples: usize,
    /// Series without the node label, not used.
    pub unlabelled_series: usize,
    pub step: Duration,
}

impl FleetWindows {
    /// The per-node table `model train` prints before the model's summary.
    pub fn summary(&self, source: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "windows from {source} (step {}): {} from {} nodes, {} features",
            humantime::format_duration(self.step),
            self.table.len(),
            self.nodes.len(),
            self.table.columns.len()
        );
        let width = self.nodes.keys().map(String::len).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "  {:width$}  {:>8}  {:>10}",
            "node", "windows", "incomplete"
        );
        for (node, count) in &self.nodes {
            let _ = writeln!(
                out,
                "  {node:width$}  {:>8}  {:>10}",
                count.windows, count.incomplete
            );
        }
        if !self.dropped_features.is_empty() {
            let _ = writeln!(
                out,
                "  features left out (not reported by every node): {}",
                self.dropped_features.join(", ")
            );
        }
        if self.duplicate_samples > 0 || self.unlabelled_series > 0 {
            let _ = writeln!(
                out,
                "  ignored: {} duplicate samples (one node scraped twice), {} series without a \
                 node label",
                self.duplicate_samples, self.unlabelled_series
            );
        }
        out
    }
}

fn prometheus_error(url: &str, message: impl Into<String>) -> FleetError {
    FleetError::Prometheus {
        url: url.to_string(),
        message: message.into(),
    }
}

fn get(query: &FleetQuery, path: &str, params: &[(&str, String)]) -> Result<serde_json::Value> {
    let url = format!("{}{path}", query.prometheus);
    let body = crate::promql::api_get(&url, params, query.timeout).map_err(|err| {
        prometheus_error(
            &url,
            match err {
                crate::promql::ApiGetError::Call(err) => err.to_string(),
                crate::promql::ApiGetError::Token(err) => format!("{err:#}"),
                crate::promql::ApiGetError::NotJson { status, source } => {
                    format!("answered {status} without JSON: {source}")
                }
            },
        )
    })?;
    if body["status"] != "success" {
        return Err(prometheus_error(
            &url,
            format!(
                "refused {}: {} {}",
                params
                    .iter()
                    .find(|(n, _)| *n == "query")
                    .map_or("", |(_, q)| q.as_str()),
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("(no message)")
            ),
        ));
    }
    Ok(body)
}

fn epoch_s(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The value of an instant query's first series at `query.end`, if there is one.
fn instant_value(query: &FleetQuery, promql: &str) -> Result<Option<f64>> {
    let body = get(
        query,
        "/api/v1/query",
        &[
            ("query", promql.to_string()),
            ("time", format!("{:.3}", epoch_s(query.end))),
        ],
    )?;
    Ok(body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite()))
}

fn nothing_found(query: &FleetQuery, promql: &str) -> FleetError {
    prometheus_error(
        &query.prometheus,
        format!(
            "no daemon windows in the last {}: {promql} is empty (does this Prometheus scrape \
             the daemons? are they nodestate 0.2 or later, which serves `nodestate_feature` \
             in every metric set? does --selector match?)",
            humantime::format_duration(query.since)
        ),
    )
}

/// The step when none is given: the largest window the selected daemons report.
fn default_step(query: &FleetQuery) -> Result<Duration> {
    let promql = format!(
        "max(last_over_time({}[{}s]))",
        query.series_selector(r#"feature="window_s""#),
        query.since.as_secs().max(1)
    );
    match instant_value(query, &promql)?.filter(|w| *w > 0.0) {
        // window_s is the window's measured length (1.0008 or 0.9995 for a 1 s window): the
        // step is the configured one, to the nearest 100 ms.
        Some(window) => Ok(Duration::from_millis(
            ((window * 10.0).round() as u64).max(1) * 100,
        )),
        None => Err(nothing_found(query, &promql)),
    }
}

/// Steps per range query: at most [`MAX_POINTS_PER_QUERY`], and few enough that all series
/// together stay under [`MAX_SAMPLES_PER_QUERY`].
fn steps_per_query(series: f64) -> u64 {
    let fit = (MAX_SAMPLES_PER_QUERY as f64 / series.max(1.0)).floor() as u64;
    fit.clamp(1, MAX_POINTS_PER_QUERY)
}

/// Reads the windows of every selected node over `query.since`.
pub fn fetch(query: &FleetQuery) -> Result<FleetWindows> {
    if query.since.is_zero() {
        return Err(prometheus_error(
            &query.prometheus,
            "--since must be more than 0s",
        ));
    }
    let step = match query.step {
        Some(step) if step < Duration::from_millis(1) => {
            return Err(prometheus_error(
                &query.prometheus,
                "--step must be at least 1ms",
            ));
        }
        Some(step) => step,
        None => default_step(query)?,
    };
    let counting = format!(
        "count(last_over_time({}[{}s]))",
        query.series_selector(""),
        query.since.as_secs().max(1)
    );
    let series = instant_value(query, &counting)?.ok_or_else(|| nothing_found(query, &counting))?;
    let end = epoch_s(query.end);
    let start = end - query.since.as_secs_f64();
    let step_s = step.as_secs_f64();
    let chunk_s = step_s * steps_per_query(series) as f64;
    let promql = query.series_selector("");
    let mut bodies = Vec::new();
    let mut chunk_start = start;
    while chunk_start <= end {
        // Chunks start on the step grid and do not overlap.
        let chunk_end = (chunk_start + chunk_s - step_s).min(end);
        bodies.push(get(
            query,
            "/api/v1/query_range",
            &[
                ("query", promql.clone()),
                ("start", format!("{chunk_start:.3}")),
                ("end", format!("{chunk_end:.3}")),
                ("step", format!("{step_s}")),
            ],
        )?);
        chunk_start += chunk_s;
    }
    let mut windows = windows_from_query_range(&bodies, &query.node_label, &query.prometheus)?;
    windows.step = step;
    Ok(windows)
}

/// Turns `query_range` answers (matrices of `nodestate_feature` series) into window rows.
pub fn windows_from_query_range(
    bodies: &[serde_json::Value],
    node_label: &str,
    source: &str,
) -> Result<FleetWindows> {
    // (node, time in ms) → feature → value.
    let mut cells: BTreeMap<(String, i64), BTreeMap<String, f64>> = BTreeMap::new();
    let mut node_features: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut duplicate_samples = 0;
    let mut unlabelled_series = 0;
    for body in bodies {
        if body["data"]["resultType"] != "matrix" {
            return Err(prometheus_error(
                source,
                format!("expected a matrix, got {}", body["data"]["resultType"]),
            ));
        }
        for series in body["data"]["result"].as_array().into_iter().flatten() {
            let metric = &series["metric"];
            let (Some(node), Some(feature)) =
                (metric[node_label].as_str(), metric["feature"].as_str())
            else {
                unlabelled_series += 1;
                continue;
            };
            node_features
                .entry(node.to_string())
                .or_default()
                .insert(feature.to_string());
            for point in series["values"].as_array().into_iter().flatten() {
                let (Some(time), Some(value)) = (
                    point[0].as_f64(),
                    point[1].as_str().and_then(|v| v.parse::<f64>().ok()),
                ) else {
                    return Err(prometheus_error(
                        source,
                        format!("a malformed point {point}"),
                    ));
                };
                let row = cells
                    .entry((node.to_string(), (time * 1000.0).round() as i64))
                    .or_default();
                if !value.is_finite() {
                    // NaN or ±Inf: the row will lack this feature and count as incomplete.
                    continue;
                }
                if row.insert(feature.to_string(), value).is_some() {
                    duplicate_samples += 1;
                }
            }
        }
    }
    let all: BTreeSet<&String> = node_features.values().flatten().collect();
    let columns: Vec<String> = all
        .iter()
        .filter(|f| node_features.values().all(|own| own.contains(**f)))
        .map(|f| (*f).clone())
        .collect();
    let dropped_features: Vec<String> = all
        .into_iter()
        .filter(|f| !columns.contains(f))
        .cloned()
        .collect();
    let mut nodes: BTreeMap<String, NodeCount> = node_features
        .keys()
        .map(|node| (node.clone(), NodeCount::default()))
        .collect();
    let mut records = Vec::new();
    for ((node, time_ms), values) in cells {
        let count = nodes.entry(node.clone()).or_default();
        if !columns.iter().all(|c| values.contains_key(c)) {
            count.incomplete += 1;
            continue;
        }
        count.windows += 1;
        let mut record = serde_json::Map::new();
        record.insert(
            "timestamp".into(),
            serde_json::json!(time_ms as f64 / 1000.0),
        );
        record.insert("node".into(), serde_json::json!(node));
        for column in &columns {
            record.insert(column.clone(), serde_json::json!(values[column]));
        }
        records.push(serde_json::Value::Object(record));
    }
    if records.is_empty() {
        return Err(ModelError::Empty {
            path: PathBuf::from(source),
            what: format!(
                "no complete window rows ({} nodes, {} incomplete rows)",
                nodes.len(),
                nodes.values().map(|c| c.incomplete).sum::<usize>()
            ),
        }
        .into());
    }
    let mut table = Table::from_records(&records)?;
    let rows = table.len();
    table.files = vec![(PathBuf::from(source), 0..rows)];
    Ok(FleetWindows {
        table,
        records,
        nodes,
        dropped_features,
        duplicate_samples,
        unlabelled_series,
        step: Duration::ZERO,
    })
}

/// `{extra,selector}` for a PromQL series selector: `selector` is a user's matchers with or
/// without their braces, `extra` ours; empty when there is neither.
pub fn label_matchers(selector: Option<&str>, extra: &str) -> String {
    let own = selector
        .map(|s| {
            s.trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim()
        })
        .filter(|s| !s.is_empty());
    match (own, extra.is_empty()) {
        (Some(own), true) => format!("{{{own}}}"),
        (Some(own), false) => format!("{{{extra},{own}}}"),
        (None, false) => format!("{{{extra}}}"),
        (None, true) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `query_range` answer as Prometheus 2.42 gives it for `nodestate_feature` of two
    /// daemons scraped every second (values shortened to three features).
    const RECORDED: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
      {"metric":{"__name__":"nodestate_feature","feature":"cpu_busy_share","instance":"127.0.0.1:40001","job":"nodestate","node":"pool-a-1"},
       "values":[[1764600000,"0.12"],[1764600001,"0.14"],[1764600002,"0.13"]]},
      {"metric":{"__name__":"nodestate_feature","feature":"proc_exits_per_s","instance":"127.0.0.1:40001","job":"nodestate","node":"pool-a-1"},
       "values":[[1764600000,"3"],[1764600002,"5"]]},
      {"metric":{"__name__":"nodestate_feature","feature":"window_s","instance":"127.0.0.1:40001","job":"nodestate","node":"pool-a-1"},
       "values":[[1764600000,"1"],[1764600001,"1"],[1764600002,"1"]]},
      {"metric":{"__name__":"nodestate_feature","feature":"cpu_busy_share","instance":"127.0.0.1:40002","job":"nodestate","node":"pool-a-2"},
       "values":[[1764600001,"0.5"],[1764600002,"0.55"]]},
      {"metric":{"__name__":"nodestate_feature","feature":"proc_exits_per_s","instance":"127.0.0.1:40002","job":"nodestate","node":"pool-a-2"},
       "values":[[1764600001,"7"],[1764600002,"NaN"]]},
      {"metric":{"__name__":"nodestate_feature","feature":"window_s","instance":"127.0.0.1:40002","job":"nodestate","node":"pool-a-2"},
       "values":[[1764600001,"1"],[1764600002,"1"]]},
      {"metric":{"__name__":"nodestate_feature","feature":"tcp_resets_per_s","instance":"127.0.0.1:40002","job":"nodestate","node":"pool-a-2"},
       "values":[[1764600001,"0"],[1764600002,"0"]]},
      {"metric":{"__name__":"nodestate_feature","feature":"cpu_busy_share","job":"other"},
       "values":[[1764600001,"0.9"]]}
    ]}}"#;

    #[test]
    fn a_recorded_range_answer_becomes_one_row_per_node_and_step() {
        let body: serde_json::Value = serde_json::from_str(RECORDED).unwrap();
        let windows = windows_from_query_range(&[body], "node", "http://prom:9090").unwrap();
        // pool-a-1 lacks proc_exits at 1764600001; pool-a-2's is NaN at 1764600002.
        assert_eq!(
            windows.nodes["pool-a-1"],
            NodeCount {
                windows: 2,
                incomplete: 1
            }
        );
        assert_eq!(
            windows.nodes["pool-a-2"],
            NodeCount {
                windows: 1,
                incomplete: 1
            }
        );
        // window_s is bookkeeping, not a feature; tcp_resets is only on one node.
        assert_eq!(
            windows.table.columns,
            ["cpu_busy_share", "proc_exits_per_s"]
        );
        assert_eq!(windows.dropped_features, ["tcp_resets_per_s"]);
        assert_eq!(windows.unlabelled_series, 1);
        assert_eq!(windows.table.len(), 3);
        assert_eq!(windows.table.row(0), [0.12, 3.0]);
        assert_eq!(windows.table.timestamps[0], Some(1_764_600_000.0));
        assert_eq!(windows.table.row(2), [0.5, 7.0]);
        assert_eq!(windows.records[2]["node"], "pool-a-2");
        let summary = windows.summary("http://prom:9090");
        assert!(summary.contains("3 from 2 nodes"), "{summary}");
        assert!(summary.contains("tcp_resets_per_s"), "{summary}");
    }

    #[test]
    fn saved_records_read_back_into_the_same_table() {
        let body: serde_json::Value = serde_json::from_str(RECORDED).unwrap();
        let windows = windows_from_query_range(&[body], "node", "x").unwrap();
        let again = Table::from_records(&windows.records).unwrap();
        assert_eq!(again.columns, windows.table.columns);
        assert_eq!(again.values, windows.table.values);
        assert_eq!(again.timestamps, windows.table.timestamps);
    }

    #[test]
    fn no_series_and_wrong_shapes_are_clear_errors() {
        let empty =
            serde_json::json!({"status":"success","data":{"resultType":"matrix","result":[]}});
        let err = windows_from_query_range(&[empty], "node", "http://prom:9090").unwrap_err();
        assert!(err.to_string().contains("no complete window rows"), "{err}");
        let vector =
            serde_json::json!({"status":"success","data":{"resultType":"vector","result":[]}});
        let err = windows_from_query_range(&[vector], "node", "p").unwrap_err();
        assert!(err.to_string().contains("expected a matrix"), "{err}");
    }

    #[test]
    fn the_selector_joins_the_feature_matcher() {
        let mut query = FleetQuery::new("http://p:9090/", Duration::from_secs(60));
        assert_eq!(query.prometheus, "http://p:9090");
        assert_eq!(query.series_selector(""), "nodestate_feature");
        query.selector = Some(r#"{node=~"pool-a.*"}"#.into());
        assert_eq!(
            query.series_selector(r#"feature="window_s""#),
            r#"nodestate_feature{feature="window_s",node=~"pool-a.*"}"#
        );
    }

    #[test]
    fn large_fleets_are_read_in_smaller_chunks() {
        assert_eq!(steps_per_query(120.0), MAX_POINTS_PER_QUERY);
        // 1,000 nodes x 60 features: 166 steps per query.
        assert_eq!(steps_per_query(60_000.0), 166);
        assert_eq!(steps_per_query(1e12), 1);
        assert_eq!(steps_per_query(0.0), MAX_POINTS_PER_QUERY);
    }

    #[test]
    fn nothing_is_asked_for_an_empty_range() {
        let query = FleetQuery::new("http://127.0.0.1:9", Duration::ZERO);
        assert!(fetch(&query).unwrap_err().to_string().contains("--since"));
    }
}
