//! Every edit to the rules: add (with ids, room and duplicate checks), delete, flush, replace
//! (the atomic switch of sets) and the TTL sweep. Callers hold the edit lock.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use aya::maps::{MapError, lpm_trie::Key};
use collector_common::xdp::{COMMENT_BYTES, MAX_RULES, Rule, active};
use ipnet::IpNet;

use super::{
    BlocklistError,
    clock::{boot_ns, unix_now},
    store::{Blocklist, MAX_TTL, Origin},
};

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

impl Blocklist {
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
}
