//! The learner's field choice and its partial windows (values the collector could not read).

use std::collections::BTreeMap;

use super::*;
use crate::signals::is_judged;

#[test]
fn judged_fields_are_the_saturation_error_and_latency_signals_not_the_volumes() {
    for judged in [
        "psi_cpu_some_pct",
        "mem_reclaim_stall_ms_per_s",
        "tcp_resets_per_s",
        "proc_exits_nonzero_per_s",
        "proc_exits_nonzero_fraction",
    ] {
        assert!(is_judged(judged), "{judged}");
    }
    // A brief command's non-zero exit (a build's probe) is how work is done, not a failure.
    for volume in [
        "syscalls_per_s",
        "sched_context_switches_per_s",
        "window_s",
        "proc_brief_exits_nonzero_per_s",
    ] {
        assert!(!is_judged(volume), "{volume}");
    }
}

fn window(cs: f64, psi: Option<f64>) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::from([("sched_context_switches_per_s".to_string(), cs)]);
    if let Some(psi) = psi {
        values.insert("psi_cpu_some_pct".into(), psi);
    }
    values
}

#[test]
fn partial_windows_are_judged_on_what_they_have_and_never_learned_from() {
    let mut learner = BaselineLearner::new(BaselineOptions {
        learn_windows: 20,
        refresh_every: 1000,
        ..BaselineOptions::default()
    });
    let absent = vec!["psi_cpu_some_pct".to_string()];
    // A partial first window neither fixes the fields nor counts toward learning.
    assert_eq!(
        learner
            .observe_partial(window(1000.0, None), &absent)
            .unwrap(),
        None
    );
    assert_eq!(learner.windows_to_go(), 20);
    for i in 0..20 {
        let wobble = f64::from(i % 5);
        assert_eq!(
            learner
                .observe(window(1000.0 + wobble * 10.0, Some(20.0 + wobble)))
                .unwrap(),
            None
        );
        // Partial windows while learning are skipped, not kept.
        learner.observe_partial(window(0.0, None), &absent).unwrap();
    }
    assert_eq!(learner.windows_to_go(), 0);
    assert_eq!(learner.kept(), 20, "no partial window was kept");
    let judged = learner
        .observe_partial(window(1010.0, None), &absent)
        .unwrap()
        .expect("judged");
    assert_eq!(judged.state, HealthState::Healthy, "{judged:?}");
    assert_eq!(
        learner.kept(),
        20,
        "a healthy partial window is not kept either"
    );
    let burst = learner
        .observe_partial(window(16_700_000.0, None), &absent)
        .unwrap()
        .expect("judged");
    assert_eq!(burst.state, HealthState::Degraded);
    // A field gone without being declared missing is still an error.
    assert!(learner.observe_partial(window(1010.0, None), &[]).is_err());
}

/// A node without PSI (a kernel booted without it) reads no pressure in any window: every
/// window is partial. The learner skipped them all and never left learning; now, after a
/// learning's worth of such windows, it learns from the fields the node has, and a missing
/// field it does not judge never makes a window partial.
#[test]
fn a_field_missing_from_every_window_does_not_hold_the_learner_forever() {
    let mut learner = BaselineLearner::new(BaselineOptions {
        learn_windows: 20,
        refresh_every: 1000,
        ..BaselineOptions::default()
    });
    let absent = vec!["psi_cpu_some_pct".to_string()];
    let mut judged = None;
    for i in 0..60 {
        let wobble = f64::from(i % 5);
        judged = learner
            .observe_partial(window(1000.0 + wobble * 10.0, None), &absent)
            .unwrap();
        if judged.is_some() {
            // 19 skipped; the 20th fixes the fields and starts a learning of 20.
            assert_eq!(i, 39, "judged from the 40th window on");
            break;
        }
    }
    let judged = judged.expect("the learner left learning");
    assert_eq!(judged.state, HealthState::Healthy, "{judged:?}");
    let burst = learner
        .observe_partial(window(16_700_000.0, None), &absent)
        .unwrap()
        .expect("judged");
    assert_eq!(burst.state, HealthState::Degraded);
    // Its missing field is not one of the baseline's: the window is whole, and kept.
    let kept = learner.kept();
    learner
        .observe_partial(window(1010.0, None), &absent)
        .unwrap()
        .expect("judged");
    assert_eq!(learner.kept(), kept + 1);
}
