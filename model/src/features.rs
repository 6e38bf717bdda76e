//! Featurization: a window record (named numbers) becomes a fixed, named feature vector.
//!
//! The schema is decided once, at training time, from the training columns, and stored in the
//! model file: every numeric input column is a feature, plus derived ones where their sources
//! exist (error fractions, latency tail ratios). Each feature is then log-scaled or kept
//! linear ([`Transform`]) before the scaler of the model standardizes it.
//!
//! No field name is required: a CSV of columns `0..37` gets 38 raw features and no derived
//! ones; a daemon record gets one feature per top-level number plus the derived ones.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// How a feature's value is reshaped before standardization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// `ln(1 + max(x, 0))`. Rates, counts, bytes and latencies are non-negative and
    /// heavy-tailed: one burst would otherwise dominate every distance, and a change from 10
    /// to 100 ops/s matters as much as one from 1000 to 10000.
    Log1p,
    /// Kept as it is: shares (`*_pct`, fractions) are bounded, and unknown columns that are
    /// not skewed (or go negative) have no tail to tame.
    Linear,
}

impl Transform {
    #[inline]
    pub fn apply(self, value: f64) -> f64 {
        match self {
            Self::Log1p => value.max(0.0).ln_1p(),
            Self::Linear => value,
        }
    }
}

/// Where a feature's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A top-level numeric field (a CSV column) as it is.
    Field { field: String },
    /// `sum(numerator) / max(sum(denominator), sum(numerator))`, 0 when both are 0: the share
    /// of operations that failed, in [0, 1]. An error rate alone moves with load; its share
    /// does not.
    Fraction {
        numerator: Vec<String>,
        denominator: Vec<String>,
    },
    /// `(numerator + 1) / (denominator + 1)`: a latency tail ratio (p99 over p50). A disk
    /// that is slow for some requests stretches the tail before it moves the median.
    Ratio {
        numerator: String,
        denominator: String,
    },
}

/// One named feature of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub source: Source,
    pub transform: Transform,
}

/// Suffixes of the daemon's heavy-tailed, non-negative fields (rates, latencies, sizes,
/// counts): log-scaled whatever the training data looked like.
const LOG_SUFFIXES: [&str; 12] = [
    "_per_s",
    "_us",
    "_ms",
    "_ns",
    "_bytes",
    "_events",
    "_lost",
    "_inflight",
    "_kills",
    "_cgroups",
    "_count",
    "_total",
];
/// Suffixes of bounded shares: kept linear.
const LINEAR_SUFFIXES: [&str; 3] = ["_pct", "_fraction", "_share"];
/// An unknown column is log-scaled when it is non-negative and at least this skewed (sample
/// skewness; an exponential distribution has 2, a normal one 0).
const SKEWNESS_FOR_LOG: f64 = 2.0;

/// `pattern` with `*` wildcards (any run of characters) matches all of `name`: how
/// `model train --features` and the daemon's `--baseline-fields` pick fields.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole name must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The fixed, ordered list of features of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub features: Vec<Feature>,
}

impl FeatureSchema {
    /// Decides the features for training columns `columns`, whose values are `rows`
    /// (row-major, `columns.len()` per row): every column, then the derived features whose
    /// sources are all there; transforms by name, else by the data's shape.
    pub fn decide(columns: &[String], rows: &[f64]) -> Self {
        let mut sources: Vec<(String, Source)> = columns
            .iter()
            .map(|c| (c.clone(), Source::Field { field: c.clone() }))
            .collect();
        sources.extend(derived_sources(columns));
        // Values of every feature before any transform, to judge the shape of unknown columns.
        let untransformed = Self {
            features: sources
                .iter()
                .map(|(name, source)| Feature {
                    name: name.clone(),
                    source: source.clone(),
                    transform: Transform::Linear,
                })
                .collect(),
        };
        let compiled = untransformed.compile();
        let positions = positions_in(columns, &compiled.inputs);
        let width = columns.len().max(1);
        let count = rows.len() / width;
        let mut values = vec![0.0; count * compiled.len()];
        let mut gathered = vec![0.0; compiled.inputs.len()];
        for (row, out) in rows.chunks(width).zip(values.chunks_mut(compiled.len())) {
            for (slot, &position) in gathered.iter_mut().zip(&positions) {
                *slot = row[position];
            }
            compiled.extract(&gathered, out);
        }
        let columns = columns_of(&values, compiled.len());
        let features = untransformed
            .features
            .into_iter()
            .zip(&columns)
            .map(|(mut feature, column)| {
                feature.transform = choose_transform(&feature, column);
                feature
            })
            .collect();
        Self { features }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// Keeps the features whose name one of `patterns` matches ([`name_matches`]); empty
    /// patterns keep all. A pattern that matches no feature is an error naming it, since a
    /// typo would otherwise quietly train on less than asked.
    pub fn retain_matching(&mut self, patterns: &[String]) -> Result<(), String> {
        if patterns.is_empty() {
            return Ok(());
        }
        for pattern in patterns {
            if !self.names().any(|name| name_matches(pattern, name)) {
                return Err(format!(
                    "`{pattern}` matches no feature of these windows (they are: {})",
                    self.names().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        self.features
            .retain(|feature| patterns.iter().any(|p| name_matches(p, &feature.name)));
        Ok(())
    }

    /// Resolves names to indices once, so that extracting a window costs only lookups and
    /// arithmetic.
    pub fn compile(&self) -> CompiledSchema {
        let mut inputs: Vec<String> = Vec::new();
        // Name → index in a map: a search of `inputs` per name made this quadratic in the
        // number of fields (minutes for a CSV of 100,000 columns).
        let mut indices: HashMap<String, usize> = HashMap::new();
        let mut index_of = |name: &str| -> usize {
            if let Some(&index) = indices.get(name) {
                return index;
            }
            inputs.push(name.to_string());
            indices.insert(name.to_string(), inputs.len() - 1);
            inputs.len() - 1
        };
        let ops = self
            .features
            .iter()
            .map(|feature| {
                let op = match &feature.source {
                    Source::Field { field } => Op::Field(index_of(field)),
                    Source::Fraction {
                        numerator,
                        denominator,
                    } => Op::Fraction(
                        numerator.iter().map(|n| index_of(n)).collect(),
                        denominator.iter().map(|d| index_of(d)).collect(),
                    ),
                    Source::Ratio {
                        numerator,
                        denominator,
                    } => Op::Ratio(index_of(numerator), index_of(denominator)),
                };
                (op, feature.transform)
            })
            .collect();
        CompiledSchema { inputs, ops }
    }
}

/// Derived features whose sources are all among `columns`.
fn derived_sources(columns: &[String]) -> Vec<(String, Source)> {
    let names: HashSet<&str> = columns.iter().map(String::as_str).collect();
    let has = |name: &str| names.contains(name);
    let mut derived = Vec::new();
    for column in columns {
        // Error fractions: `P_errors_per_s` over `Ps_per_s` (syscalls, file opens), else
        // `P_packets_per_s` (net tx), else the sum of `P_*_ops_per_s` (block).
        if let Some(prefix) = column.strip_suffix("_errors_per_s") {
            let plural = format!("{prefix}s_per_s");
            let packets = format!("{prefix}_packets_per_s");
            let denominator: Vec<String> = if has(&plural) {
                vec![plural]
            } else if has(&packets) {
                vec![packets]
            } else {
                columns
                    .iter()
                    .filter(|c| {
                        c.strip_prefix(prefix)
                            .and_then(|rest| rest.strip_prefix('_'))
                            .is_some_and(|rest| rest.ends_with("_ops_per_s"))
                    })
                    .cloned()
                    .collect()
            };
            if !denominator.is_empty() {
                derived.push((
                    format!("{prefix}_error_fraction"),
                    Source::Fraction {
                        numerator: vec![column.clone()],
                        denominator,
                    },
                ));
            }
        }
        // Failure fractions: `P_failures_per_s` over attempts (`Ps_per_s` + failures).
        if let Some(prefix) = column.strip_suffix("_failures_per_s") {
            let plural = format!("{prefix}s_per_s");
            if has(&plural) {
                derived.push((
                    format!("{prefix}_failure_fraction"),
                    Source::Fraction {
                        numerator: vec![column.clone()],
                        denominator: vec![plural, column.clone()],
                    },
                ));
            }
        }
        // Non-zero exits among exits.
        if let Some(prefix) = column.strip_suffix("_nonzero_per_s") {
            let all = format!("{prefix}_per_s");
            if has(&all) {
                derived.push((
                    format!("{prefix}_nonzero_fraction"),
                    Source::Fraction {
                        numerator: vec![column.clone()],
                        denominator: vec![all],
                    },
                ));
            }
        }
        // Latency tail ratios: `P_p99_U` over `P_p50_U`.
        if let Some((prefix, unit)) = column.rsplit_once("_p99_") {
            let median = format!("{prefix}_p50_{unit}");
            if has(&median) {
                derived.push((
                    format!("{prefix}_p99_over_p50"),
                    Source::Ratio {
                        numerator: column.clone(),
                        denominator: median,
                    },
                ));
            }
        }
    }
    // A derived name that collides with an input column would make two features of one name.
    derived.retain(|(name, _)| !has(name));
    derived
}

/// Where each of `wanted` is among `columns` (0 when it is not: callers check presence
/// first), through a map, in time linear in both.
pub(crate) fn positions_in(columns: &[String], wanted: &[String]) -> Vec<usize> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(columns.len());
    for (position, name) in columns.iter().enumerate() {
        // The first of two equal names, as a search from the front would find.
        index.entry(name.as_str()).or_insert(position);
    }
    wanted
        .iter()
        .map(|name| index.get(name.as_str()).copied().unwrap_or(0))
        .collect()
}

/// The columns of a row-major matrix `width` values wide, in one pass over it (a pass per
/// column would read the whole matrix once per column).
pub(crate) fn columns_of(values: &[f64], width: usize) -> Vec<Vec<f64>> {
    let count = values.len() / width.max(1);
    let mut columns = vec![Vec::with_capacity(count); width];
    for row in values.chunks_exact(width.max(1)) {
        for (column, &value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    columns
}

fn choose_transform(feature: &Feature, values: &[f64]) -> Transform {
    match feature.source {
        Source::Fraction { .. } => return Transform::Linear,
        Source::Ratio { .. } => return Transform::Log1p,
        Source::Field { .. } => {}
    }
    let name = feature.name.as_str();
    if LINEAR_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Transform::Linear;
    }
    if LOG_SUFFIXES.iter().any(|s| name.ends_with(s)) || name == "events_lost" {
        return Transform::Log1p;
    }
    if values.iter().all(|v| *v >= 0.0) && skewness(values) >= SKEWNESS_FOR_LOG {
        Transform::Log1p
    } else {
        Transform::Linear
    }
}

fn skewness(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if n < 3.0 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n;
    let m2 = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let m3 = values.iter().map(|v| (v - mean).powi(3)).sum::<f64>() / n;
    if m2 <= f64::EPSILON {
        0.0
    } else {
        m3 / m2.powf(1.5)
    }
}

/// The smallest standard deviation a feature is given (in transformed units). A feature that
/// never moved in training (errors: always 0) must still give a finite, large z-distance the
/// first time it moves, and one whose training spread was tiny must not make noise look
/// like a fault.
pub fn std_floor(feature: &Feature, transformed: &[f64]) -> f64 {
    match (feature.transform, &feature.source) {
        // A tenth of a natural-log unit: about a 10 % change.
        (Transform::Log1p, _) => 0.1,
        // One hundredth of the share.
        (Transform::Linear, Source::Fraction { .. }) => 0.01,
        // One percentage point.
        (Transform::Linear, _) if feature.name.ends_with("_pct") => 1.0,
        // Unknown units: 1 % of the largest magnitude seen, or 0.001.
        (Transform::Linear, _) => {
            let largest = transformed.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            (0.01 * largest).max(1e-3)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Field(usize),
    Fraction(Vec<usize>, Vec<usize>),
    Ratio(usize, usize),
}

/// A schema with names resolved to input positions: built once per model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompiledSchema {
    /// The raw fields the features are computed from, in the order `extract` expects them.
    pub inputs: Vec<String>,
    ops: Vec<(Op, Transform)>,
}

impl CompiledSchema {
    /// Number of features.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Transformed (not yet standardized) features from raw inputs in `self.inputs` order.
    #[inline]
    pub fn extract(&self, inputs: &[f64], out: &mut [f64]) {
        let sum = |indices: &[usize]| indices.iter().map(|&i| inputs[i]).sum::<f64>();
        for ((op, transform), slot) in self.ops.iter().zip(out.iter_mut()) {
            let value = match op {
                Op::Field(index) => inputs[*index],
                Op::Fraction(numerator, denominator) => {
                    let failed = sum(numerator).max(0.0);
                    let total = sum(denominator).max(failed);
                    if total > 0.0 { failed / total } else { 0.0 }
                }
                Op::Ratio(numerator, denominator) => {
                    (inputs[*numerator].max(0.0) + 1.0) / (inputs[*denominator].max(0.0) + 1.0)
                }
            };
            *slot = transform.apply(value);
        }
    }

    /// Which features depend on at least one of the `missing` inputs (indices into
    /// `self.inputs`): the features a window with those values missing cannot give.
    pub fn features_missing(&self, missing: &[usize]) -> Vec<bool> {
        self.ops
            .iter()
            .map(|(op, _)| match op {
                Op::Field(index) => missing.contains(index),
                Op::Fraction(numerator, denominator) => numerator
                    .iter()
                    .chain(denominator)
                    .any(|index| missing.contains(index)),
                Op::Ratio(numerator, denominator) => {
                    missing.contains(numerator) || missing.contains(denominator)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn derives_fractions_and_tail_ratios_where_sources_exist() {
        let columns = names(&[
            "block_read_ops_per_s",
            "block_write_ops_per_s",
            "block_errors_per_s",
            "block_latency_p50_us",
            "block_latency_p99_us",
            "syscalls_per_s",
            "syscall_errors_per_s",
            "psi_io_some_pct",
            "tcp_connects_per_s",
            "tcp_connect_failures_per_s",
        ]);
        let row = [100.0, 300.0, 4.0, 100.0, 1000.0, 1e4, 10.0, 3.0, 9.0, 1.0];
        let schema = FeatureSchema::decide(&columns, &row);
        let derived: Vec<&str> = schema.names().skip(columns.len()).collect();
        assert_eq!(
            derived,
            vec![
                "block_error_fraction",
                "block_latency_p99_over_p50",
                "syscall_error_fraction",
                "tcp_connect_failure_fraction"
            ]
        );
        let compiled = schema.compile();
        let inputs: Vec<f64> = compiled
            .inputs
            .iter()
            .map(|name| row[columns.iter().position(|c| c == name).unwrap()])
            .collect();
        let mut out = vec![0.0; compiled.len()];
        compiled.extract(&inputs, &mut out);
        let value = |name: &str| out[schema.names().position(|n| n == name).unwrap()];
        assert!((value("block_error_fraction") - 0.01).abs() < 1e-12);
        assert!((value("syscall_error_fraction") - 0.001).abs() < 1e-12);
        assert!((value("tcp_connect_failure_fraction") - 0.1).abs() < 1e-12);
        assert!((value("block_latency_p99_over_p50") - (1001.0f64 / 101.0).ln_1p()).abs() < 1e-12);
        assert!((value("block_read_ops_per_s") - 101.0f64.ln()).abs() < 1e-12);
        assert_eq!(value("psi_io_some_pct"), 3.0);
    }

    #[test]
    fn unknown_columns_are_log_scaled_only_when_skewed_and_non_negative() {
        let columns = names(&["a", "b", "c"]);
        let mut rows = Vec::new();
        for i in 0..100 {
            let heavy = if i % 25 == 0 { 1000.0 } else { 1.0 };
            rows.extend([heavy, i as f64, -heavy]);
        }
        let schema = FeatureSchema::decide(&columns, &rows);
        let transforms: Vec<Transform> = schema.features.iter().map(|f| f.transform).collect();
        assert_eq!(
            transforms,
            vec![Transform::Log1p, Transform::Linear, Transform::Linear]
        );
    }
}
