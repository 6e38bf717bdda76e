//! The daemon's per-window work on the drop list: expire rules past their TTL and read the
//! counters the exporter shows, at a cost that does not grow with the number of rules.
//!
//! What it costs and why: the rules themselves are read (two syscalls a rule: aya's trie
//! iterator, as LPM tries have no batch operations) only when the list's generation counter
//! moved, i.e. after an edit; otherwise a window costs one read of that counter, the five
//! totals, and a batch read of the hit table (`BPF_MAP_LOOKUP_BATCH`: a few syscalls for
//! thousands of entries, and the table holds only rules that dropped something). TTL
//! deadlines sit in a heap, so expiring looks at due rules only. The program itself ignores
//! expired rules (boot-time deadlines in the map values), so a sweep put off, because another
//! process holds the edit lock, only delays the clean-up: windows never wait for the lock.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    os::fd::AsFd as _,
};

use aya::maps::IterableMap as _;
use collector_common::xdp::{MAX_RULES, RuleHits, rule_flags};
use ipnet::IpNet;

use super::{
    Blocklist, BlocklistError,
    batch::read_u32_percpu,
    clock::boot_ns,
    edit::rules_with_ids,
    store::{DropMetrics, Origin},
};

/// What the daemon knows of the list between edits.
#[derive(Debug, Default)]
pub struct Upkeep {
    /// The generation the cache below was read at; `None`: never read.
    generation: Option<u32>,
    /// Rule id → (prefix, added automatically).
    rules: HashMap<u32, (IpNet, bool)>,
    /// (deadline in boot ns, prefix, id), soonest first; entries of rules gone since are
    /// skipped when due.
    deadlines: BinaryHeap<Reverse<(u64, IpNet, u32)>>,
    /// Windows whose sweep waited for another process's edit lock (cumulative).
    pub sweeps_postponed: u64,
    /// Full reads of the rules (each after an edit).
    pub rescans: u64,
    /// `false` once the kernel refused a batch read: iterate instead (kernels before 5.6).
    no_batch: bool,
    /// Each hit rule's counters at the last window, by (id, prefix), to take deltas.
    last_hits: HashMap<(u32, IpNet), (u64, u64)>,
    /// Packets and bytes dropped by rules while they were outside the top rules (or in the
    /// window they expired), summed since the daemon started: `rule="other"` only grows.
    other: (u64, u64),
}

/// What a rule's (packets, bytes) counter added since `before`; a counter lower than before
/// was reset (its id reused for a new rule), so all of it is new.
fn counter_delta(before: (u64, u64), now: (u64, u64)) -> (u64, u64) {
    if now.0 < before.0 || now.1 < before.1 {
        now
    } else {
        (now.0 - before.0, now.1 - before.1)
    }
}

impl Upkeep {
    /// One window's upkeep: sweep due rules (unless the lock is held elsewhere), then the
    /// drop metrics with the `top` rules by packets.
    pub fn window(
        &mut self,
        list: &mut Blocklist,
        top: usize,
    ) -> Result<DropMetrics, BlocklistError> {
        self.refresh(list)?;
        for rule in self.sweep(list)? {
            tracing::info!(%rule, "drop-list rule expired and removed");
        }
        self.metrics(list, top)
    }

    /// The live rules as (prefix, added automatically), current as of now.
    pub fn listed(&mut self, list: &Blocklist) -> Result<Vec<(IpNet, bool)>, BlocklistError> {
        self.refresh(list)?;
        Ok(self.rules.values().copied().collect())
    }

    /// Adds rules for the daemon (automatic blocking): never waits for the edit lock
    /// ([`BlocklistError::Busy`] while another process holds it), and when nobody edited since
    /// the cache was read, checks duplicates, room and free ids against the cache instead of
    /// walking the list (two syscalls per rule, three walks per add), then keeps the cache
    /// current. Ids in use only in the idle set (left by a replace that died half-way) may be
    /// reused: the next replace empties the idle set before filling it, so they never meet.
    pub fn add(
        &mut self,
        list: &mut Blocklist,
        nets: &[IpNet],
        comment: Option<&str>,
        ttl: Option<std::time::Duration>,
        origin: Origin,
    ) -> Result<(), BlocklistError> {
        // Refused before the lock, as the CLI path does.
        rules_with_ids(nets, comment, ttl, origin, Vec::new())?;
        let Some(_lock) = list.pins.try_lock()? else {
            return Err(BlocklistError::Busy(list.pins.path.display().to_string()));
        };
        if self.generation != Some(list.generation()?) {
            return list.add_locked(nets, comment, ttl, origin);
        }
        let listed: HashSet<IpNet> = self.rules.values().map(|(net, _)| *net).collect();
        let duplicates: Vec<IpNet> = nets
            .iter()
            .filter(|net| listed.contains(net))
            .copied()
            .collect();
        if !duplicates.is_empty() {
            return Err(BlocklistError::Duplicate(duplicates));
        }
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            let have = listed
                .iter()
                .filter(|net| net.addr().is_ipv4() == v4)
                .count();
            let more = nets.iter().filter(|net| net.addr().is_ipv4() == v4).count();
            if have + more > MAX_RULES as usize {
                return Err(BlocklistError::Full {
                    family,
                    max: MAX_RULES,
                    have,
                    adding: more,
                });
            }
        }
        let ids: Vec<u32> = (1..)
            .filter(|id| !self.rules.contains_key(id))
            .take(nets.len())
            .collect();
        for id in &ids {
            // A counter left by a rule removed while a program ran would credit the new rule.
            let _ = list.hits.remove(id);
        }
        let rules = rules_with_ids(nets, comment, ttl, origin, ids)?;
        let set = list.active_set()?;
        list.insert_all(set, &rules)?;
        list.bump_generation()?;
        for (net, rule) in &rules {
            self.rules
                .insert(rule.id, (*net, rule.flags & rule_flags::AUTOMATIC != 0));
            if rule.expires_boot_ns != 0 {
                self.deadlines
                    .push(Reverse((rule.expires_boot_ns, *net, rule.id)));
            }
        }
        self.generation = Some(list.generation()?);
        Ok(())
    }

    /// Re-reads the rules if the list changed since the last read.
    fn refresh(&mut self, list: &Blocklist) -> Result<(), BlocklistError> {
        // Read before the rules: an edit racing the walk moves it again, and the next window
        // reads once more.
        let generation = list.generation()?;
        if self.generation == Some(generation) {
            return Ok(());
        }
        let rules = list.read_set(list.active_set()?)?;
        self.rules.clear();
        self.deadlines.clear();
        for (net, rule) in rules {
            self.rules
                .insert(rule.id, (net, rule.flags & rule_flags::AUTOMATIC != 0));
            if rule.expires_boot_ns != 0 {
                self.deadlines
                    .push(Reverse((rule.expires_boot_ns, net, rule.id)));
            }
        }
        self.generation = Some(generation);
        self.rescans += 1;
        Ok(())
    }

    /// Removes the rules whose deadline passed, if the edit lock is free; returns them.
    fn sweep(&mut self, list: &mut Blocklist) -> Result<Vec<IpNet>, BlocklistError> {
        let now = boot_ns();
        if self
            .deadlines
            .peek()
            .is_none_or(|Reverse((deadline, _, _))| *deadline > now)
        {
            return Ok(Vec::new());
        }
        let Some(_lock) = list.pins.try_lock()? else {
            self.sweeps_postponed += 1;
            return Ok(Vec::new());
        };
        let unchanged = list.generation()? == self.generation.unwrap_or_default();
        let mut due = Vec::new();
        while let Some(Reverse((deadline, net, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            due.push((net, id, deadline));
        }
        let set = list.active_set()?;
        let expired = list.expire_locked(set, &due)?;
        if unchanged {
            // Nobody else edited since our read: our removals are the only change, so the
            // cache stays valid without another walk.
            for (net, id, _) in &due {
                if expired.contains(net) {
                    self.rules.remove(id);
                }
            }
            self.generation = Some(list.generation()?);
        }
        Ok(expired)
    }

    /// Hits per live rule, summed over CPUs, in a few batch reads.
    fn hits(&mut self, list: &Blocklist) -> Result<Vec<(u32, RuleHits)>, BlocklistError> {
        let sum = |per_cpu: &[RuleHits]| {
            per_cpu
                .iter()
                .fold(RuleHits::default(), |sum, hits| RuleHits {
                    packets: sum.packets + hits.packets,
                    bytes: sum.bytes + hits.bytes,
                })
        };
        if !self.no_batch {
            let cpus = aya::util::nr_cpus().map_err(|(_, source)| BlocklistError::Io {
                what: "counting the possible CPUs".into(),
                source,
            })?;
            let fd = list.hits.map().fd().as_fd();
            match read_u32_percpu::<RuleHits>(fd, cpus) {
                Ok(Some(entries)) => {
                    return Ok(entries
                        .into_iter()
                        .map(|(id, per_cpu)| (id, sum(&per_cpu)))
                        .collect());
                }
                Ok(None) => {
                    tracing::info!("no batch map reads on this kernel: reading hits one by one");
                    self.no_batch = true;
                }
                Err(source) => {
                    return Err(BlocklistError::Io {
                        what: "reading the drop list's hits (BPF_MAP_LOOKUP_BATCH)".into(),
                        source,
                    });
                }
            }
        }
        let mut out = Vec::new();
        for entry in list.hits.iter() {
            match entry {
                Ok((id, per_cpu)) => out.push((id, sum(&per_cpu))),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(BlocklistError::Map {
                        what: "reading the drop list's hits".into(),
                        source,
                    });
                }
            }
        }
        Ok(out)
    }

    fn metrics(&mut self, list: &Blocklist, top: usize) -> Result<DropMetrics, BlocklistError> {
        let mut hit: Vec<(u32, IpNet, RuleHits)> = self
            .hits(list)?
            .into_iter()
            // Counters of rules no longer listed (a removal racing a packet) are left out,
            // as `list` leaves them out.
            .filter_map(|(id, hits)| self.rules.get(&id).map(|(net, _)| (id, *net, hits)))
            .filter(|(_, _, hits)| hits.packets > 0)
            .collect();
        hit.sort_by(|a, b| b.2.packets.cmp(&a.2.packets).then(a.1.cmp(&b.1)));
        let mut metrics = DropMetrics {
            totals: list.totals()?,
            automatic_rules: self.rules.values().filter(|(_, auto)| *auto).count() as u64,
            rules: self.rules.len() as u64,
            sweeps_postponed: self.sweeps_postponed,
            ..DropMetrics::default()
        };
        let mut seen = HashMap::with_capacity(hit.len());
        for (rank, (id, net, hits)) in hit.into_iter().enumerate() {
            let now = (hits.packets, hits.bytes);
            if rank < top {
                metrics.top.push((net.to_string(), now.0, now.1));
            } else {
                let before = self.last_hits.get(&(id, net)).copied().unwrap_or((0, 0));
                let (packets, bytes) = counter_delta(before, now);
                self.other.0 += packets;
                self.other.1 += bytes;
            }
            seen.insert((id, net), now);
        }
        // A rule that left (expired, deleted) keeps what it added to `other`; its last
        // window's drops (between the previous read and its removal) are in the totals.
        self.last_hits = seen;
        (metrics.other_packets, metrics.other_bytes) = self.other;
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::counter_delta;

    #[test]
    fn a_counter_delta_is_what_was_added_and_a_reset_counter_counts_whole() {
        assert_eq!(counter_delta((10, 640), (15, 960)), (5, 320));
        assert_eq!(counter_delta((0, 0), (3, 192)), (3, 192));
        // The id was reused by a new rule: its counter started again.
        assert_eq!(counter_delta((10, 640), (2, 128)), (2, 128));
    }
}
