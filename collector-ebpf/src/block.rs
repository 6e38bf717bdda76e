//! Block I/O: per-device request counts, bytes, in-flight depth and issue → complete latency
//! from the stable `block:block_rq_issue` / `block:block_rq_complete` tracepoints.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use collector_common::{
    BlockDevStats, BlockTracepointLayout, INFLIGHT_SLOTS, InflightKey, InflightSlot,
    RECORD_HEAD_BYTES, SlowIoEvent, counter, op, sampled_group,
};

use crate::util::{add, latency_bucket, started_before_sampling};

/// Tracepoint field offsets; the daemon writes the running kernel's values before load.
#[unsafe(no_mangle)]
static BLOCK_LAYOUT: BlockTracepointLayout = BlockTracepointLayout::LINUX_6;

/// Completions at or over this latency go to user space as [`SlowIoEvent`]s. Set before load.
#[unsafe(no_mangle)]
static SLOW_IO_THRESHOLD_NS: u64 = 10_000_000;

#[map]
static BLOCK_DEV_STATS: PerCpuHashMap<u32, BlockDevStats> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// Issue timestamps of requests in flight, in an array indexed by a hash of the request's key:
/// array slots are plain loads and stores, where a hash map costs a locked helper call to
/// insert and another to delete, per request. A request takes one of two neighbouring slots.
#[map]
static INFLIGHT: Array<InflightSlot> = Array::with_max_entries(INFLIGHT_SLOTS, 0);

/// A pending entry older than this is taken to belong to a request whose completion we never
/// saw (the kernel's own request timeouts are 30 s), and its slot is reused: so a lost
/// completion cannot hold a slot for ever. The reuse is counted
/// (`counter::INFLIGHT_STALE_EVICTED`). The request stays in the device's tracked count; the
/// in-flight gauge comes from sysfs where the daemon can read it, so it is not held up.
const INFLIGHT_STALE_NS: u64 = 120_000_000_000;

/// Size is a default: the daemon sets it from `--ringbuf-bytes` before load.
#[map]
static SLOW_IO_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// One zeroed value, the source for inserting a new device: a `BlockDevStats` on the stack
/// would take most of the verifier's 512-byte stack limit.
#[map]
static ZERO_STATS: Array<BlockDevStats> = Array::with_max_entries(1, 0);

#[inline(always)]
fn layout() -> BlockTracepointLayout {
    // SAFETY: a plain read of a static; volatile so the compiler cannot fold in the default,
    // since the loader rewrites the value in .rodata.
    unsafe { core::ptr::read_volatile(&BLOCK_LAYOUT) }
}

/// Adds one to a kernel-side counter and returns the new per-CPU value.
#[inline(always)]
fn bump(index: u32) -> u64 {
    add(&COUNTERS, index, 1)
}

/// Decodes `rwbs` ("R", "WS", "FWS", "F", "D", "N", …) into an [`op`] class and whether the
/// request flushes the cache. A leading 'F' is a pre-flush when another op letter follows.
#[inline(always)]
fn classify(rwbs: [u8; 2]) -> (usize, bool) {
    let (letter, preflush) = match rwbs {
        [b'F', next @ (b'R' | b'W' | b'D' | b'N')] => (next, true),
        [first, _] => (first, false),
    };
    match letter {
        b'R' => (op::READ, preflush),
        b'W' => (op::WRITE, preflush),
        b'D' => (op::DISCARD, preflush),
        b'F' => (op::FLUSH, true),
        _ => (op::OTHER, preflush),
    }
}

/// Flush requests carry no sector (issued at 0, completed at -1 on 6.x): key them all on one
/// sentinel so issue and completion meet, and so they never collide with a write at sector 0.
#[inline(always)]
fn inflight_key(dev: u32, sector: u64, class: usize) -> InflightKey {
    InflightKey {
        dev,
        _pad: 0,
        sector: if class == op::FLUSH { u64::MAX } else { sector },
    }
}

/// The first [`RECORD_HEAD_BYTES`] of a tracepoint's record, read with one helper call: the
/// fields we need all sit there (the daemon checks), and each is then a load from the stack at
/// an offset the verifier knows (read-only data), where reading each field on its own would
/// cost a `bpf_probe_read_kernel` call apiece.
struct RecordHead([u8; RECORD_HEAD_BYTES]);

impl RecordHead {
    #[inline(always)]
    fn read(ctx: &TracePointContext) -> Result<Self, i32> {
        // SAFETY: the helper checks the read; the record of a block tracepoint is at least
        // this long and sits in the kernel's per-CPU trace buffer.
        unsafe { bpf_probe_read_kernel(ctx.as_ptr().cast::<[u8; RECORD_HEAD_BYTES]>()) }.map(Self)
    }

    #[inline(always)]
    fn at<T: Copy>(&self, offset: u32) -> Result<T, i32> {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > RECORD_HEAD_BYTES {
            return Err(0);
        }
        // SAFETY: in bounds (checked above); the fields are plain integers.
        Ok(unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(offset).cast::<T>()) })
    }
}

/// The two in-flight slots a key may use.
#[inline(always)]
fn inflight_slots(key: &InflightKey) -> (u32, u32) {
    let hash = (key.sector ^ (u64::from(key.dev) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let first = ((hash >> 32) as u32) & (INFLIGHT_SLOTS - 1);
    (first, first ^ 1)
}

#[inline(always)]
fn holds(slot: *const InflightSlot, key: &InflightKey) -> bool {
    // SAFETY: a valid array slot.
    unsafe {
        core::ptr::read_volatile(&(*slot).started_ns) != 0
            && (*slot).key.sector == key.sector
            && (*slot).key.dev == key.dev
    }
}

enum Issue {
    /// Tracked; `true` when it replaced a pending entry of the same key.
    Tracked(bool),
    /// Both slots hold other requests in flight: this one's latency is not measured.
    Full,
}

/// Records that `key` was issued at `now`.
#[inline(always)]
fn track_issue(key: &InflightKey, now: u64) -> Issue {
    let (first, second) = inflight_slots(key);
    let (Some(first), Some(second)) = (INFLIGHT.get_ptr_mut(first), INFLIGHT.get_ptr_mut(second))
    else {
        return Issue::Full;
    };
    // SAFETY (all blocks below): valid array slots. A slot is written key first, start time
    // last, and the start time is what marks it taken; a completion comes after its issue.
    for slot in [first, second] {
        if holds(slot, key) {
            unsafe { core::ptr::write_volatile(&mut (*slot).started_ns, now) };
            return Issue::Tracked(true);
        }
    }
    for slot in [first, second] {
        let started = unsafe { core::ptr::read_volatile(&(*slot).started_ns) };
        if started == 0 {
            return take_slot(slot, key, now);
        }
        // A request issued before the hooks last came back on may have completed unseen while
        // they were off (if its completion comes later, it counts as unmatched).
        if started_before_sampling(sampled_group::BLOCK, started) {
            return take_slot(slot, key, now);
        }
        // A request pending past the stale limit lost its completion: counted, not silent.
        if now.saturating_sub(started) > INFLIGHT_STALE_NS {
            bump(counter::INFLIGHT_STALE_EVICTED);
            return take_slot(slot, key, now);
        }
    }
    Issue::Full
}

/// Writes `key`, issued at `now`, into a free `slot`.
#[inline(always)]
fn take_slot(slot: *mut InflightSlot, key: &InflightKey, now: u64) -> Issue {
    // SAFETY: a valid array slot; key first, start time last (the start time marks it taken).
    unsafe {
        (*slot).key = *key;
        core::ptr::write_volatile(&mut (*slot).started_ns, now);
    }
    Issue::Tracked(false)
}

/// Takes `key` out of the in-flight table; its issue time if it was there.
#[inline(always)]
fn track_complete(key: &InflightKey) -> Option<u64> {
    let (first, second) = inflight_slots(key);
    for index in [first, second] {
        let slot = INFLIGHT.get_ptr_mut(index)?;
        if holds(slot, key) {
            // SAFETY: a valid array slot.
            unsafe {
                let started = core::ptr::read_volatile(&(*slot).started_ns);
                core::ptr::write_volatile(&mut (*slot).started_ns, 0);
                return Some(started);
            }
        }
    }
    None
}

#[inline(always)]
fn device_stats(dev: u32) -> Option<*mut BlockDevStats> {
    if let Some(stats) = BLOCK_DEV_STATS.get_ptr_mut(dev) {
        return Some(stats);
    }
    let zero = ZERO_STATS.get(0)?;
    // BPF_NOEXIST: another CPU may have inserted the same device meanwhile; that is fine, each
    // CPU has its own copy of the value.
    if BLOCK_DEV_STATS
        .insert(dev, zero, BPF_NOEXIST as u64)
        .is_err()
        && BLOCK_DEV_STATS.get_ptr_mut(dev).is_none()
    {
        return None;
    }
    BLOCK_DEV_STATS.get_ptr_mut(dev)
}

#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    // The only way out with an error is a record we could not read: nothing is lost silently.
    if try_block_rq_issue(&ctx).is_err() {
        bump(counter::ISSUE_UNREADABLE);
    }
    0
}

/// Counts an issued request. `Err` only when its record cannot be read.
fn try_block_rq_issue(ctx: &TracePointContext) -> Result<(), i32> {
    let layout = layout();
    let head = RecordHead::read(ctx)?;
    let dev: u32 = head.at(layout.issue_dev)?;
    let sector: u64 = head.at(layout.issue_sector)?;
    let bytes: u32 = head.at(layout.issue_bytes)?;
    let (class, flush) = classify(head.at(layout.issue_rwbs)?);

    let key = inflight_key(dev, sector, class);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let (tracked, replaces) = match track_issue(&key, now) {
        Issue::Tracked(replaces) => (true, replaces),
        Issue::Full => {
            if bump(counter::INFLIGHT_TABLE_FULL) == 1 {
                warn!(ctx, "in-flight table full: request latency not tracked");
            }
            (false, false)
        }
    };
    let Some(stats) = device_stats(dev) else {
        if bump(counter::DEVICE_TABLE_FULL) == 1 {
            warn!(ctx, "block device table full: device {} not counted", dev);
        }
        return Ok(());
    };
    // SAFETY: per-CPU value, tracepoint programs do not nest on one CPU; the `get_mut`s keep
    // every index in bounds for the verifier.
    unsafe {
        let stats = &mut *stats;
        if let Some(n) = stats.ops.get_mut(class) {
            *n += 1;
        }
        if let Some(n) = stats.bytes.get_mut(class) {
            *n += u64::from(bytes);
        }
        if flush {
            stats.flushes += 1;
        }
        // An issue that overwrites a same-key entry leaves one completion to match, not two:
        // counting it would show a request in flight for ever.
        if tracked && !replaces {
            stats.tracked_issued += 1;
        }
    }
    Ok(())
}

#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    if try_block_rq_complete(&ctx).is_err() {
        bump(counter::COMPLETE_UNREADABLE);
    }
    0
}

/// Counts a completion. `Err` only when its record cannot be read; every other way out
/// bumps a counter of its own, so that each completion the program runs for is accounted for.
fn try_block_rq_complete(ctx: &TracePointContext) -> Result<(), i32> {
    let layout = layout();
    let head = RecordHead::read(ctx)?;
    let dev: u32 = head.at(layout.complete_dev)?;
    let sector: u64 = head.at(layout.complete_sector)?;
    let nr_sector: u32 = head.at(layout.complete_nr_sector)?;
    let error: i32 = head.at(layout.complete_error)?;
    let class = classify(head.at(layout.complete_rwbs)?).0;
    // The flush machinery completes a request that carried a flush a second time, with no
    // sectors left, after its post-flush: the data completion already counted it. Counted
    // apart (not an error) so that the completions seen add up.
    if nr_sector == 0 && class != op::FLUSH {
        bump(counter::COMPLETE_WITHOUT_SECTORS);
        return Ok(());
    }
    let key = inflight_key(dev, sector, class);
    // Issued before the hooks last came back on: its latency would include time unwatched,
    // so it counts as a completion we saw no issue of.
    let Some(started) = track_complete(&key)
        .filter(|&started| !started_before_sampling(sampled_group::BLOCK, started))
    else {
        bump(counter::COMPLETE_UNMATCHED);
        if error != 0
            && let Some(stats) = device_stats(dev)
        {
            // SAFETY: per-CPU value, as above.
            unsafe { (*stats).errors += 1 };
        }
        return Ok(());
    };
    let latency_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(started);
    crate::cgroup::request_completed(dev, sector, latency_ns);

    let Some(stats) = device_stats(dev) else {
        bump(counter::DEVICE_TABLE_FULL);
        return Ok(());
    };
    let bucket = latency_bucket(latency_ns);
    // SAFETY: per-CPU value, as above; `get_mut` keeps the bucket index provably in bounds.
    unsafe {
        let stats = &mut *stats;
        stats.completed += 1;
        stats.latency_sum_ns += latency_ns;
        if error != 0 {
            stats.errors += 1;
        }
        if let Some(n) = stats.latency_hist.get_mut(bucket) {
            *n += 1;
        }
    }

    // SAFETY: see `layout()`.
    let threshold = unsafe { core::ptr::read_volatile(&SLOW_IO_THRESHOLD_NS) };
    if latency_ns >= threshold {
        bump(counter::SLOW_IO_PRODUCED);
        match SLOW_IO_EVENTS.reserve::<SlowIoEvent>(0) {
            Some(mut entry) => {
                entry.write(SlowIoEvent {
                    dev,
                    op: class as u32,
                    sector,
                    latency_ns,
                    bytes: nr_sector.saturating_mul(512),
                    error,
                });
                entry.submit(0);
            }
            None => {
                bump(counter::SLOW_IO_LOST);
            }
        }
    }
    Ok(())
}
