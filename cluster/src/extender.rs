//! `collector extender`: a kube-scheduler extender (HTTP, JSON) that keeps pods off degraded
//! nodes and prefers healthy ones, from the node states a Prometheus already holds.
//!
//! - `POST /filter` takes `ExtenderArgs` (k8s.io/kube-scheduler/extender/v1: `Pod`, and
//!   `Nodes` (a NodeList) or, with `nodeCacheCapable: true`, `NodeNames`) and returns an
//!   `ExtenderFilterResult` in the same form. Nodes in a filtered state (`--filter-states`,
//!   default degraded) or under `--min-rank` go to `FailedAndUnresolvableNodes`: preempting
//!   pods there would not make the node healthy.
//! - `POST /prioritize` returns a `HostPriorityList`: each node's rank / 10, rounded (0..=10,
//!   `MaxExtenderPriority`).
//! - A node Prometheus has no series for (no daemon, another pool, just added) passes the
//!   filter and gets the neutral rank 50 (score 5).
//! - Prometheus down or refusing: the last good reading is used while it is younger than
//!   `--keep-last-for` (1 m; a Prometheus restart does not let pods onto degraded nodes), then
//!   fail open. By default every node passes and every node scores 5, so scheduling goes on
//!   as without us; `--on-prometheus-error error` instead answers with `Error` (filter) or 503
//!   (prioritize), which kube-scheduler skips when the extender is `ignorable: true`. Either
//!   way it is logged and counted (`nodestate_extender_prometheus_errors_total` on `/metrics`).
//! - Prometheus is asked at most once per `--cache-ttl` (a failure is remembered as long), so a
//!   burst of pods costs two queries, not two per pod.
//! - `GET /fleet` shows the node states in use, `/metrics` the extender's own counters,
//!   `/healthz` that it is up.
//! - A hostile or broken caller cannot take the memory: a body over `--max-body-bytes`
//!   (1 MiB) is answered 413 from its Content-Length without reading it, at most
//!   `--max-concurrent-requests` (4) bodies are read and parsed at once (the next caller gets
//!   503 at once, not a queue), a body not sent within 10 s is answered 408, and freed
//!   buffers go back to the system. Each refusal is counted
//!   (`nodestate_extender_rejected_requests_total{reason}`).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use model::rank::{NEUTRAL_RANK, extender_score};

mod server;

pub use server::{bind, run};

/// Largest request body accepted by default. kube-scheduler sends node names only when the
/// extender is `nodeCacheCapable: true` (as deploy/scheduler-extender.yaml ships it): measured
/// with our fixture's Pod (1.6 kB) and EKS-style names (`ip-10-0-12-34.eu-west-1.compute.
/// internal`), 5,000 nodes (Kubernetes' supported maximum) make a 217 kB body and 15,000 a
/// 653 kB one, so 1 MiB leaves room for a large Pod. Whole Node objects (~5 kB each, without
/// nodeCacheCapable) fit for about 200 nodes: raise `--max-body-bytes` for that.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Bodies read and parsed at once, by default. kube-scheduler calls an extender from its one
/// scheduling loop (filter, then prioritize, per pod), so a few cover it (and a second
/// scheduler profile or a retry); with the body cap this bounds the memory requests take
/// (measured by the_extender_bounds_bodies_requests_at_once_and_its_memory: 8 callers sending
/// ~1 MB bodies of names at 2 at once peaked at 20 MiB RSS, from 7.6 MiB idle, back to 7.9).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4;

/// A body must arrive within this long once its headers have: a caller trickling one would
/// otherwise hold a request slot forever. kube-scheduler sends a body at once and gives up
/// after its httpTimeout (5 s in deploy/scheduler-extender.yaml).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Bodies at least this large are followed by `malloc_trim`, so their buffers go back to the
/// system instead of staying in the allocator's arenas.
const TRIM_AFTER_BYTES: usize = 256 << 10;

/// What to answer when Prometheus cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnPrometheusError {
    /// Every node passes the filter and scores the same: scheduling as without the extender.
    Pass,
    /// Report an error to kube-scheduler (it skips an `ignorable: true` extender).
    Error,
}

#[derive(Debug, Clone)]
pub struct ExtenderOptions {
    pub prometheus: String,
    /// Extra PromQL label matchers for the node series, e.g. `job="nodestate"`.
    pub selector: Option<String>,
    /// The label that holds the Kubernetes node name.
    pub node_label: String,
    /// States whose nodes are filtered out.
    pub filter_states: Vec<String>,
    /// Nodes ranked below this are filtered out too.
    pub min_rank: Option<f64>,
    /// Series older than this are ignored (the daemon is gone).
    pub max_age: Duration,
    pub cache_ttl: Duration,
    /// After a failed refresh, the last good reading is used while younger than this.
    pub keep_last_for: Duration,
    pub timeout: Duration,
    pub on_error: OnPrometheusError,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Requests with a body handled at once; more are refused with 503.
    pub max_concurrent_requests: usize,
}

/// What Prometheus says about one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeHealth {
    /// "healthy", "degraded", "learning", or "unknown" when only a rank is there.
    pub state: String,
    pub rank: f64,
}

/// Node name → health, for the nodes Prometheus has series of.
pub type Fleet = BTreeMap<String, NodeHealth>;

/// The two queries the extender runs: each node's current state, and its rank.
pub fn fleet_queries(options: &ExtenderOptions) -> (String, String) {
    let age = humantime::format_duration(options.max_age)
        .to_string()
        .replace(' ', "");
    (
        format!(
            "last_over_time(nodestate_state{}[{age}]) == 1",
            crate::fleet::label_matchers(options.selector.as_deref(), "")
        ),
        format!(
            "last_over_time(nodestate_rank{}[{age}])",
            crate::fleet::label_matchers(options.selector.as_deref(), "")
        ),
    )
}

/// Reads the fleet from Prometheus. A node with several series (two scrape jobs) keeps the
/// worst: degraded wins, the lowest rank wins.
pub fn fetch_fleet(options: &ExtenderOptions) -> anyhow::Result<Fleet> {
    let (state_query, rank_query) = fleet_queries(options);
    let states = crate::promql::instant_query(&options.prometheus, &state_query, options.timeout)?;
    let ranks = crate::promql::instant_query(&options.prometheus, &rank_query, options.timeout)?;
    Ok(fleet_from_samples(&states, &ranks, &options.node_label))
}

/// Folds the two queries' samples into a [`Fleet`].
pub fn fleet_from_samples(
    states: &[crate::promql::Sample],
    ranks: &[crate::promql::Sample],
    node_label: &str,
) -> Fleet {
    let mut fleet = Fleet::new();
    for sample in states {
        let (Some(node), Some(state)) = (sample.labels.get(node_label), sample.labels.get("state"))
        else {
            continue;
        };
        let entry = fleet.entry(node.clone()).or_insert_with(|| NodeHealth {
            state: state.clone(),
            rank: f64::NAN,
        });
        if state == "degraded" {
            entry.state = state.clone();
        }
    }
    for sample in ranks {
        let Some(node) = sample.labels.get(node_label) else {
            continue;
        };
        let entry = fleet.entry(node.clone()).or_insert_with(|| NodeHealth {
            state: "unknown".into(),
            rank: f64::NAN,
        });
        if sample.value.is_finite() && (entry.rank.is_nan() || sample.value < entry.rank) {
            entry.rank = sample.value.clamp(0.0, 100.0);
        }
    }
    for health in fleet.values_mut() {
        if health.rank.is_nan() {
            // A state without a rank (an older daemon): the middle of its band.
            health.rank = model::rank::rank(&health.state, 0.0, 0.0);
        }
    }
    fleet
}

/// Why a node fails the filter, or `None` when it passes.
pub fn filter_reason(
    node: &str,
    fleet: &Fleet,
    filter_states: &[String],
    min_rank: Option<f64>,
) -> Option<String> {
    let health = fleet.get(node)?;
    if filter_states.contains(&health.state) {
        return Some(format!(
            "nodestate: node is {} (rank {:.1})",
            health.state, health.rank
        ));
    }
    match min_rank {
        Some(min) if health.rank < min => Some(format!(
            "nodestate: rank {:.1} is under the minimum {min} ({})",
            health.rank, health.state
        )),
        _ => None,
    }
}

/// `ExtenderArgs` as kube-scheduler sends it.
#[derive(Debug, Deserialize)]
pub struct ExtenderArgs {
    #[serde(rename = "Pod", default)]
    pub pod: Option<serde_json::Value>,
    #[serde(rename = "Nodes", default)]
    pub nodes: Option<NodeList>,
    #[serde(rename = "NodeNames", default)]
    pub node_names: Option<Vec<String>>,
}

/// A `v1.NodeList`: the items are passed back untouched, whatever they hold.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct NodeList {
    #[serde(default)]
    pub items: Vec<serde_json::Value>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

fn node_name(node: &serde_json::Value) -> Option<&str> {
    node["metadata"]["name"].as_str()
}

impl ExtenderArgs {
    /// The candidate node names, from `NodeNames` or else from `Nodes`.
    pub fn names(&self) -> Vec<String> {
        match (&self.node_names, &self.nodes) {
            (Some(names), _) => names.clone(),
            (None, Some(list)) => list
                .items
                .iter()
                .filter_map(|node| node_name(node).map(str::to_string))
                .collect(),
            (None, None) => Vec::new(),
        }
    }

    fn pod_name(&self) -> String {
        let meta = self.pod.as_ref().map(|pod| &pod["metadata"]);
        match meta {
            Some(meta) => format!(
                "{}/{}",
                meta["namespace"].as_str().unwrap_or("default"),
                meta["name"].as_str().unwrap_or("?")
            ),
            None => "?".into(),
        }
    }
}

/// `ExtenderFilterResult`.
#[derive(Debug, Serialize, Default)]
pub struct ExtenderFilterResult {
    #[serde(rename = "Nodes")]
    pub nodes: Option<NodeList>,
    #[serde(rename = "NodeNames")]
    pub node_names: Option<Vec<String>>,
    #[serde(rename = "FailedNodes")]
    pub failed_nodes: BTreeMap<String, String>,
    #[serde(rename = "FailedAndUnresolvableNodes")]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    #[serde(rename = "Error")]
    pub error: String,
}

/// One entry of a `HostPriorityList`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct HostPriority {
    #[serde(rename = "Host")]
    pub host: String,
    #[serde(rename = "Score")]
    pub score: i64,
}

/// The filter decision for `args` given what Prometheus said (or why it could not).
pub fn filter(
    args: &ExtenderArgs,
    fleet: &Result<Fleet, String>,
    options: &ExtenderOptions,
) -> ExtenderFilterResult {
    let mut result = ExtenderFilterResult::default();
    let failed = match fleet {
        Ok(fleet) => args
            .names()
            .into_iter()
            .filter_map(|node| {
                let reason = filter_reason(&node, fleet, &options.filter_states, options.min_rank)?;
                Some((node, reason))
            })
            .collect(),
        Err(err) => {
            if options.on_error == OnPrometheusError::Error {
                result.error = format!("nodestate extender: Prometheus: {err}");
                return result;
            }
            BTreeMap::new()
        }
    };
    if let Some(names) = &args.node_names {
        result.node_names = Some(
            names
                .iter()
                .filter(|name| !failed.contains_key(*name))
                .cloned()
                .collect(),
        );
    } else if let Some(list) = &args.nodes {
        result.nodes = Some(NodeList {
            items: list
                .items
                .iter()
                .filter(|node| node_name(node).is_none_or(|name| !failed.contains_key(name)))
                .cloned()
                .collect(),
            rest: list.rest.clone(),
        });
    }
    result.failed_and_unresolvable_nodes = failed;
    result
}

/// Scores for `args`' nodes; `None` when Prometheus failed and `--on-prometheus-error error`.
pub fn prioritize(
    args: &ExtenderArgs,
    fleet: &Result<Fleet, String>,
    options: &ExtenderOptions,
) -> Option<Vec<HostPriority>> {
    let fleet = match fleet {
        Ok(fleet) => Some(fleet),
        Err(_) if options.on_error == OnPrometheusError::Error => return None,
        Err(_) => None,
    };
    Some(
        args.names()
            .into_iter()
            .map(|host| {
                let rank = fleet
                    .and_then(|fleet| fleet.get(&host))
                    .map_or(NEUTRAL_RANK, |health| health.rank);
                HostPriority {
                    host,
                    score: extender_score(rank),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ExtenderOptions {
        ExtenderOptions {
            prometheus: "http://127.0.0.1:9".into(),
            selector: None,
            node_label: "node".into(),
            filter_states: vec!["degraded".into()],
            min_rank: None,
            max_age: Duration::from_secs(120),
            cache_ttl: Duration::from_secs(5),
            keep_last_for: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            on_error: OnPrometheusError::Pass,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }

    fn sample(labels: &[(&str, &str)], value: f64) -> crate::promql::Sample {
        crate::promql::Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn queries_carry_the_selector_and_the_age_limit() {
        let mut options = options();
        assert_eq!(
            fleet_queries(&options),
            (
                "last_over_time(nodestate_state[2m]) == 1".to_string(),
                "last_over_time(nodestate_rank[2m])".to_string()
            )
        );
        options.selector = Some(r#"{job="nodestate", node=~"pool-a.*"}"#.into());
        options.max_age = Duration::from_secs(90);
        let (state, rank) = fleet_queries(&options);
        assert_eq!(
            state,
            r#"last_over_time(nodestate_state{job="nodestate", node=~"pool-a.*"}[1m30s]) == 1"#
        );
        assert!(
            rank.starts_with(r#"last_over_time(nodestate_rank{job="#),
            "{rank}"
        );
    }

    #[test]
    fn the_worst_series_of_a_node_wins_and_a_missing_rank_is_derived() {
        let states = [
            sample(&[("node", "a"), ("state", "healthy")], 1.0),
            sample(&[("node", "a"), ("state", "degraded")], 1.0),
            sample(&[("node", "b"), ("state", "healthy")], 1.0),
            sample(&[("node", "c"), ("state", "degraded")], 1.0),
            sample(&[("state", "healthy")], 1.0),
        ];
        let ranks = [
            sample(&[("node", "a"), ("job", "x")], 30.0),
            sample(&[("node", "a"), ("job", "y")], 20.0),
            sample(&[("node", "b")], 91.0),
            sample(&[("node", "d")], f64::NAN),
        ];
        let fleet = fleet_from_samples(&states, &ranks, "node");
        assert_eq!(fleet["a"].state, "degraded");
        assert_eq!(fleet["a"].rank, 20.0);
        assert_eq!(fleet["b"].rank, 91.0);
        assert_eq!(
            fleet["c"].rank, 20.0,
            "degraded, no rank: its band's middle"
        );
        assert_eq!(fleet["d"].state, "unknown");
        assert_eq!(fleet["d"].rank, NEUTRAL_RANK);
        assert_eq!(fleet.len(), 4);
    }

    fn fleet() -> Fleet {
        [("a", "degraded", 12.0), ("b", "healthy", 91.0)]
            .into_iter()
            .map(|(node, state, rank)| {
                (
                    node.to_string(),
                    NodeHealth {
                        state: state.into(),
                        rank,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn filter_answers_in_the_form_it_was_asked_and_fails_open() {
        let by_name: ExtenderArgs = serde_json::from_str(
            r#"{"Pod":{"metadata":{"name":"p"}},"Nodes":null,"NodeNames":["a","b","c"]}"#,
        )
        .unwrap();
        let result = filter(&by_name, &Ok(fleet()), &options());
        assert_eq!(
            result.node_names.as_deref(),
            Some(&["b".to_string(), "c".to_string()][..])
        );
        assert!(result.nodes.is_none());
        assert!(result.failed_and_unresolvable_nodes["a"].contains("degraded"));

        let listed: ExtenderArgs = serde_json::from_str(
            r#"{"Pod":null,"Nodes":{"metadata":{},"items":[
                {"metadata":{"name":"a"},"status":{"x":1}},{"metadata":{"name":"b"},"status":{"x":2}}
            ]},"NodeNames":null}"#,
        )
        .unwrap();
        let result = filter(&listed, &Ok(fleet()), &options());
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(
            json["Nodes"]["items"],
            serde_json::json!([{"metadata":{"name":"b"},"status":{"x":2}}])
        );
        assert_eq!(json["Nodes"]["metadata"], serde_json::json!({}));
        assert!(json["NodeNames"].is_null());
        assert_eq!(json["FailedNodes"], serde_json::json!({}));

        let down = Err("connection refused".to_string());
        let open = filter(&by_name, &down, &options());
        assert_eq!(open.node_names.unwrap().len(), 3);
        assert!(open.error.is_empty());
        let strict = ExtenderOptions {
            on_error: OnPrometheusError::Error,
            ..options()
        };
        let refused = filter(&by_name, &down, &strict);
        assert!(
            refused.error.contains("connection refused"),
            "{}",
            refused.error
        );
        assert!(refused.node_names.is_none());
    }

    #[test]
    fn prioritize_scores_rank_over_ten_and_unknown_nodes_five() {
        let args: ExtenderArgs =
            serde_json::from_str(r#"{"Pod":{},"NodeNames":["a","b","c"]}"#).unwrap();
        let scores = prioritize(&args, &Ok(fleet()), &options()).unwrap();
        let json = serde_json::to_value(&scores).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"Host":"a","Score":1},{"Host":"b","Score":9},{"Host":"c","Score":5}])
        );
        let down = Err("timeout".to_string());
        let neutral = prioritize(&args, &down, &options()).unwrap();
        assert!(neutral.iter().all(|host| host.score == 5));
        let strict = ExtenderOptions {
            on_error: OnPrometheusError::Error,
            ..options()
        };
        assert!(prioritize(&args, &down, &strict).is_none());
    }

    #[test]
    fn min_rank_and_filter_states_both_filter() {
        let mut fleet = Fleet::new();
        fleet.insert(
            "a".into(),
            NodeHealth {
                state: "healthy".into(),
                rank: 65.0,
            },
        );
        fleet.insert(
            "b".into(),
            NodeHealth {
                state: "learning".into(),
                rank: 50.0,
            },
        );
        let states = vec!["degraded".to_string(), "learning".to_string()];
        assert!(filter_reason("a", &fleet, &states, None).is_none());
        assert!(
            filter_reason("b", &fleet, &states, None)
                .unwrap()
                .contains("learning")
        );
        assert!(
            filter_reason("a", &fleet, &[], Some(70.0))
                .unwrap()
                .contains("under the minimum 70")
        );
        assert!(filter_reason("unknown-node", &fleet, &states, Some(99.0)).is_none());
    }
}
