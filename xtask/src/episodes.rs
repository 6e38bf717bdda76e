//! Degraded episodes: a run of windows the node was degraded in (after hysteresis), as the
//! soak counts them from the daemon's verdicts and `soak-replay` from its own. One type and
//! one tracker for both, so the two count episodes the same way and their figures compare.

/// One degraded episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// Seconds after the start (the daemon's start for the soak, the first window for a
    /// replay).
    pub started_s: f64,
    pub windows: usize,
    /// The soak's phase of work when the episode started.
    pub phase: String,
    /// The first degraded window's score and threshold.
    pub score: f64,
    pub threshold: f64,
    /// The first degraded window's top features (feature, z).
    pub explanation: Vec<(String, f64)>,
}

/// Opens an episode at the first degraded window, extends it while the node stays degraded
/// and closes it at the first window that is not.
#[derive(Debug, Default)]
pub struct Episodes {
    closed: Vec<Episode>,
    open: Option<Episode>,
}

impl Episodes {
    /// Takes the next judged window's state. `start` makes the episode that a degraded window
    /// opens (called only then: the caller's details of the first window); the episode opened
    /// is returned, to be reported as it happens.
    pub fn update(&mut self, degraded: bool, start: impl FnOnce() -> Episode) -> Option<&Episode> {
        match (&mut self.open, degraded) {
            (None, true) => return Some(self.open.insert(start())),
            (Some(episode), true) => episode.windows += 1,
            (Some(_), false) => self.closed.extend(self.open.take()),
            (None, false) => {}
        }
        None
    }

    /// Every episode, the one still open at the end included.
    pub fn finish(mut self) -> Vec<Episode> {
        self.closed.extend(self.open.take());
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(started_s: f64) -> Episode {
        Episode {
            started_s,
            windows: 1,
            phase: "idle".into(),
            score: 5.0,
            threshold: 4.0,
            explanation: vec![("psi_cpu_some_pct".into(), 4.5)],
        }
    }

    #[test]
    fn degraded_runs_are_episodes_and_the_last_may_be_open() {
        let mut episodes = Episodes::default();
        let states = [
            false, true, true, true, false, false, true, false, true, true,
        ];
        let mut opened = Vec::new();
        for (i, degraded) in states.into_iter().enumerate() {
            if let Some(e) = episodes.update(degraded, || episode(i as f64)) {
                opened.push(e.started_s);
            }
        }
        assert_eq!(opened, [1.0, 6.0, 8.0]);
        let episodes = episodes.finish();
        let runs: Vec<(f64, usize)> = episodes.iter().map(|e| (e.started_s, e.windows)).collect();
        assert_eq!(runs, [(1.0, 3), (6.0, 1), (8.0, 2)]);
    }

    #[test]
    fn no_degraded_window_is_no_episode() {
        let mut episodes = Episodes::default();
        for _ in 0..5 {
            assert!(
                episodes
                    .update(false, || panic!("no episode opens"))
                    .is_none()
            );
        }
        assert!(episodes.finish().is_empty());
    }
}
