//! The learned baseline across a restart. A daemon that restarts (a rollout of the DaemonSet,
//! a node's reboot) would otherwise learn its node again from three minutes of windows and be
//! young for its first thousand windows again: the phase in which every soak's episodes
//! but three came (BENCHMARKS.md, soaks 5-14). What is saved is what a refresh trains from: the
//! kept windows (the recent half and the sample of older ones) and the counts that say how
//! much the baseline has seen. The model and the tail are not saved but retrained from those
//! windows when the state is restored, so a state never carries a model this version of the
//! code would not have trained.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The layout of [`BaselineState`]; a state of another layout is refused, not guessed at.
pub const STATE_FORMAT: u32 = 1;

/// What a [`super::BaselineLearner`] saves ([`super::BaselineLearner::state`]) and starts
/// from ([`super::BaselineLearner::restore`]). JSON with serde; a few MB at the default
/// 4,096 windows kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The window length the windows were judged at: a baseline of 5 s windows does not judge
    /// 1 s ones (their rates and pressures spread differently).
    pub window_s: f64,
    /// The baseline's fields, in the order of each kept row.
    pub columns: Vec<String>,
    /// Complete windows seen.
    pub windows_seen: u64,
    pub windows_forgotten: u64,
    pub trainings: usize,
    /// Windows that left the recent half (the sample's count, algorithm R).
    pub left_recent: u64,
    /// The reservoir's random state, so a restored baseline's draws go on from where the saved
    /// one's were (after those its training at the restore takes).
    pub draws: u64,
    /// Each kept window: its position in the stream, its values in `columns`' order.
    pub recent: Vec<(u64, Vec<f64>)>,
    pub sampled: Vec<(u64, Vec<f64>)>,
}

impl BaselineState {
    /// Writes the state (compact JSON) through a temporary file and a rename: a daemon killed
    /// while saving leaves the previous state, never half of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|err| ModelError::BaselineState {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        crate::model::write_atomically(path, &json)
    }

    /// Reads a saved state; a damaged file is an error naming it (the caller learns afresh).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|err| ModelError::BaselineState {
            path: path.to_path_buf(),
            message: if err.is_eof() {
                "the file ends early (truncated?)".into()
            } else {
                format!("not a saved baseline: {err}")
            },
        })
    }

    /// Why this state cannot be restored into a baseline of `window_s` windows (`None`: it
    /// can): checked before anything is trained from it, each reason naming what is wrong.
    pub(super) fn refusal(&self, window_s: f64) -> Option<String> {
        if self.format != STATE_FORMAT {
            return Some(format!(
                "its format is {}, this daemon reads {STATE_FORMAT}",
                self.format
            ));
        }
        if (self.window_s - window_s).abs() > 1e-9 * window_s.max(1.0) {
            return Some(format!(
                "it was learned from {} s windows, this daemon makes {} s windows",
                self.window_s, window_s
            ));
        }
        if self.columns.is_empty() {
            return Some("it has no fields".into());
        }
        if self.trainings == 0 || self.recent.is_empty() && self.sampled.is_empty() {
            return Some("it was saved before its first training".into());
        }
        for (at, row) in self.recent.iter().chain(&self.sampled) {
            if row.len() != self.columns.len() {
                return Some(format!(
                    "the window at position {at} has {} values for {} fields",
                    row.len(),
                    self.columns.len()
                ));
            }
            if let Some(value) = row.iter().find(|v| !v.is_finite()) {
                return Some(format!(
                    "the window at position {at} holds {value}, not a finite number"
                ));
            }
            if *at > self.windows_seen {
                return Some(format!(
                    "the window at position {at} comes after the {} windows it says were seen",
                    self.windows_seen
                ));
            }
        }
        None
    }
}
