//! Cgroup path → who runs there: a Kubernetes pod and container (from the kubelet's layout,
//! cgroupfs and systemd drivers; containerd, CRI-O and Docker scopes), a container outside
//! Kubernetes (podman, Docker, containerd), a systemd service, else the path itself.
//! Pure string work, tested on the layouts the kubelet and the runtimes write.

use serde::Serialize;

/// What a cgroup path says about its workload, before any name is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identity {
    /// A Kubernetes pod's cgroup (`container_id` is `None` for the pod-level cgroup itself).
    Pod {
        /// The pod's UID, with dashes (the systemd driver writes underscores).
        pod_uid: String,
        container_id: Option<String>,
    },
    /// A container no pod owns.
    Container {
        /// podman, docker or containerd.
        runtime: &'static str,
        id: String,
    },
    /// A systemd service (`nginx.service`).
    Service { unit: String },
    /// Anything else: the cgroup path, relative to the hierarchy's root ("/" for the root).
    Path { path: String },
    /// A cgroup removed before it could be named.
    Exited { cgroup_id: u64 },
}

/// The container id in a runtime's scope or directory name, with the runtime: systemd scopes
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`;
/// cgroupfs directories `crio-<id>`, `libpod-<id>`, or a bare 64-hex id. Conmon's scopes
/// (`crio-conmon-<id>`, `libpod-conmon-<id>`) belong to the container they monitor.
fn container_of(component: &str) -> Option<(&'static str, String)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("crio-conmon-", "cri-o"),
        ("crio-", "cri-o"),
        ("cri-dockerd-", "docker"),
        ("docker-", "docker"),
        ("libpod-conmon-", "podman"),
        ("libpod-", "podman"),
        ("nerdctl-", "containerd"),
    ] {
        if let Some(id) = name.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Some((runtime, id.to_string()));
        }
    }
    is_container_id(name).then(|| ("", name.to_string()))
}

/// Runtimes name containers by 64 hex digits (an id shortened to 12 or more is accepted too).
fn is_container_id(id: &str) -> bool {
    (12..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID from a kubelet pod cgroup: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with underscores>.slice` (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    let uid = if let Some(slice) = component.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        component.strip_prefix("pod")?.to_string()
    };
    let is_uid = uid.len() == 36
        && uid.bytes().enumerate().all(|(n, b)| match n {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    is_uid.then_some(uid)
}

/// What the cgroup at `path` (relative to its hierarchy's root, leading `/` or not) runs.
pub fn identify(path: &str) -> Identity {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // Kubernetes: a `kubepods` component (`kubepods`, `kubepods.slice`, or a nested
    // `kubelet-kubepods.slice`), then a pod cgroup at some depth below it (QoS classes sit
    // between), then the container's.
    if let Some(start) = components.iter().position(|c| c.contains("kubepods")) {
        for (n, component) in components.iter().enumerate().skip(start) {
            if let Some(pod_uid) = pod_uid_of(component) {
                let container_id = components
                    .get(n + 1)
                    .and_then(|child| container_of(child))
                    .map(|(_, id)| id);
                return Identity::Pod {
                    pod_uid,
                    container_id,
                };
            }
        }
    }
    // A container outside Kubernetes: the first component naming one (podman's
    // `libpod_parent/libpod-<id>`, `machine.slice/libpod-<id>.scope` and, on v2, its
    // `…/container` child; Docker's `docker/<id>` and `system.slice/docker-<id>.scope`;
    // containerd's `<namespace>/<id>` is taken only under a known parent, as a bare hex
    // directory elsewhere may be anything).
    for (n, component) in components.iter().enumerate() {
        if let Some((runtime, id)) = container_of(component) {
            let runtime = match (runtime, n.checked_sub(1).map(|p| components[p])) {
                ("", Some("docker")) => "docker",
                ("", Some("libpod_parent")) => "podman",
                ("", Some("default" | "k8s.io" | "moby")) => "containerd",
                ("", _) => continue,
                (runtime, _) => runtime,
            };
            return Identity::Container { runtime, id };
        }
    }
    // A systemd service: the deepest `.service` (a user's `user@1000.service/app.slice/
    // foo.service` is foo.service).
    if let Some(unit) = components.iter().rev().find(|c| c.ends_with(".service")) {
        return Identity::Service {
            unit: unit.to_string(),
        };
    }
    Identity::Path {
        path: format!("/{}", components.join("/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8b2f2a4e-1c3d-4f5e-9a6b-7c8d9e0f1a2b";
    const ID: &str = "4c4b2d7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829304";

    fn pod(container: Option<&str>) -> Identity {
        Identity::Pod {
            pod_uid: UID.into(),
            container_id: container.map(str::to_string),
        }
    }

    /// The kubelet's cgroupfs driver (`pkg/kubelet/cm/cgroup_manager_linux.go`: `kubepods`,
    /// then the QoS class for burstable and best-effort pods, then `pod<uid>`), with each
    /// runtime's container cgroup under it.
    #[test]
    fn kubelet_cgroupfs_layouts() {
        for (path, expected) in [
            // containerd and Docker (cri-dockerd) name the container's cgroup by its id.
            (format!("kubepods/burstable/pod{UID}/{ID}"), pod(Some(ID))),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), pod(Some(ID))),
            // Guaranteed pods sit directly under kubepods.
            (format!("/kubepods/pod{UID}/{ID}"), pod(Some(ID))),
            // CRI-O with cgroupfs: `crio-<id>`, and conmon beside it.
            (
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                pod(Some(ID)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
                pod(Some(ID)),
            ),
            // The pod-level cgroup itself.
            (format!("/kubepods/burstable/pod{UID}"), pod(None)),
        ] {
            assert_eq!(identify(&path), expected, "{path}");
        }
    }

    /// The systemd driver: slices named by the path (`kubepods-burstable-pod<uid>.slice`, the
    /// UID's dashes turned into underscores, since a dash nests slices), with the runtimes'
    /// scopes: `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`.
    #[test]
    fn kubelet_systemd_layouts() {
        let slice = UID.replace('-', "_");
        for (path, expected) in [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Some(ID)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{slice}.slice/crio-{ID}.scope"
                ),
                pod(Some(ID)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{slice}.slice/docker-{ID}.scope"),
                pod(Some(ID)),
            ),
            // kind and other nested kubelets put kubepods under their own slice.
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{slice}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Some(ID)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice}.slice"
                ),
                pod(None),
            ),
            // The QoS slice alone is no pod.
            (
                "/kubepods.slice/kubepods-burstable.slice".to_string(),
                Identity::Path {
                    path: "/kubepods.slice/kubepods-burstable.slice".into(),
                },
            ),
        ] {
            assert_eq!(identify(&path), expected, "{path}");
        }
    }

    #[test]
    fn containers_outside_kubernetes() {
        let podman = |id: &str| Identity::Container {
            runtime: "podman",
            id: id.into(),
        };
        let docker = |id: &str| Identity::Container {
            runtime: "docker",
            id: id.into(),
        };
        for (path, expected) in [
            // podman with the cgroupfs manager (cgroup v1 here: read from /proc/<pid>/cgroup).
            (format!("/libpod_parent/libpod-{ID}"), podman(ID)),
            (format!("/libpod_parent/{ID}"), podman(ID)),
            // podman with systemd: machine.slice for root, the user's slice rootless; on v2
            // the container's processes sit in a `container` child.
            (format!("/machine.slice/libpod-{ID}.scope"), podman(ID)),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                podman(ID),
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                podman(ID),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                podman(ID),
            ),
            // Docker: cgroupfs `docker/<id>`, systemd `system.slice/docker-<id>.scope`.
            (format!("/docker/{ID}"), docker(ID)),
            (format!("/system.slice/docker-{ID}.scope"), docker(ID)),
            // containerd without Kubernetes (ctr, nerdctl): `<namespace>/<id>`.
            (
                format!("/default/{ID}"),
                Identity::Container {
                    runtime: "containerd",
                    id: ID.into(),
                },
            ),
        ] {
            assert_eq!(identify(&path), expected, "{path}");
        }
    }

    #[test]
    fn services_and_everything_else() {
        for (path, expected) in [
            (
                "/system.slice/nginx.service",
                Identity::Service {
                    unit: "nginx.service".into(),
                },
            ),
            (
                "system.slice/containerd.service",
                Identity::Service {
                    unit: "containerd.service".into(),
                },
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
                Identity::Service {
                    unit: "foo.service".into(),
                },
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                Identity::Path {
                    path: "/user.slice/user-1000.slice/session-3.scope".into(),
                },
            ),
            ("", Identity::Path { path: "/".into() }),
            // A bare hex directory under an unknown parent is not taken for a container.
            (
                "/batch/0123456789abcdef",
                Identity::Path {
                    path: "/batch/0123456789abcdef".into(),
                },
            ),
            // Not a UID: no pod.
            (
                "/kubepods/burstable/podnotauid/abc",
                Identity::Path {
                    path: "/kubepods/burstable/podnotauid/abc".into(),
                },
            ),
        ] {
            assert_eq!(identify(path), expected, "{path}");
        }
    }
}
