//! Reading windows: the daemon's JSON Lines, or any CSV of numeric columns with a header row.
//!
//! Both become a [`Table`]: named numeric columns, one row per window, with the line each row
//! came from (for messages), its timestamp when there is one and its label when there is one.
//! Each format has its reader module (`json_lines`, `csv_table`), as do label files (`labels`);
//! this one holds the table, the window types and the choice of reader.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    ops::Range,
    path::{Path, PathBuf},
};

use crate::error::{ModelError, Result};

mod csv_table;
mod json_lines;
mod labels;

pub use labels::Labels;

use csv_table::read_csv;
use json_lines::{JsonBuilder, read_json_lines};

/// Top-level fields of a window record that are bookkeeping, not features (they describe the
/// row, not the node): the [`ROW_FIELDS`] and the [`MEASUREMENT_FIELDS`]. The one list of what
/// is not a feature; the collector's judge and exporter use it too.
pub const NOT_FEATURES: [&str; 8] = {
    let mut all = [""; 8];
    let mut index = 0;
    while index < 4 {
        all[index] = ROW_FIELDS[index];
        all[index + 4] = MEASUREMENT_FIELDS[index];
        index += 1;
    }
    all
};

/// Not features: what identifies a row (when it ends, its schema, its label). The daemon
/// exports neither these nor anything else that is not a number of the window.
pub const ROW_FIELDS: [&str; 4] = ["timestamp", "unix_ms", "schema", "label"];

/// Not features: how a window was measured (its length, and how much of it the collector's
/// sampled hooks, syscall exit, scheduler and block, watched). The daemon exports them with
/// the features (`nodestate_feature`): fleet training reads the window's length there.
pub const MEASUREMENT_FIELDS: [&str; 4] = [
    "window_s",
    "syscall_sample_fraction",
    "sched_sample_fraction",
    "block_sample_fraction",
];

/// Whether a top-level numeric field is a feature (not in [`NOT_FEATURES`]).
pub fn is_feature(name: &str) -> bool {
    !NOT_FEATURES.contains(&name)
}

/// A label as a fault flag: 0 is healthy, 1 a fault. Anything else is refused rather than
/// read as "nonzero = fault": a 2 or a -1 is a column that means something else (a class
/// number, a missing-value marker), and training on it as faults would flag everything.
pub fn parse_label(value: f64) -> std::result::Result<bool, String> {
    if value == 0.0 {
        Ok(false)
    } else if value == 1.0 {
        Ok(true)
    } else {
        Err(format!(
            "`label` is {value}: a label is 0 (healthy) or 1 (fault)"
        ))
    }
}

/// Rows of named numeric columns, read from one or more files.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column names, in file order (CSV) or name order (JSON objects).
    pub columns: Vec<String>,
    /// Row-major values, `columns.len()` per row; all finite.
    pub values: Vec<f64>,
    /// Per row: the line of its file (1-based, counting the header).
    pub lines: Vec<usize>,
    /// Per row: seconds since the epoch, when the row has a `timestamp`.
    pub timestamps: Vec<Option<f64>>,
    /// Per row: a `label` column's value (1 = fault, 0 = healthy), when the input has one.
    pub labels: Option<Vec<bool>>,
    /// The files the rows came from: (path, rows from that file).
    pub files: Vec<(PathBuf, Range<usize>)>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn row(&self, index: usize) -> &[f64] {
        let width = self.columns.len();
        &self.values[index * width..(index + 1) * width]
    }

    /// The file and line a row came from.
    pub fn origin(&self, row: usize) -> (&Path, usize) {
        let path = self
            .files
            .iter()
            .find(|(_, rows)| rows.contains(&row))
            .map_or(Path::new("<memory>"), |(path, _)| path.as_path());
        (path, self.lines.get(row).copied().unwrap_or(0))
    }

    /// The first file, for messages about the table as a whole.
    pub fn path(&self) -> &Path {
        self.files
            .first()
            .map_or(Path::new("<memory>"), |(path, _)| path.as_path())
    }

    /// A table of window records held in memory (the daemon's own, or tests'). Columns are
    /// the numeric top-level fields of the first record; every record must have them.
    pub fn from_records(records: &[serde_json::Value]) -> Result<Self> {
        let origin = PathBuf::from("<records>");
        let mut builder = JsonBuilder::default();
        for (index, record) in records.iter().enumerate() {
            builder
                .push(record, index + 1)
                .map_err(|message| input_error(&origin, index + 1, message))?;
        }
        builder.finish(origin)
    }

    /// Keeps only `columns` (in that order); used when files of one training set differ.
    fn select(&self, columns: &[String]) -> Self {
        // A map, not a search per column: a file can have 100,000 columns.
        let own: HashMap<&str, usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(index, name)| (name.as_str(), index))
            .collect();
        let positions: Vec<usize> = columns
            .iter()
            .map(|c| own.get(c.as_str()).copied().unwrap_or(0))
            .collect();
        let mut values = Vec::with_capacity(self.len() * columns.len());
        for row in 0..self.len() {
            let row = self.row(row);
            values.extend(positions.iter().map(|&p| row[p]));
        }
        Self {
            columns: columns.to_vec(),
            values,
            ..self.clone()
        }
    }

    /// Appends tables read from several files. Only the columns all of them have are kept;
    /// the others are returned so the caller can say which were dropped.
    pub fn concat(tables: Vec<Self>) -> (Self, Vec<String>) {
        let Some(first) = tables.first() else {
            return (Self::default(), Vec::new());
        };
        // Sets, not searches per column (quadratic in the columns: minutes for 100,000).
        let sets: Vec<HashSet<&str>> = tables
            .iter()
            .map(|t| t.columns.iter().map(String::as_str).collect())
            .collect();
        let common: Vec<String> = first
            .columns
            .iter()
            .filter(|c| sets.iter().all(|set| set.contains(c.as_str())))
            .cloned()
            .collect();
        let common_set: HashSet<&str> = common.iter().map(String::as_str).collect();
        let mut dropped: Vec<String> = tables
            .iter()
            .flat_map(|t| t.columns.iter())
            .filter(|c| !common_set.contains(c.as_str()))
            .cloned()
            .collect();
        drop(common_set);
        drop(sets);
        dropped.sort();
        dropped.dedup();
        let all_labelled = tables.iter().all(|t| t.labels.is_some());
        let mut joined = Self {
            columns: common.clone(),
            labels: all_labelled.then(Vec::new),
            ..Self::default()
        };
        for table in tables {
            let table = table.select(&common);
            let offset = joined.len();
            joined.values.extend(&table.values);
            joined.lines.extend(&table.lines);
            joined.timestamps.extend(&table.timestamps);
            if let (Some(all), Some(own)) = (&mut joined.labels, &table.labels) {
                all.extend(own);
            }
            joined.files.extend(
                table
                    .files
                    .into_iter()
                    .map(|(path, rows)| (path, rows.start + offset..rows.end + offset)),
            );
        }
        (joined, dropped)
    }
}

/// One window as named numbers (the collector's and older callers' form; files are read into a
/// [`Table`]). A slice of rows converts to a table for [`crate::Model::train`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub values: BTreeMap<String, f64>,
    pub timestamp_s: Option<f64>,
    pub label: Option<bool>,
    /// Line in the input file, for messages.
    pub line: usize,
}

impl Row {
    /// The numeric top-level fields of a window record (not the bookkeeping ones, strings or
    /// nested objects), its timestamp and its label.
    pub fn from_json(value: &serde_json::Value, line: usize) -> std::result::Result<Self, String> {
        let object = value.as_object().ok_or("not a JSON object")?;
        let mut values = BTreeMap::new();
        for (name, field) in object {
            if NOT_FEATURES.contains(&name.as_str()) {
                continue;
            }
            if let Some(number) = field.as_f64() {
                if !number.is_finite() {
                    return Err(format!("field `{name}` is {number}, not finite"));
                }
                values.insert(name.clone(), number);
            }
        }
        let timestamp_s = match object.get("timestamp") {
            Some(serde_json::Value::String(text)) => Some(parse_timestamp(text)?),
            Some(value) => value.as_f64(),
            None => None,
        };
        let label = object
            .get("label")
            .and_then(serde_json::Value::as_f64)
            .map(parse_label)
            .transpose()?;
        Ok(Self {
            values,
            timestamp_s,
            label,
            line,
        })
    }
}

/// Anything that holds training windows: a [`Table`], or rows of named values.
pub trait TrainingData {
    /// The windows as a table. Rows become columns of the fields every row has (sorted by
    /// name); labels are kept when every row has one.
    fn to_table(&self) -> Cow<'_, Table>;
}

impl TrainingData for Table {
    fn to_table(&self) -> Cow<'_, Table> {
        Cow::Borrowed(self)
    }
}

impl TrainingData for [Row] {
    fn to_table(&self) -> Cow<'_, Table> {
        let columns: Vec<String> = self.first().map_or_else(Vec::new, |first| {
            first
                .values
                .keys()
                .filter(|name| self.iter().all(|row| row.values.contains_key(*name)))
                .cloned()
                .collect()
        });
        let mut table = Table {
            values: Vec::with_capacity(self.len() * columns.len()),
            lines: self.iter().map(|row| row.line).collect(),
            timestamps: self.iter().map(|row| row.timestamp_s).collect(),
            labels: self.iter().map(|row| row.label).collect(),
            files: vec![(PathBuf::from("<rows>"), 0..self.len())],
            columns,
        };
        for row in self {
            table
                .values
                .extend(table.columns.iter().map(|c| row.values[c]));
        }
        Cow::Owned(table)
    }
}

impl TrainingData for Vec<Row> {
    fn to_table(&self) -> Cow<'_, Table> {
        self.as_slice().to_table()
    }
}

/// Anything a window's named numbers can be read from: the collector's window record, a JSON
/// window record, or named values. What [`crate::Model::score`] and the
/// [`crate::BaselineLearner`] read.
///
/// A name is in one of three states in a window:
/// - a number: [`WindowFields::field`] gives it;
/// - missing: the window has the field but its value could not be read (a failed read of a
///   `/proc` file: `null` in the JSON Lines, listed in the record's `missing`).
///   [`WindowFields::field`] gives `None` and [`WindowFields::is_missing`] `true`; a model leaves
///   what is computed from it out of the score, never reads it as 0;
/// - absent: the window has no such field (`field` gives `None`, `is_missing` `false`); a model
///   that needs it refuses the window.
pub trait WindowFields {
    /// The field's value when it is there and a number.
    fn field(&self, name: &str) -> Option<f64>;
    /// Whether the window has this field but could not read its value (a missing value). Named
    /// values have none: the default is `false`.
    fn is_missing(&self, _name: &str) -> bool {
        false
    }
    /// The numeric fields that are features (not `timestamp`, `unix_ms`, …), in name order.
    /// Missing values are not among them.
    fn feature_fields(&self) -> Vec<String>;
}

impl WindowFields for serde_json::Value {
    fn field(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(serde_json::Value::as_f64)
    }

    /// A `null`, as the daemon writes a value it could not read.
    fn is_missing(&self, name: &str) -> bool {
        self.get(name).is_some_and(serde_json::Value::is_null)
    }

    fn feature_fields(&self) -> Vec<String> {
        self.as_object().map_or_else(Vec::new, |object| {
            object
                .iter()
                .filter(|(name, value)| value.is_number() && !NOT_FEATURES.contains(&name.as_str()))
                .map(|(name, _)| name.clone())
                .collect()
        })
    }
}

impl WindowFields for BTreeMap<String, f64> {
    fn field(&self, name: &str) -> Option<f64> {
        self.get(name).copied()
    }

    fn feature_fields(&self) -> Vec<String> {
        self.keys()
            .filter(|name| !NOT_FEATURES.contains(&name.as_str()))
            .cloned()
            .collect()
    }
}

impl WindowFields for [(String, f64)] {
    fn field(&self, name: &str) -> Option<f64> {
        self.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn feature_fields(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| !NOT_FEATURES.contains(&name.as_str()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl WindowFields for Vec<(String, f64)> {
    fn field(&self, name: &str) -> Option<f64> {
        self.as_slice().field(name)
    }

    fn feature_fields(&self) -> Vec<String> {
        self.as_slice().feature_fields()
    }
}

impl<T: WindowFields + ?Sized> WindowFields for &T {
    fn field(&self, name: &str) -> Option<f64> {
        (**self).field(name)
    }

    fn is_missing(&self, name: &str) -> bool {
        (**self).is_missing(name)
    }

    fn feature_fields(&self) -> Vec<String> {
        (**self).feature_fields()
    }
}

/// A window seen through field patterns (`*` is a wildcard, as in
/// [`crate::features::name_matches`]): the fields no pattern matches are absent. The daemon's
/// `--baseline-fields` (by default [`crate::signals::JUDGED_FIELDS`]) is such a selection, and
/// `cargo xtask soak-replay` judges a recording through the same one. No patterns keep every
/// field.
pub struct Selected<'a, W: ?Sized> {
    record: &'a W,
    patterns: &'a [String],
}

impl<'a, W: WindowFields + ?Sized> Selected<'a, W> {
    pub fn new(record: &'a W, patterns: &'a [String]) -> Self {
        Self { record, patterns }
    }

    /// Whether a pattern matches the field `name`.
    pub fn kept(&self, name: &str) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|pattern| crate::features::name_matches(pattern, name))
    }
}

impl<W: WindowFields + ?Sized> WindowFields for Selected<'_, W> {
    fn field(&self, name: &str) -> Option<f64> {
        self.record.field(name).filter(|_| self.kept(name))
    }

    fn is_missing(&self, name: &str) -> bool {
        self.kept(name) && self.record.is_missing(name)
    }

    fn feature_fields(&self) -> Vec<String> {
        let mut fields = self.record.feature_fields();
        fields.retain(|name| self.kept(name));
        fields
    }
}

/// RFC 3339 (`2026-11-25T08:00:05.123Z`) or plain seconds since the epoch.
pub fn parse_timestamp(text: &str) -> std::result::Result<f64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
    {
        return Ok(seconds);
    }
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|err| format!("timestamp `{text}` is neither RFC 3339 nor seconds: {err}"))?;
    Ok(match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    })
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn input_error(path: &Path, line: usize, message: impl Into<String>) -> ModelError {
    ModelError::Input {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Reads a window file: JSON Lines (`.jsonl`, `.ndjson`, `.json`, or any file whose first
/// non-blank character is `{`) or CSV (anything else).
pub fn read_table(path: &Path) -> Result<Table> {
    let text = read_text(path)?;
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let is_json = match extension.as_deref() {
        Some("jsonl" | "ndjson" | "json") => true,
        Some("csv") => false,
        _ => text.trim_start().starts_with('{'),
    };
    let table = if is_json {
        read_json_lines(path, &text)?
    } else {
        read_csv(path, &text)?
    };
    if table.is_empty() {
        return Err(ModelError::Empty {
            path: path.to_path_buf(),
            what: "no data rows".into(),
        });
    }
    if table.columns.is_empty() {
        return Err(ModelError::Empty {
            path: path.to_path_buf(),
            what: "no numeric columns".into(),
        });
    }
    Ok(table)
}

/// Reads several files into one table (see [`Table::concat`]).
pub fn read_tables(paths: &[PathBuf]) -> Result<(Table, Vec<String>)> {
    let tables = paths
        .iter()
        .map(|p| read_table(p))
        .collect::<Result<Vec<_>>>()?;
    Ok(Table::concat(tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_keeps_only_the_fields_its_patterns_match() {
        let window = serde_json::json!({
            "unix_ms": 1,
            "psi_cpu_some_pct": 5.0,
            "psi_io_some_pct": null,
            "syscalls_per_s": 1000.0,
            "net_drops_per_s": null,
        });
        let patterns = vec!["psi_*".to_string()];
        let selected = Selected::new(&window, &patterns);
        assert_eq!(selected.feature_fields(), ["psi_cpu_some_pct"]);
        assert_eq!(selected.field("psi_cpu_some_pct"), Some(5.0));
        assert_eq!(selected.field("syscalls_per_s"), None);
        assert!(selected.is_missing("psi_io_some_pct"));
        // Missing but not selected: absent.
        assert!(!selected.is_missing("net_drops_per_s"));
        // No patterns: every field.
        let all = Selected::new(&window, &[]);
        assert_eq!(all.feature_fields().len(), 2);
        assert!(all.is_missing("net_drops_per_s"));
    }
}
