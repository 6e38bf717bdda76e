//! From the cgroup ids in a window's [`CgroupTable`] to named workloads (issue 20): `paths`
//! (id → cgroup path, a cached walk of the hierarchy), `identity` (path → pod and container,
//! container, service or path), `names` (container names from the runtimes' own files; pod
//! names from the Kubernetes API when a watch fills [`PodNames`]).
//!
//! Between the window stage and the judge: it reads the window's table and hands the judge
//! one row per workload. Nothing here waits on the network; a walk is bounded and happens at
//! most once per window.

pub mod identity;
pub mod kube;
pub mod names;
pub mod paths;

use std::collections::BTreeMap;

use collector_common::{CgroupStats, cgroup_errno};
use serde::{Deserialize, Serialize};

use crate::window::cgroups::CgroupTable;
pub use identity::{Identity, identify};
pub use names::{ContainerNames, PodInfo, PodNames};
pub use paths::{CgroupPath, CgroupPaths, WalkStats};

/// A named workload: what the culprit gauge's labels and `collector top` show.
///
/// Label scheme: a Kubernetes container is `namespace`, `pod`, `container` (while the API
/// has not named its pod: namespace "", pod = the pod UID, container = the container id's
/// first 12 digits); anything else has namespace "" and pod "", and `container` is the
/// container's name (podman, Docker, containerd), the systemd unit (`nginx.service`), the
/// cgroup path, or `exited cgroup <id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// How people name it: `shop/db-0 (postgres)`, `nginx.service`, `podman web`.
    pub name: String,
}

/// One workload's counters over the window (several cgroups may make one workload, e.g. a
/// container and its conmon).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadWindow {
    pub workload: Workload,
    pub delta: CgroupStats,
    pub cgroups: usize,
}

/// Adds `other` into `sum`, field by field (saturating).
pub fn add_stats(sum: &mut CgroupStats, other: &CgroupStats) {
    sum.oncpu_ns = sum.oncpu_ns.saturating_add(other.oncpu_ns);
    sum.runq_wait_ns = sum.runq_wait_ns.saturating_add(other.runq_wait_ns);
    sum.io_ops = sum.io_ops.saturating_add(other.io_ops);
    sum.io_bytes = sum.io_bytes.saturating_add(other.io_bytes);
    sum.io_latency_ns = sum.io_latency_ns.saturating_add(other.io_latency_ns);
    for slot in 0..cgroup_errno::COUNT {
        sum.errors[slot] = sum.errors[slot].saturating_add(other.errors[slot]);
    }
    sum.exits_nonzero = sum.exits_nonzero.saturating_add(other.exits_nonzero);
    sum.fatal_signals = sum.fatal_signals.saturating_add(other.fatal_signals);
    sum.oom_victims = sum.oom_victims.saturating_add(other.oom_victims);
    sum.reclaim_stall_ns = sum.reclaim_stall_ns.saturating_add(other.reclaim_stall_ns);
    sum.tcp_retransmits = sum.tcp_retransmits.saturating_add(other.tcp_retransmits);
    sum.tcp_resets = sum.tcp_resets.saturating_add(other.tcp_resets);
    sum.tcp_connect_failures = sum
        .tcp_connect_failures
        .saturating_add(other.tcp_connect_failures);
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Names an identity with what is known now.
pub fn name(identity: &Identity, pods: &PodNames, containers: &mut ContainerNames) -> Workload {
    let other = |container: String| Workload {
        namespace: String::new(),
        pod: String::new(),
        name: container.clone(),
        container,
    };
    match identity {
        Identity::Pod {
            pod_uid,
            container_id,
        } => match pods.get(pod_uid) {
            Some(pod) => {
                let container = match container_id {
                    Some(id) => pod
                        .containers
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| short(id).to_string()),
                    None => String::new(),
                };
                let owner = pod
                    .owner
                    .as_deref()
                    .map(|owner| format!(", {owner}"))
                    .unwrap_or_default();
                Workload {
                    name: if container.is_empty() {
                        format!("{}/{}{owner}", pod.namespace, pod.name)
                    } else {
                        format!("{}/{} ({container}{owner})", pod.namespace, pod.name)
                    },
                    namespace: pod.namespace,
                    pod: pod.name,
                    container,
                }
            }
            None => {
                let container = container_id
                    .as_deref()
                    .map(short)
                    .unwrap_or_default()
                    .to_string();
                Workload {
                    name: if container.is_empty() {
                        format!("pod {pod_uid}")
                    } else {
                        format!("pod {pod_uid} ({container})")
                    },
                    namespace: String::new(),
                    pod: pod_uid.clone(),
                    container,
                }
            }
        },
        Identity::Container { runtime, id } => {
            let container = containers
                .name(runtime, id)
                .unwrap_or_else(|| short(id).to_string());
            Workload {
                name: format!("{runtime} {container}"),
                ..other(container)
            }
        }
        Identity::Service { unit } => other(unit.clone()),
        Identity::Path { path } => other(path.clone()),
        Identity::Exited { cgroup_id } => other(format!("exited cgroup {cgroup_id}")),
    }
}

/// The daemon's resolver: ids to paths to identities to names, once per window.
#[derive(Debug)]
pub struct Resolver {
    pub paths: CgroupPaths,
    pub pods: PodNames,
    pub containers: ContainerNames,
    window: u64,
    /// Rows naming a pod by its UID because [`PodNames`] did not know it.
    pub pod_name_fallbacks: u64,
}

impl Resolver {
    pub fn new(paths: CgroupPaths, pods: PodNames, containers: ContainerNames) -> Self {
        Self {
            paths,
            pods,
            containers,
            window: 0,
            pod_name_fallbacks: 0,
        }
    }

    /// The window's table, one row per workload (rows of cgroups naming the same workload
    /// summed), busiest on CPU first.
    pub fn workloads(&mut self, table: &CgroupTable) -> Vec<WorkloadWindow> {
        self.window += 1;
        self.containers.new_window(self.window);
        let ids: Vec<u64> = table.rows.iter().map(|row| row.cgroup_id).collect();
        let paths = self.paths.resolve(&ids, self.window);
        let mut by_workload: BTreeMap<Workload, (CgroupStats, usize)> = BTreeMap::new();
        for row in &table.rows {
            let identity = match paths.get(&row.cgroup_id) {
                Some(CgroupPath::Live(path)) => identify(path),
                _ => Identity::Exited {
                    cgroup_id: row.cgroup_id,
                },
            };
            let workload = name(&identity, &self.pods, &mut self.containers);
            if matches!(identity, Identity::Pod { .. }) && workload.namespace.is_empty() {
                self.pod_name_fallbacks += 1;
            }
            let entry = by_workload.entry(workload).or_default();
            add_stats(&mut entry.0, &row.delta);
            entry.1 += 1;
        }
        let mut rows: Vec<WorkloadWindow> = by_workload
            .into_iter()
            .map(|(workload, (delta, cgroups))| WorkloadWindow {
                workload,
                delta,
                cgroups,
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.delta.oncpu_ns));
        rows
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::window::cgroups::CgroupWindow;

    #[test]
    fn a_table_becomes_named_workloads() {
        let root = tempfile::tempdir().unwrap();
        let id = "41925a08c6bbdf7876a9c1de883f4beeb87e92db1f6e47a3cd3f21bb9c9dc9c1";
        let uid = "8b2f2a4e-1c3d-4f5e-9a6b-7c8d9e0f1a2b";
        let container = root.path().join(format!("libpod_parent/libpod-{id}"));
        let conmon = root
            .path()
            .join(format!("libpod_parent/libpod-conmon-{id}"));
        let service = root.path().join("system.slice/nginx.service");
        let pod = root
            .path()
            .join(format!("kubepods/burstable/pod{uid}/{id}"));
        for dir in [&container, &conmon, &service, &pod] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let storage = tempfile::tempdir().unwrap();
        std::fs::write(
            storage.path().join("containers.json"),
            format!(r#"[{{"id":"{id}","names":["shop-db"],"image":"x"}}]"#),
        )
        .unwrap();
        let pods = PodNames::default();
        pods.set(
            uid,
            PodInfo {
                namespace: "shop".into(),
                name: "db-0".into(),
                owner: Some("StatefulSet db".into()),
                containers: [(id.to_string(), "postgres".to_string())].into(),
            },
        );
        let mut resolver = Resolver::new(
            CgroupPaths::new(Some(root.path().to_path_buf())),
            pods,
            ContainerNames::new(
                Some(storage.path().join("containers.json")),
                None::<std::path::PathBuf>,
            ),
        );
        let ino = |path: &std::path::Path| std::fs::metadata(path).unwrap().ino();
        let stats = |oncpu_ns| CgroupStats {
            oncpu_ns,
            ..CgroupStats::default()
        };
        let table = CgroupTable {
            window_s: 1.0,
            rows: vec![
                CgroupWindow {
                    cgroup_id: ino(&container),
                    delta: stats(100),
                },
                CgroupWindow {
                    cgroup_id: ino(&conmon),
                    delta: stats(5),
                },
                CgroupWindow {
                    cgroup_id: ino(&service),
                    delta: stats(50),
                },
                CgroupWindow {
                    cgroup_id: ino(&pod),
                    delta: stats(500),
                },
                CgroupWindow {
                    cgroup_id: 987_654_321,
                    delta: stats(1),
                },
            ],
            ..CgroupTable::default()
        };
        let rows = resolver.workloads(&table);
        let named: Vec<(&str, &str, &str, &str, u64, usize)> = rows
            .iter()
            .map(|row| {
                (
                    row.workload.namespace.as_str(),
                    row.workload.pod.as_str(),
                    row.workload.container.as_str(),
                    row.workload.name.as_str(),
                    row.delta.oncpu_ns,
                    row.cgroups,
                )
            })
            .collect();
        assert_eq!(
            named,
            vec![
                (
                    "shop",
                    "db-0",
                    "postgres",
                    "shop/db-0 (postgres, StatefulSet db)",
                    500,
                    1
                ),
                ("", "", "shop-db", "podman shop-db", 105, 2),
                ("", "", "nginx.service", "nginx.service", 50, 1),
                (
                    "",
                    "",
                    "exited cgroup 987654321",
                    "exited cgroup 987654321",
                    1,
                    1
                ),
            ]
        );
    }

    #[test]
    fn a_pod_the_api_has_not_named_falls_back_to_its_uid() {
        let uid = "8b2f2a4e-1c3d-4f5e-9a6b-7c8d9e0f1a2b";
        let workload = name(
            &Identity::Pod {
                pod_uid: uid.into(),
                container_id: Some("4c4b2d7e9f0a1b2c3d4e".into()),
            },
            &PodNames::default(),
            &mut ContainerNames::new(None::<std::path::PathBuf>, None::<std::path::PathBuf>),
        );
        assert_eq!(workload.namespace, "");
        assert_eq!(workload.pod, uid);
        assert_eq!(workload.container, "4c4b2d7e9f0a");
        assert_eq!(workload.name, format!("pod {uid} (4c4b2d7e9f0a)"));
    }
}
