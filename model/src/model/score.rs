//! Scoring: a window's distance to the nearest healthy centroid, its state and the features
//! that explain it, with missing values left out rather than read as 0.

use super::{
    Assessment, Contribution, EXPLANATION_LENGTH, HealthState, Model, distance::nearest_of,
};
use crate::{
    error::{ModelError, Result},
    features::positions_in,
    input::{Table, WindowFields},
};

impl Model {
    /// Judges one window: anything with named fields ([`WindowFields`]: the collector's
    /// window record, a JSON record, a `BTreeMap<String, f64>`, a `[(String, f64)]`). With
    /// [`Model::score_table`] (many rows), the one way to score.
    ///
    /// Every field of [`Model::required_fields`] must be there: an absent one is an error,
    /// never a silent 0, which would read as an idle (or a broken) node; so is a value that is
    /// not finite. A field the window marks missing ([`WindowFields::is_missing`]: a read the
    /// collector could not make, `null` in a JSON record) is left out: every feature computed
    /// from it is left out of the score, the distances and the explanation, never read as 0.
    /// Distances over fewer features are never larger, so the threshold calibrated on whole
    /// windows stays a conservative bound. A window in which every feature is missing is an
    /// error.
    pub fn score(&self, window: &impl WindowFields) -> Result<Assessment> {
        let (inputs, mut missing) = self.gather(window)?;
        self.leave_out_unsampled(&inputs, &mut missing);
        self.score_partial_checked(&inputs, &missing)
    }

    /// A window's feature vector, standardized, in [`Model::feature_names`] order (what the
    /// score is computed from; for export or debugging). A missing value is an error here.
    pub fn feature_vector(&self, window: &impl WindowFields) -> Result<Vec<f64>> {
        let (inputs, missing) = self.gather(window)?;
        self.check_missing(&missing)?;
        Ok(self.standardize(&inputs))
    }

    /// The window's raw inputs in [`Model::required_fields`] order (0 in a missing value's
    /// slot) and the positions of its missing values. An absent field, or a value that is not
    /// finite, is an error.
    fn gather(&self, window: &impl WindowFields) -> Result<(Vec<f64>, Vec<usize>)> {
        let names = &self.prepared.schema.inputs;
        let mut inputs = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        let mut absent = Vec::new();
        for (index, name) in names.iter().enumerate() {
            match window.field(name) {
                Some(value) if value.is_finite() => inputs.push(value),
                Some(value) => {
                    return Err(ModelError::InvalidRecord(format!(
                        "field `{name}` is {value}, not finite"
                    )));
                }
                None => {
                    if window.is_missing(name) {
                        missing.push(index);
                    } else {
                        absent.push(index);
                    }
                    inputs.push(0.0);
                }
            }
        }
        self.check_missing(&absent)?;
        Ok((inputs, missing))
    }

    fn standardize(&self, inputs: &[f64]) -> Vec<f64> {
        let mut x = vec![0.0; self.scaler.mean.len()];
        self.prepared.schema.extract(inputs, &mut x);
        for ((value, mean), inverse_std) in x
            .iter_mut()
            .zip(&self.scaler.mean)
            .zip(&self.prepared.inverse_std)
        {
            *value = (*value - mean) * inverse_std;
        }
        x
    }

    /// Judges raw inputs in [`Model::required_fields`] order, those at positions `missing`
    /// being missing values, left out as in [`Model::score`] (their slots in `inputs` are
    /// ignored). The baseline learner's way in: it gathers fields itself.
    pub(crate) fn score_inputs_partial(
        &self,
        inputs: &[f64],
        missing: &[usize],
    ) -> Result<Assessment> {
        let expected = self.prepared.schema.inputs.len();
        if inputs.len() != expected {
            return Err(ModelError::InvalidRecord(format!(
                "{} values given, the model needs {expected}",
                inputs.len()
            )));
        }
        if let Some(index) =
            (0..inputs.len()).find(|index| !missing.contains(index) && !inputs[*index].is_finite())
        {
            return Err(ModelError::InvalidRecord(format!(
                "field `{}` is {}, not finite",
                self.prepared.schema.inputs[index], inputs[index]
            )));
        }
        self.score_partial_checked(inputs, missing)
    }

    fn score_partial_checked(&self, inputs: &[f64], missing: &[usize]) -> Result<Assessment> {
        if missing.is_empty() {
            return Ok(self.score_checked(inputs));
        }
        // Placeholders in the missing slots, so no NaN reaches a masked feature's transform.
        let mut filled = inputs.to_vec();
        for &index in missing {
            filled[index] = 0.0;
        }
        let left_out = self.prepared.schema.features_missing(missing);
        if left_out.iter().all(|&out| out) {
            return Err(ModelError::InvalidRecord(
                "every feature the model uses is missing in this window".into(),
            ));
        }
        Ok(self.assess_masked(&self.standardize(&filled), &left_out))
    }

    /// [`Model::assess_scaled`] over the features not `left_out`.
    fn assess_masked(&self, x: &[f64], left_out: &[bool]) -> Assessment {
        let distance = |centroid: &[f64]| -> f64 {
            x.iter()
                .zip(centroid)
                .zip(left_out)
                .filter(|(_, out)| !**out)
                .map(|((value, center), _)| (value - center) * (value - center))
                .sum::<f64>()
        };
        // To healthy: in each cluster's own spread, as whole windows are scored.
        let mode_distance = |c: usize| -> f64 {
            x.iter()
                .enumerate()
                .filter(|(index, _)| !left_out[*index])
                .map(|(index, value)| self.mode_z(c, index, *value).powi(2))
                .sum::<f64>()
        };
        let mut healthy = (self.prepared.healthy[0], f64::INFINITY);
        for &c in &self.prepared.healthy {
            let d = mode_distance(c);
            if d < healthy.1 {
                healthy = (c, d);
            }
        }
        let score = healthy.1.sqrt();
        let mut cluster = (0, f64::INFINITY);
        for (c, candidate) in self.clusters.iter().enumerate() {
            let d = distance(&candidate.centroid);
            if d < cluster.1 {
                cluster = (c, d);
            }
        }
        let mut contributions: Vec<(usize, f64)> = x
            .iter()
            .enumerate()
            .filter(|(index, _)| !left_out[*index])
            .map(|(index, value)| (index, self.mode_z(healthy.0, index, *value)))
            .collect();
        contributions.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        self.assessment(
            score,
            cluster.0,
            contributions.into_iter().take(EXPLANATION_LENGTH),
        )
    }

    fn check_missing(&self, missing: &[usize]) -> Result<()> {
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing
            .iter()
            .map(|&i| self.prepared.schema.inputs[i].as_str())
            .collect();
        Err(ModelError::InvalidRecord(format!(
            "missing or non-numeric field(s) the model needs: {}",
            names.join(", ")
        )))
    }

    /// Scores inputs known to be complete and finite.
    fn score_checked(&self, inputs: &[f64]) -> Assessment {
        self.assess_scaled(&self.standardize(inputs))
    }

    fn assess_scaled(&self, x: &[f64]) -> Assessment {
        let (healthy, score) = self.nearest_healthy(x);
        let (cluster, _) = nearest_of(&self.clusters, x);
        // Top |z| by a small insertion sort: no allocation beyond the three names.
        let mut top: [(usize, f64); EXPLANATION_LENGTH] = [(usize::MAX, 0.0); EXPLANATION_LENGTH];
        for (index, value) in x.iter().enumerate() {
            let z = self.mode_z(healthy, index, *value);
            if top[EXPLANATION_LENGTH - 1].0 != usize::MAX
                && z.abs() <= top[EXPLANATION_LENGTH - 1].1.abs()
            {
                continue;
            }
            let mut slot = EXPLANATION_LENGTH - 1;
            top[slot] = (index, z);
            while slot > 0 && (top[slot - 1].0 == usize::MAX || z.abs() > top[slot - 1].1.abs()) {
                top.swap(slot, slot - 1);
                slot -= 1;
            }
        }
        let explanation = top.into_iter().filter(|(index, _)| *index != usize::MAX);
        self.assessment(score, cluster, explanation)
    }

    /// The one verdict rule for whole and masked windows alike: degraded past the threshold,
    /// or nearest a cluster labelled degraded. `explanation` is the (feature index, z) pairs
    /// to name, largest |z| first, already cut to [`EXPLANATION_LENGTH`].
    fn assessment(
        &self,
        score: f64,
        cluster: usize,
        explanation: impl Iterator<Item = (usize, f64)>,
    ) -> Assessment {
        let anomalous =
            score > self.threshold.value || self.clusters[cluster].state == HealthState::Degraded;
        Assessment {
            score,
            threshold: self.threshold.value,
            cluster,
            state: if anomalous {
                HealthState::Degraded
            } else {
                HealthState::Healthy
            },
            explanation: explanation
                .map(|(index, z)| Contribution {
                    feature: self.schema.features[index].name.clone(),
                    z,
                })
                .collect(),
        }
    }

    /// Scores every row of a table read from a file. A model whose fields the file lacks is a
    /// [`ModelError::FeatureMismatch`] naming the file.
    pub fn score_table(&self, table: &Table) -> Result<Vec<Assessment>> {
        let missing = self.missing_fields(&table.columns);
        if !missing.is_empty() {
            return Err(ModelError::FeatureMismatch {
                path: table.path().to_path_buf(),
                line: 1,
                missing: missing.into_iter().map(str::to_string).collect(),
            });
        }
        let positions = positions_in(&table.columns, self.required_fields());
        let mut inputs = vec![0.0; positions.len()];
        let mut unsampled = Vec::new();
        (0..table.len())
            .map(|row| {
                let values = table.row(row);
                for (slot, &position) in inputs.iter_mut().zip(&positions) {
                    *slot = values[position];
                }
                unsampled.clear();
                self.leave_out_unsampled(&inputs, &mut unsampled);
                // With nothing left out this is `score_checked`.
                self.score_partial_checked(&inputs, &unsampled)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{input::Row, model::TrainOptions};
    use std::collections::BTreeMap;

    /// A model trained on `windows` windows, the `i`-th with the fields `values(i)`.
    fn trained_on(
        windows: u32,
        values: impl Fn(u32) -> Vec<(&'static str, f64)>,
        options: &TrainOptions,
    ) -> Model {
        let rows: Vec<Row> = (0..windows)
            .map(|i| Row {
                values: values(i)
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
                line: i as usize + 1,
                ..Row::default()
            })
            .collect();
        Model::train(&rows, options).expect("trains")
    }

    /// A model of a steady node: ~1000 context switches/s, ~20 % CPU pressure.
    fn steady_model() -> Model {
        trained_on(
            200,
            |i| {
                vec![
                    (
                        "sched_context_switches_per_s",
                        1000.0 + f64::from(i % 7) * 10.0,
                    ),
                    ("psi_cpu_some_pct", 20.0 + f64::from(i % 5)),
                ]
            },
            &TrainOptions {
                k: 1,
                ..TrainOptions::default()
            },
        )
    }

    #[test]
    fn a_missing_value_is_left_out_of_the_score_not_read_as_zero() {
        let model = steady_model();
        // A missing value is a `null` (as the daemon writes one), or a field the collector's
        // record marks missing: both reach the model through `WindowFields::is_missing`.
        let window = |cs: f64| serde_json::json!({"sched_context_switches_per_s": cs, "psi_cpu_some_pct": null});
        // Read as 0 % (what a failed read used to give), a steady node looks degraded.
        let mut as_zero = BTreeMap::from([("sched_context_switches_per_s".to_string(), 1020.0)]);
        as_zero.insert("psi_cpu_some_pct".into(), 0.0);
        assert_eq!(model.score(&as_zero).unwrap().state, HealthState::Degraded);
        // Left out, it is judged on what was read.
        let partial = model.score(&window(1020.0)).unwrap();
        assert_eq!(partial.state, HealthState::Healthy, "{partial:?}");
        assert!(
            partial
                .explanation
                .iter()
                .all(|c| c.feature != "psi_cpu_some_pct"),
            "{partial:?}"
        );
        // What was read still counts: a burst of context switches is still a fault.
        let burst = model.score(&window(16_700_000.0)).unwrap();
        assert_eq!(burst.state, HealthState::Degraded);
        assert_eq!(burst.explanation[0].feature, "sched_context_switches_per_s");
        // A field missing without being declared missing is still an error, and so is a
        // window with nothing left to judge.
        let undeclared = BTreeMap::from([("sched_context_switches_per_s".to_string(), 1020.0)]);
        assert!(model.score(&undeclared).is_err());
        let nothing =
            serde_json::json!({"sched_context_switches_per_s": null, "psi_cpu_some_pct": null});
        assert!(model.score(&nothing).is_err());
        // The same through positions (the baseline learner's way in), NaN in a missing slot
        // ignored.
        let position = model
            .required_fields()
            .iter()
            .position(|f| f == "psi_cpu_some_pct")
            .unwrap();
        let mut inputs = vec![1020.0; 2];
        inputs[position] = f64::NAN;
        let by_position = model.score_inputs_partial(&inputs, &[position]).unwrap();
        assert_eq!(by_position.score, partial.score);
    }

    /// A lab node that always fsyncs (2 ms) under 20 % CPU pressure: the built-in model's
    /// kind of training.
    fn lab_model() -> Model {
        trained_on(
            200,
            |i| {
                vec![
                    ("fsync_latency_p99_us", 2000.0 + f64::from(i % 7) * 50.0),
                    ("psi_cpu_some_pct", 20.0 + f64::from(i % 5)),
                ]
            },
            &TrainOptions::default(),
        )
    }

    #[test]
    fn judged_as_signals_a_node_quieter_than_the_lab_is_not_degraded() {
        let window = |fsync: f64, psi: f64| {
            BTreeMap::from([
                ("fsync_latency_p99_us".to_string(), fsync),
                ("psi_cpu_some_pct".to_string(), psi),
            ])
        };
        let table = |windows: &[BTreeMap<String, f64>]| {
            let records: Vec<serde_json::Value> = windows
                .iter()
                .map(|w| serde_json::to_value(w).unwrap())
                .collect();
            Table::from_records(&records).unwrap()
        };
        // No fsync in the window, little pressure: a quiet node.
        let quiet = window(0.0, 2.0);
        let two_sided = lab_model();
        assert_eq!(
            two_sided.score(&quiet).unwrap().state,
            HealthState::Degraded
        );
        let mut signals = lab_model();
        signals.judge_signals();
        let judged = signals.score(&quiet).unwrap();
        assert_eq!(judged.state, HealthState::Healthy, "{judged:?}");
        assert!(
            judged
                .explanation
                .iter()
                .all(|c| c.feature != "fsync_latency_p99_us" && c.z >= 0.0),
            "{judged:?}"
        );
        // A rise is still a fault: pressure, or fsyncs ten times slower.
        for fault in [window(0.0, 90.0), window(20_000.0, 20.0)] {
            assert_eq!(signals.score(&fault).unwrap().state, HealthState::Degraded);
        }
        // The table path (`model score --signals`) judges as the window path does.
        let windows = [quiet, window(0.0, 90.0), window(2100.0, 21.0)];
        let by_table = signals.score_table(&table(&windows)).unwrap();
        for (window, judged) in windows.iter().zip(&by_table) {
            assert_eq!(&signals.score(window).unwrap(), judged);
        }
        // A window with nothing but an unsampled latency keeps it (nothing else to judge).
        let only = lab_model_of_latency();
        let judged = only.score(&BTreeMap::from([("fsync_latency_p99_us".to_string(), 0.0)]));
        assert!(judged.is_ok(), "{judged:?}");
    }

    /// The lab's fsync latency alone, judged as signals.
    fn lab_model_of_latency() -> Model {
        let mut model = trained_on(
            100,
            |i| vec![("fsync_latency_p99_us", 2000.0 + f64::from(i % 7) * 50.0)],
            &TrainOptions::default(),
        );
        model.judge_signals();
        model
    }

    /// Two modes, busy (CPU 55 % ± 3) and quiet (20 % ± 12), 500 windows each in runs of 50.
    /// The CPU's scaler spread spans both (about 19 points) and the threshold is set by the
    /// quiet mode's wandering, so a busy window at 65 % (half a spread from busy) is hidden;
    /// within the busy mode (a spread of about 2 points) it is several spreads away.
    fn two_modes() -> Vec<Row> {
        (0..1000)
            .map(|i: usize| {
                let busy = (i / 50).is_multiple_of(2);
                // Deterministic noise in [-3, 3).
                let jitter = ((i * 7919 + 13) % 101) as f64 / 101.0 * 6.0 - 3.0;
                let other = ((i * 104_729 + 7) % 97) as f64 / 97.0 * 6.0 - 3.0;
                // A quiet node's CPU wanders (±12 points); a busy one's holds (±3).
                let (cpu, load, width) = if busy {
                    (55.0, 40.0, 1.0)
                } else {
                    (20.0, 10.0, 4.0)
                };
                Row {
                    values: BTreeMap::from([
                        ("cpu_busy_pct".to_string(), cpu + width * jitter),
                        ("load_pct".to_string(), load + other),
                    ]),
                    line: i + 1,
                    ..Row::default()
                }
            })
            .collect()
    }

    /// Two clusters for the two modes, the percentile threshold, nothing trimmed: what the
    /// tests of spreads per mode vary the rest from.
    fn two_clusters() -> TrainOptions {
        TrainOptions {
            k: 2,
            threshold_rule: crate::model::ThresholdRule::Percentile,
            trim: 0.0,
            ..TrainOptions::default()
        }
    }

    fn train_two_modes(spread_per_mode: bool) -> Model {
        Model::train(
            &two_modes(),
            &TrainOptions {
                spread_per_mode,
                ..two_clusters()
            },
        )
        .expect("trains")
    }

    #[test]
    fn a_spread_per_mode_finds_a_far_window_the_global_spread_hides() {
        let far = BTreeMap::from([
            ("cpu_busy_pct".to_string(), 65.0),
            ("load_pct".to_string(), 40.0),
        ]);
        let ordinary = BTreeMap::from([
            ("cpu_busy_pct".to_string(), 56.0),
            ("load_pct".to_string(), 41.0),
        ]);
        let global = train_two_modes(false);
        assert!(global.clusters.iter().all(|c| c.spread.is_none()));
        let hidden = global.score(&far).unwrap();
        assert_eq!(hidden.state, HealthState::Healthy, "{hidden:?}");
        let per_mode = train_two_modes(true);
        assert!(per_mode.clusters.iter().all(|c| c.spread.is_some()));
        let found = per_mode.score(&far).unwrap();
        assert_eq!(found.state, HealthState::Degraded, "{found:?}");
        assert_eq!(found.explanation[0].feature, "cpu_busy_pct");
        // The CPU's spread is measured within the busy mode: 10 points are several spreads.
        assert!(found.explanation[0].z > 3.0, "{found:?}");
        // An ordinary busy window stays healthy.
        let calm = per_mode.score(&ordinary).unwrap();
        assert_eq!(calm.state, HealthState::Healthy, "{calm:?}");
        // The same judgment through a missing value's path (masked scoring).
        let masked = per_mode
            .score(&serde_json::json!({"cpu_busy_pct": 65.0, "load_pct": null}))
            .unwrap();
        assert_eq!(masked.state, HealthState::Degraded, "{masked:?}");
    }

    /// A feature with one mode and a long tail beside the two-mode CPU: it keeps the scaler's
    /// spread in every cluster (measured within the bulk of its cluster, its healthy tail
    /// would be many spreads out), while the CPU is measured within its mode.
    #[test]
    fn only_features_whose_modes_lie_apart_get_spreads_per_mode() {
        let rows: Vec<Row> = two_modes()
            .into_iter()
            .enumerate()
            .map(|(i, mut row)| {
                // Exponential, the same in busy and quiet windows.
                let u = ((i * 48_271 + 11) % 1000) as f64 / 1000.0 + 0.0005;
                row.values
                    .insert("latency_ms".to_string(), 5.0 - 3.0 * u.ln());
                row
            })
            .collect();
        let model = Model::train(&rows, &two_clusters()).expect("trains");
        let position = |name: &str| model.features.iter().position(|f| f == name).unwrap();
        for cluster in &model.clusters {
            let spread = cluster
                .spread
                .as_ref()
                .expect("spreads per mode by default");
            assert_eq!(spread.len(), model.features.len());
            assert!(
                spread[position("cpu_busy_pct")] < crate::model::MULTIMODAL_SHARE,
                "{spread:?}"
            );
            assert_eq!(spread[position("latency_ms")], 1.0, "{spread:?}");
        }
    }

    /// A busy mode whose CPU has a long healthy tail (a build: one busy window in five 4 to 24
    /// points over the mode's ±3): measured in its MAD, the tail's windows are many spreads
    /// out; in a spread that covers the tail ([`TrainOptions::spread_covers_tail`]) they are
    /// within it, while a saturated CPU is still far, and the quiet mode (no tail) keeps its
    /// spread.
    #[test]
    fn a_spread_that_covers_its_tail_takes_a_modes_own_long_tail_in() {
        let rows: Vec<Row> = two_modes()
            .into_iter()
            .enumerate()
            .map(|(i, mut row)| {
                if (i / 50).is_multiple_of(2) && i % 5 == 0 {
                    let extra = 4.0 + ((i * 7 + 3) % 21) as f64;
                    *row.values.get_mut("cpu_busy_pct").unwrap() += extra;
                }
                row
            })
            .collect();
        let train = |covers: bool| {
            Model::train(
                &rows,
                &TrainOptions {
                    spread_covers_tail: covers,
                    ..two_clusters()
                },
            )
            .expect("trains")
        };
        let (bulk, covering) = (train(false), train(true));
        let cpu = bulk
            .features
            .iter()
            .position(|f| f == "cpu_busy_pct")
            .unwrap();
        let busy = |model: &Model| {
            (0..model.clusters.len())
                .max_by(|&a, &b| {
                    model.clusters[a].centroid[cpu].total_cmp(&model.clusters[b].centroid[cpu])
                })
                .unwrap()
        };
        let spread =
            |model: &Model, cluster: usize| model.clusters[cluster].spread.as_ref().unwrap()[cpu];
        let (b, c) = (busy(&bulk), busy(&covering));
        assert!(
            spread(&covering, c) > 2.0 * spread(&bulk, b),
            "{} against {}",
            spread(&covering, c),
            spread(&bulk, b)
        );
        assert!(spread(&covering, c) <= 1.0, "never wider than the scaler's");
        // The quiet mode's uniform wander has no tail: its spread is the MAD's either way.
        assert_eq!(spread(&covering, 1 - c), spread(&bulk, 1 - b));
        let window = |cpu: f64| {
            BTreeMap::from([
                ("cpu_busy_pct".to_string(), cpu),
                ("load_pct".to_string(), 40.0),
            ])
        };
        // A build's window, 18 points over busy.
        let build = window(73.0);
        let far_in_bulk = bulk.score(&build).unwrap();
        let within = covering.score(&build).unwrap();
        assert!(far_in_bulk.explanation[0].z > 5.0, "{far_in_bulk:?}");
        assert!(within.explanation[0].z < 3.0, "{within:?}");
        assert!(within.score < far_in_bulk.score / 2.0);
        // A saturated CPU, twice as far over busy as the longest build, is still found.
        let saturated = covering.score(&window(97.0)).unwrap();
        assert_eq!(saturated.state, HealthState::Degraded, "{saturated:?}");
        assert_eq!(saturated.explanation[0].feature, "cpu_busy_pct");
        assert!(saturated.explanation[0].z > 4.0, "{saturated:?}");
    }

    #[test]
    fn spreads_per_mode_survive_the_file_and_old_files_score_as_before() {
        let far = BTreeMap::from([
            ("cpu_busy_pct".to_string(), 65.0),
            ("load_pct".to_string(), 40.0),
        ]);
        let origin = std::path::Path::new("model.json");
        let per_mode = train_two_modes(true);
        let reloaded = Model::from_bytes(per_mode.to_json().as_bytes(), origin).unwrap();
        let same = |a: Assessment, b: Assessment| {
            assert_eq!(a.state, b.state);
            assert!(
                (a.score - b.score).abs() < 1e-9 * b.score.max(1.0),
                "{a:?} {b:?}"
            );
        };
        same(reloaded.score(&far).unwrap(), per_mode.score(&far).unwrap());
        // A file written before the field existed has no `spread`: it loads and scores in the
        // scaler's spread alone, exactly as a model trained without spreads per mode.
        let global = train_two_modes(false);
        let json = global.to_json();
        assert!(!json.contains("\"spread\""), "{json}");
        let old = Model::from_bytes(json.as_bytes(), origin).unwrap();
        same(old.score(&far).unwrap(), global.score(&far).unwrap());
        // A spread of the wrong length is a damaged file, not a bad model.
        let mut value: serde_json::Value = serde_json::from_str(&per_mode.to_json()).unwrap();
        value["clusters"][0]["spread"] = serde_json::json!([1.0]);
        assert!(Model::from_bytes(value.to_string().as_bytes(), origin).is_err());
    }
}
