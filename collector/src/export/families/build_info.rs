//! Which build is running: `nodestate_build_info{version,revision,rustc} 1`, the usual
//! Prometheus idiom, so a fleet's versions are one `count by (version)` away.

use prometheus_client::encoding::DescriptorEncoder;

use super::gauges;
use crate::build_info::{REVISION, RUSTC_VERSION, VERSION};

/// `nodestate_build_info`: always 1, the build in its labels.
pub(in crate::export) fn encode(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    gauges(
        encoder,
        "nodestate_build_info",
        "The running build: version, git revision and compiler (always 1)",
        None,
        &[(
            vec![
                ("version", VERSION.to_string()),
                ("revision", REVISION.to_string()),
                ("rustc", RUSTC_VERSION.to_string()),
            ],
            1.0,
        )],
    )
}
