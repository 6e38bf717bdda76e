//! Whether the window loop is alive, for `/healthz`: the loop beats once per closed window and
//! the HTTP task reads the beat from an atomic, never from a lock the stuck loop might hold.
//! A daemon that serves scrapes but closes no window is stuck (a kernel map or `/proc` read
//! that does not return); failing `/healthz` lets the DaemonSet's liveness probe restart it.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Windows without a beat after which the loop counts as stalled. One late window is a slow
/// close (a drop-list re-read, a baseline refit); three in a row are not.
pub const STALL_WINDOWS: u32 = 3;

#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    window: Duration,
    /// Milliseconds after `started` of the last beat (the start itself until the first).
    last_ms: AtomicU64,
}

impl Heartbeat {
    /// For a loop about to start closing windows of `window`.
    pub fn new(window: Duration) -> Self {
        Heartbeat {
            started: Instant::now(),
            window,
            last_ms: AtomicU64::new(0),
        }
    }

    /// A window was closed.
    pub fn beat(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// How long since the last beat, when that is longer than [`STALL_WINDOWS`] windows.
    pub fn stalled(&self) -> Option<Duration> {
        self.stalled_at(self.started.elapsed())
    }

    fn stalled_at(&self, now: Duration) -> Option<Duration> {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let silent = now.saturating_sub(last);
        (silent > self.window * STALL_WINDOWS).then_some(silent)
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_after_three_windows_without_a_beat() {
        let heart = Heartbeat::new(Duration::from_secs(5));
        assert_eq!(heart.stalled_at(Duration::from_secs(15)), None);
        assert_eq!(
            heart.stalled_at(Duration::from_millis(15_001)),
            Some(Duration::from_millis(15_001))
        );
        heart.last_ms.store(20_000, Ordering::Relaxed);
        assert_eq!(heart.stalled_at(Duration::from_secs(30)), None);
        assert_eq!(
            heart.stalled_at(Duration::from_secs(36)),
            Some(Duration::from_secs(16))
        );
    }
}
