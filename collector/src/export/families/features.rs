//! The last window's numbers, one series per field (`nodestate_feature`).

use prometheus_client::encoding::DescriptorEncoder;

use super::gauges;
use crate::export::ExporterState;

/// `nodestate_feature`.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    if let Some(latest) = state.recent.back() {
        // Every number of the window, features and how it was measured (fleet training
        // reads `window_s` here), not what identifies the row; a missing value has no
        // series this window.
        let features: Vec<_> = latest
            .fields()
            .filter(|(name, _)| !model::input::ROW_FIELDS.contains(name))
            .filter_map(|(name, value)| Some((vec![("feature", name.to_string())], value?)))
            .collect();
        gauges(
            encoder,
            "nodestate_feature",
            "The last window's features (see docs/window-record.md for names and units)",
            None,
            &features,
        )?;
    }
    Ok(())
}
