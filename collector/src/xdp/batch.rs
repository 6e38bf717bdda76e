//! Reading a whole per-CPU hash map in a few syscalls with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6),
//! which aya 0.14 does not wrap. aya's iterator costs two syscalls per entry (next key, then
//! lookup); the per-rule hit table can hold 262,144 entries, so the daemon reads it this way
//! every window instead.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries asked per call: as many as fit in about 1 MiB of per-CPU values, within
/// 64..=8192. A hash map's batch never splits a bucket, so a call may need more room than one
/// entry; ENOSPC then doubles the room.
fn batch_entries(value_bytes_all_cpus: usize) -> usize {
    ((1 << 20) / value_bytes_all_cpus.max(1)).clamp(64, 8192)
}

/// (key, one value per possible CPU) of every entry.
pub(crate) type PerCpuEntries<V> = Vec<(u32, Vec<V>)>;

/// Every (key, per-CPU values) of a hash map with `u32` keys and `V` values; `cpus` is the
/// number of possible CPUs. `Ok(None)`: the kernel has no batch operations for this map
/// (older than 5.6), and the caller falls back to iterating.
pub(crate) fn read_u32_percpu<V: Copy + Default>(
    map: BorrowedFd<'_>,
    cpus: usize,
) -> io::Result<Option<PerCpuEntries<V>>> {
    // The kernel copies per-CPU values in 8-byte-aligned slots.
    let slot = size_of::<V>().next_multiple_of(8);
    assert!(
        slot == size_of::<V>() && align_of::<V>() <= 8,
        "a per-CPU value type whose size is a multiple of 8"
    );
    let mut entries = batch_entries(slot * cpus);
    let mut out = Vec::new();
    let mut token = 0u64;
    let mut first = true;
    loop {
        let mut keys = vec![0u32; entries];
        let mut values = vec![V::default(); entries * cpus];
        let mut next = 0u64;
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&token) as u64
            },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: entries as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: every pointer in `attr` points at a live buffer large enough for `count`
        // entries (keys: 4 bytes each, values: `cpus` slots of `slot` bytes each) and at
        // 8-byte batch tokens (the hash map's token is a 4-byte bucket index).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {}
            Some(libc::ENOSPC) if entries < (1 << 20) => {
                entries *= 2;
                continue;
            }
            // 524: the kernel's internal ENOTSUPP, which bpf(2) leaks for unsupported map types.
            Some(libc::EINVAL | libc::EOPNOTSUPP | 524) if first => return Ok(None),
            Some(_) => return Err(err.expect("an error has an errno")),
        }
        let filled = (attr.count as usize).min(entries);
        for (index, key) in keys.iter().take(filled).enumerate() {
            out.push((*key, values[index * cpus..(index + 1) * cpus].to_vec()));
        }
        // ENOENT: that was the last batch (possibly with entries).
        if err.is_some() {
            return Ok(Some(out));
        }
        token = next;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_stays_in_bounds() {
        assert_eq!(batch_entries(16), 8192);
        assert_eq!(batch_entries(16 * 2), 8192);
        assert_eq!(batch_entries(16 * 1024), 64);
        assert_eq!(batch_entries(16 * 128), 512);
    }
}
