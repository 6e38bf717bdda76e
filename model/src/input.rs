//! Reading windows: the daemon's JSON Lines, or any CSV of numeric columns with a header.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::error::{ModelError, Result};

/// Fields of a window record that are not features.
const NOT_FEATURES: [&str; 5] = ["timestamp", "unix_ms", "window_s", "schema", "label"];

/// One input row: named numeric values, its timestamp (seconds since the epoch) when known,
/// and its 0/1 label when the input carries one.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: BTreeMap<String, f64>,
    pub timestamp_s: Option<f64>,
    pub label: Option<bool>,
    /// Line in the input file, for messages.
    pub line: usize,
}

impl Row {
    /// The numeric top-level fields of a window record; nested objects, strings and the
    /// bookkeeping fields are not features.
    pub fn from_json(value: &serde_json::Value, line: usize) -> std::result::Result<Self, String> {
        let object = value.as_object().ok_or("not a JSON object")?;
        let mut values = BTreeMap::new();
        for (name, field) in object {
            if NOT_FEATURES.contains(&name.as_str()) {
                continue;
            }
            if let Some(number) = field.as_f64() {
                if !number.is_finite() {
                    return Err(format!("field {name} is not finite ({number})"));
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
            .and_then(|label| label.as_f64())
            .map(|l| l != 0.0);
        Ok(Self {
            values,
            timestamp_s,
            label,
            line,
        })
    }
}

/// RFC 3339 or plain seconds since the epoch.
pub fn parse_timestamp(text: &str) -> std::result::Result<f64, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return Ok(seconds);
    }
    humantime::parse_rfc3339_weak(text.trim())
        .map_err(|err| format!("timestamp `{text}`: {err}"))
        .and_then(|time| {
            time.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .map_err(|_| format!("timestamp `{text}` before 1970"))
        })
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn input_error(path: &Path, line: usize, message: impl Into<String>) -> ModelError {
    ModelError::Input {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Reads rows from a `.csv` file (by extension) or JSON Lines (anything else).
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let is_csv = path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"));
    if is_csv {
        read_csv(path)
    } else {
        read_json_lines(path)
    }
}

fn read_json_lines(path: &Path) -> Result<Vec<Row>> {
    let text = read_text(path)?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|err| input_error(path, number, format!("not JSON: {err}")))?;
        rows.push(
            Row::from_json(&value, number).map_err(|message| input_error(path, number, message))?,
        );
    }
    Ok(rows)
}

fn read_csv(path: &Path) -> Result<Vec<Row>> {
    let text = read_text(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|err| input_error(path, 1, format!("bad header: {err}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|err| {
            let line = err.position().map_or(0, |p| p.line() as usize);
            input_error(
                path,
                line,
                format!("{err} (every row needs {} columns)", headers.len()),
            )
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let mut row = Row {
            values: BTreeMap::new(),
            timestamp_s: None,
            label: None,
            line,
        };
        for (name, cell) in headers.iter().zip(record.iter()) {
            match name.as_str() {
                "timestamp" => {
                    row.timestamp_s = Some(
                        parse_timestamp(cell)
                            .map_err(|message| input_error(path, line, message))?,
                    );
                }
                "label" => {
                    let value: f64 = cell.parse().map_err(|_| {
                        input_error(path, line, format!("label `{cell}` is not 0 or 1"))
                    })?;
                    row.label = Some(value != 0.0);
                }
                _ => {
                    let value: f64 = cell.parse().map_err(|_| {
                        input_error(
                            path,
                            line,
                            format!("column {name}: `{cell}` is not a number"),
                        )
                    })?;
                    if !value.is_finite() {
                        return Err(input_error(
                            path,
                            line,
                            format!("column {name}: {cell} is not finite"),
                        ));
                    }
                    row.values.insert(name.clone(), value);
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Labels for evaluation or training: one 0/1 `label` per input row, or fault segments
/// (`start`,`end` timestamps) that mark every row inside as 1.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    PerRow(Vec<bool>),
    Segments(Vec<(f64, f64)>),
}

impl Labels {
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .map_err(|err| input_error(path, 1, format!("bad header: {err}")))?
            .iter()
            .map(str::to_string)
            .collect();
        let column = |name: &str| headers.iter().position(|h| h == name);
        let mut per_row = Vec::new();
        let mut segments = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|err| {
                input_error(
                    path,
                    err.position().map_or(0, |p| p.line() as usize),
                    err.to_string(),
                )
            })?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            if let (Some(start), Some(end)) = (column("start"), column("end")) {
                let start =
                    parse_timestamp(&record[start]).map_err(|m| input_error(path, line, m))?;
                let end = parse_timestamp(&record[end]).map_err(|m| input_error(path, line, m))?;
                if end < start {
                    return Err(input_error(path, line, "segment ends before it starts"));
                }
                segments.push((start, end));
            } else if let Some(label) = column("label") {
                let value: f64 = record[label].parse().map_err(|_| {
                    input_error(
                        path,
                        line,
                        format!("label `{}` is not 0 or 1", &record[label]),
                    )
                })?;
                per_row.push(value != 0.0);
            } else {
                return Err(input_error(
                    path,
                    1,
                    "labels need a `label` column or `start`,`end` columns",
                ));
            }
        }
        if !segments.is_empty() {
            Ok(Self::Segments(segments))
        } else {
            Ok(Self::PerRow(per_row))
        }
    }

    /// The label of each row; segment labels need every row to have a timestamp.
    pub fn per_row(&self, rows: &[Row], rows_path: &Path) -> Result<Vec<bool>> {
        match self {
            Self::PerRow(labels) => {
                if labels.len() != rows.len() {
                    return Err(ModelError::Input {
                        path: rows_path.to_path_buf(),
                        line: 0,
                        message: format!("{} rows but {} labels", rows.len(), labels.len()),
                    });
                }
                Ok(labels.clone())
            }
            Self::Segments(segments) => rows
                .iter()
                .map(|row| {
                    let time = row.timestamp_s.ok_or_else(|| {
                        input_error(
                            rows_path,
                            row.line,
                            "fault segments need a timestamp on every row",
                        )
                    })?;
                    Ok(segments
                        .iter()
                        .any(|(start, end)| (*start..=*end).contains(&time)))
                })
                .collect(),
        }
    }
}

pub fn path_buf(path: &Path) -> PathBuf {
    path.to_path_buf()
}
