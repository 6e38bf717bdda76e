//! Block I/O: per-device request counts, bytes, in-flight depth and issue → complete latency
//! from the stable `block:block_rq_issue` / `block:block_rq_complete` tracepoints.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use collector_common::{
    BlockDevStats, BlockTracepointLayout, InflightKey, SlowIoEvent, counter, op,
};

use crate::util::{add, latency_bucket};

/// Tracepoint field offsets; the daemon writes the running kernel's values before load.
#[unsafe(no_mangle)]
static BLOCK_LAYOUT: BlockTracepointLayout = BlockTracepointLayout::LINUX_6;

/// Completions at or over this latency go to user space as [`SlowIoEvent`]s. Set before load.
#[unsafe(no_mangle)]
static SLOW_IO_THRESHOLD_NS: u64 = 10_000_000;

#[map]
static BLOCK_DEV_STATS: PerCpuHashMap<u32, BlockDevStats> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// Issue timestamps of requests in flight. LRU so that a completion we never see (a requeued
/// request) cannot leak an entry for ever and fill the table.
#[map]
static INFLIGHT: LruHashMap<InflightKey, u64> = LruHashMap::with_max_entries(16384, 0);

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
    let _ = try_block_rq_issue(&ctx);
    0
}

fn try_block_rq_issue(ctx: &TracePointContext) -> Result<(), i32> {
    let layout = layout();
    // SAFETY: offsets come from the running kernel's format file for this tracepoint.
    let (dev, sector, bytes, rwbs) = unsafe {
        (
            ctx.read_at::<u32>(layout.issue_dev as usize)?,
            ctx.read_at::<u64>(layout.issue_sector as usize)?,
            ctx.read_at::<u32>(layout.issue_bytes as usize)?,
            ctx.read_at::<[u8; 2]>(layout.issue_rwbs as usize)?,
        )
    };
    let (class, flush) = classify(rwbs);

    let key = inflight_key(dev, sector, class);
    // SAFETY: only tests for presence.
    let replaces = unsafe { INFLIGHT.get(key).is_some() };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let tracked = INFLIGHT.insert(key, now, 0).is_ok();
    if !tracked && bump(counter::INFLIGHT_TABLE_FULL) == 1 {
        warn!(ctx, "in-flight table full: request latency not tracked");
    }

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
    let _ = try_block_rq_complete(&ctx);
    0
}

fn try_block_rq_complete(ctx: &TracePointContext) -> Result<(), i32> {
    let layout = layout();
    // SAFETY: offsets come from the running kernel's format file for this tracepoint.
    let (dev, sector, nr_sector, error, rwbs) = unsafe {
        (
            ctx.read_at::<u32>(layout.complete_dev as usize)?,
            ctx.read_at::<u64>(layout.complete_sector as usize)?,
            ctx.read_at::<u32>(layout.complete_nr_sector as usize)?,
            ctx.read_at::<i32>(layout.complete_error as usize)?,
            ctx.read_at::<[u8; 2]>(layout.complete_rwbs as usize)?,
        )
    };
    let class = classify(rwbs).0;
    // The flush machinery completes a request that carried a flush a second time, with no
    // sectors left, after its post-flush: the data completion already counted it.
    if nr_sector == 0 && class != op::FLUSH {
        return Ok(());
    }
    let key = inflight_key(dev, sector, class);
    // SAFETY: the value is a plain u64 read once, before the remove below.
    let started = unsafe { INFLIGHT.get(key).copied() };
    let Some(started) = started else {
        bump(counter::COMPLETE_UNMATCHED);
        if error != 0
            && let Some(stats) = device_stats(dev)
        {
            // SAFETY: per-CPU value, as above.
            unsafe { (*stats).errors += 1 };
        }
        return Ok(());
    };
    let _ = INFLIGHT.remove(key);
    let latency_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(started);

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
