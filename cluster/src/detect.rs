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

/// How long a tool waits for a node or Prometheus before giving up.
pub const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a node's `/state` (e.g. `http://10.0.0.5:9464`).
pub fn node_state(base: &str) -> anyhow::Result<serde_json::Value> {
    crate::promql::get_json(base, "/state", HTTP_TIMEOUT)
}

/// "Yes" when any node was degraded at some point in the last `range` (PromQL duration).
pub fn cluster_answer(prometheus: &str, range: &str) -> anyhow::Result<&'static str> {
    let query = format!("max(max_over_time(nodestate_state{{state=\"degraded\"}}[{range}]))");
    let degraded = crate::promql::instant_query(prometheus, &query, HTTP_TIMEOUT)?
        .iter()
        .any(|sample| sample.value >= 1.0);
    Ok(if degraded { "Yes" } else { "No" })
}

/// POSTs `{"solution": answer}` to the conductor and returns its reply.
pub fn submit(url: &str, answer: &str) -> anyhow::Result<String> {
    let mut response = ureq::post(url)
        .send_json(serde_json::json!({ "solution": answer }))
        .with_context(|| format!("POST {url}"))?;
    Ok(response.body_mut().read_to_string()?)
}
