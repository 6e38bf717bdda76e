//! Debouncing per-window judgements into the node's state.

use serde::Serialize;

use crate::state::HealthState;

/// Default windows in a row that must be anomalous before the node is degraded.
///
/// Chosen from `model eval`'s hysteresis sweep on the synthetic server-metric set (see the
/// README): with 1, the one stray healthy window the model flags is a false incident; with 2
/// there is none, for one window (5 s) of extra delay; 3 and more only add delay.
pub const DEFAULT_ENTER_AFTER: u32 = 2;
/// Default normal windows in a row before the node is healthy again. On the sweep, a larger
/// M only lengthens the degraded tail after a fault (point-wise F1 drops a little); its use is
/// against faults whose windows flicker (a disk that stalls every other window), which must
/// stay one incident instead of many. Three windows (15 s) is a judgement call for that.
pub const DEFAULT_LEAVE_AFTER: u32 = 3;

/// A change of the node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
}

/// What one [`Hysteresis::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The node's state after this window.
    pub state: HealthState,
    /// `Some` when this window changed it.
    pub transition: Option<Transition>,
    /// Windows in a row, up to this one, that disagree with the state before it (0 when this
    /// window agrees): progress towards a transition.
    pub streak: u32,
}

/// Enter "degraded" after `enter_after` consecutive anomalous windows; leave it after
/// `leave_after` consecutive normal ones. Starts healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    enter_after: u32,
    leave_after: u32,
    state: HealthState,
    streak: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self::new(DEFAULT_ENTER_AFTER, DEFAULT_LEAVE_AFTER)
    }
}

impl Hysteresis {
    /// Counts below 1 are taken as 1 (react to every window).
    pub fn new(enter_after: u32, leave_after: u32) -> Self {
        Self {
            enter_after: enter_after.max(1),
            leave_after: leave_after.max(1),
            state: HealthState::Healthy,
            streak: 0,
        }
    }

    pub fn enter_after(&self) -> u32 {
        self.enter_after
    }

    pub fn leave_after(&self) -> u32 {
        self.leave_after
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Feeds one window's judgement; returns the (possibly new) state.
    pub fn update(&mut self, anomalous: bool) -> HealthState {
        self.step(anomalous).state
    }

    /// Feeds one window's judgement; says whether the state changed.
    pub fn step(&mut self, anomalous: bool) -> Step {
        let disagrees = match self.state {
            HealthState::Healthy => anomalous,
            HealthState::Degraded => !anomalous,
        };
        self.streak = if disagrees { self.streak + 1 } else { 0 };
        let needed = match self.state {
            HealthState::Healthy => self.enter_after,
            HealthState::Degraded => self.leave_after,
        };
        let streak = self.streak;
        let transition = (self.streak >= needed).then(|| {
            let from = self.state;
            self.state = match from {
                HealthState::Healthy => HealthState::Degraded,
                HealthState::Degraded => HealthState::Healthy,
            };
            self.streak = 0;
            Transition {
                from,
                to: self.state,
            }
        });
        Step {
            state: self.state,
            transition,
            streak,
        }
    }

    /// Back to healthy with no streak (after the model changed, say).
    pub fn reset(&mut self) {
        self.state = HealthState::Healthy;
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::{Degraded, Healthy};

    #[test]
    fn enters_after_n_and_leaves_after_m() {
        let mut h = Hysteresis::new(2, 3);
        let states: Vec<HealthState> = [
            true, false, // a single blip is ignored
            true, true, // two in a row: degraded
            false, false, true, // recovery streak broken
            false, false, false, // three normal: healthy
        ]
        .iter()
        .map(|&a| h.update(a))
        .collect();
        assert_eq!(
            states,
            vec![
                Healthy, Healthy, Healthy, Degraded, Degraded, Degraded, Degraded, Degraded,
                Degraded, Healthy
            ]
        );
    }

    #[test]
    fn steps_report_transitions_once() {
        let mut h = Hysteresis::new(1, 2);
        let step = h.step(true);
        assert_eq!(
            step.transition,
            Some(Transition {
                from: Healthy,
                to: Degraded
            })
        );
        assert_eq!(h.step(true).transition, None);
        let step = h.step(false);
        assert_eq!((step.transition, step.streak), (None, 1));
        assert_eq!(
            h.step(false).transition,
            Some(Transition {
                from: Degraded,
                to: Healthy
            })
        );
        h.reset();
        assert_eq!(h.state(), Healthy);
        assert_eq!(Hysteresis::new(0, 0).enter_after(), 1);
    }
}
