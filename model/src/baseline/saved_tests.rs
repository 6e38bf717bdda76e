//! The learned baseline saved and restored across a restart.

use std::collections::BTreeMap;

// A quiet node's windows: every one has a latency sample, so no training draws a value for a
// missing one, and two learners trained on the same windows train the same model.
use super::widening_tests::{quiet_window, window};
use super::*;
use crate::synthetic::Noise;

fn options() -> BaselineOptions {
    BaselineOptions {
        learn_windows: 20,
        refresh_every: 200,
        max_kept: 400,
        floor_windows: 300,
        ..BaselineOptions::default()
    }
}

/// A learner fed quiet windows until the window at which it trained past `windows`: its kept
/// windows are then exactly those its model was trained from.
fn learner_just_trained(noise: &mut Noise, windows: usize) -> BaselineLearner {
    let mut learner = BaselineLearner::new(options());
    let mut trainings = 0;
    let mut seen = 0;
    loop {
        learner.observe(quiet_window(noise)).unwrap();
        seen += 1;
        if learner.trainings() > trainings {
            trainings = learner.trainings();
            if seen >= windows {
                return learner;
            }
        }
    }
}

#[test]
fn a_restarted_baseline_judges_every_later_window_as_the_one_that_went_on() {
    let mut noise = Noise::new(3);
    let mut went_on = learner_just_trained(&mut noise, 500);
    assert!(went_on.status().floor_scale == DEFAULT_MATURE_FLOOR_SCALE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    went_on.state().unwrap().save(&path).unwrap();
    let saved = BaselineState::load(&path).unwrap();
    assert_eq!(
        saved,
        went_on.state().unwrap(),
        "the file holds the state exactly"
    );
    let mut restarted = BaselineLearner::restore(options(), saved, &path).unwrap();
    let (before, after) = (went_on.status(), restarted.status());
    assert!(after.restored && !before.restored);
    assert_eq!(after.windows_seen, before.windows_seen);
    assert_eq!(after.windows_kept, before.windows_kept);
    assert_eq!(after.threshold, before.threshold, "{before:?}\n{after:?}");
    assert_eq!(
        after.floor_scale, DEFAULT_MATURE_FLOOR_SCALE,
        "mature at once"
    );
    // Quiet hours with a refresh among them, and a CPU saturation: the same verdicts.
    let mut judged = 0;
    for i in 0..450 {
        let mut record = quiet_window(&mut noise);
        if (300..310).contains(&i) {
            record.insert("psi_cpu_some_pct".into(), 60.0);
        }
        let a = went_on.observe(record.clone()).unwrap().unwrap();
        let b = restarted.observe(record).unwrap().unwrap();
        assert_eq!(
            (a.state, a.score, a.threshold),
            (b.state, b.score, b.threshold),
            "window {i}"
        );
        judged += usize::from(a.state == HealthState::Degraded);
    }
    assert!(judged >= 10, "the saturation is judged degraded: {judged}");
    assert!(restarted.trainings() > after.trainings, "a refresh came");
    // A learner that starts afresh is still learning at the first window.
    assert!(
        BaselineLearner::new(options())
            .observe(quiet_window(&mut noise))
            .unwrap()
            .is_none()
    );
}

#[test]
fn nothing_is_saved_before_the_first_training() {
    let mut learner = BaselineLearner::new(options());
    let mut noise = Noise::new(4);
    for _ in 0..19 {
        learner.observe(quiet_window(&mut noise)).unwrap();
        assert!(learner.state().is_none());
    }
    learner.observe(quiet_window(&mut noise)).unwrap();
    assert!(learner.state().is_some(), "trained at the 20th window");
}

#[test]
fn a_state_that_does_not_fit_is_refused_with_the_reason() {
    let mut noise = Noise::new(5);
    let state = learner_just_trained(&mut noise, 100).state().unwrap();
    let path = std::path::Path::new("baseline.json");
    let refused = |state: BaselineState, options: BaselineOptions| {
        BaselineLearner::restore(options, state, path)
            .expect_err("refused")
            .to_string()
    };
    let message = refused(
        state.clone(),
        BaselineOptions {
            window_s: 1.0,
            ..options()
        },
    );
    assert!(
        message.contains("5 s windows") && message.contains("1 s windows"),
        "{message}"
    );
    assert!(
        message.starts_with("baseline.json: the saved baseline is refused"),
        "{message}"
    );
    let mut other = state.clone();
    other.format = STATE_FORMAT + 1;
    assert!(refused(other, options()).contains("format"));
    let mut short = state.clone();
    short.recent[3].1.pop();
    assert!(refused(short, options()).contains("1 values for 2 fields"));
    let mut infinite = state.clone();
    infinite.sampled.push((1, vec![f64::INFINITY, 1.0]));
    assert!(refused(infinite, options()).contains("not a finite number"));
    let mut later = state.clone();
    later.recent[0].0 = state.windows_seen + 1;
    assert!(refused(later, options()).contains("comes after"));
    let mut untrained = state.clone();
    untrained.trainings = 0;
    assert!(refused(untrained, options()).contains("before its first training"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.json");
    state.save(&file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let message = BaselineState::load(&file).unwrap_err().to_string();
    assert!(message.contains("truncated"), "{message}");
    std::fs::write(&file, b"{\"format\": 1}").unwrap();
    let message = BaselineState::load(&file).unwrap_err().to_string();
    assert!(message.contains("not a saved baseline"), "{message}");
}

#[test]
fn a_restored_baseline_whose_windows_have_other_fields_learns_afresh() {
    let mut noise = Noise::new(6);
    let state = learner_just_trained(&mut noise, 100).state().unwrap();
    let path = std::path::Path::new("baseline.json");
    let mut restored = BaselineLearner::restore(options(), state.clone(), path).unwrap();
    // A newer collector's window, with a field the saved baseline never had.
    let mut newer = quiet_window(&mut noise);
    newer.insert("tcp_resets_per_s".into(), 0.0);
    assert!(
        restored.observe(newer.clone()).unwrap().is_none(),
        "learning afresh"
    );
    let reason = restored.restore_dropped().expect("dropped").to_string();
    assert!(
        reason.contains("windows only: tcp_resets_per_s"),
        "{reason}"
    );
    let status = restored.status();
    assert!(!status.restored && status.windows_seen == 1, "{status:?}");
    // The same fields: kept, and judging at once.
    let mut same = BaselineLearner::restore(options(), state, path).unwrap();
    assert!(same.observe(quiet_window(&mut noise)).unwrap().is_some());
    assert!(same.restore_dropped().is_none() && same.status().restored);
}

#[test]
fn a_state_larger_than_this_baseline_keeps_is_cut_to_it() {
    let mut noise = Noise::new(7);
    let state = learner_just_trained(&mut noise, 600).state().unwrap();
    assert_eq!(state.recent.len() + state.sampled.len(), 400);
    let smaller = BaselineOptions {
        max_kept: 100,
        ..options()
    };
    let restored =
        BaselineLearner::restore(smaller, state.clone(), std::path::Path::new("b.json")).unwrap();
    let status = restored.status();
    assert_eq!((status.windows_recent, status.windows_sampled), (50, 50));
    // The newest recent windows are the ones kept.
    let newest = state.recent.last().unwrap().0;
    assert_eq!(restored.recent.back().unwrap().0, newest);
}

/// A run over the tail's level still open at the save may be an incident's onset (forgotten
/// if a window of it is then judged degraded): its windows are not in the state, which a
/// restored learner, starting outside any run, would learn.
#[test]
fn an_open_run_over_the_tails_level_is_not_saved() {
    let mut noise = Noise::new(8);
    let mut learner = learner_just_trained(&mut noise, 500);
    let level = learner.spot.as_ref().expect("a tail").level();
    // The smallest rise of CPU pressure that scores over the level and stays healthy.
    let rising = (1..400)
        .map(|step| window(5.0 + 0.05 * f64::from(step), 400.0))
        .find(|record| {
            let mut probe = learner.clone();
            probe
                .observe(record.clone())
                .unwrap()
                .is_some_and(|a| a.score > level && a.state == HealthState::Healthy)
        })
        .expect("a window between the level and the threshold");
    learner.observe(rising).unwrap();
    let at = learner.seen;
    assert_eq!(learner.run_start, Some(at));
    assert_eq!(learner.recent.back().unwrap().0, at, "kept for now");
    let state = learner.state().unwrap();
    assert!(state.recent.iter().all(|(p, _)| *p < at), "not saved");
    // The run ends under the level: the window is settled, and saved.
    learner.observe(window(5.0, 400.0)).unwrap();
    assert!(learner.run_start.is_none());
    assert!(
        learner
            .state()
            .unwrap()
            .recent
            .iter()
            .any(|(p, _)| *p == at)
    );
}

/// A node that no longer reads a saved field (PSI off after a reboot): every window is
/// partial against the saved fields, so none would confirm the state or be learned; after
/// as many windows as learning takes, the state is dropped for learning afresh, as a new
/// learner fixes its fields without one no window has.
#[test]
fn a_saved_field_no_window_has_any_more_drops_the_state_after_the_learning_windows() {
    let mut noise = Noise::new(9);
    let state = learner_just_trained(&mut noise, 100).state().unwrap();
    let mut restored =
        BaselineLearner::restore(options(), state, std::path::Path::new("b.json")).unwrap();
    let absent = vec!["psi_cpu_some_pct".to_string()];
    let without_psi = || BTreeMap::from([("block_latency_p99_us".to_string(), 400.0)]);
    for _ in 0..19 {
        let judged = restored.observe_partial(without_psi(), &absent).unwrap();
        assert!(judged.is_some(), "judged on what it has meanwhile");
        assert!(restored.restore_dropped().is_none());
    }
    assert!(
        restored
            .observe_partial(without_psi(), &absent)
            .unwrap()
            .is_none()
    );
    let reason = restored.restore_dropped().expect("dropped").to_string();
    assert!(
        reason.contains("psi_cpu_some_pct") && reason.contains("since the restart"),
        "{reason}"
    );
    assert!(!restored.status().restored);
}
