//! CSV of numeric columns: with a header row, or headerless (columns named by position); a
//! `timestamp…` and a `label` column recognised and not features.

use std::{collections::HashSet, path::Path};

use super::{Table, input_error, parse_label, parse_timestamp};
use crate::error::{ModelError, Result};

/// A CSV cell as a finite number; NaN and infinities are an error of their own.
pub(super) fn parse_cell(path: &Path, line: usize, column: &str, cell: &str) -> Result<f64> {
    let value: f64 = cell.parse().map_err(|_| {
        input_error(
            path,
            line,
            format!("column `{column}`: `{cell}` is not a number"),
        )
    })?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ModelError::NonFinite {
            path: path.to_path_buf(),
            line,
            column: column.to_string(),
            value: cell.to_string(),
        })
    }
}

/// Whether every cell of a CSV record reads as a number (a data row, not a header).
pub(super) fn all_numeric(record: &csv::StringRecord) -> bool {
    record.iter().all(|cell| cell.parse::<f64>().is_ok())
}

pub(super) fn read_csv(path: &Path, text: &str) -> Result<Table> {
    let mut reader = csv::ReaderBuilder::new()
        // The header is read as a record: a file whose first row is all numbers has none.
        .has_headers(false)
        // Ragged rows are checked below, to report them as `Ragged` with both counts.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records().peekable();
    let first = match records.peek() {
        Some(Ok(record)) => record.clone(),
        Some(Err(err)) => return Err(input_error(path, 1, format!("bad first row: {err}"))),
        None => {
            return Err(ModelError::Empty {
                path: path.to_path_buf(),
                what: "no header and no data rows".into(),
            });
        }
    };
    // Public server-metric sets often ship headerless numeric files: their columns are then
    // named by position, `0`, `1`, … (as those sets number them).
    let headerless = all_numeric(&first);
    let headers: Vec<String> = if headerless {
        (0..first.len()).map(|i| i.to_string()).collect()
    } else {
        records.next();
        first.iter().map(str::to_string).collect()
    };
    // `timestamp_(min)` and the like (public sets name their time column so) are times, not
    // features: a feature that only grows would make every later window an anomaly.
    let role = |name: &str| {
        if name.to_ascii_lowercase().starts_with("timestamp") {
            Role::Timestamp
        } else if name == "label" {
            Role::Label
        } else {
            Role::Value
        }
    };
    let mut table = Table {
        columns: headers
            .iter()
            .filter(|h| role(h) == Role::Value)
            .cloned()
            .collect(),
        labels: headers.iter().any(|h| h == "label").then(Vec::new),
        ..Table::default()
    };
    let mut seen = HashSet::with_capacity(table.columns.len());
    if let Some(duplicate) = table.columns.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(input_error(
            path,
            1,
            format!("column `{duplicate}` appears twice in the header"),
        ));
    }
    for record in records {
        let record = record.map_err(|err| {
            let line = err.position().map_or(0, |p| p.line() as usize);
            input_error(path, line, err.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        if record.len() != headers.len() {
            return Err(ModelError::Ragged {
                path: path.to_path_buf(),
                line,
                expected: headers.len(),
                found: record.len(),
            });
        }
        let mut timestamp = None;
        for (name, cell) in headers.iter().zip(record.iter()) {
            match role(name) {
                Role::Timestamp => {
                    timestamp =
                        Some(parse_timestamp(cell).map_err(|m| input_error(path, line, m))?);
                }
                Role::Label => {
                    let value = parse_cell(path, line, name, cell)?;
                    let label = parse_label(value).map_err(|m| input_error(path, line, m))?;
                    if let Some(labels) = &mut table.labels {
                        labels.push(label);
                    }
                }
                Role::Value => table.values.push(parse_cell(path, line, name, cell)?),
            }
        }
        table.timestamps.push(timestamp);
        table.lines.push(line);
    }
    let rows = table.len();
    table.files = vec![(path.to_path_buf(), 0..rows)];
    Ok(table)
}

#[derive(PartialEq)]
enum Role {
    Timestamp,
    Label,
    Value,
}
