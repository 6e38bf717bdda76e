//! Pod names from the Kubernetes API: a watch of the pods on this node
//! (`spec.nodeName=<node>`) keeps [`PodNames`] current, in a task of its own. Windows never
//! wait for it: until it has listed a pod (or while the API cannot be reached, refuses us, or
//! answers garbage) the pod is named by its UID, the failures are counted, and a log line
//! says why (once per failure streak, and again at most every [`LOG_EVERY`] while it lasts).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, watcher};
use tracing::{info, warn};

use super::names::{PodInfo, PodNames};

/// How often a lasting failure is logged again.
pub const LOG_EVERY: Duration = Duration::from_secs(300);

/// Where the API is: the in-cluster service account, or a URL (tests, a kubectl proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    InCluster,
    Url(String),
}

/// What the API says about a pod, keyed by its UID; `None` for a pod without a UID.
pub fn pod_info(pod: &Pod) -> Option<(String, PodInfo)> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone()?;
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|owners| {
            owners
                .iter()
                .find(|owner| owner.controller == Some(true))
                .or(owners.first())
        })
        .map(|owner| {
            // A ReplicaSet named `<deployment>-<pod-template-hash>` belongs to a Deployment.
            let hash = meta
                .labels
                .as_ref()
                .and_then(|labels| labels.get("pod-template-hash"));
            match (owner.kind.as_str(), hash) {
                ("ReplicaSet", Some(hash)) => match owner.name.strip_suffix(&format!("-{hash}")) {
                    Some(deployment) => format!("Deployment {deployment}"),
                    None => format!("ReplicaSet {}", owner.name),
                },
                (kind, _) => format!("{kind} {}", owner.name),
            }
        });
    let mut containers = HashMap::new();
    if let Some(status) = &pod.status {
        for list in [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        {
            for container in list {
                // `containerd://<id>`, `cri-o://<id>`, `docker://<id>`.
                if let Some(id) = container.container_id.as_deref() {
                    let id = id.split_once("://").map_or(id, |(_, id)| id);
                    containers.insert(id.to_string(), container.name.clone());
                }
            }
        }
    }
    Some((
        uid,
        PodInfo {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            owner,
            containers,
        },
    ))
}

async fn client(source: &ApiSource) -> anyhow::Result<kube::Client> {
    let config = match source {
        ApiSource::InCluster => kube::Config::incluster()?,
        ApiSource::Url(url) => kube::Config::new(
            url.parse()
                .map_err(|err| anyhow::anyhow!("--kube-api {url}: {err}"))?,
        ),
    };
    Ok(kube::Client::try_from(config)?)
}

/// Watches the pods on `node` until the process ends, keeping `names` current. Spawn it; it
/// never returns an error to a window.
pub async fn watch_pods(source: ApiSource, node: String, names: PodNames) {
    let client = match client(&source).await {
        Ok(client) => client,
        Err(err) => {
            names.count_api_error();
            warn!(
                "Kubernetes API: no client ({err:#}); pods are named by their UID \
                 (RBAC: get/list/watch pods; in-cluster, the service account's token)"
            );
            return;
        }
    };
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listing: HashMap<String, PodInfo> = HashMap::new();
    let mut failing_since: Option<Instant> = None;
    let mut last_log: Option<Instant> = None;
    info!(?source, %node, "Kubernetes API: watching this node's pods for their names");
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                names.count_api_error();
                let now = Instant::now();
                if failing_since.is_none() || last_log.is_none_or(|at| now - at >= LOG_EVERY) {
                    warn!(
                        "Kubernetes API: cannot list or watch pods ({err}); pods are named by \
                         their UID until it answers (retrying with backoff; logged again \
                         every {}s while it lasts)",
                        LOG_EVERY.as_secs()
                    );
                    last_log = Some(now);
                }
                failing_since.get_or_insert(now);
                continue;
            }
        };
        if let Some(since) = failing_since.take() {
            info!(
                failed_for_s = since.elapsed().as_secs_f64(),
                "Kubernetes API: answering again"
            );
        }
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some((uid, info)) = pod_info(&pod) {
                    listing.insert(uid, info);
                }
            }
            watcher::Event::InitDone => names.replace_all(std::mem::take(&mut listing)),
            watcher::Event::Apply(pod) => {
                if let Some((uid, info)) = pod_info(&pod) {
                    names.set(&uid, info);
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    names.remove(uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gives_its_names_owner_and_container_ids() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7d9c8b5f4-x2x8q",
                "namespace": "shop",
                "uid": "8b2f2a4e-1c3d-4f5e-9a6b-7c8d9e0f1a2b",
                "labels": {"pod-template-hash": "7d9c8b5f4"},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9c8b5f4",
                    "uid": "1", "controller": true
                }]
            },
            "status": {
                "containerStatuses": [{
                    "name": "nginx", "containerID": "containerd://abc123", "image": "nginx",
                    "imageID": "", "ready": true, "restartCount": 0
                }],
                "initContainerStatuses": [{
                    "name": "migrate", "containerID": "cri-o://def456", "image": "m",
                    "imageID": "", "ready": false, "restartCount": 0
                }]
            }
        }))
        .unwrap();
        let (uid, info) = pod_info(&pod).unwrap();
        assert_eq!(uid, "8b2f2a4e-1c3d-4f5e-9a6b-7c8d9e0f1a2b");
        assert_eq!(info.namespace, "shop");
        assert_eq!(info.name, "web-7d9c8b5f4-x2x8q");
        assert_eq!(info.owner.as_deref(), Some("Deployment web"));
        assert_eq!(info.containers["abc123"], "nginx");
        assert_eq!(info.containers["def456"], "migrate");
    }
}
