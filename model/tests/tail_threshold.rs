//! `ThresholdRule::Tail` end to end: a model trained on healthy windows alone sets the
//! threshold for a false-alarm rate, and holds it on windows it never saw.

use model::{
    Model, Table, TrainOptions,
    model::{DEFAULT_FALSE_ALARM_RATE, ThresholdRule},
    synthetic::Noise,
};

mod common;

/// `rows` healthy windows: three correlated-free features with log-normal noise, one of them
/// heavy-tailed (a spread of 40 %), as latencies are.
fn healthy(rows: usize, seed: u64) -> Table {
    let mut noise = Noise::new(seed);
    let values: Vec<[f64; 3]> = (0..rows)
        .map(|_| {
            [
                noise.around(200.0, 0.1),
                noise.around(800.0, 0.4),
                noise.around(3.0, 0.2),
            ]
        })
        .collect();
    common::table(
        &["reads_per_s", "latency_p99_us", "psi_io_some_pct"],
        &values,
    )
}

fn false_alarm_rate(model: &Model, table: &Table) -> f64 {
    let flagged = model
        .score_table(table)
        .unwrap()
        .iter()
        .filter(|a| a.score > a.threshold)
        .count();
    flagged as f64 / table.len() as f64
}

#[test]
fn the_tail_rule_holds_the_false_alarm_rate_asked_for_on_unseen_windows() {
    let train = healthy(20_000, 1);
    let unseen = healthy(200_000, 2);
    for asked in [1e-3, 1e-4] {
        let model = Model::train(
            &train,
            &TrainOptions {
                k: 1,
                threshold_rule: ThresholdRule::Tail { false_alarm: asked },
                ..TrainOptions::default()
            },
        )
        .unwrap();
        let tail = model
            .threshold
            .tail
            .clone()
            .expect("20,000 windows fit a tail");
        assert_eq!(tail.false_alarm, asked);
        let rate = false_alarm_rate(&model, &unseen);
        assert!(
            rate > asked / 3.0 && rate < asked * 3.0,
            "asked {asked}, got {rate} with {:?}",
            model.threshold
        );
    }
    // The percentile rule (the default before the tail's) says nothing of a rate: here it
    // is p99 x 1.2.
    let by_percentile = Model::train(
        &train,
        &TrainOptions {
            k: 1,
            threshold_rule: ThresholdRule::Percentile,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert!(by_percentile.threshold.tail.is_none());
}

#[test]
fn an_episode_ends_when_the_hysteresis_would_leave_degraded() {
    assert_eq!(
        model::model::TAIL_EPISODE_GAP,
        model::hysteresis::DEFAULT_LEAVE_AFTER as usize
    );
}

#[test]
fn too_few_windows_for_a_tail_fall_back_to_the_percentile() {
    let train = healthy(300, 3);
    let options = |threshold_rule| TrainOptions {
        k: 1,
        threshold_rule,
        ..TrainOptions::default()
    };
    let tail = Model::train(
        &train,
        &options(ThresholdRule::Tail {
            false_alarm: DEFAULT_FALSE_ALARM_RATE,
        }),
    )
    .unwrap();
    let percentile = Model::train(&train, &options(ThresholdRule::Percentile)).unwrap();
    assert!(tail.threshold.tail.is_none(), "{:?}", tail.threshold);
    assert_eq!(tail.threshold.value, percentile.threshold.value);
}
