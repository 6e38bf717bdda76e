//! `cargo xtask evaluate`: replay the recorded scenarios through `model train` / `model score`
//! as the daemon would judge them, the way the benchmark's detection oracle grades answers,
//! and write EVALUATION.md plus the default model.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    culprits::{self, Grade},
    scenario::{self, Kind, SCENARIOS, Scenario},
    util::{release_binary, workspace_root},
};

/// The daemon's default hysteresis: enter after 2 anomalous windows, leave after 3 normal ones.
pub const ENTER_AFTER: u32 = model::hysteresis::DEFAULT_ENTER_AFTER;
pub const LEAVE_AFTER: u32 = model::hysteresis::DEFAULT_LEAVE_AFTER;

mod check;
pub use check::ci_check;

/// One recorded window, as far as the evaluation cares.
struct Window {
    line: String,
    start_s: f64,
    end_s: f64,
}

/// A recorded scenario with its ground truth.
pub struct Recorded {
    pub scenario: &'static Scenario,
    windows: Vec<Window>,
    /// The fault's (or the benign burst's) start and end, seconds since the epoch.
    start_s: f64,
    end_s: f64,
    /// What the daemon as shipped judged during the run (`None`: not recorded).
    judged: Option<Vec<culprits::Judged>>,
}

impl Recorded {
    /// The "culprit named first" grade (see the rule in culprits.rs).
    pub fn culprit_grade(&self) -> Grade {
        let expected = self.scenario.expected_culprit();
        let service = scenario::lab::workload_name(scenario::lab::SERVICE_CGROUP);
        match &self.judged {
            Some(judged) => culprits::grade(
                judged,
                self.start_s,
                self.end_s,
                expected.as_deref(),
                &service,
            ),
            None => Grade {
                first: if expected.is_some() {
                    culprits::First::NotRecorded
                } else {
                    culprits::First::NoCulprit
                },
                degraded: 0,
                service_named: 0,
            },
        }
    }

    /// Windows at least half inside the fault: the ones that should be flagged.
    pub fn truth(&self) -> Vec<bool> {
        self.windows
            .iter()
            .map(|w| {
                let overlap = (w.end_s.min(self.end_s) - w.start_s.max(self.start_s)).max(0.0);
                self.scenario.kind == Kind::Fault && overlap >= 0.5 * (w.end_s - w.start_s)
            })
            .collect()
    }

    /// Windows wholly before the fault or burst: the healthy part of the run.
    fn before(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter().filter(|w| w.end_s <= self.start_s)
    }

    /// Every window's record.
    pub fn records(&self) -> anyhow::Result<Vec<Value>> {
        self.windows
            .iter()
            .map(|w| Ok(serde_json::from_str(&w.line)?))
            .collect()
    }

    /// The records of the windows before the fault or burst.
    pub fn healthy_records(&self) -> impl Iterator<Item = anyhow::Result<Value>> + '_ {
        self.before().map(|w| Ok(serde_json::from_str(&w.line)?))
    }
}

fn seconds(rfc3339: &str) -> anyhow::Result<f64> {
    let time =
        humantime::parse_rfc3339(rfc3339).with_context(|| format!("bad timestamp {rfc3339:?}"))?;
    Ok(time.duration_since(UNIX_EPOCH)?.as_secs_f64())
}

pub fn load(dir: &Path, scenario: &'static Scenario) -> anyhow::Result<Option<Recorded>> {
    let files = scenario::dataset_files(dir, scenario.name);
    if !files.windows.exists() {
        return Ok(None);
    }
    let text = crate::util::read_gz(&files.windows)?;
    let meta: Value = serde_json::from_str(&fs::read_to_string(&files.meta)?)
        .with_context(|| format!("reading {}", files.meta.display()))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        seconds(
            meta[name]
                .as_str()
                .with_context(|| format!("{name} missing in meta"))?,
        )
    };
    let mut windows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let record: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", files.windows.display(), number + 1))?;
        let end_s = record["unix_ms"].as_f64().context("unix_ms")? / 1000.0;
        let length = record["window_s"].as_f64().context("window_s")?;
        windows.push(Window {
            line: line.to_string(),
            start_s: end_s - length,
            end_s,
        });
    }
    Ok(Some(Recorded {
        scenario,
        windows,
        start_s: field("start")?,
        end_s: field("end")?,
        judged: culprits::load(&files.culprits)?,
    }))
}

fn model(args: &[&str]) -> anyhow::Result<String> {
    let binary = release_binary("model");
    let out = Command::new(&binary)
        .args(args)
        .output()
        .with_context(|| format!("running {} (run `cargo xtask build`)", binary.display()))?;
    if !out.status.success() {
        bail!(
            "model {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `model train` with the built-in model's settings, on `input` (and `labels`, when given),
/// into `out`; returns its summary.
fn train_builtin(input: &Path, labels: Option<&Path>, out: &Path) -> anyhow::Result<String> {
    let features = BUILTIN_FEATURES.join(",");
    let mut args = vec!["train", "--input", input.to_str().context("path")?];
    if let Some(labels) = labels {
        args.extend(["--labels", labels.to_str().context("path")?]);
    }
    args.extend([
        "--features",
        &features,
        "--floor-scale",
        BUILTIN_FLOOR_SCALE,
        "--min-threshold",
        BUILTIN_MIN_THRESHOLD,
        // As the scenarios judged it: spreads per mode need their own scenario run first.
        "--spread-per-mode=false",
        "--out",
        out.to_str().context("path")?,
    ]);
    model(&args)
}

fn write_lines<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(path, text)?;
    Ok(())
}

/// Per window of one scenario, as `model score` judged it.
struct Scored {
    /// Anomalous (after the model's threshold).
    flags: Vec<bool>,
    scores: Vec<f64>,
    thresholds: Vec<f64>,
    /// The features furthest from their cluster, with their z, furthest first.
    explanations: Vec<Vec<(String, f64)>>,
}

impl Scored {
    /// Window `i`'s verdict and what moved it, as the check prints it.
    fn detail(&self, i: usize) -> String {
        let mut detail = format!(
            "{} score {:.1} (threshold {:.1}):",
            if self.flags[i] { "degraded" } else { "healthy" },
            self.scores[i],
            self.thresholds[i]
        );
        for (feature, z) in &self.explanations[i] {
            let _ = write!(detail, " {feature} {z:+.1}");
        }
        detail
    }
}

fn score(model_file: &Path, recorded: &Recorded, work: &Path) -> anyhow::Result<Scored> {
    let input = work.join(format!("{}.jsonl", recorded.scenario.name));
    write_lines(&input, recorded.windows.iter().map(|w| w.line.as_str()))?;
    let output = model(&[
        "score",
        "--model",
        model_file.to_str().context("path")?,
        "--input",
        input.to_str().context("path")?,
        "--output",
        "json",
        // As the daemon judges the built-in model (and the leave-one-out models, of the same
        // signals): rises only, a latency without a sample left out.
        "--signals",
    ])?;
    let mut scored = Scored {
        flags: Vec::new(),
        scores: Vec::new(),
        thresholds: Vec::new(),
        explanations: Vec::new(),
    };
    for line in output.lines() {
        let row: Value = serde_json::from_str(line)?;
        scored.flags.push(row["state"] == "degraded");
        scored
            .scores
            .push(row["score"].as_f64().unwrap_or(f64::NAN));
        scored
            .thresholds
            .push(row["threshold"].as_f64().unwrap_or(f64::NAN));
        scored.explanations.push(
            row["explanation"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|feature| {
                    (
                        feature["feature"].as_str().unwrap_or("?").to_string(),
                        feature["z"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect(),
        );
    }
    if scored.flags.len() != recorded.windows.len() {
        bail!(
            "model score returned {} rows for {} windows",
            scored.flags.len(),
            recorded.windows.len()
        );
    }
    Ok(scored)
}

/// What the oracle would see for one scenario.
struct Verdict {
    /// "Yes"/"No" for the fault (or burst) period, and for the healthy period before it.
    during: &'static str,
    before: &'static str,
    /// Seconds from fault start to the end of the window that turned the node degraded.
    detect_s: Option<f64>,
    precision: f64,
    recall: f64,
    f1: f64,
    top: String,
}

fn yes(any: bool) -> &'static str {
    if any { "Yes" } else { "No" }
}

fn verdict(recorded: &Recorded, scored: &Scored, enter_after: u32, leave_after: u32) -> Verdict {
    let state = model::eval::debounce(&scored.flags, enter_after, leave_after);
    let truth = recorded.truth();
    // Any window overlapping the fault period: the daemon is asked while the fault runs.
    let during: Vec<usize> = (0..recorded.windows.len())
        .filter(|&i| {
            let w = &recorded.windows[i];
            w.end_s > recorded.start_s && w.start_s < recorded.end_s
        })
        .collect();
    let detected = during.iter().copied().find(|&i| state[i]);
    let before = recorded
        .windows
        .iter()
        .zip(&state)
        .any(|(w, &s)| s && w.end_s <= recorded.start_s);
    let model::eval::Scores {
        precision,
        recall,
        f1,
    } = model::eval::Scores::of(&scored.flags, &truth);
    // The explanation most often given for flagged windows during the fault, with the z of
    // the first window that gave it.
    let mut tops: Vec<(&(String, f64), usize)> = Vec::new();
    for &i in &during {
        let Some(top) = scored.explanations[i].first().filter(|_| scored.flags[i]) else {
            continue;
        };
        match tops.iter_mut().find(|(first, _)| first.0 == top.0) {
            Some(entry) => entry.1 += 1,
            None => tops.push((top, 1)),
        }
    }
    tops.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    Verdict {
        during: yes(detected.is_some()),
        before: yes(before),
        detect_s: detected.map(|i| (recorded.windows[i].end_s - recorded.start_s).max(0.0)),
        precision,
        recall,
        f1,
        top: tops
            .first()
            .map(|((feature, z), _)| format!("{feature} {z:+.1}"))
            .unwrap_or_else(|| "–".into()),
    }
}

/// The features of the built-in model: the signs of a fault, not the amount of work. A node
/// that serves twice the requests of our lab, on a disk of another speed, makes more syscalls,
/// context switches, opens, packets and I/Os, and the model must not call that degraded; but
/// on any node, pressure stalls, throttling, OOM kills, crashes, failed I/O, errno spikes,
/// drops and retransmits are what a fault looks like. The volumes stay in the windows, the
/// metrics and the learned baseline, which is fitted to its own node.
///
/// The same list is what the learned baseline judges by default, so it is defined once, there.
pub const BUILTIN_FEATURES: &[&str] = model::signals::JUDGED_FIELDS;

/// The built-in model's spread floors, times the defaults: five points of pressure, half a
/// log unit (a 65% change) of a rate or latency, 0.05 of a fraction. The lab is quieter than
/// the nodes the model is shipped to: with the lab's own floors, another 30% of a CPU of
/// unrelated work on a 2-CPU node (measured: pressure up 3 to 13 points) came close to a false
/// alarm; faults move their signals by far more (EVALUATION.md).
pub const BUILTIN_FLOOR_SCALE: &str = "5";

/// The built-in model's smallest threshold: three floors from normal (15 points of pressure
/// on their own). The lab's own spread, once its noisy features are left out, would put the
/// bar lower than any node's ordinary wobble; every fault in EVALUATION.md is further out.
pub const BUILTIN_MIN_THRESHOLD: &str = "3";

/// Returns the recordings it read, for EVALUATION.md's calibration section
/// ([`crate::calibration::section`]), which `cargo xtask evaluate` writes after it.
pub fn evaluate() -> anyhow::Result<Vec<Recorded>> {
    let dir = workspace_root().join("datasets");
    let mut recorded = Vec::new();
    let mut missing = Vec::new();
    for scenario in SCENARIOS {
        match load(&dir, scenario)? {
            Some(r) => recorded.push(r),
            None => missing.push(scenario.name),
        }
    }
    if recorded.is_empty() {
        bail!("no recorded scenarios in datasets/: run `cargo xtask scenarios` (as root) first");
    }
    let work = std::env::temp_dir().join(format!("nodestate-evaluate-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = evaluate_in(&dir, &work, &recorded, &missing);
    let _ = fs::remove_dir_all(&work);
    result.map(|()| recorded)
}

fn evaluate_in(
    dir: &Path,
    work: &Path,
    recorded: &[Recorded],
    missing: &[&str],
) -> anyhow::Result<()> {
    // 1. The healthy-only model: every run's windows before its fault or burst, no labels.
    let train = work.join("healthy.jsonl");
    write_lines(
        &train,
        recorded
            .iter()
            .flat_map(|r| r.before().map(|w| w.line.as_str())),
    )?;
    let healthy_windows = recorded.iter().map(|r| r.before().count()).sum::<usize>();
    let default_model = dir.join("default-model.json");
    let summary = train_builtin(&train, None, &default_model)?;
    let mut md = String::new();
    writeln!(
        md,
        "# Evaluation\n\n`cargo xtask evaluate` on the runs in `datasets/` (recorded with `cargo xtask \
         scenarios`, as root, on a 2-CPU VM; see datasets/README.md). Each run: a healthy period \
         under the same background workload (CPU, small random I/O with syncs, a 20 Mbit/s TCP \
         stream, a scraper, process churn), then the fault (or, in a no-fault run, a benign burst), \
         then recovery; {}-second windows.\n\n\
         Answers are graded like the benchmark's detection oracle: the daemon's node state (with \
         its default hysteresis: degraded after {ENTER_AFTER} anomalous windows, healthy again \
         after {LEAVE_AFTER} normal ones) read at any moment of the fault gives the answer for the \
         fault period; read at any moment of the healthy period before it, the answer for a \
         no-fault period. Time to detect: from fault start to the end of the window that turned \
         the node degraded. Point-wise precision/recall/F1 are per window, before hysteresis, \
         against windows at least half inside the fault.",
        scenario::WINDOW_S
    )?;
    if !missing.is_empty() {
        writeln!(md, "\nNot recorded (no dataset): {}.", missing.join(", "))?;
    }
    writeln!(
        md,
        "\n## Trained on healthy windows only (no labels)\n\n`model train` on the {healthy_windows} \
         windows before each run's fault or burst (this is `datasets/default-model.json`), \
         threshold from those windows alone; every run scored with it. Only the features that \
         are signs of a fault whatever the node's load (pressure, throttling, OOM kills, \
         crashes, I/O and syscall errors, latency tails, drops, retransmits; \
         `BUILTIN_FEATURES` in xtask/src/evaluate.rs): a node busier than the lab, or on a \
         slower disk, is not degraded for that. The volumes (syscalls, context switches, \
         I/Os, packets) are left to the learned baseline, which knows its own node. And spreads \
         no narrower than {BUILTIN_FLOOR_SCALE} times the defaults (`--floor-scale`): five \
         points of pressure, a 65% change of a latency, are within any node's normal; and a \
         threshold of at least {BUILTIN_MIN_THRESHOLD} of them (`--min-threshold`). Judged as \
         the daemon judges it (`model score --signals`): only a rise of a signal is evidence, \
         and a latency of 0 (no I/O or fsync sampled in the window) is left out of that \
         window's score, so a node quieter than the lab is not degraded for it.\n"
    )?;
    // `with_culprits`: also the daemon's culprits (recorded with the run, the same whichever
    // model this table scores with).
    let table = |md: &mut String,
                 verdicts: &[(&Recorded, Verdict)],
                 with_culprits: bool|
     -> anyhow::Result<()> {
        let (head, rule) = if with_culprits {
            (" culprit named first | service named |", "---|---|")
        } else {
            ("", "")
        };
        writeln!(
            md,
            "| scenario | kind | answer during fault/burst | answer before it | time to detect | precision | recall | F1 | top feature when flagged (z) |{head}\n|---|---|---|---|---|---|---|---|---|{rule}"
        )?;
        for (r, v) in verdicts {
            let fault = r.scenario.kind == Kind::Fault;
            let mark = |answer: &str, expected: &str| {
                if answer == expected {
                    answer.to_string()
                } else {
                    format!("**{answer}** ✗")
                }
            };
            write!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario.name,
                if fault { "fault" } else { "no fault" },
                mark(v.during, if fault { "Yes" } else { "No" }),
                mark(v.before, "No"),
                match (fault, v.detect_s) {
                    (true, Some(s)) =>
                        format!("{s:.1} s ({:.1} windows)", s / scenario::WINDOW_S as f64),
                    (true, None) => "not detected".into(),
                    (false, _) => "–".into(),
                },
                if fault {
                    format!("{:.2}", v.precision)
                } else {
                    "–".into()
                },
                if fault {
                    format!("{:.2}", v.recall)
                } else {
                    "–".into()
                },
                if fault {
                    format!("{:.2}", v.f1)
                } else {
                    "–".into()
                },
                v.top,
            )?;
            if with_culprits {
                let grade = r.culprit_grade();
                write!(
                    md,
                    " {} | {} |",
                    grade.first,
                    if r.judged.is_some() {
                        format!("{} of {}", grade.service_named, grade.degraded)
                    } else {
                        "–".into()
                    }
                )?;
            }
            writeln!(md)?;
        }
        let faults: Vec<_> = verdicts
            .iter()
            .filter(|(r, _)| r.scenario.kind == Kind::Fault)
            .collect();
        let detected = faults.iter().filter(|(_, v)| v.during == "Yes").count();
        let within = faults
            .iter()
            .filter(|(_, v)| {
                v.detect_s
                    .is_some_and(|s| s <= 2.0 * scenario::WINDOW_S as f64 + 0.5)
            })
            .count();
        let false_yes_runs = verdicts
            .iter()
            .filter(|(r, v)| r.scenario.kind == Kind::NoFault && v.during == "Yes")
            .count();
        let no_fault_runs = verdicts.len() - faults.len();
        let false_yes_periods = verdicts.iter().filter(|(_, v)| v.before == "Yes").count();
        writeln!(
            md,
            "\nFaults detected: **{detected} of {}** ({within} within 2 windows). False \"Yes\" on \
             no-fault runs: **{false_yes_runs} of {no_fault_runs}**; on the healthy periods before \
             a fault: **{false_yes_periods} of {}**.",
            faults.len(),
            verdicts.len()
        )?;
        if with_culprits {
            let grades: Vec<Grade> = faults.iter().map(|(r, _)| r.culprit_grade()).collect();
            let expected = grades
                .iter()
                .filter(|g| {
                    !matches!(
                        g.first,
                        culprits::First::NoCulprit | culprits::First::NotRecorded
                    )
                })
                .count();
            let named = grades
                .iter()
                .filter(|g| g.first == culprits::First::Yes)
                .count();
            let service: usize = grades.iter().map(|g| g.service_named).sum();
            let degraded: usize = grades.iter().map(|g| g.degraded).sum();
            writeln!(
                md,
                "Culprit named first: **{named} of {expected}** faults with a culprit workload \
                 (and a culprits file). The service (the healthy neighbour) named as a culprit in \
                 **{service} of {degraded}** degraded windows during faults."
            )?;
        }
        Ok(())
    };
    let mut verdicts = Vec::new();
    let mut scores = Vec::new();
    for r in recorded {
        let scored = score(&default_model, r, work)?;
        verdicts.push((r, verdict(r, &scored, ENTER_AFTER, LEAVE_AFTER)));
        scores.push(scored);
    }
    table(&mut md, &verdicts, true)?;
    writeln!(
        md,
        "\n**Culprit named first** is the daemon's, not a replay: while each run recorded, the \
         daemon as shipped (`collector run --model builtin --window {}s`) ran beside the \
         recorder, and its `/state` was read once per window (`datasets/NAME.culprits.jsonl.gz`: \
         verdict, culprits, victims). Each fault whose cause is a workload on the node runs in \
         a cgroup of its own, beside the service's (`{}`); the daemon names a cgroup outside \
         Kubernetes, containers and systemd by its path. The rule: among the daemon's degraded \
         windows at least half inside the fault, the first that names any culprit must name the \
         fault's cgroup first (a degraded window naming no one is passed over). `—`: no \
         workload on the node causes the fault (network faults come from outside the node, \
         slow-disk is the device's, disk-throttling is a cap put on the service, which the \
         ranking lists as a victim by its I/O wait, not as a culprit). **Service named**: of \
         those degraded windows, how many named the service among \
         their culprits.",
        scenario::WINDOW_S,
        scenario::lab::workload_name(scenario::lab::SERVICE_CGROUP),
    )?;
    writeln!(
        md,
        "\nThe model (`model train --features {} --floor-scale {BUILTIN_FLOOR_SCALE} \
         --min-threshold {BUILTIN_MIN_THRESHOLD}` summary):\n\n```\n{}```",
        BUILTIN_FEATURES.join(","),
        // The file's path relative to the workspace: EVALUATION.md names no machine's paths.
        summary.replace(&format!("{}/", workspace_root().display()), "")
    )?;

    // Hysteresis: what other settings would have answered.
    writeln!(
        md,
        "\n### Hysteresis settings\n\n| enter after | leave after | faults detected | false Yes (no-fault runs + healthy periods) | mean time to detect |\n|---|---|---|---|---|"
    )?;
    for enter in 1..=3 {
        for leave in [1, 3] {
            let vs: Vec<Verdict> = recorded
                .iter()
                .zip(&scores)
                .map(|(r, s)| verdict(r, s, enter, leave))
                .collect();
            let faults: Vec<&Verdict> = recorded
                .iter()
                .zip(&vs)
                .filter(|(r, _)| r.scenario.kind == Kind::Fault)
                .map(|(_, v)| v)
                .collect();
            let detected: Vec<f64> = faults.iter().filter_map(|v| v.detect_s).collect();
            let false_yes = recorded
                .iter()
                .zip(&vs)
                .filter(|(r, v)| r.scenario.kind == Kind::NoFault && v.during == "Yes")
                .count()
                + vs.iter().filter(|v| v.before == "Yes").count();
            writeln!(
                md,
                "| {enter} | {leave} | {} of {} | {false_yes} | {} |",
                detected.len(),
                faults.len(),
                if detected.is_empty() {
                    "–".into()
                } else {
                    format!(
                        "{:.1} s",
                        detected.iter().sum::<f64>() / detected.len() as f64
                    )
                }
            )?;
        }
    }

    // 2. Leave one scenario out, with labels.
    writeln!(
        md,
        "\n## Leave one scenario out, with labels\n\nFor each run: `model train --labels` on every \
         other run's windows (labelled by their fault periods, so clusters of fault windows are \
         degraded), then that run scored with it; the same features as the built-in model.\n"
    )?;
    let mut loso = Vec::new();
    for (held_out, r) in recorded.iter().enumerate() {
        let input = work.join("loso.jsonl");
        let labels = work.join("loso-labels.csv");
        let others = || {
            recorded
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != held_out)
                .map(|(_, o)| o)
        };
        write_lines(
            &input,
            others().flat_map(|o| o.windows.iter().map(|w| w.line.as_str())),
        )?;
        let mut label_text = String::from("label\n");
        for o in others() {
            for fault in o.truth() {
                label_text.push_str(if fault { "1\n" } else { "0\n" });
            }
        }
        fs::write(&labels, label_text)?;
        let model_file = work.join("loso-model.json");
        train_builtin(&input, Some(&labels), &model_file)?;
        let scored = score(&model_file, r, work)?;
        loso.push((r, verdict(r, &scored, ENTER_AFTER, LEAVE_AFTER)));
    }
    table(&mut md, &loso, false)?;
    writeln!(
        md,
        "\nReproduce: `cargo xtask scenarios` (as root, ~20 min; rewrites datasets/), then \
         `cargo xtask evaluate`."
    )?;
    let path: PathBuf = workspace_root().join("EVALUATION.md");
    fs::write(&path, md)?;
    write_datasets_table(dir, recorded)?;
    println!("evaluate: wrote EVALUATION.md and datasets/default-model.json");
    Ok(())
}

/// The scenario table of datasets/README.md, between its markers.
fn write_datasets_table(dir: &Path, recorded: &[Recorded]) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- scenarios -->";
    const END: &str = "<!-- /scenarios -->";
    let readme = dir.join("README.md");
    let text = fs::read_to_string(&readme)?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} lacks the {BEGIN} … {END} markers", readme.display());
    };
    let mut table = String::from(
        "\n| scenario | kind | what happens (fault or burst) | fields it should move | culprit workload | windows |\n|---|---|---|---|---|---|\n",
    );
    for r in recorded {
        writeln!(
            table,
            "| `{}` | {} | {} | {} | {} | {} |",
            r.scenario.name,
            if r.scenario.kind == Kind::Fault {
                "fault"
            } else {
                "no fault"
            },
            r.scenario.what,
            r.scenario.moves,
            // No workload on the node causes it: the network faults come from outside, slow
            // disk is the device's, disk-throttling a cap on the service.
            r.scenario
                .expected_culprit()
                .map(|name| format!("`{name}`"))
                .unwrap_or_else(|| "—".into()),
            r.windows.len()
        )?;
    }
    let updated = format!("{}{BEGIN}{table}{}", &text[..begin], &text[end..]);
    fs::write(&readme, updated)?;
    Ok(())
}
