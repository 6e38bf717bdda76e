//! The last window's numbers, one series per field (`nodestate_feature`).

use prometheus_client::encoding::DescriptorEncoder;

use super::gauges;
use crate::export::{ExporterState, MetricSet};

/// Served in every set beside the judged fields: fleet training reads the daemons' window
/// length from it to choose its step.
const ALWAYS: &[&str] = &["window_s"];

/// Whether `name` is served in `set`. The default set keeps the fields the learned baseline
/// and the built-in model judge ([`model::signals::JUDGED_FIELDS`], about 25 on a node):
/// fleet training (`model train --prometheus`) trains a model on exactly those, which is what
/// the built-in model is made of, from a fleet that scrapes only the default set. The volumes
/// (syscalls, context switches, packets, bytes: about 40 more) are in `--metrics full`.
pub(in crate::export) fn served(set: MetricSet, name: &str) -> bool {
    match set {
        MetricSet::Full => true,
        MetricSet::Default => ALWAYS.contains(&name) || model::signals::is_judged(name),
    }
}

/// `nodestate_feature`.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    if let Some(latest) = state.recent.back() {
        // Every number of the window the set serves, features and how it was measured, not
        // what identifies the row; a missing value has no series this window.
        let features: Vec<_> = latest
            .fields()
            .filter(|(name, _)| !model::input::ROW_FIELDS.contains(name))
            .filter(|(name, _)| served(state.metric_set, name))
            .filter_map(|(name, value)| Some((vec![("feature", name.to_string())], value?)))
            .collect();
        gauges(
            encoder,
            "nodestate_feature",
            "The last window's features (see docs/window-record.md for names and units; the default set serves the judged ones, --metrics full every one)",
            None,
            &features,
        )?;
    }
    Ok(())
}
