//! Per block device: the latency histogram accumulated since the daemon started.

use collector_common::LATENCY_BUCKETS;
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType, registry::Unit};

use crate::export::{DeviceLatency, ExporterState};

/// `nodestate_block_io_latency_seconds`.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    // Block latency histograms, cumulative since start, in the kernel's log2 buckets.
    let mut metric = encoder.encode_descriptor(
        "nodestate_block_io_latency",
        "Block request latency, issue to completion, per device",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (device, DeviceLatency { buckets, sum_s }) in &state.block_latency {
        let mut cumulative = 0u64;
        let bounds: Vec<(f64, u64)> = buckets
            .iter()
            .enumerate()
            .map(|(index, count)| {
                cumulative += count;
                // The last log2 bucket is open-ended: Prometheus calls that +Inf.
                let upper = if index + 1 == LATENCY_BUCKETS {
                    f64::INFINITY
                } else {
                    crate::window::bucket_bounds_us(index).1 / 1e6
                };
                (upper, *count)
            })
            .collect();
        let labels = vec![("device", device.clone())];
        let mut family = metric.encode_family(&labels)?;
        family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            *sum_s, cumulative, &bounds, None,
        )?;
    }
    Ok(())
}
