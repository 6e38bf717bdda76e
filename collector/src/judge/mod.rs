//! Turning each window into the node's health: the model (a file, or the baseline this node
//! learns by itself), then hysteresis. The daemon calls [`Assessor::judge`] once per window.

pub mod culprits;
pub mod saved;

use std::path::PathBuf;

use model::{BaselineLearner, BaselineOptions, HealthState, Hysteresis, Model, input::Selected};
use tracing::{info, warn};

use crate::window::record::WindowRecord;

/// What the model in use is: the judge's own description of it, which the exporter shows as
/// `nodestate_model_info`.
#[derive(Debug, Clone, serde::Serialize, Default, PartialEq)]
pub struct ModelInfo {
    /// "baseline" (learned on this node) or "file".
    pub source: String,
    pub version: String,
    pub trained_at: String,
    pub k: usize,
    /// A learned baseline's: how much it has seen (windows, hours, trainings, the floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<model::baseline::BaselineStatus>,
    /// With `--baseline-state`: the file the learned baseline is kept in across restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_baseline: Option<saved::SavedBaselineInfo>,
}

/// How the daemon judges windows.
#[derive(Debug, Clone)]
pub struct AssessorOptions {
    /// A trained model file; `None` learns this node's baseline.
    pub model_file: Option<PathBuf>,
    pub baseline: BaselineOptions,
    /// Without a model file: learn and judge only the fields matching one of these patterns
    /// (`*` matches any run of characters); empty: the saturation, error and latency signals
    /// ([`model::signals::JUDGED_FIELDS`]), `*`: every field.
    pub baseline_fields: Vec<String>,
    /// Without a model file: keep the learned baseline in this file across restarts (see
    /// [`saved`]).
    pub baseline_state: Option<PathBuf>,
    pub enter_after: u32,
    pub leave_after: u32,
}

pub use model::features::name_matches as field_matches;

enum Judge {
    File { path: PathBuf, model: Box<Model> },
    // Both boxed: a model and a learner are hundreds of bytes; the enum stays small.
    Baseline(Box<BaselineLearner>),
}

/// The node's state after hysteresis, as the judge hands it to the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// No model yet: the node is still learning its baseline.
    #[default]
    Learning,
    Healthy,
    Degraded,
}

impl NodeState {
    /// Every state, in the order the exporter lists them.
    pub const ALL: [NodeState; 3] = [NodeState::Healthy, NodeState::Degraded, NodeState::Learning];

    /// The name the metrics, `/state` and the tools use.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Learning => "learning",
            NodeState::Healthy => "healthy",
            NodeState::Degraded => "degraded",
        }
    }
}

impl From<HealthState> for NodeState {
    fn from(state: HealthState) -> Self {
        match state {
            HealthState::Healthy => NodeState::Healthy,
            HealthState::Degraded => NodeState::Degraded,
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So a state compares with its name (`state == "healthy"`), as the tools read it.
impl PartialEq<&str> for NodeState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One window's verdict, ready for the exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// After hysteresis.
    pub state: NodeState,
    pub score: f64,
    pub threshold: f64,
    pub cluster: Option<usize>,
    pub explanation: Vec<(String, f64)>,
    /// This window alone was anomalous (before hysteresis).
    pub anomalous: bool,
}

pub struct Assessor {
    judge: Judge,
    hysteresis: Hysteresis,
    baseline_fields: Vec<String>,
    /// Why the last window was not judged: the same reason is logged once, not per window.
    last_refusal: Option<String>,
    saver: Option<saved::BaselineSaver>,
    /// A restored baseline dropped at the first window (its fields were not the window's)
    /// was logged.
    drop_logged: bool,
}

/// Refuses a model that wants features this collector does not produce.
fn check_model(model: &Model, path: &std::path::Path) -> anyhow::Result<()> {
    let produced: std::collections::HashSet<&str> = WindowRecord::feature_names().collect();
    let missing: Vec<&str> = model
        .features
        .iter()
        .filter(|feature| !produced.contains(feature.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "{}: the model expects features this collector does not produce: {} (train it on \
             windows from `collector record`)",
            path.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// `--model builtin`: the model `cargo xtask evaluate` trained on the recorded scenarios'
/// healthy windows (datasets/), compiled into the daemon.
pub const BUILTIN_MODEL: &str = "builtin";
/// The window length the builtin model's training windows had.
pub const BUILTIN_MODEL_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
const BUILTIN_MODEL_JSON: &[u8] = include_bytes!("../../../datasets/default-model.json");

fn is_builtin(path: &std::path::Path) -> bool {
    path.as_os_str() == BUILTIN_MODEL
}

fn load_model(path: &std::path::Path) -> anyhow::Result<Model> {
    let model = if is_builtin(path) {
        let mut model = Model::from_bytes(
            BUILTIN_MODEL_JSON,
            std::path::Path::new("builtin model (datasets/default-model.json)"),
        )?;
        // A model of saturation, error and latency signals, judged as such: on a node
        // quieter than the lab (no fsync at all) it judged nearly every window degraded.
        model.judge_signals();
        model
    } else {
        Model::load(path)?
    };
    check_model(&model, path)?;
    Ok(model)
}

impl Assessor {
    pub fn new(options: &AssessorOptions) -> anyhow::Result<Self> {
        let mut saver_started = None;
        let judge = match &options.model_file {
            Some(path) => {
                let model = load_model(path)?;
                info!(model = %path.display(), features = model.features.len(), k = model.centroids.len(), "model loaded");
                Judge::File {
                    path: path.clone(),
                    model: Box::new(model),
                }
            }
            None => {
                for pattern in &options.baseline_fields {
                    if !WindowRecord::feature_names().any(|field| field_matches(pattern, field)) {
                        anyhow::bail!(
                            "--baseline-fields: `{pattern}` matches no window field (they are \
                             the numeric fields of `collector record` output, e.g. \
                             net_rx_packets_per_s)"
                        );
                    }
                }
                info!(
                    windows = options.baseline.learn_windows,
                    fields = %if options.baseline_fields.is_empty() {
                        "saturation, error and latency signals".to_string()
                    } else {
                        options.baseline_fields.join(",")
                    },
                    "no model file: judging with this node's own baseline (learned here first, \
                     or restored with --baseline-state)"
                );
                match &options.baseline_state {
                    Some(path) => {
                        let (learner, saver) = saved::BaselineSaver::start(path, &options.baseline);
                        saver_started = Some(saver);
                        Judge::Baseline(Box::new(learner))
                    }
                    None => {
                        Judge::Baseline(Box::new(BaselineLearner::new(options.baseline.clone())))
                    }
                }
            }
        };
        Ok(Self {
            judge,
            hysteresis: Hysteresis::new(options.enter_after, options.leave_after),
            baseline_fields: if options.baseline_fields.is_empty() {
                model::signals::JUDGED_FIELDS
                    .iter()
                    .map(|field| field.to_string())
                    .collect()
            } else {
                options.baseline_fields.clone()
            },
            last_refusal: None,
            saver: saver_started,
            drop_logged: false,
        })
    }

    /// At a clean exit: a learned baseline kept in a file is saved as it is now.
    pub fn finish(self) {
        if let (Judge::Baseline(learner), Some(saver)) = (&self.judge, self.saver) {
            saver.finish(learner);
        }
    }

    /// What model is in use, once there is one.
    pub fn model_info(&self) -> Option<ModelInfo> {
        let (source, model) = match &self.judge {
            Judge::File { path, model } if is_builtin(path) => ("builtin", model.as_ref()),
            Judge::File { model, .. } => ("file", model.as_ref()),
            Judge::Baseline(learner) => ("baseline", learner.model()?),
        };
        Some(ModelInfo {
            source: source.into(),
            version: model.version.to_string(),
            trained_at: model.trained_at.clone(),
            k: model.centroids.len(),
            baseline: match &self.judge {
                Judge::Baseline(learner) => Some(learner.status()),
                Judge::File { .. } => None,
            },
            saved_baseline: self.saver.as_ref().map(saved::BaselineSaver::info),
        })
    }

    /// SIGHUP: reload the model file; a bad file is refused and the old model kept. Returns
    /// false when the file was refused (the daemon counts it).
    pub fn reload(&mut self) -> bool {
        let Judge::File { path, model } = &mut self.judge else {
            info!("SIGHUP: no model file to reload (learning the baseline)");
            return true;
        };
        match load_model(path) {
            Ok(new) => {
                **model = new;
                info!(model = %path.display(), "SIGHUP: model reloaded");
                true
            }
            Err(err) => {
                warn!("SIGHUP: keeping the old model, the new file is refused: {err:#}");
                false
            }
        }
    }

    pub fn judge(&mut self, record: &WindowRecord) -> Verdict {
        // The model reads the record's fields directly. A partial window's missing fields
        // (null in the JSON Lines) are left out of the score and never learned from; never
        // read as 0.
        let assessment = match &mut self.judge {
            Judge::File { model, .. } => model.score(record).map(Some),
            // The record seen through `--baseline-fields`: the fields no pattern matches are
            // absent.
            Judge::Baseline(learner) => learner.observe_partial(
                Selected::new(record, &self.baseline_fields),
                &record.missing,
            ),
        };
        if let (Judge::Baseline(learner), Some(saver)) = (&self.judge, self.saver.as_mut()) {
            saver.after_window(learner);
        }
        if let Judge::Baseline(learner) = &self.judge
            && let Some(reason) = learner.restore_dropped()
            && !self.drop_logged
        {
            warn!("{reason}");
            self.drop_logged = true;
        }
        let assessment = match assessment {
            Ok(Some(assessment)) => assessment,
            Ok(None) => {
                return Verdict {
                    state: NodeState::Learning,
                    score: 0.0,
                    threshold: 0.0,
                    cluster: None,
                    explanation: Vec::new(),
                    anomalous: false,
                };
            }
            Err(err) => {
                let reason = err.to_string();
                if self.last_refusal.as_deref() != Some(reason.as_str()) {
                    warn!("window not judged: {reason} (logged again only if the reason changes)");
                    self.last_refusal = Some(reason);
                }
                return Verdict {
                    state: self.hysteresis.state().into(),
                    score: 0.0,
                    threshold: 0.0,
                    cluster: None,
                    explanation: Vec::new(),
                    anomalous: false,
                };
            }
        };
        self.last_refusal = None;
        let anomalous = assessment.state == HealthState::Degraded;
        let state = self.hysteresis.update(anomalous);
        Verdict {
            state: state.into(),
            score: assessment.score,
            threshold: assessment.threshold,
            cluster: Some(assessment.cluster),
            explanation: assessment
                .explanation
                .into_iter()
                .map(|c| (c.feature, c.z))
                .collect(),
            anomalous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model compiled into the daemon must load and expect only features this collector
    /// produces (datasets/default-model.json is regenerated by `cargo xtask evaluate`).
    #[test]
    fn builtin_model_loads() {
        let assessor = Assessor::new(&AssessorOptions {
            model_file: Some(PathBuf::from(BUILTIN_MODEL)),
            baseline: BaselineOptions::default(),
            baseline_fields: Vec::new(),
            baseline_state: None,
            enter_after: 2,
            leave_after: 3,
        })
        .expect("the builtin model loads");
        assert_eq!(assessor.model_info().expect("a model").source, "builtin");
    }

    /// The built-in model's lab always fsynced: judged both ways, a node with no fsync and
    /// no pressure at all was degraded in nearly every window (soak 6: 806 of 840). Judged as
    /// signals (rises only, a latency without a sample left out), an idle node is healthy and
    /// a stall is still a fault.
    #[test]
    fn the_builtin_model_finds_an_idle_node_healthy_and_a_stall_degraded() {
        let mut assessor = Assessor::new(&AssessorOptions {
            model_file: Some(PathBuf::from(BUILTIN_MODEL)),
            baseline: BaselineOptions::default(),
            baseline_fields: Vec::new(),
            baseline_state: None,
            enter_after: 1,
            leave_after: 1,
        })
        .unwrap();
        let mut idle = WindowRecord::empty();
        for psi in [
            &mut idle.psi_cpu_some_pct,
            &mut idle.psi_io_some_pct,
            &mut idle.psi_io_full_pct,
            &mut idle.psi_memory_some_pct,
            &mut idle.psi_memory_full_pct,
        ] {
            *psi = Some(0.0);
        }
        let verdict = assessor.judge(&idle);
        assert_eq!(verdict.state, "healthy", "{verdict:?}");
        let mut stall = idle.clone();
        stall.psi_io_some_pct = Some(80.0);
        stall.psi_io_full_pct = Some(60.0);
        let verdict = assessor.judge(&stall);
        assert_eq!(verdict.state, "degraded", "{verdict:?}");
    }

    #[test]
    fn a_partial_window_is_judged_without_its_missing_fields_and_not_learned_from() {
        let options = AssessorOptions {
            model_file: None,
            baseline: BaselineOptions {
                learn_windows: 10,
                ..BaselineOptions::default()
            },
            // Context switches are a volume, judged only when asked for.
            baseline_fields: vec!["*".into()],
            baseline_state: None,
            enter_after: 1,
            leave_after: 1,
        };
        let mut assessor = Assessor::new(&options).unwrap();
        let mut record = WindowRecord::empty();
        for n in 0..12 {
            record.system.sched_context_switches_per_s = Some(1000.0 + f64::from(n % 3) * 10.0);
            record.psi_cpu_some_pct = Some(20.0 + f64::from(n % 2));
            assessor.judge(&record);
        }
        // The reads of /proc/stat and PSI failed: those fields are missing (null).
        let mut partial = record.clone();
        partial.system.sched_context_switches_per_s = None;
        partial.psi_cpu_some_pct = None;
        partial.missing = vec![
            "psi_cpu_some_pct".to_string(),
            "sched_context_switches_per_s".to_string(),
        ];
        partial.partial = true;
        let verdict = assessor.judge(&partial);
        assert_eq!(verdict.state, "healthy", "{verdict:?}");
        assert!(
            verdict.cluster.is_some(),
            "judged, not learning: {verdict:?}"
        );
        // The old way, zeros for the failed reads, looked like a fault.
        let mut zeros = record.clone();
        zeros.system.sched_context_switches_per_s = Some(0.0);
        zeros.psi_cpu_some_pct = Some(0.0);
        assert!(assessor.judge(&zeros).anomalous);
    }

    #[test]
    fn by_default_the_baseline_judges_signals_and_not_volumes() {
        let options = AssessorOptions {
            model_file: None,
            baseline: BaselineOptions {
                learn_windows: 10,
                ..BaselineOptions::default()
            },
            baseline_fields: Vec::new(),
            baseline_state: None,
            enter_after: 1,
            leave_after: 1,
        };
        let mut assessor = Assessor::new(&options).unwrap();
        let mut record = WindowRecord::empty();
        for n in 0..12 {
            record.block_flush_ops_per_s = f64::from(n % 2);
            record.psi_io_some_pct = Some(f64::from(n % 2));
            assessor.judge(&record);
        }
        // A new `dd oflag=dsync` writer: hundreds of flushes a second, and no pressure.
        record.block_flush_ops_per_s = 400.0;
        let verdict = assessor.judge(&record);
        assert_eq!(verdict.state, "healthy", "{verdict:?}");
        assert!(
            verdict
                .explanation
                .iter()
                .all(|(feature, _)| feature != "block_flush_ops_per_s"),
            "{verdict:?}"
        );
        // Stalled I/O is judged.
        record.psi_io_some_pct = Some(60.0);
        let verdict = assessor.judge(&record);
        assert_eq!(verdict.state, "degraded", "{verdict:?}");
        assert_eq!(verdict.explanation[0].0, "psi_io_some_pct");
        let status = assessor
            .model_info()
            .and_then(|info| info.baseline)
            .expect("a baseline's status");
        assert_eq!(status.windows_seen, 14, "{status:?}");
        assert!(status.floor_applies, "{status:?}");
    }

    #[test]
    fn field_patterns_match_whole_names() {
        for (pattern, name, matches) in [
            ("net_*", "net_rx_packets_per_s", true),
            ("net_*", "tcp_resets_per_s", false),
            ("*_per_s", "net_rx_packets_per_s", true),
            ("net_*_per_s", "net_drops_per_s", true),
            ("net_*_per_s", "net_drops", false),
            ("net_rx_packets_per_s", "net_rx_packets_per_s", true),
            ("net_rx", "net_rx_packets_per_s", false),
            ("*", "anything", true),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-c-b", false),
        ] {
            assert_eq!(field_matches(pattern, name), matches, "{pattern} vs {name}");
        }
    }

    #[test]
    fn a_field_pattern_matching_nothing_is_refused() {
        let options = AssessorOptions {
            model_file: None,
            baseline: BaselineOptions::default(),
            baseline_fields: vec!["net_*".into(), "nte_*".into()],
            baseline_state: None,
            enter_after: 1,
            leave_after: 1,
        };
        let err = Assessor::new(&options).err().expect("refused").to_string();
        assert!(err.contains("`nte_*` matches no window field"), "{err}");
    }

    #[test]
    fn a_baseline_limited_to_fields_never_sees_the_others() {
        let options = AssessorOptions {
            model_file: None,
            baseline: BaselineOptions {
                learn_windows: 10,
                ..BaselineOptions::default()
            },
            baseline_fields: vec!["net_*".into()],
            baseline_state: None,
            enter_after: 1,
            leave_after: 1,
        };
        let mut assessor = Assessor::new(&options).unwrap();
        let mut record = WindowRecord::empty();
        for n in 0..12 {
            record.system.net_rx_packets_per_s = 100.0 + f64::from(n % 3);
            record.psi_cpu_some_pct = Some(f64::from(n % 2));
            assessor.judge(&record);
        }
        // Off the scale on an ignored field: still healthy; on a kept one: not.
        record.psi_cpu_some_pct = Some(95.0);
        let verdict = assessor.judge(&record);
        assert_eq!(verdict.state, "healthy", "{verdict:?}");
        record.system.net_rx_packets_per_s = 100_000.0;
        let verdict = assessor.judge(&record);
        assert_eq!(verdict.state, "degraded", "{verdict:?}");
        assert_eq!(verdict.explanation[0].0, "net_rx_packets_per_s");
        assert!(
            verdict
                .explanation
                .iter()
                .all(|(feature, _)| feature.starts_with("net_")),
            "{verdict:?}"
        );
    }
}
