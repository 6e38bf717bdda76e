//! Cgroup id → cgroup path: the ids the kernel side charges events to are the inode numbers of
//! cgroup directories (kernfs ids), so a walk of the hierarchy that stats each directory names
//! them. The walk is cached and redone on a miss, at most once per window, and bounded in the
//! directories it visits, so a window never waits long for it; ids still unknown after a walk
//! belong to cgroups that are gone ("exited cgroup <id>").

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::window::cgroups::CgroupMode;

/// At most this many directories per walk; the rest of a larger hierarchy is left unnamed
/// (counted in [`WalkStats::truncated`]). A Kubernetes node with a few hundred pods has a few
/// thousand cgroups per hierarchy.
/// Where the cgroup file systems are mounted.
pub const CGROUP_FS: &str = "/sys/fs/cgroup";

pub const MAX_WALK_DIRS: usize = 65_536;

/// Where one cgroup id led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPath {
    /// Relative to the hierarchy's root, without a leading `/` ("" is the root itself).
    Live(String),
    /// Not found by a walk made after it was seen: the cgroup was removed.
    Exited,
}

/// What the walks cost and found, cumulative (the exporter shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkStats {
    pub walks: u64,
    /// Directories the last walk visited.
    pub last_walk_dirs: u64,
    /// Walks that stopped at [`MAX_WALK_DIRS`].
    pub truncated: u64,
    /// Directories that could not be read during walks (removed meanwhile, permissions).
    pub unreadable: u64,
    /// Ids looked up that no walk found (exited cgroups).
    pub exited: u64,
}

/// The id → path cache of one hierarchy.
#[derive(Debug)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    known: HashMap<u64, String>,
    /// The window of the last walk: one walk per window at most.
    walked_in: Option<u64>,
    max_dirs: usize,
    pub stats: WalkStats,
}

/// The hierarchy's root for a mode: `/sys/fs/cgroup` on the unified hierarchy, the v1
/// controller's mount on v1; none when attribution is off.
pub fn hierarchy_root(mode: CgroupMode, cgroup_fs: &Path) -> Option<PathBuf> {
    match mode {
        CgroupMode::Unified => Some(cgroup_fs.to_path_buf()),
        CgroupMode::V1 { hierarchy } => Some(cgroup_fs.join(hierarchy)),
        CgroupMode::Off => None,
    }
}

impl CgroupPaths {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self::with_limit(root, MAX_WALK_DIRS)
    }

    pub fn with_limit(root: Option<PathBuf>, max_dirs: usize) -> Self {
        Self {
            root,
            known: HashMap::new(),
            walked_in: None,
            max_dirs,
            stats: WalkStats::default(),
        }
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The paths of `ids` as of window `window`: cached ones directly; on a miss, one walk
    /// (unless this window already walked), after which an id still unknown is
    /// [`CgroupPath::Exited`] (an id seen before the walk and missed by it is gone).
    pub fn resolve(&mut self, ids: &[u64], window: u64) -> HashMap<u64, CgroupPath> {
        let missing = ids.iter().any(|id| !self.known.contains_key(id));
        if missing && self.walked_in != Some(window) {
            self.walk();
            self.walked_in = Some(window);
        }
        ids.iter()
            .map(|&id| {
                let path = match self.known.get(&id) {
                    Some(path) => CgroupPath::Live(path.clone()),
                    None => {
                        self.stats.exited += 1;
                        CgroupPath::Exited
                    }
                };
                (id, path)
            })
            .collect()
    }

    /// Re-reads the hierarchy: the cache becomes what is there now (removed cgroups leave it).
    fn walk(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        self.stats.walks += 1;
        let mut known = HashMap::new();
        let mut pending = vec![(root.clone(), String::new())];
        let mut visited = 0usize;
        while let Some((dir, relative)) = pending.pop() {
            if visited == self.max_dirs {
                self.stats.truncated += 1;
                break;
            }
            visited += 1;
            match std::fs::metadata(&dir) {
                Ok(meta) => {
                    known.insert(meta.ino(), relative.clone());
                }
                Err(_) => {
                    self.stats.unreadable += 1;
                    continue;
                }
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                self.stats.unreadable += 1;
                continue;
            };
            for entry in entries.flatten() {
                // Cgroup directories only (the files beside them are the controllers' knobs);
                // `file_type` does not follow symlinks, which cgroupfs does not have anyway.
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if relative.is_empty() {
                        name
                    } else {
                        format!("{relative}/{name}")
                    };
                    pending.push((entry.path(), child));
                }
            }
        }
        self.stats.last_walk_dirs = visited as u64;
        self.known = known;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ino(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn ids_resolve_to_paths_and_vanished_ones_to_exited() {
        let root = tempfile::tempdir().unwrap();
        let service = root.path().join("system.slice/nginx.service");
        let pod = root.path().join("kubepods/burstable/pod1234/abcdef");
        std::fs::create_dir_all(&service).unwrap();
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(root.path().join("system.slice/cgroup.procs"), "").unwrap();
        let mut paths = CgroupPaths::new(Some(root.path().to_path_buf()));
        let (service_id, pod_id) = (ino(&service), ino(&pod));
        let resolved = paths.resolve(&[service_id, pod_id], 1);
        assert_eq!(
            resolved[&service_id],
            CgroupPath::Live("system.slice/nginx.service".into())
        );
        assert_eq!(
            resolved[&pod_id],
            CgroupPath::Live("kubepods/burstable/pod1234/abcdef".into())
        );
        assert_eq!(paths.stats.walks, 1);
        // Cached: no second walk.
        paths.resolve(&[service_id], 2);
        assert_eq!(paths.stats.walks, 1);

        // A new cgroup comes, the pod's goes (made first so the file system cannot hand the
        // new one the old inode): the miss re-walks once per window.
        let fresh = root.path().join("system.slice/cron.service");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::remove_dir(&pod).unwrap();
        let fresh_id = ino(&fresh);
        let resolved = paths.resolve(&[fresh_id, pod_id], 3);
        assert_eq!(
            resolved[&fresh_id],
            CgroupPath::Live("system.slice/cron.service".into())
        );
        assert_eq!(resolved[&pod_id], CgroupPath::Exited);
        assert_eq!(paths.stats.walks, 2);
        assert_eq!(paths.stats.exited, 1);
        // Still missing in the same window: no second walk.
        paths.resolve(&[pod_id], 3);
        assert_eq!(paths.stats.walks, 2);
    }

    #[test]
    fn a_walk_stops_at_its_bound_and_says_so() {
        let root = tempfile::tempdir().unwrap();
        for n in 0..20 {
            std::fs::create_dir(root.path().join(format!("c{n}"))).unwrap();
        }
        let mut paths = CgroupPaths::with_limit(Some(root.path().to_path_buf()), 5);
        paths.resolve(&[u64::MAX - 1], 1);
        assert_eq!(paths.stats.last_walk_dirs, 5);
        assert_eq!(paths.stats.truncated, 1);
    }

    #[test]
    fn no_root_names_nothing_and_never_walks() {
        let mut paths = CgroupPaths::new(hierarchy_root(CgroupMode::Off, Path::new("/x")));
        assert_eq!(paths.resolve(&[5], 1)[&5], CgroupPath::Exited);
        assert_eq!(paths.stats.walks, 0);
        assert_eq!(
            hierarchy_root(
                CgroupMode::V1 {
                    hierarchy: "memory"
                },
                Path::new("/c")
            ),
            Some(PathBuf::from("/c/memory"))
        );
    }
}
