//! Names for ids: pods by UID (filled by a watch of the Kubernetes API, read without waiting)
//! and containers outside Kubernetes from their runtime's own files (podman's container list,
//! Docker's per-container config), read again on a miss at most once per window.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
};

/// What the API says about one pod on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// `Deployment web` (through its ReplicaSet when the name says so), `StatefulSet db`,
    /// `DaemonSet agent`, ...
    pub owner: Option<String>,
    /// Container id (without the runtime's `containerd://` prefix) → container name.
    pub containers: HashMap<String, String>,
}

/// Pod UID → what the API said, shared between the watch (writer) and the window loop
/// (reader, never blocked for long: a read lock around a map lookup).
#[derive(Debug, Clone, Default)]
pub struct PodNames {
    pods: Arc<RwLock<HashMap<String, PodInfo>>>,
    /// Failed list or watch calls of the Kubernetes API (unreachable, 403, garbage).
    errors: Arc<std::sync::atomic::AtomicU64>,
}

impl PodNames {
    pub fn api_errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn count_api_error(&self) {
        self.errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        self.pods.read().ok()?.get(uid).cloned()
    }

    pub fn set(&self, uid: &str, pod: PodInfo) {
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(uid.to_string(), pod);
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.write() {
            pods.remove(uid);
        }
    }

    /// Replaces every pod (a fresh list after the watch restarted).
    pub fn replace_all(&self, pods: HashMap<String, PodInfo>) {
        if let Ok(mut all) = self.pods.write() {
            *all = pods;
        }
    }

    pub fn len(&self) -> usize {
        self.pods.read().map(|pods| pods.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Container id → name for containers no pod owns.
#[derive(Debug)]
pub struct ContainerNames {
    /// podman's (containers/storage's) container list, e.g.
    /// `/var/lib/containers/storage/overlay-containers/containers.json`.
    podman_list: Option<PathBuf>,
    /// Docker's container directory, e.g. `/var/lib/docker/containers` (each container's
    /// `config.v2.json` holds its `Name`).
    docker_dir: Option<PathBuf>,
    known: HashMap<String, String>,
    window: u64,
    read_in: Option<u64>,
    /// Reads of the runtimes' files that failed or did not parse.
    pub read_errors: u64,
}

/// Where the runtimes keep their containers on a stock install.
pub const PODMAN_CONTAINERS_JSON: &str =
    "/var/lib/containers/storage/overlay-containers/containers.json";
pub const DOCKER_CONTAINERS_DIR: &str = "/var/lib/docker/containers";

#[derive(serde::Deserialize)]
struct PodmanContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name")]
    name: String,
}

impl ContainerNames {
    pub fn new(
        podman_list: Option<impl Into<PathBuf>>,
        docker_dir: Option<impl Into<PathBuf>>,
    ) -> Self {
        Self {
            podman_list: podman_list.map(Into::into),
            docker_dir: docker_dir.map(Into::into),
            known: HashMap::new(),
            window: 0,
            read_in: None,
            read_errors: 0,
        }
    }

    /// The stock locations.
    pub fn system() -> Self {
        Self::new(Some(PODMAN_CONTAINERS_JSON), Some(DOCKER_CONTAINERS_DIR))
    }

    pub fn new_window(&mut self, window: u64) {
        self.window = window;
    }

    /// The container's name, if its runtime's files say it (read again on a miss, once per
    /// window for podman's list; Docker's file is per container).
    pub fn name(&mut self, runtime: &str, id: &str) -> Option<String> {
        if let Some(name) = self.known.get(id) {
            return Some(name.clone());
        }
        match runtime {
            "podman" if self.read_in != Some(self.window) => {
                self.read_in = Some(self.window);
                self.read_podman();
            }
            "docker" => self.read_docker(id),
            // containerd without Kubernetes: ctr and nerdctl name the cgroup by the
            // container's id, which is the name ctr was given.
            _ => {}
        }
        self.known.get(id).cloned()
    }

    fn read_podman(&mut self) {
        let Some(path) = &self.podman_list else {
            return;
        };
        let Ok(bytes) = std::fs::read(path) else {
            // No podman on this node, or none of its containers yet: not an error.
            return;
        };
        match serde_json::from_slice::<Vec<PodmanContainer>>(&bytes) {
            Ok(list) => {
                self.known.retain(|_, _| false);
                for container in list {
                    if let Some(name) = container.names.into_iter().next() {
                        self.known.insert(container.id, name);
                    }
                }
            }
            Err(_) => self.read_errors += 1,
        }
    }

    fn read_docker(&mut self, id: &str) {
        let Some(dir) = &self.docker_dir else {
            return;
        };
        let Ok(bytes) = std::fs::read(dir.join(id).join("config.v2.json")) else {
            return;
        };
        match serde_json::from_slice::<DockerConfig>(&bytes) {
            Ok(config) => {
                let name = config.name.trim_start_matches('/').to_string();
                self.known.insert(id.to_string(), name);
            }
            Err(_) => self.read_errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_podman_names_and_garbage_counted() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(docker.join("abc123abc123")).unwrap();
        std::fs::write(
            docker.join("abc123abc123/config.v2.json"),
            r#"{"ID":"abc123abc123","Name":"/web","State":{}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(docker.join("badbadbadbad")).unwrap();
        std::fs::write(docker.join("badbadbadbad/config.v2.json"), "{not json").unwrap();
        let list = dir.path().join("containers.json");
        std::fs::write(&list, r#"[{"id":"fff000fff000","names":["db"]}]"#).unwrap();
        let mut names = ContainerNames::new(Some(&list), Some(&docker));
        names.new_window(1);
        assert_eq!(names.name("docker", "abc123abc123").as_deref(), Some("web"));
        assert_eq!(names.name("podman", "fff000fff000").as_deref(), Some("db"));
        assert_eq!(names.name("docker", "badbadbadbad"), None);
        assert_eq!(names.read_errors, 1);
        // A container started later is found on the next window's miss, not before.
        std::fs::write(
            &list,
            r#"[{"id":"fff000fff000","names":["db"]},{"id":"eee000eee000","names":["cache"]}]"#,
        )
        .unwrap();
        assert_eq!(names.name("podman", "eee000eee000"), None);
        names.new_window(2);
        assert_eq!(
            names.name("podman", "eee000eee000").as_deref(),
            Some("cache")
        );
    }
}
