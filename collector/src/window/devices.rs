//! Block device names from the kernel's device numbers.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::window::procfile::{ReadErrors, source};

use crate::kernel::dev::split_kernel_dev;

/// Resolves `major:minor` to the name under /dev (`vda`, `loop3`, `nvme0n1p1`) through sysfs,
/// caching the answers. Devices that sysfs does not know keep their numbers as a name.
#[derive(Debug)]
pub struct DeviceNames {
    sysfs_dev_block: PathBuf,
    cache: HashMap<u32, String>,
}

impl Default for DeviceNames {
    fn default() -> Self {
        Self::new("/sys/dev/block")
    }
}

impl DeviceNames {
    pub fn new(sysfs_dev_block: impl Into<PathBuf>) -> Self {
        Self {
            sysfs_dev_block: sysfs_dev_block.into(),
            cache: HashMap::new(),
        }
    }

    pub fn name(&mut self, dev: u32) -> String {
        self.name_noted(dev, &mut ReadErrors::default())
    }

    /// [`DeviceNames::name`], counting a sysfs read that failed for a reason other than the
    /// device not being there (out of descriptors, say) in `errors`.
    pub fn name_noted(&mut self, dev: u32, errors: &mut ReadErrors) -> String {
        if let Some(name) = self.cache.get(&dev) {
            return name.clone();
        }
        let (major, minor) = split_kernel_dev(dev);
        let uevent = self.sysfs_dev_block.join(format!("{major}:{minor}/uevent"));
        let found = read_sysfs(&uevent, errors).and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("DEVNAME=").map(str::to_string))
        });
        match found {
            Some(name) => {
                self.cache.insert(dev, name.clone());
                name
            }
            // Not cached: the device may appear in sysfs a moment later (a new loop device).
            None => format!("{major}:{minor}"),
        }
    }

    /// Requests the kernel has in flight on `dev` now (its sysfs `inflight`: reads, writes),
    /// exact whether or not the block hooks watched their issue; `None` if sysfs has no such
    /// device.
    pub fn inflight(&self, dev: u32) -> Option<u64> {
        self.inflight_noted(dev, &mut ReadErrors::default())
    }

    /// [`DeviceNames::inflight`], counting failed reads as [`DeviceNames::name_noted`] does.
    pub fn inflight_noted(&self, dev: u32, errors: &mut ReadErrors) -> Option<u64> {
        let (major, minor) = split_kernel_dev(dev);
        let text = read_sysfs(
            &self
                .sysfs_dev_block
                .join(format!("{major}:{minor}/inflight")),
            errors,
        )?;
        text.split_whitespace()
            .map(|count| count.parse::<u64>().ok())
            .sum()
    }
}

/// A sysfs file's text; `None` when it is not there (no error) or cannot be read (counted).
fn read_sysfs(path: &Path, errors: &mut ReadErrors) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(text) => {
            errors.ok(source::SYSFS_BLOCK);
            Some(text)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            errors.failed(source::SYSFS_BLOCK, path, &err);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::dev::kernel_dev;

    #[test]
    fn inflight_sums_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("dev/254:0")).unwrap();
        fs::write(dir.path().join("dev/254:0/inflight"), "       2        5\n").unwrap();
        let names = DeviceNames::new(dir.path().join("dev"));
        assert_eq!(names.inflight(kernel_dev(254, 0)), Some(7));
        assert_eq!(names.inflight(kernel_dev(7, 0)), None);
    }

    #[test]
    fn names_come_from_uevent_and_unknown_devices_keep_numbers() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("7:3")).unwrap();
        fs::write(
            dir.path().join("7:3/uevent"),
            "MAJOR=7\nMINOR=3\nDEVNAME=loop3\nDEVTYPE=disk\n",
        )
        .unwrap();
        let mut names = DeviceNames::new(dir.path());
        assert_eq!(names.name(kernel_dev(7, 3)), "loop3");
        assert_eq!(names.name(kernel_dev(9, 9)), "9:9");
    }
}
