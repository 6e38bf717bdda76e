//! An overlay rendered by `kubectl kustomize` and read into the API's types, refusing any
//! field those types do not know.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::objects::{Object, RELABEL_ACTIONS, ServiceMonitor};

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
