//! The rules the rendered objects must keep: the DaemonSet's least privilege, probes,
//! resources and host paths, the network policy, RBAC, and what the objects say about each
//! other. Each returns every violation it finds, so a test can show a bad manifest caught.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, PodSpec},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::{APP_LABEL, METRICS_PORT, NAMESPACE, objects::Object};

/// A host path the DaemonSet may mount, and why.
#[derive(Debug, Clone, Copy)]
pub struct HostPath {
    pub path: &'static str,
    /// Mounted read-only in every container that mounts it.
    pub read_only: bool,
    /// Only with the XDP drop list.
    pub xdp_only: bool,
}

/// Every host path the collector may see: tracefs (tracepoints), BTF, cgroupfs (throttling
/// of every pod), bpffs (the pinned drop list, XDP only). Nothing else of the host.
pub const ALLOWED_HOST_PATHS: &[HostPath] = &[
    HostPath {
        path: "/sys/kernel/tracing",
        read_only: true,
        xdp_only: false,
    },
    HostPath {
        path: "/sys/kernel/btf",
        read_only: true,
        xdp_only: false,
    },
    HostPath {
        path: "/sys/fs/cgroup",
        read_only: true,
        xdp_only: false,
    },
    HostPath {
        path: "/sys/fs/bpf",
        read_only: false,
        xdp_only: true,
    },
    // The learned baseline kept across restarts: the one path the collector writes.
    HostPath {
        path: "/var/lib/nodestate",
        read_only: false,
        xdp_only: false,
    },
];

/// Capabilities a container may add; NET_ADMIN only with the XDP drop list.
pub const ALLOWED_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYS_RESOURCE"];
pub const XDP_CAPABILITY: &str = "NET_ADMIN";
/// The environment variable that turns the XDP drop list on.
pub const XDP_ENV: &str = "NODESTATE_XDP_IFACE";

fn container_rules(container: &Container, xdp: bool, violations: &mut Vec<String>) {
    let name = &container.name;
    let mut fail = |message: String| violations.push(format!("container {name}: {message}"));
    let Some(security) = &container.security_context else {
        fail("no securityContext".into());
        return;
    };
    if security.privileged == Some(true) {
        fail("privileged".into());
    }
    if security.allow_privilege_escalation != Some(false) {
        fail("allowPrivilegeEscalation is not false".into());
    }
    if security.read_only_root_filesystem != Some(true) {
        fail("readOnlyRootFilesystem is not true".into());
    }
    // Chosen, not inherited from whatever the kubelet defaults to (deploy/README.md says why
    // it is Unconfined).
    if security.seccomp_profile.is_none() {
        fail("no seccompProfile".into());
    }
    match &security.capabilities {
        None => fail("no capabilities listed".into()),
        Some(capabilities) => {
            if !capabilities
                .drop
                .iter()
                .flatten()
                .any(|capability| capability == "ALL")
            {
                fail("capabilities do not drop ALL".into());
            }
            let added = capabilities.add.as_deref().unwrap_or_default();
            if added.is_empty() {
                fail("adds no capability (it cannot load programs without BPF)".into());
            }
            for capability in added {
                let allowed = ALLOWED_CAPABILITIES.contains(&capability.as_str())
                    || (xdp && capability == XDP_CAPABILITY);
                if !allowed {
                    fail(format!("capability {capability} is not allowed here"));
                }
            }
        }
    }
    match &container.resources {
        None => fail("no resources".into()),
        Some(resources) => {
            for (what, set) in [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ] {
                for resource in ["cpu", "memory"] {
                    if !set.as_ref().is_some_and(|set| set.contains_key(resource)) {
                        fail(format!("no {resource} in resources.{what}"));
                    }
                }
            }
        }
    }
    for mount in container.volume_mounts.iter().flatten() {
        if mount.mount_propagation.as_deref() == Some("Bidirectional") {
            fail(format!(
                "mount {} is Bidirectional (needs a privileged container)",
                mount.name
            ));
        }
    }
}

fn probe_rules(container: &Container, violations: &mut Vec<String>) {
    let name = &container.name;
    let port_named = |port: &IntOrString| match port {
        IntOrString::String(port) => port == METRICS_PORT.0,
        IntOrString::Int(port) => *port == METRICS_PORT.1,
    };
    let has_port = container.ports.iter().flatten().any(|port| {
        port.name.as_deref() == Some(METRICS_PORT.0) && port.container_port == METRICS_PORT.1
    });
    if !has_port {
        violations.push(format!(
            "container {name}: no port {} = {}",
            METRICS_PORT.0, METRICS_PORT.1
        ));
    }
    for (what, probe, path) in [
        ("livenessProbe", &container.liveness_probe, "/healthz"),
        ("readinessProbe", &container.readiness_probe, "/readyz"),
    ] {
        let ok = probe
            .as_ref()
            .and_then(|probe| probe.http_get.as_ref())
            .is_some_and(|get| get.path.as_deref() == Some(path) && port_named(&get.port));
        if !ok {
            violations.push(format!(
                "container {name}: {what} is not an HTTP GET of {path} on the metrics port"
            ));
        }
    }
    let node_name = container.env.iter().flatten().any(|var| {
        var.name == "NODE_NAME"
            && var
                .value_from
                .as_ref()
                .and_then(|from| from.field_ref.as_ref())
                .is_some_and(|field| field.field_path == "spec.nodeName")
    });
    if !node_name {
        violations.push(format!(
            "container {name}: NODE_NAME does not come from fieldRef spec.nodeName"
        ));
    }
}

fn pod_rules(pod: &PodSpec, xdp: bool, violations: &mut Vec<String>) {
    if pod.host_network != Some(true) {
        violations.push("hostNetwork is not true (XDP and per-node targets need it)".into());
    }
    if pod.host_pid == Some(true) {
        violations.push("hostPID: the collector reads no host process".into());
    }
    if pod.host_ipc == Some(true) {
        violations.push("hostIPC".into());
    }
    // The token is mounted for the read-only watch of the node's pods; what it may do is
    // checked on the ClusterRole (`rbac_violations`).
    let everywhere =
        pod.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        });
    if !everywhere {
        violations.push("no toleration `operator: Exists` (runs on every node)".into());
    }
    let containers: Vec<&Container> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .collect();
    for volume in pod.volumes.iter().flatten() {
        let Some(host) = &volume.host_path else {
            continue;
        };
        let Some(allowed) = ALLOWED_HOST_PATHS.iter().find(|a| a.path == host.path) else {
            violations.push(format!(
                "volume {}: host path {} is not in the allowed list",
                volume.name, host.path
            ));
            continue;
        };
        if allowed.xdp_only && !xdp {
            violations.push(format!(
                "volume {}: host path {} is only for the XDP drop list",
                volume.name, host.path
            ));
        }
        if allowed.read_only {
            for container in &containers {
                for mount in container.volume_mounts.iter().flatten() {
                    if mount.name == volume.name && mount.read_only != Some(true) {
                        violations.push(format!(
                            "container {}: host path {} must be mounted read-only",
                            container.name, host.path
                        ));
                    }
                }
            }
        }
    }
}

/// Whether the DaemonSet turns the XDP drop list on (then NET_ADMIN and bpffs are allowed).
pub fn uses_xdp(daemonset: &DaemonSet) -> bool {
    daemonset.spec.template.spec.as_ref().is_some_and(|pod| {
        pod.containers
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .any(|var| var.name == XDP_ENV)
    })
}

/// Every rule the DaemonSet breaks (empty when it keeps them all).
pub fn daemonset_violations(daemonset: &DaemonSet) -> Vec<String> {
    let mut violations = Vec::new();
    let Some(pod) = daemonset.spec.template.spec.as_ref() else {
        return vec!["no pod spec".into()];
    };
    let xdp = uses_xdp(daemonset);
    pod_rules(pod, xdp, &mut violations);
    for container in &pod.containers {
        container_rules(container, xdp, &mut violations);
        probe_rules(container, &mut violations);
    }
    for container in pod.init_containers.iter().flatten() {
        container_rules(container, xdp, &mut violations);
    }
    violations
}

/// Every way `policy` lets more in than `port` (TCP) from selected pods, to the pods labelled
/// `app`: it must select exactly those pods, restrict ingress, and each ingress rule must
/// name its sources (an empty `from` admits everyone) and only that port.
pub fn network_policy_violations(
    policy: &NetworkPolicy,
    app: (&str, &str),
    port: i32,
) -> Vec<String> {
    let name = policy.metadata.name.as_deref().unwrap_or("<unnamed>");
    let mut violations = Vec::new();
    let mut fail = |message: String| violations.push(format!("NetworkPolicy {name}: {message}"));
    let Some(spec) = &policy.spec else {
        fail("no spec".into());
        return violations;
    };
    let selects = spec
        .pod_selector
        .as_ref()
        .and_then(|selector| selector.match_labels.as_ref())
        .is_some_and(|labels| {
            labels.len() == 1 && labels.get(app.0).map(String::as_str) == Some(app.1)
        });
    if !selects {
        fail(format!(
            "does not select the pods labelled {}={}",
            app.0, app.1
        ));
    }
    if !spec
        .policy_types
        .iter()
        .flatten()
        .any(|kind| kind == "Ingress")
    {
        fail("policyTypes lacks Ingress".into());
    }
    let rules = spec.ingress.as_deref().unwrap_or_default();
    if rules.is_empty() {
        fail("no ingress rule: nothing, not even the scraper, gets in".into());
    }
    for (index, rule) in rules.iter().enumerate() {
        let peers = rule.from.as_deref().unwrap_or_default();
        if peers.is_empty() {
            fail(format!(
                "ingress[{index}] has no `from`: it admits every source"
            ));
        }
        for peer in peers {
            if peer.ip_block.is_some() {
                fail(format!(
                    "ingress[{index}] admits an ipBlock: select pods instead"
                ));
            }
            if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                fail(format!("ingress[{index}] has a peer that selects nothing"));
            }
        }
        let ports = rule.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            fail(format!(
                "ingress[{index}] has no `ports`: it admits every port"
            ));
        }
        for allowed in ports {
            let tcp = allowed.protocol.as_deref().unwrap_or("TCP") == "TCP";
            if !tcp || allowed.port != Some(IntOrString::Int(port)) || allowed.end_port.is_some() {
                fail(format!(
                    "ingress[{index}] admits {:?}/{:?}, not only TCP {port}",
                    allowed.protocol, allowed.port
                ));
            }
        }
    }
    violations
}

/// A ConfigMap Grafana's dashboard sidecar loads (label `grafana_dashboard`).
pub fn is_grafana_dashboard(object: &Object) -> bool {
    matches!(object, Object::ConfigMap(_))
        && object
            .metadata()
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key("grafana_dashboard"))
}

/// What the service account may do: read pods (get, list, watch), nothing else, and only the
/// collector's account is bound.
pub fn rbac_violations(objects: &[Object]) -> Vec<String> {
    let mut violations = Vec::new();
    for object in objects {
        match object {
            Object::ClusterRole(role) => {
                for rule in role.rules.iter().flatten() {
                    let groups = rule.api_groups.clone().unwrap_or_default();
                    let resources = rule.resources.clone().unwrap_or_default();
                    let read_only = rule
                        .verbs
                        .iter()
                        .all(|verb| ["get", "list", "watch"].contains(&verb.as_str()));
                    if groups != [""] || resources != ["pods"] || !read_only {
                        violations.push(format!(
                            "ClusterRole {:?} grants {:?} on {groups:?}/{resources:?}: only get, list and watch of pods",
                            role.metadata.name, rule.verbs
                        ));
                    }
                }
            }
            Object::ClusterRoleBinding(binding) => {
                for subject in binding.subjects.iter().flatten() {
                    if subject.kind != "ServiceAccount"
                        || subject.name != "nodestate"
                        || subject.namespace.as_deref() != Some(NAMESPACE)
                    {
                        violations.push(format!(
                            "ClusterRoleBinding {:?} binds {} {}: only the collector's account",
                            binding.metadata.name, subject.kind, subject.name
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    violations
}

/// What the rendered objects must say about each other: one namespace, the Service and the
/// ServiceMonitor select the DaemonSet's pods, the ConfigMap the pods mount exists, the
/// service account reads pods and nothing else.
pub fn consistency_violations(objects: &[Object]) -> Vec<String> {
    let mut violations = rbac_violations(objects);
    // The Grafana dashboard's ConfigMap (components/grafana-dashboard) is for Grafana, not
    // the pods: the one-of-each rule is about the daemon's own objects.
    let count = |kind: &str| {
        objects
            .iter()
            .filter(|o| o.kind() == kind && !is_grafana_dashboard(o))
            .count()
    };
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "DaemonSet",
    ] {
        if count(kind) != 1 {
            violations.push(format!("{} {kind} objects, expected 1", count(kind)));
        }
    }
    for object in objects {
        let meta = object.metadata();
        let name = meta.name.as_deref().unwrap_or("<unnamed>");
        match object {
            Object::Namespace(_) if name != NAMESPACE => {
                violations.push(format!("Namespace {name}, expected {NAMESPACE}"));
            }
            Object::Namespace(_) => {}
            // Cluster-scoped: no namespace.
            Object::ClusterRole(_) | Object::ClusterRoleBinding(_) => {}
            _ if meta.namespace.as_deref() != Some(NAMESPACE) => violations.push(format!(
                "{} {name} is in namespace {:?}, expected {NAMESPACE}",
                object.kind(),
                meta.namespace
            )),
            _ => {}
        }
    }
    let selects_app = |labels: Option<&BTreeMap<String, String>>| {
        labels.is_some_and(|labels| {
            labels.len() == 1 && labels.get(APP_LABEL.0).map(String::as_str) == Some(APP_LABEL.1)
        })
    };
    for object in objects {
        match object {
            Object::DaemonSet(daemonset) => {
                let spec = &daemonset.spec;
                let pod_labels = spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.as_ref());
                if pod_labels
                    .and_then(|l| l.get(APP_LABEL.0))
                    .map(String::as_str)
                    != Some(APP_LABEL.1)
                {
                    violations.push("the DaemonSet's pods lack the app label".into());
                }
                if !selects_app(spec.selector.match_labels.as_ref()) {
                    violations.push("the DaemonSet does not select by the app label".into());
                }
                let pod = spec.template.spec.as_ref();
                if pod
                    .and_then(|p| p.service_account_name.as_deref())
                    .is_none_or(|sa| {
                        !objects.iter().any(|o| {
                            matches!(o, Object::ServiceAccount(_))
                                && o.metadata().name.as_deref() == Some(sa)
                        })
                    })
                {
                    violations.push("the DaemonSet's service account is not rendered".into());
                }
                for volume in pod.and_then(|p| p.volumes.as_ref()).into_iter().flatten() {
                    if let Some(config) = &volume.config_map {
                        let found = objects.iter().any(|o| {
                            matches!(o, Object::ConfigMap(_))
                                && o.metadata().name.as_deref() == Some(config.name.as_str())
                        });
                        if !found {
                            violations.push(format!(
                                "volume {} names ConfigMap {}, which is not rendered",
                                volume.name, config.name
                            ));
                        }
                    }
                }
            }
            Object::Service(service) => {
                let spec = service.spec.as_ref();
                if !selects_app(spec.and_then(|s| s.selector.as_ref())) {
                    violations.push("the Service does not select by the app label".into());
                }
                let port_ok = spec.and_then(|s| s.ports.as_ref()).is_some_and(|ports| {
                    ports.iter().any(|p| {
                        p.name.as_deref() == Some(METRICS_PORT.0)
                            && p.port == METRICS_PORT.1
                            && p.target_port
                                == Some(IntOrString::String(METRICS_PORT.0.to_string()))
                    })
                });
                if !port_ok {
                    violations.push("the Service has no metrics port".into());
                }
            }
            Object::NetworkPolicy(policy) => {
                violations.extend(network_policy_violations(policy, APP_LABEL, METRICS_PORT.1));
            }
            Object::ServiceMonitor(monitor) => {
                if !selects_app(monitor.spec.selector.match_labels.as_ref()) {
                    violations.push("the ServiceMonitor does not select by the app label".into());
                }
                let names = monitor
                    .spec
                    .namespace_selector
                    .as_ref()
                    .and_then(|s| s.match_names.as_ref());
                if names.is_none_or(|names| names.iter().all(|n| n != NAMESPACE)) {
                    violations.push(format!("the ServiceMonitor does not look in {NAMESPACE}"));
                }
                if !monitor
                    .spec
                    .endpoints
                    .iter()
                    .any(|e| e.port.as_deref() == Some(METRICS_PORT.0))
                {
                    violations.push("the ServiceMonitor does not scrape the metrics port".into());
                }
            }
            _ => {}
        }
    }
    violations
}
