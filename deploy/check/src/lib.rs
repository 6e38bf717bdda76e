//! Offline checks of `deploy/`: render each kustomize overlay with `kubectl kustomize`, read
//! every object into the Kubernetes API's own types (k8s-openapi, generated from the API
//! server's OpenAPI schema), refuse fields those types do not know, and check the rules the
//! DaemonSet must keep (least privilege, probes, resources, host paths).
//!
//! The rules are functions returning every violation found, so a test can also show that a
//! bad manifest is caught.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The namespace every namespaced object lives in.
pub const NAMESPACE: &str = "nodestate";
/// The label that selects the DaemonSet's pods (the scrape job and the Service use it).
pub const APP_LABEL: (&str, &str) = ("app.kubernetes.io/name", "nodestate");
/// The collector's metrics port and its name.
pub const METRICS_PORT: (&str, i32) = ("metrics", 9464);

/// `deploy/`.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/check has a parent")
        .to_path_buf()
}

/// Every overlay under `deploy/overlays/`, sorted.
pub fn overlays() -> anyhow::Result<Vec<PathBuf>> {
    let dir = deploy_dir().join("overlays");
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    Ok(overlays)
}

/// `kubectl kustomize DIR`: the YAML that `kubectl apply -k DIR` would send.
pub fn kustomize(dir: &Path) -> anyhow::Result<String> {
    let kubectl = which::which("kubectl").map_err(|_| {
        anyhow::anyhow!(
            "kubectl is not installed: the deploy/ checks render the overlays with `kubectl \
             kustomize` (kubectl 1.27 or newer has kustomize built in; Debian does not package \
             it). Install kubectl from the Kubernetes project's Debian packages or its static \
             binary release, put it on PATH, and rerun"
        )
    })?;
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .with_context(|| format!("running kubectl kustomize {}", dir.display()))?;
    if !output.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("kubectl kustomize printed non-UTF-8")
}

/// The documents of a multi-document YAML stream, as JSON values (empty documents skipped).
pub fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut values = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(document)
            .with_context(|| format!("YAML document {} does not parse", index + 1))?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

/// Paths of `original` (e.g. `spec.template.spec.containers[0].securityContex`) that are
/// missing from `typed`: fields the typed struct did not keep because it does not know them.
pub fn unknown_fields(original: &Value, typed: &Value) -> Vec<String> {
    fn walk(path: &str, original: &Value, typed: Option<&Value>, found: &mut Vec<String>) {
        match original {
            Value::Object(fields) => {
                for (key, value) in fields {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match typed.and_then(|typed| typed.get(key)) {
                        Some(kept) => walk(&child, value, Some(kept), found),
                        None => found.push(child),
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let kept = typed.and_then(|typed| typed.get(index));
                    walk(&format!("{path}[{index}]"), item, kept, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk("", original, Some(typed), &mut found);
    found
}

/// prometheus-operator's PrometheusRule (monitoring.coreos.com/v1): alerting and recording
/// rule groups, as a plain Prometheus rules file writes them; an unknown field is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PrometheusRuleSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

/// One group of a rules file (Prometheus' `rule_files`, the PrometheusRule's `spec.groups`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    pub expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A plain Prometheus rules file (`groups:` at the top).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    pub groups: Vec<RuleGroup>,
}

/// prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1), the fields of its CRD
/// that we use or might; an unknown field is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMonitorSpec {
    pub selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    pub endpoints: Vec<MonitorEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitorEndpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub honor_labels: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relabelings: Option<Vec<RelabelConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_relabelings: Option<Vec<RelabelConfig>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modulus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// Relabel actions the CRD's enum allows (it accepts both spellings).
const RELABEL_ACTIONS: &[&str] = &[
    "replace",
    "keep",
    "drop",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
    "keepequal",
    "dropequal",
];

/// One rendered object, read into its API type.
#[derive(Debug, Clone)]
pub enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ConfigMap(Box<ConfigMap>),
    Service(Box<Service>),
    DaemonSet(Box<DaemonSet>),
    ServiceMonitor(Box<ServiceMonitor>),
    PrometheusRule(Box<PrometheusRule>),
    NetworkPolicy(Box<NetworkPolicy>),
    ClusterRole(Box<k8s_openapi::api::rbac::v1::ClusterRole>),
    ClusterRoleBinding(Box<k8s_openapi::api::rbac::v1::ClusterRoleBinding>),
}

impl Object {
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Namespace(o) => &o.metadata,
            Self::ServiceAccount(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::DaemonSet(o) => &o.metadata,
            Self::ServiceMonitor(o) => &o.metadata,
            Self::PrometheusRule(o) => &o.metadata,
            Self::NetworkPolicy(o) => &o.metadata,
            Self::ClusterRole(o) => &o.metadata,
            Self::ClusterRoleBinding(o) => &o.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Namespace(_) => "Namespace",
            Self::ServiceAccount(_) => "ServiceAccount",
            Self::ConfigMap(_) => "ConfigMap",
            Self::Service(_) => "Service",
            Self::DaemonSet(_) => "DaemonSet",
            Self::ServiceMonitor(_) => "ServiceMonitor",
            Self::PrometheusRule(_) => "PrometheusRule",
            Self::NetworkPolicy(_) => "NetworkPolicy",
            Self::ClusterRole(_) => "ClusterRole",
            Self::ClusterRoleBinding(_) => "ClusterRoleBinding",
        }
    }
}

/// Reads `value` as `T`, then refuses any field `T` dropped (k8s-openapi ignores unknown
/// fields, as the API server does; a misspelled field would otherwise vanish silently).
fn typed<T: DeserializeOwned + Serialize>(value: &Value, what: &str) -> anyhow::Result<T> {
    let object: T = serde_json::from_value(value.clone())
        .with_context(|| format!("{what} does not match the API schema"))?;
    let back = serde_json::to_value(&object).context("re-serializing")?;
    let unknown = unknown_fields(value, &back);
    if !unknown.is_empty() {
        bail!(
            "{what}: fields the API does not have: {}",
            unknown.join(", ")
        );
    }
    Ok(object)
}

/// Reads one rendered object by its apiVersion and kind. Kinds deploy/ does not use are
/// refused, so a new kind must be added here (and checked) before it ships.
pub fn parse_object(value: &Value) -> anyhow::Result<Object> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    let name = value["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    let what = format!("{kind} {name} ({api_version})");
    Ok(match (api_version, kind) {
        ("v1", "Namespace") => Object::Namespace(Box::new(typed(value, &what)?)),
        ("v1", "ServiceAccount") => Object::ServiceAccount(Box::new(typed(value, &what)?)),
        ("v1", "ConfigMap") => Object::ConfigMap(Box::new(typed(value, &what)?)),
        ("v1", "Service") => Object::Service(Box::new(typed(value, &what)?)),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(Box::new(typed(value, &what)?)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            Object::ClusterRole(Box::new(typed(value, &what)?))
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(Box::new(typed(value, &what)?))
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            Object::NetworkPolicy(Box::new(typed(value, &what)?))
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            let monitor: ServiceMonitor = typed(value, &what)?;
            for endpoint in &monitor.spec.endpoints {
                for relabel in endpoint.relabelings.iter().flatten() {
                    if let Some(action) = &relabel.action
                        && !RELABEL_ACTIONS.contains(&action.to_lowercase().as_str())
                    {
                        bail!("{what}: relabel action `{action}` is not one the CRD allows");
                    }
                }
            }
            Object::ServiceMonitor(Box::new(monitor))
        }
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            Object::PrometheusRule(Box::new(typed(value, &what)?))
        }
        _ => bail!("{what}: a kind deploy-check does not know; add it to parse_object"),
    })
}

/// Renders an overlay and reads every object.
pub fn render(overlay: &Path) -> anyhow::Result<Vec<Object>> {
    let yaml = kustomize(overlay)?;
    documents(&yaml)?
        .iter()
        .map(parse_object)
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("overlay {}", overlay.display()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelled_field_is_found_at_its_path() {
        let original = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "x", "lables": {"a": "b"}},
            "automountServiceAccountToken": false,
        });
        let err = parse_object(&original).unwrap_err().to_string();
        assert!(err.contains("metadata.lables"), "{err}");
    }

    #[test]
    fn unknown_fields_inside_lists_are_found() {
        let original = serde_json::json!({"a": [{"b": 1}, {"b": 2, "c": 3}]});
        let typed = serde_json::json!({"a": [{"b": 1}, {"b": 2}]});
        assert_eq!(
            unknown_fields(&original, &typed),
            vec!["a[1].c".to_string()]
        );
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        let value =
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        let err = parse_object(&value).unwrap_err().to_string();
        assert!(err.contains("kind deploy-check does not know"), "{err}");
    }
}
