//! Exact event counts the kernel keeps by itself (`/proc/stat`'s `ctxt`, `/proc/diskstats`):
//! the sampler sizes the sampled hooks' cost against them, and windows read context switches
//! from here too. Unreadable is `None`, never 0: a 0 would read as a burst of every event since
//! boot at the next good read.

use std::{fs, path::Path};

/// The `ctxt` line of /proc/stat: context switches on every CPU since boot.
pub fn read_context_switches(path: &Path) -> Option<u64> {
    parse_context_switches(&fs::read_to_string(path).ok()?)
}

pub fn parse_context_switches(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("ctxt ")?.trim().parse().ok())
}

/// Block requests completed on every whole disk since boot (reads, writes, discards and
/// flushes in /proc/diskstats; partitions are left out, their requests are their disk's).
/// `None` when /proc/diskstats cannot be read: a count of 0 would read as a burst of every
/// request since boot at the next good read.
pub fn block_requests_completed(diskstats: &Path, sys_block: &Path) -> Option<u64> {
    let text = fs::read_to_string(diskstats).ok()?;
    let total = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields.get(2)?;
            if !sys_block.join(name).exists() {
                return None;
            }
            // After major, minor, name: reads completed is field 0, writes 4, discards 11,
            // flushes 15 (the last two on newer kernels only).
            let at = |index: usize| -> u64 {
                fields
                    .get(3 + index)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0)
            };
            Some(at(0) + at(4) + at(11) + at(15))
        })
        .sum();
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_requests_count_whole_disks_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("block/vda")).unwrap();
        fs::create_dir_all(dir.path().join("block/loop0")).unwrap();
        let diskstats = dir.path().join("diskstats");
        fs::write(
            &diskstats,
            " 254 0 vda 100 1 800 5 40 2 320 9 0 12 14 3 0 24 1 6 2\n\
             254 1 vda1 90 1 700 5 30 2 300 9 0 12 14 0 0 0 0 0 0\n\
             7 0 loop0 7 0 56 1 3 0 24 1 0 2 2\n",
        )
        .unwrap();
        // vda: 100 reads + 40 writes + 3 discards + 6 flushes; loop0 (older format): 7 + 3.
        assert_eq!(
            block_requests_completed(&diskstats, &dir.path().join("block")),
            Some(159)
        );
        assert_eq!(
            block_requests_completed(&dir.path().join("missing"), &dir.path().join("block")),
            None,
            "unreadable: no count, never 0"
        );
    }
}
