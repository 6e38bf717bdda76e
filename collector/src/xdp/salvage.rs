//! The rules of pinned maps whose layout this collector does not use (left by an older or a
//! newer version), read so that `blocklist list` can save them before the directory is
//! removed and the list imported again.
//!
//! Only the prefixes can be read: they are the tries' keys, `{prefix_len: u32, addr}`, which
//! the kernel's LPM trie fixes. The values (comments, TTLs, hit counters) are in the other
//! layout and are left alone. Nothing is written.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use aya::maps::{Array, Map, MapData};
use collector_common::xdp::names;
use ipnet::IpNet;

use super::BlocklistError;

/// `BPF_MAP_GET_NEXT_KEY`, from include/uapi/linux/bpf.h.
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The map element part of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// The key after `key` (the first with `None`) into `next`; false at the end.
fn next_key(map: &MapData, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    let attr = MapElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key.map_or(0, |key| key.as_ptr() as u64),
        next_key: next.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the attribute points at buffers of the map's key size that live through the
    // call; the kernel reads `key` and writes `next_key`, nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_KEY,
            &attr as *const MapElemAttr,
            size_of::<MapElemAttr>(),
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The prefixes in the pinned trie `name`, if it is pinned.
fn trie_prefixes(
    pin_dir: &Path,
    name: &str,
    addr_len: usize,
) -> Result<Vec<IpNet>, BlocklistError> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let map = MapData::from_pin(&path)
        .map_err(BlocklistError::map(format!("opening {}", path.display())))?;
    let info = map.info().map_err(BlocklistError::map(format!(
        "reading map info of {}",
        path.display()
    )))?;
    let key_len = 4 + addr_len;
    if info.key_size() as usize != key_len {
        return Err(BlocklistError::Incompatible {
            path: path.display().to_string(),
            detail: format!(
                "keys of {} bytes, not the {key_len} of a prefix: its rules cannot be read",
                info.key_size()
            ),
        });
    }
    let io = |source| BlocklistError::Io {
        what: format!("reading the keys of {}", path.display()),
        source,
    };
    let mut prefixes = Vec::new();
    let mut key = vec![0u8; key_len];
    let mut next = vec![0u8; key_len];
    let mut first = true;
    while next_key(&map, (!first).then_some(key.as_slice()), &mut next).map_err(io)? {
        first = false;
        std::mem::swap(&mut key, &mut next);
        let prefix_len = u32::from_ne_bytes(key[..4].try_into().expect("4 bytes"));
        let addr = match addr_len {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(&key[4..]).expect("4 bytes"),
            )),
            _ => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&key[4..]).expect("16 bytes"),
            )),
        };
        if let Ok(net) = IpNet::new(addr, prefix_len as u8)
            && u32::from(net.prefix_len()) == prefix_len
        {
            prefixes.push(net.trunc());
        }
    }
    Ok(prefixes)
}

/// The set (0 = A, 1 = B) the program reads, if the pinned switch can be read.
fn active_set(pin_dir: &Path) -> Option<usize> {
    let data = MapData::from_pin(pin_dir.join(names::ACTIVE)).ok()?;
    let active: Array<MapData, u32> = Array::try_from(Map::from_map_data(data).ok()?).ok()?;
    Some(usize::from(active.get(&0, 0).ok()? != 0))
}

/// The rules of the list in `pin_dir`, whatever its values' layout: those of the active set,
/// or of both sets when the switch cannot be read. Sorted, without repeats.
pub fn rules(pin_dir: &Path) -> Result<Vec<IpNet>, BlocklistError> {
    let sets = match active_set(pin_dir) {
        Some(set) => vec![set],
        None => vec![0, 1],
    };
    let mut rules = BTreeSet::new();
    for set in sets {
        rules.extend(trie_prefixes(pin_dir, names::V4[set], 4)?);
        rules.extend(trie_prefixes(pin_dir, names::V6[set], 16)?);
    }
    Ok(rules.into_iter().collect())
}
