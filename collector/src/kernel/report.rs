//! How each signal was hooked: what the attacher returns for every signal, the daemon logs
//! once at start-up and the exporter publishes.

use std::fmt;

/// How one signal was hooked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Attached,
    /// Turned off by configuration (`--signals`, `--disable-signals`).
    Disabled,
    /// The hook does not exist on this kernel; the signal is skipped.
    Missing,
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct AttachReport {
    pub signal: &'static str,
    pub program: &'static str,
    /// e.g. "tracepoint block:block_rq_issue".
    pub hook: String,
    /// "kprobe", "tracepoint", or "none" when nothing could be attached.
    pub kind: &'static str,
    pub outcome: HookOutcome,
    /// Better hooks tried first, and why each was not used.
    pub tried: Vec<String>,
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::Disabled => f.write_str("disabled by configuration"),
            Self::Missing => f.write_str("missing on this kernel, skipped"),
            Self::Failed(err) => write!(f, "failed: {err}"),
        }
    }
}
