//! The drop list: an XDP program that drops packets whose IPv4 or IPv6 source address falls in a
//! listed prefix (longest-prefix-match tries), and passes everything else, including frames it
//! cannot parse, untouched.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_boot_ns,
    macros::{map, xdp},
    maps::{
        Array, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap,
        lpm_trie::{Key, LpmTrie},
    },
    programs::XdpContext,
};
use collector_common::xdp::{
    MAX_RULES, Rule, RuleHits, SOURCE_PREFIXES, SourceConfig, SourceKey, SourceTraffic, active,
    total,
};

use crate::util::add;

const ETH_HEADER: usize = 14;
const VLAN_HEADER: usize = 4;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

// The user-space side pins these under bpffs and fills them; see collector/src/blocklist.
#[map]
static BLOCKLIST_V4_A: LpmTrie<[u8; 4], Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static BLOCKLIST_V4_B: LpmTrie<[u8; 4], Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static BLOCKLIST_V6_A: LpmTrie<[u8; 16], Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static BLOCKLIST_V6_B: LpmTrie<[u8; 16], Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);

/// Slot `active::SET`: which pair of tries is live (0: A, 1: B); slot `active::GENERATION`:
/// bumped by every edit (user space only).
#[map]
static BLOCKLIST_ACTIVE: Array<u32> = Array::with_max_entries(active::COUNT, 0);

/// Per-rule hits by rule id. Not preallocated: a preallocated per-CPU table this size would
/// cost MAX_RULES × 2 × 16 bytes per CPU whether or not any rule exists.
#[map]
static BLOCKLIST_HITS: PerCpuHashMap<u32, RuleHits> =
    PerCpuHashMap::with_max_entries(2 * MAX_RULES, BPF_F_NO_PREALLOC);

#[map]
static BLOCKLIST_TOTALS: PerCpuArray<u64> = PerCpuArray::with_max_entries(total::COUNT, 0);

/// Passed traffic by source prefix, for the daemon's automatic flood blocking. Per-CPU so a
/// flood hitting every CPU does not bounce one cache line; LRU so the table stays bounded
/// whatever the number of sources (LRU maps are always preallocated: SOURCE_PREFIXES × 16
/// bytes per CPU).
#[map]
static SOURCE_TRAFFIC: LruPerCpuHashMap<SourceKey, SourceTraffic> =
    LruPerCpuHashMap::with_max_entries(SOURCE_PREFIXES, 0);

/// Slot 0: whether and at which prefix lengths to count passed traffic (all zero: off).
#[map]
static SOURCE_CONFIG: Array<SourceConfig> = Array::with_max_entries(1, 0);

/// What to do with an IP frame.
enum Verdict {
    Drop(u32),
    /// Passed; the source address, unmasked.
    Pass(SourceKey),
    /// Passed: the matching rule's TTL is over (no daemon has removed it yet).
    Expired(SourceKey),
}

/// Why a frame is passed without a lookup.
enum Skip {
    Malformed,
    NotIp,
}

#[xdp]
pub fn xdp_blocklist(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match decide(&ctx) {
        Ok(Verdict::Drop(rule_id)) => {
            count_hit(rule_id, len);
            add(&BLOCKLIST_TOTALS, total::DROPPED, 1);
            xdp_action::XDP_DROP
        }
        Ok(Verdict::Pass(source)) => {
            count_source(source, len);
            add(&BLOCKLIST_TOTALS, total::PASSED, 1);
            xdp_action::XDP_PASS
        }
        Ok(Verdict::Expired(source)) => {
            count_source(source, len);
            add(&BLOCKLIST_TOTALS, total::EXPIRED, 1);
            add(&BLOCKLIST_TOTALS, total::PASSED, 1);
            xdp_action::XDP_PASS
        }
        Err(skip) => {
            add(
                &BLOCKLIST_TOTALS,
                match skip {
                    Skip::Malformed => total::MALFORMED,
                    Skip::NotIp => total::NON_IP,
                },
                1,
            );
            add(&BLOCKLIST_TOTALS, total::PASSED, 1);
            xdp_action::XDP_PASS
        }
    }
}

/// Reads `T` at `offset`, or `None` when the frame ends before it (the check the verifier
/// wants before every packet access).
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked against data_end just above; unaligned because IP headers sit
    // at offset 14 (or 18).
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

/// Drop with the id of the rule matching the source address, or pass.
#[inline(always)]
fn decide(ctx: &XdpContext) -> Result<Verdict, Skip> {
    let available = ctx.data_end() - ctx.data();
    let mut ethertype = u16::from_be(read::<u16>(ctx, 12).ok_or(Skip::Malformed)?);
    let mut l3 = ETH_HEADER;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = u16::from_be(read::<u16>(ctx, 16).ok_or(Skip::Malformed)?);
        l3 += VLAN_HEADER;
    }
    let set = BLOCKLIST_ACTIVE.get(active::SET).copied().unwrap_or(0);
    match ethertype {
        ETH_P_IP => {
            let first = read::<u8>(ctx, l3).ok_or(Skip::Malformed)?;
            let header = usize::from(first & 0x0f) * 4;
            let total_len = usize::from(u16::from_be(
                read::<u16>(ctx, l3 + 2).ok_or(Skip::Malformed)?,
            ));
            // Ethernet may pad a short datagram, so the frame can be longer than total_len,
            // never shorter; a header that ends past total_len or the frame is a lie.
            if first >> 4 != 4
                || header < IPV4_HEADER
                || total_len < header
                || l3 + total_len > available
            {
                return Err(Skip::Malformed);
            }
            let source = read::<[u8; 4]>(ctx, l3 + 12).ok_or(Skip::Malformed)?;
            let key = Key::new(32, source);
            let rule = if set == 0 {
                BLOCKLIST_V4_A.get(&key)
            } else {
                BLOCKLIST_V4_B.get(&key)
            };
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&source);
            let key = SourceKey {
                addr,
                family: 4,
                prefix_len: 32,
                _pad: [0; 2],
            };
            Ok(verdict(rule, key))
        }
        ETH_P_IPV6 => {
            let first = read::<u8>(ctx, l3).ok_or(Skip::Malformed)?;
            let payload_len = usize::from(u16::from_be(
                read::<u16>(ctx, l3 + 4).ok_or(Skip::Malformed)?,
            ));
            // Jumbograms (payload length 0 plus a hop-by-hop option) never reach an XDP
            // program at Ethernet MTUs, so a zero length with a payload is only padding.
            if first >> 4 != 6 || l3 + IPV6_HEADER + payload_len > available {
                return Err(Skip::Malformed);
            }
            let source = read::<[u8; 16]>(ctx, l3 + 8).ok_or(Skip::Malformed)?;
            let key = Key::new(128, source);
            let rule = if set == 0 {
                BLOCKLIST_V6_A.get(&key)
            } else {
                BLOCKLIST_V6_B.get(&key)
            };
            let key = SourceKey {
                addr: source,
                family: 6,
                prefix_len: 128,
                _pad: [0; 2],
            };
            Ok(verdict(rule, key))
        }
        _ => Err(Skip::NotIp),
    }
}

/// Drop for a live matching rule; pass for none or an expired one. An expired longer prefix
/// hides a live shorter one that also matches until the daemon removes it (at its next
/// window): the trie returns only the longest match.
#[inline(always)]
fn verdict(rule: Option<&Rule>, source: SourceKey) -> Verdict {
    match rule {
        None => Verdict::Pass(source),
        Some(rule) => {
            // SAFETY: a helper without arguments or preconditions (kernel 5.8+).
            if rule.expires_boot_ns != 0
                && unsafe { bpf_ktime_get_boot_ns() } >= rule.expires_boot_ns
            {
                Verdict::Expired(source)
            } else {
                Verdict::Drop(rule.id)
            }
        }
    }
}

#[inline(always)]
fn count_hit(rule_id: u32, bytes: u64) {
    if let Some(hits) = BLOCKLIST_HITS.get_ptr_mut(rule_id) {
        // SAFETY: per-CPU value, and XDP runs do not nest on one CPU.
        unsafe {
            (*hits).packets += 1;
            (*hits).bytes += bytes;
        }
        return;
    }
    // First hit of this rule on any CPU. An update from a program sets this CPU's copy and
    // zeroes the others; if another CPU won the race, add to the entry it made.
    let first = RuleHits { packets: 1, bytes };
    if BLOCKLIST_HITS
        .insert(rule_id, first, BPF_NOEXIST as u64)
        .is_err()
        && let Some(hits) = BLOCKLIST_HITS.get_ptr_mut(rule_id)
    {
        // SAFETY: as above.
        unsafe {
            (*hits).packets += 1;
            (*hits).bytes += bytes;
        }
    }
}

/// Counts a passed frame under its source prefix, when the daemon asked for it.
#[inline(always)]
fn count_source(mut key: SourceKey, bytes: u64) {
    let Some(config) = SOURCE_CONFIG.get(0) else {
        return;
    };
    if config.enabled == 0 {
        return;
    }
    // Clamped here too, so every shift below stays under the operand's width (the verifier
    // and Rust both refuse a shift by the full width).
    if key.family == 4 {
        let len = clamp(config.v4_prefix_len, 32);
        let mask = u32::MAX << (32 - len);
        let word = u32::from_be_bytes([key.addr[0], key.addr[1], key.addr[2], key.addr[3]]) & mask;
        key.addr[..4].copy_from_slice(&word.to_be_bytes());
        key.prefix_len = len as u8;
    } else {
        let len = clamp(config.v6_prefix_len, 128);
        let mut high = [0u8; 8];
        let mut low = [0u8; 8];
        high.copy_from_slice(&key.addr[..8]);
        low.copy_from_slice(&key.addr[8..]);
        let (high, low) = if len <= 64 {
            (u64::from_be_bytes(high) & (u64::MAX << (64 - len)), 0)
        } else {
            (
                u64::from_be_bytes(high),
                u64::from_be_bytes(low) & (u64::MAX << (128 - len)),
            )
        };
        key.addr[..8].copy_from_slice(&high.to_be_bytes());
        key.addr[8..].copy_from_slice(&low.to_be_bytes());
        key.prefix_len = len as u8;
    }
    if let Some(traffic) = SOURCE_TRAFFIC.get_ptr_mut(key) {
        // SAFETY: per-CPU value, and XDP runs do not nest on one CPU.
        unsafe {
            (*traffic).packets += 1;
            (*traffic).bytes += bytes;
        }
        return;
    }
    // As in count_hit: the first frame of this prefix on any CPU creates the entry.
    let first = SourceTraffic { packets: 1, bytes };
    if SOURCE_TRAFFIC
        .insert(key, first, BPF_NOEXIST as u64)
        .is_err()
        && let Some(traffic) = SOURCE_TRAFFIC.get_ptr_mut(key)
    {
        // SAFETY: as above.
        unsafe {
            (*traffic).packets += 1;
            (*traffic).bytes += bytes;
        }
    }
}

/// `len` into 1..=`max`.
#[inline(always)]
fn clamp(len: u32, max: u32) -> u32 {
    if len == 0 {
        1
    } else if len > max {
        max
    } else {
        len
    }
}
