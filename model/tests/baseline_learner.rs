//! The on-node baseline learner: learns, judges, refreshes, in bounded memory.

use model::{BaselineLearner, BaselineOptions, HealthState, synthetic};
use serde_json::json;

#[test]
fn baseline_learner_learns_then_judges_then_refreshes_in_bounded_memory() {
    let records = synthetic::window_records(5, 400, 200..215);
    let mut learner = BaselineLearner::new(BaselineOptions {
        learn_windows: 60,
        refresh_every: 100,
        max_kept: 150,
        ..BaselineOptions::default()
    });
    let mut states = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let judged = learner.observe(record).unwrap();
        if index < 59 {
            assert!(judged.is_none(), "still learning at window {index}");
            assert_eq!(learner.windows_to_go(), 59 - index);
        }
        states.push(judged.map(|a| a.state));
        assert!(learner.kept() <= 150);
    }
    assert!(learner.last_error().is_none());
    assert_eq!(learner.windows_to_go(), 0);
    // First training at window 60, refreshes at 160, 260, 360.
    assert_eq!(learner.trainings(), 4);
    let flagged_in_fault = (200..215)
        .filter(|&i| states[i] == Some(HealthState::Degraded))
        .count();
    assert!(
        flagged_in_fault >= 13,
        "{flagged_in_fault} of 15 fault windows flagged"
    );
    let false_alarms = (60..400)
        .filter(|i| !(200..215).contains(i))
        .filter(|&i| states[i] == Some(HealthState::Degraded))
        .count();
    assert!(false_alarms <= 10, "{false_alarms} false alarms");
    let err = learner
        .observe(json!({"block_read_ops_per_s": 1.0}))
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn baseline_durations_become_window_counts() {
    let options = BaselineOptions::for_durations(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(300),
        std::time::Duration::from_secs(1800),
        std::time::Duration::from_secs(7200),
    );
    assert_eq!(
        (
            options.learn_windows,
            options.refresh_every,
            options.max_kept
        ),
        (60, 360, 1440)
    );
}

#[test]
fn the_daemons_spans_become_the_windows_that_cover_them() {
    let secs = std::time::Duration::from_secs;
    let options = BaselineOptions::covering(secs(5), secs(180), secs(1800));
    assert_eq!((options.learn_windows, options.refresh_every), (36, 360));
    assert_eq!(options.window_s, 5.0);
    // A span that ends within a window needs that window (181 s: 36.2 windows, 37); a span
    // of fewer than 10 windows is 10, to learn from and between refreshes.
    let options = BaselineOptions::covering(secs(5), secs(181), secs(20));
    assert_eq!((options.learn_windows, options.refresh_every), (37, 10));
    // Only the window counts come from the spans.
    assert_eq!(options.max_kept, BaselineOptions::default().max_kept);
}

#[test]
fn a_learning_period_longer_than_memory_ends_when_memory_is_full() {
    let records = synthetic::window_records(9, 40, 0..0);
    let mut learner = BaselineLearner::new(BaselineOptions {
        learn_windows: 1000,
        max_kept: 30,
        ..BaselineOptions::default()
    });
    let judged = records
        .iter()
        .filter(|record| learner.observe(*record).unwrap().is_some())
        .count();
    assert_eq!(judged, 10, "judging from window 31 on");
    assert!(learner.kept() <= 30);
}
