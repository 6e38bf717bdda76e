//! `collector detect`: the answer a fault-detection oracle expects ("Yes": a fault is present,
//! "No": none), from one node's `/state` or a cluster's Prometheus, optionally submitted as
//! `{"solution": "Yes"|"No"}` to the benchmark's conductor ([`crate::conductor`]).

use anyhow::bail;

/// What `detect` can say about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A fault is present: the node is degraded.
    Yes,
    No,
    /// The node is still learning its baseline: it cannot tell yet. Not "No": a script (and
    /// the benchmark) must be able to tell "healthy" from "cannot tell".
    StillLearning,
}

impl Answer {
    /// The oracle's word, for the two answers it takes.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Answer::Yes => Some("Yes"),
            Answer::No => Some("No"),
            Answer::StillLearning => None,
        }
    }
}

/// The answer for a node's `/state`.
pub fn answer_from_state(state: &serde_json::Value) -> anyhow::Result<Answer> {
    match state["state"].as_str() {
        Some("degraded") => Ok(Answer::Yes),
        Some("healthy") => Ok(Answer::No),
        Some("learning") => Ok(Answer::StillLearning),
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
pub fn cluster_answer(prometheus: &str, range: &str) -> anyhow::Result<Answer> {
    let query = format!("max(max_over_time(nodestate_state{{state=\"degraded\"}}[{range}]))");
    let degraded = crate::promql::instant_query(prometheus, &query, HTTP_TIMEOUT)?
        .iter()
        .any(|sample| sample.value >= 1.0);
    Ok(if degraded { Answer::Yes } else { Answer::No })
}
