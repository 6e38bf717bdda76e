//! The two states a window or a node can be in: the model's word for a window and the
//! hysteresis' for the node. A module of its own: the model's training reads the
//! hysteresis' run length, so the hysteresis taking the state from the model would make the
//! two read each other.

use serde::{Deserialize, Serialize};

/// A window's state, or the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Healthy,
    Degraded,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
        }
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
