//! The pinned drop list as a handle: opening it, reading its rules, hits and totals. Edits to
//! the rules are in `edit`, the pinned maps' layout (and moving an older one) in `layout`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, PerCpuArray, PerCpuHashMap, lpm_trie::LpmTrie},
};
use collector_common::xdp::{COMMENT_BYTES, Rule, RuleHits, active, names, rule_flags, total};
use ipnet::IpNet;
use serde::Serialize;

use super::{
    BlocklistError,
    clock::unix_now,
    layout::{check_layout, is_legacy, load_current, pins_current},
    pins::PinDir,
    rules::net,
};

type V4Trie = LpmTrie<MapData, [u8; 4], Rule>;
type V6Trie = LpmTrie<MapData, [u8; 16], Rule>;

/// The pinned drop list.
pub struct Blocklist {
    pub(super) pins: PinDir,
    /// Index 0 is set A, 1 is set B; `active` says which one the program reads.
    pub(super) v4: [V4Trie; 2],
    pub(super) v6: [V6Trie; 2],
    pub(super) active: Array<MapData, u32>,
    pub(super) hits: PerCpuHashMap<MapData, u32, RuleHits>,
    pub(super) totals: PerCpuArray<MapData, u64>,
}

/// The longest TTL a rule may have: 10 years. Longer is a typo or an overflow (a TTL of
/// u64::MAX seconds used to wrap `now + ttl` to the past and delete the rule at once); a
/// rule meant to stay has no TTL. Ten years of nanoseconds (3.2e17) also fits the boot-time
/// deadline (u64 nanoseconds: 584 years) with room to spare.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

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
    pub(super) fn flags(self) -> u32 {
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

fn comment_text(rule: &Rule) -> String {
    let end = rule
        .comment
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(COMMENT_BYTES);
    String::from_utf8_lossy(&rule.comment[..end]).into_owned()
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

    /// Takes the drop-list maps out of an object loaded by [`super::layout::load_object`].
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
}
