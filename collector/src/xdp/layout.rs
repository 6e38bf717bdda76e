//! The pinned maps' layout: loading the object against the pins, checking that each pinned
//! map has this version's sizes, and moving a list an older version pinned to this layout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, MapInfo, lpm_trie::LpmTrie},
};
use collector_common::xdp::{
    COMMENT_BYTES, LEGACY_RULE_BYTES, MAX_RULES, Rule, RuleHits, active, names, total,
};
use ipnet::IpNet;

use super::{
    BlocklistError,
    clock::{boot_ns, unix_now},
    pins::PinDir,
    rules::net,
};

/// Loads the object with the drop-list maps bound to their pins: existing pins are reused,
/// missing ones created and pinned. Programs are not loaded here (aya loads them on demand).
/// `source_prefixes`: entries of the (unpinned, preallocated) per-source table; 1 where
/// nothing will count sources.
pub(crate) fn load_object(pins: &PinDir, source_prefixes: u32) -> Result<Ebpf, BlocklistError> {
    crate::kernel::privileges::raise_memlock_limit_on_old_kernels();
    let paths: Vec<(&str, std::path::PathBuf)> = names::ALL_MAPS
        .iter()
        .map(|name| (*name, pins.pin(name)))
        .collect();
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(names::SOURCE_TRAFFIC, source_prefixes.max(1));
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    Ok(loader.load(crate::kernel::ebpf_object()?)?)
}

/// (key size, value size, entries) each pinned map must have.
fn expected_layout(name: &str) -> (usize, usize, u32) {
    match name {
        n if names::V4.contains(&n) => (4 + 4, size_of::<Rule>(), MAX_RULES),
        n if names::V6.contains(&n) => (4 + 16, size_of::<Rule>(), MAX_RULES),
        names::ACTIVE => (4, 4, active::COUNT),
        names::HITS => (4, size_of::<RuleHits>(), 2 * MAX_RULES),
        _ => (4, 8, total::COUNT),
    }
}

pub(super) fn check_layout(pins: &PinDir, name: &str) -> Result<(), BlocklistError> {
    let path = pins.pin(name);
    let info = MapInfo::from_pin(&path).map_err(BlocklistError::map(format!(
        "reading map info of {}",
        path.display()
    )))?;
    let (key, value, entries) = expected_layout(name);
    let have = (
        info.key_size() as usize,
        info.value_size() as usize,
        info.max_entries(),
    );
    if have != (key, value, entries) {
        return Err(BlocklistError::Incompatible {
            path: path.display().to_string(),
            detail: format!(
                "key/value sizes {}/{} bytes and {} entries, expected {key}/{value} and {entries}",
                have.0, have.1, have.2
            ),
        });
    }
    Ok(())
}

/// Whether every pinned map has this version's layout (`Ok(false)`: some pin is missing).
pub(super) fn pins_current(pins: &PinDir) -> Result<bool, BlocklistError> {
    if !names::ALL_MAPS.iter().all(|name| pins.pin(name).exists()) {
        return Ok(false);
    }
    for name in names::ALL_MAPS {
        check_layout(pins, name)?;
    }
    Ok(true)
}

/// A rule as versions before the boot-time deadline pinned it.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
struct LegacyRule {
    id: u32,
    flags: u32,
    added_unix_s: u64,
    expires_unix_s: u64,
    comment: [u8; COMMENT_BYTES],
}
const _: () = assert!(size_of::<LegacyRule>() == LEGACY_RULE_BYTES);
// SAFETY: #[repr(C)], Copy, integers and a byte array, no padding: any bits are a value.
unsafe impl aya::Pod for LegacyRule {}

/// Moves a list pinned by an older version (88-byte rules, a one-slot `BLOCKLIST_ACTIVE`, four
/// totals) to this version's layout, keeping every rule of the live set with its id, flags,
/// times and comment (a TTL becomes a boot-time deadline from the wall-clock time left). The
/// caller holds the edit lock. An older daemon still running keeps its own (unpinned) copy
/// of the old maps until it is restarted. Returns the rules moved, to re-insert once the new
/// maps exist; `None` when there was nothing to migrate.
fn take_legacy(pins: &PinDir) -> Result<Option<Vec<(IpNet, Rule)>>, BlocklistError> {
    let trie_pin = pins.pin(names::V4[0]);
    if !trie_pin.exists() {
        return Ok(None);
    }
    let info = MapInfo::from_pin(&trie_pin).map_err(BlocklistError::map(format!(
        "reading map info of {}",
        trie_pin.display()
    )))?;
    if info.value_size() as usize != LEGACY_RULE_BYTES {
        return Ok(None);
    }
    let open = |name: &str| -> Result<Map, BlocklistError> {
        let path = pins.pin(name);
        let data = MapData::from_pin(&path)
            .map_err(BlocklistError::map(format!("opening {}", path.display())))?;
        Map::from_map_data(data).map_err(BlocklistError::map(format!("opening {}", path.display())))
    };
    let set = match Array::<MapData, u32>::try_from(open(names::ACTIVE)?) {
        Ok(array) => usize::from(array.get(&0, 0).unwrap_or(0) != 0),
        Err(_) => 0,
    };
    let now_unix = unix_now();
    let now_boot = boot_ns();
    let convert = |legacy: LegacyRule| Rule {
        id: legacy.id,
        flags: legacy.flags,
        added_unix_s: legacy.added_unix_s,
        expires_unix_s: legacy.expires_unix_s,
        expires_boot_ns: if legacy.expires_unix_s == 0 {
            0
        } else {
            // Already past: due now (the sweep removes it); never 0, which means "never".
            now_boot
                .saturating_add(
                    legacy
                        .expires_unix_s
                        .saturating_sub(now_unix)
                        .saturating_mul(1_000_000_000),
                )
                .max(1)
        },
        comment: legacy.comment,
    };
    let mut rules = Vec::new();
    let what = |name: &str| BlocklistError::map(format!("reading the old-layout map {name}"));
    let v4 = LpmTrie::<MapData, [u8; 4], LegacyRule>::try_from(open(names::V4[set])?)
        .map_err(what(names::V4[set]))?;
    for entry in v4.iter() {
        let (key, rule) = entry.map_err(what(names::V4[set]))?;
        let addr = IpAddr::V4(Ipv4Addr::from(key.data()));
        rules.push((net(addr, key.prefix_len()), convert(rule)));
    }
    let v6 = LpmTrie::<MapData, [u8; 16], LegacyRule>::try_from(open(names::V6[set])?)
        .map_err(what(names::V6[set]))?;
    for entry in v6.iter() {
        let (key, rule) = entry.map_err(what(names::V6[set]))?;
        let addr = IpAddr::V6(Ipv6Addr::from(key.data()));
        rules.push((net(addr, key.prefix_len()), convert(rule)));
    }
    // Unpinned only once every rule is read: a failure above changes nothing.
    for name in names::ALL_MAPS {
        let path = pins.pin(name);
        let keep = name == names::HITS && check_layout(pins, name).is_ok();
        if !keep && path.exists() {
            std::fs::remove_file(&path).map_err(|source| BlocklistError::Io {
                what: format!("removing the old-layout pin {}", path.display()),
                source,
            })?;
        }
    }
    tracing::warn!(
        rules = rules.len(),
        pin_dir = %pins.path.display(),
        "moved the drop list from an older version's layout; restart any daemon of that version"
    );
    Ok(Some(rules))
}

/// Loads the object against the pins under the edit lock, first moving a list left by an
/// older version to this layout. Returns the object and the rules to put back.
pub(crate) fn load_current(
    pins: &PinDir,
    source_prefixes: u32,
) -> Result<(Ebpf, Vec<(IpNet, Rule)>), BlocklistError> {
    let legacy = take_legacy(pins)?.unwrap_or_default();
    let ebpf = load_object(pins, source_prefixes)?;
    Ok((ebpf, legacy))
}

/// Whether the pinned tries hold rules of the layout before boot-time deadlines.
pub(super) fn is_legacy(pins: &PinDir) -> bool {
    MapInfo::from_pin(pins.pin(names::V4[0]))
        .is_ok_and(|info| info.value_size() as usize == LEGACY_RULE_BYTES)
}
