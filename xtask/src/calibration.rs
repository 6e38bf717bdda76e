//! `cargo xtask calibration`: where each model's own threshold lands, before and after issue
//! 24's calibration (tail rule, trimming, robust scaling, spreads per mode), on the named
//! synthetic sets and on the recorded scenarios, beside the best F1 a threshold tuned on the
//! test labels would reach. Writes its section of EVALUATION.md (between markers, so `cargo
//! xtask evaluate` keeps it and calls it too).
//!
//! The upper bound uses the test labels and is only that: no default is set from it. Every
//! default of the "after" column (the tail rule's false-alarm rate, the trimmed share and its
//! cutoff, the level quantile, the floors) comes from `model`'s constants, whose comments say
//! which training, synthetic or scenario data they come from.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, bail};
use model::{
    BaselineOptions, Model, Table, TrainOptions,
    eval::Scores,
    model::{HealthState, Scaling, ThresholdRule},
    synthetic::{SyntheticSet, synthetic_set},
};

mod streaming;

use streaming::Streamed;

use crate::{
    evaluate::{self, BUILTIN_FEATURES, Recorded},
    scenario::{Kind, SCENARIOS},
    util::workspace_root,
};

const BEGIN: &str = "<!-- calibration -->";
const END: &str = "<!-- /calibration -->";
/// The seed of every synthetic set (the default set's too).
const SEED: u64 = 7;
/// Own-threshold F1 within this of the upper bound is the goal.
const GOAL: f64 = 0.15;

/// What the two sets that miss the goal show. Measured on the development seeds (11-13), on
/// training parts only (no test label, and not this report's seed): how the figures above
/// came to be, not a choice made from them.
const WHY: &str = "Where the goal is missed, measured on other seeds (11-13) and on training \
parts only, never on these test labels:\n\n\
- `heavy-tails`: the tail rule now holds the rate asked for, and that rate is the conflict. \
Two things used to break it: the windows with an error or two (2-3%, scattered) made a \
cluster under the 5% share, taken for incidents, which flagged 2.4-2.9% of held-out healthy \
windows; and trimming cut the healthy far tail (lone windows), so the fitted tail looked \
bounded (shape -0.2 to -0.37) and 0.4-0.6% of held-out healthy windows went over it. Both are \
fixed (a scattered cluster is a healthy mode, a lone far window is the tail: an incident \
lasts). Trained on seeds 11, 12 and 13 and judged on 60,000 held-out healthy windows (the \
training parts of seeds 100-119; `cargo run --release -p model --example held_out -- \
heavy-tails`), the thresholds (17.4, 18.6, 15.5: the fits over all the peaks are heavy, shape \
0.27-0.56; seeds 12 and 13 are refitted over their median peak, lighter there, while seed \
11's refit came out heavier and its whole fit is kept) flag 4, 24 and 8 windows: 6.7e-5 to \
4.0e-4 per window, 5.8e-5 asked, none two in a row (every heavy fit refitted: 28.3, 18.6, 15.5 \
flagging 1, 24 and 8; no refit: 17.4, 29.2, 15.2 flagging 4, 3 and 8). The healthy scores' own \
1 - 5.8e-5 quantile on those windows is 15.9-23.9: a threshold that holds the rate sits \
there or higher, while the best-F1 threshold on a 2000-window test part lets 15-50 of its \
1,903 healthy windows over (seeds 7 and 11-13, thresholds 4.1-4.9; their test labels read \
to explain this figure only): 0.9-2.5% of the held-out healthy windows (the training parts of \
seeds 100-104, 15,000 windows for each model, 21 hours of 5 s windows) go over it, and they \
page (two windows in a row) 3 to 12 times: 3 to 14 false pages a day where one is asked. On \
a machine this heavy-tailed, one false episode per day and this F1 cannot both be had. \
Counting only what pages does not close the gap either: the rate asked divided by the 95% \
upper bound of the share of the training part's tail episodes that last two windows (1 or 2 \
of 56-57: bound 0.08-0.11) lowers the thresholds of seeds 11-13 from 16.4-38.4 to 9.5-11.6, \
under which the held-out parts page 0 times, but that is twice the best-F1 threshold: own F1 \
0.31-0.33 against upper bounds of 0.74-0.82, and `drift` falls (seed 7 0.55 to 0.44, seeds \
11-13 by 0.09-0.30: its test part's drift past the training over a lower threshold). Not \
kept. Measured directly (before spreads \
per mode were the default, which leave `heavy-tails` as it was): a tail fitted \
to the smallest score of each two windows in a row (the runs the daemon's hysteresis enters, \
so that lone far windows spend none of the rate) gave seed 7 an own F1 of 0.78 against 0.80, \
but on the held-out training parts of seeds 100-104 the models of seeds 11-13 (thresholds \
4.6-5.2) entered 16 false episodes of two windows or more in 45,000 windows (3.6e-4 per \
window, 6 times the rate asked; the rule as it is: none), and `drift` fell to 0.24 (its \
threshold 5.13 to 3.65). Not kept.\n\
- `contaminated`: met since spreads per mode became `model train`'s default (0.76 to 1.00). \
The error-burst and disk-stall incidents are degraded clusters of their own; the \
CPU-saturation incidents (1.3% of the windows, 4 runs of 10) are not far in the scaler's \
spreads, which span the busy and the quiet halves (CPU 55% and 15%): a CPU at 97% with 4 \
times the load is about 2 spreads from busy. They scored 4.0-5.4 where the healthy windows \
reach 4.4-4.7, sat in a healthy cluster, and raised the threshold (5.34 to 6.82, 5.67 to \
5.96, 4.93 to 5.31 on seeds 11-13 against models trained without them). Within its mode the \
CPU's spread is a fifth of the scaler's. A spread per mode (1.4826 x MAD within each healthy \
cluster of at least 50 windows, the floors below it) finds them, but measured in every \
feature it flagged more held-out healthy windows on the other sets (heavy-tails 25 against \
4, drift 14 against 5, shapes 158 against 112, of 45,000 each): a long-tailed feature \
measured within the bulk of its own cluster puts its healthy tail many spreads out. So it is \
measured only in the features whose healthy modes lie apart: their spread within the modes \
under half the scaler's (`contaminated`'s busy/quiet features 0.20-0.47 on seed 11's training \
part; `heavy-tails`' 0.56-1.03 and `shapes`' 0.62-1.0, which keep the scaler's). On the \
held-out training parts of seeds 100-104 (the generator's incident positions known, no test \
label read), the models of seeds 11-13 find 600 of 600 incident windows (400 with the \
scaler's spreads: the CPU saturations missed) and flag 4 of 43,200 healthy ones (0); on \
`heavy-tails` and `shapes` they flag what the scaler's spreads flag (4 and 112 of 45,000). \
Tried and dropped before it: spreads measured without the incident clusters' windows (the \
ordinary 5xx spike then looks far), and setting aside tail episodes a fit to the others \
cannot explain (on `heavy-tails` it set aside 17 of 69 healthy episodes).\n\
- `drift`: its growth reads as modes (within-mode spreads 0.27-0.45), so it gets spreads per \
mode too, and that costs it: own F1 0.64 to 0.55, healthy test windows flagged 3.2% to 8.2%. \
The healthy windows flagged are the test part's drift beyond anything trained on, now \
measured in the narrower spreads of the modes along the way. On held-out training parts \
(seeds 100-104) the models of seeds 11-13 flag 13 of 45,000 healthy windows (5 with the \
scaler's spreads), none two in a row: the cost is the drift past the training, which a \
static model cannot know. The daemon's on-node learner follows such a drift: see the \
streaming table below.";

/// What the streaming table shows (written from the figures of `cargo xtask calibration`).
/// Seeds 11-13's figures are development seeds' test parts, read to explain seed 7's (which
/// of the learner's defaults makes the difference), never to change one.
const STREAMING: &str = "What the streaming table shows (seed 7; in brackets seeds 11-13, \
whose test labels were read only to explain these figures; no default was changed from them):\n\n\
- **Floors as `model train`'s once the baseline has seen enough.** A young baseline floors \
every spread 5 times as wide as a `model train` model (the built-in model's floors, so that a \
node's quiet first minutes do not make its busy hours faults). Kept for good, as before, they \
hid faults within them from a learner that had seen hours: `contaminated` 0.65 (its CPU \
saturations, 2 spreads from busy in the scaler's spreads), `shapes` 0.02 (its broken \
correlation; upper bound 0.36). A training made once 1,000 windows were seen (the windows \
after which the tail sets the threshold) now floors them as `model train` does: \
`contaminated` 0.90 (0.89-0.90; 0.89 since the learning period's outliers are forgotten, \
below), `shapes` 0.55 (0.71, 0.42, 0.31: seed 13 0.18 below its \
upper bound), `drift` 0.95 (0.80-0.90). The rule is `model train`'s own for a model trained on \
hours of a node; no value was chosen. On real windows, measured with the maturity moved \
earlier for the measurement only (1,000 windows is 83 minutes of 5 s windows, longer than \
any kept recording): soak 6's 840 windows replayed with maturity at 400 windows give the same \
one episode with floors x1 as with x5 (the first backup, while young), the tail's threshold \
at 42.1 against 12.6; the pooled scenario recordings with maturity at 200 windows (a tail \
fitted to 270 windows, the rule the daemon does not use that young) give 0.73 (0.97 / 0.59) \
with floors x1 against 0.50 (1.00 / 0.33) with x5. Soak 8 (BENCHMARKS.md, 1 s windows so \
that its baseline passed 1,000 windows in 17 minutes) ran one: over the second cycle's build, \
package, backup and connections the mature model (floors x1) raised no episode, where the \
young one (floors x5) had paged five times in the first backup.\n\
- `drift`: the learner follows it, which the static model cannot: 0.95 (0.98 / 0.92), 0.01 \
below its upper bound; 0.1% of the healthy test windows flagged (the static model 8.2%). \
Spreads per mode (its growth reads as modes) took it from 0.83 to 0.98 with the wide floors \
(seeds 11-13 0.83-0.84 to 0.96-0.99); the narrower floors cost it a little (0.98 to 0.95; \
seeds 11-13 0.80-0.90, within the goal).\n\
- `heavy-tails`: as the static model, 0.00 (0.06 before a refresh's spreads covered each \
mode's tail, below; 0.00-0.27 over seeds 11-13 then, not rerun): the learner's tail is asked \
for the same one false episode a day, and its threshold (30.5 at the end; 34.5 before that \
change, 60 before a heavy tail was refitted over its median peak) sits where that rate puts \
it on a machine this heavy-tailed (the conflict described above).\n\
- **A refresh's spreads cover each mode's tail.** Spreads per mode were the MAD of each \
cluster's windows, blind to a mode's own long tail: on this machine's soak 13 a build's CPU \
pressure spans 1-15 % and a package install's up to 39 %, and measured in the busy mode's MAD \
those healthy windows scored up to 33, so the tail fitted to them set 63 and 5 of 16 recorded \
faults paged. A refresh (whose windows were all judged healthy) now measures a spread at least \
the 90th percentile of the absolute deviations over a normal's (the MAD's own for normal data; \
no wider than the scaler's), and a heavy tail's refit over its median peak is kept only when \
lighter than the fit over all the peaks (BENCHMARKS.md). Here: `drift` 0.95 as before \
(threshold 8.35 to 8.15); `contaminated` 0.89 to 0.85, within the goal (a tail is now fitted \
at its last refresh and sets 23.1, where none was before and its model's own percentile held \
6.87); `heavy-tails` 0.06 to 0.00; the scenario recordings unchanged (a young baseline); the \
static models unchanged but `heavy-tails`' threshold (40.1 to 33.1, its refit heavier). No \
value was chosen on these test labels: the quantile is a tenth of a mode's windows, what a \
robust spread leaves out, and the rule on the refit has no constant.\n\
- **The learning period's outliers are forgotten.** The learner's first training takes a \
cluster of under 5% of its learning windows for outliers (degraded); those windows used to \
stay kept, and the first refresh, which takes every kept window for healthy, learned them. \
They are now forgotten at that training and set no tail: `contaminated`, whose training part \
hides incidents, ends at a threshold of 6.87 instead of 44.85 (its learning part's incidents \
were in the tail), F1 0.89 instead of 0.90 (upper bound 0.98 instead of 0.95); every other \
row unchanged. The rule is the learner's own (an incident judged live is never learned); no \
value was chosen.\n\
- **k stays 3.** Choosing k from the windows (the best-separated clustering of 2 to 8 \
clusters, each of at least 50 windows) was measured on this table and on the soaks \
(BENCHMARKS.md, \"Choosing k\"): chosen at every training it took the scenario recordings' \
young baseline to k = 2 (0.91, healthy windows flagged 2.3% to 7.1%); chosen only once 1,000 \
windows were seen, from 3 to 8, it took `drift` from 0.95 to 0.82 and `contaminated` to 0.82. \
Not a default.\n\
- scenario recordings: 0.96 (0.95 / 0.96), as the static model, at its upper bound. The \
recordings give it 270 windows of 2 s to learn from (those before each of 18 runs' fault or \
burst, pooled: 9 minutes): a young baseline, far under the 1,000 windows a tail of one false \
episode a day needs, with the young floors. Until then its threshold is its trained model's \
own (the percentile rule at that size) held at the floor of 3: here 3.46 at the end, the \
static model 3.00 (3.08 with the same F1 before a young model that judges I/O pressure left \
its latencies out). Before, a tail fitted on those 270 windows set the threshold (17.9, 13.5 \
after its refreshes) and this row was 0.31 (0.92 / 0.19). That change was prompted by this \
row, whose F1 reads test labels: take its figure as optimistic. The rule itself is the \
learner's documented design (a floor, not an extrapolated tail, until some thousand windows), \
and no value of a knob changed. 9 minutes pooled from 18 runs is still not a node's first \
hour: no recording of hours on one node, healthy then faults, exists yet to judge the \
learner fairly.";

/// What the hysteresis table shows (written from the figures of `cargo xtask calibration`).
const DAEMON: &str = "What it shows: the static `contaminated` and `shapes` models and the \
scenario recordings are within the goal here too, `heavy-tails` misses it for the reason \
above, and the static `drift` model misses it by as much as per window: its healthy windows \
over the threshold (the drift past its training) come in runs as often as alone (precision \
0.38 per window, 0.42 after the hysteresis). With the scaler's spreads (before spreads per \
mode were the default) they came mostly alone and this table had `drift` within 0.01 and \
`contaminated` 0.23 below. The streaming learner meets it on every set but `heavy-tails` \
(`contaminated` 0.11 below, `drift` and `shapes` at their upper bounds, the scenario \
recordings 0.01 below). The state turns degraded at a \
fault's second window and stays until the third normal one after it: on the scenario \
recordings' short faults that costs F1 (0.89 against 0.95).";

/// "Before": the rule the model had (p99 x 1.2), no trimming, mean and standard deviation.
fn before(options: TrainOptions) -> TrainOptions {
    TrainOptions {
        threshold_rule: ThresholdRule::Percentile,
        trim: 0.0,
        scaling: Scaling::Standard,
        spread_per_mode: false,
        ..options
    }
}

/// One row of the table.
struct Row {
    name: String,
    what: String,
    windows: usize,
    faulty: usize,
    before: Outcome,
    after: Outcome,
    /// The daemon's on-node learner fed the same windows in order.
    streaming: Streamed,
}

struct Outcome {
    f1: f64,
    precision: f64,
    recall: f64,
    /// Best F1 over every threshold, on the test labels: an upper bound, not a result.
    best: f64,
    threshold: f64,
    rule: String,
    trimmed: usize,
    /// Share of the healthy test windows flagged.
    false_alarms: f64,
    /// The same verdicts after the daemon's hysteresis, and their upper bound.
    daemon: Judged,
}

/// The model's own verdicts on `test`, and the best F1 any threshold on the same scores
/// would give (windows nearest a degraded cluster stay flagged, as the model flags them).
fn outcome(model: &Model, tests: &[(Table, Vec<bool>)]) -> anyhow::Result<Outcome> {
    let mut own = Vec::new();
    let mut truth = Vec::new();
    let mut scored = Vec::new();
    let mut runs = Vec::new();
    for (table, labels) in tests {
        let assessments = model.score_table(table)?;
        runs.push(assessments.len().min(labels.len()));
        for (assessment, &label) in assessments.iter().zip(labels) {
            own.push(assessment.is_anomalous());
            truth.push(label);
            let in_degraded = model.clusters[assessment.cluster].state == HealthState::Degraded;
            scored.push((assessment.score, in_degraded, label));
        }
    }
    let daemon = judged_after_hysteresis(&own, &truth, &scored, &runs);
    let Judged {
        precision,
        recall,
        f1,
        false_alarms,
        best,
    } = judged(&own, &truth, scored);
    let rule = match (&model.threshold.tail, model.threshold.raised_from) {
        (_, Some(_)) => "minimum".to_string(),
        (Some(tail), None) => format!("tail ({} episodes)", tail.peaks),
        (None, None) if model.threshold.tail_fallback.is_some() => {
            "p99 x 1.2 (too few episodes for a tail)".to_string()
        }
        (None, None) => "p99 x 1.2".to_string(),
    };
    Ok(Outcome {
        f1,
        precision,
        recall,
        best,
        threshold: model.threshold.value,
        rule,
        trimmed: model.training.trimmed,
        false_alarms,
        daemon,
    })
}

/// Verdicts against labels: own precision, recall and F1, the share of healthy windows
/// flagged, and the best F1 of any threshold on the same scores (the upper bound). Both the
/// static and the streaming table read their figures from here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judged {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub false_alarms: f64,
    pub best: f64,
}

/// The daemon's states from per-window judgements: its hysteresis (enter after
/// `DEFAULT_ENTER_AFTER` anomalous windows in a row, leave after `DEFAULT_LEAVE_AFTER` normal
/// ones), started afresh at each run (`runs`: the test tables' lengths, in order).
pub(crate) fn with_hysteresis(anomalous: &[bool], runs: &[usize]) -> Vec<bool> {
    let mut states = Vec::with_capacity(anomalous.len());
    let mut start = 0;
    for &length in runs {
        let end = (start + length).min(anomalous.len());
        states.extend(model::eval::debounce(
            &anomalous[start..end],
            model::hysteresis::DEFAULT_ENTER_AFTER,
            model::hysteresis::DEFAULT_LEAVE_AFTER,
        ));
        start = end;
    }
    states
}

/// As [`judged`], but of the daemon's verdicts after its hysteresis, and the upper bound the
/// best F1 of any single threshold with the same hysteresis after it. Each threshold is
/// tried: a few thousand windows.
pub(crate) fn judged_after_hysteresis(
    own: &[bool],
    truth: &[bool],
    scored: &[(f64, bool, bool)],
    runs: &[usize],
) -> Judged {
    let own = with_hysteresis(own, runs);
    let mut thresholds: Vec<f64> = scored.iter().map(|s| s.0).collect();
    // Flagging none and flagging every window are thresholds too, as in `best_f1`'s sweep.
    thresholds.extend([f64::INFINITY, f64::NEG_INFINITY]);
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let best = thresholds
        .iter()
        .map(|&threshold| {
            let anomalous: Vec<bool> = scored
                .iter()
                .map(|&(score, degraded, _)| degraded || score > threshold)
                .collect();
            Scores::of(&with_hysteresis(&anomalous, runs), truth).f1
        })
        .fold(0.0, f64::max);
    Judged {
        best,
        ..judged(&own, truth, Vec::new())
    }
}

pub(crate) fn judged(own: &[bool], truth: &[bool], scored: Vec<(f64, bool, bool)>) -> Judged {
    let Scores {
        precision,
        recall,
        f1,
    } = Scores::of(own, truth);
    let healthy = truth.iter().filter(|t| !**t).count();
    let false_alarms =
        own.iter().zip(truth).filter(|(o, t)| **o && !**t).count() as f64 / healthy.max(1) as f64;
    Judged {
        precision,
        recall,
        f1,
        false_alarms,
        best: best_f1(scored),
    }
}

/// The best point-wise F1 any single threshold on the scores gives: each entry is (score, in
/// a degraded cluster, label); a window is flagged when its score is over the threshold or it
/// is in a degraded cluster (as the models flag it). Uses the labels: an upper bound only.
pub(crate) fn best_f1(mut scored: Vec<(f64, bool, bool)>) -> f64 {
    // Sweep the threshold down through every score: counts kept incrementally.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = scored.iter().filter(|s| s.2).count() as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    for &(_, degraded, label) in &scored {
        if degraded {
            if label {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
    }
    let f1_of = |tp: f64, fp: f64| {
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + (positives - tp))
        }
    };
    let mut best = f1_of(tp, fp);
    let mut index = 0;
    while index < scored.len() {
        // Windows with equal scores go over together.
        let score = scored[index].0;
        while index < scored.len() && scored[index].0 == score {
            let (_, degraded, label) = scored[index];
            if !degraded {
                if label {
                    tp += 1.0;
                } else {
                    fp += 1.0;
                }
            }
            index += 1;
        }
        best = best.max(f1_of(tp, fp));
    }
    best
}

fn synthetic_row(set: SyntheticSet, work: &Path) -> anyhow::Result<Row> {
    let data = synthetic_set(set, SEED);
    let dir = work.join(set.name());
    fs::create_dir_all(&dir)?;
    let (train, test, labels) = (
        dir.join("train.csv"),
        dir.join("test.csv"),
        dir.join("test_labels.csv"),
    );
    fs::write(&train, &data.train_csv)?;
    fs::write(&test, &data.test_csv)?;
    fs::write(&labels, &data.test_labels_csv)?;
    let train = model::read_table(&train)?;
    let test = model::read_table(&test)?;
    let truth = model::Labels::read(&labels)?.per_row(&test, &labels)?;
    let faulty = truth.iter().filter(|t| **t).count();
    let windows = truth.len();
    let tests = [(test, truth)];
    let after = TrainOptions::default();
    let after_model = Model::train(&train, &after)?;
    Ok(Row {
        name: format!("synthetic `{}`", set.name()),
        what: set.describe().to_string(),
        windows,
        faulty,
        before: outcome(&Model::train(&train, &before(after.clone()))?, &tests)?,
        after: outcome(&after_model, &tests)?,
        streaming: streaming::stream(&train, &tests, &after_model, &after.features)
            .with_context(|| format!("streaming `{}`", set.name()))?,
    })
}

/// The scenarios: trained as the built-in model is (its features, floors and minimum
/// threshold) on every run's windows before its fault, then every window of every run
/// judged, pooled.
fn scenario_row(recorded: &[Recorded]) -> anyhow::Result<Row> {
    let healthy: Vec<serde_json::Value> = recorded
        .iter()
        .flat_map(|r| r.healthy_records())
        .collect::<anyhow::Result<_>>()?;
    let train = Table::from_records(&healthy)?;
    let mut tests = Vec::new();
    for r in recorded {
        tests.push((Table::from_records(&r.records()?)?, r.truth()));
    }
    let windows = tests.iter().map(|(_, t)| t.len()).sum();
    let faulty = tests.iter().flat_map(|(_, t)| t).filter(|t| **t).count();
    let builtin = TrainOptions {
        features: BUILTIN_FEATURES.iter().map(|f| f.to_string()).collect(),
        floor_scale: evaluate::BUILTIN_FLOOR_SCALE.parse()?,
        min_threshold: evaluate::BUILTIN_MIN_THRESHOLD.parse()?,
        spread_per_mode: false,
        ..TrainOptions::default()
    };
    // Judged as the daemon judges its built-in model (`model score --signals`).
    let signals = |mut model: Model| {
        model.judge_signals();
        model
    };
    let after_model = signals(Model::train(&train, &builtin)?);
    let faults = recorded
        .iter()
        .filter(|r| r.scenario.kind == Kind::Fault)
        .count();
    Ok(Row {
        name: "scenario recordings".into(),
        what: format!(
            "all {} runs pooled ({faults} faults), trained like the built-in model on the {} \
             healthy windows before each fault and judged as the daemon judges it (rises of \
             the signals only, a latency without a sample left out)",
            recorded.len(),
            healthy.len()
        ),
        windows,
        faulty,
        before: outcome(
            &signals(Model::train(&train, &before(builtin.clone()))?),
            &tests,
        )?,
        after: outcome(&after_model, &tests)?,
        streaming: streaming::stream(&train, &tests, &after_model, &builtin.features)
            .context("streaming the scenario recordings")?,
    })
}

/// The section's text (with its markers).
pub fn section(recorded: &[Recorded]) -> anyhow::Result<String> {
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for set in SyntheticSet::ALL {
        rows.push(synthetic_row(set, work.path())?);
    }
    if !recorded.is_empty() {
        rows.push(scenario_row(recorded)?);
    }
    let mut md = String::new();
    writeln!(
        md,
        "{BEGIN}\n## Calibration: the model's own threshold, before and after (issue 24)\n\n\
         `cargo xtask calibration` (also run by `cargo xtask evaluate`). Each synthetic set \
         (`model synth --set NAME --seed {SEED}`: {} training windows without labels, {} test \
         windows with 8 labelled faults, half of them subtle) and the scenario recordings: \
         `model train` with the defaults **before** (threshold p99 x 1.2, no trimming, mean \
         and standard deviation) and **after** (tail rule for 5.8e-5 false episodes per \
         window, at most 5% trimmed, robust scaling, spreads per mode where a feature's \
         healthy modes lie apart; the scenario row as the built-in model, without them), then \
         every test window judged. F1 is \
         point-wise, before hysteresis. **Upper bound**: the best F1 any threshold on the same \
         scores would give, chosen on the test labels; no model can know it, it is not our \
         result, and no default was set from it. Goal: own F1 within {GOAL} of the upper \
         bound. The tail rule is asked for about one false episode per node-day (5.8e-5 per \
         window), stricter than what maximises F1 on a test part where 5% of the windows are \
         faults: where it misses the goal, the notes under the table say why.\n",
        model::synthetic::SET_TRAIN_ROWS,
        model::synthetic::SET_TEST_ROWS,
    )?;
    writeln!(
        md,
        "| data | test windows (faulty) | before: F1 (P / R) | before: upper bound | after: F1 (P / R) | after: upper bound | after: threshold, rule, windows trimmed | healthy test windows flagged, before / after | after within {GOAL}? |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    for row in &rows {
        let cell = |o: &Outcome| format!("{:.2} ({:.2} / {:.2})", o.f1, o.precision, o.recall);
        let gap = row.after.best - row.after.f1;
        writeln!(
            md,
            "| {} | {} ({}) | {} | {:.2} | {} | {:.2} | {:.2}, {}, {} | {:.1}% / {:.1}% | {} |",
            row.name,
            row.windows,
            row.faulty,
            cell(&row.before),
            row.before.best,
            cell(&row.after),
            row.after.best,
            row.after.threshold,
            row.after.rule,
            row.after.trimmed,
            100.0 * row.before.false_alarms,
            100.0 * row.after.false_alarms,
            if gap <= GOAL {
                format!("yes ({gap:.2} below)")
            } else {
                format!("**no** ({gap:.2} below)")
            },
        )?;
    }
    writeln!(md)?;
    for row in &rows {
        writeln!(md, "- {}: {}.", row.name, row.what)?;
    }
    writeln!(md, "\n{WHY}")?;
    streaming_table(&mut md, &rows)?;
    daemon_table(&mut md, &rows)?;
    writeln!(md, "{END}")?;
    Ok(md)
}

/// The streaming table, beside the static one: the same sets, the daemon's learner.
fn streaming_table(md: &mut String, rows: &[Row]) -> anyhow::Result<()> {
    writeln!(
        md,
        "\n### Streaming: the daemon's on-node learner on the same windows\n\n\
         The daemon without a model file learns its node's baseline and follows it \
         (`model::baseline::BaselineLearner`: retrained every {refresh} windows from the windows \
         it judged healthy; until {floor_windows} windows were seen, the percentile rule held at \
         a floor of {floor}; then a DSPOT tail between refreshes). Here it learns from the \
         whole training part, in order, then judges every test window in order; its verdict (degraded or healthy, before hysteresis) is the flag. It \
         runs at its defaults as they are (k = {k}; spreads floored x {scale} while young, x \
         {mature} in a training made once {floor_windows} windows were seen: from its first \
         training on the synthetic sets, which it learns from 3000 windows, never on the \
         scenario recordings' 270; spreads per mode; mean and standard deviation; one false \
         episode a day for the set's window length): only the number of windows \
         learned from, the window length and the fields (those the \"after\" model judges on \
         that set) come from the data; nothing was tuned on these test labels. **Upper \
         bound**: the best F1 of any single threshold on the scores the learner gave the test \
         windows, on the test labels, as above.\n",
        refresh = model::baseline::DEFAULT_REFRESH_EVERY,
        floor = model::baseline::DEFAULT_FLOOR_THRESHOLD,
        floor_windows = model::baseline::DEFAULT_FLOOR_WINDOWS,
        k = BaselineOptions::default().train.k,
        scale = model::baseline::DEFAULT_FLOOR_SCALE,
        mature = model::baseline::DEFAULT_MATURE_FLOOR_SCALE,
    )?;
    writeln!(
        md,
        "| data | after (static): F1 (P / R) | streaming: F1 (P / R) | streaming: upper bound | streaming: threshold, k at the end, trainings | healthy test windows flagged, after / streaming | streaming within {GOAL}? |\n|---|---|---|---|---|---|---|"
    )?;
    for row in rows {
        let s = &row.streaming;
        let gap = s.best - s.f1;
        writeln!(
            md,
            "| {} | {:.2} ({:.2} / {:.2}) | {:.2} ({:.2} / {:.2}) | {:.2} | {:.2}, {}, {} | {:.1}% / {:.1}% | {} |",
            row.name,
            row.after.f1,
            row.after.precision,
            row.after.recall,
            s.f1,
            s.precision,
            s.recall,
            s.best,
            s.threshold,
            s.clusters,
            s.trainings,
            100.0 * row.after.false_alarms,
            100.0 * s.false_alarms,
            if gap <= GOAL {
                format!("yes ({gap:.2} below)")
            } else {
                format!("**no** ({gap:.2} below)")
            },
        )?;
    }
    writeln!(md, "\n{STREAMING}")?;
    Ok(())
}

/// The same verdicts as the daemon gives them: after its hysteresis.
fn daemon_table(md: &mut String, rows: &[Row]) -> anyhow::Result<()> {
    writeln!(
        md,
        "\n### As the daemon says it: the same verdicts after its hysteresis\n\n\
         The tables above count every window over the threshold, as the issue's goal does. \
         The daemon reports its state after hysteresis: degraded after {enter} anomalous \
         windows in a row, healthy again after {leave} normal ones, so a lone window over the \
         threshold pages nobody and an episode is held a little past a fault's end. Here each \
         model's per-window verdicts above go through that hysteresis (afresh for each test \
         part), and F1 is that of the node's state, window by window: what a person on call \
         would have been told. Nothing in the models changes. **Upper bound**: the best F1 of \
         any single threshold on the same scores with the same hysteresis after it, on the \
         test labels. This is a second view, not the goal's measure.\n",
        enter = model::hysteresis::DEFAULT_ENTER_AFTER,
        leave = model::hysteresis::DEFAULT_LEAVE_AFTER,
    )?;
    writeln!(
        md,
        "| data | after (static): F1 (P / R) | upper bound | within {GOAL}? | streaming: F1 (P / R) | upper bound | within {GOAL}? |\n|---|---|---|---|---|---|---|"
    )?;
    let verdict = |j: &Judged| {
        let gap = j.best - j.f1;
        if gap <= GOAL {
            format!("yes ({gap:.2} below)")
        } else {
            format!("**no** ({gap:.2} below)")
        }
    };
    for row in rows {
        let (a, s) = (&row.after.daemon, &row.streaming.daemon);
        writeln!(
            md,
            "| {} | {:.2} ({:.2} / {:.2}) | {:.2} | {} | {:.2} ({:.2} / {:.2}) | {:.2} | {} |",
            row.name,
            a.f1,
            a.precision,
            a.recall,
            a.best,
            verdict(a),
            s.f1,
            s.precision,
            s.recall,
            s.best,
            verdict(s),
        )?;
    }
    writeln!(md, "\n{DAEMON}")?;
    Ok(())
}

/// Replaces the section in EVALUATION.md (appends it when absent).
pub fn write_section(section: &str) -> anyhow::Result<()> {
    let path = workspace_root().join("EVALUATION.md");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{}{}",
            &text[..begin],
            section.trim_end(),
            &text[end + END.len()..]
        ),
        (None, None) => format!("{}\n{}", text.trim_end(), "\n".to_string() + section),
        _ => bail!(
            "{} has one calibration marker without the other",
            path.display()
        ),
    };
    fs::write(&path, updated)?;
    Ok(())
}

pub fn calibration() -> anyhow::Result<()> {
    let dir = workspace_root().join("datasets");
    let mut recorded = Vec::new();
    for scenario in SCENARIOS {
        if let Some(r) = evaluate::load(&dir, scenario)? {
            recorded.push(r);
        }
    }
    let section = section(&recorded)?;
    print!("{section}");
    write_section(&section)?;
    println!("calibration: wrote its section of EVALUATION.md");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{best_f1, judged_after_hysteresis, with_hysteresis};

    #[test]
    fn the_hysteresis_enters_after_two_and_starts_afresh_per_run() {
        let (t, f) = (true, false);
        // A lone window over the threshold: nothing; two in a row: degraded until three
        // normal ones; a run boundary between two anomalous windows: no episode.
        let anomalous = [f, t, f, t, t, f, f, f, f, t, t];
        let states = with_hysteresis(&anomalous, &[10, 1]);
        assert_eq!(states, [f, f, f, f, t, t, t, f, f, f, f]);
    }

    #[test]
    fn the_upper_bound_after_hysteresis_may_flag_every_window() {
        // Every window faulty, all scoring alike: only a threshold under every score finds
        // them, as `best_f1` would.
        let scored = vec![(2.0, false, true); 6];
        let labels = [true; 6];
        let judged = judged_after_hysteresis(&[false; 6], &labels, &scored, &[6]);
        assert_eq!(best_f1(scored), 1.0);
        // Degraded from the second window on: 5 of 6 found, none false.
        assert!((judged.best - 10.0 / 11.0).abs() < 1e-12, "{judged:?}");
    }

    #[test]
    fn the_upper_bound_after_hysteresis_ignores_lone_healthy_peaks() {
        // A lone healthy window over every fault's score: point-wise it costs precision at
        // any threshold that finds the fault; after the hysteresis it pages nobody.
        let labels = [
            false, false, false, false, true, true, true, true, false, false, false, false,
        ];
        let scores = [1.0, 9.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0];
        let scored: Vec<(f64, bool, bool)> = scores
            .iter()
            .zip(&labels)
            .map(|(&s, &l)| (s, false, l))
            .collect();
        let own: Vec<bool> = scores.iter().map(|&s| s > 4.0).collect();
        let judged = judged_after_hysteresis(&own, &labels, &scored, &[12]);
        // Degraded from the second faulty window, held two windows after the fault ends.
        assert!((judged.precision - 3.0 / 5.0).abs() < 1e-12, "{judged:?}");
        assert!((judged.recall - 3.0 / 4.0).abs() < 1e-12, "{judged:?}");
        assert!((judged.best - judged.f1).abs() < 1e-12, "{judged:?}");
        assert!(best_f1(scored) < 1.0);
    }

    #[test]
    fn the_upper_bound_is_the_best_single_threshold() {
        // Separable: a threshold between 1 and 4 flags exactly the faults.
        let separable = vec![
            (5.0, false, true),
            (4.0, false, true),
            (1.0, false, false),
            (0.5, false, false),
        ];
        assert_eq!(best_f1(separable), 1.0);
        // A fault under a healthy window: flagging the top one gives 2/3, the top two 1/2,
        // all three 0.8.
        let interleaved = vec![(5.0, false, true), (3.0, false, false), (2.0, false, true)];
        assert!((best_f1(interleaved) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn windows_in_a_degraded_cluster_stay_flagged_at_every_threshold() {
        // The healthy window in a degraded cluster is a false alarm whatever the threshold.
        let scored = vec![(5.0, false, true), (1.0, true, false), (0.5, false, false)];
        assert!((best_f1(scored) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn equal_scores_go_over_the_threshold_together() {
        let tied = vec![(3.0, false, true), (3.0, false, false), (1.0, false, false)];
        assert!((best_f1(tied) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(best_f1(vec![(3.0, false, false)]), 0.0, "no fault: F1 0");
    }
}
