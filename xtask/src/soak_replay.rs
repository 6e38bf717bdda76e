//! `cargo xtask soak-replay FILE`: the windows a soak recorded (`target/soak-windows.jsonl`,
//! learning included) judged again by this tree's learned baseline, as the daemon judges them:
//! the fields it judges by default, its missing values, its hysteresis. It says how a change
//! to the learner would have fared on the same hours of benign work without another soak.
//! It is not one: the windows were made beside the daemon that ran then, and a rule chosen by
//! looking at a recording is measured in-sample on it (say so when quoting a figure).

use std::{
    collections::VecDeque,
    io::BufRead as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use model::{
    BaselineLearner, BaselineOptions,
    hysteresis::{DEFAULT_ENTER_AFTER, DEFAULT_LEAVE_AFTER, Hysteresis},
    input::{Selected, WindowFields, is_feature},
    model::HealthState,
    signals::JUDGED_FIELDS,
};
use serde_json::Value;

use crate::episodes::{Episode, Episodes};

/// A window record's numeric fields in the order the daemon wrote them (its record's field
/// order, which is the order the daemon's learner takes its columns in: a replay in another
/// order would sum the same distances in another order and could differ in the last bits).
/// `None` is a value the window could not read (`null`). The daemon's learner sees it through
/// its default `--baseline-fields` ([`Selected`] by [`JUDGED_FIELDS`]), and so does the replay.
struct Recorded(Vec<(String, Option<f64>)>);

impl<'de> serde::Deserialize<'de> for Recorded {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Recorded;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON window record")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Recorded, M::Error> {
                let mut fields = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if value.is_number() || value.is_null() {
                        fields.push((name, value.as_f64()));
                    }
                }
                Ok(Recorded(fields))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl WindowFields for Recorded {
    fn field(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).and_then(|(_, v)| *v)
    }

    fn is_missing(&self, name: &str) -> bool {
        self.0.iter().any(|(n, v)| n == name && v.is_none())
    }

    fn feature_fields(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, v)| v.is_some() && is_feature(n))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

pub struct ReplayOptions {
    pub file: PathBuf,
    /// Fail unless every window that carries the daemon's verdict is judged the same here.
    pub check: bool,
    pub window: Duration,
    pub learn_for: Duration,
    pub refresh_every: Duration,
    /// After the file, judge the recorded scenarios' faults carried onto the file's own
    /// windows by the baseline it left (see [`crate::transplant`]).
    pub faults: bool,
    /// Train the baseline's models with this many clusters (the daemon's: 3).
    pub clusters: Option<usize>,
    /// Let a baseline that has seen hours choose its k from its windows, from `clusters` to
    /// this (`model::TrainOptions::choose_k_up_to`; the daemon does not).
    pub choose_k_up_to: Option<usize>,
    /// Restart the daemon after this many windows (its learner and hysteresis anew): what a
    /// rollout or a reboot does to a baseline.
    pub restart_at: Option<usize>,
    /// At that restart, go on from the learner's saved state (`collector run
    /// --baseline-state`, through its JSON as the daemon's file holds it) instead of learning
    /// afresh.
    pub restart_keeps_state: bool,
    /// Start from this saved baseline (`collector run --baseline-state`'s file) instead of
    /// learning afresh: the file's first window is judged at once, as a restarted daemon's.
    pub start_state: Option<PathBuf>,
    /// At the end, write the state the learner holds to this file, in the daemon's layout:
    /// what a daemon that judged these windows would start from after a restart.
    pub save_state: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct Replay {
    pub windows: usize,
    pub judged: usize,
    pub anomalous: usize,
    pub episodes: Vec<Episode>,
    /// Of the judged windows, anomalous ones and episodes (by their first window): those
    /// judged by a model trained with `model train`'s floors (x1), once the baseline had seen
    /// enough to be trained as a grown node's. What the soaks' "mature" rows count.
    pub mature: Mature,
    pub baseline: serde_json::Value,
    /// Windows that carry the daemon's verdict (`soak_verdict`), and of those the ones
    /// judged differently here (state, or a score more than 1e-9 apart): (line, daemon's
    /// state and score, replay's).
    pub verdicts: usize,
    pub differences: Vec<(usize, String, f64, String, f64)>,
    /// How long each window that trained a model took to judge, in milliseconds: what a
    /// training holds the daemon's window loop for, on this machine.
    pub training_ms: Vec<f64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Mature {
    pub judged: usize,
    pub anomalous: usize,
    pub episodes: usize,
}

/// How many of the file's last windows of its idle phase (or last windows, without phases)
/// are kept to carry the faults: minutes of the node's own quiet at any window length.
const CARRIER_WINDOWS: usize = 300;

/// Judges the window records of `lines` in order (JSON objects; other lines are an error).
#[cfg(test)]
fn replay(
    lines: impl Iterator<Item = std::io::Result<String>>,
    options: &ReplayOptions,
) -> anyhow::Result<Replay> {
    Ok(replay_keeping(lines, options)?.0)
}

/// The window's judged fields and the ones it could not read, as the daemon hands them to its
/// learner, and the learner's judgement.
fn judge(
    learner: &mut BaselineLearner,
    line: &str,
    judged_fields: &[String],
) -> anyhow::Result<Option<model::Assessment>> {
    let recorded: Recorded = serde_json::from_str(line).context("not a JSON window record")?;
    let fields = Selected::new(&recorded, judged_fields);
    let absent: Vec<String> = recorded
        .0
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    Ok(learner.observe_partial(&fields, &absent)?)
}

/// [`replay`], and the baseline it left with the windows kept to carry faults
/// ([`CARRIER_WINDOWS`]).
fn replay_keeping(
    lines: impl Iterator<Item = std::io::Result<String>>,
    options: &ReplayOptions,
) -> anyhow::Result<(Replay, BaselineLearner, Vec<Value>)> {
    // The last idle windows, and the last windows of any phase for a file without idle ones.
    let mut carriers: VecDeque<Value> = VecDeque::with_capacity(CARRIER_WINDOWS);
    let mut last: VecDeque<Value> = VecDeque::with_capacity(CARRIER_WINDOWS);
    let mut baseline_options =
        BaselineOptions::covering(options.window, options.learn_for, options.refresh_every);
    if let Some(k) = options.clusters {
        baseline_options.train.k = k;
    }
    baseline_options.train.choose_k_up_to = options.choose_k_up_to;
    let mature_floor_scale = baseline_options.mature_floor_scale;
    let mut learner = match &options.start_state {
        None => BaselineLearner::new(baseline_options.clone()),
        Some(path) => BaselineLearner::restore(
            baseline_options.clone(),
            model::baseline::BaselineState::load(path)?,
            path,
        )
        .with_context(|| format!("starting from {}", path.display()))?,
    };
    let mut hysteresis = Hysteresis::new(DEFAULT_ENTER_AFTER, DEFAULT_LEAVE_AFTER);
    let mut replay = Replay::default();
    let mut first_ms: Option<u64> = None;
    let mut episodes = Episodes::default();
    let judged_fields: Vec<String> = JUDGED_FIELDS.iter().map(ToString::to_string).collect();
    for (number, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not a JSON window record", number + 1))?;
        if !record.is_object() {
            bail!("line {}: not a JSON object", number + 1);
        }
        let at_ms = record["unix_ms"].as_u64().unwrap_or(0);
        let first = *first_ms.get_or_insert(at_ms);
        // The daemon's view: the judged fields, and every field the window could not read
        // (the daemon passes its record's whole `missing` list; the learner heeds its own).
        if options.restart_at == Some(replay.windows) {
            learner = restarted(&learner, &baseline_options, options.restart_keeps_state)?;
            hysteresis = Hysteresis::new(DEFAULT_ENTER_AFTER, DEFAULT_LEAVE_AFTER);
        }
        replay.windows += 1;
        let trainings = learner.trainings();
        let started = std::time::Instant::now();
        let assessment = judge(&mut learner, &line, &judged_fields)
            .with_context(|| format!("line {}", number + 1))?;
        if learner.trainings() != trainings {
            replay
                .training_ms
                .push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let idle = matches!(record["soak_phase"].as_str(), None | Some("idle"));
        for (kept, wanted) in [(&mut carriers, idle), (&mut last, true)] {
            if wanted {
                if kept.len() == CARRIER_WINDOWS {
                    kept.pop_front();
                }
                kept.push_back(record.clone());
            }
        }
        // The daemon's verdict on this window, if the soak kept it: its node state (after
        // hysteresis) and the window's score.
        let verdict = &record["soak_verdict"];
        let mut compare = |ours: &str, our_score: f64| {
            if let (Some(state), Some(score)) =
                (verdict["state"].as_str(), verdict["score"].as_f64())
            {
                replay.verdicts += 1;
                if ours != state || (our_score - score).abs() > 1e-9 {
                    replay.differences.push((
                        number + 1,
                        state.to_string(),
                        score,
                        ours.to_string(),
                        our_score,
                    ));
                }
            }
        };
        let Some(assessment) = assessment else {
            compare("learning", 0.0);
            continue;
        };
        replay.judged += 1;
        let anomalous = assessment.state == HealthState::Degraded;
        replay.anomalous += usize::from(anomalous);
        let mature = learner.floor_scale() == mature_floor_scale;
        if mature {
            replay.mature.judged += 1;
            replay.mature.anomalous += usize::from(anomalous);
        }
        let node_state = hysteresis.update(anomalous);
        compare(&node_state.to_string(), assessment.score);
        let degraded = node_state == HealthState::Degraded;
        let opened = episodes.update(degraded, || Episode {
            started_s: at_ms.saturating_sub(first) as f64 / 1000.0,
            windows: 1,
            phase: record["soak_phase"].as_str().unwrap_or("").to_string(),
            score: assessment.score,
            threshold: assessment.threshold,
            explanation: assessment
                .explanation
                .iter()
                .take(3)
                .map(|c| (c.feature.clone(), c.z))
                .collect(),
        });
        replay.mature.episodes += usize::from(opened.is_some() && mature);
    }
    replay.episodes = episodes.finish();
    replay.baseline = serde_json::to_value(learner.status())?;
    let carriers = if carriers.is_empty() { last } else { carriers };
    Ok((replay, learner, carriers.into()))
}

/// The learner a restarted daemon has: a new one, or with `keeps_state` the one restored from
/// `learner`'s state written as the daemon's file holds it (a new one if it had no state yet,
/// as the daemon finds no file before its first training).
fn restarted(
    learner: &BaselineLearner,
    options: &BaselineOptions,
    keeps_state: bool,
) -> anyhow::Result<BaselineLearner> {
    let Some(state) = learner.state().filter(|_| keeps_state) else {
        return Ok(BaselineLearner::new(options.clone()));
    };
    let file: model::baseline::BaselineState =
        serde_json::from_str(&serde_json::to_string(&state)?)?;
    Ok(BaselineLearner::restore(
        options.clone(),
        file,
        std::path::Path::new("<restart>"),
    )?)
}

/// What the baseline made of one fault carried onto the node's windows.
#[derive(Debug)]
pub struct Trial {
    pub scenario: &'static str,
    pub windows: usize,
    pub over: usize,
    /// The node state turned degraded (the daemon's hysteresis) within the fault.
    pub paged: bool,
    pub max_score: f64,
    /// The threshold at the fault's first judged window (NaN when the baseline, still
    /// learning, judged none).
    pub threshold: f64,
    /// The top feature of the highest-scoring window.
    pub top: Option<(String, f64)>,
}

/// Judges `signature`'s fault carried onto the last of `carriers` (as many windows as the
/// fault lasted, at least the hysteresis' entry plus one) by a copy of `learner`, from a
/// healthy node state.
pub fn trial(
    learner: &BaselineLearner,
    carriers: &[Value],
    signature: &crate::transplant::Signature,
    window: Duration,
) -> anyhow::Result<Trial> {
    anyhow::ensure!(
        !carriers.is_empty(),
        "no window of the file to carry a fault"
    );
    let mut learner = learner.clone();
    let mut hysteresis = Hysteresis::new(DEFAULT_ENTER_AFTER, DEFAULT_LEAVE_AFTER);
    let judged_fields: Vec<String> = JUDGED_FIELDS.iter().map(ToString::to_string).collect();
    let windows = ((signature.seconds / window.as_secs_f64()).ceil() as usize)
        .max(DEFAULT_ENTER_AFTER as usize + 1);
    let mut trial = Trial {
        scenario: signature.scenario,
        windows,
        over: 0,
        paged: false,
        max_score: 0.0,
        threshold: f64::NAN,
        top: None,
    };
    let start = carriers.len().saturating_sub(windows);
    for index in 0..windows {
        let mut carrier = carriers[(start + index) % carriers.len()].clone();
        crate::transplant::apply(&mut carrier, signature);
        let Some(assessment) = judge(&mut learner, &carrier.to_string(), &judged_fields)? else {
            continue;
        };
        if trial.threshold.is_nan() {
            trial.threshold = assessment.threshold;
        }
        let anomalous = assessment.state == HealthState::Degraded;
        trial.over += usize::from(anomalous);
        trial.paged |= hysteresis.update(anomalous) == HealthState::Degraded;
        if assessment.score >= trial.max_score {
            trial.max_score = assessment.score;
            trial.top = assessment
                .explanation
                .first()
                .map(|c| (c.feature.clone(), c.z));
        }
    }
    Ok(trial)
}

pub fn soak_replay(options: &ReplayOptions) -> anyhow::Result<()> {
    let file = open(&options.file)?;
    let (replay, learner, carriers) = replay_keeping(file.lines(), options)?;
    for episode in &replay.episodes {
        println!(
            "  {:>6.0}s DEGRADED during {}: {} window(s), score {:.2} > {:.2}, {:?}",
            episode.started_s,
            episode.phase,
            episode.windows,
            episode.score,
            episode.threshold,
            episode.explanation
        );
    }
    let hours = replay.judged as f64 * options.window.as_secs_f64() / 3600.0;
    let upper = crate::rate::poisson_upper_95(replay.episodes.len(), hours);
    println!(
        "soak-replay: {} degraded episode(s) in {hours:.2} judged hours ({} windows of {}, {} \
         over the threshold before hysteresis): {:.2}/hour, 95% upper bound {upper:.2}/hour",
        replay.episodes.len(),
        replay.judged,
        replay.windows,
        replay.anomalous,
        replay.episodes.len() as f64 / hours.max(1e-9),
    );
    let mature_hours = replay.mature.judged as f64 * options.window.as_secs_f64() / 3600.0;
    if replay.mature.judged == 0 {
        println!(
            "soak-replay: no window was judged by a mature model (one trained with model \
             train's floors, once the baseline has seen enough windows)"
        );
    } else {
        println!(
            "soak-replay: of them judged by a mature model (trained with model train's floors): {} \
         episode(s) in {mature_hours:.2} hours ({} windows, {} over the threshold), 95% upper \
         bound {:.2}/hour",
            replay.mature.episodes,
            replay.mature.judged,
            replay.mature.anomalous,
            crate::rate::poisson_upper_95(replay.mature.episodes, mature_hours),
        );
    }
    if !replay.training_ms.is_empty() {
        println!(
            "soak-replay: {} trainings, each holding its window {:.0} ms (median), {:.0} ms at \
             the slowest",
            replay.training_ms.len(),
            crate::util::median(&replay.training_ms),
            replay.training_ms.iter().copied().fold(0.0, f64::max)
        );
    }
    println!("soak-replay: baseline at the end: {}", replay.baseline);
    if let Some(path) = &options.save_state {
        let Some(state) = learner.state() else {
            bail!(
                "--save-state: the baseline was still learning at the file's end: there is no \
                 state to save"
            );
        };
        state
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "soak-replay: the baseline's state ({} windows seen) in {}",
            state.windows_seen,
            path.display()
        );
    }
    println!(
        "soak-replay: {} of {} windows with the daemon's verdict judged the same (state and \
         score)",
        replay.verdicts - replay.differences.len(),
        replay.verdicts
    );
    for (line, state, score, ours, our_score) in replay.differences.iter().take(10) {
        println!("  line {line}: the daemon {state} {score}, here {ours} {our_score}");
    }
    if options.faults {
        let signatures = crate::transplant::recorded_signatures()?;
        let mut paged = 0;
        for signature in &signatures {
            let trial = trial(&learner, &carriers, signature, options.window)?;
            paged += usize::from(trial.paged);
            // A baseline still learning judges nothing: say so rather than print a threshold.
            let against = if trial.threshold.is_nan() {
                "no threshold yet: the baseline was still learning".to_string()
            } else {
                format!("against {:.1}", trial.threshold)
            };
            println!(
                "  fault {}: {} ({} of {} windows over; score up to {:.1} {against}; {})",
                trial.scenario,
                if trial.paged { "paged" } else { "MISSED" },
                trial.over,
                trial.windows,
                trial.max_score,
                trial
                    .top
                    .as_ref()
                    .map_or("-".to_string(), |(f, z)| format!("{f} {z:+.1}")),
            );
        }
        println!(
            "soak-replay: {paged} of {} recorded faults, carried onto {} of the file's last \
             windows (its idle phase's), paged the baseline it left (each judged by a copy of \
             it)",
            signatures.len(),
            carriers.len()
        );
    }
    if options.check {
        if replay.verdicts == 0 {
            bail!("--check: no window carries the daemon's verdict (`soak_verdict`)");
        }
        if !replay.differences.is_empty() {
            bail!(
                "--check: {} of {} windows judged differently from the daemon (the learner \
                 of this tree is not the one that ran, or the replay does not judge as the \
                 daemon does)",
                replay.differences.len(),
                replay.verdicts
            );
        }
    }
    Ok(())
}

/// The window file, read through gzip when its name ends in `.gz` (the soaks kept in
/// `datasets/soaks/`).
fn open(path: &Path) -> anyhow::Result<Box<dyn std::io::BufRead>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "opening {} (`cargo xtask soak` writes target/soak-windows.jsonl)",
            path.display()
        )
    })?;
    Ok(if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    })
}

#[cfg(test)]
mod tests;
