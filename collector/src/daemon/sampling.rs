//! The hook budget's turns within a window: the costly hooks go on at a window's start and off
//! once their events have spent the window's share.

use std::time::Instant;

use tracing::{debug, warn};

use super::CollectOptions;
use crate::kernel::KernelCollector;

/// A window starts: the sampled hooks go (back) on, and the sampler's probe is due.
pub(super) fn start_sampled_window(
    kernel: &mut KernelCollector,
    options: &CollectOptions,
) -> Option<crate::kernel::sampler::SamplerStep> {
    if let Err(err) = kernel.resume_sampled_hooks() {
        warn!("{err:#}");
    }
    if !kernel.has_sampled_hooks() {
        return None;
    }
    let counts = kernel.sampled_event_counts().ok()?;
    crate::kernel::sampler::window_started(
        options.kernel.hook_budget,
        options.window,
        Instant::now(),
        counts,
    )
}

/// The sampler's step is due: look at the events of the hooks still on and decide when the
/// costly ones go off; at that time, take them off.
pub(super) fn sampler_turn(
    kernel: &mut KernelCollector,
    options: &CollectOptions,
    step: Option<crate::kernel::sampler::SamplerStep>,
) -> Option<crate::kernel::sampler::SamplerStep> {
    use crate::kernel::sampler::SamplerStep;
    let hooked = kernel.sampled_groups();
    let (groups, so_far) = match step? {
        SamplerStep::Look { window: so_far, .. } => {
            let counts = kernel.sampled_event_counts().ok()?;
            let now = Instant::now();
            let next = crate::kernel::sampler::look(
                options.kernel.hook_budget,
                options.window,
                so_far,
                now,
                &counts,
                hooked,
            );
            match next {
                Some(SamplerStep::Off { at, groups, window }) => {
                    debug!(
                        on_s = at.duration_since(window.start()).as_secs_f64(),
                        ?groups,
                        "sampled hooks on for part of this window only"
                    );
                    if at > now {
                        return next;
                    }
                    (groups, window)
                }
                _ => return next,
            }
        }
        SamplerStep::Off { groups, window, .. } => (groups, window),
    };
    kernel.pause_hook_groups(groups);
    crate::kernel::sampler::went_off(options.window, so_far, groups, Instant::now(), hooked)
}
