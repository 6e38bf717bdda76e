//! Who is to blame (issue 20): the culprit gauge, present only while the node is degraded and
//! only for the top 3, and the attribution's own counters.
//!
//! Labels of `nodestate_culprit_share`: a Kubernetes container is `namespace`, `pod`,
//! `container` (pod = its UID while the API has not named it); any other workload has
//! namespace "" and pod "", and `container` is its container name, systemd unit, cgroup path
//! or `exited cgroup <id>`; `signal` is one of the cause-side signals (`oncpu_time`,
//! `io_issued`, `errors`, `exits_nonzero`, `fatal_signals`, `oom_victims`, `tcp_failures`).
//! At most 3 series: the cardinality is bounded whatever runs on the node.

use prometheus_client::encoding::DescriptorEncoder;

use super::{counters, gauges};
use crate::{export::ExporterState, judge::NodeState};

pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    let culprits: Vec<_> = if state.health.state == NodeState::Degraded {
        state
            .culprits
            .culprits
            .iter()
            .take(crate::judge::culprits::TOP)
            .map(|blame| {
                (
                    vec![
                        ("namespace", blame.workload.namespace.clone()),
                        ("pod", blame.workload.pod.clone()),
                        ("container", blame.workload.container.clone()),
                        ("signal", blame.signal.as_str().to_string()),
                    ],
                    blame.share,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    gauges(
        encoder,
        "nodestate_culprit_share",
        "While degraded: the top 3 workloads' share (0-1) of the node's rise in the signal that moved (namespace/pod empty outside Kubernetes)",
        None,
        &culprits,
    )?;
    let stats = &state.attribution_stats;
    let none: Vec<(&str, String)> = Vec::new();
    let bound = crate::judge::culprits::MAX_WORKLOADS;
    let baselines_help = format!(
        "Workload baselines dropped at the culprit ranking's bound of {bound} workloads (the least recently seen first)"
    );
    let episode_help = format!(
        "Workloads an episode stopped following at the bound of {bound} (the least risen first): they can no longer be named for it"
    );
    for (name, help, value) in [
        (
            "nodestate_cgroup_walks",
            "Walks of the cgroup hierarchy to name cgroup ids (at most one per window)",
            stats.walk.walks,
        ),
        (
            "nodestate_cgroup_walks_truncated",
            "Walks stopped at their bound of directories (cgroups past it stay unnamed)",
            stats.walk.truncated,
        ),
        (
            "nodestate_cgroups_exited",
            "Cgroup ids looked up that no walk found: cgroups removed before they were named",
            stats.walk.exited,
        ),
        (
            "nodestate_container_name_errors",
            "Reads of a container runtime's container list that failed to parse",
            stats.container_name_errors,
        ),
        (
            "nodestate_pod_name_fallbacks",
            "Workload rows (per window) naming a pod by its UID because the Kubernetes API had not named it",
            stats.pod_name_fallbacks,
        ),
        (
            "nodestate_kube_api_errors",
            "Failed list or watch calls of the Kubernetes API (unreachable, refused, garbage): pods are named by their UID meanwhile",
            stats.kube_api_errors,
        ),
        (
            "nodestate_culprit_baselines_evicted",
            baselines_help.as_str(),
            stats.baselines_evicted,
        ),
        (
            "nodestate_culprit_episode_workloads_evicted",
            episode_help.as_str(),
            stats.episode_workloads_evicted,
        ),
    ] {
        counters(encoder, name, help, None, &[(none.clone(), value as f64)])?;
    }
    Ok(())
}
