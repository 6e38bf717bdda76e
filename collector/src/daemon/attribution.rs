//! Naming a judged window's workloads and culprits from its per-cgroup table.

use tracing::info;

use super::CollectOptions;
use crate::window::cgroups::CgroupMode;

/// The resolver and culprit ranking, on the hierarchy this node names cgroups by.
pub(super) fn start_attribution(
    options: &CollectOptions,
    mode: CgroupMode,
) -> crate::judge::culprits::Attributor {
    use crate::workload::{ContainerNames, PodNames, Resolver, paths};
    let cgroup_fs = std::path::Path::new(paths::CGROUP_FS);
    let root = paths::hierarchy_root(mode, cgroup_fs);
    info!(?mode, root = ?root, node = %options.node, "attribution: cgroup ids are named from this hierarchy");
    let pods = PodNames::default();
    if let Some(source) = options.kube_api.clone() {
        tokio::spawn(crate::workload::kube::watch_pods(
            source,
            options.node.clone(),
            pods.clone(),
        ));
    }
    crate::judge::culprits::Attributor::new(Resolver::new(
        paths::CgroupPaths::new(root),
        pods,
        ContainerNames::system(),
    ))
}

/// Names the window's workloads and ranks its culprits: the `/workloads` view, the
/// attribution, and the resolver's counters.
pub(super) fn attribute(
    attributor: &mut crate::judge::culprits::Attributor,
    table: &crate::window::cgroups::CgroupTable,
    verdict: &crate::judge::Verdict,
    node: &str,
) -> (
    crate::export::WorkloadsView,
    crate::judge::culprits::Attribution,
    crate::export::AttributionStats,
) {
    let (rows, attribution) = attributor.window(table, verdict);
    let view = crate::export::WorkloadsView {
        node: node.to_string(),
        window_s: table.window_s,
        state: verdict.state.to_string(),
        workloads: rows
            .iter()
            .map(|row| crate::export::WorkloadRow {
                workload: row.workload.clone(),
                cgroups: row.cgroups,
                rates: crate::export::signal_rates(&row.delta, table.window_s),
            })
            .collect(),
        unattributed: crate::export::signal_rates(&table.unattributed, table.window_s),
        refused: crate::export::signal_rates(&table.refused, table.window_s),
    };
    let resolver = &attributor.resolver;
    let stats = crate::export::AttributionStats {
        walk: resolver.paths.stats,
        container_name_errors: resolver.containers.read_errors,
        pod_name_fallbacks: resolver.pod_name_fallbacks,
        kube_api_errors: resolver.pods.api_errors(),
        tracked_workloads: attributor.ranker.tracked() as u64,
        baselines_evicted: attributor.ranker.baselines_evicted,
        episode_workloads_evicted: attributor.ranker.episode_workloads_evicted,
    };
    (view, attribution.unwrap_or_default(), stats)
}

/// `; culprits: 87% of I/O issued: shop/db-0 (postgres), …; victims: …` for the health log
/// line, or nothing when no one is named.
pub fn culprits_line(attribution: &crate::judge::culprits::Attribution) -> String {
    let join = |list: &[crate::judge::culprits::Blame]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = String::new();
    if !attribution.culprits.is_empty() {
        line.push_str(&format!("; culprits: {}", join(&attribution.culprits)));
    }
    if !attribution.victims.is_empty() {
        line.push_str(&format!("; victims: {}", join(&attribution.victims)));
    }
    line
}
