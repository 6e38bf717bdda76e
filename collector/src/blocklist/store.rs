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
use collector_common::xdp::{COMMENT_BYTES, MAX_RULES, Rule, RuleHits, names, rule_flags, total};
use ipnet::IpNet;
use serde::Serialize;

use super::{BlocklistError, pins::PinDir};

type V4Trie = LpmTrie<MapData, [u8; 4], Rule>;
type V6Trie = LpmTrie<MapData, [u8; 16], Rule>;

/// The pinned drop list.
pub struct Blocklist {
    pins: PinDir,
    /// Index 0 is set A, 1 is set B; `active` says which one the program reads.
    v4: [V4Trie; 2],
    v6: [V6Trie; 2],
    active: Array<MapData, u32>,
    hits: PerCpuHashMap<MapData, u32, RuleHits>,
    totals: PerCpuArray<MapData, u64>,
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
}

/// Loads the object with the drop-list maps bound to their pins: existing pins are reused,
/// missing ones created and pinned. Programs are not loaded here (aya loads them on demand).
/// `source_prefixes`: entries of the (unpinned, preallocated) per-source table; 1 where
/// nothing will count sources.
pub(crate) fn load_object(pins: &PinDir, source_prefixes: u32) -> Result<Ebpf, BlocklistError> {
    crate::privileges::raise_memlock_limit_on_old_kernels();
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

/// (key size, value size) each pinned map must have.
fn expected_layout(name: &str) -> (usize, usize) {
    match name {
        n if names::V4.contains(&n) => (4 + 4, size_of::<Rule>()),
        n if names::V6.contains(&n) => (4 + 16, size_of::<Rule>()),
        names::ACTIVE => (4, 4),
        names::HITS => (4, size_of::<RuleHits>()),
        _ => (4, 8),
    }
}

fn check_layout(pins: &PinDir, name: &str) -> Result<(), BlocklistError> {
    let path = pins.pin(name);
    let info = MapInfo::from_pin(&path).map_err(BlocklistError::map(format!(
        "reading map info of {}",
        path.display()
    )))?;
    let (key, value) = expected_layout(name);
    let have = (info.key_size() as usize, info.value_size() as usize);
    if have != (key, value) {
        return Err(BlocklistError::Incompatible {
            path: path.display().to_string(),
            detail: format!(
                "key/value sizes {}/{} bytes, expected {key}/{value}",
                have.0, have.1
            ),
        });
    }
    Ok(())
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
        let all_pinned = names::ALL_MAPS.iter().all(|name| pins.pin(name).exists());
        if all_pinned {
            for name in names::ALL_MAPS {
                check_layout(&pins, name)?;
            }
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
            let mut ebpf = load_object(&pins, 1)?;
            drop(lock);
            Self::from_ebpf(pins, &mut ebpf)
        }
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

    fn active_set(&self) -> Result<usize, BlocklistError> {
        let active = self
            .active
            .get(&0, 0)
            .map_err(BlocklistError::map("reading the active set"))?;
        Ok(usize::from(active != 0))
    }

    /// Every rule of one set, with its prefix.
    fn read_set(&self, set: usize) -> Result<Vec<(IpNet, Rule)>, BlocklistError> {
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
        })
    }

    /// Drops by rule for the exporter: the `top` rules by packets, the rest as "other".
    pub fn drop_metrics(&self, top: usize) -> Result<DropMetrics, BlocklistError> {
        let mut rules = self.list()?;
        rules.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.net.cmp(&b.net)));
        let mut metrics = DropMetrics {
            totals: self.totals()?,
            automatic_rules: rules.iter().filter(|rule| rule.automatic).count() as u64,
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
    fn insert_all(&mut self, set: usize, rules: &[(IpNet, Rule)]) -> Result<(), BlocklistError> {
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
        let comment = encode_comment(comment)?;
        let now = unix_now();
        let expires = ttl.map_or(0, |ttl| now + ttl.as_secs().max(1));
        let ids = self.allocate_ids(nets.len())?;
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
                        comment,
                    },
                )
            })
            .collect())
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
        let _lock = self.pins.lock()?;
        let set = self.active_set()?;
        let current = self.read_set(set)?;
        let listed: HashSet<IpNet> = current.iter().map(|(net, _)| *net).collect();
        if let Some(dup) = nets.iter().find(|net| listed.contains(net)) {
            return Err(BlocklistError::Duplicate(dup.to_string()));
        }
        Self::check_capacity(&current, nets)?;
        let rules = self.new_rules(nets, comment, ttl, origin)?;
        self.insert_all(set, &rules)
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
        Ok(())
    }

    /// Removes every rule; returns how many there were.
    pub fn flush(&mut self) -> Result<usize, BlocklistError> {
        let _lock = self.pins.lock()?;
        let set = self.active_set()?;
        self.clear_set(set)
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
        let active = self.active_set()?;
        let idle = 1 - active;
        // Left over only if an earlier replace died half-way.
        self.clear_set(idle)?;
        Self::check_capacity(&[], nets)?;
        let rules = self.new_rules(nets, comment, None, Origin::Manual)?;
        self.insert_all(idle, &rules)?;
        self.active
            .set(0, idle as u32, 0)
            .map_err(BlocklistError::map("switching the active set"))?;
        self.clear_set(active)?;
        Ok(())
    }

    /// Removes rules whose TTL has passed by `now` (Unix seconds); returns them.
    pub fn expire(&mut self, now: u64) -> Result<Vec<IpNet>, BlocklistError> {
        let _lock = self.pins.lock()?;
        let set = self.active_set()?;
        let mut expired = Vec::new();
        for (net, rule) in self.read_set(set)? {
            if rule.expires_unix_s != 0 && rule.expires_unix_s <= now {
                self.remove(set, net)
                    .map_err(BlocklistError::map(format!("removing expired {net}")))?;
                let _ = self.hits.remove(&rule.id);
                expired.push(net);
            }
        }
        Ok(expired)
    }
}

fn net(addr: IpAddr, prefix_len: u32) -> IpNet {
    // The kernel refuses keys longer than the address, so the prefix always fits.
    IpNet::new(addr, prefix_len as u8).unwrap_or_else(|_| IpNet::from(addr))
}
