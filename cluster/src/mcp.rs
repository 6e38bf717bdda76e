//! `collector mcp`: a Model Context Protocol server (rmcp) so an SRE agent can ask nodestate
//! directly: node states across a cluster, why a node is degraded, and the detection answer.
//! Read-only on purpose: no tool edits the drop list or anything else, so an agent given this
//! server cannot make a node worse. It reads a cluster's Prometheus when given one, else one
//! node's daemon.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use rmcp::{
    ErrorData, ServerHandler, ServiceExt as _,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig},
    schemars, tool, tool_handler, tool_router,
};

use crate::{
    detect::{self, Answer, HTTP_TIMEOUT},
    promql,
};

/// Where the tools read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// One node's daemon, e.g. `http://127.0.0.1:9464`.
    pub node: String,
    /// A Prometheus that scrapes every node's daemon; `None`: only `node` is known.
    pub prometheus: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ExplainRequest {
    #[schemars(
        description = "The node's name (its `node` label). Optional when the server reads one node's daemon."
    )]
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct DetectRequest {
    #[schemars(
        description = "With a Prometheus: how far back to look, a PromQL duration such as 5m (default 5m)."
    )]
    #[serde(default)]
    pub range: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct DiagnoseRequest {
    #[schemars(
        description = "With a Prometheus: how far back to look, a PromQL duration such as 10m (default 10m)."
    )]
    #[serde(default)]
    pub range: Option<String>,
    #[schemars(
        description = "The application's namespaces: workloads in them are named first (optional)."
    )]
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct TopRequest {
    #[schemars(
        description = "Sort by this signal, highest first, e.g. oncpu_time, io_issued, errors, exits_nonzero, tcp_failures, runq_wait (default oncpu_time). One node's daemon only."
    )]
    #[serde(default)]
    pub sort: Option<String>,
    #[schemars(description = "At most this many workloads (default 10, at most 100).")]
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct NodestateMcp {
    sources: Arc<Sources>,
    #[allow(dead_code, reason = "read by the tool_handler macro")]
    tool_router: ToolRouter<Self>,
}

/// A tool's refusal: an error result the agent reads, not a protocol error.
fn refusal(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

fn json_result(value: serde_json::Value) -> CallToolResult {
    CallToolResult::structured(value)
}

/// A PromQL duration: digits and a unit (ms, s, m, h, d, w, y), possibly several (`1h30m`).
fn is_promql_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|unit| rest.starts_with(unit));
        match unit {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

/// Blocking HTTP off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("the request's thread panicked")?
}

fn by_node(samples: &[promql::Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter_map(|s| Some((s.labels.get("node")?.clone(), s.value)))
        .collect()
}

#[tool_router]
impl NodestateMcp {
    pub fn new(sources: Sources) -> Self {
        NodestateMcp {
            sources: Arc::new(sources),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Every node's health as nodestate judges it: state (healthy, degraded or learning), anomaly score and threshold, rank for schedulers (0-100), from the cluster's Prometheus (or the one node's daemon)."
    )]
    async fn node_states(&self) -> Result<CallToolResult, ErrorData> {
        let sources = self.sources.clone();
        let read = blocking(move || match &sources.prometheus {
            Some(prometheus) => {
                let query = |q: &str| promql::instant_query(prometheus, q, HTTP_TIMEOUT);
                let states = query("nodestate_state == 1")?;
                let scores = by_node(&query("nodestate_anomaly_score")?);
                let thresholds = by_node(&query("nodestate_anomaly_threshold")?);
                let ranks = by_node(&query("nodestate_rank")?);
                let mut nodes: Vec<serde_json::Value> = states
                    .iter()
                    .filter_map(|s| {
                        let node = s.labels.get("node")?;
                        Some(serde_json::json!({
                            "node": node,
                            "state": s.labels.get("state"),
                            "score": scores.get(node),
                            "threshold": thresholds.get(node),
                            "rank": ranks.get(node),
                        }))
                    })
                    .collect();
                nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
                Ok(serde_json::json!({ "source": prometheus, "nodes": nodes }))
            }
            None => {
                let state = detect::node_state(&sources.node)?;
                Ok(serde_json::json!({
                    "source": sources.node,
                    "nodes": [{
                        "node": state["node"],
                        "state": state["state"],
                        "score": state["score"],
                        "threshold": state["threshold"],
                        "rank": state["rank"],
                        "since": state["since"],
                    }],
                }))
            }
        })
        .await;
        Ok(match read {
            Ok(value) => json_result(value),
            Err(err) => refusal(format!("cannot read node states: {err:#}")),
        })
    }

    #[tool(
        description = "Why a node is in its state: its state, since when, the anomaly score against the threshold, and the signals furthest from the node's healthy baseline with their z-distance (e.g. psi_io_some_pct +11)."
    )]
    async fn explain_node(
        &self,
        Parameters(ExplainRequest { node }): Parameters<ExplainRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let sources = self.sources.clone();
        let read = blocking(move || -> anyhow::Result<Result<serde_json::Value, String>> {
            match (&sources.prometheus, node) {
                (Some(prometheus), Some(node)) => {
                    if node.is_empty() || node.contains(['"', '\\', '\n']) {
                        return Ok(Err(format!("`{node}` is not a node name")));
                    }
                    let query = |q: String| promql::instant_query(prometheus, &q, HTTP_TIMEOUT);
                    let state = query(format!("nodestate_state{{node=\"{node}\"}} == 1"))?;
                    let Some(state) = state.first() else {
                        let known = by_node(&query("nodestate_state == 1".into())?);
                        return Ok(Err(format!(
                            "no node `{node}` in {prometheus}; known nodes: {}",
                            known.keys().cloned().collect::<Vec<_>>().join(", ")
                        )));
                    };
                    let score = query(format!("nodestate_anomaly_score{{node=\"{node}\"}}"))?;
                    let threshold =
                        query(format!("nodestate_anomaly_threshold{{node=\"{node}\"}}"))?;
                    let mut explanation: Vec<(String, String, f64)> =
                        query(format!("nodestate_explanation_z{{node=\"{node}\"}}"))?
                            .into_iter()
                            .map(|s| {
                                (
                                    s.labels.get("rank").cloned().unwrap_or_default(),
                                    s.labels.get("feature").cloned().unwrap_or_default(),
                                    s.value,
                                )
                            })
                            .collect();
                    // By rank, numerically ("1", "2", "3"), as the exporter numbers them.
                    explanation.sort_by_key(|(rank, _, _)| rank.parse::<u32>().unwrap_or(u32::MAX));
                    Ok(Ok(serde_json::json!({
                        "node": node,
                        "state": state.labels.get("state"),
                        "score": score.first().map(|s| s.value),
                        "threshold": threshold.first().map(|s| s.value),
                        "explanation": explanation
                            .into_iter()
                            .map(|(_, feature, z)| serde_json::json!({ "signal": feature, "z": z }))
                            .collect::<Vec<_>>(),
                    })))
                }
                (Some(_), None) => Ok(Err(
                    "`node` is required: this server reads a cluster's Prometheus (node_states lists the names)"
                        .into(),
                )),
                (None, asked) => {
                    let state = detect::node_state(&sources.node)?;
                    if let Some(asked) = asked
                        && state["node"].as_str() != Some(asked.as_str())
                    {
                        return Ok(Err(format!(
                            "this server reads only node `{}` ({}), not `{asked}`",
                            state["node"].as_str().unwrap_or("?"),
                            sources.node
                        )));
                    }
                    let explanation: Vec<serde_json::Value> = state["explanation"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|pair| {
                            Some(serde_json::json!({ "signal": pair.get(0)?, "z": pair.get(1)? }))
                        })
                        .collect();
                    Ok(Ok(serde_json::json!({
                        "node": state["node"],
                        "state": state["state"],
                        "since": state["since"],
                        "score": state["score"],
                        "threshold": state["threshold"],
                        "explanation": explanation,
                    })))
                }
            }
        })
        .await;
        Ok(match read {
            Ok(Ok(value)) => json_result(value),
            Ok(Err(refused)) => refusal(refused),
            Err(err) => refusal(format!("cannot read the node's state: {err:#}")),
        })
    }

    #[tool(
        description = "The fault-detection answer: \"Yes\" if the node (or, with a Prometheus, any node within `range`) is degraded, \"No\" if not, or that the node cannot tell yet because it is still learning its baseline."
    )]
    async fn detect(
        &self,
        Parameters(DetectRequest { range }): Parameters<DetectRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let range = range.unwrap_or_else(|| "5m".into());
        if !is_promql_duration(&range) {
            return Ok(refusal(format!(
                "range `{range}` is not a PromQL duration such as 5m or 1h30m"
            )));
        }
        let sources = self.sources.clone();
        let answer = blocking(move || match &sources.prometheus {
            Some(prometheus) => detect::cluster_answer(prometheus, &range),
            None => detect::answer_from_state(&detect::node_state(&sources.node)?),
        })
        .await;
        Ok(match answer {
            Ok(Answer::StillLearning) => json_result(serde_json::json!({
                "answer": null,
                "reason": "the node is still learning its baseline: it cannot tell yet",
            })),
            Ok(answer) => json_result(serde_json::json!({ "answer": answer.word() })),
            Err(err) => refusal(format!("cannot answer: {err:#}")),
        })
    }

    #[tool(
        description = "Which workloads (pod and container, container, service or cgroup) do what on a node: with one node's daemon, every workload's rates in the last window per signal (on-CPU time, I/O issued, errors, non-zero exits, OOM kills, TCP failures, and the waits they suffer), sorted; with a Prometheus, the culprits every degraded node names, with their share."
    )]
    async fn top_workloads(
        &self,
        Parameters(TopRequest { sort, limit }): Parameters<TopRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let limit = limit.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Ok(refusal(format!("limit {limit} is not from 1 to 100")));
        }
        let sources = self.sources.clone();
        let read = blocking(
            move || -> anyhow::Result<Result<serde_json::Value, String>> {
                if let Some(prometheus) = &sources.prometheus {
                    let culprits =
                        promql::instant_query(prometheus, "nodestate_culprit_share", HTTP_TIMEOUT)?;
                    let mut culprits: Vec<serde_json::Value> = culprits
                        .iter()
                        .map(|sample| {
                            let label = |name: &str| {
                                crate::diagnose::label(sample, name).unwrap_or_default()
                            };
                            serde_json::json!({
                                "node": label("node"),
                                "namespace": label("namespace"),
                                "pod": label("pod"),
                                "container": label("container"),
                                "signal": label("signal"),
                                "share": sample.value,
                            })
                        })
                        .collect();
                    culprits.sort_by(|a, b| {
                        b["share"]
                            .as_f64()
                            .unwrap_or(0.0)
                            .total_cmp(&a["share"].as_f64().unwrap_or(0.0))
                    });
                    culprits.truncate(limit);
                    return Ok(Ok(serde_json::json!({ "culprits": culprits })));
                }
                let view = crate::promql::get_json(&sources.node, "/workloads", HTTP_TIMEOUT)?;
                let sort = sort.unwrap_or_else(|| "oncpu_time".into());
                let mut rows: Vec<serde_json::Value> =
                    view["workloads"].as_array().cloned().unwrap_or_default();
                let known = rows
                    .first()
                    .is_none_or(|row| row["rates"].get(&sort).is_some());
                if !known {
                    let names: Vec<String> = rows[0]["rates"]
                        .as_object()
                        .map(|rates| rates.keys().cloned().collect())
                        .unwrap_or_default();
                    return Ok(Err(format!(
                        "unknown signal `{sort}`: sort by one of {}",
                        names.join(", ")
                    )));
                }
                let rate = |row: &serde_json::Value| row["rates"][&sort].as_f64().unwrap_or(0.0);
                rows.sort_by(|a, b| rate(b).total_cmp(&rate(a)));
                rows.truncate(limit);
                Ok(Ok(serde_json::json!({
                    "node": view["node"],
                    "state": view["state"],
                    "window_s": view["window_s"],
                    "sorted_by": sort,
                    "workloads": rows,
                })))
            },
        )
        .await;
        Ok(match read {
            Ok(Ok(value)) => json_result(value),
            Ok(Err(refused)) => refusal(refused),
            Err(err) => refusal(format!("cannot read the workloads: {err:#}")),
        })
    }

    #[tool(
        description = "A root-cause statement from evidence, as fault benchmarks structure one: component (the degraded node and the workload driving it), namespace, description (since when, which signals moved by how much, which workloads drive them with their share), and the evidence list. component is null when nothing moved."
    )]
    async fn diagnose(
        &self,
        Parameters(DiagnoseRequest { range, namespaces }): Parameters<DiagnoseRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let range = range.unwrap_or_else(|| "10m".into());
        if !is_promql_duration(&range) {
            return Ok(refusal(format!(
                "range `{range}` is not a PromQL duration such as 10m or 1h30m"
            )));
        }
        if let Some(bad) = namespaces
            .iter()
            .find(|namespace| namespace.is_empty() || namespace.len() > 63)
        {
            return Ok(refusal(format!(
                "`{bad}` is not a Kubernetes namespace name"
            )));
        }
        let sources = self.sources.clone();
        let findings = blocking(move || match &sources.prometheus {
            Some(prometheus) => crate::diagnose::cluster_findings(prometheus, &range),
            None => crate::diagnose::node_findings(&sources.node),
        })
        .await;
        Ok(match findings {
            Ok(findings) => {
                match serde_json::to_value(crate::diagnose::diagnose(&findings, &namespaces)) {
                    Ok(value) => json_result(value),
                    Err(err) => refusal(format!("cannot write the diagnosis: {err}")),
                }
            }
            Err(err) => refusal(format!("cannot diagnose: {err:#}")),
        })
    }
}

#[tool_handler]
impl ServerHandler for NodestateMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "nodestate judges each node healthy or degraded from kernel signals. node_states lists \
             every node, explain_node says why one is degraded, detect gives the Yes/No a \
             fault-detection task asks, diagnose states the root cause (node, workload, \
             namespace, evidence), top_workloads shows what each workload does. Read-only.",
        )
    }
}

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn serve_stdio(sources: Sources) -> anyhow::Result<()> {
    let running = NodestateMcp::new(sources)
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP session on stdio")?;
    running.waiting().await.context("MCP session")?;
    Ok(())
}

/// Serves MCP's streamable HTTP transport at `http://listen/mcp` until SIGTERM or Ctrl-C.
pub async fn serve_http(sources: Sources, listen: SocketAddr) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let service = StreamableHttpService::new(
        move || Ok(NodestateMcp::new(sources.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving MCP at /mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .context("MCP HTTP server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_durations() {
        for ok in ["5m", "1h30m", "30s", "100ms", "2d"] {
            assert!(is_promql_duration(ok), "{ok}");
        }
        for bad in ["", "5", "m", "5 m", "5m)", "-5m", "5min"] {
            assert!(!is_promql_duration(bad), "{bad}");
        }
    }
}
