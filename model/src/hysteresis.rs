//! Debouncing per-window judgements into the node's state.

use crate::model::HealthState;

/// Enter "degraded" after `enter_after` consecutive anomalous windows; leave it after
/// `leave_after` consecutive normal ones. Defaults (2 and 3): one odd window is not an
/// incident, two in a row are (a fault is then reported within two windows of its start);
/// recovery needs a little more evidence than onset so a flapping fault stays one incident.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    pub enter_after: u32,
    pub leave_after: u32,
    state: HealthState,
    streak: u32,
}

pub const DEFAULT_ENTER_AFTER: u32 = 2;
pub const DEFAULT_LEAVE_AFTER: u32 = 3;

impl Default for Hysteresis {
    fn default() -> Self {
        Self::new(DEFAULT_ENTER_AFTER, DEFAULT_LEAVE_AFTER)
    }
}

impl Hysteresis {
    pub fn new(enter_after: u32, leave_after: u32) -> Self {
        Self {
            enter_after: enter_after.max(1),
            leave_after: leave_after.max(1),
            state: HealthState::Healthy,
            streak: 0,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Feeds one window's judgement; returns the (possibly new) state.
    pub fn update(&mut self, anomalous: bool) -> HealthState {
        let against_state = match self.state {
            HealthState::Healthy => anomalous,
            HealthState::Degraded => !anomalous,
        };
        if against_state {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        let needed = match self.state {
            HealthState::Healthy => self.enter_after,
            HealthState::Degraded => self.leave_after,
        };
        if self.streak >= needed {
            self.state = match self.state {
                HealthState::Healthy => HealthState::Degraded,
                HealthState::Degraded => HealthState::Healthy,
            };
            self.streak = 0;
        }
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enters_after_n_and_leaves_after_m() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.update(true), HealthState::Healthy);
        assert_eq!(
            h.update(false),
            HealthState::Healthy,
            "a single blip is ignored"
        );
        assert_eq!(h.update(true), HealthState::Healthy);
        assert_eq!(h.update(true), HealthState::Degraded);
        assert_eq!(h.update(false), HealthState::Degraded);
        assert_eq!(h.update(false), HealthState::Degraded);
        assert_eq!(
            h.update(true),
            HealthState::Degraded,
            "recovery streak broken"
        );
        assert_eq!(h.update(false), HealthState::Degraded);
        assert_eq!(h.update(false), HealthState::Degraded);
        assert_eq!(h.update(false), HealthState::Healthy);
    }
}
