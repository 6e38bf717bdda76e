//! Small pieces every program uses.

use aya_ebpf::maps::PerCpuArray;
use collector_common::{Histogram, LATENCY_BUCKETS};

/// Adds `value` to slot `index` of a per-CPU counter array and returns the new per-CPU value.
#[inline(always)]
pub fn add(counters: &PerCpuArray<u64>, index: u32, value: u64) -> u64 {
    match counters.get_ptr_mut(index) {
        Some(slot) => {
            // SAFETY: per-CPU slot, and tracing programs do not nest on one CPU.
            unsafe {
                *slot += value;
                *slot
            }
        }
        None => 0,
    }
}

/// log2 of `value`, 0 for 0 and 1; unrolled because the verifier bounds loops and this is
/// cheaper than a bounded loop anyway.
#[inline(always)]
pub fn log2(mut value: u64) -> usize {
    let mut result = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if value >= 1u64 << shift {
            value >>= shift;
            result += shift as usize;
        }
    }
    result
}

/// The histogram bucket of a latency in nanoseconds (log2 of microseconds, capped).
#[inline(always)]
pub fn latency_bucket(latency_ns: u64) -> usize {
    let bucket = log2(latency_ns / 1000);
    if bucket < LATENCY_BUCKETS {
        bucket
    } else {
        LATENCY_BUCKETS - 1
    }
}

/// Counts one latency in slot `index` of a per-CPU histogram array.
#[inline(always)]
pub fn record_latency(histograms: &PerCpuArray<Histogram>, index: u32, latency_ns: u64) {
    if let Some(histogram) = histograms.get_ptr_mut(index) {
        let bucket = latency_bucket(latency_ns);
        // SAFETY: per-CPU value; `get_mut` keeps the index provably in bounds for the verifier.
        unsafe {
            if let Some(count) = (*histogram).buckets.get_mut(bucket) {
                *count += 1;
            }
        }
    }
}
