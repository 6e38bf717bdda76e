//! `collector detect`: the answer a fault-detection oracle expects ("Yes": a fault is present,
//! "No": none), from one node's `/state` or a cluster's Prometheus, optionally submitted as
//! `{"solution": "Yes"|"No"}` to the benchmark's conductor.

use anyhow::{Context as _, bail};

/// "Yes" when the node is degraded. A node still learning its baseline cannot tell: "No",
/// with a warning, since the oracle takes only the two answers.
pub fn answer_from_state(state: &serde_json::Value) -> anyhow::Result<&'static str> {
    match state["state"].as_str() {
        Some("degraded") => Ok("Yes"),
        Some("healthy") => Ok("No"),
        Some("learning") => {
            tracing::warn!("the node is still learning its baseline: answering No");
            Ok("No")
        }
        other => bail!("/state has no known state (got {other:?})"),
    }
}

/// Reads a node's `/state` (e.g. `http://10.0.0.5:9464`).
pub fn node_state(base: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/state", base.trim_end_matches('/'));
    let mut response = ureq::get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    response
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} did not return JSON"))
}

/// "Yes" when any node was degraded at some point in the last `range` (PromQL duration).
pub fn cluster_answer(prometheus: &str, range: &str) -> anyhow::Result<&'static str> {
    let query = format!("max(max_over_time(nodestate_state{{state=\"degraded\"}}[{range}]))");
    let url = format!("{}/api/v1/query", prometheus.trim_end_matches('/'));
    let mut response = ureq::get(&url)
        .query("query", &query)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let body: serde_json::Value = response.body_mut().read_json()?;
    if body["status"] != "success" {
        bail!("Prometheus refused the query {query}: {body}");
    }
    let degraded = body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| series["value"][1].as_str()?.parse::<f64>().ok())
        .any(|value| value >= 1.0);
    Ok(if degraded { "Yes" } else { "No" })
}

/// POSTs `{"solution": answer}` to the conductor and returns its reply.
pub fn submit(url: &str, answer: &str) -> anyhow::Result<String> {
    let mut response = ureq::post(url)
        .send_json(serde_json::json!({ "solution": answer }))
        .with_context(|| format!("POST {url}"))?;
    Ok(response.body_mut().read_to_string()?)
}
