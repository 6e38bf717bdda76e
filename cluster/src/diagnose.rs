//! `collector diagnose`: a root-cause statement built from evidence, shaped as the fault
//! benchmarks structure one (a component, its namespace, a description), for one node's
//! `/state` or a cluster's Prometheus.
//!
//! Everything it says comes from what the daemons measured: which nodes were degraded and since
//! when, which signals moved and how far (the explanation's z-distances), and which workloads
//! drove them (the culprits attribution names, with their share). It guesses nothing: when no
//! node moved, `component` is `None` and the description says so.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Serialize;

use crate::{detect::HTTP_TIMEOUT, promql};

/// One signal that moved on one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub node: String,
    /// The feature's name (see docs/window-record.md), e.g. `psi_io_some_pct`.
    pub signal: String,
    /// How far it is from the node's healthy baseline, in standard deviations.
    pub z: f64,
    /// The top culprit's share of this signal, 0–1, when attribution named one.
    pub share: Option<f64>,
    /// When the node's state last changed (RFC 3339), i.e. since when it is degraded.
    pub since: Option<String>,
}

/// A workload attribution named behind a node's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Culprit {
    pub node: String,
    /// Kubernetes namespace; `None` outside Kubernetes.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// The owning controller where the API says, e.g. `deployment/db`.
    pub owner: Option<String>,
    /// A name for anything else: a container outside Kubernetes, a systemd service, a path.
    pub name: Option<String>,
    /// The per-workload signal it drives, e.g. `io_issued`.
    pub signal: String,
    /// Its share of that signal's rise on the node, 0–1.
    pub share: f64,
}

impl Culprit {
    /// How a root cause names it: the owner (`deployment/db`), else `pod/db-0`, else the
    /// container, service or path.
    pub fn component(&self) -> String {
        if let Some(owner) = &self.owner {
            return owner.clone();
        }
        if let Some(pod) = &self.pod {
            return format!("pod/{pod}");
        }
        self.container
            .clone()
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| "an unnamed workload".into())
    }

    /// `shop/db-0 (postgres)` for people.
    pub fn label(&self) -> String {
        match (&self.namespace, &self.pod) {
            (Some(namespace), Some(pod)) => match &self.container {
                Some(container) => format!("{namespace}/{pod} ({container})"),
                None => format!("{namespace}/{pod}"),
            },
            _ => self.component(),
        }
    }
}

/// One degraded node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeFinding {
    pub node: String,
    pub since: Option<String>,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
}

/// The statement `diagnose` prints and submits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    /// What is at fault, e.g. `node worker-2 + deployment/db`; `None` when nothing moved.
    pub component: Option<String>,
    pub namespace: Option<String>,
    pub description: String,
    pub evidence: Vec<Evidence>,
    pub nodes: Vec<NodeFinding>,
    pub culprits: Vec<Culprit>,
}

/// What the daemons said, before it is put in words.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    pub nodes: Vec<NodeFinding>,
    /// Per node, its moved signals, largest |z| first.
    pub evidence: Vec<Evidence>,
    /// Largest share first.
    pub culprits: Vec<Culprit>,
    /// Nodes still learning their baseline: they cannot tell yet.
    pub learning: Vec<String>,
}

/// Signals kept per node in the statement: the judge explains with a handful; more is noise to
/// a reader and to an LLM judge.
const EVIDENCE_PER_NODE: usize = 5;

/// Phrases for the window fields a fault most often moves (the daemon's names, see
/// docs/window-record.md), so the description reads as a cause, not a column name (the column
/// name stays beside it for the precise reader). The first prefix a field starts with wins, so
/// the specific ones come first. Data, not code.
const SIGNAL_WORDS: &[(&str, &str)] = &[
    ("psi_io", "I/O pressure"),
    ("psi_cpu", "CPU pressure"),
    ("psi_memory", "memory pressure"),
    ("cpu_throttled", "CPU throttling"),
    ("proc_exits_nonzero", "processes exiting with an error"),
    ("proc_fatal_signals", "processes killed by fatal signals"),
    ("mem_oom_kills", "OOM kills"),
    ("mem_reclaim", "memory reclaim stalls"),
    ("mem_major_faults", "major page faults"),
    ("block_error", "failing block I/O"),
    ("block_latency", "slow block I/O"),
    ("block_slow_io", "slow block I/O"),
    ("fsync_latency", "slow fsyncs"),
    ("syscall_enospc", "no space left on device (ENOSPC)"),
    (
        "syscall_emfile",
        "file-descriptor exhaustion (EMFILE/ENFILE)",
    ),
    ("syscall_eio", "I/O errors (EIO)"),
    ("syscall_econnrefused", "refused connections (ECONNREFUSED)"),
    (
        "syscall_eaddrnotavail",
        "ephemeral port exhaustion (EADDRNOTAVAIL)",
    ),
    ("syscall_etimedout", "timed-out calls (ETIMEDOUT)"),
    ("syscall_errors", "failing syscalls"),
    ("sched_runqueue_latency", "run-queue waits"),
    ("net_drops", "dropped packets"),
    ("net_tx_errors", "failing transmits"),
    ("tcp_retransmits", "TCP retransmits"),
    ("tcp_connect_failures", "failing TCP connects"),
    ("tcp_resets", "TCP resets"),
    ("conntrack_fill", "a filling connection-tracking table"),
];

/// The phrase for a window field, when one of [`SIGNAL_WORDS`] names it.
pub fn signal_words(signal: &str) -> Option<&'static str> {
    SIGNAL_WORDS
        .iter()
        .find(|(prefix, _)| signal.starts_with(prefix))
        .map(|(_, words)| *words)
}

/// The per-workload signals attribution ranks culprits by (the daemon's `Signal` names), in
/// words.
const CULPRIT_SIGNAL_WORDS: &[(&str, &str)] = &[
    ("oncpu_time", "on-CPU time"),
    ("io_issued", "I/O issued"),
    ("errors", "syscall errors"),
    ("exits_nonzero", "non-zero exits"),
    ("fatal_signals", "fatal signals"),
    ("oom_victims", "OOM kills"),
    ("tcp_failures", "TCP failures"),
];

/// A culprit's signal in words: its phrase, else its name with spaces.
fn culprit_signal_words(signal: &str) -> String {
    CULPRIT_SIGNAL_WORDS
        .iter()
        .find(|(name, _)| *name == signal)
        .map_or_else(|| signal.replace('_', " "), |(_, words)| words.to_string())
}

/// A share as 0–1, whether it came as a fraction or as a percentage.
fn fraction(share: f64) -> f64 {
    if share > 1.0 { share / 100.0 } else { share }
}

fn number(value: &serde_json::Value) -> Option<f64> {
    value.as_f64().filter(|x| x.is_finite())
}

fn text(value: &serde_json::Value) -> Option<String> {
    value
        .as_str()
        .filter(|text| !text.is_empty())
        .map(str::to_string)
}

/// A culprit from `/state`'s `culprits` list (attribution's shape: the workload's names, the
/// signal, the share as 0–1 or as a percentage).
fn culprit_from_json(node: &str, value: &serde_json::Value) -> Option<Culprit> {
    let workload = if value["workload"].is_object() {
        &value["workload"]
    } else {
        value
    };
    let share = fraction(number(&value["share"])?);
    Some(Culprit {
        node: node.to_string(),
        namespace: text(&workload["namespace"]),
        pod: text(&workload["pod"]),
        container: text(&workload["container"]),
        owner: text(&workload["owner"])
            .or_else(|| text(&workload["name"]).as_deref().and_then(owner_from_name)),
        name: text(&workload["name"])
            .or_else(|| text(&workload["display"]))
            .or_else(|| text(&value["workload"])),
        signal: text(&value["signal"]).unwrap_or_else(|| "activity".into()),
        share,
    })
}

/// The owning controller a pod's display name carries (the daemon names a pod
/// `shop/web-7d9f (nginx, Deployment web)` when the Kubernetes API says who owns it), as a
/// root cause names it: `deployment/web`.
fn owner_from_name(name: &str) -> Option<String> {
    let tail = name.rsplit_once(", ")?.1.trim_end_matches(')');
    let (kind, owner) = tail.split_once(' ')?;
    let is_kind =
        kind.chars().next()?.is_ascii_uppercase() && kind.chars().all(|c| c.is_ascii_alphabetic());
    (is_kind && !owner.is_empty() && !owner.contains(' '))
        .then(|| format!("{}/{owner}", kind.to_lowercase()))
}

/// The findings of one node's `/state` (as its daemon serves it).
pub fn findings_from_state(state: &serde_json::Value) -> anyhow::Result<Findings> {
    let node = text(&state["node"]).unwrap_or_else(|| "this node".into());
    let mut findings = Findings::default();
    match state["state"].as_str() {
        Some("degraded") => {}
        Some("healthy") => return Ok(findings),
        Some("learning") => {
            findings.learning.push(node);
            return Ok(findings);
        }
        other => anyhow::bail!("/state has no known state (got {other:?})"),
    }
    let since = text(&state["since"]);
    findings.nodes.push(NodeFinding {
        node: node.clone(),
        since: since.clone(),
        score: number(&state["score"]),
        threshold: number(&state["threshold"]),
    });
    for pair in state["explanation"].as_array().into_iter().flatten() {
        let (Some(signal), Some(z)) = (text(&pair[0]), number(&pair[1])) else {
            continue;
        };
        findings.evidence.push(Evidence {
            node: node.clone(),
            signal,
            z,
            share: None,
            since: since.clone(),
        });
    }
    findings.culprits = state["culprits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|value| culprit_from_json(&node, value))
        .collect();
    Ok(findings.tidy())
}

impl Findings {
    /// Keeps the signals that rose (a fault is what went up: a signal below its baseline, e.g.
    /// fewer writes while a disk stalls, is its effect, not evidence of it), sorts them
    /// (largest z and share first), keeps [`EVIDENCE_PER_NODE`] per node, and gives each
    /// node's evidence the share of its top culprit.
    fn tidy(mut self) -> Self {
        self.evidence
            .retain(|evidence| evidence.z.is_finite() && evidence.z > 0.0);
        self.evidence
            .sort_by(|a, b| a.node.cmp(&b.node).then(b.z.abs().total_cmp(&a.z.abs())));
        let mut kept: BTreeMap<String, usize> = BTreeMap::new();
        self.evidence.retain(|evidence| {
            let count = kept.entry(evidence.node.clone()).or_default();
            *count += 1;
            *count <= EVIDENCE_PER_NODE
        });
        self.culprits.retain(|culprit| culprit.share.is_finite());
        self.culprits.sort_by(|a, b| b.share.total_cmp(&a.share));
        for evidence in &mut self.evidence {
            evidence.share = self
                .culprits
                .iter()
                .find(|culprit| culprit.node == evidence.node)
                .map(|culprit| culprit.share);
        }
        self
    }
}

/// Puts findings in words, scoped to `namespaces` when given (the application's: culprits in
/// them come first; others are still listed, as they may be the noisy neighbour).
pub fn diagnose(findings: &Findings, namespaces: &[String]) -> Diagnosis {
    let in_scope = |culprit: &&Culprit| {
        namespaces.is_empty()
            || culprit
                .namespace
                .as_ref()
                .is_some_and(|namespace| namespaces.contains(namespace))
    };
    let mut culprits: Vec<Culprit> = findings.culprits.iter().filter(in_scope).cloned().collect();
    culprits.extend(
        findings
            .culprits
            .iter()
            .filter(|culprit| !in_scope(culprit))
            .cloned(),
    );
    if findings.nodes.is_empty() {
        let description = if findings.learning.is_empty() {
            "No node is degraded: no signal moved away from its healthy baseline.".to_string()
        } else {
            format!(
                "No node is degraded; {} still learning its baseline and cannot tell yet.",
                findings.learning.join(", ")
            )
        };
        return Diagnosis {
            component: None,
            namespace: None,
            description,
            evidence: Vec::new(),
            nodes: Vec::new(),
            culprits: Vec::new(),
        };
    }
    let nodes: Vec<&str> = findings.nodes.iter().map(|n| n.node.as_str()).collect();
    let top = culprits.first();
    let component = match top {
        Some(culprit) => format!("node {} + {}", culprit.node, culprit.component()),
        None => format!("node {}", nodes.join(", node ")),
    };
    let namespace = top
        .and_then(|culprit| culprit.namespace.clone())
        .or_else(|| (namespaces.len() == 1).then(|| namespaces[0].clone()));

    let mut description = String::new();
    for finding in &findings.nodes {
        let signals: Vec<String> = findings
            .evidence
            .iter()
            .filter(|evidence| evidence.node == finding.node)
            .map(|evidence| match signal_words(&evidence.signal) {
                Some(words) => format!("{words} ({} {:+.1}σ)", evidence.signal, evidence.z),
                None => format!("{} {:+.1}σ", evidence.signal, evidence.z),
            })
            .collect();
        description.push_str(&format!("Node {} is degraded", finding.node));
        if let Some(since) = &finding.since {
            description.push_str(&format!(" since {since}"));
        }
        if let (Some(score), Some(threshold)) = (finding.score, finding.threshold) {
            description.push_str(&format!(
                " (anomaly score {score:.1} over threshold {threshold:.1})"
            ));
        }
        if signals.is_empty() {
            description.push_str(". ");
        } else {
            description.push_str(&format!(": {}. ", signals.join(", ")));
        }
    }
    if culprits.is_empty() {
        description.push_str(
            "No workload on it stands out: the cause is node-wide or outside any container.",
        );
    } else {
        let named: Vec<String> = culprits
            .iter()
            .take(3)
            .map(|culprit| {
                format!(
                    "{} on node {} ({:.0}% of {})",
                    culprit.label(),
                    culprit.node,
                    culprit.share * 100.0,
                    culprit_signal_words(&culprit.signal)
                )
            })
            .collect();
        description.push_str(&format!("Workloads driving it: {}.", named.join("; ")));
    }
    Diagnosis {
        component: Some(component),
        namespace,
        description: description.trim().to_string(),
        evidence: findings.evidence.clone(),
        nodes: findings.nodes.clone(),
        culprits,
    }
}

/// Reads a node's `/state` and diagnoses it.
pub fn node_findings(base: &str) -> anyhow::Result<Findings> {
    findings_from_state(&crate::detect::node_state(base)?)
}

/// A label that may have been renamed by the scrape: a normal pod scrape moves a target's own
/// `namespace` label to `exported_namespace`.
pub(crate) fn label(sample: &promql::Sample, name: &str) -> Option<String> {
    sample
        .labels
        .get(&format!("exported_{name}"))
        .or_else(|| sample.labels.get(name))
        .filter(|value| !value.is_empty())
        .cloned()
}

/// The findings of every node a Prometheus scrapes, over the last `range` (a PromQL duration).
pub fn cluster_findings(prometheus: &str, range: &str) -> anyhow::Result<Findings> {
    let query = |q: String| {
        promql::instant_query(prometheus, &q, HTTP_TIMEOUT)
            .with_context(|| format!("in {prometheus}"))
    };
    let mut findings = Findings::default();
    let degraded = query(format!(
        "max by (node) (max_over_time(nodestate_state{{state=\"degraded\"}}[{range}])) == 1"
    ))?;
    let learning = query("max by (node) (nodestate_state{state=\"learning\"}) == 1".into())?;
    findings.learning = learning
        .iter()
        .filter_map(|sample| sample.labels.get("node").cloned())
        .collect();
    for sample in &degraded {
        let Some(node) = sample.labels.get("node") else {
            continue;
        };
        if node.contains(['"', '\\', '\n']) {
            continue;
        }
        let one = |metric: &str| -> anyhow::Result<Option<f64>> {
            Ok(query(format!("max({metric}{{node=\"{node}\"}})"))?
                .first()
                .map(|sample| sample.value))
        };
        let last_change = one("nodestate_state_last_change_timestamp_seconds")?.or(query(
            format!("max(time() - nodestate_state_since_seconds{{node=\"{node}\"}})"),
        )?
        .first()
        .map(|sample| sample.value));
        let since = last_change.filter(|t| t.is_finite() && *t > 0.0).map(|t| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t),
            )
            .to_string()
        });
        findings.nodes.push(NodeFinding {
            node: node.clone(),
            since: since.clone(),
            score: one("nodestate_anomaly_score")?,
            threshold: one("nodestate_anomaly_threshold")?,
        });
        for sample in query(format!(
            "max by (feature) (max_over_time(nodestate_explanation_z{{node=\"{node}\"}}[{range}]))"
        ))? {
            if let Some(signal) = sample.labels.get("feature") {
                findings.evidence.push(Evidence {
                    node: node.clone(),
                    signal: signal.clone(),
                    z: sample.value,
                    share: None,
                    since: since.clone(),
                });
            }
        }
        for sample in query(format!(
            "max_over_time(nodestate_culprit_share{{node=\"{node}\"}}[{range}])"
        ))? {
            findings.culprits.push(Culprit {
                node: node.clone(),
                namespace: label(&sample, "namespace"),
                pod: label(&sample, "pod"),
                container: label(&sample, "container"),
                owner: label(&sample, "owner"),
                name: label(&sample, "workload"),
                signal: label(&sample, "signal").unwrap_or_else(|| "activity".into()),
                share: fraction(sample.value),
            });
        }
    }
    Ok(findings.tidy())
}

impl Diagnosis {
    /// The text for people and for an LLM judge: the three parts a benchmark's root cause has.
    pub fn text(&self) -> String {
        format!(
            "component: {}\nnamespace: {}\ndescription: {}",
            self.component.as_deref().unwrap_or("none"),
            self.namespace.as_deref().unwrap_or("none"),
            self.description
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn degraded_state() -> serde_json::Value {
        json!({
            "node": "worker-2",
            "state": "degraded",
            "score": 14.2,
            "threshold": 4.0,
            "since": "2026-12-03T10:00:00Z",
            // A signal that fell (the disk is written less while it fails) is no evidence.
            "explanation": [["syscall_errors_per_s", 3.5], ["syscall_enospc_per_s", 11.0],
                            ["block_write_bytes_per_s", -14.0]],
            "culprits": [
                {"workload": {"namespace": "other", "pod": "batch-1", "container": "job"},
                 "signal": "errors", "share": 0.1},
                {"workload": {"namespace": "shop", "pod": "db-0", "container": "postgres",
                              "owner": "statefulset/db"},
                 "signal": "errors", "share": 0.87}
            ]
        })
    }

    #[test]
    fn a_degraded_node_names_its_top_culprit_its_namespace_and_the_signals_that_moved() {
        let findings = findings_from_state(&degraded_state()).unwrap();
        let diagnosis = diagnose(&findings, &[]);
        assert_eq!(
            diagnosis.component.as_deref(),
            Some("node worker-2 + statefulset/db")
        );
        assert_eq!(diagnosis.namespace.as_deref(), Some("shop"));
        // Largest |z| first, with the top culprit's share and the state's since.
        assert_eq!(diagnosis.evidence[0].signal, "syscall_enospc_per_s");
        let signals: Vec<&str> = diagnosis
            .evidence
            .iter()
            .map(|e| e.signal.as_str())
            .collect();
        assert_eq!(signals, ["syscall_enospc_per_s", "syscall_errors_per_s"]);
        assert_eq!(diagnosis.evidence[0].share, Some(0.87));
        assert_eq!(
            diagnosis.evidence[0].since.as_deref(),
            Some("2026-12-03T10:00:00Z")
        );
        assert!(
            diagnosis.description.contains("no space left on device"),
            "{}",
            diagnosis.description
        );
        assert!(
            diagnosis
                .description
                .contains("shop/db-0 (postgres) on node worker-2 (87% of syscall errors)"),
            "{}",
            diagnosis.description
        );
    }

    #[test]
    fn the_owner_comes_from_the_daemons_name_for_a_pod() {
        assert_eq!(
            owner_from_name("shop/web-7d9f (nginx, Deployment web)").as_deref(),
            Some("deployment/web")
        );
        assert_eq!(
            owner_from_name("shop/db-0, StatefulSet db").as_deref(),
            Some("statefulset/db")
        );
        assert_eq!(owner_from_name("shop/db-0 (postgres)"), None);
        assert_eq!(owner_from_name("podman web"), None);
        assert_eq!(owner_from_name("system.slice/a, b.service"), None);
        // Flattened as the daemon serves it: the owner names the component.
        let state = json!({
            "node": "n1", "state": "degraded", "explanation": [["cpu_busy", 5.0]],
            "culprits": [{"namespace": "shop", "pod": "web-7d9f", "container": "nginx",
                          "name": "shop/web-7d9f (nginx, Deployment web)",
                          "signal": "oncpu_time", "share": 0.8}]
        });
        let diagnosis = diagnose(&findings_from_state(&state).unwrap(), &[]);
        assert_eq!(
            diagnosis.component.as_deref(),
            Some("node n1 + deployment/web")
        );
    }

    #[test]
    fn the_applications_namespaces_put_their_culprits_first() {
        let findings = findings_from_state(&degraded_state()).unwrap();
        let diagnosis = diagnose(&findings, &["other".to_string()]);
        assert_eq!(
            diagnosis.component.as_deref(),
            Some("node worker-2 + pod/batch-1")
        );
        assert_eq!(diagnosis.namespace.as_deref(), Some("other"));
        // The out-of-scope culprit is still listed, after.
        assert_eq!(diagnosis.culprits.len(), 2);
        assert_eq!(diagnosis.culprits[1].pod.as_deref(), Some("db-0"));
    }

    #[test]
    fn nothing_moved_means_no_component_and_says_why() {
        let healthy = json!({"node": "worker-1", "state": "healthy", "explanation": []});
        let diagnosis = diagnose(&findings_from_state(&healthy).unwrap(), &[]);
        assert_eq!(diagnosis.component, None);
        assert!(diagnosis.evidence.is_empty());
        let learning = json!({"node": "worker-1", "state": "learning"});
        let diagnosis = diagnose(&findings_from_state(&learning).unwrap(), &[]);
        assert_eq!(diagnosis.component, None);
        assert!(diagnosis.description.contains("worker-1 still learning"));
        assert!(findings_from_state(&json!({"state": "on fire"})).is_err());
    }

    #[test]
    fn a_degraded_node_without_culprits_blames_the_node() {
        let mut state = degraded_state();
        state["culprits"] = json!([]);
        let diagnosis = diagnose(&findings_from_state(&state).unwrap(), &[]);
        assert_eq!(diagnosis.component.as_deref(), Some("node worker-2"));
        assert_eq!(diagnosis.namespace, None);
        assert!(
            diagnosis
                .description
                .contains("No workload on it stands out")
        );
        let text = diagnosis.text();
        assert!(text.starts_with("component: node worker-2\nnamespace: none\ndescription: "));
    }
}
