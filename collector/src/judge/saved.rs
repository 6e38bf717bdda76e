//! The learned baseline kept across restarts (`--baseline-state`): read at start, written
//! after each training and at a clean exit. A restarted daemon (a rollout, a reboot) then
//! judges at once with what its node taught it, instead of learning three minutes again and
//! being young, with the young baseline's false alarms, for its first thousand windows.
//!
//! Writing happens on a thread of its own: a state is a few MB, and a disk slow enough to page
//! about is no reason to hold a window. If the thread is still writing the last state when the
//! next one is ready, the older pending one is replaced (counted as skipped): only the newest
//! state is worth having.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use model::{BaselineLearner, BaselineOptions, ModelError, baseline::BaselineState};
use tracing::{info, warn};

/// What `/state` says about the saved baseline.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SavedBaselineInfo {
    pub path: String,
    /// The baseline was restored from the file at start (and its fields still hold).
    pub restored: bool,
    /// Why the file was not used, or was dropped at the first windows (damaged, another window
    /// length, other fields), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// States written to the file.
    pub saves: u64,
    /// Writes that failed (the log says why; the previous file stays).
    pub save_errors: u64,
    /// States replaced by a newer one before the writer got to them.
    pub saves_skipped: u64,
}

#[derive(Default)]
struct Counts {
    saves: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
}

/// The newest state waiting for the writer, and whether the daemon is done.
#[derive(Default)]
struct Pending {
    state: Option<BaselineState>,
    closing: bool,
}

/// Owns the file: restores from it, hands states to the writer thread.
pub struct BaselineSaver {
    path: PathBuf,
    pending: Arc<(Mutex<Pending>, std::sync::Condvar)>,
    counts: Arc<Counts>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The learner's trainings when its state was last handed on.
    handed_at_training: usize,
    restored: bool,
    refused: Option<String>,
}

impl BaselineSaver {
    /// The learner to start with (restored from `path` when the file is there and fits, else a
    /// new one) and the saver that keeps the file up to date. A missing file is the first
    /// start; a file that does not fit is logged, shown in `/state` and left to be replaced
    /// by the next training's state: the daemon learns afresh rather than refuse to start.
    pub fn start(path: &Path, options: &BaselineOptions) -> (BaselineLearner, Self) {
        let mut refused = None;
        let learner = match BaselineState::load(path)
            .and_then(|state| BaselineLearner::restore(options.clone(), state, path))
        {
            Ok(learner) => {
                let status = learner.status();
                info!(
                    file = %path.display(),
                    windows_seen = status.windows_seen,
                    windows_kept = status.windows_kept,
                    hours_covered = status.hours_covered,
                    threshold = status.threshold,
                    "baseline restored: judging at once"
                );
                Some(learner)
            }
            Err(ModelError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                info!(file = %path.display(), "no saved baseline yet: learning afresh (it is saved after each training)");
                None
            }
            Err(err) => {
                warn!("{err}: learning afresh (the file is replaced after the first training)");
                refused = Some(err.to_string());
                None
            }
        };
        let restored = learner.is_some();
        let learner = learner.unwrap_or_else(|| BaselineLearner::new(options.clone()));
        let pending: Arc<(Mutex<Pending>, std::sync::Condvar)> = Arc::default();
        let counts: Arc<Counts> = Arc::default();
        let writer = {
            let (pending, counts, path) = (pending.clone(), counts.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name("baseline-saver".into())
                .spawn(move || write_states(&path, &pending, &counts))
                .map_err(|err| warn!("no thread to save the baseline: {err}"))
                .ok()
        };
        let saver = Self {
            path: path.to_path_buf(),
            pending,
            counts,
            writer,
            handed_at_training: learner.trainings(),
            restored,
            refused,
        };
        (learner, saver)
    }

    /// After each window: hands on the learner's state when it trained since the last one.
    pub fn after_window(&mut self, learner: &BaselineLearner) {
        if learner.trainings() != self.handed_at_training {
            self.handed_at_training = learner.trainings();
            if let Some(state) = learner.state() {
                self.hand_on(state);
            }
        }
        if let Some(reason) = learner.restore_dropped()
            && self.restored
        {
            self.restored = false;
            self.refused = Some(reason.to_string());
        }
    }

    fn hand_on(&self, state: BaselineState) {
        let (lock, wake) = &*self.pending;
        let mut pending = lock.lock().expect("baseline saver lock");
        if pending.state.replace(state).is_some() {
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
        }
        wake.notify_one();
    }

    /// At a clean exit: the learner's last state, written before the daemon goes (the windows
    /// since the last training would be lost otherwise).
    pub fn finish(mut self, learner: &BaselineLearner) {
        let state = learner.state();
        let saving = state.is_some();
        if let Some(state) = state {
            self.hand_on(state);
        }
        {
            let (lock, wake) = &*self.pending;
            lock.lock().expect("baseline saver lock").closing = true;
            wake.notify_one();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if saving {
            let info = self.info();
            info!(file = %self.path.display(), saves = info.saves, failed = info.save_errors, "baseline handed to its file at exit");
        } else {
            info!(file = %self.path.display(), "nothing saved at exit: the baseline was still learning");
        }
    }

    pub fn info(&self) -> SavedBaselineInfo {
        SavedBaselineInfo {
            path: self.path.display().to_string(),
            restored: self.restored,
            refused: self.refused.clone(),
            saves: self.counts.saves.load(Ordering::Relaxed),
            save_errors: self.counts.errors.load(Ordering::Relaxed),
            saves_skipped: self.counts.skipped.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread: the newest pending state, written, until the daemon closes and
/// nothing is pending.
fn write_states(path: &Path, pending: &(Mutex<Pending>, std::sync::Condvar), counts: &Counts) {
    let (lock, wake) = pending;
    loop {
        let state = {
            let mut pending = lock.lock().expect("baseline saver lock");
            while pending.state.is_none() && !pending.closing {
                pending = wake.wait(pending).expect("baseline saver lock");
            }
            match pending.state.take() {
                Some(state) => state,
                None => return,
            }
        };
        match state.save(path) {
            Ok(()) => {
                counts.saves.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                // Logged each time: a failing save is rare (once per training) and each
                // one matters to whoever finds the baseline learning again after a restart.
                counts.errors.fetch_add(1, Ordering::Relaxed);
                warn!("saving the baseline: {err} (the previous file, if any, stays)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{Assessor, AssessorOptions, NodeState};
    use crate::window::record::WindowRecord;

    fn options(file: &Path) -> AssessorOptions {
        AssessorOptions {
            model_file: None,
            baseline: BaselineOptions {
                learn_windows: 10,
                ..BaselineOptions::default()
            },
            baseline_fields: Vec::new(),
            baseline_state: Some(file.to_path_buf()),
            enter_after: 1,
            leave_after: 1,
        }
    }

    /// An idle window whose CPU pressure wobbles with `n`.
    fn window(n: u32) -> WindowRecord {
        let mut record = WindowRecord::empty();
        record.psi_cpu_some_pct = Some(2.0 + f64::from(n % 3) * 0.1);
        record.psi_io_some_pct = Some(0.0);
        record
    }

    fn saved(assessor: &Assessor) -> SavedBaselineInfo {
        assessor
            .model_info()
            .and_then(|info| info.saved_baseline)
            .unwrap_or_default()
    }

    /// The writer is a thread: wait (boundedly) for it to have written `saves` states.
    fn wait_for_saves(assessor: &Assessor, saves: u64) {
        for _ in 0..500 {
            if saved(assessor).saves >= saves {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the writer wrote {:?}, not {saves}", saved(assessor));
    }

    #[test]
    fn a_restarted_daemon_judges_its_first_window_with_what_it_had_learned() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baseline.json");
        let mut first = Assessor::new(&options(&file)).unwrap();
        for n in 0..9 {
            assert_eq!(first.judge(&window(n)).state, NodeState::Learning);
        }
        assert!(!file.exists(), "nothing to save before the first training");
        first.judge(&window(9));
        wait_for_saves(&first, 1);
        assert!(file.exists());
        for n in 10..25 {
            first.judge(&window(n));
        }
        let seen = first.model_info().unwrap().baseline.unwrap().windows_seen;
        // SIGTERM: the state as it is now, with the windows since the training.
        first.finish();
        let state = BaselineState::load(&file).unwrap();
        assert_eq!(state.windows_seen, seen);

        let mut second = Assessor::new(&options(&file)).unwrap();
        let verdict = second.judge(&window(25));
        assert_eq!(
            verdict.state,
            NodeState::Healthy,
            "judged at once: {verdict:?}"
        );
        let info = second.model_info().unwrap();
        assert_eq!(info.baseline.as_ref().unwrap().windows_seen, seen + 1);
        assert!(info.baseline.unwrap().restored);
        assert!(info.saved_baseline.as_ref().unwrap().restored);
        let mut stall = window(26);
        stall.psi_io_some_pct = Some(80.0);
        assert_eq!(second.judge(&stall).state, NodeState::Degraded);
    }

    #[test]
    fn a_baseline_saved_with_other_fields_is_dropped_at_the_first_window_and_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baseline.json");
        let mut first = Assessor::new(&options(&file)).unwrap();
        for n in 0..12 {
            first.judge(&window(n));
        }
        first.finish();
        // Restarted with other --baseline-fields: the windows' fields are not the saved ones.
        let mut second = Assessor::new(&AssessorOptions {
            baseline_fields: vec!["psi_*".into()],
            ..options(&file)
        })
        .unwrap();
        assert_eq!(second.judge(&window(12)).state, NodeState::Learning);
        for n in 13..25 {
            second.judge(&window(n));
        }
        let info = saved(&second);
        assert!(!info.restored, "{info:?}");
        let refused = info.refused.expect("said why");
        assert!(refused.contains("saved only"), "{refused}");
    }

    #[test]
    fn a_damaged_file_is_refused_said_why_and_replaced_after_the_first_training() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baseline.json");
        std::fs::write(&file, b"{\"format\": 1, \"window_s\": 5").unwrap();
        let mut assessor = Assessor::new(&options(&file)).unwrap();
        assert_eq!(assessor.judge(&window(0)).state, NodeState::Learning);
        for n in 1..10 {
            assessor.judge(&window(n));
        }
        wait_for_saves(&assessor, 1);
        let info = saved(&assessor);
        assert!(!info.restored);
        let refused = info.refused.expect("refused");
        assert!(refused.contains("truncated"), "{refused}");
        assert!(
            BaselineState::load(&file).is_ok(),
            "replaced by a good state"
        );
    }

    #[test]
    fn a_file_that_cannot_be_written_is_counted_and_judging_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("no-such-directory").join("baseline.json");
        let mut assessor = Assessor::new(&options(&file)).unwrap();
        for n in 0..10 {
            assessor.judge(&window(n));
        }
        for _ in 0..500 {
            if saved(&assessor).save_errors >= 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let info = saved(&assessor);
        assert_eq!((info.saves, info.save_errors), (0, 1), "{info:?}");
        assert_eq!(assessor.judge(&window(10)).state, NodeState::Healthy);
    }
}
