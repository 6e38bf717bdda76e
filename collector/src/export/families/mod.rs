//! The metric families, one file per group, each encoding its part of the
//! [`super::ExporterState`] on a scrape. `export::NodestateMetrics` calls them in the order `/metrics` lists them.

pub(super) mod attribution;
pub(super) mod build_info;
pub(super) mod collection;
pub(super) mod culprits;
pub(super) mod devices;
pub(super) mod features;
pub(super) mod health;
pub(super) mod process;
pub(super) mod programs;
pub(super) mod xdp;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

/// One metric family: (labels, value) pairs under one descriptor, as gauges or counters.
pub(super) fn family(
    encoder: &mut DescriptorEncoder,
    metric_type: MetricType,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in series {
        let encoder = metric.encode_family(labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(*value).encode(encoder)?,
            _ => ConstGauge::new(*value).encode(encoder)?,
        }
    }
    Ok(())
}

pub(super) fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    family(encoder, MetricType::Gauge, name, help, unit, series)
}

pub(super) fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    family(encoder, MetricType::Counter, name, help, unit, series)
}
