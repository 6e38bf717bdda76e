//! The rules as they sit in the pinned maps, and every edit to them.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuHashMap,
        lpm_trie::{Key, LpmTrie},
    },
};
use collector_common::xdp::{
    COMMENT_BYTES, LEGACY_RULE_BYTES, MAX_RULES, Rule, RuleHits, active, names, rule_flags, total,
};
use ipnet::IpNet;
use serde::Serialize;

use super::{BlocklistError, pins::PinDir};

type V4Trie = LpmTrie<MapData, [u8; 4], Rule>;
type V6Trie = LpmTrie<MapData, [u8; 16], Rule>;

/// The pinned drop list.
pub struct Blocklist {
    pub(super) pins: PinDir,
    /// Index 0 is set A, 1 is set B; `active` says which one the program reads.
    pub(super) v4: [V4Trie; 2],
    pub(super) v6: [V6Trie; 2],
    active: Array<MapData, u32>,
    pub(super) hits: PerCpuHashMap<MapData, u32, RuleHits>,
    totals: PerCpuArray<MapData, u64>,
}

/// The longest TTL a rule may have: 10 years. Longer is a typo or an overflow (a TTL of
/// u64::MAX seconds used to wrap `now + ttl` to the past and delete the rule at once); a
/// rule meant to stay has no TTL. Ten years of nanoseconds (3.2e17) also fits the boot-time
/// deadline (u64 nanoseconds: 584 years) with room to spare.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Nanoseconds of CLOCK_BOOTTIME, the clock of `bpf_ktime_get_boot_ns` (see
/// `Rule::expires_boot_ns` for why this clock).
pub(crate) fn boot_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_BOOTTIME exists since 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// The TTL checked against [`MAX_TTL`].
fn checked_ttl(ttl: Option<Duration>) -> Result<Option<Duration>, BlocklistError> {
    match ttl {
        Some(ttl) if ttl > MAX_TTL => Err(BlocklistError::TtlTooLong {
            asked: ttl,
            max: MAX_TTL,
        }),
        ttl => Ok(ttl),
    }
}

/// A rule with its counters, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedRule {
    pub rule: String,
    #[serde(skip)]
    pub net: IpNet,
    pub id: u32,
    pub packets: u64,
    pub bytes: u64,
    pub added_unix_s: u64,
    pub age_s: u64,
    /// `None`: the rule never expires.
    pub expires_unix_s: Option<u64>,
    pub comment: String,
    /// Added by the daemon's automatic flood blocking (its comment says why).
    pub automatic: bool,
}

/// Who adds a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The CLI (an operator or their tooling).
    Manual,
    /// The daemon's automatic flood blocking.
    Automatic,
}

impl Origin {
    fn flags(self) -> u32 {
        match self {
            Self::Manual => 0,
            Self::Automatic => rule_flags::AUTOMATIC,
        }
    }
}

/// Packets the program has seen since the maps were created, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub passed: u64,
    pub dropped: u64,
    pub malformed: u64,
    pub non_ip: u64,
    /// Passed because the matching rule's TTL was over (and no daemon had removed it yet).
    pub expired: u64,
}

/// Drops per rule with bounded cardinality, for the exporter: the `top` rules by dropped
/// packets by name, everything else summed into `other`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DropMetrics {
    /// (rule, packets, bytes), most packets first.
    pub top: Vec<(String, u64, u64)>,
    pub other_packets: u64,
    pub other_bytes: u64,
    pub totals: Totals,
    /// Rules added by automatic flood blocking, of all listed.
    pub automatic_rules: u64,
    /// Rules listed.
    pub rules: u64,
    /// Windows whose TTL sweep was put off because another process held the edit lock.
    pub sweeps_postponed: u64,
}

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

fn check_layout(pins: &PinDir, name: &str) -> Result<(), BlocklistError> {
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
fn pins_current(pins: &PinDir) -> Result<bool, BlocklistError> {
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

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn comment_text(rule: &Rule) -> String {
    let end = rule
        .comment
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(COMMENT_BYTES);
    String::from_utf8_lossy(&rule.comment[..end]).into_owned()
}

fn encode_comment(comment: Option<&str>) -> Result<[u8; COMMENT_BYTES], BlocklistError> {
    let mut bytes = [0u8; COMMENT_BYTES];
    if let Some(comment) = comment {
        if comment.len() > COMMENT_BYTES {
            return Err(BlocklistError::CommentTooLong(comment.len()));
        }
        bytes[..comment.len()].copy_from_slice(comment.as_bytes());
    }
    Ok(bytes)
}

fn is_full(err: &MapError) -> bool {
    matches!(err, MapError::SyscallError(call)
        if matches!(call.io_error.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG | libc::ENOMEM)))
}

impl Blocklist {
    /// Opens the list in `pin_dir` (created, with empty maps, if it is not there).
    pub fn open(pin_dir: &Path) -> Result<Self, BlocklistError> {
        let pins = PinDir::open(pin_dir)?;
        // An old layout is moved first; anything else unknown is refused by `check_layout`.
        let current = match pins_current(&pins) {
            Ok(current) => current,
            Err(BlocklistError::Incompatible { .. }) if is_legacy(&pins) => false,
            Err(err) => return Err(err),
        };
        if current {
            let mut maps = BTreeMap::new();
            for name in names::ALL_MAPS {
                let path = pins.pin(name);
                let data = MapData::from_pin(&path)
                    .map_err(BlocklistError::map(format!("opening {}", path.display())))?;
                let map = Map::from_map_data(data)
                    .map_err(BlocklistError::map(format!("opening {}", path.display())))?;
                maps.insert(name, map);
            }
            Self::from_maps(pins, |name| {
                maps.remove(name).expect("every name was inserted above")
            })
        } else {
            // Two first-time editors must not both create and pin: the second would fail.
            let lock = pins.lock()?;
            let (mut ebpf, legacy) = load_current(&pins, 1)?;
            let mut list = Self::from_ebpf(pins, &mut ebpf)?;
            list.restore(&legacy)?;
            drop(lock);
            Ok(list)
        }
    }

    /// Puts back rules moved from an old layout (the caller holds the edit lock).
    pub(crate) fn restore(&mut self, rules: &[(IpNet, Rule)]) -> Result<(), BlocklistError> {
        if rules.is_empty() {
            return Ok(());
        }
        let set = self.active_set()?;
        self.insert_all(set, rules)?;
        self.bump_generation()
    }

    /// The edit counter (`active::GENERATION`): moves with every change to the list.
    pub fn generation(&self) -> Result<u32, BlocklistError> {
        self.active
            .get(&active::GENERATION, 0)
            .map_err(BlocklistError::map("reading the drop list's generation"))
    }

    /// Called by every edit, under the edit lock.
    pub(super) fn bump_generation(&mut self) -> Result<(), BlocklistError> {
        let next = self.generation()?.wrapping_add(1);
        self.active
            .set(active::GENERATION, next, 0)
            .map_err(BlocklistError::map("writing the drop list's generation"))
    }

    /// Takes the drop-list maps out of an object loaded by [`load_object`].
    pub(crate) fn from_ebpf(pins: PinDir, ebpf: &mut Ebpf) -> Result<Self, BlocklistError> {
        for name in names::ALL_MAPS {
            check_layout(&pins, name)?;
        }
        Self::from_maps(pins, |name| {
            ebpf.take_map(name)
                .expect("the drop-list maps are in the object")
        })
    }

    fn from_maps(
        pins: PinDir,
        mut take: impl FnMut(&'static str) -> Map,
    ) -> Result<Self, BlocklistError> {
        let typed = |name: &str| BlocklistError::map(format!("map {name}"));
        Ok(Self {
            v4: [
                V4Trie::try_from(take(names::V4[0])).map_err(typed(names::V4[0]))?,
                V4Trie::try_from(take(names::V4[1])).map_err(typed(names::V4[1]))?,
            ],
            v6: [
                V6Trie::try_from(take(names::V6[0])).map_err(typed(names::V6[0]))?,
                V6Trie::try_from(take(names::V6[1])).map_err(typed(names::V6[1]))?,
            ],
            active: Array::try_from(take(names::ACTIVE)).map_err(typed(names::ACTIVE))?,
            hits: PerCpuHashMap::try_from(take(names::HITS)).map_err(typed(names::HITS))?,
            totals: PerCpuArray::try_from(take(names::TOTALS)).map_err(typed(names::TOTALS))?,
            pins,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pins.path
    }

    pub(super) fn active_set(&self) -> Result<usize, BlocklistError> {
        let active = self
            .active
            .get(&active::SET, 0)
            .map_err(BlocklistError::map("reading the active set"))?;
        Ok(usize::from(active != 0))
    }

    /// Every rule of one set, with its prefix.
    pub(super) fn read_set(&self, set: usize) -> Result<Vec<(IpNet, Rule)>, BlocklistError> {
        let mut rules = Vec::new();
        for entry in self.v4[set].iter() {
            let (key, rule) = entry.map_err(BlocklistError::map("reading the IPv4 rules"))?;
            let addr = IpAddr::V4(Ipv4Addr::from(key.data()));
            rules.push((net(addr, key.prefix_len()), rule));
        }
        for entry in self.v6[set].iter() {
            let (key, rule) = entry.map_err(BlocklistError::map("reading the IPv6 rules"))?;
            let addr = IpAddr::V6(Ipv6Addr::from(key.data()));
            rules.push((net(addr, key.prefix_len()), rule));
        }
        Ok(rules)
    }

    fn hits_of(&self, id: u32) -> RuleHits {
        match self.hits.get(&id, 0) {
            Ok(per_cpu) => per_cpu
                .iter()
                .fold(RuleHits::default(), |sum, hits| RuleHits {
                    packets: sum.packets + hits.packets,
                    bytes: sum.bytes + hits.bytes,
                }),
            Err(_) => RuleHits::default(),
        }
    }

    /// The live rules with their hits, sorted by prefix.
    pub fn list(&self) -> Result<Vec<ListedRule>, BlocklistError> {
        let now = unix_now();
        let mut rules: Vec<ListedRule> = self
            .read_set(self.active_set()?)?
            .into_iter()
            .map(|(net, rule)| {
                let hits = self.hits_of(rule.id);
                ListedRule {
                    rule: net.to_string(),
                    net,
                    id: rule.id,
                    packets: hits.packets,
                    bytes: hits.bytes,
                    added_unix_s: rule.added_unix_s,
                    age_s: now.saturating_sub(rule.added_unix_s),
                    expires_unix_s: (rule.expires_unix_s != 0).then_some(rule.expires_unix_s),
                    comment: comment_text(&rule),
                    automatic: rule.flags & rule_flags::AUTOMATIC != 0,
                }
            })
            .collect();
        rules.sort_by_key(|rule| rule.net);
        Ok(rules)
    }

    /// Program totals since the maps were created.
    pub fn totals(&self) -> Result<Totals, BlocklistError> {
        let mut sums = [0u64; total::COUNT as usize];
        for (index, sum) in sums.iter_mut().enumerate() {
            *sum = self
                .totals
                .get(&(index as u32), 0)
                .map_err(BlocklistError::map("reading the drop-list totals"))?
                .iter()
                .sum();
        }
        Ok(Totals {
            passed: sums[total::PASSED as usize],
            dropped: sums[total::DROPPED as usize],
            malformed: sums[total::MALFORMED as usize],
            non_ip: sums[total::NON_IP as usize],
            expired: sums[total::EXPIRED as usize],
        })
    }

    /// Drops by rule for the exporter: the `top` rules by packets, the rest as "other".
    pub fn drop_metrics(&self, top: usize) -> Result<DropMetrics, BlocklistError> {
        let mut rules = self.list()?;
        rules.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.net.cmp(&b.net)));
        let mut metrics = DropMetrics {
            totals: self.totals()?,
            automatic_rules: rules.iter().filter(|rule| rule.automatic).count() as u64,
            rules: rules.len() as u64,
            ..DropMetrics::default()
        };
        for (rank, rule) in rules.into_iter().enumerate() {
            if rank < top {
                metrics.top.push((rule.rule, rule.packets, rule.bytes));
            } else {
                metrics.other_packets += rule.packets;
                metrics.other_bytes += rule.bytes;
            }
        }
        Ok(metrics)
    }

    /// Ids not used by any rule of either set, lowest first, with stale counters cleared.
    fn allocate_ids(&mut self, count: usize) -> Result<Vec<u32>, BlocklistError> {
        let mut used: HashSet<u32> = HashSet::new();
        for set in 0..2 {
            used.extend(self.read_set(set)?.iter().map(|(_, rule)| rule.id));
        }
        let ids: Vec<u32> = (1..).filter(|id| !used.contains(id)).take(count).collect();
        for id in &ids {
            // A counter left by a rule removed while a program ran would credit the new rule.
            let _ = self.hits.remove(id);
        }
        Ok(ids)
    }

    fn check_capacity(current: &[(IpNet, Rule)], adding: &[IpNet]) -> Result<(), BlocklistError> {
        for (family, is_family) in [
            (
                "IPv4",
                (|net: &IpNet| matches!(net, IpNet::V4(_))) as fn(&IpNet) -> bool,
            ),
            ("IPv6", |net: &IpNet| matches!(net, IpNet::V6(_))),
        ] {
            let have = current.iter().filter(|(net, _)| is_family(net)).count();
            let more = adding.iter().filter(|net| is_family(net)).count();
            if have + more > MAX_RULES as usize {
                return Err(BlocklistError::Full {
                    family,
                    max: MAX_RULES,
                    have,
                    adding: more,
                });
            }
        }
        Ok(())
    }

    fn insert(&mut self, set: usize, net: IpNet, rule: &Rule) -> Result<(), MapError> {
        const BPF_NOEXIST: u64 = 1;
        match net {
            IpNet::V4(v4) => self.v4[set].insert(
                &Key::new(u32::from(v4.prefix_len()), v4.network().octets()),
                rule,
                BPF_NOEXIST,
            ),
            IpNet::V6(v6) => self.v6[set].insert(
                &Key::new(u32::from(v6.prefix_len()), v6.network().octets()),
                rule,
                BPF_NOEXIST,
            ),
        }
    }

    fn remove(&mut self, set: usize, net: IpNet) -> Result<(), MapError> {
        match net {
            IpNet::V4(v4) => {
                self.v4[set].remove(&Key::new(u32::from(v4.prefix_len()), v4.network().octets()))
            }
            IpNet::V6(v6) => {
                self.v6[set].remove(&Key::new(u32::from(v6.prefix_len()), v6.network().octets()))
            }
        }
    }

    /// Inserts all of `rules` into `set` or, on the first failure, removes what it inserted
    /// and reports why.
    pub(super) fn insert_all(
        &mut self,
        set: usize,
        rules: &[(IpNet, Rule)],
    ) -> Result<(), BlocklistError> {
        for (done, (net, rule)) in rules.iter().enumerate() {
            if let Err(err) = self.insert(set, *net, rule) {
                for (inserted, _) in &rules[..done] {
                    let _ = self.remove(set, *inserted);
                }
                if is_full(&err) {
                    return Err(BlocklistError::Full {
                        family: if net.addr().is_ipv4() { "IPv4" } else { "IPv6" },
                        max: MAX_RULES,
                        have: done,
                        adding: rules.len() - done,
                    });
                }
                return Err(BlocklistError::Map {
                    what: format!("adding {net}"),
                    source: err,
                });
            }
        }
        Ok(())
    }

    fn new_rules(
        &mut self,
        nets: &[IpNet],
        comment: Option<&str>,
        ttl: Option<Duration>,
        origin: Origin,
    ) -> Result<Vec<(IpNet, Rule)>, BlocklistError> {
        let ids = self.allocate_ids(nets.len())?;
        rules_with_ids(nets, comment, ttl, origin, ids)
    }

    /// Adds rules; refuses (changing nothing) if any is already listed or they do not fit.
    pub fn add(
        &mut self,
        nets: &[IpNet],
        comment: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(), BlocklistError> {
        self.add_from(nets, comment, ttl, Origin::Manual)
    }

    /// [`Blocklist::add`], saying who adds the rules (listed as automatic or not).
    pub fn add_from(
        &mut self,
        nets: &[IpNet],
        comment: Option<&str>,
        ttl: Option<Duration>,
        origin: Origin,
    ) -> Result<(), BlocklistError> {
        encode_comment(comment)?;
        checked_ttl(ttl)?;
        let _lock = self.pins.lock()?;
        self.add_locked(nets, comment, ttl, origin)
    }

    pub(super) fn add_locked(
        &mut self,
        nets: &[IpNet],
        comment: Option<&str>,
        ttl: Option<Duration>,
        origin: Origin,
    ) -> Result<(), BlocklistError> {
        let set = self.active_set()?;
        let current = self.read_set(set)?;
        let listed: HashSet<IpNet> = current.iter().map(|(net, _)| *net).collect();
        let duplicates: Vec<IpNet> = nets
            .iter()
            .filter(|net| listed.contains(net))
            .copied()
            .collect();
        if !duplicates.is_empty() {
            return Err(BlocklistError::Duplicate(duplicates));
        }
        Self::check_capacity(&current, nets)?;
        let rules = self.new_rules(nets, comment, ttl, origin)?;
        self.insert_all(set, &rules)?;
        self.bump_generation()
    }

    /// Removes rules; refuses (changing nothing) if any is not listed.
    pub fn delete(&mut self, nets: &[IpNet]) -> Result<(), BlocklistError> {
        let _lock = self.pins.lock()?;
        let set = self.active_set()?;
        let current: BTreeMap<IpNet, Rule> = self.read_set(set)?.into_iter().collect();
        if let Some(missing) = nets.iter().find(|net| !current.contains_key(net)) {
            return Err(BlocklistError::NotListed(missing.to_string()));
        }
        for net in nets {
            self.remove(set, *net)
                .map_err(BlocklistError::map(format!("removing {net}")))?;
            let _ = self.hits.remove(&current[net].id);
        }
        self.bump_generation()
    }

    /// Removes every rule; returns how many there were.
    pub fn flush(&mut self) -> Result<usize, BlocklistError> {
        let _lock = self.pins.lock()?;
        let set = self.active_set()?;
        let removed = self.clear_set(set)?;
        self.bump_generation()?;
        Ok(removed)
    }

    fn clear_set(&mut self, set: usize) -> Result<usize, BlocklistError> {
        let rules = self.read_set(set)?;
        for (net, rule) in &rules {
            self.remove(set, *net)
                .map_err(BlocklistError::map(format!("removing {net}")))?;
            let _ = self.hits.remove(&rule.id);
        }
        Ok(rules.len())
    }

    /// Replaces the whole list at once: the new rules go into the idle set, then one write
    /// to `BLOCKLIST_ACTIVE` switches the program over, so no packet ever sees a half-built
    /// list. The old set is emptied afterwards.
    pub fn replace(&mut self, nets: &[IpNet], comment: Option<&str>) -> Result<(), BlocklistError> {
        encode_comment(comment)?;
        let _lock = self.pins.lock()?;
        let current = self.active_set()?;
        let idle = 1 - current;
        // Left over only if an earlier replace died half-way.
        self.clear_set(idle)?;
        Self::check_capacity(&[], nets)?;
        let rules = self.new_rules(nets, comment, None, Origin::Manual)?;
        self.insert_all(idle, &rules)?;
        self.active
            .set(active::SET, idle as u32, 0)
            .map_err(BlocklistError::map("switching the active set"))?;
        self.bump_generation()?;
        self.clear_set(current)?;
        Ok(())
    }

    /// Removes rules whose TTL has passed by `now_boot_ns` (CLOCK_BOOTTIME); returns them.
    /// Walks every rule: for the CLI and tests; the daemon keeps the deadlines in a heap
    /// ([`super::upkeep::Upkeep`]).
    pub fn expire(&mut self, now_boot_ns: u64) -> Result<Vec<IpNet>, BlocklistError> {
        let _lock = self.pins.lock()?;
        let set = self.active_set()?;
        let due: Vec<(IpNet, u32, u64)> = self
            .read_set(set)?
            .into_iter()
            .filter(|(_, rule)| rule.expires_boot_ns != 0 && rule.expires_boot_ns <= now_boot_ns)
            .map(|(net, rule)| (net, rule.id, rule.expires_boot_ns))
            .collect();
        self.expire_locked(set, &due)
    }

    /// Removes each (prefix, id, deadline) of `due` still listed as that rule; the caller
    /// holds the edit lock. Returns what it removed.
    pub(super) fn expire_locked(
        &mut self,
        set: usize,
        due: &[(IpNet, u32, u64)],
    ) -> Result<Vec<IpNet>, BlocklistError> {
        let mut expired = Vec::new();
        for &(net, id, deadline) in due {
            // Deleted, or deleted and added again, since the caller looked: not ours to remove.
            match self.get_exact(set, net) {
                Some(rule) if rule.id == id && rule.expires_boot_ns == deadline => {}
                _ => continue,
            }
            self.remove(set, net)
                .map_err(BlocklistError::map(format!("removing expired {net}")))?;
            let _ = self.hits.remove(&id);
            expired.push(net);
        }
        if !expired.is_empty() {
            self.bump_generation()?;
        }
        Ok(expired)
    }

    /// The rule a lookup of `net` in `set` finds: `net`'s own, or (when `net` is not listed)
    /// the longest shorter listed prefix containing it; callers compare the rule id.
    fn get_exact(&self, set: usize, net: IpNet) -> Option<Rule> {
        match net {
            IpNet::V4(v4) => self.v4[set]
                .get(
                    &Key::new(u32::from(v4.prefix_len()), v4.network().octets()),
                    0,
                )
                .ok(),
            IpNet::V6(v6) => self.v6[set]
                .get(
                    &Key::new(u32::from(v6.prefix_len()), v6.network().octets()),
                    0,
                )
                .ok(),
        }
    }
}

/// Rules for `nets` with these ids (one each), added now.
pub(super) fn rules_with_ids(
    nets: &[IpNet],
    comment: Option<&str>,
    ttl: Option<Duration>,
    origin: Origin,
    ids: Vec<u32>,
) -> Result<Vec<(IpNet, Rule)>, BlocklistError> {
    let comment = encode_comment(comment)?;
    let ttl = checked_ttl(ttl)?;
    let now = unix_now();
    let now_boot = boot_ns();
    // Both fit: MAX_TTL is checked above.
    let expires = ttl.map_or(0, |ttl| now + ttl.as_secs().max(1));
    let expires_boot_ns = ttl.map_or(0, |ttl| {
        now_boot + ttl.max(Duration::from_secs(1)).as_nanos() as u64
    });
    Ok(nets
        .iter()
        .zip(ids)
        .map(|(net, id)| {
            (
                *net,
                Rule {
                    id,
                    flags: origin.flags(),
                    added_unix_s: now,
                    expires_unix_s: expires,
                    expires_boot_ns,
                    comment,
                },
            )
        })
        .collect())
}

/// Whether the pinned tries hold rules of the layout before boot-time deadlines.
fn is_legacy(pins: &PinDir) -> bool {
    MapInfo::from_pin(pins.pin(names::V4[0]))
        .is_ok_and(|info| info.value_size() as usize == LEGACY_RULE_BYTES)
}

fn net(addr: IpAddr, prefix_len: u32) -> IpNet {
    // The kernel refuses keys longer than the address, so the prefix always fits.
    IpNet::new(addr, prefix_len as u8).unwrap_or_else(|_| IpNet::from(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_up_to_ten_years_is_taken_and_a_longer_one_refused() {
        assert_eq!(checked_ttl(None).unwrap(), None);
        assert_eq!(checked_ttl(Some(MAX_TTL)).unwrap(), Some(MAX_TTL));
        assert_eq!(MAX_TTL, Duration::from_secs(3650 * 86_400));
        for ttl in [
            MAX_TTL + Duration::from_secs(1),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            let err = checked_ttl(Some(ttl)).unwrap_err();
            assert!(matches!(err, BlocklistError::TtlTooLong { .. }), "{err}");
            assert!(err.to_string().contains("3650 days"), "{err}");
        }
        // The longest allowed deadline fits in boot-time nanoseconds with room to spare, even
        // after a century of uptime.
        let century_ns = 100 * 365 * 86_400 * 1_000_000_000u64;
        assert!(century_ns.checked_add(MAX_TTL.as_nanos() as u64).is_some());
    }

    #[test]
    fn boot_time_moves_forward() {
        let first = boot_ns();
        std::thread::sleep(Duration::from_millis(5));
        assert!(boot_ns() >= first + 5_000_000);
    }
}
